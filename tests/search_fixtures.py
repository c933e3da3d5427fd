"""Tiny trained runs and search indexes for the `malm serve` tests (tests/test_serve.py,
tests/test_serve_browser.py): the same set-up as tests/test_search.py's ``trained`` fixture
(1-epoch smoke runs of ``malm``, with a matching module, and ``baseline``, without), built once per
test session whichever module asks first, plus the small photo files the tests upload."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import SMOKE, overrides

_BUILT: dict[str, dict] = {}


def tiny_indexes(tmp_path_factory, tiny_data: dict[str, str]) -> dict:
    """``{"root", "runs": {variant: run dir}, "malm": index path, "baseline": index path,
    "photos": [first image file of each test pair]}``; trained and indexed once per session."""
    key = tiny_data["data.cache_dir"]
    if key in _BUILT:
        return _BUILT[key]
    from malm import config as C
    from malm import variants
    from malm.data.cache import split_array
    from malm.data.recipe1m import image_path
    from malm.search import build_index
    from malm.train.trainer import train

    root = tmp_path_factory.mktemp("serve")
    runs, indexes = {}, {}
    for variant in ("malm", "baseline"):
        ov = C.parse_overrides(overrides(tiny_data, **{"train.threads": 1, "train.epochs": 1}))
        runs[variant] = root / variant
        train(variants.resolve_from_files(variant, [SMOKE], ov), runs[variant], progress=False)
        indexes[variant] = build_index(runs[variant], root / f"{variant}.npz", device="cpu")
    cache = Path(tiny_data["data.cache_dir"])
    names = split_array(cache, "test", "image_names")
    off = np.asarray(split_array(cache, "test", "image_offsets"))
    photos = [str(image_path(tiny_data["data.root"], "test", str(names[off[i]])))
              for i in range(len(off) - 1)]
    _BUILT[key] = {"root": root, "runs": runs, **indexes, "photos": photos}
    return _BUILT[key]


def photo(path: Path, w: int = 60, h: int = 45, seed: int = 0) -> Path:
    """A small noisy gradient photo (JPEG or PNG by suffix)."""
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1)
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)
    return path


def bomb(path: Path, side: int = 30000) -> Path:
    """A PNG of a few hundred bytes whose header claims ``side`` x ``side`` RGB pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def broken(path: Path) -> Path:
    """A JPEG cut in half (truncated)."""
    full = photo(path.with_name("whole_" + path.name))
    data = full.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path
