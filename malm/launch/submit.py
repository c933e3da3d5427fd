"""The one submit function of the suite: Slurm, a local subprocess or in-process, via submitit.

    result = submit_and_wait(train, cfg, cfg=cfg.slurm, folder=run_dir / "slurm", name="train")
    jobs = submit_array(evaluate, [(run_a,), (run_b,)], cfg=cfg.slurm, folder=grid_dir / "slurm")
    results = [wait_for(job) for job in jobs]

The executor is chosen explicitly from ``SlurmConfig.executor`` (slurm | local | debug), never by
submitit's auto-detection (it picks Slurm whenever ``srun`` is on PATH, even with no controller).
Long jobs subclass :class:`Checkpointable`: when Slurm signals the coming time limit (or a
preemption) submitit calls ``checkpoint()`` and requeues the job, which then resumes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from malm.config import SlurmConfig

EXECUTORS = ("slurm", "local", "debug")

# Slurm states (first word of sacct's State) after which no result will come. PREEMPTED is left
# out, as submitit does: with PreemptMode=REQUEUE the job comes back.
FAILURE_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "REVOKED",
    "TIMEOUT", "INTERRUPTED",  # the last: a LocalJob killed by a signal
})


class JobFailed(RuntimeError):
    """A job ended without a result: cancelled, failed, timed out without requeue, node failure."""

    def __init__(self, job: submitit.Job, state: str, detail: str = "", reason: str = "") -> None:
        self.job_id = str(job.job_id)
        self.state = state
        self.stdout = Path(job.paths.stdout)
        self.stderr = Path(job.paths.stderr)
        message = (f"job {self.job_id}: {reason or f'ended {state} without a result'}\n"
                   f"  stdout: {self.stdout}\n  stderr: {self.stderr}")
        if detail:
            message += f"\n{detail}"
        super().__init__(message)


class Checkpointable(submitit.helpers.Checkpointable):
    """Base of callables that survive Slurm time limits and preemption.

    Implement ``__call__`` so that it resumes from its own saved progress (the trainer resumes
    from its run dir's last checkpoint). On the USR2 warning signal submitit calls
    ``checkpoint(*args, **kwargs)`` with the original call's arguments, pickles the returned
    submission, runs ``scontrol requeue``; the requeued job calls it again. At most
    ``SlurmConfig.max_requeues`` time-outs are requeued; preemptions do not count.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def signal_delay_s(timeout_min: int) -> int:
    """Seconds before the time limit at which Slurm should send USR2 (``--signal=USR2@N``).

    slurmctld tests time limits every 30 s and sends the signal at the first test where
    ``now + N + 30 >= end``, i.e. between N and N + 30 s before the limit, and kills the job
    0-30 s after it. submitit's default N=90 is right for long jobs; with a 1-2 minute limit it
    would signal the job in its first seconds, possibly before submitit's handler is installed
    (the default USR2 action then kills the job). N = limit - 40 s keeps the signal at least 10 s
    after the start: for timeout_min=1, N=20 and the signal comes 10-40 s into the job.
    """
    return max(10, min(90, timeout_min * 60 - 40))


def executor_params(cfg: SlurmConfig, name: str | None = None) -> dict[str, Any]:
    """``SlurmConfig`` -> AutoExecutor parameters (generic ones, then ``slurm_``-prefixed)."""
    params: dict[str, Any] = {
        "timeout_min": cfg.timeout_min,
        "nodes": cfg.nodes,
        "tasks_per_node": cfg.tasks_per_node,
        "cpus_per_task": cfg.cpus_per_task,
        "mem_gb": cfg.mem_gb,
        "slurm_array_parallelism": cfg.array_parallelism,
        "slurm_signal_delay_s": (cfg.signal_delay_s if cfg.signal_delay_s is not None
                                 else signal_delay_s(cfg.timeout_min)),
    }
    if cfg.gpus_per_node > 0:  # a GPU request on a CPU-only node is a gres error
        params["gpus_per_node"] = cfg.gpus_per_node
    if cfg.nodes * cfg.tasks_per_node > 1:
        # DDP ranks are separate srun tasks: one that dies ends the step instead of leaving its
        # peers in a collective (the trainer's FailureWatchdog covers a rank that raises)
        params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
    if name:
        params["name"] = name
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cfg, key):
            params[f"slurm_{key}"] = getattr(cfg, key)
    return params


