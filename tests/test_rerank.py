"""Test-time re-ranking by the matching module (``malm.eval.rerank``): the rank rule by hand, its
limits (K >= B is pure matching-score ranking, K = 1 the dual encoder), the pair scorer against the
matching module's training path, checks that a re-ranker cannot win without looking at the pair,
the protocol names, the config keys, the report's two readings and `malm evaluate --run-dir` end
to end on a tiny trained run."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, SMOKE
from malm import config as C
from malm.eval.embed import SplitTokens
from malm.eval.metrics import ranks
from malm.eval.names import is_rerank, parse_protocol, protocol_reading, rerank_protocol
from malm.eval.rerank import (PairScorer, evaluate_rerank, pair_scores, rerank_bag_sizes,
                              rerank_protocols, rerank_ranks)
from malm.losses.similarity import pair_global_logits, pair_local_logits

FIXTURE = REPO / "tests" / "fixtures" / "results"


def table_score(scores: torch.Tensor):
    """score_fn of a known [B, B] score table: score[i, j] = image i with recipe j."""
    return lambda i, r: scores[i, r]


# ------------------------------------------------------------------------------ the rank rule
# rows = images, columns = recipes, true matches on the diagonal
SIM = torch.tensor([[0.90, 0.80, 0.10, 0.00, 0.05],
                    [0.70, 0.50, 0.60, 0.20, 0.01],
                    [0.30, 0.20, 0.40, 0.95, 0.02],
                    [0.10, 0.00, 0.30, 0.30, 0.03],
                    [0.20, 0.10, 0.00, 0.50, 0.45]])
SCORE = torch.tensor([[0.1, 0.5, 0.0, 0.0, 0.3],
                      [0.9, 0.7, 0.1, 0.0, 0.0],
                      [0.0, 0.0, 0.8, 0.2, 0.0],
                      [0.0, 0.0, 0.4, 0.4, 0.0],
                      [0.0, 0.0, 0.0, 0.3, 0.3]])


def test_hand_made_bag_both_directions():
    """K = 2. img2rec (rows), top 2 by cosine -> re-ordered by SCORE:
    0: {0 .90, 1 .80}, score 0 .1 < 1 .5           -> rank 2 (dual encoder: 1)
    1: {0 .70, 2 .60}, true match (.50) outside   -> rank 3, unchanged
    2: {3 .95, 2 .40}, score 2 .8 > 3 .2           -> rank 1 (dual: 2)
    3: {2 .30, 3 .30}: cosine tie, score tie        -> rank 1 (tied on both: the query's favour)
    4: {3 .50, 4 .45}: score tie .3, cosine 3 > 4   -> rank 2 (the tie falls back on the cosine)
    rec2img (columns), top 2 images:
    0: {0 .90, 1 .70}, score 0 .1 < 1 .9           -> rank 2 (dual: 1)
    1: {0 .80, 1 .50}, score 1 .7 > 0 .5           -> rank 1 (dual: 2)
    2: {1 .60, 2 .40}, score 2 .8 > 1 .1           -> rank 1 (dual: 2)
    3: {2 .95, 4 .50}, true match (.30) outside   -> rank 3, unchanged
    4: {4 .45, 0 .05}, score tie .3, cosine 4 > 0   -> rank 1
    """
    assert [r.tolist() for r in ranks(SIM)] == [[1, 3, 2, 1, 2], [1, 2, 2, 3, 1]]
    r_i2r, r_r2i = rerank_ranks(SIM, 2, table_score(SCORE))
    assert r_i2r.tolist() == [2, 3, 1, 1, 2]
    assert r_r2i.tolist() == [2, 1, 1, 3, 1]
    assert r_i2r.dtype == torch.int64


def test_a_cosine_tie_at_the_kth_place_is_taken_in_the_querys_favour():
    """Every cosine equal: the dual encoder ranks every true match 1, so every true match belongs
    to its query's top K whatever order topk returns; then the scores decide."""
    sim = torch.full((4, 4), 0.5)
    same = torch.zeros(4, 4)
    assert [r.tolist() for r in rerank_ranks(sim, 1, table_score(same))] == [[1] * 4, [1] * 4]
    wrong_first = 1.0 - torch.eye(4)  # every other candidate scores higher than the true match
    r_i2r, r_r2i = rerank_ranks(sim, 2, table_score(wrong_first))
    assert r_i2r.tolist() == [2] * 4 and r_r2i.tolist() == [2] * 4


def _random_bag(B: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sim = torch.randn(B, B, generator=g) + 1.5 * torch.eye(B)  # true matches rank high, not always first
    return sim, torch.randn(B, B, generator=g)


def test_k_at_least_the_bag_is_pure_matching_score_ranking_and_k1_is_the_dual_encoder():
    sim, score = _random_bag()
    want = ranks(score)  # the score table as a similarity: rows = image queries, columns = recipe queries
    for k in (40, 100):
        got = rerank_ranks(sim, k, table_score(score))
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    dual = ranks(sim)
    got = rerank_ranks(sim, 1, table_score(score))
    assert torch.equal(got[0], dual[0]) and torch.equal(got[1], dual[1])


@pytest.mark.parametrize("k", [2, 5, 10])
def test_ranks_past_k_and_recall_at_k_are_the_dual_encoders(k):
    sim, score = _random_bag(60, seed=k)
    dual = ranks(sim)
    got = rerank_ranks(sim, k, table_score(score))
    for g, d in zip(got, dual):
        assert torch.equal(g[d > k], d[d > k])  # outside the top k: unchanged
        assert bool((g[d <= k] <= k).all())  # inside: re-ordered among the k
        assert int((g <= k).sum()) == int((d <= k).sum())  # R@k unchanged
    assert not all(torch.equal(g, d) for g, d in zip(got, dual))  # but the order inside did change


def test_bad_scores_and_arguments_are_refused():
    sim, score = _random_bag(6)
    nan = score.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rerank_ranks(sim, 6, table_score(nan))
    with pytest.raises(ValueError, match="square"):
        rerank_ranks(sim[:, :5], 2, table_score(score))
    with pytest.raises(ValueError, match="positive"):
        rerank_ranks(sim, 0, table_score(score))
    with pytest.raises(ValueError, match="shape"):
        rerank_ranks(sim, 2, lambda i, r: score[i, r][:-1])


# ------------------------------------------------------------------------- no cheating
def test_a_constant_score_leaves_the_dual_encoder_as_it_is():
    """A matching module that says nothing (constant score) must not move a single rank. Counting
    every score tie in the query's favour would give it R@1 = the dual encoder's R@K."""
    sim, _ = _random_bag(80, seed=3)
    dual = ranks(sim)
    assert int((dual[0] == 1).sum()) < int((dual[0] <= 10).sum())  # room to cheat
    got = rerank_ranks(sim, 10, lambda i, r: torch.full(i.shape, 0.25))
    assert torch.equal(got[0], dual[0]) and torch.equal(got[1], dual[1])


def test_a_score_of_the_recipe_alone_cannot_favour_the_true_pairs():
    """A score that ignores the image (a function of the recipe only) ranks image queries by a
    fixed recipe order: averaged over many bags its R@1 stays at the level of a random order among
    the top K, far below an oracle's, while the oracle reaches the dual encoder's R@K."""
    r1_recipe_only, r1_oracle, r1_dual, r10_dual = [], [], [], []
    for seed in range(20):
        sim, score = _random_bag(50, seed=100 + seed)
        fixed = score[0]  # one value per recipe
        r_rec = rerank_ranks(sim, 10, lambda i, r: fixed[r])[0]
        r_or = rerank_ranks(sim, 10, lambda i, r: (i == r).float())[0]
        d = ranks(sim)[0]
        r1_recipe_only.append(float((r_rec == 1).float().mean()))
        r1_oracle.append(float((r_or == 1).float().mean()))
        r1_dual.append(float((d == 1).float().mean()))
        r10_dual.append(float((d <= 10).float().mean()))
    assert np.mean(r1_oracle) == pytest.approx(np.mean(r10_dual))
    # a random order among the top 10: E[R@1] ~ R@10 / 10 (+ slack for the recipe-order bias)
    assert np.mean(r1_recipe_only) < np.mean(r10_dual) / 10 + 0.05 < np.mean(r1_oracle)


# -------------------------------------------------------------- the pair scorer, real model
def _tiny_model(variant: str):
    from malm.models import build_model
    from test_models import VOCAB, make_batch, variant_config
    from malm.variants import registry

    overlay = {**dict(registry()[variant].overlay)}
    overlay.setdefault("model", {})
    overlay["model"] = {**overlay["model"], "matching": {"candidates": "batch"}}
    cfg = variant_config(overlay)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.loss, VOCAB).eval()
    return model, make_batch(cfg, B=4)


@pytest.mark.parametrize("variant,kind", [("malm", "global"), ("llc", "local"), ("tfood", "itm")])
def test_pair_scorer_equals_the_training_path(variant, kind):
    """Every (image i, recipe j) score of the scorer = the same pair's temperature-free logit from
    TwoLevelMatching.forward (all B^2 pairs fused, ``candidates: batch``), through chunks of 3
    pairs and recipe tokens padded further than the batch's (trimmed back per chunk)."""
    from malm.models.ops import pad_tokens_to

    model, batch = _tiny_model(variant)
    B = batch["image"].shape[0]
    with torch.no_grad():
        img_tok, _ = model.image_encoder.forward_visible(batch["image"], None)
        rec = model.recipe_encoder(batch["title"], batch["ingrs"], batch["instrs"])
        emb_i, emb_r = model.image_head(img_tok[:, 0]), model.recipe_head(rec["pooled"])
        out = model.matching(img_tok, rec["tokens"], rec["pad"], emb_i, emb_r)
        if kind == "itm":  # T-Food: the ITM head's match logit of the fused pair
            s = out["pair_itm"][:, 1]
        elif kind == "global":
            s = pair_global_logits(out["pair_i_att"], out["pair_r_att"], out["pair_rec_pad"], 1.0)
        else:
            s = pair_local_logits(out["pair_i_att"], out["pair_attn"], out["pair_r_att"], 1.0).mean(1)
    want = s[out["cand_i2r"]]  # [B, B]: row i, column j = pair (image i, recipe j)
    tok, pad = pad_tokens_to(rec["tokens"], rec["pad"], rec["tokens"].shape[1] + 5)
    tokens = SplitTokens(img_tok, tok, pad, torch.arange(B))
    scorer = PairScorer(model.matching, tokens, chunk=3)
    assert scorer.kind == kind
    i, j = torch.meshgrid(torch.arange(B), torch.arange(B), indexing="ij")
    got = scorer(i, j)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert scorer.scored == B * B
    again = scorer(j, i)  # the same pairs once more, transposed: all from the cache
    assert torch.equal(again, got.t())
    assert scorer.scored == B * B and scorer.requested == 2 * B * B


def test_scores_follow_the_tokens_not_the_row_numbers():
    """Storing the recipes' tokens in another order (the `rows` map) gives the same score to the
    same (image, recipe) content, and shuffling which recipe a row holds gives exactly the scores of
    the pairs the tokens come from: the scorer never sees which pair is the true one."""
    model, batch = _tiny_model("malm")
    B = batch["image"].shape[0]
    with torch.no_grad():
        img_tok, _ = model.image_encoder.forward_visible(batch["image"], None)
        rec = model.recipe_encoder(batch["title"], batch["ingrs"], batch["instrs"])
    i, j = torch.meshgrid(torch.arange(B), torch.arange(B), indexing="ij")
    base = PairScorer(model.matching, SplitTokens(img_tok, rec["tokens"], rec["pad"], torch.arange(B)))(i, j)
    perm = torch.tensor([2, 0, 3, 1])
    # storage permuted, rows map back: same content -> same scores
    stored = SplitTokens(img_tok[perm], rec["tokens"][perm], rec["pad"][perm], torch.argsort(perm))
    torch.testing.assert_close(PairScorer(model.matching, stored)(i, j), base, rtol=1e-5, atol=1e-5)
    # recipe row j now holds recipe perm[j]'s tokens: score(i, j) = the old score(i, perm[j])
    shuffled = SplitTokens(img_tok, rec["tokens"][perm], rec["pad"][perm], torch.arange(B))
    torch.testing.assert_close(PairScorer(model.matching, shuffled)(i, j), base[:, perm],
                               rtol=1e-5, atol=1e-5)
    assert not torch.allclose(base, base[:, perm])  # the scores do depend on the recipe


def test_pair_scores_of_a_model_without_matching_are_refused():
    model, _ = _tiny_model("baseline")
    assert model.matching is None
    with pytest.raises(ValueError, match="no matching module"):
        PairScorer(model.matching, SplitTokens(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3),
                                               torch.zeros(1, 2, dtype=torch.bool), torch.arange(1)))
    with pytest.raises(ValueError, match="global or local"):
        pair_scores(None, None, None, None, "both")


