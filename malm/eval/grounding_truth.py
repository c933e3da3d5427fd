"""What the grounding score (``malm.eval.grounding``) knows without a model: where each ingredient
is (the synthetic generator's ``synth_truth.json`` boxes), which ingredient line of the recipe names
it, and which ViT patches of the eval crop lie inside its box.

Lines
-----
Line k of a pair is the k-th line of layer1's ``ingredients`` (the cache keeps the first
``data.max_ingrs``; with ``data.ingredients=det`` the valid detected names). The synthetic
generator writes ``det_ingrs.json`` aligned with those lines, naming the ingredient of each line
(``truth["recipes"][id]["ingredients"]`` lists the visible ones but not the line order); an
ingredient's line is the one whose name equals the box's ``ingredient``. Where that line lands in
the recipe encoder's token set is the encoder's business (``RecipeEncoder.ingredient_columns``).

Boxes -> patches
----------------
A truth box ``[x0, y0, x1, y1]`` is in pixels of the synthetic image (side ``synth.image_size``,
x1/y1 exclusive, i.e. the continuous span [x0, x1)). The cache resizes the (square) image to
``cache_image_size`` (scale ``cache / source``); the eval loader centre-crops ``model.image.img_size``
at offset ``round((cache - crop) / 2)`` (torchvision's CenterCrop, ``RecipeImageDataset``). Patch p
(row-major, as timm's patch embedding flattens: row = p // grid, col = p % grid) covers crop pixels
[col * ps, (col + 1) * ps) x [row * ps, (row + 1) * ps), centre at (col + 1/2) * ps. A box with no
area inside the crop is skipped (``box_outside_crop``); a box that lies in the crop but holds no patch
centre is kept (it cannot be hit under ``centre``; its chance is 0).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

RULES = ("centre", "overlap")
# why a truth box is not scored (``select_targets``; ``line_absent`` is counted by the scorer: the
# line exists in the cache but the recipe encoder gives it no token)
SKIP_REASONS = ("image_not_in_truth", "not_visible", "not_in_recipe", "line_not_encoded",
                "line_absent", "box_outside_crop")


# ------------------------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class CropGeometry:
    """Synthetic image -> cached image -> eval crop -> ViT patch grid (all square)."""

    source_size: int   # side of the synthetic JPEG (synth.image_size)
    cache_size: int    # data.cache_image_size (the cached, resized image)
    crop_size: int     # model.image.img_size (the eval loader's centre crop)
    patch_size: int    # model.image.patch_size

    def __post_init__(self) -> None:
        if min(self.source_size, self.cache_size, self.crop_size, self.patch_size) < 1:
            raise ValueError(f"sizes must be positive: {self}")
        if self.crop_size > self.cache_size:
            raise ValueError(f"crop {self.crop_size} exceeds the cached side {self.cache_size}")
        if self.crop_size % self.patch_size:
            raise ValueError(f"crop {self.crop_size} is not a multiple of the patch {self.patch_size}")

    @property
    def scale(self) -> float:
        return self.cache_size / self.source_size

    @property
    def offset(self) -> int:
        return int(round((self.cache_size - self.crop_size) / 2.0))  # as RecipeImageDataset

    @property
    def grid(self) -> int:
        return self.crop_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid ** 2

    def to_crop(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes [T, 4] in source pixels -> [T, 4] float in crop pixels (may leave the crop)."""
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * self.scale - self.offset

    def patch_centres(self) -> np.ndarray:
        """[P, 2] (x, y) centre of each patch in crop pixels, row-major patch order."""
        c = (np.arange(self.grid) + 0.5) * self.patch_size
        ys, xs = np.meshgrid(c, c, indexing="ij")
        return np.stack([xs.ravel(), ys.ravel()], axis=1)

    def inside(self, boxes: np.ndarray, rule: str = "centre") -> np.ndarray:
        """Boxes [T, 4] (source pixels) -> [T, P] bool: which patches count as inside each box."""
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
        b = self.to_crop(boxes)[:, None, :]  # [T, 1, 4]
        if rule == "centre":
            c = self.patch_centres()[None]  # [1, P, 2]
            return ((b[..., 0] <= c[..., 0]) & (c[..., 0] < b[..., 2])
                    & (b[..., 1] <= c[..., 1]) & (c[..., 1] < b[..., 3]))
        lo = self.patch_centres()[None] - self.patch_size / 2.0  # [1, P, 2] top-left corners
        hi = lo + self.patch_size
        return ((np.maximum(b[..., 0], lo[..., 0]) < np.minimum(b[..., 2], hi[..., 0]))
                & (np.maximum(b[..., 1], lo[..., 1]) < np.minimum(b[..., 3], hi[..., 1])))

    def in_crop(self, boxes: np.ndarray) -> np.ndarray:
        """[T] bool: the box shares some area with the crop."""
        b = self.to_crop(boxes)
        return ((np.maximum(b[:, 0], 0) < np.minimum(b[:, 2], self.crop_size))
                & (np.maximum(b[:, 1], 0) < np.minimum(b[:, 3], self.crop_size)))


