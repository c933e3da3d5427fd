"""Time ``malm.eval.protocol.evaluate`` (a script that prints figures, not a test).

    python benchmarks/bench_eval.py [--dim 1024] [--repeats 3] [--device cpu] [--threads 0]

Cases: the two Recipe1M bag settings under the tfood protocol, both directions: 10 bags of 1,000
and 5 bags of 10,000 pairs. Each line gives the median wall time (and this process's CPU time) of
``--repeats`` runs, and next to it the time of the bare ``[B, D] @ [D, B]`` float32 matmuls alone
(the floor: every rank needs every similarity). The load average is printed because the CPU may be
shared: compare figures only from runs under similar load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from malm.eval.metrics import full_fp32_matmul
from malm.eval.protocol import evaluate


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds of this process) over ``repeats`` runs."""
    wall, cpu = [], []
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=1024, help="Embedding width D (MALM: 1024).")
    p.add_argument("--repeats", type=int, default=3, help="Runs per case; the median is printed.")
    p.add_argument("--device", default="cpu", help="cpu or cuda.")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    g = torch.Generator().manual_seed(0)
    n = 50_000
    image = torch.randn(n, args.dim, generator=g)
    recipe = image + 20.0 * torch.randn(n, args.dim, generator=g)  # correlated, non-trivial ranks
    image, recipe = image.to(device), recipe.to(device)
    ids = list(range(n))
    print(f"device={device} threads={torch.get_num_threads()} D={args.dim} "
          f"torch={torch.__version__} repeats={args.repeats} (median seconds) "
          f"load average {os.getloadavg()[0]:.2f} (other processes share the CPU)")

    for bag_size, n_bags in ((1000, 10), (10_000, 5)):
        evaluate(image[:bag_size], recipe[:bag_size], ids[:bag_size], bag_size=bag_size,
                 n_bags=1, device=device)  # warm-up
        t_eval = _median_time(lambda: evaluate(image, recipe, ids, protocol="tfood",
                                               bag_size=bag_size, n_bags=n_bags, device=device),
                              args.repeats, device)

        def matmuls() -> None:
            with full_fp32_matmul():
                for t in range(n_bags):
                    s = slice(t * bag_size, (t + 1) * bag_size)
                    image[s] @ recipe[s].T

        t_mm = _median_time(matmuls, args.repeats, device)
        r = evaluate(image, recipe, ids, bag_size=bag_size, n_bags=n_bags, device=device)
        print(f"tfood {n_bags:>2} x {bag_size:>6}: evaluate {t_eval[0]:7.3f} s wall "
              f"({t_eval[1]:7.3f} s CPU)   matmuls alone {t_mm[0]:7.3f} s wall ({t_mm[1]:7.3f} s CPU)"
              f"   img2rec medR {r['img2rec']['medR']['mean']:.1f} R@1 {r['img2rec']['R@1']['mean']:.2f}"
              f"   load {os.getloadavg()[0]:.2f}", flush=True)

if __name__ == "__main__":
    main()