def test_evaluate_rerank_names_its_protocol_and_keeps_r10():
    from malm.eval.protocol import evaluate

    g = torch.Generator().manual_seed(0)
    image = torch.randn(60, 8, generator=g)
    recipe = image + 1.2 * torch.randn(60, 8, generator=g)
    table = torch.randn(60, 60, generator=g)
    res = evaluate_rerank(image.numpy(), recipe.numpy(), np.arange(60), lambda i, r: table[i, r],
                          k=10, protocol="ht", bag_size=20, n_bags=3, seed=5)
    dual = evaluate(image.numpy(), recipe.numpy(), np.arange(60), protocol="ht", bag_size=20,
                    n_bags=3, seed=5)
    assert res["protocol"] == "ht+rerank10" and res["base_protocol"] == "ht" and res["rerank_k"] == 10
    assert res["n_bags"] == 3 and res["seed"] == 5
    for d in ("img2rec", "rec2img"):
        assert res["per_bag"][d]["R@10"] == dual["per_bag"][d]["R@10"]
    assert res["per_bag"]["img2rec"]["R@1"] != dual["per_bag"]["img2rec"]["R@1"]


# ------------------------------------------------------------------------ names and config
def test_protocol_names():
    assert rerank_protocol("tfood", 10) == "tfood+rerank10"
    assert parse_protocol("tfood+rerank10") == ("tfood", 10) and parse_protocol("ht") == ("ht", 0)
    assert is_rerank("ht+rerank5") and not is_rerank("tfood")
    assert "re-ranked" in protocol_reading("tfood+rerank10") and "dual" in protocol_reading("tfood")
    for bad in ("tfod", "tfood+rerank", "tfood+rerank0", "tfood+rerank010", "tfood+rerankx",
                "tfood+rerank10+rerank10", "+rerank10"):
        with pytest.raises(ValueError, match="unknown protocol"):
            parse_protocol(bad)
    for base, k in (("tfod", 10), ("tfood", 0), ("tfood", True)):
        with pytest.raises(ValueError):
            rerank_protocol(base, k)


