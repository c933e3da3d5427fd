"""The Table 1 peers in the suite's harness: H-T (``baselines/ht.yaml``) and full T-Food
(``baselines/tfood.yaml``).

* H-T's triplet equals H-T's own ``TripletLoss`` (re-implemented here from
  ``src/utils/loss.py``, with ``nn.MarginRankingLoss`` as there), and neither it nor the recipe
  loss can fall on inputs that carry no pairing: constant images (the retrieval loss) and identical
  recipes (the recipe-component loss).
* T-Food's ITM loss counts T-Food's pairs (B positives, one negative recipe per image and one
  negative image per recipe), cannot be learnt from constant images (it stays at the entropy of
  its labels, up to the hard-negative sampler's bias), and falls well below it with informative
  images; re-ranking scores a pair by the ITM head's match logit.
* H-T's step learning-rate schedule.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from malm.config import LossConfig, MatchingConfig
from malm.losses.ht import HTTripletLoss, RecipeComponentLoss, ht_triplet
from malm.losses.itm import ITMLoss, itm_rows_and_labels, label_entropy
from malm.models.malm import ComponentProjectors
from malm.models.matching import TwoLevelMatching
from malm.train.schedules import lr_factor


# ------------------------------------------------------------------------------ H-T's losses
def ht_reference(im: torch.Tensor, s: torch.Tensor, margin: float = 0.3) -> torch.Tensor:
    """H-T's TripletLoss.forward (cosine), line by line."""
    scores = 1 - F.normalize(im, dim=-1).mm(F.normalize(s, dim=-1).t())
    pos = torch.eye(im.size(0)) == 1
    d1 = scores.diag().view(im.size(0), 1)
    d2 = d1.t()
    y = torch.ones(scores.size(0)).expand_as(scores)
    rank = nn.MarginRankingLoss(margin=margin, reduction="none")
    cost_im = rank(scores, d1.expand_as(scores), y).masked_fill_(pos, 0)
    cost_s = rank(scores, d2.expand_as(scores), y).masked_fill_(pos, 0)
    return (cost_s + cost_im).mean()


@pytest.mark.parametrize("margin", [0.3, 0.1])
def test_ht_triplet_equals_h_ts_own_loss(margin):
    g = torch.Generator().manual_seed(0)
    for B in (2, 7, 32):
        a, b = torch.randn(B, 12, generator=g), torch.randn(B, 12, generator=g)
        assert ht_triplet(a, b, margin).item() == pytest.approx(ht_reference(a, b, margin).item(),
                                                                abs=1e-6)
    # a perfect embedding (every pair far closer than any other) costs nothing
    eye = torch.eye(8)
    assert ht_triplet(eye, eye, margin).item() == 0.0
    out = HTTripletLoss(margin)(eye, eye, cls=None, epoch=3)
    assert out["itc_loss"].item() == 0.0 and out["margin"].item() == pytest.approx(margin)


def test_ht_triplet_cannot_fall_below_its_bound_on_constant_images():
    """With one image for every recipe, d(i, j) depends on the recipe j only, so the image-anchored
    hinges sum to at least margin x B(B-1) (their unclamped sum is exactly that): the loss stays at
    or above margin (B-1)/B whatever the recipe side learns. With informative images it falls."""
    torch.manual_seed(0)
    B, E, m = 16, 8, 0.3
    rec_in = torch.randn(64, E)
    for informative, expect_low in ((False, False), (True, True)):
        rec_net, img_net = nn.Linear(E, E), nn.Linear(E, E)
        opt = torch.optim.Adam([*rec_net.parameters(), *img_net.parameters()], lr=1e-2)
        losses = []
        for step in range(200):
            idx = torch.randperm(64)[:B]
            img_in = rec_in[idx] if informative else torch.ones(B, E)
            loss = ht_triplet(img_net(img_in), rec_net(rec_in[idx]), m)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if expect_low:
            assert sum(losses[-20:]) / 20 < 0.2 * m
        else:
            assert min(losses) >= m * (B - 1) / B - 1e-5, min(losses)


