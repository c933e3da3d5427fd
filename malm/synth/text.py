"""Recipe1M-like text for a synthetic recipe: title, ingredient lines, instructions.

Lines carry quantities, units and preparation words ("2 tablespoons chopped fresh basil"), invisible
pantry lines (salt, oil, water) are mixed in, and instructions blend ingredient-specific steps
(sometimes naming only the category, "the vegetables") with generic method steps and filler, so
text is redundant and not trivially aligned to pixels.
"""

from __future__ import annotations

import numpy as np

from malm.synth.vocab import Dish, Ingredient

COUNTS = ("1", "2", "3", "4", "6", "1/2", "1 1/2")
VOLUMES = ("1/4 cup", "1/3 cup", "1/2 cup", "3/4 cup", "1 cup", "1 1/2 cups", "2 cups", "3 cups")
SPOONS = ("1 teaspoon", "2 teaspoons", "1 tablespoon", "2 tablespoons", "3 tablespoons", "1/4 cup")
WEIGHTS = ("4 ounces", "8 ounces", "10 ounces", "1/2 lb", "1 lb", "1 1/2 pounds", "2 pounds", "250 g",
           "500 g")
CANS = ("1 (15 ounce) can", "2 (15 ounce) cans", "1 (14.5 ounce) can", "1 (8 ounce) package")
SIZES = ("small", "medium", "large", "")
NUMS = ("2", "3", "4", "6", "8")

# Mass nouns keep their name in the plural ("2 cups rice"); the rest of these categories count.
_MASS_CATEGORIES = {"herb", "leafy", "cheese", "dairy", "grain", "meat", "seafood", "sweet", "poultry"}
_COUNTABLE = {"sausage", "meatball", "mussel", "scallop", "anchovy", "marshmallow", "sprinkle",
              "chocolate chip", "crouton", "breadcrumb", "tortilla", "tortilla chip", "egg noodle",
              "rice noodle", "oat", "chicken breast", "duck breast"}
_MASS = {"corn", "garlic", "ginger", "coconut", "watermelon", "pineapple", "tofu", "edamame", "kale",
         "shrimp", "okra", "asparagus", "broccoli", "cauliflower", "celery", "bean sprout"}
_IRREGULAR = {"tomato": "tomatoes", "potato": "potatoes", "sweet potato": "sweet potatoes",
              "cherry tomato": "cherry tomatoes", "bean sprout": "bean sprouts", "leaf": "leaves"}

