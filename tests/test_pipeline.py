"""The DVC pipeline end to end on the smoke profile, in a scratch copy of the repository:
`dvc repro` produces tables, figures and the executed notebook; a second `dvc repro` does nothing;
changing one variant's parameter reruns only that variant's stages (and the tables)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SMOKE

DVC = str(Path(sys.executable).parent / "dvc")


def sh(cmd: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A fresh git repo with the project's tracked files and params.yaml switched to the smoke profile."""
    dst = tmp_path_factory.mktemp("pipeline") / "repo"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    smoke = yaml.safe_load(SMOKE.read_text())
    smoke["data"].update(root="data/synth", cache_dir="data/cache")
    smoke["pretrain"].update(root="data/pretrain/synth", cache_dir="data/pretrain/cache",
                             out="data/pretrain/image_encoder.pt")
    smoke["model"]["image"]["pretrained"] = "data/pretrain/image_encoder.pt"  # the stage's output
    for section, values in smoke.items():
        params[section] = {**params.get(section, {}), **values}
    params["pipeline"] = {"variants": ["baseline", "malm"], "seeds": [0]}
    params["variant_overrides"] = {"baseline": {}, "malm": {}}
    params["train"]["epochs"] = 1
    params["train"]["threads"] = 1
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], dst)
    sh(["git", "add", "-A"], dst)
    sh(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "smoke"], dst)
    return dst


def ran_stages(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def test_dvc_repro_smoke(repo):
    p = sh([DVC, "repro"], repo)
    assert ran_stages(p.stdout) >= {"prepare", "pretrain", "grounding@malm-0", "train@baseline-0", "train@malm-0", "tables", "report"}
    assert (repo / "results/tables/tables.md").read_text().count("± ") > 0
    assert (repo / "results/summary.json").exists()
    assert list((repo / "results/figures").glob("recall_*.png"))
    assert (repo / "results/paper_tables/table2.md").exists()
    assert (repo / "results/report/paper_tables.ipynb").exists()
    assert (repo / "runs/malm/seed0/config.yaml").exists()
    assert (repo / "results/tables/grounding.csv").exists()
    assert (repo / "results/figures/grounding.png").exists()
    assert "Grounding" in (repo / "results/tables/tables.md").read_text()
    base_g = (repo / "results/grounding/baseline/seed0/grounding.json").read_text()
    assert '"has_matching": false' in base_g
    run_cfg = yaml.safe_load((repo / "runs/malm/seed0/config.yaml").read_text())
    assert run_cfg["model"]["image"]["pretrained"] == "data/pretrain/image_encoder.pt"
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["pretrain"]["params"]["params.yaml"]["pretrain"]["epochs"] == 2  # provenance
    assert any(o["path"] == "data/pretrain/image_encoder.pt" for o in lock["pretrain"]["outs"])
    assert any(d["path"] == "data/pretrain/image_encoder.pt" for d in lock["train@malm-0"]["deps"])
    metrics = sh([DVC, "metrics", "show", "--json"], repo).stdout
    assert "tfood_1k" not in metrics or "img2rec" in metrics

    p = sh([DVC, "repro"], repo)  # nothing changed: nothing runs
    assert ran_stages(p.stdout) == set(), p.stdout

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["variant_overrides"]["malm"] = {"loss": {"lambda_dist": 0.5}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    p = sh([DVC, "repro"], repo)
    ran = ran_stages(p.stdout)
    assert {"train@malm-0", "embed@malm-0", "evaluate@malm-0", "grounding@malm-0", "tables"} <= ran, ran
    assert not any("baseline" in s for s in ran) and not {"prepare", "pretrain"} & ran, ran