def test_eval_rerank_keys():
    cfg = C.Config()
    assert cfg.eval.rerank_k == 10 and cfg.eval.rerank_bags is None and cfg.eval.rerank_protocols is None
    assert rerank_bag_sizes(cfg.eval) == [1000, 10000] and rerank_protocols(cfg.eval) == ["tfood"]
    cfg = C.merge(cfg, C.parse_overrides(["eval.rerank_bags=[10000]", "eval.protocols=[tfood, ht]",
                                          "eval.rerank_protocols=[ht]"]))
    assert cfg.eval.rerank_bags == [10000] and rerank_bag_sizes(cfg.eval) == [10000]
    assert rerank_protocols(cfg.eval) == ["ht"]
    with pytest.raises(ValueError, match="not bag sizes"):
        rerank_bag_sizes(C.merge(cfg.eval, {"rerank_bags": [500]}))
    with pytest.raises(ValueError, match="not in eval.protocols"):
        rerank_protocols(C.merge(cfg.eval, {"protocols": ["tfood"]}))
    back = C.merge(cfg, C.parse_overrides(["eval.rerank_bags=null", "eval.rerank_protocols=null"]))
    assert back.eval.rerank_bags is None and back.eval.rerank_protocols is None
    for bad in ("eval.rerank_bags=5", "eval.rerank_bags=[x]", "eval.rerank_k=ten", "eval.bags=null",
                "eval.rerank_protocols=[tfod]", "eval.rerank_protocols=tfood"):
        with pytest.raises(C.ConfigError, match=bad.split("=")[0]):
            C.merge(C.Config(), C.parse_overrides([bad]))
    # the CPU default re-ranks T-Food's 1k bags; the paper profile every bag
    from malm import variants

    cpu = variants.resolve_from_files("malm", [REPO / "params.yaml"]).eval
    assert (cpu.rerank_k, rerank_protocols(cpu), rerank_bag_sizes(cpu)) == (10, ["tfood"], [1000])
    paper = variants.resolve_from_files("malm", [REPO / "params.yaml", REPO / "configs" / "paper.yaml"]).eval
    assert (rerank_protocols(paper), rerank_bag_sizes(paper)) == (["tfood", "ht"], [1000, 10000])


