"""Many training runs side by side (``malm train-runs``: the pipeline's ``train`` stage, and the
training half of ``malm converge``).

Every run is ``malm train --config ... --variant V --seed S --run-dir DIR`` in a process of its own,
exactly the command the pipeline used to run once per run, so a run resumes, skips (finished under
the same config and inputs) or restarts just as before. ``pipeline.workers`` of them run at a time,
the most expensive first (longest-processing-time order, :func:`estimated_cost`), each with
``train.threads // workers`` torch threads. On the 2-core default two 1-thread runs side by side
train 1.2-1.6x the samples/s of one 2-thread run (``benchmarks/results/parallel_runs``): small
models do not keep two threads busy.

Each run's output goes to ``<runs>/<variant>/seed<k>.log`` (beside the run directory, not in it, so
that the run directory DVC hashes for the ``assess`` stage changes only when the run does), and
``<runs>/train_runs.json`` records the invocation (per run: wall time, exit code, log). A failed run
does not stop the others; the command fails at the end, naming every failed run and its log's tail.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from malm import config as C
from malm.io import atomic_write_json

log = logging.getLogger(__name__)
SUMMARY = "train_runs.json"
LOG_TAIL_LINES = 25


@dataclass
class TrainRun:
    """One variant x seed to train, the config it resolves to and its run directory."""

    variant: str
    seed: int
    cfg: C.Config
    run_dir: Path

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    @property
    def log_file(self) -> Path:
        return self.run_dir.parent / f"{self.run_dir.name}.log"


def estimated_cost(cfg: C.Config) -> float:
    """A run's relative training cost, for the order runs start in (not a measurement): one unit
    per epoch for the baseline's image + recipe forward/backward, plus what the config switches on:
    the masked student view and the full view beside it (mask ratio > 0), the EMA teacher's pass
    (L_dist), the matching module (L_GC / L_LC), T-Food's ITM head with its hard negatives (L_itm).
    The weights follow the step costs measured on the default (README "Train-step cost")."""
    loss, model = cfg.loss, cfg.model
    step = 1.0
    if model.mask.ratio > 0:
        step += 0.6
    if loss.lambda_dist > 0 and model.mask.ratio > 0:
        step += 0.5
    if loss.lambda_gc > 0 or loss.lambda_lc > 0:
        step += 0.4
    if loss.lambda_itm > 0:
        step += 0.3
    return step * max(cfg.train.epochs, 1)


def threads_per_run(cfg: C.Config, workers: int) -> int:
    """``train.threads // workers`` (``train.threads=0``: the machine's cores), at least 1."""
    total = cfg.train.threads if cfg.train.threads > 0 else (os.cpu_count() or 1)
    return max(1, total // max(workers, 1))


def plan_runs(config_files: Sequence[str | os.PathLike], variants: Sequence[str] | None = None,
              seeds: Sequence[int] | None = None, runs_dir: str | os.PathLike = "runs",
              overrides: Sequence[str] = ()) -> list[TrainRun]:
    """``variants`` x ``seeds`` (default: the config files' ``pipeline``), resolved as
    ``malm train --config ... --variant V --seed S KEY=VALUE...`` resolves them, into
    ``<runs_dir>/<variant>/seed<k>``; in pipeline order."""
    from malm.launch.converge import plan

    return [TrainRun(r.variant, r.seed, r.cfg, Path(runs_dir) / r.variant / f"seed{r.seed}")
            for r in plan(config_files, variants, seeds, "unused", overrides)]


def _command(run: TrainRun, config_files: Sequence[str | os.PathLike], overrides: Sequence[str],
             threads: int | None, restart: bool, executor: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "malm.cli", "train"]
    for f in config_files:
        cmd += ["--config", str(f)]
    cmd += ["--variant", run.variant, "--seed", str(run.seed), "--run-dir", str(run.run_dir)]
    if restart:
        cmd.append("--restart-on-config-change")
    if executor:
        cmd += ["--executor", executor]
    cmd += list(overrides)
    if threads is not None:
        cmd.append(f"train.threads={threads}")
    return cmd


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join([line for line in lines if line.strip()][-n:])


def train_runs(config_files: Sequence[str | os.PathLike], variants: Sequence[str] | None = None,
               seeds: Sequence[int] | None = None, runs_dir: str | os.PathLike = "runs",
               overrides: Sequence[str] = (), workers: int | None = None,
               restart_on_config_change: bool = False, executor: str | None = None,
               only: Sequence[str] | None = None, progress: bool = True,
               echo=print) -> dict[str, Any]:
    """Train every run of :func:`plan_runs` (``only``: just the runs with these keys,
    ``<variant>/seed<k>``), ``workers`` (default ``pipeline.workers``) at a time, most expensive
    first; -> the summary written to ``<runs_dir>/train_runs.json``. Raises RuntimeError naming the
    failed runs (after every run has ended)."""
    runs = plan_runs(config_files, variants, seeds, runs_dir, overrides)
    if only is not None:
        runs = [r for r in runs if r.key in set(only)]
        if not runs:
            raise ValueError(f"none of {list(only)} is a run of the plan")
    cfg0 = runs[0].cfg
    executor = executor or None
    remote = (executor or cfg0.slurm.executor) not in ("inline",)
    workers = int(workers if workers is not None else cfg0.pipeline.workers)
    if workers < 1:
        raise C.ConfigError(f"pipeline.workers={workers}: give 1 or more")
    if remote:  # each run is a cluster job: submit them all, each process only waits on its job
        workers, threads = len(runs), None
    else:
        workers = min(workers, len(runs))
        threads = threads_per_run(cfg0, workers) if workers > 1 else None
    order = sorted(runs, key=lambda r: -estimated_cost(r.cfg))  # stable: ties keep pipeline order
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    echo(f"train-runs: {len(runs)} run(s) into {runs_dir}/, {workers} at a time"
         + (f", {threads} thread(s) each" if threads else "")
         + f"; order: {', '.join(r.key for r in order)}")
    env = {**os.environ, "TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", "30")}
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()

    def one(run: TrainRun) -> dict[str, Any]:
        run.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = _command(run, config_files, overrides, threads, restart_on_config_change, executor)
        t = time.perf_counter()
        with open(run.log_file, "w") as fh:
            fh.write("$ " + " ".join(cmd[1:]) + "\n")
            fh.flush()
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
        return {"variant": run.variant, "seed": run.seed, "run_dir": str(run.run_dir),
                "log": str(run.log_file), "returncode": rc,
                "wall_s": round(time.perf_counter() - t, 1)}

    records: dict[str, dict[str, Any]] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="runs", unit="run")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(one, r): r for r in order}
        for fut in as_completed(futures):
            run = futures[fut]
            rec = fut.result()
            records[run.key] = rec
            state = "done" if rec["returncode"] == 0 else f"FAILED (exit {rec['returncode']})"
            msg = f"{run.key}: {state} in {rec['wall_s']:.0f} s (log: {rec['log']})"
            if bar is not None:
                bar.update(1)
                bar.write(msg)
            else:
                echo(msg)
    if bar is not None:
        bar.close()
    total = time.perf_counter() - t0
    summary = {"command": " ".join(["malm train-runs", *[f"--config {c}" for c in config_files],
                                    f"--runs-dir {runs_dir}", *overrides]),
               "started": started, "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
               "workers": workers, "threads_per_run": threads, "total_wall_s": round(total, 1),
               "order": [r.key for r in order], "runs": [records[r.key] for r in runs]}
    atomic_write_json(Path(runs_dir) / SUMMARY, summary)
    failed = [records[r.key] for r in runs if records[r.key]["returncode"] != 0]
    if failed:
        details = "\n\n".join(f"{f['variant']}/seed{f['seed']} (exit {f['returncode']}, log "
                              f"{f['log']}):\n{_tail(Path(f['log']))}" for f in failed)
        raise RuntimeError(f"{len(failed)} of {len(runs)} run(s) failed:\n{details}")
    echo(f"train-runs: {len(runs)} run(s) in {total:.0f} s")
    return summary