# category -> (group word or "", line templates, preparation words, post phrases, instruction steps)
CATEGORIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "veg": ("vegetables",
            ("{count} {size} {noun}, {post}", "{count} {noun}, {prep}", "{vol} {prep} {noun}",
             "{count} {size} {noun}", "{weight} {noun}, {post}"),
            ("chopped", "diced", "sliced", "minced", "thinly sliced", "coarsely chopped", "julienned"),
            ("peeled and diced", "seeded and chopped", "cut into 1-inch pieces", "thinly sliced",
             "finely chopped", "halved", "trimmed"),
            ("Chop the {noun}.", "Dice the {noun} and set aside.", "Wash and slice the {noun}.",
             "Add the {noun} and cook until tender, about {t} minutes.", "Saute the {noun} until soft.")),
    "leafy": ("greens",
              ("{vol} {prep} {noun}", "{num} cups {noun}, {post}", "{weight} fresh {noun}",
               "1 bunch {noun}, {post}"),
              ("chopped", "shredded", "torn", "baby", "packed"),
              ("washed and dried", "torn into pieces", "stems removed", "roughly chopped"),
              ("Wash and dry the {noun}.", "Tear the {noun} into bite-size pieces.",
               "Add the {noun} and stir until wilted.")),
    "herb": ("herbs",
             ("{spoon} {prep} fresh {noun}", "{spoon} {prep} {noun}", "1 bunch fresh {noun}, {post}",
              "{num} sprigs fresh {noun}", "{vol} {prep} fresh {noun} leaves"),
             ("chopped", "minced", "finely chopped", "dried", "torn"),
             ("chopped", "leaves only", "stems removed", "for garnish"),
             ("Finely chop the {noun}.", "Sprinkle with the {noun}.",
              "Stir in the {noun} just before serving.", "Garnish with {noun}.")),
    "fruit": ("fruit",
              ("{count} {size} {noun}, {post}", "{vol} {prep} {noun}", "{count} ripe {noun}, {prep}",
               "{vol} fresh {noun}"),
              ("sliced", "diced", "chopped", "halved", "mashed", "frozen"),
              ("peeled and sliced", "hulled and sliced", "pitted and chopped", "cut into wedges", "halved"),
              ("Wash and slice the {noun}.", "Arrange the {noun} on top.", "Gently fold in the {noun}.",
               "Peel and chop the {noun}.")),
    "poultry": ("meat",
                ("{weight} {noun}, {post}", "{weight} {prep} {noun}", "{weight} boneless skinless {noun}"),
                ("sliced", "cubed", "diced", "shredded", "cooked"),
                ("cut into bite-size pieces", "trimmed", "cut into strips", "at room temperature"),
                ("Season the {noun} with salt and pepper.",
                 "Brown the {noun} on all sides, about {t} minutes.",
                 "Cut the {noun} into bite-size pieces.", "Cook the {noun} until no longer pink.")),
    "meat": ("meat",
             ("{weight} {noun}, {post}", "{weight} {prep} {noun}", "{weight} lean {noun}"),
             ("sliced", "cubed", "diced", "thinly sliced", "chopped", "cooked"),
             ("cut into bite-size pieces", "trimmed", "sliced", "cut into 1-inch cubes",
              "cooked and crumbled"),
             ("Season the {noun} with salt and pepper.", "Brown the {noun} on all sides, about {t} minutes.",
              "Cut the {noun} into bite-size pieces.",
              "Cook the {noun} until no longer pink; drain the fat.")),
    "seafood": ("seafood",
                ("{weight} {noun}, {post}", "{weight} fresh {noun}", "{weight} {prep} {noun}"),
                ("cooked", "chopped", "sliced", "cleaned"),
                ("skinned", "peeled and deveined", "cleaned", "cut into chunks", "patted dry", "rinsed"),
                ("Pat the {noun} dry with paper towels.", "Cook the {noun} until opaque, about {t} minutes.",
                 "Rinse the {noun} under cold water.",
                 "Add the {noun} during the last few minutes of cooking.")),
    "cheese": ("cheese",
               ("{vol} {prep} {noun}", "{weight} {noun}, {post}", "{spoon} {prep} {noun}"),
               ("shredded", "grated", "crumbled", "freshly grated", "cubed", "sliced"),
               ("shredded", "crumbled", "cubed", "sliced", "at room temperature", "divided"),
               ("Sprinkle the {noun} over the top.", "Stir in the {noun} until melted.",
                "Top with the {noun}.")),
    "dairy": ("",
              ("{vol} {noun}", "{spoon} {noun}, {post}", "{vol} {prep} {noun}"),
              ("plain", "cold", "softened", "chilled"),
              ("softened", "melted", "chilled", "divided"),
              ("Whisk in the {noun}.", "Spoon the {noun} over the top.", "Stir in the {noun} until smooth.")),
    "egg": ("eggs",
            ("{count} large {noun}, {post}", "{count} {noun}", "{count} {size} {noun}"),
            ("beaten", "whisked"),
            ("beaten", "lightly beaten", "at room temperature", "peeled and halved"),
            ("Beat the {noun} in a small bowl.", "Crack the {noun} into the pan.",
             "Whisk the {noun} until frothy.")),
    "grain": ("",
              ("{vol} {prep} {noun}", "{weight} {noun}", "{vol} {noun}, {post}"),
              ("uncooked", "cooked", "dry", "toasted"),
              ("cooked according to package directions", "rinsed", "divided", "toasted"),
              ("Cook the {noun} according to package directions; drain.", "Rinse the {noun} well.",
               "Toast the {noun} until fragrant.", "Add the {noun} and stir to coat.")),
    "legume": ("beans",
               ("{can} {noun}, {post}", "{vol} dried {noun}, {post}", "{vol} cooked {noun}"),
               ("cooked", "dried", "canned"),
               ("drained and rinsed", "rinsed", "soaked overnight", "drained"),
               ("Drain and rinse the {noun}.", "Stir in the {noun} and heat through.",
                "Mash half of the {noun} with a fork.")),
    "nut": ("nuts",
            ("{vol} {prep} {noun}", "{spoon} {prep} {noun}", "{vol} {noun}, {post}"),
            ("chopped", "toasted", "slivered", "roasted", "raw", "sliced"),
            ("toasted", "roughly chopped", "divided"),
            ("Toast the {noun} in a dry skillet until fragrant.", "Roughly chop the {noun}.",
             "Sprinkle the {noun} on top.")),
    "sweet": ("",
              ("{vol} {noun}", "{spoon} {noun}", "{weight} {prep} {noun}", "{vol} {prep} {noun}"),
              ("melted", "warm", "good-quality"),
              ("melted", "divided", "warmed"),
              ("Melt the {noun} in a small saucepan.", "Drizzle with the {noun}.", "Fold in the {noun}.")),
}

