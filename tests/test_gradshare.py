"""Gradient norms per loss term on the shared encoders (malm.train.gradshare) and their logging."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from malm.train.gradshare import parameter_groups, shares, term_grad_norms, weighted_terms
from test_train import run, train_args


class Toy(nn.Module):
    """Parameter names as MALM's: a ViT, a word embedding and the rest of the recipe encoder."""

    def __init__(self):
        super().__init__()
        self.image_encoder = nn.Module()
        self.image_encoder.vit = nn.Linear(3, 2)
        self.recipe_encoder = nn.Module()
        self.recipe_encoder.embedding = nn.Embedding(5, 2)
        self.recipe_encoder.sent = nn.Linear(2, 2)
        self.head = nn.Linear(2, 2)  # in no group


def test_norms_by_hand_and_terms_that_do_not_reach_a_group():
    torch.manual_seed(0)
    m = Toy()
    w_vit, w_sent = m.image_encoder.vit.weight, m.recipe_encoder.sent.weight
    # d/dw (c/2 ||w||^2) = c w: the norm is c ||w|| on the group that w belongs to, 0 elsewhere
    terms = weighted_terms({"itc_loss": 0.5 * w_sent.pow(2).sum(), "gc_loss": 0.5 * w_vit.pow(2).sum(),
                            "lc_loss": (m.head.weight ** 2).sum()},
                           {"itc": 2.0, "gc": 0.1, "lc": 1.0, "dist": 1.0})
    assert set(terms) == {"itc", "gc", "lc"}  # dist: no such loss in the output
    norms = term_grad_norms(terms, parameter_groups(m))
    assert norms["grad/itc/recipe"] == pytest.approx(2.0 * w_sent.norm().item(), rel=1e-6)
    assert norms["grad/gc/vit"] == pytest.approx(0.1 * w_vit.norm().item(), rel=1e-6)
    assert norms["grad/itc/vit"] == 0.0 and norms["grad/gc/recipe"] == 0.0
    assert norms["grad/lc/recipe"] == 0.0 and norms["grad/lc/word_embedding"] == 0.0  # head only
    sh = shares(norms)
    assert sh["grad_share/itc/recipe"] == pytest.approx(1.0) and sh["grad_share/gc/vit"] == pytest.approx(1.0)
    assert "grad_share/itc/word_embedding" not in sh  # no term reaches it: no share
    # the graph survives for the step's backward, and the parameters' .grad is untouched
    assert m.recipe_encoder.sent.weight.grad is None
    terms["itc"].backward()
    assert m.recipe_encoder.sent.weight.grad is not None


def test_frozen_parameters_are_no_group():
    m = Toy()
    m.image_encoder.vit.requires_grad_(False)
    assert set(parameter_groups(m)) == {"recipe", "word_embedding"}


def test_zero_weight_term_is_not_differentiated():
    w = nn.Parameter(torch.ones(2))
    assert weighted_terms({"gc_loss": w.sum(), "itc_loss": w.sum()}, {"gc": 0.0, "itc": 1.0}).keys() == {"itc"}


def test_training_logs_gradient_norms_and_they_do_not_change_the_weights(tmp_path, tiny_data):
    runs = {}
    for on in (True, False):
        run_dir = tmp_path / f"log{on}"
        p = run(train_args(run_dir, tiny_data, **{"train.epochs": 2, "train.freeze_image_epochs": 1,
                                                  "train.log_every": 2, "train.log_grad_norms": on}))
        assert p.returncode == 0, p.stderr[-3000:]
        runs[on] = run_dir
    hist = json.loads((runs[True] / "history.json").read_text())
    frozen, trained = hist
    # every active term on the recipe encoder; the ViT only once it trains
    for term in ("itc", "gc", "lc", "dist"):
        assert f"grad/{term}/recipe" in frozen and f"grad/{term}/vit" not in frozen
        assert f"grad/{term}/vit" in trained
    assert frozen["grad/itc/recipe"] > 0 and frozen["grad/gc/recipe"] > 0
    assert frozen["grad/dist/recipe"] == 0.0  # L_dist never reaches the recipe encoder
    assert trained["grad/dist/vit"] > 0  # distillation reaches the student once it trains
    for group in ("recipe", "vit"):
        total = sum(trained[f"grad_share/{t}/{group}"] for t in ("itc", "gc", "lc", "dist"))
        assert total == pytest.approx(1.0)
    assert not any(k.startswith("grad") for k in json.loads((runs[False] / "history.json").read_text())[0])
    a = torch.load(runs[True] / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(runs[False] / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # logging is observation only


def test_distillation_changes_the_student_in_the_default_schedule(tmp_path, tiny_data):
    """params.yaml's schedule (epochs, frozen epochs, the teacher's momentum) on the tiny data: the
    ViT trains in some epoch, L_dist's gradient reaches it there, the EMA teacher is not the
    student at the end (its targets are not the student's own features), and the student's
    weights differ from the same run without L_dist."""
    import yaml

    from conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    tr, distill = params["train"], params["model"].get("distill", {})
    assert tr["freeze_image_epochs"] < tr["epochs"], "the default schedule never trains the ViT"
    common = {"train.epochs": tr["epochs"], "train.freeze_image_epochs": tr["freeze_image_epochs"],
              "train.lr_image": tr["lr_image"], "train.log_every": 1,
              **{f"model.distill.{k}": distill[k] for k in ("momentum", "momentum_end") if k in distill}}
    runs = {}
    for lam in (1.0, 0.0):
        run_dir = tmp_path / f"dist{lam}"
        p = run(train_args(run_dir, tiny_data, **common, **{"loss.lambda_dist": lam}))
        assert p.returncode == 0, p.stderr[-3000:]
        runs[lam] = run_dir
    hist = json.loads((runs[1.0] / "history.json").read_text())
    trained = hist[tr["freeze_image_epochs"]:]
    assert trained and all(r["grad/dist/vit"] > 0 for r in trained)
    state = torch.load(runs[1.0] / "checkpoint.pt", weights_only=True)["model"]
    student = {k[len("image_encoder."):]: v for k, v in state.items() if k.startswith("image_encoder.vit.")}
    teacher = {k[len("teacher.module."):]: v for k, v in state.items() if k.startswith("teacher.module.vit.")}
    assert student.keys() == teacher.keys() and student
    assert any(not torch.equal(student[k], teacher[k]) for k in student)
    other = torch.load(runs[0.0] / "checkpoint.pt", weights_only=True)["model"]
    assert any(not torch.equal(state[k], other[k]) for k in state if k.startswith("image_encoder.vit."))
