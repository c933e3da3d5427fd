"""Recipe1M-like text for a synthetic recipe: title, ingredient lines, instructions.

Lines carry quantities, units and preparation words ("2 tablespoons chopped fresh basil"), invisible
pantry lines (salt, oil, water) are mixed in, and instructions blend ingredient-specific steps
(sometimes naming only the category, "the vegetables") with generic method steps and filler, so
text is redundant and not trivially aligned to pixels.
"""

from __future__ import annotations

import json

import numpy as np

from malm.synth import read_data
from malm.synth.vocab import Dish, Ingredient

# Mass nouns keep their name in the plural ("2 cups rice"); the rest of these categories count.
_MASS_CATEGORIES = {"herb", "leafy", "cheese", "dairy", "grain", "meat", "seafood", "sweet", "poultry"}
_COUNTABLE = {"sausage", "meatball", "mussel", "scallop", "anchovy", "marshmallow", "sprinkle",
              "chocolate chip", "crouton", "breadcrumb", "tortilla", "tortilla chip", "egg noodle",
              "rice noodle", "oat", "chicken breast", "duck breast"}
_MASS = {"corn", "garlic", "ginger", "coconut", "watermelon", "pineapple", "tofu", "edamame", "kale",
         "shrimp", "okra", "asparagus", "broccoli", "cauliflower", "celery", "bean sprout"}
_IRREGULAR = {"tomato": "tomatoes", "potato": "potatoes", "sweet potato": "sweet potatoes",
              "cherry tomato": "cherry tomatoes", "bean sprout": "bean sprouts", "leaf": "leaves"}

_SEASONING = ("salt", "black pepper", "olive oil", "water")

# The text itself (amount lists, per-category and per-method templates, titles) is data:
# text_templates.json, read once here into tuples.
_T = json.loads(read_data("text_templates.json"))
COUNTS, SIZES, VOLUMES, SPOONS, WEIGHTS, CANS, NUMS = (
    tuple(_T["amounts"][k]) for k in ("count", "size", "vol", "spoon", "weight", "can", "num"))
# category -> (group word or "", line templates, preparation words, post phrases, instruction steps)
CATEGORIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    k: (c["group"], *(tuple(c[f]) for f in ("lines", "preps", "posts", "steps")))
    for k, c in _T["categories"].items()}
# ingredient-specific line templates that replace the category ones
LINE_OVERRIDES: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _T["line_overrides"].items()}
PANTRY: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in _T["pantry"].items()}
# method -> (pantry items, intro steps, core steps, closing steps)
METHODS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    k: tuple(tuple(m[f]) for f in ("pantry", "intro", "core", "outro")) for k, m in _T["methods"].items()}
FILLER, SERVE, ADJECTIVES, TITLES, PANS, MINUTES = (
    tuple(_T[k]) for k in ("filler", "serve", "adjectives", "titles", "pans", "minutes"))


def is_mass(ing: Ingredient) -> bool:
    if ing.name in _MASS:
        return True
    return ing.category in _MASS_CATEGORIES and ing.name not in _COUNTABLE


def plural(ing: Ingredient) -> str:
    """Plural used in lines and steps ("tomatoes", "rice"); the truth file uses the singular name."""
    name = ing.name
    if is_mass(ing):
        return name
    if name in _IRREGULAR:
        return _IRREGULAR[name]
    if name.endswith("y") and name[-2] not in "aeiou":
        return name[:-1] + "ies"
    if name.endswith(("s", "sh", "ch", "x")):
        return name + "es"
    return name + "s"


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.random() * len(seq))]  # scalar random() is ~10x cheaper than integers()


def _fill(rng: np.random.Generator, tpl: str, choices: dict, **fixed) -> str:
    """Format ``tpl``, drawing only the fields it uses (keeps the draw count small)."""
    vals = {k: _pick(rng, v) for k, v in choices.items() if "{" + k + "}" in tpl}
    return tpl.format(**vals, **fixed)


_AMOUNTS = {"size": SIZES, "vol": VOLUMES, "spoon": SPOONS, "weight": WEIGHTS, "can": CANS, "num": NUMS}


