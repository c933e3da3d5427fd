"""Planning the synthetic dataset: the seeded vocabulary state (popularity, look-alikes, dish
frequencies) and every recipe -- dish, ingredients, text, image ids -- before any pixel is drawn.

Each recipe comes from its own numpy Generator keyed by (seed, stream, split, index), so chunks of
the plan can run in any process and the plan is the same whatever the worker count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from malm.config import SynthConfig
from malm.synth.render import Look
from malm.synth.wording import recipe_text
from malm.synth.vocab import DISHES, INGREDIENTS

SPLITS = ("train", "val", "test")


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


