"""Cost of test-time re-ranking (``malm.eval.rerank``): a script that prints figures, not a test.

    python benchmarks/bench_rerank.py [--config params.yaml] [--paper configs/paper.yaml]
                                      [--k 10] [--bags 1000 10000] [--threads 0] [--device cpu]

1. Measured, on this machine: seconds to re-rank one bag of 1,000 and one of 10,000 pairs (each
   query's top K by cosine re-ordered by the matching module, both directions: 2 x B x K pairs
   requested, each distinct pair fused once through psi/psi'), at the shapes of ``--config``'s
   ``model`` section (the CPU default), variant ``malm``. Random weights and random token sets: the
   cost depends on the shapes, not the values. Correlated random embeddings stand in for a trained
   dual encoder (true matches often in the top K, as in a real bag). Includes the top-K selection
   and the ranks; excludes the token pass (``embed_split_tokens``: one more forward over the split,
   about the ``embed`` stage's time) and the dual-encoder evaluation.
2. Projected, NOT measured: Recipe1M's 5 bags of 10,000 (and 10 of 1,000) at the paper's shapes
   (``--paper`` layered on ``--config``, as ``malm train`` does) on one GPU. The FLOPs per fused
   pair are counted by ``torch.utils.flop_counter`` on the real module (psi/psi' at those widths,
   a chunk of pairs at ``--recipe-tokens`` recipe tokens, the padded length of a chunk); the time is
   FLOPs / (peak x utilisation) for the assumed peaks and utilisations printed beside it. Memory of
   the token sets and the token pass's FLOPs (ViT + recipe encoder, one forward per test pair) are
   printed too. Nothing here ran on a GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from malm import variants
from malm.eval.embed import SplitTokens
from malm.eval.metrics import cosine_similarity, ranks
from malm.eval.rerank import (PairScorer, pair_scores, rerank_bag_sizes, rerank_protocols,
                              rerank_ranks, score_kind)
from malm.models.matching import TwoLevelMatching

REPO = Path(__file__).resolve().parents[1]
RECIPE1M_TEST = 51_304  # H-T's test split (pairs)
# bf16 dense tensor-core peaks (no sparsity), TFLOP/s
GPU_PEAKS = {"H100 SXM (bf16)": 989.0, "A100 (bf16)": 312.0, "V100 (fp16, the paper's GPU)": 125.0}
UTILISATION = (0.3, 0.5)  # assumed model-FLOP utilisation range of these short-sequence layers


def build_matching(cfg) -> TwoLevelMatching:
    loss = cfg.loss
    return TwoLevelMatching(cfg.model.matching, cfg.model.image.embed_dim, cfg.model.recipe.width,
                            global_loss=loss.lambda_gc > 0, local_loss=loss.lambda_lc > 0).eval()


def random_tokens(cfg, n: int, s: int, g: torch.Generator) -> SplitTokens:
    """n rows of random token sets at cfg's widths; recipes of 1/3 .. all of ``s`` tokens."""
    img = cfg.model.image
    P = (img.img_size // img.patch_size) ** 2
    lengths = torch.randint(max(1, s // 3), s + 1, (n,), generator=g)
    pad = torch.arange(s)[None, :] >= lengths[:, None]
    return SplitTokens(torch.randn(n, 1 + P, img.embed_dim, generator=g),
                       torch.randn(n, s, cfg.model.recipe.width, generator=g), pad, torch.arange(n))


def time_bag(matching, tokens: SplitTokens, bag: int, k: int, device: torch.device, chunk: int,
             g: torch.Generator, noise: float) -> dict:
    """Re-rank one bag of ``bag`` pairs with a fresh cache -> wall and CPU seconds, pairs requested
    and fused, and the simulated dual encoder's img2rec R@1 / R@k."""
    image = torch.randn(bag, 64, generator=g)
    recipe = image + noise * torch.randn(bag, 64, generator=g)
    sim = cosine_similarity(image, recipe)
    dual = ranks(sim)[0]
    scorer = PairScorer(matching, tokens, device, chunk=chunk)
    rows = torch.arange(bag)
    t0, c0 = time.perf_counter(), time.process_time()
    rerank_ranks(sim, k, lambda i, r: scorer(rows[i], rows[r]))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "requested": scorer.requested, "fused": scorer.scored,
            "r1": float((dual == 1).float().mean()) * 100, "rk": float((dual <= k).float().mean()) * 100}


@torch.inference_mode()
def flops_per_pair(cfg, s: int, pairs: int = 4) -> float:
    """FLOPs of fusing one pair at cfg's shapes (counted on ``pairs`` pairs of ``s`` recipe tokens)."""
    matching = build_matching(cfg)
    g = torch.Generator().manual_seed(0)
    tok = random_tokens(cfg, pairs, s, g)
    pad = torch.zeros(pairs, s, dtype=torch.bool)  # a chunk is padded to its longest recipe
    # the math SDPA kernel: the counter does not see inside the fused CPU kernels (it counts 0)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        pair_scores(matching, tok.image, tok.recipe, pad, score_kind(matching))
    return fc.get_total_flops() / pairs


@torch.inference_mode()
def token_pass_flops(cfg) -> float:
    """FLOPs of one test pair's token pass: the ViT forward on one image (+ the recipe encoder is
    ~1 % of it at the paper's widths and is left out)."""
    from malm.models.image import create_vit

    img = cfg.model.image
    vit = create_vit(img).eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        vit.forward_features(torch.zeros(1, 3, img.img_size, img.img_size))
    return float(fc.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(REPO / "params.yaml"), help="Measured shapes (model section).")
    p.add_argument("--paper", default=str(REPO / "configs" / "paper.yaml"),
                   help="Projected shapes, layered on --config (as `malm train --config params.yaml "
                        "--config configs/paper.yaml`).")
    p.add_argument("--variant", default="malm", help="Variant whose matching module is measured.")
    p.add_argument("--k", type=int, default=10, help="Re-ranked depth (T-Food's k_test: 10).")
    p.add_argument("--bags", type=int, nargs="+", default=[1000, 10000], help="Bag sizes to time.")
    p.add_argument("--recipe-tokens", type=int, default=32,
                   help="Recipe tokens S of the measured run (title words + ingredient and instruction "
                        "lines; padded per chunk).")
    p.add_argument("--paper-recipe-tokens", type=int, default=50,
                   help="S for the projection: Recipe1M's caps allow 15 + 20 + 20 = 55; a chunk of "
                        "2048 pairs is padded to about its longest recipe.")
    p.add_argument("--chunk", type=int, default=2048, help="Pairs per fused batch (PairScorer).")
    p.add_argument("--noise", type=float, default=3.3,
                   help="Recipe embedding = image embedding + noise x N(0, 1) in 64 dimensions: 3.3 gives "
                        "a 1k-bag img2rec R@1 of ~20 %% (the CPU default's baseline), R@10 ~52 %%. How many "
                        "requested pairs are distinct depends on it (mutual top-K neighbours).")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the measurement).")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = variants.resolve_from_files(args.variant, [args.config])
    paper = variants.resolve_from_files(args.variant, [args.config, args.paper])
    g = torch.Generator().manual_seed(0)

    m = cfg.model
    matching = build_matching(cfg).to(device)
    print(f"measured: device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"load average {os.getloadavg()[0]:.2f} (other processes share the CPU)")
    print(f"  shapes ({args.config}, variant {args.variant}): image {1 + (m.image.img_size // m.image.patch_size) ** 2}"
          f" tokens x {m.image.embed_dim}, recipe {args.recipe_tokens} tokens x {m.recipe.width}, matching "
          f"width {m.matching.width}, psi {m.matching.psi_layers} / psi' {m.matching.psi_prime_layers} "
          f"layers, {m.matching.heads} heads; score: {score_kind(matching)}; K = {args.k}; "
          f"chunk {args.chunk}")
    tokens = random_tokens(cfg, max(args.bags), args.recipe_tokens, g)
    time_bag(matching, tokens, min(200, max(args.bags)), args.k, device, args.chunk, g, args.noise)  # warm-up
    measured = {}
    for bag in args.bags:
        t = time_bag(matching, tokens, bag, args.k, device, args.chunk, g, args.noise)
        measured[bag] = t["wall"]
        print(f"  one bag of {bag:>6}: {t['wall']:8.2f} s wall ({t['cpu']:7.2f} s CPU of this process)"
              f"   {t['requested']} pairs requested, {t['fused']} fused, "
              f"{1e6 * t['wall'] / max(t['fused'], 1):.0f} us wall per fused pair; simulated dual "
              f"encoder R@1 {t['r1']:.1f} R@{args.k} {t['rk']:.1f}   load {os.getloadavg()[0]:.2f}",
              flush=True)
    ev = cfg.eval
    n_test = cfg.synth.n_test if cfg.data.synthetic else RECIPE1M_TEST
    for label, protocols, sizes in (
            ("every protocol x bag", ev.protocols, [b for b, _ in ev.bags]),
            (f"as configured (eval.rerank_protocols {ev.rerank_protocols}, eval.rerank_bags "
             f"{ev.rerank_bags})", rerank_protocols(ev), rerank_bag_sizes(ev))):
        per_run, missing = 0.0, set()
        for protocol in protocols:
            for bag, n_bags in ev.bags:
                if bag not in sizes:
                    continue
                if bag not in measured:
                    missing.add(bag)
                    continue
                n = n_bags if protocol == "ht" else min(n_bags, n_test // bag)  # clamp_bags
                per_run += n * measured[bag]
        print(f"  => per run of {args.config}'s eval section ({ev.protocols} x {ev.bags}; {n_test} test "
              f"pairs), {label}: {per_run:.0f} s re-ranking (no cache hits between bags counted)"
              + (f", bags of {sorted(missing)} not timed" if missing else ""))

    pm = paper.model
    s = args.paper_recipe_tokens
    fpp = flops_per_pair(paper, s)
    vit = token_pass_flops(paper)
    P = (pm.image.img_size // pm.image.patch_size) ** 2
    print(f"\nPROJECTION (FLOP count, not a measurement) at the paper's shapes ({args.paper}): image "
          f"{1 + P} tokens x {pm.image.embed_dim}, recipe {s} tokens x {pm.recipe.width}, matching width "
          f"{pm.matching.width}, psi {pm.matching.psi_layers} / psi' {pm.matching.psi_prime_layers} "
          f"layers; {fpp / 1e9:.2f} GFLOP per fused pair (counted by torch.utils.flop_counter)")
    cases = {"5 x 10k (tfood)": 5 * 2 * 10_000 * args.k, "10 x 1k (tfood)": 10 * 2 * 1_000 * args.k}
    for name, pairs in cases.items():
        total = pairs * fpp
        print(f"  {name}: <= {pairs:,} pairs (2 x B x K per bag, before the cache) = {total / 1e15:.2f} PFLOP")
        for gpu, peak in GPU_PEAKS.items():
            lo, hi = (total / (peak * 1e12 * u) for u in reversed(UTILISATION))
            print(f"    {gpu:<28} peak {peak:5.0f} TFLOP/s at {UTILISATION[0]:.0%}-{UTILISATION[1]:.0%}"
                  f" utilisation: {lo:6.0f}-{hi:6.0f} s")
    tok = RECIPE1M_TEST * vit
    mem = RECIPE1M_TEST * ((1 + P) * pm.image.embed_dim + s * pm.recipe.width) * 2
    print(f"  plus the token pass over the {RECIPE1M_TEST:,} test pairs: ViT {vit / 1e9:.1f} GFLOP per "
          f"image -> {tok / 1e15:.2f} PFLOP (H100 at 30-50 %: {tok / (989e12 * 0.5):.0f}-"
          f"{tok / (989e12 * 0.3):.0f} s; the loader's JPEG decoding may dominate), and "
          f"{mem / 2 ** 30:.1f} GiB of token sets in host memory (bf16)")
    per_pair = ((1 + P) * pm.image.embed_dim + s * pm.recipe.width) * 2
    print("  assumptions: bf16 autocast; FLOPs of the fused pairs only (matmuls/attention; "
          "layer norms, softmax, top-K and ranks not counted), each pair counted whole: an upper "
          "bound, since the global score computes each image's and recipe's own part once "
          "(PairScorer's shared path); the token sets held on the GPU "
          f"(rerank_run does when they fit in half its free memory; else {per_pair / 2 ** 20:.2f} MiB "
          "per pair cross PCIe: ~20 s per 10^6 pairs at 20 GB/s); utilisation "
          f"{UTILISATION[0]:.0%}-{UTILISATION[1]:.0%} of the dense peak, not measured.")


if __name__ == "__main__":
    main()
