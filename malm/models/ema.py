"""The EMA teacher of masked self-distillation (dinov2 ``update_teacher``). Its per-iteration momentum
schedule lives with the other schedules in :mod:`malm.train.schedules`."""

from __future__ import annotations

import copy

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