# ------------------------------------------------------------------------ the report
def test_tables_show_both_readings_with_their_protocol():
    from malm import report

    ours = report.load_ours({"pipeline": FIXTURE / "results.csv"})
    paper = report.paper_table()
    both = ["tfood", "tfood+rerank10"]
    t1 = report.table1(ours, paper, protocol=both, bag_sizes=[1000])
    mine = t1[t1.source.str.startswith("ours")]
    assert list(dict.fromkeys(mine.source)) == ["ours (fixture, tfood 1k x10)",
                                                "ours (fixture, tfood+rerank10 1k x10)"]
    rr = mine[mine.source.str.contains("rerank")].set_index("variant")
    # fixture: R@1 + 2 over the dual encoder, R@10 unchanged; the baseline has no such reading
    assert rr.loc["malm", "img2rec R@1"] == "17.5 [17.0, 18.0]"
    assert rr.loc["malm", "img2rec R@10"] == "38.8 [37.5, 40.0]"
    assert rr.loc["baseline", "img2rec R@1"] == report.MISSING
    assert rr.loc["baseline", "note"].startswith(report.NO_RERANK)
    assert rr.loc["no_mask", "note"].startswith(report.NO_RESULTS)  # has a module, no results yet
    # one protocol: exactly the table of before
    single = report.table1(ours, paper, protocol="tfood", bag_sizes=[1000])
    pd.testing.assert_frame_equal(single.reset_index(drop=True),
                                  t1[~t1.source.str.contains("rerank")].reset_index(drop=True))
    t2 = report.table2(ours, paper, protocol=both, bag_sizes=[1000])
    assert t2.loc["+LLC+LGC+Ldist (MALM)", ("ours (fixture, tfood+rerank10 1k x10) img2rec", "R@1")] \
        == "17.5 [17.0, 18.0]"
    assert report.NO_RERANK in t2.loc["Baseline", ("our runs", "note")]
    cov = report.coverage(ours, report.table_variants(1), both, [1000])
    assert "tfood+rerank10 1k" not in set(cov[cov.variant == "baseline"].bag)  # nothing to miss
    assert set(cov[(cov.variant == "no_mask")].bag) == {"tfood 1k", "tfood+rerank10 1k"}
    d = report.differences(ours, 2, protocol=both, bag_sizes=[1000])
    step = d[(d.variant == "malm") & (d.reference == "no_distill") & (d.direction == "img2rec")
             & (d.metric == "R@1")].set_index("protocol")["mean_diff"]
    assert step.to_dict() == pytest.approx({"tfood": 2.0, "tfood+rerank10": 2.0})
    dt = report.differences_table(d, both, [1000])
    assert ("ours (fixture, tfood+rerank10 1k x10) img2rec: Δ [95 % CI]", "R@1") in dt.columns
    assert not dt.isna().any().any()


