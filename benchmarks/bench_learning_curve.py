"""Learning curve of one variant under the pipeline's own trainer (a script that prints figures).

Trains ``--variant`` with ``--config`` (default: params.yaml, the CPU default) for ``--epochs`` epochs
through :func:`malm.train.trainer.train`, exactly as ``malm train`` does, and prints per epoch the
samples seen, the training time, samples/s and the validation R@1 / medR on one 1k val bag
(``train.val_pairs``, tfood protocol). Then it fits R@1 against samples seen by least squares over
the second half of the epochs and projects how many samples, and how much training time at the
measured speed, reaching ``--target`` R@1 would take. The projection is an extrapolation of a
straight line, printed as such; the measured rows are the figures.

This is the measurement behind the calibration of the default benchmark (README "What to expect"):

    python benchmarks/bench_learning_curve.py --epochs 12 --out runs/bench/curve
    python benchmarks/bench_learning_curve.py --variant malm --epochs 6 train.batch_size=128

Outputs in ``--out``: the trainer's run (config.yaml, history.json, checkpoint.pt, ...), plus
curve.csv (one row per epoch) and curve.png (R@1 and medR against samples seen).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from malm import config as C
from malm import variants
from malm.io import write_table


def curve_rows(history: list[dict]) -> list[dict]:
    """Per-epoch rows with cumulative samples and training seconds from a trainer history."""
    rows, samples, secs = [], 0.0, 0.0
    for h in history:
        if "train/samples" not in h:
            raise ValueError("history.json has no train/samples (written by an older trainer)")
        samples += h["train/samples"]
        secs += h["train/seconds"]
        rows.append({"epoch": int(h["epoch"]), "samples": int(samples), "train_s": secs,
                     "samples_per_s": h["train/samples_per_s"],
                     "img2rec_R@1": h["val/img2rec_R@1"], "rec2img_R@1": h["val/rec2img_R@1"],
                     "img2rec_medR": h["val/img2rec_medR"], "loss": h.get("train/loss", float("nan"))})
    return rows


def project(rows: list[dict], target: float) -> dict | None:
    """Straight-line fit of img2rec R@1 on samples over the second half of the epochs (>= 4 epochs).

    Returns slope (R@1 points per 1k samples) and the samples / training seconds at which the line
    reaches ``target``; None when there are too few points or the curve does not rise.
    """
    if len(rows) < 4:
        return None
    tail = rows[len(rows) // 2:]
    x = np.array([r["samples"] for r in tail], float)
    y = np.array([r["img2rec_R@1"] for r in tail], float)
    slope, icept = np.polyfit(x, y, 1)
    if slope <= 0:
        return {"slope_per_1k": slope * 1e3, "samples": None, "train_s": None}
    need = (target - icept) / slope
    sps = float(np.median([r["samples_per_s"] for r in rows]))
    return {"slope_per_1k": slope * 1e3, "samples": need, "train_s": need / sps, "samples_per_s": sps}


def plot(rows: list[dict], path: Path, title: str) -> None:
    """R@1 (both directions) and medR against samples seen, saved atomically."""
    from malm.report.figures import plt, save

    x = [r["samples"] / 1e3 for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    a.plot(x, [r["img2rec_R@1"] for r in rows], "o-", label="img2rec")
    a.plot(x, [r["rec2img_R@1"] for r in rows], "s--", label="rec2img")
    a.set(xlabel="training samples (k)", ylabel="val R@1 (%), 1k bag", title=title)
    a.legend()
    b.plot(x, [r["img2rec_medR"] for r in rows], "o-")
    b.set(xlabel="training samples (k)", ylabel="val img2rec medR (1k bag)", yscale="log")
    fig.tight_layout()
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="Dotted config overrides on top of --config and the variant, e.g. train.lr=3e-4.")
    ap.add_argument("--variant", default="baseline", help="Variant to train (`malm variants` lists them).")
    ap.add_argument("--config", action="append", metavar="YAML",
                    help="Config overlay file, as for `malm train`; repeat for several "
                         "(default: params.yaml).")
    ap.add_argument("--epochs", type=int, default=12, help="Epochs to train (overrides train.epochs).")
    ap.add_argument("--target", type=float, default=20.0,
                    help="img2rec R@1 (%%) to project the samples and time for (the calibration target).")
    ap.add_argument("--out", default="runs/bench/learning_curve",
                    help="Run folder; an unfinished run there is resumed, a finished one is only read.")
    ap.add_argument("--no-progress", action="store_true", help="No progress bars.")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from malm.train.trainer import train

    overrides = C.parse_overrides([*args.overrides, f"train.epochs={args.epochs}"])
    cfg = variants.resolve_from_files(args.variant, args.config or ["params.yaml"], overrides)
    out = Path(args.out)
    train(cfg, out, progress=not args.no_progress)
    rows = curve_rows(json.loads((out / "history.json").read_text()))

    print(f"\nlearning curve: variant={args.variant} seed={cfg.train.seed} "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"train.threads={cfg.train.threads}, batch {cfg.train.batch_size})")
    print(f"{'epoch':>5} {'samples':>8} {'train s':>8} {'smp/s':>6} {'i2r R@1':>8} {'r2i R@1':>8} "
          f"{'i2r medR':>9}")
    for r in rows:
        print(f"{r['epoch']:>5} {r['samples']:>8} {r['train_s']:>8.0f} {r['samples_per_s']:>6.0f} "
              f"{r['img2rec_R@1']:>8.1f} {r['rec2img_R@1']:>8.1f} {r['img2rec_medR']:>9.1f}")
    write_table(pd.DataFrame(rows), out / "curve.csv")
    plot(rows, out / "curve.png", f"{args.variant}, seed {cfg.train.seed}")
    p = project(rows, args.target)
    if p is None:
        print("projection: needs >= 4 epochs (a line through the second half)")
    elif p["samples"] is None:
        print(f"projection: R@1 does not rise over the second half (slope {p['slope_per_1k']:.3f} "
              "points per 1k samples); no projection")
    else:
        print(f"projection (straight line through epochs {rows[len(rows) // 2]['epoch']}-{rows[-1]['epoch']}, "
              f"an extrapolation): {p['slope_per_1k']:.3f} R@1 points per 1k samples; "
              f"R@1 {args.target:g} % after ~{p['samples'] / 1e3:.0f}k samples = "
              f"~{p['train_s'] / 60:.0f} min of training per run at {p['samples_per_s']:.0f} samples/s")
    print(f"wrote {out / 'curve.csv'} and {out / 'curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
