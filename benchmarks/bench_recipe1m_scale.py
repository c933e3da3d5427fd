"""Wall time and peak memory of `malm data check` and the cache build on a Recipe1M-sized tree.

Writes a Recipe1M-format root (layer1.json, layer2.json, det_ingrs.json, tiny JPEGs) with the real
download's shape: 1,029,720 recipes by default (70 / 15 / 15 % train/val/test), Recipe1M's field
lengths (about 9 ingredient lines of ~30 characters, 10 instruction lines of ~90, a 5-word title, a
URL), ~40 % of the recipes listing ~2.2 images each in layer2 (887k image ids); only
``--images`` of those exist on disk as tiny JPEGs (the rest count as missing, as in a partial
download). Then it runs, each in a fresh process, measuring wall time and peak RSS:

* ``malm data check <root>`` on the full tree;
* ``malm data prepare`` (the cache build) on a tree of ``--cache-recipes`` recipes (default: the
  same tree; pass a smaller number where the full build does not fit your time).

    python benchmarks/bench_recipe1m_scale.py --out /tmp/r1m            # full size
    python benchmarks/bench_recipe1m_scale.py --out /tmp/r1m --recipes 100000 --cache-recipes 100000

Prints one table; the README quotes it with the machine.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ("salt pepper butter sugar flour onion garlic tomato chicken beef pork milk cream cheese egg "
         "eggs oil olive water lemon juice rice pasta carrot celery potato sauce vinegar honey basil "
         "parsley thyme oregano cumin paprika ginger soy broth stock wine mushroom spinach bean beans "
         "corn pea peas bacon ham shrimp fish salmon apple banana orange vanilla chocolate cinnamon "
         "nutmeg yogurt bread crumbs lime cilantro chili jalapeno avocado cucumber lettuce").split()
VERBS = ("add stir mix bake cook heat combine pour place remove serve whisk simmer boil chop slice "
         "season cover drain transfer spread sprinkle fold beat melt preheat").split()
UNITS = ("cup cups tablespoon tablespoons teaspoon teaspoons ounces pound pounds pinch cloves "
         "large small medium can package").split()


def _ingredient(rng: random.Random) -> str:
    return f"{rng.choice(['1', '2', '1/2', '3', '1/4', '12'])} {rng.choice(UNITS)} " + " ".join(
        rng.choice(WORDS) for _ in range(rng.randint(1, 4)))


def _instruction(rng: random.Random) -> str:
    n = max(3, int(rng.gauss(12, 6)))
    words = [rng.choice(VERBS)] + [rng.choice(WORDS + ["the", "and", "in", "a", "to", "until",
                                                       "minutes", "with", "over", "medium"])
                                   for _ in range(n)]
    return " ".join(words).capitalize() + "."


def write_tree(root: Path, n: int, n_images: int, seed: int = 0) -> dict:
    """Write layer1/layer2/det_ingrs for ``n`` recipes and ``n_images`` tiny JPEGs under ``root``."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    # pools of lines, drawn from per recipe: the lengths are what matters to the reader, and
    # drawing words per line would make writing the tree slower than reading it
    ingr_pool = [_ingredient(rng) for _ in range(20000)]
    instr_pool = [_instruction(rng) for _ in range(20000)]
    try:
        import orjson

        dumps = lambda o: orjson.dumps(o).decode()  # noqa: E731
    except ImportError:
        dumps = json.dumps
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buf, format="JPEG", quality=80)
    jpeg = buf.getvalue()
    written = 0
    t0 = time.perf_counter()
    with open(root / "layer1.json", "w") as l1, open(root / "layer2.json", "w") as l2, \
            open(root / "det_ingrs.json", "w") as det:
        for f in (l1, l2, det):
            f.write("[")
        first2 = True
        for i in range(n):
            rid = f"{rng.getrandbits(40):010x}"
            part = "train" if i % 20 < 14 else ("val" if i % 20 < 17 else "test")
            ingrs = rng.choices(ingr_pool, k=max(1, int(rng.gauss(9.3, 4))))
            instrs = rng.choices(instr_pool, k=max(1, int(rng.gauss(10.4, 6))))
            rec = {"id": rid, "title": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))).title(),
                   "ingredients": [{"text": t} for t in ingrs],
                   "instructions": [{"text": t} for t in instrs],
                   "partition": part, "url": f"http://www.example.com/recipes/{rid}/some-recipe-name"}
            l1.write(("," if i else "") + dumps(rec))
            det.write(("," if i else "") + dumps(
                {"id": rid, "valid": [rng.random() < 0.8 for _ in ingrs],
                 "ingredients": [{"text": t.split(" ", 2)[-1]} for t in ingrs]}))
            if rng.random() < 0.39:
                ims = [f"{rng.getrandbits(40):010x}.jpg" for _ in range(max(1, int(rng.expovariate(1 / 2.2))))]
                l2.write(("" if first2 else ",") + dumps(
                    {"id": rid, "images": [{"id": im, "url": f"http://example.com/{im}"} for im in ims]}))
                first2 = False
                for im in ims:
                    if written < n_images:
                        p = root.joinpath(part, *im[:4], im)
                        p.parent.mkdir(parents=True, exist_ok=True)
                        p.write_bytes(jpeg)
                        written += 1
        for f in (l1, l2, det):
            f.write("]")
    sizes = {f: (root / f).stat().st_size for f in ("layer1.json", "layer2.json", "det_ingrs.json")}
    return {"recipes": n, "images_on_disk": written, "write_s": time.perf_counter() - t0, **sizes}


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS GiB) of ``cmd`` run in a fresh child, via wait4's rusage."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="Where to write the tree(s) (needs ~2.5 GB at full size).")
    ap.add_argument("--recipes", type=int, default=1_029_720, help="Recipes in the check tree (Recipe1M: 1,029,720).")
    ap.add_argument("--images", type=int, default=2000, help="Tiny JPEGs written to disk (the rest are missing).")
    ap.add_argument("--cache-recipes", type=int, default=None,
                    help="Recipes of the tree the cache build runs on (default: --recipes, the same tree).")
    ap.add_argument("--keep", action="store_true", help="Keep the trees afterwards.")
    args = ap.parse_args(argv)
    malm = str(Path(sys.executable).parent / "malm")
    rows = []

    full = args.out / "full"
    info = write_tree(full, args.recipes, args.images)
    print(f"wrote {full}: {info['recipes']:,} recipes, layer1 {info['layer1.json'] / 1e9:.2f} GB, layer2 "
          f"{info['layer2.json'] / 1e9:.2f} GB, det_ingrs {info['det_ingrs.json'] / 1e9:.2f} GB, "
          f"{info['images_on_disk']} images on disk, in {info['write_s']:.0f} s", flush=True)
    wall, rss = measure([malm, "data", "check", str(full)])
    rows.append(("data check", info["recipes"], wall, rss))
    print(f"data check: {wall:.1f} s, peak RSS {rss:.2f} GiB", flush=True)

    n_cache = args.cache_recipes or args.recipes
    tree = full if n_cache == args.recipes else args.out / "cache_tree"
    if tree is not full:
        write_tree(tree, n_cache, args.images, seed=1)
    cache = args.out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    wall, rss = measure([malm, "data", "prepare", f"data.root={tree}", f"data.cache_dir={cache}",
                         "data.synthetic=false", "data.cache_image_size=64"])
    rows.append(("cache build (data prepare)", n_cache, wall, rss))
    print(f"cache build: {wall:.1f} s, peak RSS {rss:.2f} GiB", flush=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
          f"layer1.json {info['layer1.json'] / 1e9:.2f} GB")
    print("| step | recipes | wall | peak RSS |\n|---|---|---|---|")
    for name, n, wall, rss in rows:
        print(f"| {name} | {n:,} | {wall:.0f} s | {rss:.2f} GiB |")
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