def ingredient_line(rng: np.random.Generator, ing: Ingredient) -> str:
    _, lines, preps, posts, _ = CATEGORIES[ing.category]
    options = LINE_OVERRIDES.get(ing.name, lines)
    if is_mass(ing):  # "2 cups corn", never "6 corn"
        options = [t for t in options if "{count}" not in t] or options
    tpl = _pick(rng, options)
    count = _pick(rng, COUNTS) if "{count}" in tpl else ""
    many = "{count}" not in tpl or count not in ("1", "1/2")
    text = _fill(rng, tpl, {**_AMOUNTS, "prep": preps, "post": posts}, count=count,
                 noun=plural(ing) if many else ing.name)
    return " ".join(text.split())


def _mention(rng: np.random.Generator, ing: Ingredient) -> str:
    """Name an ingredient in a step: usually by name, sometimes only by its category word."""
    group = CATEGORIES[ing.category][0]
    return group if group and rng.random() < 0.3 else plural(ing)


def _fmt(rng: np.random.Generator, tpl: str, dish: str = "", noun: str = "") -> str:
    if "{F}" in tpl:
        f = _pick(rng, (325, 350, 375, 400, 425))
        tpl = tpl.replace("{F}", str(f)).replace("{C}", str(round((f - 32) * 5 / 9)))
    return _fill(rng, tpl, {"t": MINUTES, "pan": PANS}, dish=dish, noun=noun)


def title(rng: np.random.Generator, dish: Dish, ings: list[Ingredient]) -> str:
    forms = [t for t in TITLES if ("{B}" not in t or len(ings) > 1)]
    tpl = _pick(rng, forms)
    order = rng.permutation(len(ings))
    a, b = (ings[int(i)].name.title() for i in (list(order) * 2)[:2])
    return tpl.format(adj=_pick(rng, ADJECTIVES), A=a, B=b, Dish=dish.name.title())


def instructions(rng: np.random.Generator, dish: Dish, ings: list[Ingredient]) -> list[str]:
    _, intro, core, outro = METHODS[dish.method]
    steps = [_fmt(rng, _pick(rng, intro))]
    for i in rng.permutation(len(ings)):
        ing = ings[int(i)]
        if rng.random() < 0.7:
            steps.append(_fmt(rng, _pick(rng, CATEGORIES[ing.category][4]), noun=_mention(rng, ing)))
        if rng.random() < 0.25:
            steps.append(_pick(rng, FILLER))
    if len(ings) >= 3 and rng.random() < 0.6:
        names = [_mention(rng, ings[int(i)]) for i in rng.choice(len(ings), 3, replace=False)]
        combine = f"In a large bowl, combine the {names[0]}, {names[1]} and {names[2]}."
        steps.insert(1 + int(rng.integers(len(steps))), combine)
    steps.append(_fmt(rng, _pick(rng, core)))
    if rng.random() < 0.5:
        steps.append(_fmt(rng, _pick(rng, SERVE), dish=dish.name))
    steps.append(_fmt(rng, _pick(rng, outro)))
    # Real Recipe1M lines often hold several sentences.
    merged: list[str] = []
    for s in steps:
        if merged and rng.random() < 0.2:
            merged[-1] = f"{merged[-1]} {s}"
        else:
            merged.append(s)
    return merged


def recipe_text(rng: np.random.Generator, dish: Dish, ings: list[Ingredient], max_pantry: int) -> dict:
    """Title, ingredient lines with their clean names (det_ingrs), instructions. Pantry lines are
    invisible distractors chosen from the dish's cooking method."""
    pool = list(_SEASONING) + [p for p in METHODS[dish.method][0] if p not in _SEASONING]
    n_pantry = int(rng.integers(0, max_pantry + 1)) if max_pantry > 0 else 0
    pantry = [pool[int(i)] for i in rng.choice(len(pool), min(n_pantry, len(pool)), replace=False)]
    lines = [(ingredient_line(rng, ing), ing.name) for ing in ings]
    lines += [(_pick(rng, PANTRY[p]), p) for p in pantry]
    lines = [lines[int(i)] for i in rng.permutation(len(lines))]
    return {"title": title(rng, dish, ings), "ingredients": [t for t, _ in lines],
            "clean": [c for _, c in lines], "instructions": instructions(rng, dish, ings)}
