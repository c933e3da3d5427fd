"""The learning-curve benchmark: its pure functions, and one end-to-end run on tiny data."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SMOKE, overrides

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_learning_curve as blc  # noqa: E402


def hist(r1s, samples=1000, secs=10.0):
    return [{"epoch": i + 1, "train/samples": samples, "train/seconds": secs,
             "train/samples_per_s": samples / secs, "val/img2rec_R@1": r, "val/rec2img_R@1": r / 2,
             "val/img2rec_medR": 100.0 / (i + 1), "train/loss": 0.1} for i, r in enumerate(r1s)]


def test_rows_accumulate_samples_and_time():
    rows = blc.curve_rows(hist([1.0, 2.0, 3.0]))
    assert [r["samples"] for r in rows] == [1000, 2000, 3000]
    assert [r["train_s"] for r in rows] == [10.0, 20.0, 30.0]
    with pytest.raises(ValueError, match="train/samples"):
        blc.curve_rows([{"epoch": 1}])


def test_projection_fits_the_second_half():
    # flat start, then +1 R@1 point per 1k samples from epoch 3 on: the line through epochs 3-6
    rows = blc.curve_rows(hist([0.1, 0.1, 1.0, 2.0, 3.0, 4.0]))
    p = blc.project(rows, target=20.0)
    assert p["slope_per_1k"] == pytest.approx(1.0)
    assert p["samples"] == pytest.approx(22000.0)  # R@1 = samples/1k - 2
    assert p["train_s"] == pytest.approx(220.0)    # at 100 samples/s
    assert blc.project(rows[:3], 20.0) is None
    assert blc.project(blc.curve_rows(hist([5.0, 4.0, 3.0, 2.0])), 20.0)["samples"] is None


def test_end_to_end_on_tiny_data(tmp_path, tiny_data):
    out = tmp_path / "curve"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_learning_curve.py"),
                        "--config", str(SMOKE), "--epochs", "4", "--out", str(out), "--no-progress",
                        *overrides(tiny_data, **{"train.threads": 1})],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    hist_ = json.loads((out / "history.json").read_text())
    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    # the curve is the trainer's own history, samples accumulate epoch by epoch
    assert [float(r["img2rec_R@1"]) for r in rows] == [h["val/img2rec_R@1"] for h in hist_]
    assert int(rows[-1]["samples"]) == sum(int(h["train/samples"]) for h in hist_) > 0
    assert "learning curve: variant=baseline" in p.stdout and "projection" in p.stdout
    assert (out / "curve.png").stat().st_size > 1000


def test_train_step_bench_runs_the_trainers_step_on_cpu(tmp_path):
    """The GPU check's bench at the small config: every runner finishes one timed step and is the
    variant it is named after; the JSON's figures agree with each other (img/s from ms/step, the
    ratios from the runners' times, PASS/FAIL from the targets) and the table prints them."""
    out = tmp_path / "step.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_train_step.py"), "--config",
                        "small", "--batch", "4", "--steps", "1", "--warmup", "1", "--threads", "1",
                        "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert list(rep["phases"]) == ["eager"] and rep["args"]["batch"] == 4
    rows = rep["phases"]["eager"]["runners"]
    assert set(rows) == {"baseline", "malm", "plain_vit"}
    for name, r in rows.items():
        assert r["ok"] and r["error"] is None and r["steps_timed"] == 1, (name, r)
        assert r["step_ms_median"] > 0 and r["trainable_params_M"] > 0, (name, r)
        assert r["images_per_s"] == pytest.approx(4 / (r["step_ms_median"] / 1e3)), (name, r)
    # each runner is the variant it is named after: MALM with every part, the baseline with none
    assert all(rows["malm"][k] for k in ("matching", "predictor", "teacher")), rows["malm"]
    assert not any(rows["baseline"][k] for k in ("matching", "predictor", "teacher")), rows["baseline"]
    assert rows["malm"]["trainable_params_M"] > rows["baseline"]["trainable_params_M"]
    ratios = rep["phases"]["eager"]["ratios"]
    ms = {n: r["step_ms_median"] for n, r in rows.items()}
    assert ratios["malm_over_baseline_step_time"]["value"] == pytest.approx(ms["malm"] / ms["baseline"])
    assert ratios["malm_over_vit_images_per_s"]["value"] == pytest.approx(ms["plain_vit"] / ms["malm"])
    labels = {"malm_over_baseline_step_time": ("MALM step / baseline step", "<=", 1.3),
              "malm_over_vit_images_per_s": ("MALM img/s / plain ViT img/s", ">=", 0.6)}
    for key, (label, op, bound) in labels.items():
        r = ratios[key]
        assert r["target"] == f"{op} {bound}", (key, r)
        assert r["pass"] == (r["value"] <= bound if op == "<=" else r["value"] >= bound), (key, r)
        verdict = "PASS" if r["pass"] else "FAIL"
        printed = rf"{re.escape(label)}\s+{r['value']:.3f}\s+\(target {op} {bound}\)\s+{verdict}"
        assert re.search(printed, p.stdout), (label, p.stdout[-2000:])


