"""Tiny hand-made Recipe1M trees for the data tests (independent of ``malm.synth``)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from malm.config import DataConfig


def recipe(i: int, partition: str = "train", n_images: int = 1, title: str | None = None,
           ingredients: list[str] | None = None, instructions: list[str] | None = None) -> dict:
    """One layer1 record (+ its image ids under the private key ``_images``)."""
    rid = f"{i:010x}"
    return {
        "id": rid,
        "title": title if title is not None else f"Tomato Soup {i}",
        "ingredients": [{"text": t} for t in (ingredients or ["2 tomatoes", "1 cup water"])],
        "instructions": [{"text": t} for t in (instructions or ["Boil the water.", "Add tomatoes."])],
        "partition": partition,
        "url": f"http://example.com/{rid}",
        "_images": [f"{i:06x}{k:04x}.jpg" for k in range(n_images)],
    }


def jpeg_bytes(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def image_file(root: Path, partition: str, image_id: str) -> Path:
    return root.joinpath(partition, *image_id[:4], image_id)


def write_tree(root: Path, recipes: list[dict], missing: set[str] = frozenset(),
               corrupt: set[str] = frozenset(), det_ingrs: bool = False) -> Path:
    """Write layer1/layer2 (+ det_ingrs) and real JPEGs; image ids in ``missing`` are not written,
    those in ``corrupt`` are truncated JPEGs."""
    root.mkdir(parents=True, exist_ok=True)
    layer1 = [{k: v for k, v in r.items() if not k.startswith("_")} for r in recipes]
    layer2 = [{"id": r["id"], "images": [{"id": im, "url": f"http://example.com/{im}"}
                                         for im in r["_images"]]}
              for r in recipes if r.get("_images")]
    (root / "layer1.json").write_text(json.dumps(layer1))
    (root / "layer2.json").write_text(json.dumps(layer2))
    if det_ingrs:
        det = [{"id": r["id"], "ingredients": r["ingredients"],
                "valid": [True] * len(r["ingredients"])} for r in layer1]
        (root / "det_ingrs.json").write_text(json.dumps(det))
    for n, r in enumerate(recipes):
        for k, im in enumerate(r.get("_images", [])):
            if im in missing:
                continue
            path = image_file(root, r["partition"], im)
            path.parent.mkdir(parents=True, exist_ok=True)
            data = jpeg_bytes(n * 31 + k)
            path.write_bytes(data[: len(data) // 3] if im in corrupt else data)
    return root


def standard_recipes() -> list[dict]:
    """12 recipes: train 6 (one with 2 images, one without images, one whose image is missing),
    val 3, test 3."""
    titles = ["Spicy Tomato Soup", "Chocolate Chip Cookies", "Tomato Soup with Basil",
              "Grilled Chicken", "Lemon Cookies", "Chicken Soup", "Beef Stew", "Apple Pie",
              "Pumpkin Soup", "Fish Tacos", "Carrot Cake", "Onion Soup"]
    parts = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    out = []
    for i, (t, p) in enumerate(zip(titles, parts)):
        n_img = 2 if i == 1 else (0 if i == 4 else 1)
        out.append(recipe(i + 1, p, n_img, title=t))
    return out


STANDARD_MISSING = {"0000060000.jpg"}   # recipe 6 (train): listed, absent on disk


def data_config(root: Path, cache: Path, **kw: Any) -> DataConfig:
    base = dict(root=str(root), cache_dir=str(cache), min_word_count=1, cache_image_size=24,
                num_workers=1)
    base.update(kw)
    return DataConfig(**base)
