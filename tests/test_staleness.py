"""Staleness has one owner per artifact (the rule in malm.io): an edited generator data file reaches
the synthetic data (its marker), the data cache (its key) and a training run (its input
fingerprints), each through its own key; a generator change that gives the same bytes reaches
nothing downstream."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import malm.synth
from malm import config as C
from malm.data.cache import cache_key, is_cached, load_manifest, prepare
from malm.io import CHECKPOINT, SYNTH_COMPLETE, load_checkpoint, save_checkpoint
from malm.synth import DATA_FILES, generator_changes, generator_fingerprint
from malm.synth.write import COMPLETE, generate
from malm.train.checkpoint import code_fingerprint, input_fingerprints, resume_state

SMALL = dict(n_train=12, n_val=4, n_test=4, image_size=16, max_images=1, multi_image_frac=0.0, workers=1)
# `malm data synth` in a fresh process whose generator reads its data files from argv[1]
SYNTH_CLI = ("import pathlib, sys, malm.synth; malm.synth.DATA_DIR = pathlib.Path(sys.argv[1]); "
             "from malm.cli import main; raise SystemExit(main(sys.argv[2:]))")


def malm_data_synth(data_dir: Path, out: Path) -> dict:
    flags = [f"synth.{k}={v}" for k, v in SMALL.items()]
    p = subprocess.run([sys.executable, "-c", SYNTH_CLI, str(data_dir), "data", "synth", "--out", str(out),
                        "--quiet", *flags], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def edited_data(tmp_path: Path) -> Path:
    """A copy of the generator's data files with the first ingredient's main colour changed."""
    d = tmp_path / "generator_data"
    d.mkdir()
    for name in DATA_FILES:
        shutil.copy(malm.synth.DATA_DIR / name, d / name)
    lines = (d / "ingredients.txt").read_text(encoding="utf-8").splitlines()
    i = next(k for k, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    *words, cat, c1, c2, tex, shape, size = lines[i].split()
    new = "#ff00ff" if c1.lower() != "#ff00ff" else "#00ff00"
    lines[i] = " ".join([*words, cat, new, c2, tex, shape, size])
    (d / "ingredients.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def configs(tmp_path: Path) -> tuple[C.SynthConfig, C.Config]:
    data = {"root": str(tmp_path / "synth"), "cache_dir": str(tmp_path / "cache"), "synthetic": True,
            "min_word_count": 1, "num_workers": 1}
    cfg = C.merge(C.Config(), {"data": data, "synth": SMALL, "model": {"image": {"pretrained": None}}})
    return cfg.synth, cfg


def outputs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != COMPLETE}


def finished_run(cfg: C.Config, run_dir: Path) -> None:
    """A finished run's checkpoint as the trainer writes it (config, inputs, code; no weights)."""
    save_checkpoint(run_dir / CHECKPOINT, {"config": C.to_dict(cfg), "inputs": input_fingerprints(cfg),
                                           "code": code_fingerprint(), "finished": True, "epoch": 1})


def test_an_edited_ingredients_file_makes_data_cache_and_run_stale(tmp_path, monkeypatch):
    synth, cfg = configs(tmp_path)
    root, run = Path(cfg.data.root), tmp_path / "run"
    first = generate(root, synth, progress=False)
    assert generate(root, synth, progress=False).get("cached")  # same generator: reused as is
    before, key = outputs(root), cache_key(cfg.data)
    prepare(cfg.data, progress=False)
    finished_run(cfg, run)
    assert resume_state(cfg, run, input_fingerprints(cfg)) is not None  # nothing changed: resumes

    edited = edited_data(tmp_path)
    # this process's tables were read from the real files: its generator has not changed
    monkeypatch.setattr(malm.synth, "DATA_DIR", edited)
    assert generator_changes(first["generator"]) == []
    monkeypatch.undo()

    # `malm data synth` with the edited file: the marker is stale, the dataset is written again
    again = malm_data_synth(edited, root)
    assert "cached" not in again
    assert generator_changes(first["generator"], again["generator"]) == ["ingredients.txt"]
    assert again["output"] != first["output"]
    assert outputs(root)["synth_truth.json"] != before["synth_truth.json"]

    # the cache: its key follows the root's content, so prepare() rebuilds it
    assert cache_key(cfg.data)["inputs"] != key["inputs"] and not is_cached(cfg.data)
    prepare(cfg.data, progress=False)
    assert load_manifest(cfg.data.cache_dir)["key"] == json.loads(json.dumps(cache_key(cfg.data)))

    # the run: its input fingerprints name the data, so it refuses to resume, or restarts
    recorded = load_checkpoint(run / CHECKPOINT)["inputs"]
    assert input_fingerprints(cfg)["data.cache_dir"] != recorded["data.cache_dir"]
    with pytest.raises(C.ConfigError, match="data.cache_dir"):
        resume_state(cfg, run, input_fingerprints(cfg))
    assert resume_state(cfg, run, input_fingerprints(cfg), restart_on_config_change=True) is None
    assert not (run / CHECKPOINT).exists()

    # and back: the real generator finds a marker made by another one and restores the same bytes
    back = generate(root, synth, progress=False)
    assert "cached" not in back and back["output"] == first["output"] and outputs(root) == before
    assert cache_key(cfg.data) == key


def test_a_generator_change_that_gives_the_same_bytes_reaches_nothing_downstream(tmp_path, monkeypatch):
    synth, cfg = configs(tmp_path)
    root, run = Path(cfg.data.root), tmp_path / "run"
    first = generate(root, synth, progress=False)
    before = outputs(root)
    prepare(cfg.data, progress=False)
    manifest = (Path(cfg.data.cache_dir) / "manifest.json").read_bytes()
    finished_run(cfg, run)

    monkeypatch.setattr(malm.synth, "GENERATOR_VERSION", malm.synth.GENERATOR_VERSION + 1)
    again = generate(root, synth, progress=False)
    assert "cached" not in again
    assert generator_changes(first["generator"], again["generator"]) == ["GENERATOR_VERSION"]
    assert again["output"] == first["output"] and outputs(root) == before  # byte-identical
    assert is_cached(cfg.data)
    prepare(cfg.data, progress=False)  # not rebuilt
    assert (Path(cfg.data.cache_dir) / "manifest.json").read_bytes() == manifest
    assert resume_state(cfg, run, input_fingerprints(cfg)) is not None


def test_a_marker_from_before_the_fingerprints_is_stale_once(tmp_path):
    synth, _ = configs(tmp_path)
    root = tmp_path / "synth"
    first = generate(root, synth, progress=False)
    before = outputs(root)
    old = {k: v for k, v in json.loads((root / SYNTH_COMPLETE).read_text()).items()
           if k not in ("generator", "output")}
    (root / SYNTH_COMPLETE).write_text(json.dumps(old))
    again = generate(root, synth, progress=False)
    assert "cached" not in again and again["output"] == first["output"] and outputs(root) == before
    assert generate(root, synth, progress=False).get("cached")
    assert generator_fingerprint() == again["generator"]