# Stand-in for the venv's python in a copy of gpu_check.sh's repository: records each call (NUL-
# separated arguments, one file per call), swallows heredocs, and marks `data synth`'s output
# complete so the script goes on to the training part.
FAKE_PYTHON = r'''#!/usr/bin/env bash
n=$(ls "$CALLS" | wc -l)
printf '%s\0' "$@" > "$CALLS/$(printf %03d "$n")"
[[ ${1:-} == - ]] && cat > /dev/null
prev=
for a in "$@"; do
  [[ $prev == --out && " $* " == *" synth "* ]] && mkdir -p "$a" && touch "$a/.synth_complete"
  prev=$a
done
exit 0
'''


def gpu_check_calls(tmp_path, dry: bool) -> tuple[subprocess.CompletedProcess, list[list[str]], Path, Path]:
    """Run benchmarks/gpu_check.sh (a copy, beside a stand-in python) in DRY or GPU mode; return
    the process, the recorded python calls, and its WORK and OUT folders."""
    mode = "dry" if dry else "gpu"
    root, calls, work, out = (tmp_path / f"{mode}_{d}" for d in ("repo", "calls", "work", "out"))
    (root / "benchmarks").mkdir(parents=True)
    shutil.copy2(REPO / "benchmarks" / "gpu_check.sh", root / "benchmarks" / "gpu_check.sh")
    (root / ".venv" / "bin").mkdir(parents=True)
    fake = root / ".venv" / "bin" / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("BUDGET", "BENCH_STEPS", "N_TRAIN", "FREEZE", "COMPILE", "COMPILE_BACKEND",
                        "RECOMPILE_LIMIT", "NUM_CLASSES")}
    env.update(DRY="1" if dry else "0", CALLS=str(calls), WORK=str(work), OUT=str(out))
    p = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                       text=True, timeout=120)
    recorded = [f.read_bytes().decode().split("\0")[:-1] for f in sorted(calls.iterdir())]
    return p, recorded, work, out


