"""Global (L_GC) and local (L_LC) contrastive losses of the two-level matching module.

Both are symmetric InfoNCE over the batch with a learnable CLIP-style temperature; the model owns
the logit scales and returns them in its output dict (``logit_scale_gc`` / ``logit_scale_lc``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from malm.models.matching import (global_features, global_logits, local_logits,
                                  local_recipe_features)


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Mean of image->recipe and recipe->image cross-entropy, matches on the diagonal.

    logits [..., B, B] (rows images, cols recipes; leading dims averaged) -> scalar
    """
    B = logits.shape[-1]
    flat = logits.reshape(-1, B, B)
    target = torch.arange(B, device=logits.device).repeat(flat.shape[0])
    i2r = F.cross_entropy(flat.reshape(-1, B), target)
    r2i = F.cross_entropy(flat.transpose(1, 2).reshape(-1, B), target)
    return 0.5 * (i2r + r2i)


class GlobalContrastiveLoss:
    """L_GC: InfoNCE between I_g = I_att[:, CLS] and R_g = mean_S R_att (pad-masked).

    out: i_att [B, 1+P, D], r_att [B, S, D], rec_pad [B, S], logit_scale_gc -> {"gc_loss"}
    """

    def __call__(self, out: dict) -> dict:
        img, rec = global_features(out["i_att"], out["r_att"], out["rec_pad"])
        return {"gc_loss": symmetric_info_nce(global_logits(img, rec, out["logit_scale_gc"]))}


class LocalContrastiveLoss:
    """L_LC: per patch p, InfoNCE between I_att[:, p] and R_lp = A_I[:, p] @ R_att over the batch,
    averaged over the P patches (mask-token positions included; CLS excluded). Vectorised over
    patches: logits [P, B, B].

    out: i_att [B, 1+P, D], attn [B, 1+P, S], r_att [B, S, D], logit_scale_lc -> {"lc_loss"}
    """

    def __call__(self, out: dict) -> dict:
        img = F.normalize(out["i_att"][:, 1:], dim=-1)  # [B, P, D]
        rec = F.normalize(local_recipe_features(out["attn"][:, 1:], out["r_att"]), dim=-1)
        return {"lc_loss": symmetric_info_nce(local_logits(img, rec, out["logit_scale_lc"]))}
