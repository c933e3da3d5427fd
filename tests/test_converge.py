"""Early stopping (train.patience), the converge profile (`malm converge`) and the learning-curves
figure: the stop happens, it survives a kill + resume at the same epoch, a shortened profile runs
end to end on the smoke data into its own folder, and the figure draws one line per variant."""

from __future__ import annotations

import json
import random

import pandas as pd
import pytest
import torch
import yaml

from conftest import REPO, SMOKE

# validation never improves with every learning rate at 0: the weights stay as initialised
FROZEN = {"train": {"lr": 0.0, "lr_image": 0.0, "lr_word_embedding": 0.0}}


@pytest.fixture
def restore_torch():
    """The trainer sets torch's thread count and deterministic flag for the process."""
    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.set_num_threads(before[1])


def smoke_cfg(tiny_data: dict, variant: str = "baseline", **train):
    from malm import variants

    data = {k.split(".", 1)[1]: yaml.safe_load(v) for k, v in tiny_data.items()}
    return variants.resolve_from_files(variant, [SMOKE], {"data": data}, FROZEN,
                                       {"train": {"threads": 1, **train}})


def history(run_dir) -> list[dict]:
    return json.loads((run_dir / "history.json").read_text())


# ------------------------------------------------------------------------------ early stopping
def test_patience_rule():
    from malm.train.checkpoint import patience_exhausted

    assert not patience_exhausted({"epoch": 1}, 5, 0)  # off
    assert not patience_exhausted(None, 5, 1)
    assert not patience_exhausted({"epoch": 4}, 5, 2)
    assert patience_exhausted({"epoch": 3}, 5, 2) and patience_exhausted({"epoch": 1}, 2, 1)


def test_early_stop_stops_and_a_finished_run_stays_stopped(tmp_path, tiny_data, restore_torch):
    from malm.train.trainer import train

    run_dir = tmp_path / "stop"
    metrics = train(smoke_cfg(tiny_data, epochs=6, patience=1), run_dir, progress=False)
    # epoch 1 is the best; epoch 2 is no better -> 1 epoch without improvement = patience: stop
    assert len(history(run_dir)) == 2
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["finished"] and state["epoch"] == 2 and state["best"]["epoch"] == 1
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["stopped_early"] is True and saved["epochs_run"] == 2 and saved["epochs"] == 6
    assert saved["best/epoch"] == 1 and saved["patience"] == 1
    assert torch.load(run_dir / "checkpoint_best.pt", weights_only=True)["epoch"] == 1
    # starting it again trains nothing further
    mtime = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    again = train(smoke_cfg(tiny_data, epochs=6, patience=1), run_dir, progress=False)
    assert again["epochs_run"] == 2 and len(history(run_dir)) == 2
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime


def test_patience_zero_runs_every_epoch(tmp_path, tiny_data, restore_torch):
    from malm.train.trainer import train

    run_dir = tmp_path / "all"
    metrics = train(smoke_cfg(tiny_data, epochs=3, patience=0), run_dir, progress=False)
    assert len(history(run_dir)) == 3
    assert metrics["stopped_early"] is False and metrics["epochs_run"] == 3
    assert metrics["best/epoch"] == 1  # no improvement ever, and still no stop


def test_negative_patience_is_refused(tmp_path, tiny_data, restore_torch):
    from malm import config as C
    from malm.train.trainer import train

    with pytest.raises(C.ConfigError, match="train.patience"):
        train(smoke_cfg(tiny_data, patience=-1), tmp_path / "neg", progress=False)


class Killed(Exception):
    pass


def test_a_killed_and_resumed_run_stops_at_the_same_epoch(tmp_path, tiny_data, monkeypatch,
                                                          restore_torch):
    """Patience 2, best epoch 1: the stop is after epoch 3. Killed right after epoch 2's checkpoint,
    the resumed run must stop after epoch 3 too, not count its patience afresh (epoch 4)."""
    from malm.train import runlog
    from malm.train.trainer import train

    cfg = smoke_cfg(tiny_data, epochs=6, patience=2)
    ref = tmp_path / "ref"
    train(cfg, ref, progress=False)
    assert len(history(ref)) == 3

    killed, real_save = tmp_path / "killed", runlog.save_history

    def save_then_die(run_dir, hist):
        real_save(run_dir, hist)
        if len(hist) == 2:
            raise Killed  # after epoch 2's checkpoint.pt and history.json

    monkeypatch.setattr(runlog, "save_history", save_then_die)
    with pytest.raises(Killed):
        train(cfg, killed, progress=False)
    monkeypatch.setattr(runlog, "save_history", real_save)
    state = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert not state["finished"] and state["epoch"] == 2

    metrics = train(cfg, killed, progress=False)  # resume
    starts = [s["start_epoch"] for s in json.loads((killed / "starts.json").read_text())]
    assert starts == [0, 2]
    assert len(history(killed)) == 3 and metrics["stopped_early"] and metrics["epochs_run"] == 3
    strip = lambda m: {k: v for k, v in m.items() if k != "wall_s"}  # noqa: E731
    assert strip(metrics) == strip(json.loads((ref / "metrics.json").read_text()))


