"""Training throughput of one run on all threads against several 1-thread runs side by side.

The question behind it (issue 19, part 4: the Table 1 peers inside the 60-minute ``make repro``):
the pipeline trains its runs one after another, each on ``train.threads`` (2 on the CPU default).
Small models use two threads poorly, so P runs of 1 thread each, side by side, may train more
samples per second in total. DVC runs stages one at a time, so using that needs a stage that
schedules runs itself. Measure before building it.

Each mode runs the real training step (:func:`malm.train.step.train_step` on what
:func:`malm.train.step.build_training` builds, as ``bench_train_step.py``) in fresh processes: first
``--warmup`` untimed steps, then every process waits at a barrier, and ``--steps`` timed steps follow.
Throughput is the total of the timed samples over the slowest process's time.

    python benchmarks/bench_parallel_runs.py --config params.yaml --data data/cache
    python benchmarks/bench_parallel_runs.py --variant malm --procs 2 --threads 2 --steps 40

Run it on an idle machine: anything else running skews both modes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def worker(args: dict, threads: int, rank: int, barrier, out) -> None:
    import torch

    import bench_train_step as b
    from malm.train.step import build_training, train_step

    torch.set_num_threads(threads)
    b.DATA_CACHE = args["data"]
    base, _ = b.base_config(args["config"])
    cfg = b.make_config(base, args["variant"])
    t = build_training(cfg, b.VOCAB, torch.device("cpu"), steps_per_epoch=1000)
    t.model.set_image_trainable(not args["freeze_image"])
    n = args["warmup"] + args["steps"]
    batches = [b.make_batch(cfg, args["batch"], torch.device("cpu"), 100 * rank + i) for i in range(n)]
    for i in range(args["warmup"]):
        train_step(t, t.model, batches[i], 0, i)
    barrier.wait()
    t0 = time.perf_counter()
    for i in range(args["warmup"], n):
        train_step(t, t.model, batches[i], 0, i)
    out.put((rank, time.perf_counter() - t0))


def run_mode(args: dict, procs: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=worker, args=(args, threads, r, barrier, out)) for r in range(procs)]
    for p in ps:
        p.start()
    times = dict(out.get() for _ in ps)
    for p in ps:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a worker of {procs} x {threads} thread(s) failed (exit {p.exitcode})")
    samples = procs * args["steps"] * args["batch"]
    slowest = max(times.values())
    return {"procs": procs, "threads_each": threads, "seconds_per_process": [round(times[r], 3) for r in sorted(times)],
            "samples": samples, "samples_per_s": round(samples / slowest, 2),
            "ms_per_step_per_process": round(1000 * slowest / args["steps"], 1)}


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="\n".join(__doc__.split("\n")[2:]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="params.yaml", metavar="{small,paper,PATH}",
                    help="Model/loss/train config, as bench_train_step.py reads it (default: params.yaml).")
    ap.add_argument("--variant", default="baseline", help="Registered variant to train (default: baseline).")
    ap.add_argument("--data", metavar="CACHE_DIR", default=None,
                    help="Batches of a prepared cache (e.g. data/cache) instead of Recipe1M-shaped random ones.")
    ap.add_argument("--threads", type=int, default=2,
                    help="Threads of the one-process mode; the other mode runs this many 1-thread "
                         "processes unless --procs says otherwise (default: 2, the CPU default's).")
    ap.add_argument("--procs", type=int, default=0, help="Processes of the side-by-side mode (default: --threads).")
    ap.add_argument("--batch", type=int, default=64, help="Batch size (default: 64, the CPU default's).")
    ap.add_argument("--steps", type=int, default=20, help="Timed steps per process (default: 20).")
    ap.add_argument("--warmup", type=int, default=2, help="Untimed steps per process first (default: 2).")
    ap.add_argument("--freeze-image", action="store_true",
                    help="ViT frozen, as in the first 2 of the CPU default's 3 epochs (default: trainable).")
    ap.add_argument("--json", metavar="OUT", default=None, help="Also write the figures to this JSON file.")
    return ap


def main(argv=None) -> int:
    a = make_parser().parse_args(argv)
    procs = a.procs or a.threads
    args = {"config": a.config, "variant": a.variant, "data": a.data, "batch": a.batch, "steps": a.steps,
            "warmup": a.warmup, "freeze_image": a.freeze_image}
    print(f"variant={a.variant} config={a.config} data={a.data or 'random Recipe1M-shaped'} batch={a.batch} "
          f"steps={a.steps} freeze_image={a.freeze_image} cpus={mp.cpu_count()} ({platform.processor() or platform.machine()})")
    one = run_mode(args, 1, a.threads)
    many = run_mode(args, procs, 1)
    ratio = many["samples_per_s"] / one["samples_per_s"]
    for label, r in ((f"1 process x {a.threads} threads", one), (f"{procs} processes x 1 thread", many)):
        print(f"  {label:28s} {r['samples_per_s']:8.1f} samples/s   {r['ms_per_step_per_process']:7.1f} ms/step "
              f"per process   ({', '.join(f'{s:.1f}' for s in r['seconds_per_process'])} s)")
    print(f"  side by side / one process: {ratio:.2f}x the samples per second")
    if a.json:
        from malm.io import atomic_write_json

        atomic_write_json(a.json, {"args": args, "one_process": one, "side_by_side": many,
                                   "throughput_ratio": round(ratio, 3)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
