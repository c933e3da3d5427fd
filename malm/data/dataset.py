"""Training/eval dataset over the preprocessing cache (``malm.data.cache``), read through memmaps.

Images: train = a random image of the recipe (H-T), random ``image_size`` crop of the cached
``cache_image_size`` image + horizontal flip (H-T's resize 256 / random crop 224 / flip); eval = the
first image, centre crop. CLIP normalisation. Text: the cached token arrays as LongTensors (0 = pad).

Randomness: with ``seed`` given, each item draws from a generator seeded by (seed, epoch, index) --
reproducible whatever the worker count, and on resume (call :meth:`set_epoch` before each epoch;
with ``persistent_workers=True`` the workers do not see it). With ``seed=None`` it draws from torch's
global RNG, which the DataLoader seeds per worker from its own ``generator``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from malm.data.cache import load_manifest
from malm.data.store import JpegRows
from malm.seeds import mix_seed

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_KEYS = ("title", "ingrs", "instrs")
_ARRAYS = ("ids", "title", "ingrs", "instrs", "cls", "image_offsets", "images")


class RecipeImageDataset(Dataset):
    """Pairs of one split of the cache. ``dataset[i]`` is a dict::

        image  [3, image_size, image_size] float32, CLIP-normalised
        title  [T] int64; ingrs [I, T] int64; instrs [J, T] int64   (0 = pad)
        cls    int64 tensor (0 = background); id str; index int

    An image row that cannot be read any more (I/O error on the memmap) gives ``None`` and a count
    in ``self.skipped``; :func:`collate` drops such samples and reports ``n_skipped``.
    """

    def __init__(self, cache_dir: str | os.PathLike, split: str, train: bool, image_size: int,
                 seed: int | None = None, image_sampling: str = "random"):
        if image_sampling not in ("random", "first"):
            raise ValueError(f"image_sampling must be random or first, got {image_sampling!r}")
        self.image_sampling = image_sampling
        self.cache_dir = Path(cache_dir)
        self.split, self.train, self.image_size, self.seed = split, bool(train), int(image_size), seed
        self.epoch = 0
        self.skipped = 0
        man = load_manifest(self.cache_dir)
        if split not in man["splits"]:
            raise ValueError(f"{self.cache_dir}: no split {split!r} in the cache "
                             f"(splits: {', '.join(man['splits'])})")
        self.manifest = man
        self.cache_image_size = int(man["cache_image_size"])
        if self.image_size > self.cache_image_size:
            raise ValueError(f"image_size {image_size} exceeds the cached images' side "
                             f"{self.cache_image_size} (rebuild with a larger cache_image_size)")
        self.vocab_size = int(man["vocab_size"])
        self.num_classes = int(man["num_classes"])
        self._arrays: dict[str, np.ndarray] | None = None
        a = self._open()
        n, m = len(a["ids"]), a["images"].shape[0]
        off = a["image_offsets"]
        if len(off) != n + 1 or off[0] != 0 or off[-1] != m or (n and (np.diff(off) < 1).any()):
            raise ValueError(f"{self.cache_dir / split}: image_offsets do not match images.npy "
                             f"({n} pairs, {m} image rows); rebuild the cache")
        self.ids: list[str] = [str(x) for x in a["ids"]]
        mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
        self._scale, self._offset = 1.0 / (255.0 * std), mean / std

    # memmaps are opened lazily per process: a pickled dataset (DataLoader worker) carries paths only
    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            d = self.cache_dir / self.split
            jpeg = self.manifest.get("image_store", "raw") == "jpeg"
            self._arrays = {k: np.load(d / f"{k}.npy", mmap_mode="r") for k in _ARRAYS
                            if not (jpeg and k == "images")}
            if jpeg:  # the jpeg store: decoded per sample, in the loader's workers
                self._arrays["images"] = JpegRows(d)
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def __len__(self) -> int:
        return len(self.ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def classes(self) -> np.ndarray:
        """Semantic class of every pair [N] int64 (0 = background), for class-balanced samplers."""
        return np.asarray(self._open()["cls"], dtype=np.int64)

    def _generator(self, index: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, index))

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        a = self._open()
        index = int(index)
        lo, hi = int(a["image_offsets"][index]), int(a["image_offsets"][index + 1])
        s, S = self.image_size, self.cache_image_size
        if self.train:
            g = self._generator(index)
            r = torch.randint(0, 2**31 - 1, (4,), generator=g).tolist()
            row = lo + r[0] % (hi - lo) if self.image_sampling == "random" else lo
            top, left, flip = r[1] % (S - s + 1), r[2] % (S - s + 1), bool(r[3] & 1)
        else:
            row, flip = lo, False
            top = left = int(round((S - s) / 2.0))   # torchvision CenterCrop
        try:
            crop = np.array(a["images"][row, top:top + s, left:left + s])
        except OSError as exc:
            self.skipped += 1
            log.warning("%s/%s: image row %d unreadable (%s); sample %d skipped",
                        self.cache_dir, self.split, row, exc, index)
            return None
        if flip:
            crop = crop[:, ::-1]
        # uint8 HWC -> float CHW, (x / 255 - mean) / std as one scale and one offset, in place
        img = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))).float()
        img.mul_(self._scale).sub_(self._offset)
        out: dict[str, Any] = {"image": img}
        for k in TEXT_KEYS:
            out[k] = torch.from_numpy(a[k][index].astype(np.int64))
        out["cls"] = torch.tensor(int(a["cls"][index]), dtype=torch.long)
        out["id"] = self.ids[index]
        out["index"] = index
        return out


def collate(samples: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """Stack samples: tensors -> ``[B, ...]``, ``id`` -> list, ``index`` -> LongTensor [B];
    ``n_skipped`` counts the ``None`` samples dropped. All skipped -> ``None`` (skip the batch)."""
    kept = [s for s in samples if s is not None]
    if not kept:
        return None
    batch: dict[str, Any] = {k: torch.stack([s[k] for s in kept]) for k in ("image", *TEXT_KEYS, "cls")}
    batch["id"] = [s["id"] for s in kept]
    batch["index"] = torch.tensor([s["index"] for s in kept], dtype=torch.long)
    batch["n_skipped"] = len(samples) - len(kept)
    return batch
