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


TRACE = Path(__file__).resolve().parent / "trace"  # sitecustomize: which malm files a process read
STAGE_OF_COMMAND = {"data": "prepare", "pretrain": "pretrain", "train": "train", "assess": "assess",
                    "tables": "tables"}


def sh(cmd: list[str], cwd: Path, timeout: float = 900, trace: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if trace is not None:
        env["MALM_TRACE_IMPORTS"] = str(trace)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TRACE), env.get("PYTHONPATH")) if p)
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
        if (REPO / f).is_symlink():  # malm/variants/{baselines,ablations} -> the top-level folders
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            (dst / f).symlink_to(os.readlink(REPO / f))
        elif (REPO / f).is_file():
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
    params["pipeline"] = {"variants": ["baseline", "malm"], "seeds": [0], "workers": 2}
    params["variant_overrides"] = {"baseline": {}, "malm": {}}
    params["train"]["epochs"] = 1
    params["train"]["threads"] = 2  # 1 per run: the train stage runs the two side by side
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], dst)
    sh(["git", "add", "-A"], dst)
    sh(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "smoke"], dst)
    return dst


def ran_stages(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def stage_code_read(trace: Path, repo: Path) -> dict[str, set[str]]:
    """{stage: malm files (repo-relative) its processes imported}, from the sitecustomize traces."""
    import json

    read: dict[str, set[str]] = {}
    for f in trace.glob("*.json"):
        t = json.loads(f.read_text())
        argv = t["argv"]
        stage = ("report" if any("ipykernel" in a for a in argv)
                 else STAGE_OF_COMMAND.get(argv[1] if len(argv) > 1 else ""))
        if stage is None:
            continue
        for path in map(Path, t["files"]):
            base = next(b for b in (repo, REPO) if path.is_relative_to(b))
            read.setdefault(stage, set()).add(path.relative_to(base).as_posix())
    return read


def code_deps(repo: Path) -> dict[str, list[str]]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {name: [d for d in st.get("deps", []) if d.startswith("malm")] for name, st in stages.items()}


def check_dvc_metrics(repo: Path) -> None:
    """`dvc metrics show` reports the tables stage's summary.json: for each variant of the pipeline,
    every protocol x bag x direction x metric of params.yaml's eval section (the smoke profile's
    bags, 100 and 50), sane values, and the re-ranked reading only for the variant with a matching
    module; the pretrain stage's metrics beside it."""
    import json

    from malm.eval.names import bag_label

    params = yaml.safe_load((repo / "params.yaml").read_text())
    shown = json.loads(sh([DVC, "metrics", "show", "--json"], repo).stdout)[""]["data"]
    assert {"results/summary.json", "data/pretrain/pretrain.json"} <= set(shown), sorted(shown)
    summary = shown["results/summary.json"]["data"]
    assert summary == json.loads((repo / "results/summary.json").read_text())
    assert set(summary) == set(params["pipeline"]["variants"]), sorted(summary)
    expected = {f"{p}_{bag_label(b)}/{d}/{m}" for p in params["eval"]["protocols"]
                for b, _ in params["eval"]["bags"] for d in ("img2rec", "rec2img")
                for m in ("R@1", "R@5", "R@10", "medR")}
    assert len(expected) == 2 * 2 * 2 * 4  # tfood, ht x bags 100, 50
    for variant, values in summary.items():
        assert expected <= set(values), (variant, sorted(expected - set(values)))
        for key, v in values.items():
            assert (v >= 1.0) if key.endswith("/medR") else (0.0 <= v <= 100.0), (variant, key, v)
    assert any("+rerank" in k for k in summary["malm"]) and not any("+rerank" in k for k in summary["baseline"])


def test_dvc_repro_smoke(repo, tmp_path):
    import json

    trace = tmp_path / "trace"
    trace.mkdir()
    p = sh([DVC, "repro"], repo, trace=trace)
    assert ran_stages(p.stdout) >= {"prepare", "pretrain", "train", "assess@malm-0", "assess@baseline-0", "tables", "report"}
    summary = json.loads((repo / "runs/train_runs.json").read_text())
    assert summary["workers"] == 2 and summary["threads_per_run"] == 1
    assert [r["returncode"] for r in summary["runs"]] == [0, 0]
    assert summary["order"] == ["malm/seed0", "baseline/seed0"]  # the more expensive run first
    assert "malm.cli train" in (repo / "runs/malm/seed0.log").read_text()
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
    assert any(d["path"] == "data/pretrain/image_encoder.pt" for d in lock["train"]["deps"])
    check_dvc_metrics(repo)
    # the smoke profile's numbers are expected/smoke.csv's (`malm check-results`; before the
    # parameter edits below change malm's)
    sh([str(Path(sys.executable).parent / "malm"), "check-results", "results", "--expected",
        "expected/smoke.csv"], repo)

    # every stage depends on all the package code it read (traced at run time)
    read, deps = stage_code_read(trace, repo), code_deps(repo)
    assert set(read) == set(STAGE_OF_COMMAND.values()) | {"report"}, sorted(read)
    missing = {stage: sorted(f for f in files
                             if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps[stage]))
               for stage, files in read.items()}
    assert not any(missing.values()), f"dvc.yaml stages read code they do not depend on: {missing}"

    p = sh([DVC, "repro"], repo)  # nothing changed: nothing runs
    assert ran_stages(p.stdout) == set(), p.stdout

    # editing code marks exactly the stages that read it as changed
    for edited, must, must_not in [("malm/variants/__init__.py", {"train"}, {"prepare"}),
                                   ("malm/eval/grounding.py", {"assess@malm-0"}, {"train", "prepare"}),
                                   ("malm/eval/stats.py", {"tables", "report"}, {"prepare", "pretrain"})]:
        original = (repo / edited).read_text()
        (repo / edited).write_text(original + "\n# edited\n")
        status = set(yaml.safe_load(sh([DVC, "status", "--json"], repo).stdout or "{}"))
        (repo / edited).write_text(original)
        assert must <= status and not must_not & status, (edited, sorted(status))

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["variant_overrides"]["malm"] = {"loss": {"lambda_dist": 0.5}}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    baseline_ckpt = (repo / "runs/baseline/seed0/checkpoint.pt").stat().st_mtime_ns
    p = sh([DVC, "repro"], repo)
    ran = ran_stages(p.stdout)
    # the train stage runs again, but trains malm only: baseline's run is finished under the same
    # config, left as it is, and its assess stage does not run
    assert {"train", "assess@malm-0", "tables"} <= ran, ran
    assert not any("baseline" in s for s in ran) and not {"prepare", "pretrain"} & ran, ran
    assert (repo / "runs/baseline/seed0/checkpoint.pt").stat().st_mtime_ns == baseline_ckpt
    assert "already finished" in (repo / "runs/baseline/seed0.log").read_text()

    # what people share is DVC-cached: push it to a (local-directory) remote, lose the workspace
    # copies and the local cache, pull it back
    remote = tmp_path / "remote"
    sh([DVC, "remote", "add", "-d", "shared", str(remote)], repo)
    sh([DVC, "push"], repo)
    assert any(p.is_file() for p in remote.rglob("*"))
    tables = (repo / "results/tables/tables.md").read_text()
    emb = (repo / "embeddings/malm/seed0/test.npz").read_bytes()
    for d in ("results/tables", "embeddings", "results/metrics", ".dvc/cache"):
        shutil.rmtree(repo / d)
    sh([DVC, "pull"], repo)
    assert (repo / "results/tables/tables.md").read_text() == tables
    assert (repo / "embeddings/malm/seed0/test.npz").read_bytes() == emb
    assert json.loads(sh([DVC, "status", "--json"], repo).stdout or "{}") == {}

    # experiments: run one with a changed parameter, go back, apply it
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "results"], repo)
    sh([DVC, "exp", "run", "-n", "few-pairs", "-S", "grounding.pairs=20"], repo)
    assert "few-pairs" in sh([DVC, "exp", "show", "--csv"], repo).stdout

    def pairs() -> int:
        g = json.loads((repo / "results/grounding/malm/seed0/grounding.json").read_text())
        return g["pairs_considered"]

    assert pairs() == 20
    sh(["git", "checkout", "--", "."], repo)
    sh([DVC, "checkout"], repo)
    assert pairs() != 20
    sh([DVC, "exp", "apply", "few-pairs"], repo)
    assert pairs() == 20 and "pairs: 20" in (repo / "params.yaml").read_text()
