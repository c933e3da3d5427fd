"""DDP setup (the process group), and a watchdog that makes a failure on one rank end every rank within seconds.

The collectives themselves (gathers, ``all_reduce_mean``, ``is_dist``) live in :mod:`malm.models.ops`,
which the model, the losses and the trainer share.

Why the watchdog: when one rank dies (an exception, a NaN check, an OOM), its peers sit in their next
collective until the process-group timeout -- 10 minutes for NCCL, 30 for gloo by default -- holding
their GPUs while doing nothing. torchrun's agent kills the surviving workers, but on Slurm (srun, or
submitit) every task is an independent process: srun without ``--kill-on-bad-exit`` lets the others
run on, and NCCL does not notice a vanished peer by itself.

``FailureWatchdog`` uses the c10d store the process group already has (a TCPStore hosted by rank 0):
the rank that fails writes ``rank R: <ExcType>: <message>`` under a key, and a daemon thread on every
rank polls that key every ``interval_s``; a rank that sees it set by another rank -- or that can no
longer reach the store, because rank 0, which hosts it, has died -- prints the reason to stderr and
ends itself with ``os._exit(1)``, which works even while its main thread is stuck in a collective.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from malm.models.ops import is_dist


def setup_distributed(device_name: str = "auto", timeout_s: float | None = None
                      ) -> tuple[torch.device, int, int]:
    """``(device, rank, world_size)`` of this process.

    Reads ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (set by torchrun, or by submitit's
    ``TorchDistributedEnvironment`` on Slurm; absent means a single process). ``device_name`` is
    ``auto`` (cuda when available), ``cpu`` or ``cuda``; with CUDA each rank uses ``cuda:LOCAL_RANK``.
    When ``WORLD_SIZE > 1`` the process group is initialised (nccl on CUDA, gloo on CPU) unless it
    already is; ``timeout_s`` overrides the process group's collective timeout.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is available "
                               "(use train.device=auto or cpu)")
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {n} CUDA device(s) are visible: "
                               "more tasks per node than GPUs?")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device_name == "cpu":
        device = torch.device("cpu")
    else:
        raise ValueError(f"unknown device {device_name!r} (expected auto, cpu or cuda)")

    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s) if timeout_s else None)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return device, rank, world


def destroy() -> None:
    """Destroy the process group, if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class FailureWatchdog:
    """``with FailureWatchdog(): ...`` -- a failure on any rank ends every rank within seconds.

    * An exception leaving the block on this rank is recorded in the store (the first failure wins)
      and re-raised. The rank then waits briefly (at most ``max(2, 4 * interval_s)`` s) until the
      peers have read the message: rank 0 hosts the store, and its exit takes the message with it.
    * A daemon thread polls the store every ``interval_s``; when another rank's failure shows up, or
      the store can no longer be reached, it prints the reason to stderr and calls ``os._exit(1)``.
    * After a failure on this rank the thread only makes sure the process ends: one that has not
      exited ``exit_grace_s`` after the failure (a teardown that hangs) is ended with ``os._exit(1)``.
    * A clean exit waits until every rank has left its block cleanly (a barrier through the store,
      still watched), so a rank that finishes early -- rank 0 above all, whose exit takes the store
      with it -- is not mistaken for a failure by the others; then the thread stops.

    Does nothing in a single process. ``store`` defaults to the default process group's store.
    Not covered: a rank other than 0 killed without an exception (SIGKILL, OOM killer, segfault)
    writes no message; its peers then wait in their collective as before.
    """

    _uses = 0  # blocks entered by this process: every rank enters them in the same order

    def __init__(self, store: dist.Store | None = None, interval_s: float = 0.5,
                 exit_grace_s: float = 30.0, store_timeout_s: float = 60.0):
        self.interval_s, self.exit_grace_s = interval_s, exit_grace_s
        self.store_timeout_s = store_timeout_s  # a store that does not answer for this long is gone
        self._store = store
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._finishing = False  # leaving cleanly: rank 0's store may vanish without a failure
        self._failed_at: float | None = None  # time.monotonic() of this rank's own failure

    # ---------------------------------------------------------------------------- context manager
    def __enter__(self) -> FailureWatchdog:
        if not is_dist():
            return self
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if self._store is None:
            self._store = dist.distributed_c10d._get_default_store()
        FailureWatchdog._uses += 1
        # torchrun restarts reuse its store: keys of an earlier attempt must not count
        prefix = f"malm/watchdog/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}.{self._uses}"
        self.key_failed, self.key_seen, self.key_done = (
            f"{prefix}/failed", f"{prefix}/seen", f"{prefix}/done")
        try:  # the thread gets its own connection to the store
            poll_store = self._store.clone()
            poll_store.set_timeout(timedelta(seconds=self.store_timeout_s))
        except Exception:  # noqa: BLE001 -- a store type without clone()
            poll_store = self._store
        self._thread = threading.Thread(target=self._watch, args=(poll_store,),
                                        name="malm-failure-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._thread is None:
            return False
        if exc_type is None or (issubclass(exc_type, SystemExit) and exc.code in (0, None)):
            self._finish_cleanly()
        else:
            self._report(f"rank {self.rank}: {exc_type.__name__}: {exc}"[:2000])
        return False  # re-raise

    # ---------------------------------------------------------------------------------- internals
    def _watch(self, store: dist.Store) -> None:
        while not self._stop.wait(self.interval_s):
            if self._failed_at is not None:  # this rank failed: it only has to end
                if time.monotonic() - self._failed_at > self.exit_grace_s:
                    self._die(f"this rank failed {self.exit_grace_s:g} s ago and has not exited")
                continue
            try:
                failed = store.get(self.key_failed).decode() if store.check([self.key_failed]) else ""
            except Exception as e:  # noqa: BLE001 -- any error means the store is gone
                if self._finishing or self._stop.is_set():
                    return  # rank 0 left after every rank finished
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                self._die(f"cannot reach the c10d store ({why}): rank 0, which hosts it, has died")
            if failed and self._failed_at is None:
                try:
                    store.add(self.key_seen, 1)
                except Exception:  # noqa: BLE001
                    pass
                self._die(f"{failed.split(':', 1)[0]} failed: {failed}")

    def _die(self, reason: str) -> None:
        sys.stderr.write(f"\n[malm FailureWatchdog] rank {self.rank}/{self.world}: {reason}\n"
                         f"[malm FailureWatchdog] rank {self.rank}: exiting with code 1\n")
        sys.stderr.flush()
        os._exit(1)

    def _report(self, msg: str) -> None:
        """Record this rank's failure (best effort); let the peers read it before going on."""
        self._failed_at = time.monotonic()
        try:
            first = self._store.compare_set(self.key_failed, "", msg).decode()
            if first != msg:  # another rank failed first: this error probably follows from it
                sys.stderr.write(f"[malm FailureWatchdog] rank {self.rank}: "
                                 f"{first.split(':', 1)[0]} failed before this rank: {first}\n")
                return
            deadline = time.monotonic() + max(2.0, 4 * self.interval_s)
            while self._store.add(self.key_seen, 0) < self.world - 1 and time.monotonic() < deadline:
                time.sleep(0.05)
        except Exception:  # noqa: BLE001 -- the store may be gone already
            pass

    def _finish_cleanly(self) -> None:
        self._finishing = True
        try:
            self._store.add(self.key_done, 1)
            while self._store.add(self.key_done, 0) < self.world:  # the thread still watches
                time.sleep(min(self.interval_s, 0.1))
        except Exception:  # noqa: BLE001 -- rank 0 saw every rank done and left with the store
            pass
        self._stop.set()
        self._thread.join()
        self._thread = None
