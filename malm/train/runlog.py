"""What a run directory records besides its checkpoints: ``config.yaml`` (the resolved config),
``starts.json`` (one entry per start: resumes and Slurm requeues are visible), ``history.json``
(one row per epoch), ``metrics.json`` (the final metrics) and the dvclive logs."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from malm import config as C
from malm.io import atomic_write_json


def record_start(run_dir: Path, start_epoch: int) -> None:
    """Append this start to ``run_dir/starts.json``: an audit trail of resumes and Slurm requeues."""
    path = run_dir / "starts.json"
    starts = json.loads(path.read_text()) if path.exists() else []
    starts.append({"start_epoch": start_epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                   "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)})
    atomic_write_json(path, starts)


def save_config(cfg: C.Config, run_dir: Path) -> None:
    C.save(cfg, run_dir / "config.yaml")


def open_live(run_dir: Path, history: list[dict[str, float]]):
    """dvclive logs (re)written from the checkpointed history: exact after a resume, no duplicates."""
    from dvclive import Live

    live = Live(dir=str(run_dir / "dvclive"), resume=False, save_dvc_exp=False, dvcyaml=None,
                report=None)
    for row in history:
        log_row(live, row)
    return live


def log_row(live, row: dict[str, float]) -> None:
    """One epoch's row (``epoch`` aside) as one dvclive step."""
    for k, v in row.items():
        if k != "epoch":
            live.log_metric(k, v)
    live.next_step()


def save_history(run_dir: Path, history: list[dict[str, float]]) -> None:
    atomic_write_json(run_dir / "history.json", history)


def save_metrics(run_dir: Path, metrics: dict) -> None:
    atomic_write_json(run_dir / "metrics.json", metrics)
