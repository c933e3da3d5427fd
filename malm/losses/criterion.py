"""MALM's total loss (spec "Total"): L = lambda_itc L_itc + lambda_gc L_GC + lambda_lc L_LC
+ lambda_dist L_dist. A term whose weight is 0 is not computed (dinov2's ``do_*`` flags)."""

from __future__ import annotations

import torch

from malm.config import LossConfig
from malm.losses.contrastive import GlobalContrastiveLoss, LocalContrastiveLoss
from malm.losses.distill import MaskedDistillLoss
from malm.losses.triplet import SemanticTripletLoss


def triplet_from_config(cfg: LossConfig) -> SemanticTripletLoss:
    """T-Food's semantic triplet loss; ``triplet_negatives`` 0 = all negatives (nb_samples 9999)."""
    return SemanticTripletLoss(cfg.margin_start, cfg.margin_step, cfg.margin_max,
                               cfg.semantic_weight, n_negatives=cfg.triplet_negatives or None,
                               aggregation=cfg.triplet_aggregation)


class MALMCriterion:
    """``__call__(out, batch, epoch) -> dict``: each active ``*_loss`` term, detached logs
    (irr, rii, sirr, srii, margin, tau_gc, tau_lc) and ``loss`` = the weighted sum.

    ``distill_beta``: SmoothL1 beta (``model.distill.beta``).
    """

    def __init__(self, cfg: LossConfig, *, distill_beta: float = 1.0):
        self.cfg = cfg
        self.do_itc = cfg.lambda_itc > 0
        self.do_gc = cfg.lambda_gc > 0
        self.do_lc = cfg.lambda_lc > 0
        self.do_dist = cfg.lambda_dist > 0
        self.triplet = triplet_from_config(cfg) if self.do_itc else None
        self.gc = GlobalContrastiveLoss() if self.do_gc else None
        self.lc = LocalContrastiveLoss() if self.do_lc else None
        self.dist = MaskedDistillLoss(distill_beta) if self.do_dist else None

    def __call__(self, out: dict, batch: dict, epoch: float = 0) -> dict:
        logs: dict = {}
        total = out["img_emb"].new_zeros(())
        if self.do_itc:
            logs.update(self.triplet(out["img_emb"], out["rec_emb"], batch["cls"], epoch))
            total = total + self.cfg.lambda_itc * logs["itc_loss"]
        for on, fn, key, weight in ((self.do_gc, self.gc, "gc", self.cfg.lambda_gc),
                                    (self.do_lc, self.lc, "lc", self.cfg.lambda_lc)):
            if not on:
                continue
            if "i_att" not in out:
                raise KeyError(f"lambda_{key} > 0 but the model output has no matching features "
                               "(was the model built with this loss config?)")
            logs.update(fn(out))
            total = total + weight * logs[f"{key}_loss"]
            logs[f"tau_{key}"] = (1.0 / out[f"logit_scale_{key}"]).detach()
        # no predictor/teacher when mask.ratio == 0: spec "no-mask": L_dist has nothing to predict
        if self.do_dist and "dist_pred" in out:
            logs.update(self.dist(out))
            total = total + self.cfg.lambda_dist * logs["dist_loss"]
        logs["loss"] = total
        return logs


def loss_terms(logs: dict) -> dict[str, torch.Tensor]:
    """The ``*_loss`` entries of a criterion output."""
    return {k: v for k, v in logs.items() if k.endswith("_loss")}
