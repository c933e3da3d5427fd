"""MALM's total loss (the paper's overall objective, Sec. 3):
L = lambda_itc L_itc + lambda_gc L_GC + lambda_lc L_LC + lambda_dist L_dist, and the Table 1 peers'
terms on the same footing: T-Food's L_itm (lambda_itm) and H-T's recipe loss (lambda_recipe), with
L_itc in T-Food's or H-T's form (loss.retrieval). A term whose weight is 0 is not computed (dinov2's
``do_*`` flags).

Every term runs in fp32, also under bf16 autocast. Under DDP, L_itc sees the global batch (the
embeddings and classes of every rank, gathered with gradients), the matching terms average over
this rank's anchors with candidates from the global batch, and L_dist over this rank's patches; for
each term the mean over ranks is the loss of the global batch.
"""

from __future__ import annotations

import torch

from malm.config import LossConfig
from malm.losses.contrastive import GlobalContrastiveLoss, LocalContrastiveLoss
from malm.losses.distill import MaskedDistillLoss
from malm.losses.ht import HTTripletLoss, RecipeComponentLoss
from malm.losses.itm import ITMLoss
from malm.losses.triplet import SemanticTripletLoss
from malm.models.ops import gather_nograd, gather_with_grad


def triplet_from_config(cfg: LossConfig) -> SemanticTripletLoss | HTTripletLoss:
    """L_itc: T-Food's semantic triplet loss (``triplet_negatives`` 0 = all negatives, nb_samples
    9999), or H-T's triplet with ``loss.retrieval: ht``."""
    if cfg.retrieval == "ht":
        return HTTripletLoss(cfg.ht_margin)
    if cfg.retrieval != "tfood":
        raise ValueError(f"loss.retrieval must be tfood or ht, got {cfg.retrieval!r}")
    return SemanticTripletLoss(cfg.margin_start, cfg.margin_step, cfg.margin_max,
                               cfg.semantic_weight, n_negatives=cfg.triplet_negatives or None,
                               aggregation=cfg.triplet_aggregation)


class MALMCriterion:
    """``__call__(out, batch, epoch) -> dict``: each active ``*_loss`` term, detached logs
    (irr, rii, sirr, srii, margin, sem_pos_frac, tau_gc, tau_lc, itm_acc) and ``loss`` = the
    weighted sum.

    ``distill_beta``: SmoothL1 beta (``model.distill.beta``).
    """

    def __init__(self, cfg: LossConfig, *, distill_beta: float = 1.0):
        self.cfg = cfg
        self.do_itc = cfg.lambda_itc > 0
        self.do_gc = cfg.lambda_gc > 0
        self.do_lc = cfg.lambda_lc > 0
        self.do_dist = cfg.lambda_dist > 0
        self.do_itm = cfg.lambda_itm > 0
        self.do_recipe = cfg.lambda_recipe > 0
        self.triplet = triplet_from_config(cfg) if self.do_itc else None
        self.gc = GlobalContrastiveLoss() if self.do_gc else None
        self.lc = LocalContrastiveLoss() if self.do_lc else None
        self.dist = MaskedDistillLoss(distill_beta) if self.do_dist else None
        self.itm = ITMLoss() if self.do_itm else None
        self.recipe = RecipeComponentLoss(cfg.ht_margin) if self.do_recipe else None

    def __call__(self, out: dict, batch: dict, epoch: float = 0) -> dict:
        with torch.autocast(out["img_emb"].device.type, enabled=False):
            return self._terms(out, batch, epoch)

    def _terms(self, out: dict, batch: dict, epoch: float) -> dict:
        logs: dict = {}
        total = out["img_emb"].new_zeros((), dtype=torch.float32)
        if self.do_itc:
            img, rec = gather_with_grad(out["img_emb"].float()), gather_with_grad(out["rec_emb"].float())
            logs.update(self.triplet(img, rec, gather_nograd(batch["cls"]), epoch))
            total = total + self.cfg.lambda_itc * logs["itc_loss"]
        for on, fn, key, weight in ((self.do_gc, self.gc, "gc", self.cfg.lambda_gc),
                                    (self.do_lc, self.lc, "lc", self.cfg.lambda_lc)):
            if not on:
                continue
            if "pair_i_att" not in out:
                raise KeyError(f"lambda_{key} > 0 but the model output has no matching features "
                               "(was the model built with this loss config?)")
            logs.update(fn(out))
            total = total + weight * logs[f"{key}_loss"]
            logs[f"tau_{key}"] = (1.0 / out[f"logit_scale_{key}"]).detach()
        if self.do_itm:
            if "pair_itm" not in out:
                raise KeyError("lambda_itm > 0 but the model output has no ITM logits (was the model "
                               "built with this loss config?)")
            logs.update(self.itm(out))
            total = total + self.cfg.lambda_itm * logs["itm_loss"]
        if self.do_recipe:
            logs.update(self.recipe(out))
            total = total + self.cfg.lambda_recipe * logs["recipe_loss"]
        # no predictor/teacher when mask.ratio == 0 (paper Table 2, 'w/o mask'): L_dist has nothing to predict
        if self.do_dist and "dist_pred" in out:
            logs.update(self.dist({k: out[k].float() if k != "mask" else out[k]
                                   for k in ("dist_pred", "dist_target", "mask")}))
            total = total + self.cfg.lambda_dist * logs["dist_loss"]
        logs["loss"] = total
        return logs


def loss_terms(logs: dict) -> dict[str, torch.Tensor]:
    """The ``*_loss`` entries of a criterion output."""
    return {k: v for k, v in logs.items() if k.endswith("_loss")}
