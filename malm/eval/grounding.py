"""Grounding score: does the matching module's local attention look at the right place?

Only the synthetic data knows where every ingredient is (``synth_truth.json`` boxes), so this is a
check no real benchmark offers. For each evaluated pair (the first image of recipe i, centre crop, as the
retrieval eval sees it, with its own recipe i) and each visible ingredient that the recipe names on
an ingredient line:

1. the trained model runs on the FULL image (no mask, eval mode) and on its recipe, and fuses
   them with psi for the pair (i, i) only -- no training-time candidate sampling
   (``MALM.pair_attention``). A_I = psi's last-layer, head-averaged cross-attention [1+P, S]:
   each image token's weights over the recipe tokens;
2. A_I is restricted to the patch rows (CLS dropped) and to the recipe-token column of that
   ingredient's line: one weight per patch [P]; the patch with the most weight is the pointer
   (ties: the lowest patch index);
3. a hit when the pointer patch lies inside the ingredient's box (``rule``): ``centre`` (default)
   = the patch's centre lies in the box; ``overlap`` = the patch and the box share some area.

The chance rate of an ingredient is the share of patches that count as inside its box under the
same rule (what a pointer drawn uniformly over the patches scores); the reported ``chance`` is its
mean over the scored ingredients. ``mass_in_box`` is the share of the column's attention weight that
falls on inside patches (uniform weights give the chance rate too).

Where things come from
----------------------
* A_I, its patch rows and the recipe-token column of each ingredient line: the model
  (``MALM.pair_attention``, which takes the column from ``RecipeEncoder.ingredient_columns``);
  evaluation never reaches into the matching module;
* the boxes, the line naming each ingredient and which patches lie inside a box:
  :mod:`malm.eval.grounding_truth` (``load_truth``, ``select_targets``, ``CropGeometry``);
* the image shown with each recipe: the cache (``malm.data.cache.split_array``), its first image
  row, as the eval loader crops it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from malm.data.cache import split_array
from malm.data.dataset import CLIP_MEAN, CLIP_STD, RecipeImageDataset, collate
from malm.eval.embed import load_trained, resolve_device
from malm.eval.grounding_figure import grounding_figure
from malm.eval.grounding_truth import RULES, CropGeometry, Target, Truth, load_truth, select_targets
from malm.io import atomic_write_json

log = logging.getLogger(__name__)

SCHEMA = "malm.grounding/1"
__all__ = ["CropGeometry", "NoMatchingModule", "RULES", "SCHEMA", "Truth", "check_matching",
           "grounding_score", "load_truth", "pointing", "run_grounding", "summarise",
           "target_weights"]


class NoMatchingModule(ValueError):
    """The model has no two-level matching module (no psi, so no A_I to score)."""


# --------------------------------------------------------------------------------- scoring
def target_weights(attn: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """A_I [B, 1+P, S] -> [T, P]: the patch rows (CLS dropped) of column ``cols[t]`` of pair
    ``rows[t]``."""
    return attn[rows, 1:, cols]


def pointing(weights: torch.Tensor, inside: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pointing game on per-patch weights.

    weights [T, P] (one ingredient column of A_I over the patches), inside [T, P] bool
    -> pointer [T] (argmax patch, ties to the lowest index), hit [T] bool, chance [T] (share of
       inside patches), mass [T] (share of the weight on inside patches; 0 when all weights are 0)
    """
    inside = inside.to(weights.device, torch.bool)
    pointer = weights.argmax(dim=1)
    hit = inside.gather(1, pointer[:, None])[:, 0]
    total = weights.sum(1)
    mass = torch.where(total > 0, (weights * inside).sum(1) / total.clamp_min(1e-30),
                       torch.zeros_like(total))
    return {"pointer": pointer, "hit": hit, "chance": inside.float().mean(1), "mass": mass}


