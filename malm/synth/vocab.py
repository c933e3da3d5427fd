"""Vocabulary tables of the synthetic Recipe1M stand-in (:mod:`malm.synth`).

Each ingredient has a fixed visual signature (main colour, second colour, texture, piece shape,
piece size) and a text category that picks its units, preparation words and instruction verbs.
Each dish type (the semantic class; its name is one lower-case word that every title contains)
fixes the vessel, the layout of the ingredients, the base (sauce/broth/dough) colours, the cooking
method and a preference over ingredient categories.
"""

from __future__ import annotations

from dataclasses import dataclass

from malm.synth import read_data

TEXTURES = ("solid", "stripes", "dots", "noise", "checker", "speckle")
SHAPES = ("circle", "square", "triangle", "diamond", "stick", "leaf", "ring", "half", "blob", "star")
SIZES = {"s": 0.045, "m": 0.07, "l": 0.1}  # piece radius as a fraction of the image side


@dataclass(frozen=True)
class Ingredient:
    name: str           # canonical singular name, as written to det_ingrs.json
    category: str
    color: tuple[int, int, int]
    color2: tuple[int, int, int]
    texture: str
    shape: str
    size: str


@dataclass(frozen=True)
class Dish:
    name: str                        # class name; one lower-case word, contained in every title
    vessel: str                      # bowl | plate | board | glass | tray | pan
    layout: str                      # scattered | pile | ring | topping | grid | skewer | stacked | layered
    bases: tuple[str, ...]           # base (sauce / broth / dough) colours, one picked per recipe
    method: str                      # key of TEXT["method"]
    categories: dict[str, float]     # preference weight per ingredient category
    signature: tuple[str, ...] = ()  # ingredients boosted for this dish


def _rgb(h: str) -> tuple[int, int, int]:
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def _parse_ingredients(rows: str) -> tuple[Ingredient, ...]:
    out = []
    for line in rows.strip().splitlines():
        if line.startswith("#"):
            continue
        *words, cat, c1, c2, tex, shape, size = line.split()
        assert tex in TEXTURES and shape in SHAPES and size in SIZES, line
        out.append(Ingredient(" ".join(words), cat, _rgb(c1), _rgb(c2), tex, shape, size))
    return tuple(out)


INGREDIENTS: tuple[Ingredient, ...] = _parse_ingredients(read_data("ingredients.txt"))