# Ingredient-specific line templates that replace the category ones.
LINE_OVERRIDES = {
    "garlic": ("{num} cloves {noun}, {prep}", "1 head {noun}, {post}"),
    "bread": ("{num} slices {noun}", "1 loaf crusty {noun}, {post}"),
    "tortilla": ("{count} {size} flour {noun}", "{count} corn {noun}, warmed"),
    "nori": ("{num} sheets {noun}", "{num} sheets {noun}, cut into strips"),
    "salmon": ("{weight} {noun} fillet, skinned", "{weight} {noun}, {post}"),
    "cod": ("{weight} {noun} fillets, {post}", "{weight} fresh {noun}"),
    "tuna": ("{weight} sushi-grade {noun}, {post}", "{weight} fresh {noun}"),
    "tofu": ("1 (16 ounce) package firm {noun}, pressed and cubed", "{weight} extra-firm {noun}, cubed"),
    "lettuce": ("1 head {noun}, {post}", "{vol} shredded {noun}"),
    "lemon": ("{count} {noun}, juiced and zested", "{count} {noun}, cut into wedges"),
    "lime": ("{count} {noun}, cut into wedges", "{count} {noun}, juiced"),
}

PANTRY = {
    "salt": ("1 teaspoon salt", "1/2 teaspoon salt", "salt to taste", "1 pinch salt"),
    "black pepper": ("1/4 teaspoon ground black pepper", "freshly ground black pepper to taste"),
    "olive oil": ("2 tablespoons olive oil", "1/4 cup extra-virgin olive oil", "1 tablespoon olive oil"),
    "vegetable oil": ("1 tablespoon vegetable oil", "oil for frying"),
    "water": ("1 cup water", "2 cups water", "1/4 cup water"),
    "white sugar": ("1 cup white sugar", "2 tablespoons white sugar"),
    "all-purpose flour": ("2 cups all-purpose flour", "1 tablespoon all-purpose flour"),
    "baking powder": ("1 teaspoon baking powder", "2 teaspoons baking powder"),
    "baking soda": ("1/2 teaspoon baking soda",),
    "vanilla extract": ("1 teaspoon vanilla extract", "1/2 teaspoon pure vanilla extract"),
    "chicken broth": ("4 cups chicken broth", "1 (14.5 ounce) can chicken broth"),
    "soy sauce": ("2 tablespoons soy sauce", "1/4 cup low-sodium soy sauce"),
    "red wine vinegar": ("1 tablespoon red wine vinegar", "2 tablespoons red wine vinegar"),
    "ground cumin": ("1 teaspoon ground cumin",),
    "paprika": ("1/2 teaspoon paprika", "1 teaspoon smoked paprika"),
    "cooking spray": ("cooking spray",),
    "brown sugar": ("1/4 cup packed brown sugar",),
    "ice": ("1 cup ice cubes",),
}
_SEASONING = ("salt", "black pepper", "olive oil", "water")

