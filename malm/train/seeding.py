"""Seeds of a training process: everything random inside epoch ``e`` of rank ``r`` (data order,
crops, masks, dropout) draws from ``epoch_seed(seed, e, r)``, so a resumed epoch replays exactly."""

from __future__ import annotations

import random

import numpy as np
import torch


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
