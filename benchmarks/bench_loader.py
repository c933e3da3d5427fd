"""Image store size, decode speed and training-loader throughput, raw vs jpeg store.

Generates a synthetic Recipe1M-format set with 256 px photos (``--recipes`` training recipes),
builds its cache four times (``data.image_store`` raw | jpeg x ``cache_image_size`` 256 | the CPU
default's 54) and prints:

1. bytes per stored image, and decode (read) img/s on one core, for each store and size;
2. the training loader's img/s at the paper's input (224 px random crop of the 256 px cache +
   flip + CLIP normalisation, batches of ``--batch``) against the number of DataLoader workers,
   for both stores (``persistent_workers`` on; ``pin_memory`` on where CUDA exists);
3. from the per-worker rate, how many workers one GPU needs for MALM's ~1,600 img/s on an H200
   (an extrapolation: it assumes workers scale linearly, as they do while cores are free).

    python benchmarks/bench_loader.py --out /tmp/bench_loader               # ~5 min on 2 cores
    python benchmarks/bench_loader.py --out /tmp/bl --workers 0,1,2,4,8 --batches 40
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from malm import config as C
from malm.data.cache import load_manifest, prepare
from malm.data.store import JpegRows
from malm.data.dataset import RecipeImageDataset, collate
from malm.synth.write import generate

GPU_TARGET = 1600  # img/s: MALM's training step on one H200 (the scale issue's goal)


def build(root: Path, out: Path, size: int, store: str, quality: int) -> Path:
    data = C.merge(C.DataConfig(), {"root": str(root), "cache_dir": str(out / f"{store}{size}"),
                                    "synthetic": False, "cache_image_size": size,
                                    "image_store": store, "jpeg_quality": quality, "min_word_count": 1})
    return prepare(data, progress=False)


def decode_rate(cache: Path, n: int = 400) -> tuple[float, float]:
    """(bytes per image, images read+decoded per second on one core) of the train split."""
    man = load_manifest(cache)
    images = man["splits"]["train"]["images"]
    per_image = man["image_bytes"]["train"] / images
    d = cache / "train"
    rows = JpegRows(d) if man["image_store"] == "jpeg" else np.load(d / "images.npy", mmap_mode="r")
    idx = np.random.default_rng(0).integers(0, images, n)
    np.array(rows[int(idx[0])])
    t0 = time.perf_counter()
    for m in idx:
        np.array(rows[int(m)])
    return per_image, n / (time.perf_counter() - t0)


def loader_rate(cache: Path, workers: int, batch: int, batches: int) -> float:
    """Training-loader img/s at 224 px (random crop + flip + normalise), after a warm-up."""
    ds = RecipeImageDataset(cache, "train", train=True, image_size=224, seed=0)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, collate_fn=collate,
                    pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                    drop_last=True, prefetch_factor=4 if workers else None)
    it = iter(dl)
    for _ in range(2):  # warm-up: worker start, page cache
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(dl)
            b = next(it)
        n += len(b["id"])
    rate = n / (time.perf_counter() - t0)
    del it, dl
    return rate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="Scratch folder (removed at the end unless --keep).")
    ap.add_argument("--recipes", type=int, default=1500, help="Synthetic training recipes (~1.2 images each).")
    ap.add_argument("--workers", default="0,1,2", help="Comma-separated DataLoader worker counts.")
    ap.add_argument("--batch", type=int, default=64, help="Batch size of the loader.")
    ap.add_argument("--batches", type=int, default=15, help="Timed batches per setting.")
    ap.add_argument("--quality", type=int, default=90, help="data.jpeg_quality.")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the main process.")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    workers = [int(w) for w in args.workers.split(",")]

    synth = dataclasses.replace(C.merge(C.Config(), {}).synth, n_train=args.recipes, n_val=60, n_test=60,
                                image_size=256)
    root = args.out / "synth"
    t0 = time.perf_counter()
    generate(root, synth, progress=False)
    print(f"synthetic set with 256 px photos: {time.perf_counter() - t0:.0f} s", flush=True)

    caches: dict[tuple[str, int], Path] = {}
    print("\n| store | cache side | bytes / image | decode img/s (1 core) | build s |\n|---|---|---|---|---|")
    for size in (256, 54):
        for store in ("raw", "jpeg"):
            t0 = time.perf_counter()
            caches[store, size] = build(root, args.out, size, store, args.quality)
            built = time.perf_counter() - t0
            per_image, rate = decode_rate(caches[store, size])
            print(f"| {store} | {size} | {per_image / 1e3:.1f} KB | {rate:,.0f} | {built:.0f} |", flush=True)

    print(f"\ntraining loader at 224 px (random crop + flip + normalise), batch {args.batch}, "
          f"pin_memory={torch.cuda.is_available()}, persistent_workers on")
    print("| store | workers | img/s |\n|---|---|---|")
    per_worker: dict[str, float] = {}
    for store in ("raw", "jpeg"):
        for w in workers:
            rate = loader_rate(caches[store, 256], w, args.batch, args.batches)
            if w == 1:
                per_worker[store] = rate
            print(f"| {store} | {w} | {rate:,.0f} |", flush=True)

    cpus = os.cpu_count()
    print(f"\nmachine: {platform.processor() or platform.machine()}, {cpus} CPUs, torch {torch.__version__}")
    for store, rate in per_worker.items():
        print(f"extrapolation ({store} store): one worker gives {rate:,.0f} img/s, so ~1,600 img/s "
              f"(MALM on one H200) needs about {math.ceil(GPU_TARGET / rate)} workers, i.e. that many "
              "free cores per GPU, if workers scale linearly")
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)


if __name__ == "__main__":
    main()
