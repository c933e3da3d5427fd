"""The suite's own stages and grids on the real local Slurm cluster (``bash slurm/cluster.sh start``):
a training job submitted through `malm train --executor slurm` completes and its metrics land; a
2-cell grid goes out as one job array, `grid status` sees it, re-submitting skips finished cells
and `grid collect` builds the same tables as DVC; a training job given too short a time limit is
requeued by Slurm and the trainer resumes from its last checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SMOKE, overrides
from test_slurm import cluster  # noqa: F401  (autouse: fail, never skip, without a cluster)

pytestmark = pytest.mark.slurm
MALM = [sys.executable, "-m", "malm.cli"]


def malm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(MALM + list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_train_stage_as_slurm_job(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    p = malm("train", "--config", str(SMOKE), "--variant", "baseline", "--run-dir", str(run_dir),
             "--executor", "slurm", *overrides(tiny_data, **{"train.epochs": 1, "train.threads": 1,
                                                             "slurm.log_dir": str(tmp_path / "logs")}))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "slurm job" in p.stdout  # the job id and its log were announced
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["variant"] == "baseline" and "val/img2rec_R@1" in metrics
    assert list((tmp_path / "logs").glob("*/*_log.out")), "no submitit log written"


def test_train_runs_submits_every_run_as_a_slurm_job_at_once(tmp_path, tiny_data):
    """`malm train-runs` with slurm.executor=slurm (the pipeline's train stage on a cluster): every
    run is a job of its own, all submitted at once (pipeline.workers does not hold them back), each
    process only waits on its job; both runs finish with their metrics."""
    p = malm("train-runs", "--config", str(SMOKE), "--variants", "baseline", "--seeds", "0,1",
             "--runs-dir", str(tmp_path / "runs"), "--executor", "slurm", "--workers", "1", "--quiet",
             *overrides(tiny_data, **{"train.epochs": 1, "train.threads": 1,
                                      "slurm.cpus_per_task": 1, "slurm.mem_gb": 2,
                                      "slurm.log_dir": str(tmp_path / "logs")}))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "train_runs.json").read_text())
    assert summary["workers"] == 2 and summary["threads_per_run"] is None
    jobs = set()
    for seed in (0, 1):
        metrics = json.loads((tmp_path / "runs" / "baseline" / f"seed{seed}" / "metrics.json").read_text())
        assert metrics["seed"] == seed and "val/img2rec_R@1" in metrics
        log = (tmp_path / "runs" / "baseline" / f"seed{seed}.log").read_text()
        assert "slurm job" in log, log[-2000:]
        jobs.add(log.split("slurm job", 1)[1].split()[0])
    assert len(jobs) == 2, jobs


def test_grid_array_status_resubmit_collect(tmp_path, tiny_data):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({
        "name": "tiny", "variants": ["baseline", "mask_0.5"], "seeds": [0],
        "config": [str(SMOKE)], "out": str(tmp_path / "out"),
        "overrides": {"train": {"epochs": 1, "threads": 1},
                      "data": {k.split(".")[1]: (v if k != "data.synthetic" else False)
                               for k, v in tiny_data.items()},
                      "slurm": {"cpus_per_task": 1, "mem_gb": 2}}}))
    p = malm("grid", "submit", str(grid))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    jobs = json.loads((tmp_path / "out" / "jobs.json").read_text())
    ids = {j["job_id"] for j in jobs.values()}
    assert len(jobs) == 2 and all("_" in i for i in ids), jobs  # one array: <array id>_<task>
    assert len({i.split("_")[0] for i in ids}) == 1

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        p = malm("grid", "status", str(grid))
        assert p.returncode == 0, p.stderr[-2000:]
        if "2/2 cells finished" in p.stdout:
            break
        assert "FAILED" not in p.stdout and "CANCELLED" not in p.stdout, p.stdout
        time.sleep(5)
    else:
        pytest.fail(f"grid did not finish: {p.stdout}")

    p = malm("grid", "submit", str(grid))  # nothing left to do
    assert p.returncode == 0 and "nothing submitted" in p.stdout, p.stdout

    p = malm("grid", "collect", str(grid))
    assert p.returncode == 0, p.stderr[-2000:]
    import pandas as pd

    df = pd.read_csv(tmp_path / "out" / "tables" / "results.csv")
    assert set(df.variant) == {"baseline", "mask_0.5"}
    # both readings for the variant with a matching module, the dual encoder only for the baseline
    assert set(df[df.variant == "baseline"].protocol) == {"tfood", "ht"}
    assert set(df[df.variant == "mask_0.5"].protocol) == {"tfood", "ht", "tfood+rerank10", "ht+rerank10"}
    assert Path(tmp_path / "out" / "tables" / "tables.md").read_text().count("MALM r=0.5") >= 1


# slow (minutes: 60 epochs under a 1-minute limit); make test keeps its parts covered by cheaper tests:
# Slurm's USR2 + requeue + resume of a Checkpointable job, same job id:
#   test_slurm.py::test_checkpointable_job_requeues_and_resumes;
# the train stage submitted as that kind of job, resubmitted with its config and run dir:
#   test_launch.py::test_training_stage_job_requeues_itself_with_its_arguments;
# the trainer resuming a run cut mid-epoch in its run dir, starts.json with SLURM_RESTART_COUNT:
#   test_train.py::test_a_run_killed_mid_epoch_resumes_bit_for_bit;
# `malm train --executor slurm` as a real job: test_train_stage_as_slurm_job.
@pytest.mark.slow
def test_training_job_requeues_at_its_time_limit_and_resumes(tmp_path, tiny_data):
    """`malm train --executor slurm` with a 1-minute limit and more than a minute of work: Slurm
    signals the job, submitit requeues it (same job id) and the trainer resumes from its last
    per-epoch checkpoint; the waiting command returns once the run has finished.

    The work must outlast the first USR2, which the local cluster sends about 30 s into the job:
    30 tiny epochs once finished in under 30 s on an idle machine (no requeue), so the run has 60
    (2 starts at about 1 epoch/s, 3-4 starts at 0.6 epoch/s, about a minute per start)."""
    epochs = 60
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    p = malm("train", "--config", str(SMOKE), "--variant", "baseline", "--run-dir", str(run_dir),
             "--executor", "slurm",
             *overrides(tiny_data, **{"train.epochs": epochs, "train.threads": 1, "train.val_pairs": 50,
                                      "slurm.timeout_min": 1, "slurm.max_requeues": 8,
                                      "slurm.log_dir": str(tmp_path / "logs")}), timeout=900)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    starts = json.loads((run_dir / "starts.json").read_text())
    print(f"requeue: {len(starts)} starts at epochs {[s['start_epoch'] for s in starts]} in {elapsed:.0f} s")
    assert len(starts) >= 2, f"the job was never requeued: {starts}"
    assert all(s["slurm_job_id"] == starts[0]["slurm_job_id"] for s in starts), starts
    assert [s["slurm_restart_count"] for s in starts] == list(range(len(starts))), starts
    assert all(b["start_epoch"] > a["start_epoch"] for a, b in zip(starts, starts[1:])), starts
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, epochs + 1))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and "val/img2rec_R@1" in metrics
