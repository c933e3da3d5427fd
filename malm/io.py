"""Atomic file writes: the one helper every writer of the suite goes through.

A reader (DVC, a resumed run, a notebook) never sees half a file: the content goes to a temporary
file in the target's folder, is flushed to disk, given the permissions a plain ``open(path, "w")``
would give (``tempfile.mkstemp`` creates 0600 files, which would hide results from the group on a
shared cluster), and renamed onto the target. On any error the temporary file is removed and the
old target, if any, is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    """The process umask (read by setting and restoring it; read per write, so a umask changed
    after import is honoured)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        os.chmod(tmp, 0o666 & ~_umask())
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
