"""The one training step (malm.train.step): what it updates, and that the benchmark and the stand-in
pretraining run it rather than a copy."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO
from malm import config as C
from malm import variants
from malm.train import step as step_mod
from malm.train.step import build_training, train_step

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_train_step as bench  # noqa: E402

TINY = {"model": {"image": {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 1, "num_heads": 2,
                            "pretrained": None},
                  "recipe": {"width": 32, "layers": 1, "heads": 2, "decoder_layers": 1},
                  "matching": {"width": 32, "heads": 2},
                  "distill": {"predictor_layers": 1, "predictor_heads": 2, "predictor_width": 32},
                  "embed_dim": 32},
        "train": {"warmup_steps": 0, "epochs": 2}}


def tiny_cfg(variant: str = "malm") -> C.Config:
    return variants.resolve(variant, C.merge(C.Config(), TINY))


def test_one_step_updates_weights_schedule_and_teacher():
    cfg = tiny_cfg("malm")
    t = build_training(cfg, bench.VOCAB, torch.device("cpu"), steps_per_epoch=3)
    model = t.model.train()
    batch = bench.make_batch(cfg, 8, torch.device("cpu"), seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    teacher_before = [p.detach().clone() for p in model.teacher.module.parameters()]
    losses, norms = train_step(t, model, batch, epoch=1, i=2)
    assert torch.isfinite(losses["loss"]) and norms == {}
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any(n.startswith("recipe_encoder.") for n in moved)
    assert any(n.startswith("image_encoder.vit.") for n in moved)
    assert t.scheduler.last_epoch == 1  # one scheduler step
    # EMA at the schedule's momentum of global step 1 * 3 + 2 = 5 (the last one of 2 x 3 steps)
    m = float(t.momentum[5])
    student = list(model.image_encoder.parameters())
    for tp, t0, sp in zip(model.teacher.module.parameters(), teacher_before, student):
        torch.testing.assert_close(tp, m * t0 + (1 - m) * sp.detach())


def test_grad_norms_are_logged_without_changing_the_update():
    cfg = tiny_cfg("malm")
    batch = bench.make_batch(cfg, 8, torch.device("cpu"), seed=1)
    weights = []
    for log_norms in (False, True):
        t = build_training(cfg, bench.VOCAB, torch.device("cpu"), steps_per_epoch=2)
        _, norms = train_step(t, t.model.train(), batch, 0, 0, log_grad_norms=log_norms)
        assert bool(norms) == log_norms
        weights.append({n: p.detach().clone() for n, p in t.model.named_parameters()})
    assert {k for k in norms} >= {"grad/itc/recipe", "grad/gc/vit", "grad/dist/vit"}
    for n, w in weights[0].items():
        assert torch.equal(w, weights[1][n]), n


def test_non_finite_loss_is_an_error():
    cfg = tiny_cfg("baseline")
    t = build_training(cfg, bench.VOCAB, torch.device("cpu"), steps_per_epoch=1)
    t.criterion = lambda out, batch, epoch: {"loss": torch.tensor(float("nan"), requires_grad=True)}
    with pytest.raises(FloatingPointError, match="non-finite loss at epoch 0 step 0"):
        train_step(t, t.model, bench.make_batch(cfg, 4, torch.device("cpu"), seed=0), 0, 0)


def test_the_benchmark_times_the_training_step(monkeypatch):
    calls = []

    def counting(t, module, batch, epoch, i, **kw):
        calls.append(i)
        return step_mod.train_step(t, module, batch, epoch, i, **kw)

    monkeypatch.setattr(bench, "train_step", counting)
    args = bench.make_parser().parse_args(["--batch", "4", "--steps", "1", "--warmup", "1"])
    base = C.merge(C.Config(), TINY)
    runner = bench.malm_runner("malm", base, args, torch.device("cpu"), bench.contextlib.nullcontext,
                               compiled=False)
    assert runner.ok, runner.error
    runner.run(0, record=False)
    runner.run(1, record=True)
    assert calls == [0, 1] and len(runner.times) == 1


def test_pretraining_steps_through_train_step(monkeypatch, tmp_path):
    from malm.train import pretrain as pt

    calls = []

    def counting(t, module, batch, epoch, i, **kw):
        calls.append((epoch, i))
        return step_mod.train_step(t, module, batch, epoch, i, **kw)

    monkeypatch.setattr(pt, "train_step", counting)
    cfg = C.merge(C.Config(), {
        **TINY, "synth": {"n_train": 32, "n_val": 16, "n_test": 16, "image_size": 40, "workers": 1},
        "data": {"min_word_count": 1, "cache_image_size": 36},
        "pretrain": {"root": str(tmp_path / "synth"), "cache_dir": str(tmp_path / "cache"),
                     "out": str(tmp_path / "vit.pt"), "n_train": 32, "n_val": 16, "epochs": 1,
                     "batch_size": 16}})
    summary = pt.pretrain(cfg, progress=False)
    assert calls == [(0, 0), (0, 1)] and summary["steps"] == 2