def test_every_ddp_rank_stops_with_rank_0(tmp_path, tiny_data):
    """Only rank 0 validates and knows the best epoch: the stop is shared, or the other rank would
    wait in epoch 3's first collective for ever (the timeout turns that into a failure)."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    run_dir = tmp_path / "ddp"
    cmd = [torchrun, "--nproc-per-node", "2", "-m", "malm.cli", "train", "--config", str(SMOKE),
           "--variant", "baseline", "--run-dir", str(run_dir),
           *[f"{k}={v}" for k, v in tiny_data.items()], "train.threads=1", "train.epochs=4",
           "train.patience=1", "train.lr=0", "train.lr_image=0", "train.lr_word_embedding=0"]
    # its own process group: on a hang, torchrun and both workers are ended together
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        _, err = p.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail("the ranks did not stop together (hung past 180 s)")
    assert p.returncode == 0, err[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_early"] and metrics["epochs_run"] == 2 and len(history(run_dir)) == 2


# ------------------------------------------------------------------------------ the profile
def test_converge_profile_config_layers_on_params():
    from malm.launch.converge import plan, profile_settings

    files = [REPO / "params.yaml", REPO / "configs" / "converge.yaml"]
    settings = profile_settings(files)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert settings["variants"] == params["pipeline"]["variants"] and settings["out"] == "converge"
    runs = plan(files)
    assert len(runs) == len(params["pipeline"]["variants"]) * len(params["pipeline"]["seeds"])
    cfg = runs[0].cfg
    assert cfg.train.patience == 0 and cfg.train.epochs == 20  # a fixed length (the file says why)
    assert cfg.model.image.pretrained == params["model"]["image"]["pretrained"]  # params.yaml's
    assert all(str(r.run_dir).startswith("converge/runs/") for r in runs)


def test_still_rising_flags_a_best_epoch_at_the_end_of_a_fixed_length_run():
    from malm.launch.converge import _markdown, still_rising

    ended = {"epochs_run": 20, "stopped_early": False}
    assert still_rising({**ended, "best_epoch": 20}) and still_rising({**ended, "best_epoch": 18})
    assert not still_rising({**ended, "best_epoch": 17})
    assert not still_rising({"epochs_run": 20, "stopped_early": True, "best_epoch": 19})
    assert not still_rising({**ended, "best_epoch": None})
    runs = [{"variant": v, "seed": 0, "wall_s": 1.0, "train_wall_s": 1.0, "max_epochs": 20,
             "best_val_img2rec_R@1": 30.0, "steps": ["trained"], **ended, "best_epoch": b}
            for v, b in (("baseline", 12), ("malm", 19))]
    text = _markdown({"command": "c", "machine": "m", "started": "s", "ended": "e", "runs": runs,
                      "total_wall_s": 2.0, "runs_wall_s": 2.0, "tables_wall_s": 0.0,
                      "train_wall_s_sum": 2.0})
    assert "may still be rising" in text and "malm/seed0" in text.split("may still be rising")[1]
    assert "baseline/seed0" not in text.split("may still be rising")[1]


def test_converge_help_explains_every_option(capsys):
    from malm.cli import main

    with pytest.raises(SystemExit):
        main(["converge", "--help"])
    text = capsys.readouterr().out
    for opt in ("--variants", "--seeds", "--out", "--config", "--executor", "--no-tables",
                "--dataset", "--quiet", "KEY=VALUE", "train.patience"):
        assert opt in text, opt


def test_shortened_converge_run_end_to_end(tmp_path, tiny_data, capsys, restore_torch):
    """`malm converge` on the smoke profile, 2 variants x 1 seed, at most 3 epochs, patience 1, the
    two runs trained side by side (pipeline.workers=2): trains, embeds the best checkpoint, evaluates, tabulates and draws the learning curves, all
    under --out; a second call skips the finished run; a changed config is refused."""
    from malm.cli import main

    out = tmp_path / "conv"
    args = ["converge", "--config", str(SMOKE), "--variants", "baseline,malm", "--seeds", "0",
            "--out", str(out), "--quiet", *[f"{k}={v}" for k, v in tiny_data.items()],
            "train.epochs=3", "train.patience=1", "train.threads=1", "pipeline.workers=2"]
    assert main(args) == 0, capsys.readouterr().err[-3000:]
    printed = capsys.readouterr().out
    assert "[1/2] baseline/seed0" in printed and "[2/2] malm/seed0" in printed
    assert "total wall time" in printed

    run_dir = out / "runs" / "baseline" / "seed0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    n = len(history(run_dir))
    assert metrics["epochs_run"] == n and metrics["stopped_early"] == (n < 3)
    assert (out / "embeddings" / "baseline" / "seed0" / "test.npz").exists()
    res = json.loads((out / "metrics" / "baseline" / "seed0" / "tfood_100.json").read_text())
    assert res["checkpoint"] == "best" and res["checkpoint_epoch"] == metrics["best/epoch"]
    assert {p.name for p in (out / "metrics" / "baseline" / "seed0").iterdir()} == {
        "tfood_100.json", "tfood_50.json", "ht_100.json", "ht_50.json"}
    for f in ("tables/results.csv", "tables/tables.md", "tables/curves.csv",
              "figures/learning_curves.png", "figures/training_curves.png", "summary.json",
              "converge.md"):
        assert (out / f).is_file(), f
    curves = pd.read_csv(out / "tables" / "curves.csv")
    per_run = curves.groupby(["variant", "seed"])["train/samples"].cumsum()
    assert curves["train/samples_seen"].tolist() == per_run.tolist()
    assert set(curves[curves.variant == "baseline"]["best_epoch"]) == {metrics["best/epoch"]}
    assert set(pd.read_csv(out / "tables" / "results.csv")["variant"]) == {"baseline", "malm"}
    summary = json.loads((out / "converge.json").read_text())
    assert summary["total_wall_s"] > 0 and summary["patience"] == 1 and summary["max_epochs"] == 3
    rec = summary["runs"][0]
    assert [r["variant"] for r in summary["runs"]] == ["baseline", "malm"]
    assert rec["steps"] == ["trained", "embedded + evaluated"] and rec["epochs_run"] == n
    assert rec["wall_s"] > 0 and rec["best_epoch"] == metrics["best/epoch"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv"]  # nothing written beside it
    # pipeline.workers=2: both runs trained side by side in processes of their own (malm train-runs)
    pool = json.loads((out / "runs" / "train_runs.json").read_text())
    assert pool["workers"] == 2 and sorted(r["variant"] for r in pool["runs"]) == ["baseline", "malm"]
    assert (out / "runs" / "malm" / "seed0.log").is_file()

    mtime = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    emb_mtime = (out / "embeddings" / "baseline" / "seed0" / "test.npz").stat().st_mtime_ns
    assert main(args) == 0
    assert "trained before, evaluated before" in capsys.readouterr().out
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime
    assert (out / "embeddings" / "baseline" / "seed0" / "test.npz").stat().st_mtime_ns == emb_mtime
    assert all(r["steps"] == ["trained before", "evaluated before"]
               for r in json.loads((out / "converge.json").read_text())["runs"])

    changed = [a if a != "train.patience=1" else "train.patience=2" for a in args]
    assert main(changed) == 2
    assert "train.patience" in capsys.readouterr().err
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------ the learning curves
def made_up_history(variant: str, seeds_epochs: dict[int, int]) -> pd.DataFrame:
    rows = []
    for seed, epochs in seeds_epochs.items():
        for e in range(1, epochs + 1):
            r1 = 5.0 * e + seed
            rows.append({"variant": variant, "display": variant.title(), "seed": seed, "epoch": e,
                         "val/img2rec_R@1": r1, "val/img2rec_medR": 100 / r1,
                         "train/samples": 1000.0, "train/samples_seen": 1000.0 * e,
                         "best_epoch": epochs - 1 if seed == 1 else epochs,
                         "stopped_early": seed == 1})
    return pd.DataFrame(rows)


def test_learning_curves_one_line_per_variant_with_runs_of_different_lengths(tmp_path):
    from malm.report import figures

    hist = pd.concat([made_up_history("baseline", {0: 3, 1: 5}),
                      made_up_history("malm", {0: 4, 1: 4})], ignore_index=True)
    fig = figures.learning_curves(hist, order=["Malm", "Baseline"])
    (ax,) = fig.axes
    labelled = [line for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in labelled] == ["Malm (2 seeds)", "Baseline (2 seeds)"]
    malm, base = labelled
    # the mean line runs while every seed trains: baseline's to seed 0's last epoch (3), then a
    # dashed continuation of the seed still training to epoch 5
    assert list(base.get_xdata()) == [1000.0, 2000.0, 3000.0]
    assert list(base.get_ydata()) == [5.5, 10.5, 15.5]
    assert list(malm.get_xdata()) == [1000.0, 2000.0, 3000.0, 4000.0]
    tails = [line for line in ax.get_lines() if line.get_label().startswith("_Baseline")]
    assert len(tails) == 1 and tails[0].get_linestyle() == "--"
    assert list(tails[0].get_xdata()) == [3000.0, 4000.0, 5000.0]
    assert list(tails[0].get_ydata()) == [15.5, 21.0, 26.0]
    assert not [line for line in ax.get_lines() if line.get_label().startswith("_Malm")]
    # bands (min-max) and the per-run markers: 4 best epochs + 2 early stops
    assert len(ax.collections) == 2 + 4 + 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["Malm (2 seeds)", "Baseline (2 seeds)"] and "a run's early stop" in legend
    assert "min–max over seeds" in ax.get_title()
    figures.plt.close(fig)
    # written through figure_curves; nothing without the samples column
    assert figures.figure_curves(hist, "val/img2rec_R@1", tmp_path / "lc.png",
                                 x="train/samples_seen").is_file()
    assert figures.figure_curves(hist.drop(columns="train/samples_seen"), "val/img2rec_R@1",
                                 tmp_path / "none.png", x="train/samples_seen") is None


def test_load_histories_adds_samples_seen_best_epoch_and_early_stop(tmp_path):
    from malm.report.collect import load_histories

    rows = [{"epoch": e, "train/samples": 640.0, "val/img2rec_R@1": r, "val/img2rec_medR": m}
            for e, r, m in ((1, 5.0, 30.0), (2, 9.0, 12.0), (3, 8.0, 12.0), (4, 9.0, 12.0))]
    for seed, stopped in ((0, True), (1, None)):
        d = tmp_path / "baseline" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "history.json").write_text(json.dumps(rows))
        if stopped is not None:  # seed 1 has not finished: no metrics.json yet
            (d / "metrics.json").write_text(json.dumps({"stopped_early": stopped}))
    hist = load_histories(tmp_path)
    assert hist["train/samples_seen"].tolist() == [640.0, 1280.0, 1920.0, 2560.0] * 2
    assert set(hist["best_epoch"]) == {2}  # epoch 4 ties epoch 2: the earlier one is kept
    assert hist.groupby("seed")["stopped_early"].first().tolist() == [True, False]


def test_report_best_epoch_is_the_trainers_rule():
    """The report's best epoch (no training code imported there) equals what the trainer's
    is_better picks, ties included."""
    from malm.report.collect import best_epoch
    from malm.train.checkpoint import is_better

    rng = random.Random(0)
    for _ in range(200):
        rows = [{"epoch": e, "val/img2rec_medR": float(rng.choice([3, 4, 5])),
                 "val/img2rec_R@1": float(rng.choice([10, 11, 12]))} for e in range(1, 8)]
        best = None
        for r in rows:
            if best is None or is_better(r, best):
                best = r
        assert best_epoch(pd.DataFrame(rows)) == best["epoch"]


def test_a_converge_run_made_by_other_code_is_refused_not_reused(tmp_path):
    """A finished run of the profile counts as done only when its checkpoint's code and inputs are
    today's: an edited malm file the run imported makes `malm converge` refuse it, naming the file."""
    from malm import config as C
    from malm.io import CHECKPOINT, save_checkpoint
    from malm.launch.converge import plan
    from malm.train.checkpoint import code_fingerprint, input_fingerprints

    [run] = plan([SMOKE], ["baseline"], [0], tmp_path / "conv")
    run.run_dir.mkdir(parents=True)
    C.save(run.cfg, run.run_dir / "config.yaml")
    (run.run_dir / "metrics.json").write_text("{}")
    code, inputs = code_fingerprint(), input_fingerprints(run.cfg)
    save_checkpoint(run.run_dir / CHECKPOINT, {"config": C.to_dict(run.cfg), "inputs": inputs,
                                               "code": code, "finished": True})
    assert run.trained() and run.changed_keys() == []
    edited = next(iter(code))
    save_checkpoint(run.run_dir / CHECKPOINT, {"config": C.to_dict(run.cfg), "inputs": inputs,
                                               "code": {**code, edited: "0" * 64}, "finished": True})
    assert not run.trained()
    with pytest.raises(C.ConfigError, match=f"other code.*code malm/{edited}"):
        run.refuse_changed()
