"""Seeds of a training process: everything random inside epoch ``e`` of rank ``r`` (data order,
crops, masks, dropout) draws from ``epoch_seed(seed, e, r)``, so a resumed epoch replays exactly."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 9_973 + rank * 101) % (2**31)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and ``random``; returns a torch Generator seeded alike (data order)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def set_deterministic(flag: bool | None, device: torch.device) -> bool:
    """``train.deterministic``: null = on for CPU, off for CUDA. -> whether it is on.

    On CPU, with more than one thread, the backward of advanced indexing with repeated indices (the
    matching module gathers each image's tokens for many candidate pairs) adds into the gradient
    with atomics, in a different order each run: two runs of a matching variant drift apart at the
    last bit and end 0.1 points of R@1 apart. The deterministic kernels sort the indices first; on
    the CPU default they cost nothing measurable. ``warn_only``: an op without a deterministic
    kernel warns instead of failing the run."""
    on = device.type != "cuda" if flag is None else bool(flag)
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's reproducible mode
    torch.use_deterministic_algorithms(on, warn_only=True)
    log.debug("deterministic algorithms %s (train.deterministic=%s, %s)", "on" if on else "off",
              flag, device.type)
    return on
