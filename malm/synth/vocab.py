"""Vocabulary tables of the synthetic Recipe1M stand-in (:mod:`malm.synth`).

Each ingredient has a fixed visual signature (main colour, second colour, texture, piece shape,
piece size) and a text category that picks its units, preparation words and instruction verbs.
Each dish type (the semantic class; its name is one lower-case word that every title contains)
fixes the vessel, the layout of the ingredients, the base (sauce/broth/dough) colours, the cooking
method and a preference over ingredient categories.
"""

from __future__ import annotations

from dataclasses import dataclass

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


# name, category, colour, colour 2, texture, shape, size
_INGREDIENT_ROWS = """
tomato            veg      #d62828 #f25c54 solid   circle  m
cherry tomato     veg      #e5383b #ffd6d6 dots    circle  s
carrot            veg      #f77f00 #c45a00 stripes stick   m
onion             veg      #efe6d2 #c9b99a stripes ring    m
red onion         veg      #8e3b6b #d7a9c4 stripes half    m
garlic            veg      #f3eee0 #d8cfb8 noise   leaf    s
potato            veg      #d9b26f #a27b3f speckle square  m
sweet potato      veg      #e07b39 #b8561c solid   square  m
red bell pepper   veg      #c1121f #7a0b13 stripes square  m
green bell pepper veg      #3a7d2c #24521b solid   square  m
yellow bell pepper veg     #f4c430 #c99a10 stripes diamond m
zucchini          veg      #4a7c2a #d9e8b0 dots    circle  m
cucumber          veg      #6fa84d #eaf4d3 checker circle  m
eggplant          veg      #4b2545 #d8c9a8 speckle circle  l
broccoli          veg      #2d6a2d #4f9a3f noise   blob    m
cauliflower       veg      #efe8d0 #cfc3a0 noise   blob    m
corn              veg      #f2c94c #d9a521 checker square  s
pea               veg      #6cae3e #4e8a2a solid   circle  s
green bean        veg      #4f8f3a #365f27 solid   stick   m
asparagus         veg      #6b8e23 #3f5c12 stripes stick   l
celery            veg      #a8c66c #7d9c45 stripes half    s
mushroom          veg      #b08968 #7f5539 speckle half    m
avocado           veg      #7aa23c #d4e09b noise   half    m
beet              veg      #7b1e3a #b03a5b stripes circle  m
radish            veg      #d7263d #ffffff speckle star    s
jalapeno          veg      #2e8b57 #e8f0c8 dots    ring    s
chile pepper      veg      #b22222 #7a1010 solid   stick   s
leek              veg      #c5d86d #8fa63d stripes ring    m
pumpkin           veg      #e8871e #b85f0a stripes square  l
butternut squash  veg      #f0a04b #d07f2a solid   diamond m
black olive       veg      #2b2b2b #555555 solid   ring    s
green olive       veg      #7d8c2f #a6b55a solid   ring    s
artichoke         veg      #7c9a5e #4f6b37 stripes triangle m
ginger            veg      #d8b26e #b58d48 stripes blob    s
green onion       veg      #7fbf3f #e8f5d0 solid   ring    s
shallot           veg      #b56576 #e8c4cc stripes half    s
okra              veg      #5b8c3a #a9c98a dots    star    s
snow pea          veg      #88c057 #5f9a34 checker leaf    s
bean sprout       veg      #f3f1dc #d9d5b0 solid   stick   s
spinach           leafy    #2f5d2f #1d3d1d solid   leaf    m
kale              leafy    #1f4d2b #3a7a48 noise   leaf    m
lettuce           leafy    #8cc63f #c5e384 stripes leaf    l
arugula           leafy    #4d7c2a #6e9c3c dots    leaf    s
cabbage           leafy    #b5d99c #8fb878 stripes blob    l
red cabbage       leafy    #6a2c70 #b67fc0 stripes blob    m
basil             herb     #3c8d2f #2a6320 stripes leaf    s
parsley           herb     #2e7d32 #66bb6a dots    blob    s
cilantro          herb     #4caf50 #2e7d32 noise   leaf    s
dill              herb     #7cb342 #558b2f noise   stick   s
mint              herb     #52b788 #2d6a4f stripes diamond s
rosemary          herb     #4a6741 #2f4a2a dots    stick   s
thyme             herb     #6b7f4f #4b5e35 speckle blob    s
chive             herb     #3f7d20 #8fcf60 checker stick   s
sage              herb     #87a96b #5f7f4b speckle leaf    s
apple             fruit    #c0392b #f5e6c8 speckle half    m
green apple       fruit    #8db600 #eef5c8 speckle half    m
banana            fruit    #f7e07b #c9a94a dots    circle  m
strawberry        fruit    #e03b4b #f7d26b dots    triangle s
blueberry         fruit    #3b4cca #27308a solid   circle  s
raspberry         fruit    #c2185b #e05586 noise   circle  s
blackberry        fruit    #2d1b3d #4a2f5e noise   circle  s
lemon             fruit    #fff44f #fffbd0 stripes half    m
lime              fruit    #7fd13b #d8f5b0 stripes half    m
orange            fruit    #ff9f1c #ffd08a stripes circle  m
mango             fruit    #ffb347 #e8901c solid   square  m
pineapple         fruit    #f9d71c #c9a80a checker triangle m
peach             fruit    #ffb07c #e07a5f solid   half    m
pear              fruit    #d1e231 #f5f5d0 speckle leaf    m
cherry            fruit    #9b111e #5e0a12 solid   circle  s
grape             fruit    #6f2da8 #9b59d0 solid   circle  s
raisin            fruit    #4a2c2a #2e1a18 speckle blob    s
cranberry         fruit    #a4161a #d45d5d dots    circle  s
coconut           fruit    #f8f8f0 #8b5a2b noise   square  s
pomegranate       fruit    #b3001b #ff4d6d dots    diamond s
kiwi              fruit    #8cba3c #3a2a1a dots    circle  m
watermelon        fruit    #fc6c85 #1a1a1a dots    triangle m
apricot           fruit    #fbb15c #e0893a noise   circle  s
fig               fruit    #6d3b5e #e8a0b0 speckle half    m
date              fruit    #5a2e1e #3a1c10 solid   blob    s
chicken breast    poultry  #e8c39e #b8865b stripes square  l
turkey            poultry  #dcc3a1 #a88a62 speckle square  m
duck breast       poultry  #9c5a3c #f0d0b0 stripes half    l
bacon             meat     #b5523b #f3d5c0 stripes stick   m
beef              meat     #7a3b2e #4a2018 speckle square  m
ground beef       meat     #6d3b2b #4a2518 noise   blob    s
pork              meat     #d9a48f #a8705b solid   square  m
sausage           meat     #8b4513 #5e2e0c speckle circle  m
ham               meat     #e79aa0 #f5c8cb noise   square  m
lamb              meat     #8a4f3d #5e3325 stripes diamond m
chorizo           meat     #a3322a #e0a090 dots    ring    s
pepperoni         meat     #b7312c #7a1a16 speckle circle  m
prosciutto        meat     #d77a7a #f2c4c4 stripes blob    m
meatball          meat     #6b3a26 #8b5a3c noise   circle  m
salmon            seafood  #fa8072 #ffd1c7 stripes square  l
tuna              seafood  #b03a48 #7a2030 solid   square  m
shrimp            seafood  #ff9e80 #ffffff stripes ring    m
cod               seafood  #f3efe6 #d9d0bf stripes blob    m
crab              seafood  #e4572e #ffffff speckle blob    m
mussel            seafood  #1c1c2e #f0a050 solid   leaf    s
scallop           seafood  #f2e2c4 #d9c29a checker circle  m
squid             seafood  #f0e6dc #c8b8a8 speckle ring    m
anchovy           seafood  #7a7f87 #c0c4ca stripes stick   s
mozzarella        cheese   #fbf8ef #e8e0c8 solid   circle  m
cheddar           cheese   #f4a300 #d98c00 solid   square  s
parmesan          cheese   #f3e5ab #d8c680 noise   triangle s
feta              cheese   #f8f8f0 #dcdcd0 speckle square  s
goat cheese       cheese   #f5f5ef #e0e0d8 noise   circle  m
blue cheese       cheese   #e8e8e0 #5b7db1 dots    square  s
ricotta           cheese   #fffdf7 #ece6d8 dots    blob    m
swiss cheese      cheese   #f7e7a1 #d8c06a dots    square  m
butter            dairy    #f7e08a #efc94c solid   square  s
yogurt            dairy    #fbfbf7 #ebe8df stripes half    l
whipped cream     dairy    #fffefa #f0ebe0 noise   star    m
sour cream        dairy    #f9f7f0 #e6e1d5 solid   blob    m
egg               egg      #fff8e7 #f6b300 dots    circle  l
hard-boiled egg   egg      #f9f6ee #f4c542 solid   half    m
rice              grain    #f7f5ee #e3ded0 speckle blob    m
spaghetti         grain    #f3d27a #e0b84f stripes stick   m
penne             grain    #f0c65a #d4a73a checker stick   s
egg noodle        grain    #f5deb3 #e0c48f stripes leaf    m
rice noodle       grain    #f8f4ea #e6dfcc stripes stick   m
bread             grain    #d2a06d #a8733f checker square  l
tortilla          grain    #f0d9a0 #c9a266 speckle circle  l
quinoa            grain    #e8d8b0 #c0a878 dots    blob    s
oat               grain    #d8c39a #b39a6e noise   blob    s
couscous          grain    #f1dca7 #dcc285 speckle blob    s
crouton           grain    #c8913c #8f6224 noise   square  s
breadcrumb        grain    #c79a5a #a0743a speckle blob    s
nori              grain    #1b3022 #2e4a36 noise   square  m
tortilla chip     grain    #e8b84a #c8922a speckle triangle m
granola           grain    #b5803f #7a5020 noise   blob    s
chickpea          legume   #e3c07b #c49a4f speckle circle  s
black bean        legume   #1e1a1d #3a3337 solid   circle  s
kidney bean       legume   #7d1f2b #5a1520 speckle leaf    s
lentil            legume   #a0522d #7a3a1e dots    circle  s
tofu              legume   #f4efe1 #e0d8c4 solid   square  m
edamame           legume   #7bb661 #5a9040 solid   leaf    s
white bean        legume   #f2ead8 #d8ccb0 speckle leaf    s
almond            nut      #c68e5b #8f5f34 stripes leaf    s
walnut            nut      #8b5a2b #5e3a18 stripes blob    s
pecan             nut      #7b4a2a #4f2c16 stripes leaf    s
peanut            nut      #d2a679 #a67c52 speckle diamond s
pine nut          nut      #f0e1c0 #d6c29a solid   leaf    s
cashew            nut      #e8d3a9 #c8b080 solid   half    s
pistachio         nut      #93c572 #6a9a4a speckle blob    s
sesame seed       nut      #f5f0dc #d8cfb0 dots    triangle s
sunflower seed    nut      #6b6b5a #d8d8c8 stripes leaf    s
hazelnut          nut      #a0703c #6e4a22 solid   circle  s
chocolate         sweet    #4e2a1e #3a1f15 solid   square  m
chocolate chip    sweet    #3b1f14 #2a150d solid   triangle s
caramel           sweet    #c68e3a #a06a1e stripes blob    m
honey             sweet    #f0a30a #ffc94a stripes blob    m
marshmallow       sweet    #fdfdfd #eeeeee solid   diamond s
sprinkle          sweet    #ff69b4 #40c0ff stripes stick   s
maple syrup       sweet    #b5651d #8a4a10 solid   blob    m
jam               sweet    #a4133c #d0406a solid   blob    m
"""


def _parse_ingredients(rows: str) -> tuple[Ingredient, ...]:
    out = []
    for line in rows.strip().splitlines():
        *words, cat, c1, c2, tex, shape, size = line.split()
        assert tex in TEXTURES and shape in SHAPES and size in SIZES, line
        out.append(Ingredient(" ".join(words), cat, _rgb(c1), _rgb(c2), tex, shape, size))
    return tuple(out)


INGREDIENTS: tuple[Ingredient, ...] = _parse_ingredients(_INGREDIENT_ROWS)

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
