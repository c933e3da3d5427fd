"""The embeddings file ``EMB.npz`` (``malm embed`` writes it, ``malm evaluate`` reads it):
``image [N, D]``, ``recipe [N, D]`` float32 and ``ids [N]`` (rows sorted by recipe id), plus which
checkpoint and epoch made them. Numpy only: evaluating a file needs no model code."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from malm.io import atomic_path


def save_embeddings(path: str | os.PathLike, image: np.ndarray, recipe: np.ndarray, ids: np.ndarray,
                    **meta: Any) -> None:
    """Atomic .npz with image, recipe, ids and optional scalar metadata (e.g. the checkpoint used)."""
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, image=image, recipe=recipe, ids=ids, **{k: np.asarray(v) for k, v in meta.items()})


def load_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``EMB.npz`` holding ``image [N, D]``, ``recipe [N, D]`` (float) and ``ids [N]``.

    Returns ``(image float32, recipe float32, ids)``. Every error names the file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("image", "recipe", "ids") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: missing array(s) {', '.join(missing)} "
                                 f"(found: {', '.join(z.files) or 'none'})")
            image, recipe, ids = z["image"], z["recipe"], z["ids"]
    except (OSError, ValueError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"cannot read embeddings file {path}: {exc}") from exc
    for name, a in (("image", image), ("recipe", recipe)):
        if a.ndim != 2:
            raise ValueError(f"{path}: '{name}' must be [N, D], got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"{path}: '{name}' must be numeric, got dtype {a.dtype}")
    if image.shape != recipe.shape:
        raise ValueError(f"{path}: 'image' {image.shape} and 'recipe' {recipe.shape} differ in shape")
    if ids.ndim != 1 or len(ids) != image.shape[0]:
        raise ValueError(f"{path}: 'ids' has shape {ids.shape}, expected ({image.shape[0]},)")
    image = image.astype(np.float32, copy=False)
    recipe = recipe.astype(np.float32, copy=False)
    for name, a in (("image", image), ("recipe", recipe)):
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            raise ValueError(f"{path}: '{name}' has NaN/inf in {int(bad.sum())} row(s), "
                             f"first row {int(np.flatnonzero(bad)[0])}")
    return image, recipe, ids


def embedding_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """Which checkpoint (best|last) and epoch made an embeddings file, when it says so."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].item() for k in ("checkpoint", "checkpoint_epoch") if k in z.files}