@pytest.mark.parametrize("dry", [True, False], ids=["dry", "gpu"])
def test_gpu_check_script_runs_entry_points_that_accept_its_arguments(tmp_path, monkeypatch, capsys, dry):
    """gpu_check.sh runs for real only on a lent GPU machine; a wrong option or a renamed config key
    would be found only there. Here it runs with a stand-in python, and every command line it gave
    python goes through the real entry points: the bench's parser, and `malm data synth` and
    `malm train` through `malm.cli.main` with only the work itself stubbed out (the generator, the
    stage), so their configs resolve as on the GPU machine (the training run the check describes:
    the paper model on CUDA, 2 epochs, the first frozen; DRY: the smoke model on CPU, 1 epoch)."""
    import bench_train_step as bts

    from malm import cli

    p, calls, work, out = gpu_check_calls(tmp_path, dry)
    assert p.returncode == 0 and "all parts ok" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]
    assert (out / "gpu_check.log").is_file()

    [bench] = [c[1:] for c in calls if c[0] == "benchmarks/bench_train_step.py"]
    a = bts.make_parser().parse_args(bench)
    assert a.json == str(out / "train_step.json") and a.compile == "both" and a.recompile_limit == 4
    assert (a.config, a.device, a.bf16, a.compile_backend) == (
        ("small", "cpu", False, "aot_eager") if dry else ("paper", "cuda", True, "inductor"))
    bts.base_config(a.config)  # the bench's config resolves

    ran = []
    monkeypatch.setattr("malm.synth.write.generate",
                        lambda out_dir, cfg, **kw: ran.append(("synth", out_dir, cfg)) or {})
    monkeypatch.setattr("malm.launch.stage.run_stage",
                        lambda stage, cfg, executor=None, **kw: ran.append((stage, kw, cfg)))
    monkeypatch.chdir(REPO)  # the script runs from the repository root (relative --config paths)
    for call in calls:
        if call[:2] == ["-m", "malm.cli"]:
            assert cli.main(call[2:]) == 0, capsys.readouterr().err[-2000:]
    [(_, synth_out, synth), (stage, kw, cfg)] = ran
    assert synth_out == str(work / "synth")
    assert (synth.n_train, synth.image_size) == ((256, 40) if dry else (2560, 256))
    assert stage == "train" and kw["run_dir"] == str(work / "run_malm") and cfg.variant == "malm"
    assert (cfg.data.root, cfg.data.cache_dir) == (str(work / "synth"), str(work / "cache"))
    assert cfg.model.image.pretrained is None and cfg.model.image.allow_random_init
    assert cfg.data.num_classes == 10
    if dry:
        assert (cfg.train.device, cfg.train.epochs, cfg.train.freeze_image_epochs) == ("cpu", 1, 0)
        assert cfg.model.image.img_size == 32 and cfg.data.max_pairs == {"train": 256, "val": 128}
    else:
        assert (cfg.train.device, cfg.train.epochs, cfg.train.freeze_image_epochs) == ("cuda", 2, 1)
        assert cfg.model.image.img_size == 224 and cfg.train.batch_size == 128
        assert cfg.data.max_pairs == {"train": 2560, "val": 512}

    # the summary reads what the two parts wrote
    assert calls[-1] == ["-", str(out / "train_step.json"), str(work / "run_malm" / "history.json"),
                         str(work / "run_malm" / "config.yaml")]


def test_rerank_bench_times_a_bag_and_projects_the_paper_cost():
    """bench_rerank.py at the smoke shapes: one timed bag, and the FLOP-count projection at the
    paper's shapes (attention counted: the fused CPU kernel would count 0)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_rerank.py"), "--config",
                        str(SMOKE), "--bags", "50", "--threads", "1"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "one bag of     50" in p.stdout and "1000 pairs requested" in p.stdout
    assert "PROJECTION (FLOP count, not a measurement)" in p.stdout
    gflop = float(p.stdout.split(" GFLOP per fused pair")[0].rsplit(" ", 1)[1])
    assert 7.0 < gflop < 9.0  # psi (1 layer) + psi' (4 layers) at width 768, 197 x 50 tokens


def test_bench_parallel_runs_times_both_modes(tmp_path):
    """The side-by-side throughput bench runs the real training step in both modes and writes its figures."""
    out = tmp_path / "parallel.json"
    p = subprocess.run([sys.executable, str(REPO / "benchmarks/bench_parallel_runs.py"), "--config", "small",
                        "--batch", "4", "--steps", "1", "--warmup", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "side by side / one process" in p.stdout
    res = json.loads(out.read_text())
    assert (res["one_process"]["procs"], res["one_process"]["threads_each"]) == (1, 2)
    assert (res["side_by_side"]["procs"], res["side_by_side"]["threads_each"]) == (2, 1)
    assert res["side_by_side"]["samples"] == 2 * res["one_process"]["samples"] == 8
    assert res["throughput_ratio"] > 0 and len(res["side_by_side"]["seconds_per_process"]) == 2