# ------------------------------------------------------------------------------------- truth
@dataclass
class Truth:
    """What the grounding score needs from the synthetic generator's files."""

    images: dict[str, dict]        # image id -> {recipe_id, ingredients: [{ingredient, box, visible}]}
    lines: dict[str, list[str]]    # recipe id -> ingredient name of each ingredient line (layer1 order)
    det_lines: dict[str, list[str]]  # recipe id -> the same for data.ingredients=det (valid lines only)
    source_size: int               # side of the synthetic images in pixels


def load_truth(path: str | os.PathLike, det_ingrs: str | os.PathLike | None = None) -> Truth:
    """Read ``synth_truth.json`` and the ``det_ingrs.json`` beside it (or at ``det_ingrs``)."""
    path = Path(path)
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (synth_truth.json is written by `malm data "
                                "synth` next to layer1.json; real Recipe1M has no boxes)") from None
    if not isinstance(truth, dict) or "images" not in truth or "generator" not in truth:
        raise ValueError(f"{path} is not a malm synth_truth.json (no 'images' / 'generator')")
    size = truth["generator"].get("config", {}).get("image_size")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{path}: generator.config.image_size is missing")
    det_path = Path(det_ingrs) if det_ingrs else path.with_name("det_ingrs.json")
    try:
        det = json.loads(det_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{det_path}: needed to map ingredient lines to ingredient names "
                                "(written by `malm data synth` next to synth_truth.json)") from None
    lines, det_lines = {}, {}
    for rec in det:
        items = rec.get("ingredients") or []
        valid = rec.get("valid") or [True] * len(items)
        names = [str(d.get("text", "")).strip() for d in items]
        lines[rec["id"]] = names
        det_lines[rec["id"]] = [n for n, ok in zip(names, valid) if ok and n]
    return Truth(truth["images"], lines, det_lines, size)


# ----------------------------------------------------------------------------------- targets
@dataclass
class Target:
    """One ingredient to score: a truth box and the recipe line that names it."""

    pair: int          # row in the split
    line: int          # ingredient line index
    name: str
    box: list[int]     # source pixels
    visible: float


def pair_targets(truth: Truth, image_name: str, recipe_id: str, det_mode: bool, min_visible: float,
                 n_lines: int, skipped: dict[str, int], pair: int) -> list[Target]:
    """The visible ingredients of image ``image_name`` (shown with ``recipe_id``) that one of the
    first ``n_lines`` ingredient lines names; counts the others in ``skipped``."""
    entry = truth.images.get(image_name)
    if entry is None:
        skipped["image_not_in_truth"] += 1
        return []
    if entry.get("recipe_id") != recipe_id:
        raise ValueError(f"truth says image {image_name} shows recipe {entry.get('recipe_id')}, the "
                         f"cache pairs it with {recipe_id}: truth file and cache do not match")
    names = (truth.det_lines if det_mode else truth.lines).get(recipe_id)
    if names is None:
        raise ValueError(f"recipe {recipe_id} is not in det_ingrs.json: truth file and cache do not match")
    out = []
    for ing in entry["ingredients"]:
        vis = float(ing.get("visible", 1.0))
        if vis <= 0 or vis < min_visible:
            skipped["not_visible"] += 1
            continue
        if ing["ingredient"] not in names:
            skipped["not_in_recipe"] += 1
            continue
        k = names.index(ing["ingredient"])
        if k >= n_lines:
            skipped["line_not_encoded"] += 1
            continue
        out.append(Target(pair, k, ing["ingredient"], list(ing["box"]), vis))
    return out


def select_targets(truth: Truth, geo: CropGeometry, image_names: Sequence[str],
                   recipe_ids: Sequence[str], *, det_mode: bool, min_visible: float, n_lines: int
                   ) -> tuple[list[list[Target]], dict[str, int]]:
    """Targets of pairs 0 .. N-1 (``image_names[i]``: the image the eval loader shows with recipe
    ``recipe_ids[i]``) whose box shares some area with the crop -> (targets per pair [N],
    skipped: {reason: count} over ``SKIP_REASONS``, ``line_absent`` left at 0 for the scorer)."""
    skipped = {k: 0 for k in SKIP_REASONS}
    per_pair: list[list[Target]] = []
    for i, (image_name, recipe_id) in enumerate(zip(image_names, recipe_ids)):
        t = pair_targets(truth, image_name, recipe_id, det_mode, min_visible, n_lines, skipped, i)
        keep = geo.in_crop(np.asarray([x.box for x in t])) if t else np.zeros(0, bool)
        skipped["box_outside_crop"] += int((~keep).sum())
        per_pair.append([x for x, k in zip(t, keep) if k])
    return per_pair, skipped
