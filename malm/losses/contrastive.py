"""Global (L_GC) and local (L_LC) contrastive losses of the two-level matching module.

InfoNCE over candidate pairs, in both directions: each image anchor's row holds the logits of its
candidate recipes, each recipe anchor's row those of its candidate images (``cand_i2r`` /
``cand_r2i`` index the fused pairs, ``target_*`` is the positive's column). Every logit comes from
one fused (image, recipe) pair (``malm.models.matching``), so neither loss can be solved from one
modality alone; their chance value is ln K for K candidates per anchor. The model owns the
learnable CLIP-style temperatures and returns them as ``logit_scale_gc`` / ``logit_scale_lc``.

Under DDP each rank's loss is the mean over its own anchors (candidates come from the global
batch); the mean over ranks is the global loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from malm.losses.similarity import pair_global_logits, pair_local_logits


def candidate_info_nce(pair_logits: torch.Tensor, cand: torch.Tensor, target: torch.Tensor
                       ) -> torch.Tensor:
    """Cross-entropy of each anchor over its candidates, averaged over anchors (and patches).

    pair_logits [U] or [U, P], cand [B, K] (rows into U), target [B] -> scalar
    """
    # index_select: a pair is a candidate of several anchors (see malm.models.matching)
    logits = pair_logits.index_select(0, cand.flatten()).view(*cand.shape, *pair_logits.shape[1:])
    if logits.dim() == 3:  # one InfoNCE per patch: [B, K, P] -> [B * P, K]
        P = logits.shape[2]
        logits = logits.permute(0, 2, 1).reshape(-1, logits.shape[1])
        target = target.repeat_interleave(P)
    return F.cross_entropy(logits.float(), target)


def bidirectional_info_nce(pair_logits: torch.Tensor, out: dict) -> torch.Tensor:
    """Mean of the image->recipe and recipe->image candidate InfoNCE."""
    i2r = candidate_info_nce(pair_logits, out["cand_i2r"], out["target_i2r"])
    r2i = candidate_info_nce(pair_logits, out["cand_r2i"], out["target_r2i"])
    return 0.5 * (i2r + r2i)


def chance_level(out: dict) -> float:
    """ln K: the loss of uniform logits over K candidates per anchor."""
    return float(torch.log(torch.tensor(float(out["cand_i2r"].shape[1]))))


class GlobalContrastiveLoss:
    """L_GC: InfoNCE of s(i, j) = cos(I_g, R_g) / tau, I_g = I_att[CLS], R_g = mean_S R_att
    (pad-masked), both from the fused pair (i, j). out: pair_* features, cand_*, target_*,
    logit_scale_gc -> {"gc_loss"}"""

    def __call__(self, out: dict) -> dict:
        s = pair_global_logits(out["pair_i_att"].float(), out["pair_r_att"].float(),
                               out["pair_rec_pad"], out["logit_scale_gc"].float())
        return {"gc_loss": bidirectional_info_nce(s, out)}


class LocalContrastiveLoss:
    """L_LC: per patch p, InfoNCE of cos(I_att[p], R_lp) / tau with R_lp = A_I[p] @ R_att, all from
    the fused pair (i, j), over the same candidates as L_GC; averaged over the P patches (mask
    token positions included, CLS excluded) and the anchors. -> {"lc_loss"}"""

    def __call__(self, out: dict) -> dict:
        s = pair_local_logits(out["pair_i_att"].float(), out["pair_attn"].float(),
                              out["pair_r_att"].float(), out["logit_scale_lc"].float())
        return {"lc_loss": bidirectional_info_nce(s, out)}
