"""The global random state of a training process: everything random inside epoch ``e`` of rank ``r``
(data order, dropout) draws from ``seed_everything(epoch_seed(seed, e, r))`` (:mod:`malm.seeds`), so a
resumed epoch replays exactly; and torch's deterministic mode on request."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and ``random``; returns a torch Generator seeded alike (data order)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def set_deterministic(flag: bool, device: torch.device) -> bool:
    """``train.deterministic``: torch's deterministic kernels for the whole process. -> flag

    Not needed on the CPU: the training path avoids the kernels that accumulate with atomics (the
    backward of advanced indexing with repeated indices: the matching module uses index_select),
    and tests/test_train.py checks that two 2-thread MALM runs end bit-identical. On CUDA many
    kernels (index_add_, scatter_add_, attention backward) accumulate with atomics; this makes them
    deterministic at a cost in speed. ``warn_only``: an op with no deterministic kernel warns
    instead of failing the run."""
    if flag and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's reproducible mode
    torch.use_deterministic_algorithms(bool(flag), warn_only=True)
    if flag:
        log.info("deterministic algorithms on (train.deterministic=true, %s)", device.type)
    return bool(flag)
