"""EMA teacher (dinov2 ``update_teacher``) and DINO's per-iteration cosine momentum schedule."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn


class EMATeacher(nn.Module):
    """A frozen deep copy of a student module, always in eval mode, updated by EMA.

    ``update(student, m)``: t <- m * t + (1 - m) * s for every parameter (buffers are copied).
    Calling the teacher runs the wrapped module under ``torch.no_grad``.
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> "EMATeacher":  # noqa: ARG002 - the teacher stays in eval
        return super().train(False)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        t_params = list(self.module.parameters())
        s_params = [p.detach() for p in student.parameters()]
        if len(t_params) != len(s_params):
            raise ValueError("teacher and student have different parameter lists")
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
        for t_buf, s_buf in zip(self.module.buffers(), student.buffers()):
            t_buf.copy_(s_buf)


def cosine_momentum_schedule(base: float, final: float, epochs: int, steps_per_epoch: int
                             ) -> np.ndarray:
    """Per-iteration momentum, cosine from ``base`` (first step) to ``final`` (DINO
    ``cosine_scheduler`` without warm-up). -> [epochs * steps_per_epoch]"""
    iters = np.arange(epochs * steps_per_epoch)
    if len(iters) == 0:
        return np.zeros(0)
    if len(iters) == 1:
        return np.array([base], dtype=np.float64)
    # DINO divides by len(iters), so the last value is a hair below `final`; dividing by
    # len - 1 lands exactly on it (the teacher is frozen at the end when final = 1.0).
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / (len(iters) - 1)))
