"""Deterministic synthetic dataset in Recipe1M's exact file format (the CPU default of the suite).

Each recipe is a dish type (the semantic class) with ``min..max_ingredients`` visible ingredients drawn
from a long-tailed (Zipf) popularity biased by the dish's preferences, plus invisible pantry lines. Its
images are renderings of the same dish (:mod:`malm.data.synth_render`); its text is Recipe1M-like
(:mod:`malm.data.synth_text`). Files written under ``out``::

    layer1.json  layer2.json  det_ingrs.json        Recipe1M format (layer2 lists recipes with images)
    <partition>/<c0>/<c1>/<c2>/<c3>/<image id>      JPEG images
    synth_truth.json    {"generator": {config, seed, signatures, look-alike pairs, dish frequencies},
                         "images": {image id: {recipe_id, partition, dish,
                                               ingredients: [{ingredient, box, visible}]}},
                         "recipes": {recipe id: {dish, partition, ingredients, pantry, images}}}
                        box: [x0, y0, x1, y1] pixels (x1/y1 exclusive) around the visible part;
                        visible: fraction of the drawn ingredient left unoccluded
    synth_classes.json  {recipe id: dish type}; titles also contain the dish word
    .synth_complete     the summary, written last: its presence means the dataset is complete

Difficulty knobs: ``min/max_ingredients``, ``lookalike_frac`` (ingredient pairs whose signatures
differ only by a small colour shift), ``noise``, ``color_jitter``, ``occlusion``, ``zipf_a``,
``multi_image_frac``, ``text_only_frac``. Randomness comes from numpy Generators keyed by
(seed, stream, split, recipe, image), so output is byte-identical for a config whatever ``workers``
(given the same numpy and Pillow/libjpeg builds).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from malm.data.synth_render import Look, Renderer
from malm.data.synth_text import recipe_text
from malm.data.synth_vocab import DISHES, INGREDIENTS

SPLITS = ("train", "val", "test")
VERSION = 1
URL = "https://example.com/malm-synth"
COMPLETE, INCOMPLETE = ".synth_complete", ".synth_incomplete"
OUTPUT_FILES = ("layer1.json", "layer2.json", "det_ingrs.json", "synth_truth.json", "synth_classes.json")


def _f(default, help: str):  # noqa: A002 - mirrors argparse
    return field(default=default, metadata={"help": help})


@dataclass
class SynthConfig:
    """Size, difficulty and seed of the synthetic dataset (the ``synth`` config section)."""

    seed: int = _f(0, "Seed of the whole dataset: same seed and config give byte-identical files.")
    n_train: int = _f(10000, "Train recipes with images (text-only recipes come on top).")
    n_val: int = _f(2000, "Val recipes with images.")
    n_test: int = _f(10500, "Test recipes with images (the 10k protocol needs >= 10000).")
    text_only_frac: float = _f(0.1, "Fraction of each split's recipes that have no image (text only).")
    multi_image_frac: float = _f(0.12, "Fraction of recipes with images that have 2..max_images renderings.")
    max_images: int = _f(3, "Most images per recipe.")
    image_size: int = _f(64, "Side of the saved JPEGs in pixels (drawn at twice this, then downsampled).")
    min_ingredients: int = _f(2, "Fewest visible ingredients per dish.")
    max_ingredients: int = _f(8, "Most visible ingredients per dish.")
    max_pantry: int = _f(4, "Most invisible pantry lines (salt, oil, water, ...) per recipe.")
    lookalike_frac: float = _f(0.1, "Fraction of ingredients paired into look-alikes (same texture and "
                               "shape, colour within +-10): harder to tell apart from pixels.")
    noise: float = _f(0.04, "Std of Gaussian pixel noise, as a fraction of 255.")
    color_jitter: float = _f(0.08, "Std of colour / brightness jitter per ingredient and image "
                             "(fraction of 255).")
    occlusion: float = _f(0.3, "0..1: overlap between ingredient groups and chance of sauce drizzled "
                          "over them.")
    n_ingredients: int = _f(0, "Use only this many of the most popular ingredients (0 = all 156): fewer "
                            "ingredients to tell apart make the benchmark easier.")
    piece_scale: float = _f(1.0, "Scale of the ingredient pieces (1 = the vocabulary's sizes; larger "
                            "pieces are easier to see at low resolution). Stacked layers keep their size.")
    zipf_a: float = _f(1.1, "Zipf exponent of ingredient popularity (0 = uniform; larger = longer tail).")
    dish_zipf_a: float = _f(0.5, "Zipf exponent of dish-type frequency (0 = balanced classes).")
    jpeg_quality: int = _f(90, "JPEG quality of the saved images.")
    workers: int = _f(2, "Rendering processes (does not change the output).")

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"SynthConfig: {msg}")
        need(min(self.n_train, self.n_val, self.n_test) >= 0, "split sizes must be >= 0")
        need(0 <= self.text_only_frac < 1 and 0 <= self.multi_image_frac <= 1,
             "text_only_frac must lie in [0, 1) and multi_image_frac in [0, 1]")
        need(self.max_images >= 1, "max_images must be >= 1")
        need(16 <= self.image_size <= 1024, "image_size must lie in [16, 1024]")
        need(1 <= self.min_ingredients <= self.max_ingredients <= 20,
             "need 1 <= min_ingredients <= max_ingredients <= 20")
        need(0 <= self.lookalike_frac <= 1 and 0 <= self.occlusion <= 1,
             "lookalike_frac and occlusion lie in [0, 1]")
        need(min(self.noise, self.color_jitter, self.zipf_a, self.dish_zipf_a, self.max_pantry) >= 0,
             "noise, color_jitter, zipf exponents and max_pantry must be >= 0")
        need(self.n_ingredients == 0 or self.n_ingredients >= self.max_ingredients,
             "n_ingredients must be 0 (all) or >= max_ingredients")
        need(0.25 <= self.piece_scale <= 4, "piece_scale must lie in [0.25, 4]")
        need(1 <= self.jpeg_quality <= 100 and self.workers >= 0, "jpeg_quality in [1, 100], workers >= 0")

    def output_config(self) -> dict:
        """The fields that determine the files (all but ``workers``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "workers"}