_VEG = {"veg": 3.0, "leafy": 1.0, "herb": 1.0}
DISHES: tuple[Dish, ...] = (
    Dish("salad", "bowl", "scattered", ("#eef2dc", "#f4ecd0"), "raw",
         {"leafy": 4, "veg": 3, "herb": 1, "fruit": 1, "cheese": 1, "nut": 1, "seafood": 0.5, "poultry": 0.5},
         ("lettuce", "tomato", "cucumber", "feta", "black olive", "crouton")),
    Dish("soup", "bowl", "scattered", ("#e3a857", "#c9442c", "#9bbf5a", "#efe0b8"), "simmer",
         {**_VEG, "legume": 1.5, "poultry": 1, "grain": 0.5}, ("carrot", "celery", "onion", "pea")),
    Dish("stew", "bowl", "pile", ("#6b3e26", "#8a4b2a"), "simmer",
         {"meat": 3, "veg": 3, "herb": 1, "legume": 0.5}, ("beef", "potato", "carrot", "onion")),
    Dish("curry", "bowl", "scattered", ("#d98e04", "#c8551e", "#e9c46a"), "simmer",
         {"poultry": 2, "veg": 2, "legume": 2, "herb": 1, "seafood": 1},
         ("chicken breast", "chickpea", "cilantro")),
    Dish("pizza", "board", "topping", ("#c0392b", "#f2e8cf"), "bake",
         {"cheese": 3, "meat": 2, "veg": 2, "herb": 1}, ("mozzarella", "pepperoni", "basil", "tomato")),
    Dish("pasta", "plate", "pile", ("#b5332e", "#efe3c2", "#5e8c31"), "boil",
         {"grain": 2, "veg": 2, "cheese": 2, "herb": 1, "meat": 1, "seafood": 1},
         ("spaghetti", "penne", "parmesan")),
    Dish("cake", "plate", "stacked", ("#f5deb3", "#6b3e26", "#fff5e1"), "bake",
         {"sweet": 3, "fruit": 2, "dairy": 1.5, "nut": 1}, ("chocolate", "strawberry", "whipped cream")),
    Dish("pie", "plate", "topping", ("#d9a066", "#c98b4a"), "bake",
         {"fruit": 4, "sweet": 1, "nut": 1, "dairy": 0.5}, ("apple", "cherry", "pecan", "blueberry")),
    Dish("sandwich", "board", "stacked", ("#d2a06d", "#e8c89a"), "assemble",
         {"meat": 2, "cheese": 2, "leafy": 2, "veg": 1, "poultry": 1},
         ("ham", "turkey", "lettuce", "swiss cheese")),
    Dish("burger", "plate", "stacked", ("#c8853f", "#b5702e"), "grill",
         {"meat": 2, "cheese": 2, "leafy": 1.5, "veg": 2},
         ("ground beef", "cheddar", "lettuce", "tomato", "bacon")),
    Dish("tacos", "plate", "grid", ("#f0d9a0", "#e8c37a"), "fry",
         {"meat": 2, "veg": 2, "herb": 1, "cheese": 1, "legume": 1, "seafood": 1},
         ("cilantro", "avocado", "lime")),
    Dish("risotto", "plate", "pile", ("#efe3c2", "#f3e9cf"), "simmer",
         {"veg": 2, "cheese": 1.5, "grain": 1, "seafood": 1, "herb": 1},
         ("rice", "mushroom", "parmesan", "pea")),
    Dish("omelette", "plate", "topping", ("#f6d55c", "#f2c94c"), "fry",
         {"egg": 3, "cheese": 2, "veg": 2, "herb": 1, "meat": 1}, ("egg", "cheddar", "chive")),
    Dish("smoothie", "glass", "layered", ("#f3b6c4", "#c8e39a", "#b48fd0"), "blend",
         {"fruit": 5, "dairy": 1, "sweet": 1, "nut": 0.5}, ("banana", "strawberry", "yogurt")),
    Dish("casserole", "tray", "scattered", ("#d9a441", "#e8c36a"), "bake",
         {"meat": 1.5, "poultry": 1.5, "veg": 2, "cheese": 2, "grain": 1},
         ("cheddar", "breadcrumb", "broccoli")),
    Dish("lasagna", "tray", "layered", ("#b5332e", "#e9d8a6"), "bake",
         {"cheese": 3, "meat": 2, "veg": 1, "leafy": 1}, ("ricotta", "mozzarella", "ground beef", "spinach")),
    Dish("sushi", "board", "grid", ("#f7f5ee",), "assemble",
         {"seafood": 4, "veg": 1.5, "grain": 1}, ("nori", "rice", "salmon", "tuna", "cucumber", "avocado")),
    Dish("skewers", "plate", "skewer", ("#f4efe4", "#e9e1cf"), "grill",
         {"meat": 3, "poultry": 2, "veg": 3, "seafood": 1}, ("red onion", "red bell pepper", "zucchini")),
    Dish("pancakes", "plate", "topping", ("#e2b36a", "#d9a050"), "fry",
         {"fruit": 3, "sweet": 2, "dairy": 1, "nut": 1}, ("blueberry", "banana", "maple syrup", "butter")),
    Dish("cookies", "tray", "grid", ("#c8954f", "#8a5a35"), "bake",
         {"sweet": 3, "nut": 2, "fruit": 1, "grain": 0.5}, ("chocolate chip", "oat", "raisin", "walnut")),
    Dish("tart", "plate", "ring", ("#e8c07d", "#f3d9a4"), "bake",
         {"fruit": 4, "dairy": 1, "sweet": 1, "nut": 0.5}, ("strawberry", "kiwi", "raspberry", "peach")),
    Dish("chili", "bowl", "scattered", ("#8b2e1a", "#a33b20"), "simmer",
         {"legume": 3, "meat": 2, "veg": 2, "cheese": 1, "dairy": 0.5},
         ("kidney bean", "ground beef", "jalapeno")),
    Dish("ramen", "bowl", "ring", ("#e0b878", "#c98a4a", "#f0dcb0"), "simmer",
         {"grain": 1, "egg": 2, "meat": 1, "veg": 2, "seafood": 1},
         ("egg noodle", "hard-boiled egg", "green onion", "nori")),
    Dish("porridge", "bowl", "ring", ("#efe2c4", "#e6d3a8"), "simmer",
         {"fruit": 3, "nut": 2, "sweet": 1, "grain": 1}, ("oat", "banana", "blueberry", "honey")),
    Dish("parfait", "glass", "layered", ("#fbfbf7", "#f6ecd9"), "assemble",
         {"fruit": 3, "dairy": 1.5, "grain": 1, "sweet": 1, "nut": 1}, ("yogurt", "granola", "raspberry")),
    Dish("quiche", "plate", "topping", ("#f2d27a", "#e8c35a"), "bake",
         {"egg": 2, "cheese": 2, "veg": 2, "meat": 1, "leafy": 1, "herb": 1},
         ("egg", "bacon", "spinach", "swiss cheese")),
    Dish("frittata", "pan", "topping", ("#f4cf6a", "#f0c050"), "fry",
         {"egg": 2, "veg": 3, "cheese": 1, "herb": 1, "meat": 1},
         ("egg", "potato", "zucchini", "goat cheese")),
    Dish("paella", "pan", "scattered", ("#e7b416", "#d9a012"), "simmer",
         {"seafood": 3, "poultry": 1, "veg": 2, "meat": 1}, ("rice", "shrimp", "mussel", "pea", "chorizo")),
    Dish("nachos", "tray", "scattered", ("#e8b84a", "#d9a23a"), "bake",
         {"cheese": 2, "legume": 2, "veg": 2, "meat": 1, "dairy": 1},
         ("tortilla chip", "cheddar", "black bean", "jalapeno")),
)

# Visual palette of what surrounds the food.
TABLES = (
    ("wood", "#8b5a2b", "#6e4420"), ("wood", "#c19a6b", "#a07850"), ("wood", "#5c3a21", "#442a16"),
    ("marble", "#ecebe8", "#b8b6b0"), ("slate", "#3c4044", "#2a2d30"), ("linen", "#e8dcc4", "#d6c8ac"),
    ("cloth", "#c8313a", "#f4f1ea"), ("cloth", "#2f5d9b", "#f4f1ea"), ("cloth", "#3d7a45", "#f4f1ea"),
)
VESSEL_COLORS = ("#f8f8f4", "#ece6da", "#d8e2ec", "#2c2c2c", "#b8c9b0", "#e7c9a9", "#6f8fa8")
