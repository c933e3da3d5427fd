"""End-to-end training through the real CLI on tiny synthetic data: train -> embed -> evaluate ->
tables, exact resume after SIGKILL, and the run-directory contract (config beside the checkpoint)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, SMOKE, overrides

MALM = [sys.executable, "-m", "malm.cli"]


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    return subprocess.run(MALM + args, cwd=REPO, env=env, capture_output=True, text=True, **kw)


def train_args(run_dir: Path, tiny_data: dict, variant: str = "malm", **extra) -> list[str]:
    return ["train", "--config", str(SMOKE), "--variant", variant, "--run-dir", str(run_dir),
            *overrides(tiny_data, **{"train.threads": 1, **extra})]


def test_one_epoch_end_to_end(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    p = run(train_args(run_dir, tiny_data, **{"train.epochs": 1}))
    assert p.returncode == 0, p.stderr[-3000:]
    # the run directory carries its resolved config, also inside the checkpoint
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["variant"] == "malm" and cfg["train"]["epochs"] == 1
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["config"] == cfg and state["finished"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val/img2rec_R@1"] <= 100.0
    assert (run_dir / "dvclive" / "metrics.json").exists()
    hist = json.loads((run_dir / "history.json").read_text())
    assert len(hist) == 1 and hist[0]["train/itc_loss"] > 0 and hist[0]["train/dist_loss"] > 0

    emb = tmp_path / "emb" / "test.npz"
    p = run(["embed", "--run-dir", str(run_dir), "--split", "test", "--out", str(emb)])
    assert p.returncode == 0, p.stderr[-3000:]
    z = np.load(emb)
    assert z["image"].shape == z["recipe"].shape and z["image"].dtype == np.float32
    assert list(z["ids"]) == sorted(z["ids"])
    assert z["checkpoint"].item() == "best" and z["checkpoint_epoch"].item() == 1  # the default, on record
    assert torch.load(run_dir / "checkpoint_best.pt", weights_only=True)["epoch"] == 1
    last = tmp_path / "emb" / "last.npz"
    p = run(["embed", "--run-dir", str(run_dir), "--split", "test", "--out", str(last), "--checkpoint", "last"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert np.load(last)["checkpoint"].item() == "last"
    assert np.array_equal(np.load(last)["image"], z["image"])  # one epoch: best is last

    out = tmp_path / "metrics" / "malm" / "seed0"
    p = run(["evaluate", str(emb), "--config", str(SMOKE), "--out-dir", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads((out / "ht_50.json").read_text())
    assert res["protocol"] == "ht" and res["bag_size"] == 50 and res["n_bags"] == 3
    assert res["checkpoint"] == "best" and res["checkpoint_epoch"] == 1
    assert set(res["img2rec"]) == {"medR", "R@1", "R@5", "R@10"}

    p = run(["tables", "--results", str(tmp_path / "metrics"), "--runs", str(tmp_path),
             "--out", str(tmp_path / "tables"), "--figures", str(tmp_path / "figs"),
             "--metrics", str(tmp_path / "summary.json")])
    assert p.returncode == 0, p.stderr[-3000:]
    import pandas as pd

    df = pd.read_csv(tmp_path / "tables" / "results.csv")
    assert set(df.protocol) == {"tfood", "ht"} and set(df.direction) == {"img2rec", "rec2img"}
    assert (tmp_path / "figs" / "recall_ht_50.png").exists()


def test_finished_run_is_left_alone_and_config_change_is_refused(tmp_path, tiny_data):
    run_dir = tmp_path / "run"
    assert run(train_args(run_dir, tiny_data, variant="baseline", **{"train.epochs": 1})).returncode == 0
    mtime = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    p = run(train_args(run_dir, tiny_data, variant="baseline", **{"train.epochs": 1}))
    assert p.returncode == 0 and (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime
    p = run(train_args(run_dir, tiny_data, variant="baseline", **{"train.epochs": 1, "train.lr": 0.5}))
    assert p.returncode == 2 and "different config" in p.stderr
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime  # nothing lost


def test_rebuilt_pretrained_weights_are_a_different_run(tmp_path, tiny_data):
    """`dvc repro` after the pretrain stage changed: same config, new weights file. The finished
    run must not be taken as done: refused, or restarted with --restart-on-config-change."""
    from malm import config as C
    from malm.models.image import create_vit

    cfg = C.merge(C.Config(), C.load_yaml(SMOKE))
    weights = tmp_path / "vit.pt"
    torch.manual_seed(0)
    torch.save(create_vit(cfg.model.image).state_dict(), weights)
    run_dir = tmp_path / "run"
    args = train_args(run_dir, tiny_data, variant="baseline",
                      **{"train.epochs": 1, "model.image.pretrained": str(weights)})
    assert run(args).returncode == 0
    mtime = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    assert run(args).returncode == 0 and (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime
    torch.manual_seed(1)
    torch.save(create_vit(cfg.model.image).state_dict(), weights)  # the stage rebuilt them
    p = run(args)
    assert p.returncode == 2 and "model.image.pretrained" in p.stderr
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime  # nothing lost
    assert run(args + ["--restart-on-config-change"]).returncode == 0
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns != mtime


def test_code_fingerprint_names_the_files_that_changed():
    from malm.train.trainer import changed_code, code_fingerprint

    fp = code_fingerprint()
    assert {"config.py", "train/trainer.py", "models/malm.py"} <= set(fp)
    assert changed_code(fp) == []
    assert changed_code({**fp, "config.py": "0" * 64, "gone.py": "0" * 64}) == ["config.py", "gone.py"]


def test_a_run_made_by_other_code_is_a_different_run(tmp_path, tiny_data):
    """DVC re-runs `train` after a code edit; the finished checkpoint (same config) must not count:
    refused naming the file, or restarted with --restart-on-config-change."""
    from malm.io import load_checkpoint, save_checkpoint

    run_dir = tmp_path / "run"
    args = train_args(run_dir, tiny_data, variant="baseline", **{"train.epochs": 1})
    assert run(args).returncode == 0
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert "losses/triplet.py" in state["code"]
    state["code"]["losses/triplet.py"] = "0" * 64  # as if trained by an older triplet loss
    save_checkpoint(run_dir / "checkpoint.pt", state)
    mtime = (run_dir / "checkpoint.pt").stat().st_mtime_ns
    p = run(args)
    assert p.returncode == 2 and "malm/losses/triplet.py" in p.stderr, p.stderr[-2000:]
    assert (run_dir / "checkpoint.pt").stat().st_mtime_ns == mtime  # nothing lost
    assert run(args + ["--restart-on-config-change"]).returncode == 0
    assert load_checkpoint(run_dir / "checkpoint.pt")["code"]["losses/triplet.py"] != "0" * 64


def _epochs_done(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "history.json").read_text()))
    except (OSError, json.JSONDecodeError):
        return 0


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, tiny_data):
    extra = {"train.epochs": 3}
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    p = run(train_args(ref_dir, tiny_data, **extra))
    assert p.returncode == 0, p.stderr[-3000:]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(MALM + train_args(killed_dir, tiny_data, **extra), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _epochs_done(killed_dir) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be killed"
    time.sleep(0.5)  # well into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _epochs_done(killed_dir) < 3

    p = run(train_args(killed_dir, tiny_data, **extra))  # resume
    assert p.returncode == 0, p.stderr[-3000:]
    ref = json.loads((ref_dir / "metrics.json").read_text())
    got = json.loads((killed_dir / "metrics.json").read_text())
    ref.pop("wall_s"), got.pop("wall_s")
    assert got == ref
    a = torch.load(ref_dir / "checkpoint.pt", weights_only=True)
    b = torch.load(killed_dir / "checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    timing = ("train/samples_per_s", "train/seconds")  # wall-clock figures differ run to run
    strip = lambda h: [{k: v for k, v in r.items() if k not in timing} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    starts = [s["start_epoch"] for s in json.loads((killed_dir / "starts.json").read_text())]
    assert starts[0] == 0 and len(starts) == 2 and 1 <= starts[1] < 3, starts  # the resume is on record


@pytest.mark.parametrize("variant", ["baseline", "no_mask", "mask_both"])
def test_variants_train_through_cli(tmp_path, tiny_data, variant):
    p = run(train_args(tmp_path / variant, tiny_data, variant=variant, **{"train.epochs": 1}))
    assert p.returncode == 0, p.stderr[-3000:]
    hist = json.loads((tmp_path / variant / "history.json").read_text())[0]
    losses = {k for k in hist if k.endswith("_loss")}
    expected = {"baseline": {"train/itc_loss"},
                "no_mask": {"train/itc_loss", "train/gc_loss", "train/lc_loss"},
                "mask_both": {"train/itc_loss", "train/gc_loss", "train/lc_loss", "train/dist_loss"}}
    assert losses == expected[variant]


def test_ddp_two_ranks_on_cpu_with_the_image_encoder_frozen_then_trained(tmp_path, tiny_data):
    """The DDP path (what submitit's distributed environment sets up on Slurm) with gloo on CPU,
    through the freeze: epoch 1 with the image encoder frozen, epoch 2 with it training (DDP is
    rebuilt when the trainable set changes), and the class-balanced sampler split across ranks."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    cmd = [torchrun, "--nproc-per-node", "2", "-m", "malm.cli",
           *train_args(tmp_path / "ddp", tiny_data, **{
               "train.epochs": 2, "train.freeze_image_epochs": 1, "data.batch_sampler": "triplet_classif",
               "data.sampler_background_frac": 0.0})]  # the synthetic titles all name a dish: no background
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    hist = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert len(hist) == 2 and all(h["train/dist_loss"] > 0 for h in hist)
    assert all(h["train/sem_pos_frac"] == 1.0 for h in hist)  # every anchor has a class partner
    state = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    assert state["finished"]
    # the image encoder moved only in epoch 2, and both ranks stayed in step (one set of weights)
    best = torch.load(tmp_path / "ddp" / "checkpoint_best.pt", weights_only=True)
    assert best["epoch"] in (1, 2) and state["best"]["epoch"] == best["epoch"]