# method -> (pantry items, intro steps, core steps, closing steps)
METHODS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "bake": (("white sugar", "all-purpose flour", "baking powder", "baking soda", "vanilla extract",
              "cooking spray"),
             ("Preheat oven to {F} degrees F ({C} degrees C).", "Grease a {pan} and set aside.",
              "Line a baking sheet with parchment paper."),
             ("Bake in the preheated oven for {t} minutes, or until golden brown.",
              "Bake until set and lightly browned, about {t} minutes.",
              "Transfer to the oven and bake for {t} minutes."),
             ("Let cool for 10 minutes before serving.", "Cool completely on a wire rack.",
              "Let stand 5 minutes before cutting.")),
    "simmer": (("chicken broth", "ground cumin", "paprika", "vegetable oil"),
               ("Heat the oil in a large pot over medium heat.",
                "In a large saucepan, melt a little butter over medium-high heat.",
                "Warm a heavy pot over medium heat."),
               ("Bring to a boil, then reduce heat and simmer for {t} minutes.",
                "Cover and simmer gently, stirring occasionally, for {t} minutes.",
                "Pour in the liquid and bring to a simmer."),
               ("Ladle into bowls and serve hot.", "Remove from heat and let stand a few minutes.")),
    "raw": (("red wine vinegar",),
            ("In a large bowl, whisk together the oil, vinegar, salt and pepper.",
             "Chill a large serving bowl."),
            ("Toss everything together until well coated.", "Cover and refrigerate for at least 30 minutes."),
            ("Serve chilled.", "Serve immediately.")),
    "grill": (("vegetable oil", "soy sauce", "paprika"),
              ("Preheat an outdoor grill for medium-high heat and lightly oil the grate.",
               "Soak wooden skewers in water for 30 minutes."),
              ("Grill for {t} minutes per side, or until nicely charred.",
               "Cook on the preheated grill, turning occasionally, about {t} minutes."),
              ("Let rest 5 minutes before serving.", "Serve hot off the grill.")),
    "fry": (("vegetable oil", "all-purpose flour", "ground cumin"),
            ("Heat the oil in a large skillet over medium heat.",
             "Warm a nonstick pan over medium-low heat."),
            ("Cook, stirring frequently, for {t} minutes.",
             "Fry until golden on both sides, about {t} minutes."),
            ("Transfer to a plate lined with paper towels.", "Serve warm.")),
    "boil": (("red wine vinegar", "chicken broth"),
             ("Bring a large pot of lightly salted water to a boil.",),
             ("Cook for {t} minutes, or until al dente; drain.", "Toss with the sauce until evenly coated."),
             ("Serve immediately.", "Divide among warm plates.")),
    "blend": (("ice", "white sugar", "vanilla extract"),
              ("Place all ingredients in a blender.", "Chill the glasses in the freezer."),
              ("Blend until smooth, about 1 minute.", "Add a few ice cubes and blend again."),
              ("Pour into glasses and serve immediately.",)),
    "assemble": (("soy sauce", "red wine vinegar", "brown sugar"),
                 ("Prepare all the ingredients before you start.", "Clear a large work surface."),
                 ("Layer the ingredients evenly.", "Assemble and press down gently."),
                 ("Serve right away or wrap tightly and refrigerate.",)),
}

FILLER = ("Stir well.", "Taste and adjust the seasoning.", "Be careful not to overcook.",
          "This step can be done a day ahead.", "Season with salt and pepper to taste.", "Set aside.",
          "Mix until just combined.", "Cover to keep warm.", "Enjoy!", "Makes 4 servings.",
          "Scrape down the sides of the bowl as needed.", "Work quickly so nothing dries out.")
SERVE = ("Serve the {dish} warm.", "Transfer the {dish} to a serving plate.", "Slice or portion the {dish} "
         "and serve.", "Leftover {dish} keeps in the refrigerator for up to 3 days.")
ADJECTIVES = ("Easy", "Spicy", "Creamy", "Classic", "Quick", "Healthy", "Homemade", "Rustic", "Simple",
              "Hearty", "Fresh", "Ultimate", "Best Ever", "Summer", "Winter", "Weeknight", "Smoky",
              "Savory", "Crispy", "Light", "Perfect", "Mom's", "Grandma's", "Sunday", "Holiday", "Garden",
              "Zesty")
TITLES = ("{adj} {A} {Dish}", "{A} and {B} {Dish}", "{A} {B} {Dish}", "{adj} {A} and {B} {Dish}",
          "{Dish} with {A}", "{Dish} with {A} and {B}", "{adj} {Dish}", "{A} {Dish}")
PANS = ("9x13 inch baking dish", "9 inch round pan", "large baking sheet", "10 inch pie plate")
MINUTES = (5, 8, 10, 15, 20, 25, 30, 45)


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
