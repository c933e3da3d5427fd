"""The constant-image check: can the matching losses be solved without looking at the images?

Builds a small synthetic set (the smoke profile's generator settings), replaces every cached image
by one constant grey picture, and trains a variant with the pipeline's own trainer. With constant
images no image-recipe matching is learnable, so every contrastive matching loss must stay at its
chance value, ln(number of candidates per anchor): ln B for `model.matching.candidates=batch`,
ln(1 + num_negatives) for `hard`. A loss that falls well below it is solved from the recipe side
alone. Prints the per-epoch gc/lc losses beside the chance value and exits 1 when a loss ends more
than `--tol` nats below chance.

    python benchmarks/check_constant_images.py --out runs/bench/constant
    python benchmarks/check_constant_images.py --out /tmp/c model.matching.candidates=batch

The issue's setting is the default: variant malm with loss.lambda_itc=0 loss.lambda_dist=0
model.mask.ratio=0, 20 epochs, batch 32 (extra KEY=VALUE overrides are applied after these).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

import malm
from malm import config as C
from malm import variants

REPO = Path(malm.__file__).resolve().parents[1]
SETTING = ["loss.lambda_itc=0", "loss.lambda_dist=0", "model.mask.ratio=0", "train.epochs=20",
           "train.batch_size=32", "train.threads=2"]


def chance(cfg: C.Config) -> float:
    """ln(candidates per anchor) of the matching losses under ``cfg``."""
    m = cfg.model.matching
    if getattr(m, "candidates", "batch") == "hard":
        return math.log(1 + m.num_negatives)
    return math.log(cfg.train.batch_size)


def grey_out(cache_dir: Path) -> int:
    """Overwrite every cached image (all splits) with one grey picture; returns the rows changed."""
    n = 0
    for images in sorted(cache_dir.glob("*/images.npy")):
        arr = np.load(images, mmap_mode="r+")
        arr[...] = 128
        arr.flush()
        n += arr.shape[0]
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="Work folder: data, cache and the run (reused if present).")
    ap.add_argument("--variant", default="malm", help="Variant to train (default: malm).")
    ap.add_argument("--tol", type=float, default=0.1,
                    help="Fail when a matching loss ends more than this many nats below chance.")
    ap.add_argument("--no-progress", action="store_true", help="No progress bars.")
    ap.add_argument("overrides", nargs="*", help="Extra KEY=VALUE config overrides (after the setting).")
    args = ap.parse_args(argv)

    from malm.data.cache import prepare
    from malm.synth.write import generate
    from malm.train.trainer import train

    out = Path(args.out).absolute()
    smoke = REPO / "configs" / "smoke.yaml"
    data = {"data.root": str(out / "synth"), "data.cache_dir": str(out / "cache"), "data.synthetic": "false"}
    cfg = variants.resolve_from_files(args.variant, [smoke], C.parse_overrides(
        [f"{k}={v}" for k, v in data.items()] + SETTING + list(args.overrides)))
    if not (out / "cache").exists():
        generate(out / "synth", cfg.synth, progress=not args.no_progress)
        prepare(cfg.data, progress=not args.no_progress)
        print(f"greyed {grey_out(out / 'cache')} cached images")
    train(cfg, out / "run", progress=not args.no_progress)
    hist = json.loads((out / "run" / "history.json").read_text())
    level = chance(cfg)
    keys = [k for k in ("train/gc_loss", "train/lc_loss") if k in hist[0]]
    print(f"variant {cfg.variant}, constant images, chance ln K = {level:.3f}")
    print("epoch  " + "  ".join(f"{k[6:]:>8}" for k in keys))
    for row in hist:
        print(f"{row['epoch']:5d}  " + "  ".join(f"{row[k]:8.3f}" for k in keys))
    bad = [k for k in keys if hist[-1][k] < level - args.tol]
    for k in keys:
        print(f"{k}: {hist[0][k]:.3f} -> {hist[-1][k]:.3f} (chance {level:.3f})")
    if bad:
        print(f"FAIL: {', '.join(bad)} fell below chance with constant images: solved without the images")
        return 1
    print("OK: the matching losses stay at chance with constant images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
