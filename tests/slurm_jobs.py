"""Toy functions the launcher tests submit.

A Slurm job unpickles these by reference, so it imports this module as ``slurm_jobs``: the tests
put ``tests/`` on PYTHONPATH, which the job inherits (``sbatch --export=ALL``). Keep it free of
pytest imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from malm.launch.submit import Checkpointable


def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def cancel_myself() -> None:
    """scancel the running job from inside it, then wait to be killed."""
    subprocess.run(["scancel", os.environ["SLURM_JOB_ID"]], check=True)
    time.sleep(600)


class CountTo(Checkpointable):
    """Counts to ``n``, one step per ``step_s`` seconds, saving progress to ``progress_file``
    after every step; a requeued run resumes from the file (as the trainer resumes from its
    last checkpoint). Returns the saved state: ``count`` and ``starts`` (the count each run
    started from, so ``[0, 23]`` = one requeue that resumed at 23)."""

    def __init__(self, progress_file: str, n: int, step_s: float = 1.0) -> None:
        self.progress_file = progress_file
        self.n = n
        self.step_s = step_s

    def __call__(self) -> dict:
        path = Path(self.progress_file)
        state = json.loads(path.read_text()) if path.exists() else {"count": 0, "starts": []}
        state["starts"].append(state["count"])
        state["job_ids"] = state.get("job_ids", []) + [os.environ.get("SLURM_JOB_ID")]
        _save(path, state)
        while state["count"] < self.n:
            time.sleep(self.step_s)
            state["count"] += 1
            _save(path, state)
        return state


def _save(path: Path, state: dict) -> None:
    # atomic: the USR2 handler may interrupt between two writes
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
