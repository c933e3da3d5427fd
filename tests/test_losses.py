"""Losses against hand-written loop references; EMA update and momentum schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from malm.config import LossConfig, merge
from malm.losses import (GlobalContrastiveLoss, LocalContrastiveLoss, MALMCriterion,
                         MaskedDistillLoss, SemanticTripletLoss)
from malm.losses.criterion import loss_terms
from malm.models.ema import EMATeacher
from malm.train.schedules import cosine_momentum_schedule


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------ contrastive, by hand
def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _dot(a, b) -> float:
    return sum(x * y for x, y in zip(a, b))


def _info_nce_loops(sim: list[list[float]]) -> float:
    """Bidirectional InfoNCE by loops over a full candidate matrix sim[i][j] (image i, recipe j):
    mean over anchors of -log softmax at the match, image rows and recipe columns."""
    B = len(sim)
    i2r = sum(-sim[i][i] + math.log(sum(math.exp(sim[i][j]) for j in range(B)))
              for i in range(B)) / B
    r2i = sum(-sim[j][j] + math.log(sum(math.exp(sim[i][j]) for i in range(B)))
              for j in range(B)) / B
    return 0.5 * (i2r + r2i)


def _matching_out(B=2, P=3, S=4, D=3, scale=5.0):
    """Fused features of every (image i, recipe j) pair, pair row i * B + j (`batch` candidates)."""
    U = B * B
    i_att = torch.randn(U, 1 + P, D)
    r_att = torch.randn(U, S, D)
    rec_pad = torch.zeros(U, S, dtype=torch.bool)
    rec_pad[[u for u in range(U) if u % B == 1], 3] = True  # recipe 1's last token is a pad
    logits = torch.randn(U, 1 + P, S).masked_fill(rec_pad[:, None, :], float("-inf"))
    pairs = torch.arange(U).view(B, B)
    return {"pair_i_att": i_att, "pair_r_att": r_att, "pair_rec_pad": rec_pad,
            "pair_attn": logits.softmax(-1), "cand_i2r": pairs, "target_i2r": torch.arange(B),
            "cand_r2i": pairs.t().contiguous(), "target_r2i": torch.arange(B),
            "logit_scale_gc": torch.tensor(scale), "logit_scale_lc": torch.tensor(scale)}


def test_global_contrastive_by_hand():
    out = _matching_out()
    B = out["cand_i2r"].shape[0]
    S = out["pair_r_att"].shape[1]

    def pair_logit(u):
        img = out["pair_i_att"][u, 0].tolist()
        toks = [out["pair_r_att"][u, s].tolist() for s in range(S) if not out["pair_rec_pad"][u, s]]
        rec = [sum(t[d] for t in toks) / len(toks) for d in range(len(toks[0]))]  # pad-masked mean
        return 5.0 * _dot(_unit(img), _unit(rec))

    expected = _info_nce_loops([[pair_logit(i * B + j) for j in range(B)] for i in range(B)])
    got = GlobalContrastiveLoss()(out)["gc_loss"]
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_local_contrastive_by_hand():
    out = _matching_out()
    B = out["cand_i2r"].shape[0]
    _, P1, S = out["pair_attn"].shape
    D = out["pair_r_att"].shape[-1]

    def patch_logit(u, p):
        img = out["pair_i_att"][u, p].tolist()
        rec = [sum(out["pair_attn"][u, p, s].item() * out["pair_r_att"][u, s, d].item() for s in range(S))
               for d in range(D)]
        return 5.0 * _dot(_unit(img), _unit(rec))

    per_patch = [_info_nce_loops([[patch_logit(i * B + j, p) for j in range(B)] for i in range(B)])
                 for p in range(1, P1)]  # patches only, CLS excluded
    expected = sum(per_patch) / len(per_patch)
    got = LocalContrastiveLoss()(out)["lc_loss"]
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_local_ignores_pad_tokens_and_has_grads():
    out = _matching_out()
    for k in ("pair_i_att", "pair_r_att"):
        out[k].requires_grad_(True)
    loss = LocalContrastiveLoss()(out)["lc_loss"]
    out2 = dict(out)
    out2["pair_r_att"] = out["pair_r_att"].detach().clone()
    out2["pair_r_att"][1, 3] = 1e3  # a pad token: zero attention weight
    assert LocalContrastiveLoss()(out2)["lc_loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert out["pair_i_att"].grad.abs().sum() > 0 and out["pair_r_att"].grad.abs().sum() > 0


# ------------------------------------------------------------------ triplet, naive reference
def _naive_triplet(img, rec, cls, margin, n_neg, aggregation, sw):
    B = img.shape[0]
    d = 1 - F.normalize(img, dim=-1) @ F.normalize(rec, dim=-1).t()
    d = d.tolist()
    cls = cls.tolist()

    def aggregate(rows):
        costs = []
        for row in rows:
            row = sorted(row, reverse=True)
            costs += row[: n_neg] if n_neg else row
        if not costs:
            return 0.0
        if aggregation == "valid":
            nz = [c for c in costs if c > 0]
            return sum(costs) / len(nz) if nz else 0.0
        return sum(costs) / len(costs)

    def instance(dm):
        return aggregate([[max(0.0, dm[i][i] - dm[i][j] + margin) for j in range(B) if j != i]
                          for i in range(B)])

    def semantic(dm):
        rows = []
        for i in range(B):
            if cls[i] == 0:
                continue
            pos = [j for j in range(B) if j != i and cls[j] == cls[i]]
            negs = [j for j in range(B) if cls[j] != 0 and cls[j] != cls[i]]
            if not pos or not negs:
                continue
            rows.append([max(0.0, dm[i][pos[0]] - dm[i][j] + margin) for j in negs])
        return aggregate(rows)

    dt = [[d[j][i] for j in range(B)] for i in range(B)]
    terms = {"irr": instance(d), "rii": instance(dt)}
    total = terms["irr"] + terms["rii"]
    if sw > 0:
        terms["sirr"], terms["srii"] = semantic(d), semantic(dt)
        total += sw * (terms["sirr"] + terms["srii"])
        return total / 4, terms
    return total / 2, terms


@pytest.mark.parametrize("n_neg", [1, 3, None])
@pytest.mark.parametrize("aggregation", ["valid", "mean"])
@pytest.mark.parametrize("sw", [0.1, 0.0])
def test_triplet_against_naive_loops(n_neg, aggregation, sw):
    B = 10
    img, rec = torch.randn(B, 8), torch.randn(B, 8)
    rec[:5] = img[:5] + 0.3 * rec[:5]  # some easy pairs -> some zero (inactive) costs
    cls = torch.tensor([1, 1, 2, 2, 2, 0, 0, 3, 4, 4])  # class 3 has no partner
    loss = SemanticTripletLoss(0.18, 0.005, 0.3, sw, n_negatives=n_neg, aggregation=aggregation)
    epoch = 7
    margin = min(0.18 + 0.005 * epoch, 0.3)
    got = loss(img, rec, cls, epoch)
    expected, terms = _naive_triplet(img, rec, cls, margin, n_neg, aggregation, sw)
    assert got["itc_loss"].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    for k, v in terms.items():
        assert got[k].item() == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert ("sirr" in got) == (sw > 0)
    assert got["margin"].item() == pytest.approx(margin)


def test_triplet_hardest_negative_is_the_max():
    # anchor 0: d(0,0) = 0 (same direction), negatives at cos 0.9 (hard) and -1 (easy)
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    rec = torch.tensor([[1.0, 0.0], [0.9, math.sqrt(1 - 0.81)], [-1.0, 0.0]])
    cls = torch.zeros(3, dtype=torch.long)
    out = SemanticTripletLoss(0.3, 0, 0.3, 0.0, n_negatives=1, aggregation="mean")(img, rec, cls)
    d = 1 - F.normalize(img) @ F.normalize(rec).t()
    hardest_irr = [max(max(0.0, (d[i, i] - d[i, j] + 0.3).item()) for j in range(3) if j != i)
                   for i in range(3)]
    assert out["irr"].item() == pytest.approx(sum(hardest_irr) / 3, rel=1e-5)


def test_triplet_margin_schedule():
    loss = SemanticTripletLoss(0.18, 0.005, 0.3)
    assert loss.margin(0) == pytest.approx(0.18)
    assert loss.margin(10) == pytest.approx(0.23)
    assert loss.margin(100) == pytest.approx(0.3)


# ------------------------------------------------------------------ distillation
def test_distill_counts_only_masked_positions():
    B, P, C = 2, 5, 4
    pred, target = torch.randn(B, P, C, requires_grad=True), torch.randn(B, P, C)
    mask = torch.zeros(B, P, dtype=torch.bool)
    mask[0, [1, 3]] = True
    mask[1, [0, 4]] = True
    got = MaskedDistillLoss(beta=0.5)({"dist_pred": pred, "dist_target": target, "mask": mask})
    ref = []
    for b in range(B):
        for p in range(P):
            if mask[b, p]:
                diff = (pred[b, p] - target[b, p]).abs()
                ref.append(torch.where(diff < 0.5, 0.5 * diff**2 / 0.5, diff - 0.25).mean().item())
    assert got["dist_loss"].item() == pytest.approx(sum(ref) / len(ref), rel=1e-5)
    got["dist_loss"].backward()
    assert (pred.grad[~mask] == 0).all() and pred.grad[mask].abs().sum() > 0
    # changing unmasked predictions does not change the loss
    pred2 = pred.detach().clone()
    pred2[~mask] += 10
    again = MaskedDistillLoss(beta=0.5)({"dist_pred": pred2, "dist_target": target, "mask": mask})
    assert again["dist_loss"].item() == pytest.approx(got["dist_loss"].item())
    nothing = MaskedDistillLoss()({"dist_pred": pred, "dist_target": target,
                                   "mask": torch.zeros_like(mask)})
    assert nothing["dist_loss"].item() == 0.0


def test_distill_target_gets_no_grad():
    pred = torch.randn(1, 3, 2, requires_grad=True)
    target = torch.randn(1, 3, 2, requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    out = MaskedDistillLoss()({"dist_pred": pred, "dist_target": target, "mask": mask})
    out["dist_loss"].backward()
    assert target.grad is None


# ------------------------------------------------------------------ criterion
def _fake_out(B=4, P=3, S=5, D=6, C=7, E=8):
    out = _matching_out(B, P, S, D)
    out.update({"img_emb": F.normalize(torch.randn(B, E), dim=-1),
                "rec_emb": F.normalize(torch.randn(B, E), dim=-1),
                "dist_pred": torch.randn(B, P, C), "dist_target": torch.randn(B, P, C),
                "mask": torch.rand(B, P) > 0.5})
    return out


def test_criterion_weights_and_switches():
    out = _fake_out()
    batch = {"cls": torch.tensor([1, 1, 2, 0])}
    cfg = merge(LossConfig(), {"lambda_gc": 0.5, "lambda_lc": 2.0, "lambda_dist": 3.0})
    logs = MALMCriterion(cfg)(out, batch, epoch=1)
    assert set(loss_terms(logs)) == {"itc_loss", "gc_loss", "lc_loss", "dist_loss"}
    expected = (logs["itc_loss"] + 0.5 * logs["gc_loss"] + 2.0 * logs["lc_loss"]
                + 3.0 * logs["dist_loss"])
    assert logs["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    off = merge(LossConfig(), {"lambda_gc": 0.0, "lambda_lc": 0.0, "lambda_dist": 0.0})
    logs = MALMCriterion(off)(out, batch)
    assert set(loss_terms(logs)) == {"itc_loss"}
    assert logs["loss"].item() == pytest.approx(logs["itc_loss"].item())


# ------------------------------------------------------------------ EMA teacher
def test_ema_update_matches_formula():
    student = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Dropout(0.5))
    teacher = EMATeacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.normal_()
    t0 = [p.clone() for p in teacher.parameters()]
    m = 0.99
    teacher.update(student, m)
    for t, before, s in zip(teacher.parameters(), t0, student.parameters()):
        assert torch.allclose(t, m * before + (1 - m) * s, atol=1e-7)
    teacher.train()
    assert not teacher.training and not teacher.module.training
    assert all(not p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, requires_grad=True)
    assert not teacher(x).requires_grad


def test_momentum_schedule_endpoints():
    sched = cosine_momentum_schedule(0.996, 1.0, epochs=3, steps_per_epoch=5)
    assert isinstance(sched, np.ndarray) and sched.shape == (15,)
    assert sched[0] == pytest.approx(0.996)
    assert sched[-1] == pytest.approx(1.0)
    assert np.all(np.diff(sched) >= 0)
    assert sched[7] == pytest.approx(0.998)  # the cosine midpoint


def test_best_checkpoint_criteria_are_tfoods():
    from malm.train.checkpoint import is_better

    best = {"val/img2rec_medR": 5.0, "val/img2rec_R@1": 20.0}
    assert is_better({"val/img2rec_medR": 4.0, "val/img2rec_R@1": 10.0}, best)  # medR first
    assert not is_better({"val/img2rec_medR": 6.0, "val/img2rec_R@1": 90.0}, best)
    assert is_better({"val/img2rec_medR": 5.0, "val/img2rec_R@1": 21.0}, best)  # then R@1
    assert not is_better({"val/img2rec_medR": 5.0, "val/img2rec_R@1": 20.0}, best)  # ties keep the old


def test_semantic_positive_fraction_is_logged():
    loss = SemanticTripletLoss(n_negatives=None)
    img, rec = torch.randn(4, 8), torch.randn(4, 8)
    out = loss(img, rec, torch.tensor([1, 1, 2, 0]))
    assert out["sem_pos_frac"].item() == pytest.approx(0.5)