def test_recipe_component_loss_pairs_and_identical_recipes():
    """Each ordered pair (a, b) compares component b with a's projection into b's space; identical
    recipes in a batch leave nothing to rank, so the loss is 2 margin (B-1)/B exactly, whatever the
    projectors learn; distinct recipes let it fall."""
    torch.manual_seed(0)
    B, W, m = 8, 6, 0.3
    proj = ComponentProjectors(W)
    loss_fn = RecipeComponentLoss(m)
    pooled = torch.randn(B, 3 * W)
    out = proj(pooled)
    comps = pooled.view(B, 3, W).transpose(0, 1)
    assert torch.equal(out["rec_components"], comps)
    by_hand = torch.stack([ht_triplet(comps[b], proj.maps[k](comps[a]), m)
                           for k, (a, b) in enumerate([(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)])])
    assert loss_fn(out)["recipe_loss"].item() == pytest.approx(by_hand.mean().item(), abs=1e-6)

    opt = torch.optim.Adam(proj.parameters(), lr=1e-2)
    same = torch.randn(1, 3 * W).expand(B, -1)
    for _ in range(50):
        loss = loss_fn(proj(same))["recipe_loss"]
        assert loss.item() == pytest.approx(2 * m * (B - 1) / B, abs=1e-5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    first = loss_fn(proj(pooled))["recipe_loss"].item()
    for _ in range(200):
        loss = loss_fn(proj(pooled))["recipe_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first


# ------------------------------------------------------------------------------ T-Food's ITM
def test_itm_counts_t_foods_pairs():
    """One hard negative per anchor and direction: B positives (label 1), B negative recipes and B
    negative images (label 0), as T-Food's ``itm_labels``; the positive of each anchor once."""
    cand_i2r = torch.tensor([[0, 5], [1, 4], [2, 6]])
    cand_r2i = torch.tensor([[0, 7], [1, 8], [2, 5]])
    out = {"cand_i2r": cand_i2r, "cand_r2i": cand_r2i, "target_i2r": torch.zeros(3, dtype=torch.long),
           "target_r2i": torch.zeros(3, dtype=torch.long)}
    rows, labels = itm_rows_and_labels(out)
    assert rows.tolist() == [0, 1, 2, 5, 4, 6, 7, 8, 5]
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert label_entropy(out) == pytest.approx(math.log(3) - 2 / 3 * math.log(2))
    logits = torch.tensor([[0.0, 8.0]] * 3 + [[8.0, 0.0]] * 6)  # "match" exactly for the positives
    res = ITMLoss()({**out, "pair_itm": logits})
    assert res["itm_acc"].item() == 1.0 and res["itm_loss"].item() < 0.01


N, B, P, S, C = 96, 16, 4, 6, 16


def _train_itm(informative: bool, steps: int = 150) -> tuple[list[float], float]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    rec_tokens = torch.randn(N, S, C, generator=g)
    rec_pad = torch.zeros(N, S, dtype=torch.bool)
    rec_pad[:, -2:] = torch.rand(N, 2, generator=g) < 0.5
    rec_emb = F.normalize(torch.randn(N, 8, generator=g), dim=-1)
    if informative:  # each image shows its recipe: a fixed mixing of the recipe's tokens
        mix = torch.randn(S, 1 + P, generator=g) / math.sqrt(S)
        img_tokens = torch.einsum("nsc,sp->npc", rec_tokens, mix) + 0.1 * torch.randn(N, 1 + P, C, generator=g)
        img_emb = rec_emb
    else:  # one grey picture for every recipe
        img_tokens = torch.randn(1, 1 + P, C, generator=g).expand(N, -1, -1)
        img_emb = F.normalize(torch.ones(N, 8), dim=-1)
    cfg = MatchingConfig(width=C, psi_layers=1, psi_prime_layers=1, heads=2, num_negatives=1)
    module = TwoLevelMatching(cfg, C, C, global_loss=False, local_loss=False, itm=True)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    itm, hist, chance = ITMLoss(), [], 0.0
    for step in range(steps):
        idx = torch.randperm(N, generator=g)[:B]
        out = module(img_tokens[idx], rec_tokens[idx], rec_pad[idx], img_emb[idx], rec_emb[idx],
                     torch.Generator().manual_seed(step))
        loss = itm(out)["itm_loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        hist.append(loss.item())
        chance = label_entropy(out)
    return hist, chance


def test_constant_images_keep_itm_at_the_label_entropy():
    """The head may learn the share of positives (the label entropy, 0.637 nats) and how often the
    sampler draws a recipe as a negative, nothing more: the tolerance is 0.05 nats, as for L_GC."""
    hist, chance = _train_itm(informative=False)
    assert chance == pytest.approx(math.log(3) - 2 / 3 * math.log(2))
    assert min(hist[-30:]) >= chance - 0.05 and sum(hist[-30:]) / 30 >= chance - 0.05, min(hist)


def test_informative_images_let_itm_fall():
    hist, chance = _train_itm(informative=True, steps=300)
    assert sum(hist[-30:]) / 30 < 0.5 * chance


def test_rerank_scores_pairs_by_the_itm_match_logit():
    from malm.eval.rerank import pair_scores, score_kind

    torch.manual_seed(0)
    cfg = MatchingConfig(width=C, psi_layers=1, psi_prime_layers=2, heads=2)
    module = TwoLevelMatching(cfg, C, C, global_loss=False, local_loss=False, itm=True).eval()
    assert score_kind(module) == "itm"
    img, rec = torch.randn(5, 1 + P, C), torch.randn(5, S, C)
    pad = torch.zeros(5, S, dtype=torch.bool)
    pad[1, -3:] = True
    with torch.no_grad():
        _, _, r_att = module.fuse_pairs(img, rec, pad, need_weights=False)
        expected = module.itm_head((r_att * (~pad)[..., None]).sum(1) / (~pad).sum(1, keepdim=True))[:, 1]
        got = pair_scores(module, img, rec, pad, "itm")
    assert torch.allclose(got, expected, atol=1e-6)
    no_itm = TwoLevelMatching(cfg, C, C, global_loss=True, local_loss=False)
    assert score_kind(no_itm) == "global"
    with pytest.raises(ValueError, match="no ITM head"):
        no_itm.itm_logits(r_att, pad)


def test_criterion_weights_the_peer_terms():
    from malm.losses.criterion import MALMCriterion

    cfg = LossConfig(lambda_gc=0.0, lambda_lc=0.0, lambda_dist=0.0, lambda_itm=0.5,
                     lambda_recipe=2.0, retrieval="ht")
    g = torch.Generator().manual_seed(0)
    out = {"img_emb": F.normalize(torch.randn(4, 8, generator=g), dim=-1),
           "rec_emb": F.normalize(torch.randn(4, 8, generator=g), dim=-1),
           "pair_itm": torch.randn(12, 2, generator=g),
           "cand_i2r": torch.tensor([[0, 4], [1, 5], [2, 6], [3, 7]]),
           "cand_r2i": torch.tensor([[0, 8], [1, 9], [2, 10], [3, 11]]),
           "target_i2r": torch.zeros(4, dtype=torch.long), "target_r2i": torch.zeros(4, dtype=torch.long),
           "rec_components": torch.randn(3, 4, 5, generator=g),
           "rec_projected": torch.randn(6, 4, 5, generator=g)}
    logs = MALMCriterion(cfg)(out, {"cls": torch.zeros(4, dtype=torch.long)})
    expected = (ht_triplet(out["img_emb"], out["rec_emb"], 0.3) + 0.5 * logs["itm_loss"]
                + 2.0 * logs["recipe_loss"])
    assert logs["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert "sirr" not in logs and "gc_loss" not in logs
    with pytest.raises(KeyError, match="ITM"):
        MALMCriterion(cfg)({k: v for k, v in out.items() if k != "pair_itm"},
                           {"cls": torch.zeros(4, dtype=torch.long)})


# ------------------------------------------------------------------------------ schedules
def test_step_schedule_is_h_ts_steplr():
    """StepLR(step_size=30 epochs, gamma=0.1) stepped per epoch = a factor of 0.1 every 30 x steps
    per epoch optimiser steps."""
    f = lr_factor(0, 10_000, "step", step_every=30 * 10, gamma=0.1)
    assert [f(s) for s in (0, 299, 300, 599, 600)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])
    with pytest.raises(ValueError, match="step_every"):
        lr_factor(0, 10, "step")
