"""Cost of ``malm search`` (``malm.search``) on this machine: a script that prints figures, not a test.

    python benchmarks/bench_search.py [--config params.yaml] [--variant malm] [--threads 0]
                                      [--recipes 51304] [--batch 64] [--k 10] [--device cpu]

At the shapes of ``--config``'s ``model`` section (the CPU default) with random weights (the cost
depends on the shapes, not the values; no trained run is needed):

1. model load: a checkpoint of that model (weights + config, written to a temporary folder) loaded
   the way a search loads it (``malm.search.model.load_model``: torch.load, build, load_state_dict);
2. photo preprocessing (``load_photo``: decode, the cache's resize and crop, evaluation's crop and
   normalisation) of a 512 x 384 and a 4032 x 3024 (12 MP phone) JPEG;
3. image embedding alone, ms per photo at batch 1 and at ``--batch``;
4. ``search()`` end to end, ms per photo at batch 1 and at ``--batch`` (preprocessing of 512 x 384
   JPEGs + embedding + ranking, against an index of ``--recipes`` random unit recipe embeddings of the
   model's embed_dim: Recipe1M's test split by default);
5. ranking alone: top-``--k`` of a batch of ``--batch`` photos against that index (one matrix
   product and ``torch.topk``).

Timings are medians of repeated runs after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from malm import config as C
from malm import variants

REPO = Path(__file__).resolve().parents[1]
RECIPE1M_TEST = 51_304  # H-T's test split (pairs)


def median_s(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_jpeg(path: Path, w: int, h: int, seed: int) -> Path:
    """A photo-like JPEG: smooth colour fields plus texture (noise alone would not compress)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([128 + 100 * np.sin(x / (37 + 13 * c) + y / (53 + 7 * c) + seed) for c in range(3)], -1)
    img += rng.normal(0, 12, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def write_checkpoint(cfg: C.Config, path: Path, vocab: int) -> None:
    from malm.io import save_checkpoint
    from malm.models.malm import build_model

    model_cfg = C.merge(cfg.model, {"image": {"pretrained": None, "allow_random_init": True}})
    model = build_model(model_cfg, cfg.loss, vocab)
    save_checkpoint(path, {"model": model.state_dict(), "config": C.to_dict(cfg), "epoch": 0})


def write_index(out: Path, cfg: C.Config, ckpt: Path, n: int, vocab: int) -> Path:
    """An index file of ``n`` random unit recipe embeddings over the checkpoint ``ckpt``."""
    from tokenizers import Tokenizer, models

    from malm.io import atomic_path
    from malm.search.index import FORMAT, VERSION, pack_strings
    from malm.search.model import checkpoint_identity

    E = cfg.model.embed_dim
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, E)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w1"))
    titles = [f"recipe {i}" for i in range(n)]
    arrays = {"recipe_emb": emb, "ids": np.asarray([f"{i:010x}" for i in range(n)]),
              "tok_title": np.zeros((n, 1), np.uint16), "tok_ingrs": np.zeros((n, 1, 1), np.uint16),
              "tok_instrs": np.zeros((n, 1, 1), np.uint16)}
    arrays["title_utf8"], arrays["title_off"] = pack_strings(titles)
    arrays["ingr_utf8"], arrays["ingr_off"] = pack_strings(["1 ingredient"] * n)
    d = cfg.data
    meta = {"format": FORMAT, "version": VERSION, "run_dir": str(ckpt.parent),
            "checkpoint": {"choice": "best", "epoch": 0, **checkpoint_identity(ckpt)},
            "variant": cfg.variant, "source": {"kind": "benchmark"}, "n_recipes": n, "n_images": 0,
            "embed_dim": E, "vocab_size": vocab, "config": C.to_dict(cfg), "vocab": tok.to_str(),
            "preprocess": {"cache_image_size": d.cache_image_size, "image_size": cfg.model.image.img_size,
                           "max_tokens": d.max_tokens, "max_ingrs": d.max_ingrs,
                           "max_instrs": d.max_instrs, "ingredients": d.ingredients}}
    arrays["meta"] = np.asarray(json.dumps(meta))
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", action="append", default=None, help="Config file(s); default params.yaml.")
    ap.add_argument("--variant", default="malm", help="Variant whose model is built (default malm).")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
    ap.add_argument("--recipes", type=int, default=RECIPE1M_TEST, help="Recipes in the random index.")
    ap.add_argument("--batch", type=int, default=64, help="The large batch (photos per forward).")
    ap.add_argument("--k", type=int, default=10, help="Results per photo in the ranking timing.")
    ap.add_argument("--vocab", type=int, default=30_000, help="Vocabulary size of the checkpoint.")
    ap.add_argument("--device", default="cpu", help="cpu or cuda.")
    ap.add_argument("--json", default=None, help="Also write the figures to this JSON file.")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from malm.search import load_index, load_photo, search, top_k
    from malm.search.model import embed_images, load_model

    cfg = variants.resolve_from_files(args.variant, args.config or [REPO / "params.yaml"], {})
    dev = torch.device(args.device)
    fig: dict[str, float] = {}
    img = cfg.model.image
    print(f"model: {args.variant} at {args.config or ['params.yaml']}'s model section: ViT "
          f"{img.img_size}px/{img.patch_size}, width {img.embed_dim}, depth {img.depth}; embed_dim "
          f"{cfg.model.embed_dim}; cache_image_size {cfg.data.cache_image_size}; "
          f"torch threads {torch.get_num_threads()}; device {dev}")
    with tempfile.TemporaryDirectory(prefix="bench_search.") as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "checkpoint_best.pt"
        write_checkpoint(cfg, ckpt, args.vocab)
        fig["model_load_s"] = median_s(lambda: load_model(ckpt, dev), 3)
        model, _, _ = load_model(ckpt, dev)
        print(f"model load (checkpoint {ckpt.stat().st_size / 2**20:.1f} MiB): "
              f"{fig['model_load_s'] * 1e3:.0f} ms")

        small = [write_jpeg(tmp / f"small{i}.jpg", 512, 384, i) for i in range(args.batch)]
        large = write_jpeg(tmp / "large.jpg", 4032, 3024, 99)
        fig["preprocess_512x384_ms"] = median_s(lambda: load_photo(small[0], cfg), 20) * 1e3
        fig["preprocess_4032x3024_ms"] = median_s(lambda: load_photo(large, cfg), 5) * 1e3
        print(f"preprocess one photo (load_photo): 512x384 JPEG {fig['preprocess_512x384_ms']:.2f} ms, "
              f"4032x3024 JPEG {fig['preprocess_4032x3024_ms']:.1f} ms")

        x = torch.stack([load_photo(p, cfg) for p in small])
        fig["embed_b1_ms_per_photo"] = median_s(lambda: embed_images(model, x[:1]), 20) * 1e3
        fig[f"embed_b{args.batch}_ms_per_photo"] = median_s(lambda: embed_images(model, x), 5) * 1e3 / len(x)
        print(f"image embedding: batch 1 {fig['embed_b1_ms_per_photo']:.2f} ms/photo, batch "
              f"{args.batch} {fig[f'embed_b{args.batch}_ms_per_photo']:.2f} ms/photo")

        index = load_index(write_index(tmp / "index.npz", cfg, ckpt, args.recipes, args.vocab))
        index.model(dev)  # loaded once per index, as a long-lived caller would
        fig["search_b1_ms_per_photo"] = median_s(
            lambda: search(index, small[:1], k=args.k, batch_size=1, device=dev), 10) * 1e3
        fig[f"search_b{args.batch}_ms_per_photo"] = median_s(
            lambda: search(index, small, k=args.k, batch_size=args.batch, device=dev), 3) * 1e3 / len(small)
        print(f"search() end to end (512x384 JPEGs, {args.recipes:,}-recipe index, top {args.k}): "
              f"batch 1 {fig['search_b1_ms_per_photo']:.2f} ms/photo, batch {args.batch} "
              f"{fig[f'search_b{args.batch}_ms_per_photo']:.2f} ms/photo")

        q = embed_images(model, x).to(dev)
        gallery = index.gallery("recipe", dev)
        fig["rank_batch_ms"] = median_s(lambda: top_k(q, gallery, args.k), 20) * 1e3
        print(f"ranking: top {args.k} of {len(q)} photos against {args.recipes:,} x "
              f"{gallery.shape[1]} recipe embeddings: {fig['rank_batch_ms']:.2f} ms per batch "
              f"({fig['rank_batch_ms'] / len(q):.3f} ms/photo)")
    if args.json:
        Path(args.json).write_text(json.dumps({k: round(v, 4) for k, v in fig.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