def make_executor(cfg: SlurmConfig, folder: str | Path, name: str | None = None,
                  **overrides: Any) -> submitit.Executor:
    """The executor named by ``cfg.executor`` with ``cfg``'s resources.

    ``overrides`` are extra AutoExecutor parameters, e.g. ``slurm_signal_delay_s=30``. Jobs run
    ``python -m submitit...`` with this interpreter (``sys.executable``) and inherit the
    environment (``sbatch --export=ALL``) and the working directory.
    """
    if cfg.executor not in EXECUTORS:
        raise ValueError(f"slurm.executor must be one of {', '.join(EXECUTORS)}, "
                         f"got {cfg.executor!r}")
    max_timeouts = {"slurm_max_num_timeout": cfg.max_requeues,
                    "local_max_num_timeout": cfg.max_requeues}
    executor = submitit.AutoExecutor(folder=folder, cluster=cfg.executor, **max_timeouts)
    executor.update_parameters(**{**executor_params(cfg, name), **overrides})
    return executor


def submit(fn: Callable, *args: Any, cfg: SlurmConfig, folder: str | Path,
           name: str | None = None, **overrides: Any) -> submitit.Job:
    """Submit ``fn(*args)`` and print where it went; does not wait."""
    job = make_executor(cfg, folder, name, **overrides).submit(fn, *args)
    _announce(job, name or getattr(fn, "__name__", type(fn).__name__), cfg.executor)
    return job


def submit_and_wait(fn: Callable, *args: Any, cfg: SlurmConfig, folder: str | Path,
                    name: str | None = None, poll_s: float = 5.0,
                    timeout_s: float | None = None, **overrides: Any) -> Any:
    """Submit ``fn(*args)``, block until it ends, return its result or raise :class:`JobFailed`."""
    job = submit(fn, *args, cfg=cfg, folder=folder, name=name, **overrides)
    return wait_for(job, poll_s=poll_s, timeout_s=timeout_s)


def submit_array(fn: Callable, args_list: Iterable[Sequence[Any]], *, cfg: SlurmConfig,
                 folder: str | Path, name: str | None = None,
                 **overrides: Any) -> list[submitit.Job]:
    """Submit ``fn(*args)`` for every ``args`` in ``args_list`` as ONE Slurm job array
    (at most ``cfg.array_parallelism`` tasks at once); wait with :func:`wait_for`."""
    executor = make_executor(cfg, folder, name, **overrides)
    with executor.batch():
        jobs = [executor.submit(fn, *args) for args in args_list]
    for job in jobs:
        _announce(job, name or getattr(fn, "__name__", type(fn).__name__), cfg.executor)
    return jobs


def wait_for(job: submitit.Job, poll_s: float = 5.0, timeout_s: float | None = None) -> Any:
    """Block until ``job`` ends; return its result or raise :class:`JobFailed`.

    Polls the scheduler every ``poll_s`` (one ``sacct`` call on Slurm), so a cancelled or failed
    job is noticed within ``poll_s`` instead of submitit's up-to-10-minute cache. ``timeout_s``
    bounds the wait (the job is left running). Requeued / pending jobs are waited for.
    """
    start = time.monotonic()
    while not job.done():
        state = job_state(job)
        if state in FAILURE_STATES and not _has_result(job):
            raise JobFailed(job, state, _stderr_tail(job))
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise JobFailed(job, state, reason=f"still {state} after {timeout_s:.0f} s of "
                            f"waiting (left as is; scancel {job.job_id} stops it)")
        time.sleep(poll_s)
    state = job_state(job)
    if state in FAILURE_STATES and not _has_result(job):
        raise JobFailed(job, state, _stderr_tail(job))
    try:
        return job.result()
    except FailedJobError as exc:  # the function raised (sacct may still lag at RUNNING)
        raise JobFailed(job, "FAILED", str(exc), reason="raised an exception") from exc
    except UncompletedJobError as exc:  # submitit gave up on the job
        raise JobFailed(job, state, str(exc), reason=f"gave no result (state {state})") from exc


def job_state(job: submitit.Job) -> str:
    """The scheduler's state, first word upper-case ('CANCELLED by 0' -> 'CANCELLED')."""
    if isinstance(job, submitit.SlurmJob):
        state = job.get_info(mode="force").get("State") or "UNKNOWN"  # one sacct call
    else:
        state = job.state
    return (state.split() or ["UNKNOWN"])[0].upper()


def _has_result(job: submitit.Job) -> bool:
    if isinstance(job, submitit.DebugJob):
        return job.done()  # runs in-process on demand
    return Path(job.paths.result_pickle).exists()


def _stderr_tail(job: submitit.Job, lines: int = 15) -> str:
    try:
        text = Path(job.paths.stderr).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "  last stderr lines:\n" + "\n".join(f"    {line}" for line in text) if text else ""


def _announce(job: submitit.Job, name: str, executor: str) -> None:
    print(f"[malm.launch] {name}: {executor} job {job.job_id}, log {job.paths.stdout}",
          flush=True)
