"""The image store of the preprocessing cache: decoding and resizing the images of a Recipe1M
root once, and the two on-disk forms a split's images take (``data.image_store``).

* ``raw``: ``<split>/images.npy`` ``[M, S, S, 3]`` uint8 rows, decoded, shorter side resized to S
  and centre-cropped; appended row by row (:class:`_NpyRowWriter`), memory-mapped by the loader.
* ``jpeg``: ``<split>/images.jpg`` the same rows re-encoded as JPEG, concatenated, with
  ``<split>/images_jpeg_offsets.npy`` ``[M + 1]``; :class:`JpegRows` decodes one per sample.

Corrupt images are skipped and counted; a pair left without an image becomes text-only.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from malm.data.recipe1m import Recipe

_INLINE_IMAGES = 64   # fewer images than this: decode in-process (no pool start-up)
_HEADER_BYTES = 128   # reserved .npy header, so images.npy can be appended before M is known
STORE_FILES = {"raw": ("images.npy",), "jpeg": ("images.jpg", "images_jpeg_offsets.npy")}
_ORIENTATION = 0x0112  # EXIF orientation tag


def load_resized(path: str, size: int) -> np.ndarray:
    """Decode ``path`` fully, turn it upright by its EXIF orientation tag (phones store photos
    sideways plus the tag; viewers, and :func:`malm.search.photo.load_photo`, show them upright),
    resize the shorter side to ``size`` (bilinear, antialiased, as torchvision's Resize on PIL) and
    centre-crop: ``[size, size, 3]`` uint8. Raises on a bad file."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale >= size (fast)
        if im.getexif().get(_ORIENTATION, 1) not in (None, 1):
            im = ImageOps.exif_transpose(im)  # decodes, then a lossless flip / rotation
        im = im.convert("RGB")         # forces the full decode: truncated files raise here
    w, h = im.size
    if min(w, h) < 1:
        raise ValueError(f"empty image {w}x{h}")
    if w <= h:
        nw, nh = size, max(size, int(size * h / w))
    else:
        nw, nh = max(size, int(size * w / h)), size
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8)


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    """[S, S, 3] uint8 -> JPEG bytes (4:2:0, as the download's photos; Pillow's libjpeg-turbo)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_jpeg(data: bytes | np.ndarray) -> np.ndarray:
    """JPEG bytes -> [H, W, 3] uint8 (Pillow's libjpeg-turbo: no extra dependency, and for the
    cache's small images its per-call cost is close to simplejpeg's and torchvision's)."""
    with Image.open(io.BytesIO(data if isinstance(data, bytes) else data.tobytes())) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


class JpegRows:
    """The rows of a jpeg store, indexed like the raw store's ``images.npy`` memmap:
    ``rows[m]`` or ``rows[m, y0:y1, x0:x1]`` decodes image ``m`` (and crops). ``shape[0]`` = M.
    The bytes are memory-mapped, so a pickled instance (a DataLoader worker) carries paths only."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.offsets = np.load(self.folder / "images_jpeg_offsets.npy")
        self._bytes: np.ndarray | None = None
        first = decode_jpeg(self._data()[self.offsets[0]:self.offsets[1]]) if len(self.offsets) > 1 else None
        self.shape = (len(self.offsets) - 1, *(first.shape if first is not None else (0, 0, 3)))

    def _data(self) -> np.ndarray:
        if self._bytes is None:
            path = self.folder / "images.jpg"
            self._bytes = (np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size
                           else np.zeros(0, np.uint8))
        return self._bytes

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_bytes": None}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        m, *crop = index if isinstance(index, tuple) else (index,)
        img = decode_jpeg(self._data()[self.offsets[m]:self.offsets[m + 1]])
        return img[tuple(crop)] if crop else img


def _resize_task(task: tuple[str, int, int | None]) -> np.ndarray | bytes | str:
    path, size, quality = task
    try:
        img = load_resized(path, size)
        return img if quality is None else encode_jpeg(img, quality)
    except Exception as exc:  # any decoder failure is a corrupt image: skipped and counted
        return f"{type(exc).__name__}: {exc}"


@dataclass
class SplitImages:
    pairs: list[Recipe] = field(default_factory=list)
    offsets: list[int] = field(default_factory=lambda: [0])
    names: list[str] = field(default_factory=list)
    corrupt: int = 0
    dropped_corrupt: int = 0
    over_cap: int = 0
    bytes: int = 0          # bytes of the stored images
    examples: list[dict] = field(default_factory=list)


class _NpyRowWriter:
    """Append ``row_shape`` uint8 rows to an .npy file whose row count is only known at the end."""

    def __init__(self, path: Path, row_shape: tuple[int, ...]):
        self.fh = open(path, "wb")
        self.fh.write(b"\0" * _HEADER_BYTES)
        self.row_shape, self.rows = row_shape, 0

    def append(self, row: np.ndarray) -> None:
        assert row.shape == self.row_shape and row.dtype == np.uint8
        self.fh.write(np.ascontiguousarray(row).tobytes())
        self.rows += 1

    def close(self) -> None:
        shape = (self.rows, *self.row_shape)
        header = repr({"descr": "|u1", "fortran_order": False, "shape": shape}).encode("latin1")
        pad = _HEADER_BYTES - 10 - len(header) - 1
        assert pad >= 0
        self.fh.seek(0)
        self.fh.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", _HEADER_BYTES - 10)
                      + header + b" " * pad + b"\n")
        self.fh.close()


class _JpegWriter:
    """Append encoded JPEGs to ``images.jpg``; ``images_jpeg_offsets.npy`` is written at close."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.fh = open(folder / "images.jpg", "wb")
        self.offsets = [0]

    def append(self, data: bytes) -> None:
        self.fh.write(data)
        self.offsets.append(self.offsets[-1] + len(data))

    def close(self) -> None:
        self.fh.close()
        np.save(self.folder / "images_jpeg_offsets.npy", np.asarray(self.offsets, dtype=np.int64))


_PAIRS_PER_CHUNK = 256  # pairs decoded per pool.map call in cache_images


def cache_images(pairs: list[Recipe], out: Path, size: int, cap: int | None, workers: int,
                  progress: bool, split: str, per_recipe: int | None = None,
                  quality: int | None = None) -> SplitImages:
    """Decode the images of ``pairs`` (id order; at most ``per_recipe`` each) into the raw store
    (``out/images.npy``) or, with a JPEG ``quality``, the jpeg store, until ``cap`` pairs."""
    res = SplitImages()
    found = [r.found[:per_recipe] if per_recipe else r.found for r in pairs]
    total = sum(len(f) for f in found)
    writer = _NpyRowWriter(out / "images.npy", (size, size, 3)) if quality is None else _JpegWriter(out)
    bar = tqdm(total=total, desc=f"images {split}", unit="img", disable=not progress,
               mininterval=1.0)
    pool = None
    if workers > 1 and total >= _INLINE_IMAGES:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp
        pool = ctx.Pool(workers)
    done = False
    try:
        # Chunks of pairs, each decoded with a blocking map: at the cap no task is outstanding,
        # so the pool shuts down cleanly (terminating an imap fed by a generator could hang join).
        for start in range(0, len(pairs), _PAIRS_PER_CHUNK):
            if cap is not None and len(res.pairs) >= cap:
                res.over_cap = len(pairs) - start
                break
            chunk = range(start, min(start + _PAIRS_PER_CHUNK, len(pairs)))
            tasks = [(p, size, quality) for i in chunk for p in found[i]]
            results = iter(pool.map(_resize_task, tasks, chunksize=8) if pool is not None
                           else map(_resize_task, tasks))
            for i in chunk:
                r, paths = pairs[i], found[i]
                if cap is not None and len(res.pairs) >= cap:
                    res.over_cap = len(pairs) - i
                    break
                good = []
                for p in paths:
                    img = next(results)
                    bar.update(1)
                    if isinstance(img, str):
                        res.corrupt += 1
                        if len(res.examples) < 50:
                            res.examples.append({"split": split, "recipe": r.id, "path": p, "error": img})
                        continue
                    writer.append(img)
                    res.bytes += len(img) if isinstance(img, bytes) else img.nbytes
                    good.append(os.path.basename(p))
                if good:
                    res.pairs.append(r)
                    res.names += good
                    res.offsets.append(len(res.names))
                else:
                    res.dropped_corrupt += 1
            if res.over_cap:
                break
        done = True
    finally:
        bar.close()
        writer.close()
        if pool is not None:
            if done:
                pool.close()
            else:
                pool.terminate()
            pool.join()
    if res.corrupt and progress:
        tqdm.write(f"{split}: skipped {res.corrupt} corrupt image(s); {res.dropped_corrupt} "
                   f"pair(s) left without an image became text-only")
    return res
