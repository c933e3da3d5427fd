"""Training schedules: the learning rate (a step -> factor function for
``torch.optim.lr_scheduler.LambdaLR``) and the EMA teacher's momentum (DINO's per-iteration cosine).

The triplet margin's schedule belongs to the loss that uses it (``malm.losses.triplet.margin_at``):
the loss takes the epoch, as T-Food's does."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

SCHEDULES = ("constant", "cosine", "step")


def lr_factor(warmup: int, total: int, schedule: str = "constant", step_every: int = 0,
              gamma: float = 0.1) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` steps, then ``constant`` (1.0), ``cosine`` (1.0 -> 0.0 at
    step ``total``; CLIP's and MAE's decay) or ``step`` (``gamma`` ** (steps since the start //
    ``step_every``); H-T's StepLR, stepped once per epoch there, so ``step_every`` = epochs x steps
    per epoch)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; choose one of {SCHEDULES}")
    if schedule == "step" and step_every < 1:
        raise ValueError(f"the step schedule needs step_every >= 1, got {step_every}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        if schedule == "step":
            return gamma ** (step // step_every)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


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