def summarise(hit: np.ndarray, chance: np.ndarray, mass: np.ndarray, pair: np.ndarray,
              n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy, chance, lift, mass in box, and 95 % intervals from a bootstrap over pairs (the
    ingredients of one image are not independent). Arrays [T]; ``pair`` groups them."""
    hit, chance, mass = (np.asarray(a, dtype=np.float64) for a in (hit, chance, mass))
    T = len(hit)
    if T == 0:
        return {"n_targets": 0, "accuracy": None, "chance": None, "lift": None, "mass_in_box": None,
                "accuracy_ci95": None, "excess_ci95": None}
    acc, ch = float(hit.mean()), float(chance.mean())
    _, grp = np.unique(np.asarray(pair), return_inverse=True)
    G = int(grp.max()) + 1
    n_g = np.bincount(grp, minlength=G).astype(np.float64)
    hit_g, ch_g = np.bincount(grp, hit, G), np.bincount(grp, chance, G)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, G, size=(n_boot, G))
    n_b = n_g[draw].sum(1)
    acc_b = hit_g[draw].sum(1) / n_b
    exc_b = acc_b - ch_g[draw].sum(1) / n_b
    def ci(a: np.ndarray) -> list[float]:
        return [round(float(np.quantile(a, q)), 6) for q in (0.025, 0.975)]

    return {"n_targets": T, "accuracy": acc, "chance": ch, "lift": acc / ch if ch > 0 else None,
            "mass_in_box": float(mass.mean()), "accuracy_ci95": ci(acc_b), "excess_ci95": ci(exc_b)}


# ------------------------------------------------------------------------------------- model
def check_matching(model, variant: str = "?") -> None:
    if getattr(model, "matching", None) is None:
        raise NoMatchingModule(
            f"variant {variant!r} has no two-level matching module (loss.lambda_gc = loss.lambda_lc = 0): "
            "the grounding score reads psi's cross-attention A_I, which this model does not have. "
            "Score a variant with local matching (e.g. malm, global_only, llc).")


def grounding_score(model, cfg, cache_dir: str | os.PathLike, truth: Truth, *, split: str = "test",
                    limit: int | None = None, batch_size: int = 64, rule: str = "centre",
                    min_visible: float = 0.0, device: torch.device | str = "cpu",
                    n_examples: int = 0, progress: bool = False) -> tuple[dict, list[dict]]:
    """Pointing-game accuracy of ``model``'s psi on ``split`` -> (result dict, examples).

    ``limit``: the first N pairs of the split (cache order = recipe id order). ``n_examples``: keep
    the crops, boxes and attention maps of the first N images with a scored ingredient (figure).
    Raises :class:`NoMatchingModule` when the model has no matching module.
    """
    check_matching(model, getattr(cfg, "variant", "?"))
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    device = torch.device(device)
    ds = RecipeImageDataset(cache_dir, split, train=False, image_size=cfg.model.image.img_size)
    geo = CropGeometry(truth.source_size, ds.cache_image_size, ds.image_size, model.patch_size)
    if geo.num_patches != model.num_patches:
        raise ValueError(f"crop {geo.crop_size} / patch {geo.patch_size} gives {geo.num_patches} "
                         f"patches, the model has {model.num_patches}")

    n = len(ds) if limit is None else min(int(limit), len(ds))
    names = split_array(cache_dir, split, "image_names")
    offsets = split_array(cache_dir, split, "image_offsets")
    per_pair, skipped = select_targets(
        truth, geo, [str(names[int(offsets[i])]) for i in range(n)], ds.ids[:n],
        det_mode=getattr(cfg.data, "ingredients", "raw") == "det", min_visible=min_visible,
        n_lines=int(split_array(cache_dir, split, "ingrs").shape[1]))  # data.max_ingrs
    pairs = [i for i in range(n) if per_pair[i]]
    if not pairs:
        raise ValueError(f"{split}: no pair of the first {n} has a visible ingredient in its recipe "
                         f"(skipped: {skipped}); is --truth the synth_truth.json of this run's data?")

    model.eval()
    loader = DataLoader(Subset(ds, pairs), batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=cfg.data.num_workers)
    rec_hit, rec_ch, rec_mass, rec_pair, names_out = [], [], [], [], []
    examples: list[dict] = []
    for batch in tqdm(loader, desc=f"grounding {split}", disable=not progress, leave=False):
        if batch is None or batch.get("n_skipped"):
            raise RuntimeError(f"{cache_dir}/{split}: unreadable cached images; rebuild the cache")
        with torch.no_grad():
            out = model.pair_attention({k: batch[k].to(device)
                                        for k in ("image", "title", "ingrs", "instrs")})
        attn, cols = out["attn"], out["ingredient_cols"]
        index = batch["index"].tolist()
        targets = [(b, t) for b, i in enumerate(index) for t in per_pair[i]]
        rows = torch.tensor([b for b, _ in targets], device=device)
        lines = torch.tensor([t.line for _, t in targets], device=device)
        col = cols[rows, lines]
        ok = (col >= 0).cpu().numpy()
        skipped["line_absent"] += int((~ok).sum())  # the line exists but encodes to no token
        targets = [x for x, k in zip(targets, ok) if k]
        if not targets:
            continue
        rows, col = rows[torch.from_numpy(ok).to(device)], col[col >= 0]
        w = target_weights(attn, rows, col).cpu()  # [T, P]
        inside = torch.from_numpy(geo.inside(np.asarray([t.box for _, t in targets]), rule))
        res = pointing(w, inside)
        rec_hit.append(res["hit"].numpy())
        rec_ch.append(res["chance"].numpy())
        rec_mass.append(res["mass"].numpy())
        rec_pair.append(np.asarray([t.pair for _, t in targets]))
        names_out += [t.name for _, t in targets]
        if len(examples) < n_examples:
            examples += _examples(batch, targets, w, res, geo, n_examples - len(examples))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    hit, ch, mass, pair = cat(rec_hit), cat(rec_ch), cat(rec_mass), cat(rec_pair)
    if len(hit) == 0:
        raise ValueError(f"{split}: no ingredient line of the first {n} pairs encodes to a recipe token "
                         f"(skipped: {skipped})")
    result = {
        "schema": SCHEMA, "has_matching": True, "split": split, "rule": rule,
        "min_visible": min_visible, "n_pairs": len(pairs), "pairs_considered": n,
        **summarise(hit, ch, mass, pair),
        "skipped": skipped,
        "by_ingredient": _by_ingredient(names_out, hit, ch),
        "geometry": {"source_size": geo.source_size, "cache_size": geo.cache_size,
                     "crop_size": geo.crop_size, "crop_offset": geo.offset,
                     "patch_size": geo.patch_size, "grid": geo.grid},
    }
    return result, examples


def _examples(batch: dict, targets: list[tuple[int, Target]], w: torch.Tensor,
              res: dict[str, torch.Tensor], geo: CropGeometry, most: int) -> list[dict]:
    """Figure material of up to ``most`` images of ``batch`` with a scored target: the crop
    (de-normalised HWC), and per target its box in crop pixels and its weights on the patch grid."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    out: list[dict] = []
    for b in range(len(batch["id"])):
        if len(out) >= most:
            break
        sel = [j for j, (bb, _) in enumerate(targets) if bb == b]
        if not sel:
            continue
        img = (batch["image"][b] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        out.append({
            "id": batch["id"][b], "image": img,
            "ingredients": [{"name": targets[j][1].name,
                             "box": geo.to_crop(np.asarray(targets[j][1].box))[0].tolist(),
                             "weights": w[j].numpy().reshape(geo.grid, geo.grid),
                             "pointer": int(res["pointer"][j]), "hit": bool(res["hit"][j]),
                             "chance": float(res["chance"][j])} for j in sel]})
    return out


def _by_ingredient(names: Sequence[str], hit: np.ndarray, chance: np.ndarray) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name in sorted(set(names)):
        m = np.asarray([n == name for n in names])
        out[name] = {"n": int(m.sum()), "accuracy": round(float(hit[m].mean()), 4),
                     "chance": round(float(chance[m].mean()), 4)}
    return out


# ------------------------------------------------------------------------------ entry point
def run_grounding(run_dir: str | os.PathLike, truth_path: str | os.PathLike | None = None,
                  out: str | os.PathLike | None = None, figure: str | os.PathLike | None = None, *,
                  split: str = "test", limit: int | None = None, rule: str = "centre",
                  min_visible: float = 0.0, checkpoint: str = "best", batch_size: int = 64,
                  n_examples: int = 4, device: str = "auto", progress: bool = False,
                  trained: tuple | None = None) -> dict:
    """Score a trained run; write ``out`` (JSON) and ``figure`` (PNG) when given; return the result.

    ``truth_path`` defaults to ``<data.root>/synth_truth.json`` of the run's config. A variant
    without a matching module gives ``{"has_matching": false, "reason": ...}`` (also written to
    ``out``) instead of an error, so a stage over every variant does not stop at the baseline.
    Without ``truth_path`` and with no ``synth_truth.json`` at the run's data root (real Recipe1M),
    the result is ``{"has_truth": false, "reason": ...}``, also a note rather than an error.
    ``trained``: what ``load_trained(run_dir, device, checkpoint)`` returned, when the caller has
    already loaded it (``malm.eval.assess``); else it is loaded here.
    """
    dev = resolve_device(device)
    if trained is None:
        trained = load_trained(run_dir, dev, checkpoint)
    else:
        dev = next(trained[0].parameters()).device
    model, cfg, cache_dir, info = trained
    default_truth = not truth_path
    truth_path = Path(truth_path) if truth_path else Path(cfg.data.root) / "synth_truth.json"
    head = {"schema": SCHEMA, "run_dir": str(run_dir), "variant": cfg.variant, **info,
            "truth": str(truth_path)}
    if default_truth and not truth_path.exists():
        # real Recipe1M (or imported data): no boxes to score against; a note, so that the
        # pipeline's assess stage does not fail on data that cannot have a grounding score
        result = {**head, "has_matching": model.matching is not None, "has_truth": False,
                  "reason": f"{truth_path}: no such file; grounding needs the boxes that `malm data "
                            "synth` writes (real Recipe1M has none): no score"}
        log.warning("%s", result["reason"])
        if out:
            atomic_write_json(out, result)
        return result
    try:
        check_matching(model, cfg.variant)
    except NoMatchingModule as exc:
        result = {**head, "has_matching": False, "reason": str(exc)}
        log.warning("%s", exc)
        if out:
            atomic_write_json(out, result)
        return result
    truth = load_truth(truth_path)
    res, examples = grounding_score(model, cfg, cache_dir, truth, split=split, limit=limit,
                                    batch_size=batch_size, rule=rule, min_visible=min_visible,
                                    device=dev, n_examples=n_examples if figure else 0,
                                    progress=progress)
    result = {**head, **res}
    if out:
        atomic_write_json(out, result)
    if figure:
        acc = result["accuracy"]
        grounding_figure(examples, figure,
                         title=f"{cfg.variant} ({Path(run_dir).name}, {split}): psi's A_I on the "
                               f"ingredient's line token, per patch\npointing accuracy {acc:.3f} vs chance "
                               f"{result['chance']:.3f} ({result['n_targets']} ingredients, {rule} rule; "
                               "cyan: box, square: pointer, colour scaled per map)")
        result["figure"] = str(figure)
    return result
