"""malm.train.distributed: single-process setup, and FailureWatchdog across two real gloo ranks.

The two-rank tests start the ranks as plain subprocesses, not under torchrun: like two Slurm tasks
(srun without --kill-on-bad-exit), nothing outside the ranks themselves ends a surviving peer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from malm.models.ops import all_reduce_mean, is_dist
from malm.train.distributed import FailureWatchdog, setup_distributed

REPO = Path(__file__).resolve().parents[1]
DIST_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

WORKER = r'''
import sys, threading, time
import torch
import torch.distributed as dist
from malm.models.ops import all_reduce_mean
from malm.train.distributed import FailureWatchdog, destroy, setup_distributed

mode, fail_rank = sys.argv[1], int(sys.argv[2])
device, rank, world = setup_distributed("cpu", timeout_s=300)  # a hang would last 5 min
assert (device.type, world) == ("cpu", 2), (device, world)
with FailureWatchdog(interval_s=0.5, exit_grace_s=3):
    for step in range(10_000 if mode != "clean" else 20):
        if mode != "clean" and rank == fail_rank and step == 10:  # ~1 s in
            if mode == "fail_hang":  # a teardown that never ends: only the watchdog ends this rank
                threading.Thread(target=time.sleep, args=(600,), daemon=False).start()
            print(f"RAISE {time.time()}", flush=True)
            raise RuntimeError("boom")
        # the peer of the failing rank enters this collective at step 10 and never gets an answer
        mean = all_reduce_mean(torch.tensor([float(rank)]))
        assert mean.item() == 0.5, mean
        time.sleep(0.1)
    if mode == "clean" and rank == 1:
        time.sleep(2.0)  # rank 0, which hosts the store, finishes first: not a failure
alive = [t.name for t in threading.enumerate() if t.name == "malm-failure-watchdog"]
print(f"WATCHDOG_THREADS {len(alive)}", flush=True)
destroy()
print("CLEAN_EXIT", flush=True)
'''


@dataclass
class Run:
    """Two ranks started as independent processes, like two Slurm tasks."""
    mode: str
    fail_rank: int
    procs: list[subprocess.Popen] = field(default_factory=list)
    exit_times: list[float | None] = field(default_factory=lambda: [None, None])
    outs: list[str] = field(default_factory=list)
    errs: list[str] = field(default_factory=list)

    @property
    def codes(self) -> list[int | None]:
        return [p.returncode for p in self.procs]

    def check_ended(self) -> None:
        assert None not in self.exit_times, "a rank was still running after the time limit:\n" + \
            "\n".join(f"--- rank {i}\n{o}\n{e}" for i, (o, e) in enumerate(zip(self.outs, self.errs)))


def _start(run: Run, tmp: Path, port: int) -> None:
    (tmp / "worker.py").write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC")}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
               PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for rank in range(2):
        with open(tmp / f"rank{rank}.out", "w") as out, open(tmp / f"rank{rank}.err", "w") as err:
            run.procs.append(subprocess.Popen(
                [sys.executable, "worker.py", run.mode, str(run.fail_rank)], cwd=tmp, stdout=out,
                stderr=err, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """The three two-rank scenarios, run side by side (starting torch dominates their time).

    Every process gets at most 90 s: a hang fails its test instead of blocking the suite.
    """
    runs = {"rank1_fails": Run("fail_hang", 1), "rank0_fails": Run("fail", 0),
            "clean": Run("clean", -1)}
    socks = [socket.socket() for _ in runs]
    for s in socks:  # three distinct free ports
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    dirs = {name: tmp_path_factory.mktemp(name) for name in runs}
    for (name, run), port in zip(runs.items(), ports):
        _start(run, dirs[name], port)
    deadline = time.time() + 90
    try:
        while time.time() < deadline and any(None in r.exit_times for r in runs.values()):
            for r in runs.values():
                for i, p in enumerate(r.procs):
                    if r.exit_times[i] is None and p.poll() is not None:
                        r.exit_times[i] = time.time()
            time.sleep(0.02)
    finally:
        for r in runs.values():
            for p in r.procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
    for name, r in runs.items():
        r.outs = [(dirs[name] / f"rank{i}.out").read_text() for i in range(2)]
        r.errs = [(dirs[name] / f"rank{i}.err").read_text() for i in range(2)]
    return runs


# ---------------------------------------------------------------------------------- one process
@pytest.fixture
def no_dist_env(monkeypatch):
    for k in DIST_VARS:
        monkeypatch.delenv(k, raising=False)


def test_setup_single_process(no_dist_env):
    assert setup_distributed("cpu") == (torch.device("cpu"), 0, 1)
    device, rank, world = setup_distributed("auto")
    assert (rank, world) == (0, 1)
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not is_dist()
    with FailureWatchdog() as wd:  # a no-op: no thread
        x = torch.tensor([1.0, 3.0])
        y = all_reduce_mean(x)
    assert wd._thread is None
    assert torch.equal(x, y) and y is not x


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_setup_cuda_without_cuda_is_a_clear_error(no_dist_env):
    with pytest.raises(RuntimeError, match="no CUDA device"):
        setup_distributed("cuda")


def test_setup_unknown_device(no_dist_env):
    with pytest.raises(ValueError, match="unknown device"):
        setup_distributed("tpu")


# ------------------------------------------------------------------------------------ two ranks
def _raise_time(stdout: str) -> float:
    return float(next(line.split()[1] for line in stdout.splitlines() if line.startswith("RAISE")))


def test_failure_on_rank1_ends_rank0(runs):
    """Rank 1 raises while rank 0 waits in an all_reduce rank 1 never joins.

    Rank 1 also never finishes exiting (a stuck teardown: its gloo sockets stay open, so gloo cannot
    notice the failure either, as with NCCL): only the watchdogs end the two ranks -- rank 0 on
    reading rank 1's failure, rank 1 when its ``exit_grace_s`` (3 s here) has passed.
    """
    r = runs["rank1_fails"]
    r.check_ended()
    t_raise = _raise_time(r.outs[1])
    print(f"rank 1 failed: rank 0 exited {r.exit_times[0] - t_raise:.2f} s and rank 1 "
          f"{r.exit_times[1] - t_raise:.2f} s after the raise")
    assert r.codes[0] != 0 and r.codes[1] != 0, (r.codes, r.errs)
    assert max(r.exit_times) - t_raise < 20, (r.exit_times, t_raise)
    assert "[malm FailureWatchdog] rank 0/2: rank 1 failed: rank 1: RuntimeError: boom" in r.errs[0]
    assert "RuntimeError: boom" in r.errs[1]
    assert "[malm FailureWatchdog] rank 1/2: this rank failed 3 s ago" in r.errs[1], r.errs[1]


def test_failure_on_rank0_the_store_host_ends_rank1(runs):
    """Rank 0 raises and exits, taking the TCPStore with it; rank 1 still ends promptly."""
    r = runs["rank0_fails"]
    r.check_ended()
    t_raise = _raise_time(r.outs[0])
    print(f"store host failed: rank 0 exited {r.exit_times[0] - t_raise:.2f} s and rank 1 "
          f"{r.exit_times[1] - t_raise:.2f} s after the raise")
    assert r.codes[0] != 0 and r.codes[1] != 0, (r.codes, r.errs)
    assert max(r.exit_times) - t_raise < 20, (r.exit_times, t_raise)
    assert "RuntimeError: boom" in r.errs[0]
    assert "[malm FailureWatchdog] rank 1/2: " in r.errs[1] and "rank 0" in r.errs[1], r.errs[1]


def test_no_failure_both_ranks_exit_cleanly(runs):
    """Rank 1 leaves its block 2 s after rank 0 (the store host): still a clean exit for both."""
    r = runs["clean"]
    r.check_ended()
    assert r.codes == [0, 0], r.errs
    for out, err in zip(r.outs, r.errs):
        assert "WATCHDOG_THREADS 0" in out and "CLEAN_EXIT" in out, (out, err)
        assert "FailureWatchdog" not in err, err