@dataclass
class RecipePlan:
    """One recipe before rendering."""

    id: str
    partition: str
    dish: int
    base: str                 # base colour (hex) of broth / sauce / dough
    ingredients: list[int]    # visible ingredients (indices into INGREDIENTS)
    images: list[str]         # image ids; empty for text-only recipes
    text: dict                # title, ingredients, clean, instructions
    key: tuple[int, int]      # (split index, index in split): seeds this recipe's images


@dataclass
class Vocabulary:
    """Seed-dependent vocabulary state shared by planning and rendering."""

    looks: list[Look]
    popularity: np.ndarray                  # [N] Zipf probabilities
    dish_probs: np.ndarray                  # [D]
    weights: np.ndarray                     # [D, N] ingredient sampling weights per dish
    lookalikes: list[tuple[str, str]]


def build_vocabulary(cfg: SynthConfig) -> Vocabulary:
    """Seeded vocabulary: popularity ranks, look-alike pairs, dish frequencies."""
    rng = np.random.default_rng([cfg.seed, 0])
    n, names = len(INGREDIENTS), [i.name for i in INGREDIENTS]
    ranks = np.empty(n, np.int64)
    ranks[rng.permutation(n)] = np.arange(1, n + 1)
    pop = 1.0 / ranks ** cfg.zipf_a
    if cfg.n_ingredients:
        pop[ranks > cfg.n_ingredients] = 0.0
    pop /= pop.sum()
    looks = [Look(i.color, i.color2, i.texture, i.shape, i.size, k) for k, i in enumerate(INGREDIENTS)]

    def shift(c: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(int(v) for v in np.clip(np.add(c, rng.integers(-10, 11, 3)), 0, 255))

    pairs = []
    perm = rng.permutation(n)
    for a, b in perm[: 2 * round(cfg.lookalike_frac * n / 2)].reshape(-1, 2):
        src = looks[a]
        looks[b] = Look(shift(src.color), shift(src.color2), src.texture, src.shape, src.size, src.pattern)
        pairs.append((names[a], names[b]))
    dranks = np.empty(len(DISHES), np.int64)
    dranks[rng.permutation(len(DISHES))] = np.arange(1, len(DISHES) + 1)
    dprobs = 1.0 / dranks ** cfg.dish_zipf_a
    weights = np.array([[pop[k] * d.categories.get(i.category, 0.0) * (6.0 if i.name in d.signature else 1.0)
                         for k, i in enumerate(INGREDIENTS)] for d in DISHES])
    return Vocabulary(looks, pop, dprobs / dprobs.sum(), weights, pairs)


def _hex_id(*parts) -> str:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=5).hexdigest()


