"""File output of the suite: the one atomic-write helper every writer goes through, the
checkpoint files that training writes and evaluation reads, and the sha256 fingerprint helpers of
every staleness key (and the rule that decides which key judges what, below).

A reader (DVC, a resumed run, a notebook) never sees half a file: the content goes to a temporary
file in the target's folder, is flushed to disk, given the permissions a plain ``open(path, "w")``
would give (``tempfile.mkstemp`` creates 0600 files, which would hide results from the group on a
shared cluster), and renamed onto the target. On any error the temporary file is removed and the
old target, if any, is left as it was.

This module sits below every other one (it imports nothing from the package; torch and matplotlib
only inside the functions that need them), so the config, the data cache, evaluation and the
report can all write through it.

Staleness (the one rule; the sha256 helpers below are what every judge hashes with). Each artifact
has one owner, the code that writes it, and the owner alone decides whether it is current: it
records a key beside the artifact when it writes it and compares that with the key computed now.
A key is made of (1) the config fields that shape the artifact, (2) the identity of its inputs,
and (3) the identity of its writer: a version constant bumped by hand when the output changes on
purpose, plus the sha256 of the writer's code and data files. A consumer never re-judges what its
input was made from: it takes the input's identity from the input's owner (its content digest or
key). So an edit of the generator reaches the cache and the runs only if it changes the
synthetic files' bytes. The owners:

=====================  ======================================  ==========================================
artifact               owner (recorded key)                    key
=====================  ======================================  ==========================================
synthetic root         ``malm.synth.write.generate``           output config + ``generator_fingerprint``
                       (``.synth_complete``)                   (GENERATOR_VERSION, data files, code)
data cache             ``malm.data.cache.is_cached``           DataConfig fields + inputs (a synthetic
                       (``manifest.json`` ``key``)             root: its marker's content digest; else
                                                               size+mtime) + CACHE_VERSION + cache code
training run           ``malm.train.checkpoint.resume_state``  config identity + ``input_fingerprints``
                       (``checkpoint.pt``)                     (pretrained weights, cache key) + code
=====================  ======================================  ==========================================

DVC is not a judge of these artifacts: its deps decide only which commands a ``dvc repro`` runs
(and in which order), and every command asks the owner again, doing nothing when the recorded key
still matches. Outside DVC (the CLI, tests, grids, notebooks) the same owners give the same answers.
A grid's cell state (``malm.launch.grid``) is a scheduling view over the runs: it compares the
run's stored config only, so it should defer to the run's owner for inputs and code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

# Files of a training run directory that evaluation reads back.
CHECKPOINT = "checkpoint.pt"             # the last finished epoch (resume)
BEST_CHECKPOINT = "checkpoint_best.pt"   # the best epoch on validation (T-Food's saving criteria)
CHECKPOINT_CHOICES = {"best": BEST_CHECKPOINT, "last": CHECKPOINT}
# The synthetic generator's completion marker (malm.synth.write), which the data cache reads back.
SYNTH_COMPLETE = ".synth_complete"


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` would give under the process umask (read per call, so a
    umask changed after import is honoured)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write it inside the ``with`` block. On success it
    is fsynced, chmod-ed to the umask's default mode and renamed onto ``path``.

    ``suffix`` lets writers that choose a format by extension (``np.savez``, ``fig.savefig``)
    see the right one, e.g. ``suffix=".npz"``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> int:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_table(df: Any, path: str | os.PathLike) -> Path:
    """A pandas DataFrame as ``.parquet`` or (any other suffix) CSV, without the index."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    return path


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """A matplotlib figure as an image (format from the suffix, 120 dpi, tight), then closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- fingerprints
def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint_files(paths: Iterable[str | os.PathLike], root: str | os.PathLike) -> dict[str, str]:
    """{``root``-relative posix path: sha256} of ``paths`` (files under ``root``), sorted by path:
    the code and data fingerprints of every staleness key (see the module docstring)."""
    root = Path(root).resolve()
    out = {Path(p).resolve().relative_to(root).as_posix(): sha256_file(p) for p in paths}
    return dict(sorted(out.items()))


def digest(obj: Any) -> str:
    """sha256 of ``obj``'s canonical JSON (sorted keys): one string standing for a whole key."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


# -------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` through :func:`atomic_path`: never a torn checkpoint."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``: a checkpoint holds tensors, numbers, strings and dicts only."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torn/foreign files: say which file
        raise RuntimeError(f"cannot load checkpoint {path}: {exc}") from exc
