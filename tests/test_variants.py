"""The variant files' layout (issue "Table 1 in one harness"): top-level ``baselines/`` holds exactly
the systems of Table 1, ``ablations/`` the rest; the package reaches both through its links, a
non-editable install ships every variant, and ``malm variants`` groups them by the table their
``paper:`` key names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from malm import variants
from malm.config import ConfigError

TABLE1 = {"baseline", "ht", "tfood", "malm"}


def test_baselines_folder_holds_the_table_1_systems_and_ablations_the_rest():
    reg = variants.registry()
    folder = {name: v.source.parent.name for name, v in reg.items()}
    assert {n for n, f in folder.items() if f == "baselines"} == TABLE1
    for name, v in reg.items():
        # the folder agrees with the file's own metadata (code reads only the metadata)
        assert ("table1" in v.tables) == (folder[name] == "baselines"), name
    assert (REPO / "ablations" / "grids").is_dir()
    for link in ("baselines", "ablations"):
        path = REPO / "malm" / "variants" / link
        assert path.is_symlink() and path.resolve() == (REPO / link).resolve()


def test_malm_variants_groups_by_table(capsys):
    from malm.cli import main

    assert main(["variants"]) == 0
    text = capsys.readouterr().out
    blocks = {b.splitlines()[0]: b for b in text.strip().split("\n\n")}
    assert list(blocks) == [*variants.TABLES.values(), variants.NO_TABLE]
    names = {title: {line.split()[0] for line in block.splitlines()[1:]} for title, block in blocks.items()}
    assert names[variants.TABLES["table1"]] == TABLE1
    assert {"mask_0.25", "mask_0.5", "mask_0.75", "mask_0.9", "malm"} == names[variants.TABLES["table3"]]
    assert "global_only" in names[variants.NO_TABLE] and "malm" not in names[variants.NO_TABLE]
    assert set().union(*names.values()) == set(variants.registry())


def test_a_paper_key_outside_the_tables_is_refused(tmp_path):
    (tmp_path / "x.yaml").write_text("display: X\npaper: {table9: row}\noverlay: {}\n")
    with pytest.raises(ConfigError, match="table9"):
        variants.registry((tmp_path,))


def test_a_non_editable_install_ships_every_variant(tmp_path):
    """``pip install .`` (a built wheel, no link back to the checkout) lists the same variants."""
    # built from a copy (links kept as links), so the build leaves nothing in the checkout
    src, target = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("malm", "baselines", "ablations"):
        shutil.copytree(REPO / name, src / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, env=env, cwd=tmp_path)
    shipped = target / "malm" / "variants"
    for folder in ("baselines", "ablations"):
        assert (shipped / folder).is_dir() and not (shipped / folder).is_symlink()
    code = "from malm import variants; print(variants.HERE); print(*sorted(variants.registry()))"
    here, names = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                 text=True, env={**env, "PYTHONPATH": str(target)},
                                 cwd=tmp_path).stdout.splitlines()
    assert Path(here).resolve() == shipped.resolve()
    assert names.split() == sorted(variants.registry())