def _unique(taken: set[str], *parts) -> str:
    salt, rid = 0, _hex_id(*parts)
    while rid in taken:
        salt += 1
        rid = _hex_id(*parts, salt)
    taken.add(rid)
    return rid


def _split_sizes(cfg: SynthConfig) -> list[tuple[str, int, int]]:
    """(split, recipes with images, all recipes) per split."""
    out = []
    for split in SPLITS:
        n_img = getattr(cfg, f"n_{split}")
        out.append((split, n_img, n_img + round(n_img * cfg.text_only_frac / (1 - cfg.text_only_frac))))
    return out


def _plan_range(job: tuple) -> list[RecipePlan]:
    """Recipes ``lo..hi-1`` of split ``s``; each from its own Generator, so chunks run anywhere."""
    cfg, vocab, s, lo, hi = job
    split, n_img, _ = _split_sizes(cfg)[s]
    plans = []
    for i in range(lo, hi):
        rng = np.random.default_rng([cfg.seed, 1, s, i])
        d = int(rng.choice(len(DISHES), p=vocab.dish_probs))
        dish, w = DISHES[d], vocab.weights[d]
        k = min(int(rng.integers(cfg.min_ingredients, cfg.max_ingredients + 1)), int((w > 0).sum()))
        ings = [int(j) for j in rng.choice(len(w), size=k, replace=False, p=w / w.sum())]
        base = dish.bases[int(rng.integers(len(dish.bases)))]
        n_images = 0
        if i < n_img:
            multi = cfg.max_images > 1 and rng.random() < cfg.multi_image_frac
            n_images = int(rng.integers(2, cfg.max_images + 1)) if multi else 1
        text = recipe_text(rng, dish, [INGREDIENTS[j] for j in ings], cfg.max_pantry)
        plans.append(RecipePlan("", split, d, base, ings, [""] * n_images, text, (s, i)))
    return plans


def plan_recipes(cfg: SynthConfig, vocab: Vocabulary | None = None, pool=None) -> list[RecipePlan]:
    """All recipes (with and without images) in generation order; no pixels. ``pool``: an optional
    ``multiprocessing`` pool to spread the work over."""
    vocab = vocab or build_vocabulary(cfg)
    jobs = [(cfg, vocab, s, lo, min(lo + 500, n_all))
            for s, (_, _, n_all) in enumerate(_split_sizes(cfg)) for lo in range(0, n_all, 500)]
    plans = [p for chunk in (pool.imap(_plan_range, jobs) if pool else map(_plan_range, jobs)) for p in chunk]
    taken: set[str] = set()
    for p in plans:  # ids hash (seed, split, index); a collision is re-salted in generation order
        s, i = p.key
        p.id = _unique(taken, "malm-synth", cfg.seed, p.partition, i)
        p.images = [_unique(taken, "malm-synth", cfg.seed, p.partition, i, "image", m) + ".jpg"
                    for m in range(len(p.images))]
    return plans


