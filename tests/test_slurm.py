"""The launcher against the real local Slurm cluster (``bash slurm/cluster.sh start``).

These tests fail, never skip, when the cluster is not running: in CI a skipped Slurm test would
hide a broken cluster. Each job gets a test-run-unique name; leftovers are scancelled at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import slurm_jobs
from malm.config import SlurmConfig
from malm.launch.submit import JobFailed, submit, submit_and_wait, submit_array, wait_for

pytestmark = pytest.mark.slurm

TESTS_DIR = Path(__file__).resolve().parent
RUN_NAME = f"malm-test-{uuid.uuid4().hex[:8]}"


def _cluster_problem() -> str | None:
    """None when the controller answers, the node can run jobs and accounting answers."""
    try:
        node = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True,
                              timeout=20)
        acct = subprocess.run(["sacct", "-n", "-X", "-S", "now"], capture_output=True, text=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run sinfo/sacct: {exc}"
    if node.returncode != 0:
        return f"sinfo failed: {node.stderr.strip()}"
    states = node.stdout.split()
    if not any(s in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no usable node (sinfo states: {states})"
    if acct.returncode != 0:
        return f"sacct failed (slurmdbd down?): {acct.stderr.strip()}"
    return None


@pytest.fixture(scope="module", autouse=True)
def cluster():
    problem = _cluster_problem()
    if problem:
        pytest.fail(f"the local Slurm cluster is not running: {problem}. "
                    "Start it with `bash slurm/cluster.sh start` (as root).", pytrace=False)
    yield
    subprocess.run(["scancel", f"--name={RUN_NAME}"], check=False)


@pytest.fixture(autouse=True)
def job_pythonpath(monkeypatch):
    """Jobs unpickle ``slurm_jobs.*`` by reference; they inherit this PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH")) if p))


def slurm_cfg(**kw) -> SlurmConfig:
    return SlurmConfig(**{"executor": "slurm", "timeout_min": 2, "mem_gb": 0.5, **kw})


def test_toy_job_returns_its_value(tmp_path):
    result = submit_and_wait(slurm_jobs.add, 2, 3, cfg=slurm_cfg(), folder=tmp_path,
                             name=RUN_NAME, poll_s=1, timeout_s=120)
    assert result == 5


def test_job_array(tmp_path):
    jobs = submit_array(slurm_jobs.square, [(3,), (4,)], cfg=slurm_cfg(), folder=tmp_path,
                        name=RUN_NAME)
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1, f"expected one job array, got {[j.job_id for j in jobs]}"
    assert [job.job_id.split("_")[1] for job in jobs] == ["0", "1"]
    assert [wait_for(job, poll_s=1, timeout_s=120) for job in jobs] == [9, 16]


def test_checkpointable_job_requeues_and_resumes(tmp_path):
    """timeout_min=1: Slurm sends USR2 10-40 s in (see malm.launch.submit.signal_delay_s), submitit
    checkpoints + requeues; the job needs ~50 s of work, so it must resume at least once."""
    progress = tmp_path / "progress.json"
    counter = slurm_jobs.CountTo(str(progress), n=50, step_s=1.0)
    t0 = time.monotonic()
    state = submit_and_wait(counter, cfg=slurm_cfg(timeout_min=1, max_requeues=4),
                            folder=tmp_path, name=RUN_NAME, poll_s=1, timeout_s=420)
    print(f"requeue test: starts={state['starts']} jobs={state['job_ids']} "
          f"in {time.monotonic() - t0:.0f} s")
    assert state["count"] == 50
    assert len(state["starts"]) >= 2, f"never requeued: {state}"
    assert state["starts"][1] > 0, f"the requeued run did not resume: {state}"
    assert state["starts"] == sorted(state["starts"]), f"progress went backwards: {state}"
    assert len(set(state["job_ids"])) == 1, "requeue keeps the job id"
    assert json.loads(progress.read_text())["count"] == 50


def test_cancelled_job_raises_job_failed(tmp_path):
    with pytest.raises(JobFailed) as info:
        submit_and_wait(slurm_jobs.cancel_myself, cfg=slurm_cfg(), folder=tmp_path,
                        name=RUN_NAME, poll_s=1, timeout_s=120)
    err = info.value
    assert err.state == "CANCELLED"
    assert err.job_id.isdigit() and err.job_id in str(err)
    assert str(err.stdout) in str(err) and str(err.stderr) in str(err)
    assert err.stdout.parent == tmp_path


def test_failing_job_raises_job_failed_with_trace(tmp_path):
    with pytest.raises(JobFailed) as info:
        submit_and_wait(slurm_jobs.fail, "boom-from-the-job", cfg=slurm_cfg(), folder=tmp_path,
                        name=RUN_NAME, poll_s=1, timeout_s=120)
    assert info.value.state == "FAILED"
    assert "boom-from-the-job" in str(info.value)


def test_wait_timeout_names_the_running_job(tmp_path):
    job = submit(time.sleep, 60, cfg=slurm_cfg(), folder=tmp_path, name=RUN_NAME)
    try:
        with pytest.raises(JobFailed, match=f"job {job.job_id}: still (PENDING|RUNNING)"):
            wait_for(job, poll_s=1, timeout_s=3)
    finally:
        job.cancel(check=False)
