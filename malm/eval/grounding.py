"""Grounding score: does the matching module's local attention look at the right place?

Only the synthetic data knows where every ingredient is (``synth_truth.json`` boxes), so this is a
check no real benchmark offers. For each evaluated pair (the first image of recipe i, centre crop, as the
retrieval eval sees it, with its own recipe i) and each visible ingredient that the recipe names on
an ingredient line:

1. the trained model runs on the FULL image (no mask, eval mode) and on its recipe; the image and
   recipe token sets are projected (``matching.proj_image`` / ``proj_recipe``) and fused by psi
   for the pair (i, i) only -- no training-time candidate sampling. A_I = psi's last-layer,
   head-averaged cross-attention [1+P, S]: each image token's weights over the recipe tokens;
2. A_I is restricted to the patch rows (CLS dropped) and to the recipe-token column of that
   ingredient's line: one weight per patch [P]; the patch with the most weight is the pointer
   (ties: the lowest patch index);
3. a hit when the pointer patch lies inside the ingredient's box (``rule``): ``centre`` (default)
   = the patch's centre lies in the box; ``overlap`` = the patch and the box share some area.

The chance rate of an ingredient is the share of patches that count as inside its box under the
same rule (what a pointer drawn uniformly over the patches scores); the reported ``chance`` is its
mean over the scored ingredients. ``mass_in_box`` is the share of the column's attention weight that
falls on inside patches (uniform weights give the chance rate too).

Recipe tokens -> ingredient lines
---------------------------------
``RecipeEncoder`` returns tokens = [title words | one token per ingredient line | one token per
instruction line], after (a) dropping trailing word / line slots that are pad in every row of the
batch (``used_length``) and (b) with ``pack`` (the default), packing each component: each row's
non-pad tokens first in their original order, cut to the batch's longest row -- but only when that
cut shortens the component (``pack_components``). So the column of ingredient line k of row b is
``title width + k`` when the ingredient component is not re-ordered, else ``title width +
(number of present lines before k in row b)``. :func:`ingredient_columns` computes it by running
the model's own ``used_length`` / ``pack_components`` on slot ids, and every batch checks the pad
mask it predicts against the encoder's.

Line k of a pair is the k-th line of layer1's ``ingredients`` (the cache keeps the first
``data.max_ingrs``; with ``data.ingredients=det`` the valid detected names). The synthetic
generator writes ``det_ingrs.json`` aligned with those lines, naming the ingredient of each line
(``truth["recipes"][id]["ingredients"]`` lists the visible ones but not the line order); an
ingredient's line is the one whose name equals the box's ``ingredient``.

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
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from malm.data.dataset import CLIP_MEAN, CLIP_STD, RecipeImageDataset, collate
from malm.eval.embed import load_trained, resolve_device
from malm.eval.grounding_figure import grounding_figure
from malm.io import atomic_write_json
from malm.models.recipe import pack_components, used_length

log = logging.getLogger(__name__)

RULES = ("centre", "overlap")
SCHEMA = "malm.grounding/1"


class NoMatchingModule(ValueError):
    """The model has no two-level matching module (no psi, so no A_I to score)."""


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


# ------------------------------------------------------------------------- recipe token layout
def ingredient_columns(title: torch.Tensor, ingrs: torch.Tensor, instrs: torch.Tensor,
                       pack: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each ingredient line lands in ``RecipeEncoder``'s token set.

    title [B, Lt], ingrs [B, I, L], instrs [B, J, L] (token ids, 0 = pad)
    -> cols [B, I] long (the token column of line k of row b; -1 when that line is absent or not
       encoded), pad [B, S] bool (the pad mask the encoder returns for this batch)
    """
    B, I = ingrs.shape[:2]
    lt = used_length(title != 0)
    comps, pads = [torch.zeros(B, lt, 1, dtype=torch.long, device=title.device)], [title[:, :lt] == 0]
    for field, ids in (("ingrs", ingrs), ("instrs", instrs)):
        present = (ids != 0).any(-1)
        present = present[:, :used_length(present)]
        n = present.shape[1]
        tag = torch.arange(1, n + 1, device=ids.device) if field == "ingrs" else torch.zeros(
            n, dtype=torch.long, device=ids.device)
        comps.append(tag.view(1, n, 1).expand(B, n, 1))  # ingredient slot k carries k + 1
        pads.append(~present)
    if pack:
        comps, pads = pack_components(comps, pads)
    tag, pad = torch.cat(comps, dim=1)[..., 0], torch.cat(pads, dim=1)  # [B, S]
    cols = torch.full((B, I + 1), -1, dtype=torch.long, device=title.device)
    rows, s = torch.nonzero((tag > 0) & ~pad, as_tuple=True)
    cols[rows, tag[rows, s]] = s
    return cols[:, 1:], pad