def image_path(root: Path, partition: str, image_id: str) -> Path:
    return root / partition / image_id[0] / image_id[1] / image_id[2] / image_id[3] / image_id


# ----------------------------------------------------------------------------------- rendering
_WORKER: dict = {}


def _init_worker(looks: list[Look], cfg: SynthConfig, out: str) -> None:
    _WORKER["renderer"] = Renderer(looks, cfg.image_size, cfg.noise, cfg.color_jitter, cfg.occlusion,
                                   cfg.seed, piece_scale=cfg.piece_scale)
    _WORKER["cfg"], _WORKER["out"], _WORKER["dirs"] = cfg, Path(out), set()


def _render_task(task: tuple) -> tuple[str, list, int]:
    image_id, split, dish, base, ings, key = task
    cfg, out = _WORKER["cfg"], _WORKER["out"]
    rng = np.random.default_rng([cfg.seed, 2, *key])
    data, truth = _WORKER["renderer"].render(rng, DISHES[dish], base, list(ings), cfg.jpeg_quality)
    path = image_path(out, split, image_id)
    if path.parent not in _WORKER["dirs"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        _WORKER["dirs"].add(path.parent)
    path.write_bytes(data)
    return image_id, truth, len(data)


def _render_all(plans: list[RecipePlan], cfg: SynthConfig, pool, progress: bool) -> tuple[dict, int]:
    tasks = [(img, p.partition, p.dish, p.base, tuple(p.ingredients), (*p.key, m))
             for p in plans for m, img in enumerate(p.images)]
    truth, nbytes = {}, 0
    results = pool.imap_unordered(_render_task, tasks, chunksize=32) if pool else map(_render_task, tasks)
    for image_id, t, n in tqdm(results, total=len(tasks), disable=not progress, desc="synth images",
                               unit="img", smoothing=0.1):
        truth[image_id], nbytes = t, nbytes + n
    return truth, nbytes


# ------------------------------------------------------------------------------------- writing
def _write_json(path: Path, obj) -> int:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    from malm.io import atomic_write_bytes

    return atomic_write_bytes(path, json.dumps(obj).encode())


def _records(plans: list[RecipePlan], truth: dict, vocab: Vocabulary, cfg: SynthConfig) -> dict[str, object]:
    names = [i.name for i in INGREDIENTS]
    plans = sorted(plans, key=lambda p: p.id)
    layer1 = [{"id": p.id, "title": p.text["title"],
               "ingredients": [{"text": t} for t in p.text["ingredients"]],
               "instructions": [{"text": t} for t in p.text["instructions"]],
               "partition": p.partition, "url": f"{URL}/recipes/{p.id}"} for p in plans]
    layer2 = [{"id": p.id, "images": [{"id": m, "url": f"{URL}/images/{m}"} for m in p.images]}
              for p in plans if p.images]
    det = [{"id": p.id, "ingredients": [{"text": c} for c in p.text["clean"]],
            "valid": [True] * len(p.text["clean"])} for p in plans]
    images = {m: {"recipe_id": p.id, "partition": p.partition, "dish": DISHES[p.dish].name,
                  "ingredients": [{"ingredient": names[i], "box": box, "visible": vis}
                                  for i, box, vis in truth[m]]}
              for p in plans for m in p.images}
    recipes = {p.id: {"dish": DISHES[p.dish].name, "partition": p.partition,
                      "ingredients": [names[i] for i in p.ingredients],
                      "pantry": [c for c in p.text["clean"] if c not in {names[i] for i in p.ingredients}],
                      "images": p.images} for p in plans}
    generator = {
        "name": "malm.data.synth", "version": VERSION, "seed": cfg.seed, "config": cfg.output_config(),
        "lookalike_pairs": [list(x) for x in vocab.lookalikes],
        "ingredients": {i.name: {"category": i.category, "color": list(lk.color), "color2": list(lk.color2),
                                 "texture": lk.texture, "shape": lk.shape, "size": lk.size,
                                 "popularity": round(float(pp), 6)}
                        for i, lk, pp in zip(INGREDIENTS, vocab.looks, vocab.popularity)},
        "dishes": {d.name: {"vessel": d.vessel, "layout": d.layout, "method": d.method,
                            "probability": round(float(pd), 6)} for d, pd in zip(DISHES, vocab.dish_probs)},
    }
    return {"layer1.json": layer1, "layer2.json": layer2, "det_ingrs.json": det,
            "synth_classes.json": {p.id: DISHES[p.dish].name for p in plans},
            "synth_truth.json": {"generator": generator, "images": images, "recipes": recipes}}


def _prepare(out: Path, cfg: SynthConfig, overwrite: bool) -> dict | None:
    """Return the stored summary if ``out`` already holds this dataset; clear stale output otherwise."""
    done = out / COMPLETE
    if done.exists():
        summary = json.loads(done.read_text())
        if summary.get("config") == cfg.output_config():
            return {**summary, "cached": True}
        if not overwrite:
            diff = sorted(k for k, v in cfg.output_config().items() if summary.get("config", {}).get(k) != v)
            raise FileExistsError(f"{out} holds a synthetic dataset made with another config (differs in "
                                  f"{', '.join(diff)}); use another folder or overwrite=True")
    elif not (out / INCOMPLETE).exists() and not overwrite:
        found = [f for f in ("layer1.json", "layer2.json", "det_ingrs.json") if (out / f).exists()]
        if found:
            raise FileExistsError(f"{out} holds {', '.join(found)} not written by malm.data.synth (a real "
                                  "Recipe1M?); refusing to overwrite without overwrite=True")
    for name in (COMPLETE, *OUTPUT_FILES):
        (out / name).unlink(missing_ok=True)
    for split in SPLITS:
        if (out / split).is_dir():
            shutil.rmtree(out / split)
    return None


def generate(out_dir: str | Path, cfg: SynthConfig, progress: bool = True, overwrite: bool = False) -> dict:
    """Write the dataset to ``out_dir``; return a summary (recipes, pairs, text-only and images per
    split, seconds, bytes).

    The summary is written last to ``.synth_complete``. A folder that already has it for the same
    output config is returned as is (``"cached": True``) without regenerating; a different config raises
    ``FileExistsError`` unless ``overwrite``. A folder left by a crashed run (``.synth_incomplete``)
    is regenerated; Recipe1M files from elsewhere are never overwritten without ``overwrite``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cached = _prepare(out, cfg, overwrite)
    if cached is not None:
        return cached
    t0 = time.time()
    (out / INCOMPLETE).write_text(json.dumps(cfg.output_config()))
    vocab = build_vocabulary(cfg)
    initargs = (vocab.looks, cfg, str(out))
    if cfg.workers > 1:
        with mp.get_context().Pool(cfg.workers, _init_worker, initargs) as pool:
            plans = plan_recipes(cfg, vocab, pool)
            truth, nbytes = _render_all(plans, cfg, pool, progress)
    else:
        _init_worker(*initargs)
        try:
            plans = plan_recipes(cfg, vocab)
            truth, nbytes = _render_all(plans, cfg, None, progress)
        finally:
            _WORKER.clear()
    for name, obj in _records(plans, truth, vocab, cfg).items():
        nbytes += _write_json(out / name, obj)
    count = lambda f: {s: sum(f(p) for p in plans if p.partition == s) for s in SPLITS}  # noqa: E731
    summary = {"config": cfg.output_config(), "version": VERSION,
               "recipes": count(lambda p: 1), "pairs": count(lambda p: bool(p.images)),
               "text_only": count(lambda p: not p.images), "images": count(lambda p: len(p.images)),
               "seconds": round(time.time() - t0, 1), "bytes": nbytes}
    _write_json(out / COMPLETE, summary)
    (out / INCOMPLETE).unlink()
    return summary