def test_ddp_gathered_losses_and_gradients_equal_the_single_process_ones(tmp_path, tiny_data):
    """2 ranks x 16 samples == 1 process x 32 samples: every loss term (the mean over ranks) and
    every parameter gradient (DDP's mean over ranks) within float tolerance. Uses `batch`
    candidates and the default hard negatives (both draw from the same generator on every rank)."""
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    for candidates in ("hard", "batch"):
        out = tmp_path / f"{candidates}.json"
        cmd = [torchrun, "--nproc-per-node", "2", str(REPO / "tests" / "ddp_equivalence_worker.py"),
               str(SMOKE), tiny_data["data.cache_dir"], str(out), f"model.matching.candidates={candidates}",
               "model.matching.num_negatives=3"]
        p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        res = json.loads(out.read_text())
        assert set(res["ref"]) == {"loss", "itc_loss", "gc_loss", "lc_loss", "dist_loss"}
        for k, v in res["ref"].items():
            assert res["ddp"][k] == pytest.approx(v, rel=1e-4, abs=1e-5), (candidates, k)
        assert res["worst_grad_rel_err"] < 1e-3, res


@pytest.fixture
def restore_threads():
    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.set_num_threads(before[1])


def test_matching_backward_is_bit_reproducible_on_two_threads(restore_threads):
    """The matching module fuses each image with many candidate recipes, so its gather repeats rows;
    with ``i_all[pi]`` the backward added the repeats with atomics on 2+ threads and the gradients
    changed in the last bit from run to run (MALM runs of two clones ended 0.13 points of R@1
    apart). With index_select they are the same every time, without deterministic mode."""
    from malm import config as C
    from malm.losses.contrastive import GlobalContrastiveLoss, LocalContrastiveLoss
    from malm.models.matching import TwoLevelMatching
    from malm.train.seeding import set_deterministic

    torch.set_num_threads(2)
    assert not set_deterministic(False, torch.device("cpu"))  # the default
    cfg = C.merge(C.MatchingConfig(), {"width": 48, "heads": 2, "num_negatives": 12})
    torch.manual_seed(0)
    module = TwoLevelMatching(cfg, 96, 48, global_loss=True, local_loss=True)
    g = torch.Generator().manual_seed(0)
    B, P, S = 64, 64, 40  # the CPU default: 8 x 8 patches (+ CLS), ~40 recipe tokens
    img = torch.randn(B, 1 + P, 96, generator=g)
    rec = torch.randn(B, S, 48, generator=g)
    pad = torch.rand(B, S, generator=g) < 0.3
    emb_i, emb_r = torch.randn(B, 16, generator=g), torch.randn(B, 16, generator=g)
    grads = []
    for _ in range(4):
        module.zero_grad()
        leaf_i, leaf_r = img.clone().requires_grad_(), rec.clone().requires_grad_()
        out = module(leaf_i, leaf_r, pad, emb_i, emb_r, torch.Generator().manual_seed(1))
        loss = GlobalContrastiveLoss()(out)["gc_loss"] + LocalContrastiveLoss()(out)["lc_loss"]
        loss.backward()
        grads.append([leaf_i.grad, leaf_r.grad] + [p.grad.clone() for p in module.parameters()])
    for other in grads[1:]:
        assert all(torch.equal(a, b) for a, b in zip(grads[0], other))


def test_deterministic_mode_on_request(restore_threads):
    from malm.train.seeding import set_deterministic

    assert set_deterministic(True, torch.device("cuda"))  # no CUDA call: only the flag and the env
    assert torch.are_deterministic_algorithms_enabled() and os.environ["CUBLAS_WORKSPACE_CONFIG"]
    assert not set_deterministic(False, torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()


def test_matching_variant_is_bit_reproducible_on_two_threads(tmp_path, tiny_data):
    """Two runs of MALM (every loss on) with 2 threads and the default train.deterministic=false
    end with the same weights to the bit (this failed before the matching module's index_select)."""
    dirs = [tmp_path / "a", tmp_path / "b"]
    for d in dirs:
        p = run(train_args(d, tiny_data, **{"train.epochs": 1, "train.threads": 2,
                                             "train.freeze_image_epochs": 0}))
        assert p.returncode == 0, p.stderr[-3000:]
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True)["model"] for d in dirs)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def test_deterministic_key_is_checked(tmp_path, tiny_data):
    p = run(train_args(tmp_path / "run", tiny_data, **{"train.deterministic": "sometimes"}))
    assert p.returncode != 0 and "train.deterministic" in p.stderr, p.stderr[-2000:]
