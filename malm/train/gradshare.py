"""Which loss term drives which encoder: the gradient norm of each weighted loss term on the shared
parameter groups (issue "The ablation tables must measure the method, not the defaults").

MALM's terms (L_itc, L_GC, L_LC, L_dist) all reach the same encoders, and a term with a large
gradient there steers Adam whatever its weight looks like. Every ``train.log_every`` steps the
trainer differentiates each weighted term on its own (``torch.autograd.grad`` with the graph kept,
before the step's backward) and logs ``grad/<term>/<group>`` = the L2 norm of that term's gradient
over the group's parameters. The groups:

* ``recipe``: the recipe encoder without its word embedding;
* ``word_embedding``: the recipe encoder's word embedding (its own learning rate);
* ``vit``: the ViT backbone (only while it trains: a frozen backbone has no gradient).

The share of a term on a group is its norm over the sum of the norms of all terms on that group
(``shares``); the report prints both. The cost is one extra backward per active term on a logging
step (``train.log_every`` steps apart).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
import torch.nn as nn

GROUPS = ("recipe", "word_embedding", "vit")
TERMS = ("itc", "gc", "lc", "dist", "itm", "recipe")


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The shared parameter groups of a MALM model that currently require grad."""
    groups: dict[str, list[nn.Parameter]] = {g: [] for g in GROUPS}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("image_encoder.vit."):
            groups["vit"].append(p)
        elif name.startswith("recipe_encoder.embedding."):
            groups["word_embedding"].append(p)
        elif name.startswith("recipe_encoder."):
            groups["recipe"].append(p)
    return {g: ps for g, ps in groups.items() if ps}


def weighted_terms(losses: Mapping[str, torch.Tensor], weights: Mapping[str, float]
                   ) -> dict[str, torch.Tensor]:
    """``{term: weight * <term>_loss}`` of the active terms (weight > 0, present in ``losses``)."""
    return {t: weights[t] * losses[f"{t}_loss"] for t in TERMS
            if weights.get(t, 0.0) > 0 and f"{t}_loss" in losses and losses[f"{t}_loss"].requires_grad}


def term_grad_norms(terms: Mapping[str, torch.Tensor],
                    groups: Mapping[str, Iterable[nn.Parameter]]) -> dict[str, float]:
    """``{"grad/<term>/<group>": ||d term / d group||_2}``; the graph is kept for the step's backward.

    A term that does not reach a group (e.g. L_dist and the recipe encoder) gets 0.
    """
    out: dict[str, float] = {}
    flat = [(g, p) for g, ps in groups.items() for p in ps]
    if not flat:
        return out
    params = [p for _, p in flat]
    for term, value in terms.items():
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        sq: dict[str, torch.Tensor] = {}
        for (g, _), grad in zip(flat, grads):
            if grad is not None:
                sq[g] = sq.get(g, 0.0) + grad.detach().float().pow(2).sum()
        for g in groups:
            out[f"grad/{term}/{g}"] = float(sq[g].sqrt()) if g in sq else 0.0
    return out


def shares(norms: Mapping[str, float]) -> dict[str, float]:
    """``{"grad_share/<term>/<group>": norm / sum over terms}`` for each group with a non-zero sum."""
    by_group: dict[str, dict[str, float]] = {}
    for key, v in norms.items():
        _, term, group = key.split("/")
        by_group.setdefault(group, {})[term] = v
    out = {}
    for group, per_term in by_group.items():
        total = sum(per_term.values())
        if total > 0:
            for term, v in per_term.items():
                out[f"grad_share/{term}/{group}"] = v / total
    return out
