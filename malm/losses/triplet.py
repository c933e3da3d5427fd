"""T-Food's semantic triplet loss L_itc (T-Food ``criterions/triplet.py``, from AdaMine).

Cosine distance d = 1 - cos over in-batch pairs. Four terms, named after anchor / positive /
negative modality (I image, R recipe, S semantic):
  IRR  image anchor, its recipe positive, other recipes negative      (weight 1)
  RII  recipe anchor, its image positive, other images negative       (weight 1)
  SIRR image anchor, a recipe of the same class positive, recipes of other classes negative
  SRII recipe anchor, an image of the same class positive, images of other classes negative
       (weight ``semantic_weight``; class 0 = background never takes part)
cost = max(0, d(anchor, pos) - d(anchor, neg) + margin). Per anchor the ``n_negatives`` costliest
negatives are kept (T-Food ``max_negative`` sampling; 1 = the hardest negative, None = all), then
aggregated: ``valid`` = sum / number of non-zero costs (AdaMine, T-Food's setting) or ``mean``.
As in T-Food, L_itc = (weighted sum of the terms) / number of terms.

T-Food's semantic positive is the first same-class item of the batch (by index) other than the
anchor's own pair; its negatives are truncated to the smallest count over anchors so the matrix is
rectangular. Here every other-class item is a candidate negative (the same when counts agree) and
anchors without a same-class partner in the batch are skipped (T-Food's sampler guarantees one).
"""

from __future__ import annotations

import torch

from malm.losses.similarity import cosine_distance


def margin_at(epoch: float, start: float, step: float, maximum: float) -> float:
    """T-Food's margin schedule: min(start + step * epoch, max)."""
    return min(start + step * epoch, maximum)


def select_and_aggregate(cost: torch.Tensor, candidates: torch.Tensor, n_negatives: int | None,
                         aggregation: str) -> torch.Tensor:
    """Keep the ``n_negatives`` largest costs among each row's candidates, then aggregate.

    cost [N, M] (>= 0), candidates [N, M] bool -> scalar
    """
    cost = cost.masked_fill(~candidates, -1.0)  # non-candidates sort last and are dropped below
    if n_negatives is not None and n_negatives < cost.shape[1]:
        cost = cost.topk(n_negatives, dim=1).values
    kept = cost >= 0
    cost = cost.clamp(min=0.0)
    if aggregation == "valid":
        return cost.sum() / (cost > 0).sum().clamp(min=1)
    if aggregation == "mean":
        return cost.sum() / kept.sum().clamp(min=1)
    raise ValueError(f"unknown triplet aggregation {aggregation!r} (valid, mean)")


def instance_triplet(dist: torch.Tensor, margin: float, n_negatives: int | None,
                     aggregation: str) -> torch.Tensor:
    """Rows = anchors, dist[i, i] = the positive, off-diagonal = negatives. dist [B, B] -> scalar"""
    B = dist.shape[0]
    cost = (dist.diagonal().unsqueeze(1) - dist + margin).clamp(min=0.0)
    candidates = ~torch.eye(B, dtype=torch.bool, device=dist.device)
    return select_and_aggregate(cost, candidates, n_negatives, aggregation)


def semantic_triplet(dist: torch.Tensor, cls: torch.Tensor, margin: float,
                     n_negatives: int | None, aggregation: str) -> torch.Tensor:
    """Class-level triplets. dist [B, B] (rows anchors of one modality, cols the other), cls [B]

    Positive of anchor i: the first j != i with cls[j] == cls[i]; negatives: every j with another
    non-zero class. Anchors of class 0 or without a positive are skipped. -> scalar
    """
    valid = cls != 0
    same = cls.unsqueeze(0) == cls.unsqueeze(1)  # [B, B]
    both = valid.unsqueeze(0) & valid.unsqueeze(1)
    eye = torch.eye(len(cls), dtype=torch.bool, device=dist.device)
    pos_mask = same & both & ~eye
    has_pos = pos_mask.any(1)  # [B]
    pos_idx = pos_mask.to(torch.int8).argmax(1)  # first positive (argmax returns the first max)
    pos = dist.gather(1, pos_idx.unsqueeze(1))  # [B, 1]
    candidates = ~same & both & has_pos.unsqueeze(1)
    cost = (pos - dist + margin).clamp(min=0.0)
    return select_and_aggregate(cost, candidates, n_negatives, aggregation)


class SemanticTripletLoss:
    """``__call__(img_emb [B, E], rec_emb [B, E], cls [B], epoch) -> dict``:
    itc_loss (with grad) and detached logs irr, rii, sirr, srii, margin."""

    def __init__(self, margin_start: float = 0.18, margin_step: float = 0.005,
                 margin_max: float = 0.3, semantic_weight: float = 0.1,
                 n_negatives: int | None = 1, aggregation: str = "valid"):
        if n_negatives is not None and n_negatives < 1:
            raise ValueError("n_negatives must be >= 1 or None (all)")
        self.margin_start, self.margin_step, self.margin_max = margin_start, margin_step, margin_max
        self.semantic_weight = semantic_weight
        self.n_negatives = n_negatives
        self.aggregation = aggregation

    def margin(self, epoch: float) -> float:
        return margin_at(epoch, self.margin_start, self.margin_step, self.margin_max)

    def __call__(self, img_emb: torch.Tensor, rec_emb: torch.Tensor, cls: torch.Tensor,
                 epoch: float = 0) -> dict:
        """Also logs ``sem_pos_frac``: the fraction of anchors with a semantic positive (a non-
        background class shared with another item of the batch): SIRR/SRII learn from those only."""
        m = self.margin(epoch)
        dist = cosine_distance(img_emb, rec_emb)  # [B_img, B_rec]
        args = (m, self.n_negatives, self.aggregation)
        terms = {"irr": (1.0, instance_triplet(dist, *args)),
                 "rii": (1.0, instance_triplet(dist.t(), *args))}
        if self.semantic_weight > 0:
            terms["sirr"] = (self.semantic_weight, semantic_triplet(dist, cls, *args))
            terms["srii"] = (self.semantic_weight, semantic_triplet(dist.t(), cls, *args))
        total = sum(w * v for w, v in terms.values()) / len(terms)
        out = {"itc_loss": total, "margin": torch.tensor(m),
               "sem_pos_frac": torch.tensor(semantic_positive_fraction(cls))}
        out.update({k: v.detach() for k, (_, v) in terms.items()})
        return out


def semantic_positive_fraction(cls: torch.Tensor) -> float:
    """Fraction of a batch's items that are non-background and share their class with another item.

    These are the anchors with a semantic positive for the triplet's SIRR/SRII terms; the count is
    divided by the batch size (0.0 for an empty batch).
    """
    cls = torch.as_tensor(cls).reshape(-1)
    if cls.numel() == 0:
        return 0.0
    partners = (cls[:, None] == cls[None, :]).sum(dim=1) - 1
    return ((partners > 0) & (cls != 0)).float().mean().item()
