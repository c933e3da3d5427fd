"""Masked self-distillation loss L_dist (paper Sec. 3, "masked self-distillation")."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     beta: float = 1.0) -> torch.Tensor:
    """SmoothL1(pred, stopgrad(target)) averaged over channels, then over masked positions only.

    pred, target [B, P, C], mask [B, P] bool (True = hidden) -> scalar (0 when nothing is hidden)
    """
    per_token = F.smooth_l1_loss(pred, target.detach(), beta=beta, reduction="none").mean(-1)
    w = mask.to(per_token.dtype)
    return (per_token * w).sum() / w.sum().clamp(min=1.0)


class MaskedDistillLoss:
    """out: dist_pred [B, P, C], dist_target [B, P, C], mask [B, P] -> {"dist_loss"}"""

    def __init__(self, beta: float = 1.0):
        self.beta = beta

    def __call__(self, out: dict) -> dict:
        return {"dist_loss": masked_smooth_l1(out["dist_pred"], out["dist_target"], out["mask"],
                                              self.beta)}
