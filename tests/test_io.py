"""The one atomic-write helper (malm.io): readable permissions, nothing torn, nothing left over."""

from __future__ import annotations

import os
import stat

import pytest

from malm import io


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        expected = 0o666 & ~0o022
        io.atomic_write_json(tmp_path / "a.json", {"x": 1})
        with io.atomic_path(tmp_path / "b.npz", suffix=".npz") as tmp:
            assert tmp.suffix == ".npz" and tmp.parent == tmp_path
            tmp.write_bytes(b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").read_text() == '{\n  "x": 1\n}\n'
    assert _mode(tmp_path / "a.json") == expected == _mode(tmp_path / "b.npz")  # 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    io.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_every_writer_goes_through_the_helper(tmp_path):
    """Checkpoints, embeddings, figures, CSVs and configs land with the umask's mode."""
    import numpy as np
    import pandas as pd

    from malm import config as C
    from malm.eval.emb_file import save_embeddings
    from malm.io import save_checkpoint
    from malm.io import write_table as _write_csv
    from malm.report import figures as plots

    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "c.pt", {"a": 1})
        save_embeddings(tmp_path / "e.npz", np.zeros((2, 3)), np.zeros((2, 3)), np.asarray(["a", "b"]))
        fig, _ = plots.plt.subplots()
        plots.save(fig, tmp_path / "f.png")
        _write_csv(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
        C.save(C.Config(), tmp_path / "config.yaml")
    finally:
        os.umask(old)
    files = sorted(tmp_path.iterdir())
    assert [p.name for p in files] == ["c.pt", "config.yaml", "e.npz", "f.png", "t.csv"]
    assert {_mode(p) for p in files} == {0o644}


def test_fingerprints_are_relative_sorted_and_order_free(tmp_path):
    """The one sha256 helper every staleness key hashes with (the rule in malm.io's docstring)."""
    import hashlib

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "b.py").write_bytes(b"b")
    (tmp_path / "a.txt").write_bytes(b"a")
    fp = io.fingerprint_files([tmp_path / "pkg" / "b.py", tmp_path / "a.txt"], tmp_path)
    assert list(fp) == ["a.txt", "pkg/b.py"] and fp["a.txt"] == hashlib.sha256(b"a").hexdigest()
    assert io.sha256_file(tmp_path / "a.txt") == io.sha256_bytes(b"a") == fp["a.txt"]
    assert io.digest({"x": 1, "y": [1, 2]}) == io.digest({"y": [1, 2], "x": 1})
    assert io.digest({"x": 1, "y": [1, 2]}) != io.digest({"x": 2, "y": [1, 2]})
