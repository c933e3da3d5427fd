"""Learning-rate schedules, as step -> factor functions for ``torch.optim.lr_scheduler.LambdaLR``."""

from __future__ import annotations

import math
from typing import Callable

SCHEDULES = ("constant", "cosine")


def lr_factor(warmup: int, total: int, schedule: str = "constant") -> Callable[[int], float]:
    """Linear warmup over ``warmup`` steps, then ``constant`` (1.0) or ``cosine`` (1.0 -> 0.0 at
    step ``total``; CLIP's and MAE's decay)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {SCHEDULES}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