# ------------------------------------------------------------- `malm evaluate --run-dir`
@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """1-epoch smoke runs of malm and baseline, and malm's test embeddings (`malm embed`)."""
    from malm import variants
    from malm.cli import main
    from malm.train.trainer import train

    root = tmp_path_factory.mktemp("rerank")
    runs = {}
    for variant in ("malm", "baseline"):
        ov = C.parse_overrides([f"{k}={v}" for k, v in
                                {**tiny_data, "train.threads": 1, "train.epochs": 1}.items()])
        runs[variant] = root / variant
        train(variants.resolve_from_files(variant, [SMOKE], ov), runs[variant], progress=False)
        assert main(["embed", "--run-dir", str(runs[variant]), "--split", "test",
                     "--out", str(root / f"{variant}.npz")]) == 0
    return root, runs


def test_evaluate_with_run_dir_writes_the_reranked_results(trained, caplog):
    from malm.cli import main

    root, runs = trained
    out = root / "metrics" / "malm" / "seed0"
    with caplog.at_level(logging.INFO):
        assert main(["evaluate", "--emb", str(root / "malm.npz"), "--config", str(SMOKE),
                     "--out-dir", str(out), "--run-dir", str(runs["malm"])]) == 0
    names = sorted(p.name for p in out.glob("*.json"))
    assert names == sorted(f"{p}_{b}.json" for p in ("tfood", "ht", "tfood+rerank10", "ht+rerank10")
                           for b in ("100", "50"))
    for p in ("tfood", "ht"):
        for b in ("100", "50"):
            dual = json.loads((out / f"{p}_{b}.json").read_text())
            res = json.loads((out / f"{p}+rerank10_{b}.json").read_text())
            assert res["protocol"] == f"{p}+rerank10" and res["base_protocol"] == p
            assert res["rerank_k"] == 10 and res["rerank_score"] == "global"
            assert res["checkpoint"] == dual["checkpoint"] == "best"
            assert res["checkpoint_epoch"] == dual["checkpoint_epoch"] == 1
            assert res["run_dir"] == str(runs["malm"]) and res["embeddings"] == dual["embeddings"]
            assert (res["bag_size"], res["n_bags"], res["seed"]) == (dual["bag_size"], dual["n_bags"],
                                                                     dual["seed"])
            assert set(res["img2rec"]) == set(dual["img2rec"])
            for d in ("img2rec", "rec2img"):  # the top 10 is only re-ordered
                assert res["per_bag"][d]["R@10"] == dual["per_bag"][d]["R@10"]
    assert any("re-ranked the top 10" in r.getMessage() for r in caplog.records)
    # the 1k-style 100 bag and the three 50 bags of ht overlap: pairs come from the cache
    res = json.loads((out / "ht+rerank10_50.json").read_text())
    assert 0 < res["rerank_pairs_scored"] <= 3 * 2 * 50 * 10

    from malm.report.collect import collect

    df = collect(out.glob("*.json"), dataset="smoke")
    assert set(df.protocol) == {"tfood", "ht", "tfood+rerank10", "ht+rerank10"}


