"""The learning-curve benchmark: its pure functions, and one end-to-end run on tiny data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

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
    """The GPU check's bench at the small config: every runner finishes and the ratios are printed."""
    out = tmp_path / "step.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_train_step.py"), "--config",
                        "small", "--batch", "4", "--steps", "1", "--warmup", "1", "--threads", "1",
                        "--json", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert out.exists() and "MALM" in p.stdout


def test_gpu_check_script_parses():
    p = subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr


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