# --------------------------------------------------------------------------------- scoring
def target_weights(attn: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """A_I [B, 1+P, S] -> [T, P]: the patch rows (CLS dropped) of column ``cols[t]`` of pair
    ``rows[t]``."""
    return attn[rows, 1:, cols]


def pointing(weights: torch.Tensor, inside: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pointing game on per-patch weights.

    weights [T, P] (one ingredient column of A_I over the patches), inside [T, P] bool
    -> pointer [T] (argmax patch, ties to the lowest index), hit [T] bool, chance [T] (share of
       inside patches), mass [T] (share of the weight on inside patches; 0 when all weights are 0)
    """
    inside = inside.to(weights.device, torch.bool)
    pointer = weights.argmax(dim=1)
    hit = inside.gather(1, pointer[:, None])[:, 0]
    total = weights.sum(1)
    mass = torch.where(total > 0, (weights * inside).sum(1) / total.clamp_min(1e-30),
                       torch.zeros_like(total))
    return {"pointer": pointer, "hit": hit, "chance": inside.float().mean(1), "mass": mass}


def summarise(hit: np.ndarray, chance: np.ndarray, mass: np.ndarray, pair: np.ndarray,
              n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy, chance, lift, mass in box, and 95 % intervals from a bootstrap over pairs (the
    ingredients of one image are not independent). Arrays [T]; ``pair`` groups them."""
    hit, chance, mass = (np.asarray(a, dtype=np.float64) for a in (hit, chance, mass))
    T = len(hit)
    if T == 0:
        return {"n_targets": 0, "accuracy": None, "chance": None, "lift": None, "mass_in_box": None,
                "accuracy_ci95": None, "excess_ci95": None}
    acc, ch = float(hit.mean()), float(chance.mean())
    _, grp = np.unique(np.asarray(pair), return_inverse=True)
    G = int(grp.max()) + 1
    n_g = np.bincount(grp, minlength=G).astype(np.float64)
    hit_g, ch_g = np.bincount(grp, hit, G), np.bincount(grp, chance, G)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, G, size=(n_boot, G))
    n_b = n_g[draw].sum(1)
    acc_b = hit_g[draw].sum(1) / n_b
    exc_b = acc_b - ch_g[draw].sum(1) / n_b
    def ci(a: np.ndarray) -> list[float]:
        return [round(float(np.quantile(a, q)), 6) for q in (0.025, 0.975)]

    return {"n_targets": T, "accuracy": acc, "chance": ch, "lift": acc / ch if ch > 0 else None,
            "mass_in_box": float(mass.mean()), "accuracy_ci95": ci(acc_b), "excess_ci95": ci(exc_b)}


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


# ------------------------------------------------------------------------------------- model
def check_matching(model, variant: str = "?") -> None:
    if getattr(model, "matching", None) is None:
        raise NoMatchingModule(
            f"variant {variant!r} has no two-level matching module (loss.lambda_gc = loss.lambda_lc = 0): "
            "the grounding score reads psi's cross-attention A_I, which this model does not have. "
            "Score a variant with local matching (e.g. malm, global_only, llc).")


@torch.no_grad()
def pair_attention(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """psi's A_I of each pair (i, i) of the batch on the full image: [B, 1+P, S], and the recipe
    encoder's output (tokens, pad)."""
    tokens, _ = model.image_encoder.forward_visible(batch["image"], None)
    rec = model.recipe_encoder(batch["title"], batch["ingrs"], batch["instrs"])
    m = model.matching
    i, r = m.proj_image(tokens), m.proj_recipe(rec["tokens"])
    _, attn = m.psi(i, r, None, rec["pad"], need_weights=True)
    return attn.float(), rec


@dataclass
class _Target:
    pair: int          # row in the split
    line: int          # ingredient line index
    name: str
    box: list[int]     # source pixels
    visible: float


def _targets(truth: Truth, image_name: str, recipe_id: str, det_mode: bool, min_visible: float,
             n_lines: int, skipped: dict[str, int], pair: int) -> list[_Target]:
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
        out.append(_Target(pair, k, ing["ingredient"], list(ing["box"]), vis))
    return out


def grounding_score(model, cfg, cache_dir: str | os.PathLike, truth: Truth, *, split: str = "test",
                    limit: int | None = None, batch_size: int = 64, rule: str = "centre",
                    min_visible: float = 0.0, device: torch.device | str = "cpu",
                    n_examples: int = 0, progress: bool = False) -> tuple[dict, list[dict]]:
    """Pointing-game accuracy of ``model``'s psi on ``split`` -> (result dict, examples).

    ``limit``: the first N pairs of the split (cache order = recipe id order). ``n_examples``: keep
    the crops, boxes and attention maps of the first N images with a scored ingredient (figure).
    Raises :class:`NoMatchingModule` when the model has no matching module.
    """
    check_matching(model, getattr(cfg, "variant", "?"))
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    device = torch.device(device)
    ds = RecipeImageDataset(cache_dir, split, train=False, image_size=cfg.model.image.img_size)
    vit = model.image_encoder.vit
    patch = vit.patch_embed.patch_size
    patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    geo = CropGeometry(truth.source_size, ds.cache_image_size, ds.image_size, patch)
    if geo.num_patches != model.image_encoder.num_patches:
        raise ValueError(f"crop {geo.crop_size} / patch {patch} gives {geo.num_patches} patches, the "
                         f"model has {model.image_encoder.num_patches}")

    split_dir = Path(cache_dir) / split
    names = np.load(split_dir / "image_names.npy", mmap_mode="r")
    offsets = np.load(split_dir / "image_offsets.npy", mmap_mode="r")
    n_lines = int(np.load(split_dir / "ingrs.npy", mmap_mode="r").shape[1])  # data.max_ingrs
    det_mode = getattr(cfg.data, "ingredients", "raw") == "det"
    n = len(ds) if limit is None else min(int(limit), len(ds))
    skipped = {k: 0 for k in ("image_not_in_truth", "not_visible", "not_in_recipe",
                              "line_not_encoded", "line_absent", "box_outside_crop")}
    per_pair: list[list[_Target]] = []
    for i in range(n):
        t = _targets(truth, str(names[int(offsets[i])]), ds.ids[i], det_mode, min_visible, n_lines,
                     skipped, i)
        keep = geo.in_crop(np.asarray([x.box for x in t])) if t else np.zeros(0, bool)
        skipped["box_outside_crop"] += int((~keep).sum())
        per_pair.append([x for x, k in zip(t, keep) if k])
    pairs = [i for i in range(n) if per_pair[i]]
    if not pairs:
        raise ValueError(f"{split}: no pair of the first {n} has a visible ingredient in its recipe "
                         f"(skipped: {skipped}); is --truth the synth_truth.json of this run's data?")

    model.eval()
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    pack = getattr(model.recipe_encoder, "pack", True)
    loader = DataLoader(Subset(ds, pairs), batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=cfg.data.num_workers)
    rec_hit, rec_ch, rec_mass, rec_pair, names_out = [], [], [], [], []
    examples: list[dict] = []
    for batch in tqdm(loader, desc=f"grounding {split}", disable=not progress, leave=False):
        if batch is None or batch.get("n_skipped"):
            raise RuntimeError(f"{cache_dir}/{split}: unreadable cached images; rebuild the cache")
        tb = {k: batch[k].to(device) for k in ("image", "title", "ingrs", "instrs")}
        attn, rec = pair_attention(model, tb)
        cols, pad = ingredient_columns(tb["title"], tb["ingrs"], tb["instrs"], pack=pack)
        if pad.shape != rec["pad"].shape or not torch.equal(pad, rec["pad"]):
            raise RuntimeError("the recipe encoder's token layout no longer matches "
                               "malm.eval.grounding.ingredient_columns (pad masks differ); update it")
        index = batch["index"].tolist()
        targets = [(b, t) for b, i in enumerate(index) for t in per_pair[i]]
        rows = torch.tensor([b for b, _ in targets], device=device)
        lines = torch.tensor([t.line for _, t in targets], device=device)
        col = cols[rows, lines]
        ok = (col >= 0).cpu().numpy()
        skipped["line_absent"] += int((~ok).sum())  # the line exists but encodes to no token
        targets = [x for x, k in zip(targets, ok) if k]
        if not targets:
            continue
        rows, col = rows[torch.from_numpy(ok).to(device)], col[col >= 0]
        w = target_weights(attn, rows, col).cpu()  # [T, P]
        inside = torch.from_numpy(geo.inside(np.asarray([t.box for _, t in targets]), rule))
        res = pointing(w, inside)
        rec_hit.append(res["hit"].numpy())
        rec_ch.append(res["chance"].numpy())
        rec_mass.append(res["mass"].numpy())
        rec_pair.append(np.asarray([t.pair for _, t in targets]))
        names_out += [t.name for _, t in targets]
        for b in range(len(index)):
            if len(examples) >= n_examples:
                break
            sel = [j for j, (bb, _) in enumerate(targets) if bb == b]
            if not sel:
                continue
            img = (batch["image"][b] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
            examples.append({
                "id": batch["id"][b], "image": img,
                "ingredients": [{"name": targets[j][1].name,
                                 "box": geo.to_crop(np.asarray(targets[j][1].box))[0].tolist(),
                                 "weights": w[j].numpy().reshape(geo.grid, geo.grid),
                                 "pointer": int(res["pointer"][j]), "hit": bool(res["hit"][j]),
                                 "chance": float(res["chance"][j])} for j in sel]})
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    hit, ch, mass, pair = cat(rec_hit), cat(rec_ch), cat(rec_mass), cat(rec_pair)
    if len(hit) == 0:
        raise ValueError(f"{split}: no ingredient line of the first {n} pairs encodes to a recipe token "
                         f"(skipped: {skipped})")
    result = {
        "schema": SCHEMA, "has_matching": True, "split": split, "rule": rule,
        "min_visible": min_visible, "n_pairs": len(pairs), "pairs_considered": n,
        **summarise(hit, ch, mass, pair),
        "skipped": skipped,
        "by_ingredient": _by_ingredient(names_out, hit, ch),
        "geometry": {"source_size": geo.source_size, "cache_size": geo.cache_size,
                     "crop_size": geo.crop_size, "crop_offset": geo.offset,
                     "patch_size": geo.patch_size, "grid": geo.grid},
    }
    return result, examples


def _by_ingredient(names: Sequence[str], hit: np.ndarray, chance: np.ndarray) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for name in sorted(set(names)):
        m = np.asarray([n == name for n in names])
        out[name] = {"n": int(m.sum()), "accuracy": round(float(hit[m].mean()), 4),
                     "chance": round(float(chance[m].mean()), 4)}
    return out


# ------------------------------------------------------------------------------ entry point
def run_grounding(run_dir: str | os.PathLike, truth_path: str | os.PathLike | None = None,
                  out: str | os.PathLike | None = None, figure: str | os.PathLike | None = None, *,
                  split: str = "test", limit: int | None = None, rule: str = "centre",
                  min_visible: float = 0.0, checkpoint: str = "best", batch_size: int = 64,
                  n_examples: int = 4, device: str = "auto", progress: bool = False) -> dict:
    """Score a trained run; write ``out`` (JSON) and ``figure`` (PNG) when given; return the result.

    ``truth_path`` defaults to ``<data.root>/synth_truth.json`` of the run's config. A variant
    without a matching module gives ``{"has_matching": false, "reason": ...}`` (also written to
    ``out``) instead of an error, so a stage over every variant does not stop at the baseline.
    """
    dev = resolve_device(device)
    model, cfg, cache_dir, info = load_trained(run_dir, dev, checkpoint)
    truth_path = Path(truth_path) if truth_path else Path(cfg.data.root) / "synth_truth.json"
    head = {"schema": SCHEMA, "run_dir": str(run_dir), "variant": cfg.variant, **info,
            "truth": str(truth_path)}
    try:
        check_matching(model, cfg.variant)
    except NoMatchingModule as exc:
        result = {**head, "has_matching": False, "reason": str(exc)}
        log.warning("%s", exc)
        if out:
            atomic_write_json(out, result)
        return result
    truth = load_truth(truth_path)
    res, examples = grounding_score(model, cfg, cache_dir, truth, split=split, limit=limit,
                                    batch_size=batch_size, rule=rule, min_visible=min_visible,
                                    device=dev, n_examples=n_examples if figure else 0,
                                    progress=progress)
    result = {**head, **res}
    if out:
        atomic_write_json(out, result)
    if figure:
        acc = result["accuracy"]
        grounding_figure(examples, figure,
                         title=f"{cfg.variant} ({Path(run_dir).name}, {split}): psi's A_I on the "
                               f"ingredient's line token, per patch\npointing accuracy {acc:.3f} vs chance "
                               f"{result['chance']:.3f} ({result['n_targets']} ingredients, {rule} rule; "
                               "cyan: box, square: pointer, colour scaled per map)")
        result["figure"] = str(figure)
    return result