def test_evaluate_without_run_dir_or_matching_module_writes_dual_results_only(trained, caplog):
    from malm.cli import main

    root, runs = trained
    plain = root / "plain"
    with caplog.at_level(logging.INFO):
        assert main(["evaluate", "--emb", str(root / "malm.npz"), "--config", str(SMOKE),
                     "--out-dir", str(plain)]) == 0
    assert not list(plain.glob("*rerank*")) and len(list(plain.glob("*.json"))) == 4
    assert any("no --run-dir" in r.getMessage() for r in caplog.records)
    caplog.clear()
    base = root / "base"
    with caplog.at_level(logging.INFO):
        assert main(["evaluate", "--emb", str(root / "baseline.npz"), "--config", str(SMOKE),
                     "--out-dir", str(base), "--run-dir", str(runs["baseline"])]) == 0
    assert not list(base.glob("*rerank*")) and len(list(base.glob("*.json"))) == 4
    assert any("has no matching module" in r.getMessage() for r in caplog.records)


def test_rerank_selection_and_provenance_checks(trained):
    from malm.eval.run import evaluate_all

    root, runs = trained
    smoke = C.merge(C.Config(), C.load_yaml(SMOKE)).eval
    out = root / "only50"
    evaluate_all(root / "malm.npz", C.merge(smoke, {"rerank_bags": [50]}), out, run_dir=runs["malm"],
                 progress=False)
    assert sorted(p.name for p in out.glob("*rerank*")) == ["ht+rerank10_50.json", "tfood+rerank10_50.json"]
    only_ht = root / "only_ht"
    evaluate_all(root / "malm.npz", C.merge(smoke, {"rerank_protocols": ["ht"]}), only_ht,
                 run_dir=runs["malm"], progress=False)
    assert sorted(p.name for p in only_ht.glob("*rerank*")) == ["ht+rerank10_100.json", "ht+rerank10_50.json"]
    off = root / "off"
    evaluate_all(root / "malm.npz", C.merge(smoke, {"rerank_k": 0}), off, run_dir=runs["malm"],
                 progress=False)
    assert not list(off.glob("*rerank*"))
    # embeddings of another run: the cosine top K and the scores would come from two models
    with pytest.raises(ValueError, match="not made by"):
        evaluate_all(root / "baseline.npz", smoke, root / "mixed", run_dir=runs["malm"], progress=False)
    assert math.isfinite(json.loads((out / "tfood+rerank10_50.json").read_text())["img2rec"]["medR"]["mean"])


