"""Wall time and peak memory of `malm data import` (malm.data.importer) at 100k and 1M rows.

For each ``--rows`` size it writes a CSV of that many recipes with Recipe1M-like field lengths
(a 3-6 word title, 6-12 ingredient lines, 5-12 instruction lines of ~80 characters, multi-line
quoted cells as a spreadsheet writes them), every row naming one or two of a handful of small
JPEGs (``--images``), and one row in 1000 naming a missing image (a bad row, so the bad-row path
runs too). Then, in a fresh process, it imports it and measures the wall time and the peak RSS
(``VmHWM``; ``ru_maxrss`` as a check) against the RSS after the imports (the interpreter,
numpy, Pillow, tqdm). The importer streams: the peak should grow by the id sets only (~20 bytes
a recipe and ~20 an image), not with the data.

Images are hard-linked (``--copy`` to copy them: 1M small files, ~4 KB of disk each); every image
is still verified and decoded once per row, as in a real import. Everything generated is deleted
afterwards (``--keep`` keeps it).

    python benchmarks/bench_import.py                           # 100k and 1M rows, ~10-20 min
    python benchmarks/bench_import.py --rows 20000 --dir /tmp/bi
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORDS = ("salt pepper butter sugar flour onion garlic tomato chicken beef pork milk cream cheese egg "
         "eggs oil olive water lemon juice rice pasta carrot celery potato sauce vinegar honey basil "
         "parsley thyme oregano cumin paprika ginger soy broth stock wine mushroom spinach bean beans "
         "corn pea peas bacon ham shrimp fish salmon apple banana orange vanilla chocolate cinnamon "
         "nutmeg yogurt bread crumbs lime cilantro chili jalapeno avocado cucumber lettuce").split()
VERBS = ("add stir mix bake cook heat combine pour place remove serve whisk simmer boil chop slice "
         "season cover drain transfer spread sprinkle fold beat melt preheat").split()
UNITS = "cup cups tablespoon teaspoons ounces pound pinch cloves large small can package".split()


def _vm(key: str) -> int:
    """A /proc/self/status value in MiB (0 where /proc is absent)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def write_inputs(folder: Path, rows: int, n_images: int, seed: int = 0) -> tuple[Path, Path]:
    """The CSV (``rows`` recipes) and the images folder it refers to."""
    from PIL import Image
    import numpy as np

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng_np = np.random.default_rng(seed)
    for k in range(n_images):
        arr = rng_np.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(images / f"img{k}.jpg", quality=85)
    rng = random.Random(seed)
    path = folder / "recipes.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["title", "ingredients", "instructions", "images"])
        for i in range(rows):
            title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6))).title() + f" {i}"
            ingrs = "\n".join(f"{rng.choice(['1', '2', '1/2', '3'])} {rng.choice(UNITS)} "
                              + " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
                              + (", chopped" if rng.random() < 0.2 else "")
                              for _ in range(rng.randint(6, 12)))
            steps = "\n".join((rng.choice(VERBS) + " " + " ".join(
                rng.choice(WORDS + ["the", "and", "in", "until", "minutes"]) for _ in range(12))
                ).capitalize() + "." for _ in range(rng.randint(5, 12)))
            ims = [f"img{rng.randrange(n_images)}.jpg" for _ in range(rng.randint(1, 2))]
            if i % 1000 == 999:
                ims = ["missing.jpg"]
            w.writerow([title, ingrs, steps, "|".join(dict.fromkeys(ims))])
    return path, images


def child(source: str, images: str, out: str, link: bool) -> None:
    """Import in this (fresh) process and print one JSON line of measurements."""
    from malm.data.importer import import_recipes

    base = _vm("VmRSS")
    t = time.perf_counter()
    rep = import_recipes(source, images, out, link=link, progress=False)
    wall = time.perf_counter() - t
    print(json.dumps({
        "rows": rep["rows"], "imported": rep["imported"], "bad": rep["bad"],
        "images": sum(rep["images"].values()), "seconds": round(wall, 1),
        "rows_per_s": round(rep["rows"] / wall), "base_rss_mib": base,
        "peak_rss_mib": _vm("VmHWM"),
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "layer1_mib": round(os.path.getsize(Path(out) / "layer1.json") / 2**20, 1),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--images", type=int, default=64, help="Distinct image files the rows share "
                    "(ext4 allows 65,000 hard links to one file: 64 x 65,000 > 1M rows x 1.5).")
    ap.add_argument("--dir", default="/tmp/malm_bench_import", help="Scratch folder (deleted).")
    ap.add_argument("--copy", action="store_true", help="Copy the images instead of hard links.")
    ap.add_argument("--keep", action="store_true", help="Keep the generated files.")
    ap.add_argument("--child", nargs=3, metavar=("CSV", "IMAGES", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, link=not args.copy)
        return
    results = []
    for n in args.rows:
        folder = Path(args.dir) / f"rows{n}"
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        src, images = write_inputs(folder, n, args.images)
        gen = time.perf_counter() - t
        size = src.stat().st_size / 2**20
        print(f"{n} rows: wrote {src} ({size:.0f} MiB) in {gen:.0f} s; importing...", flush=True)
        cmd = [sys.executable, __file__, "--child", str(src), str(images), str(folder / "out")]
        p = subprocess.run(cmd + (["--copy"] if args.copy else []), capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        if p.returncode:
            sys.exit(f"import of {n} rows failed:\n{p.stderr[-3000:]}")
        res = {**json.loads(p.stdout.strip().splitlines()[-1]), "csv_mib": round(size)}
        results.append(res)
        print(json.dumps(res), flush=True)
        if not args.keep:
            t = time.perf_counter()
            shutil.rmtree(folder, ignore_errors=True)
            print(f"deleted the generated files in {time.perf_counter() - t:.0f} s", flush=True)
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)
    print(f"\nmalm data import ({platform.node()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; images {'copied' if args.copy else 'hard-linked'})")
    cols = ("rows", "csv_mib", "imported", "bad", "images", "seconds", "rows_per_s", "base_rss_mib",
            "peak_rss_mib", "ru_maxrss_mib", "layer1_mib")
    buf = io.StringIO()
    buf.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
    for r in results:
        buf.write("| " + " | ".join(str(r[c]) for c in cols) + " |\n")
    print(buf.getvalue())


if __name__ == "__main__":
    main()
