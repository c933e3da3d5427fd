"""H-T's losses (Salvador et al., CVPR 2021; amzn/image-to-recipe-transformers ``src/utils/loss.py``
and ``src/train.py``), for the ``ht`` baseline.

* :func:`ht_triplet`: H-T's ``TripletLoss`` with cosine distance: for every in-batch pair (i, j),
  i != j, the hinge max(0, margin + d(i, i) - d(i, j)) in both directions (image -> recipe rows and
  recipe -> image columns), summed over the two and averaged over all B x B entries, the zeroed
  diagonal included (its ``(cost_s + cost_im).mean()``).
* :class:`RecipeComponentLoss`: H-T's self-supervised recipe loss: for each ordered pair of recipe
  components (a, b), a != b, ``ht_triplet`` between component b's embedding and component a's mapped
  into b's space (``ComponentProjectors``), averaged over the 6 pairs (H-T ``trainIter``).

H-T also trains the recipe loss on extra batches of recipes without images (alternating with the
paired batches); the suite's loader reads paired recipes only, so here the recipe loss sees the
paired batches' recipes (README "Table 1 peers": a difference from H-T's published training).
"""

from __future__ import annotations

import torch

from malm.losses.similarity import cosine_distance
from malm.models.recipe import COMPONENT_PAIRS


def ht_triplet(x: torch.Tensor, y: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """x [B, E], y [B, E] (row i of each is a positive pair) -> scalar; not normalised inputs are
    L2-normalised first (cosine distance)."""
    dist = cosine_distance(x, y)  # [B, B], rows = x anchors
    pos = dist.diagonal()
    eye = torch.eye(dist.shape[0], dtype=torch.bool, device=dist.device)
    cost_x = (margin + pos.unsqueeze(1) - dist).clamp(min=0.0).masked_fill(eye, 0.0)  # x anchors
    cost_y = (margin + pos.unsqueeze(0) - dist).clamp(min=0.0).masked_fill(eye, 0.0)  # y anchors
    return (cost_x + cost_y).mean()


class HTTripletLoss:
    """L_itc in H-T's form (``loss.retrieval: ht``): ``__call__(img_emb, rec_emb, cls, epoch)`` ->
    {"itc_loss", "margin"}; ``cls`` and ``epoch`` are ignored (no semantic terms, fixed margin)."""

    def __init__(self, margin: float = 0.3):
        self.margin = margin

    def __call__(self, img_emb: torch.Tensor, rec_emb: torch.Tensor, cls=None, epoch: float = 0
                 ) -> dict:
        return {"itc_loss": ht_triplet(img_emb, rec_emb, self.margin),
                "margin": torch.tensor(self.margin)}


class RecipeComponentLoss:
    """``__call__(out) -> {"recipe_loss"}`` from the model's ``rec_components`` [3, B, W] and
    ``rec_projected`` [6, B, W] (``malm.models.malm.ComponentProjectors``)."""

    def __init__(self, margin: float = 0.3):
        self.margin = margin

    def __call__(self, out: dict) -> dict:
        comps, proj = out["rec_components"].float(), out["rec_projected"].float()
        terms = [ht_triplet(comps[b], proj[k], self.margin)
                 for k, (_, b) in enumerate(COMPONENT_PAIRS)]
        return {"recipe_loss": torch.stack(terms).mean()}