@pytest.mark.parametrize("psi_layers,psi_prime_layers", [(1, 1), (2, 3)])
def test_shared_sides_equal_fusing_each_pair_whole(psi_layers, psi_prime_layers):
    """The global score's shared path (image_side / recipe_side computed once per row, fuse_sides
    per pair) equals psi/psi' run on each pair (fuse_pairs), also with deeper decoders."""
    from malm.config import MatchingConfig
    from malm.models.matching import TwoLevelMatching

    torch.manual_seed(0)
    m = TwoLevelMatching(MatchingConfig(width=32, heads=2, psi_layers=psi_layers,
                                        psi_prime_layers=psi_prime_layers), 24, 16,
                         global_loss=True, local_loss=False).eval()
    n, s = 12, 9
    lengths = torch.randint(1, s + 1, (n,))
    pad = torch.arange(s)[None] >= lengths[:, None]
    tokens = SplitTokens(torch.randn(n, 5, 24), torch.randn(n, s, 16), pad, torch.randperm(n))
    i, j = torch.randint(0, n, (60,)), torch.randint(0, n, (60,))
    shared = PairScorer(m, tokens, chunk=7).score_pairs(i, j)
    rec, rpad = tokens.take_recipe(j)
    with torch.inference_mode():
        whole = pair_scores(m, tokens.take_image(i), rec, rpad, "global")
    torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- `malm assess` (the pipeline's stage)
TIMING_AND_PATHS = {"embeddings", "run_dir", "rerank_seconds", "token_pass_seconds", "figure"}


def _same_result(a: dict, b: dict) -> bool:
    return ({k: v for k, v in a.items() if k not in TIMING_AND_PATHS}
            == {k: v for k, v in b.items() if k not in TIMING_AND_PATHS})


@pytest.mark.parametrize("variant", ["malm", "baseline"])
def test_assess_writes_what_embed_evaluate_and_grounding_write(trained, variant, capsys):
    """One process, one forward: the same arrays, results and grounding as the three commands."""
    import numpy as np

    from malm.cli import main

    root, runs = trained
    sep, one = root / f"sep_{variant}", root / f"assess_{variant}"
    assert main(["evaluate", "--emb", str(root / f"{variant}.npz"), "--config", str(SMOKE),
                 "--out-dir", str(sep / "metrics"), "--run-dir", str(runs[variant])]) == 0
    assert main(["grounding", "--run-dir", str(runs[variant]), "--config", str(SMOKE), "--quiet",
                 "--out", str(sep / "grounding.json"), "grounding.pairs=40"]) == 0
    capsys.readouterr()
    assert main(["assess", "--run-dir", str(runs[variant]), "--config", str(SMOKE), "--quiet",
                 "--emb", str(one / "test.npz"), "--metrics-dir", str(one / "metrics"),
                 "--grounding", str(one / "grounding.json"), "--grounding-figure", str(one / "g.png"),
                 "grounding.pairs=40"]) == 0
    printed = capsys.readouterr().out
    assert str(one / "test.npz") in printed and "seconds: load" in printed

    with np.load(root / f"{variant}.npz") as a, np.load(one / "test.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert np.array_equal(a[k], b[k]), k  # bit for bit
    names = sorted(p.name for p in (sep / "metrics").glob("*.json"))
    assert names == sorted(p.name for p in (one / "metrics").glob("*.json"))
    assert any("rerank" in n for n in names) == (variant == "malm")
    for name in names:
        a = json.loads((sep / "metrics" / name).read_text())
        b = json.loads((one / "metrics" / name).read_text())
        assert _same_result(a, b), name
        assert b["embeddings"] == str(one / "test.npz")
    ga = json.loads((sep / "grounding.json").read_text())
    gb = json.loads((one / "grounding.json").read_text())
    assert _same_result(ga, gb)
    assert gb["has_matching"] == (variant == "malm")
    assert (one / "g.png").exists() == (variant == "malm")


def test_assess_refuses_a_figure_without_grounding(trained, tmp_path, capsys):
    from malm.cli import main

    _, runs = trained
    assert main(["assess", "--run-dir", str(runs["malm"]), "--config", str(SMOKE), "--emb",
                 str(tmp_path / "e.npz"), "--metrics-dir", str(tmp_path / "m"), "--grounding-figure",
                 str(tmp_path / "g.png")]) == 2
    assert "--grounding-figure needs --grounding" in capsys.readouterr().err
    assert not (tmp_path / "e.npz").exists()  # refused before any work


def test_grounding_on_data_without_boxes_is_a_note_not_a_failure(trained, tmp_path):
    """Real Recipe1M has no synth_truth.json: the assess stage records why there is no score
    (the tables skip it) instead of failing the run's stage; an explicit --truth still must exist."""
    from malm.eval.embed import load_trained
    from malm.eval.grounding import run_grounding
    from malm.report.collect import collect_grounding

    _, runs = trained
    model, cfg, cache_dir, info = load_trained(runs["malm"], "cpu", "best")
    real = C.merge(cfg, {"data": {"root": str(tmp_path / "recipe1m")}})  # no synth_truth.json there
    out = tmp_path / "grounding" / "malm" / "seed0" / "grounding.json"
    res = run_grounding(runs["malm"], None, out, tmp_path / "g.png", trained=(model, real, cache_dir, info))
    assert res["has_truth"] is False and res["has_matching"] is True and "no score" in res["reason"]
    assert json.loads(out.read_text()) == res and not (tmp_path / "g.png").exists()
    assert collect_grounding(tmp_path / "grounding").empty
    with pytest.raises(FileNotFoundError, match="no such file"):
        run_grounding(runs["malm"], tmp_path / "missing.json", None, trained=(model, real, cache_dir, info))
