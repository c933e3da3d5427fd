"""Atomic checkpoints that carry the resolved config that made them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"  # the last finished epoch (resume)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename: never a torn file."""
    from malm.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint holds tensors, numbers, strings and dicts only."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torn/foreign files: say which file
        raise RuntimeError(f"cannot load checkpoint {path}: {exc}") from exc


BEST_CHECKPOINT = "checkpoint_best.pt"


def is_better(val: dict[str, float], best: dict[str, float]) -> bool:
    """T-Food's saving criteria: lower val img2rec medR wins; at equal medR, higher R@1."""
    if val["val/img2rec_medR"] != best["val/img2rec_medR"]:
        return val["val/img2rec_medR"] < best["val/img2rec_medR"]
    return val["val/img2rec_R@1"] > best["val/img2rec_R@1"]
