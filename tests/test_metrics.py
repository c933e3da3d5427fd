"""Retrieval metrics and protocols against a naive reference and hand-made cases."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from malm.eval.metrics import aggregate, cosine_similarity, ranks, retrieval_metrics
from malm.eval.emb_file import load_embeddings
from malm.eval.protocol import bag_indices, evaluate, flat_metrics, save_result


# ----------------------------------------------------------------------- naive reference (loops)
def naive_ranks(sim: list[list[float]]) -> tuple[list[int], list[int]]:
    """Rank = position of the true similarity in the descending sorted list (first occurrence)."""
    n = len(sim)
    rows = []
    for i in range(n):
        ordered = sorted(sim[i], reverse=True)
        rows.append(ordered.index(sim[i][i]) + 1)
    cols = []
    for j in range(n):
        column = [sim[i][j] for i in range(n)]
        ordered = sorted(column, reverse=True)
        cols.append(ordered.index(sim[j][j]) + 1)
    return rows, cols


def naive_cosine(a: np.ndarray, b: np.ndarray) -> list[list[float]]:
    def norm(v):
        s = math.sqrt(sum(x * x for x in v))
        return [x / s for x in v]
    a = [norm(list(map(float, r))) for r in a]
    b = [norm(list(map(float, r))) for r in b]
    return [[sum(x * y for x, y in zip(u, v)) for v in b] for u in a]


def naive_metrics(rank: list[int]) -> dict[str, float]:
    s = sorted(rank)
    n = len(s)
    med = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    out = {"medR": float(med)}
    for k in (1, 5, 10):
        out[f"R@{k}"] = 100.0 * sum(1 for r in rank if r <= k) / n
    return out


def naive_evaluate(image, recipe, bags):
    per = {"img2rec": [], "rec2img": []}
    for idx in bags:
        r_rows, r_cols = naive_ranks(naive_cosine(image[idx], recipe[idx]))
        per["img2rec"].append(naive_metrics(r_rows))
        per["rec2img"].append(naive_metrics(r_cols))
    out = {}
    for d, bags_m in per.items():
        out[d] = {}
        for m in bags_m[0]:
            vals = [b[m] for b in bags_m]
            mean = sum(vals) / len(vals)
            out[d][m] = {"mean": mean,
                         "std": math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))}
    return out


def correlated(n: int, d: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, d)).astype(np.float32)
    recipe = (image + noise * rng.standard_normal((n, d))).astype(np.float32)
    return image, recipe


# ------------------------------------------------------------------- vectorised vs naive reference
@pytest.mark.parametrize("chunk_rows", [None, 1, 7, 64])
def test_ranks_match_naive_on_random_sim(chunk_rows):
    rng = np.random.default_rng(0)
    sim = rng.standard_normal((40, 40)).astype(np.float32)
    sim[rng.random((40, 40)) < 0.2] = 0.5  # plenty of exact ties, diagonal included
    r_rows, r_cols = ranks(torch.from_numpy(sim), chunk_rows=chunk_rows)
    want_rows, want_cols = naive_ranks(sim.tolist())
    assert r_rows.tolist() == want_rows
    assert r_cols.tolist() == want_cols


@pytest.mark.parametrize("protocol", ["tfood", "ht"])
def test_evaluate_matches_naive(protocol):
    image, recipe = correlated(120, 16, noise=1.5, seed=1)
    ids = np.array([f"{h:010x}" for h in np.random.default_rng(2).integers(0, 2**40, 120)])
    got = evaluate(image, recipe, ids, protocol=protocol, bag_size=25, n_bags=4, seed=7)
    bags = bag_indices(ids, protocol, 25, 4, 7)
    want = naive_evaluate(image, recipe, bags)
    for d in ("img2rec", "rec2img"):
        for m in ("medR", "R@1", "R@5", "R@10"):
            for s in ("mean", "std"):
                assert got[d][m][s] == pytest.approx(want[d][m][s], abs=1e-9), (d, m, s)
    # The data is not trivial: the metrics are neither perfect nor chance, and directions differ.
    assert 0 < got["img2rec"]["R@1"]["mean"] < 100
    assert got["img2rec"] != got["rec2img"]
    assert len(got["per_bag"]["img2rec"]["R@5"]) == 4


def test_cosine_similarity_normalises():
    a = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, -5.0]])
    s = cosine_similarity(a, b)
    assert torch.allclose(s, torch.tensor([[2 ** -0.5, 0.0], [2 ** -0.5, -1.0]]))


# ------------------------------------------------------------------------------ hand-made cases
def test_identity_embeddings_are_perfect():
    eye = np.eye(30, 32, dtype=np.float32)
    out = evaluate(eye, eye * 5.0, np.arange(30), protocol="tfood", bag_size=15, n_bags=2)
    for d in ("img2rec", "rec2img"):
        assert out[d]["medR"] == {"mean": 1.0, "std": 0.0}
        for k in (1, 5, 10):
            assert out[d][f"R@{k}"] == {"mean": 100.0, "std": 0.0}


def test_true_match_at_rank_three_everywhere():
    # image i = e_i, recipe j = 0.2 e_j + 0.7 e_{j-1} + 0.6 e_{j-2} (cyclic): in row i and in
    # column i exactly two entries (0.7, 0.6) beat the true 0.2.
    n = 20
    image = np.eye(n, dtype=np.float32)
    recipe = np.zeros((n, n), dtype=np.float32)
    for j in range(n):
        recipe[j, j], recipe[j, (j - 1) % n], recipe[j, (j - 2) % n] = 0.2, 0.7, 0.6
    r_rows, r_cols = ranks(cosine_similarity(torch.from_numpy(image), torch.from_numpy(recipe)))
    assert r_rows.tolist() == [3] * n and r_cols.tolist() == [3] * n
    out = evaluate(image, recipe, np.arange(n), bag_size=n, n_bags=1)
    for d in ("img2rec", "rec2img"):
        assert {m: v["mean"] for m, v in out[d].items()} == {
            "medR": 3.0, "R@1": 0.0, "R@5": 100.0, "R@10": 100.0}


def test_reversed_true_match_is_last():
    # recipe j = all-ones except 0 at j: every wrong item is more similar than the true one.
    n = 12
    image = np.eye(n, dtype=np.float32)
    recipe = 1.0 - np.eye(n, dtype=np.float32)
    out = evaluate(image, recipe, np.arange(n), bag_size=n, n_bags=1)
    for d in ("img2rec", "rec2img"):
        assert out[d]["medR"]["mean"] == n
        assert out[d]["R@10"]["mean"] == 0.0


def test_graded_ranks_and_even_median():
    # sim[i, j] = 1 (j < i), 0.5 (j == i), 0 (j > i): row i has i better items, column j has n-1-j.
    n = 10
    i, j = np.indices((n, n))
    sim = torch.from_numpy(np.where(j < i, 1.0, np.where(j == i, 0.5, 0.0)).astype(np.float32))
    r_rows, r_cols = ranks(sim, chunk_rows=3)
    assert r_rows.tolist() == list(range(1, n + 1))
    assert r_cols.tolist() == list(range(n, 0, -1))
    m = retrieval_metrics(r_rows)
    assert m == {"medR": 5.5, "R@1": 10.0, "R@5": 50.0, "R@10": 100.0}  # np.median: mean of 5, 6


def test_ties_count_in_favour_of_the_query():
    r_rows, r_cols = ranks(torch.ones(6, 6))
    assert r_rows.tolist() == [1] * 6 and r_cols.tolist() == [1] * 6


def test_aggregate_uses_population_std():
    out = aggregate([{"R@1": 10.0}, {"R@1": 20.0}])
    assert out["R@1"] == {"mean": 15.0, "std": 5.0}


# ------------------------------------------------------------------------------------- protocols
def test_tfood_bags_are_consecutive():
    bags = bag_indices(np.arange(23)[::-1], "tfood", bag_size=5, n_bags=4)
    assert [b.tolist() for b in bags] == [list(range(t * 5, t * 5 + 5)) for t in range(4)]


def test_ht_bags_equal_ht_random_sample_on_id_sorted_rows():
    n, k, t = 300, 40, 10
    rng = np.random.default_rng(3)
    ids = np.array([f"{h:010x}" for h in rng.permutation(10 ** 6)[:n]])  # unsorted hex ids
    state = random.getstate()
    bags = bag_indices(ids, "ht", bag_size=k, n_bags=t, seed=1234)
    assert random.getstate() == state  # the global stream is left alone
    random.seed(1234)  # what H-T's src/eval.py does at import, then draws bag after bag
    samples = [random.sample(range(n), k) for _ in range(t)]
    random.setstate(state)
    sorted_ids = np.sort(ids)
    for bag, sample in zip(bags, samples):
        assert ids[bag].tolist() == sorted_ids[sample].tolist()
    # A different seed gives different subsets; the same seed the same ones.
    assert bag_indices(ids, "ht", k, t, seed=1)[0].tolist() != bags[0].tolist()
    assert [b.tolist() for b in bag_indices(ids, "ht", k, t, 1234)] == [b.tolist() for b in bags]


def test_ht_metrics_do_not_depend_on_row_order():
    image, recipe = correlated(80, 8, noise=1.0, seed=4)
    ids = np.arange(80) * 7 % 101
    perm = np.random.default_rng(5).permutation(80)
    a = evaluate(image, recipe, ids, protocol="ht", bag_size=20, n_bags=3)
    b = evaluate(image[perm], recipe[perm], ids[perm], protocol="ht", bag_size=20, n_bags=3)
    assert a == b


def test_result_layout_and_json(tmp_path):
    image, recipe = correlated(40, 8, noise=1.0, seed=6)
    out = evaluate(torch.from_numpy(image), torch.from_numpy(recipe), list(range(40)),
                   protocol="ht", bag_size=10, n_bags=2, seed=3, device="cpu")
    assert {k: out[k] for k in ("protocol", "bag_size", "n_bags", "n_rows", "seed")} == {
        "protocol": "ht", "bag_size": 10, "n_bags": 2, "n_rows": 40, "seed": 3}
    assert set(out["img2rec"]) == {"medR", "R@1", "R@5", "R@10"}
    assert set(out["img2rec"]["medR"]) == {"mean", "std"}
    save_result(out, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == out
    flat = flat_metrics(out)
    assert flat["ht/10/rec2img/R@1_mean"] == out["rec2img"]["R@1"]["mean"]
    assert len(flat) == 2 * 4 * 2


# ---------------------------------------------------------------------------------------- errors
def test_protocol_errors():
    image, recipe = correlated(30, 4, noise=1.0, seed=0)
    with pytest.raises(ValueError, match=r"4 x 10 = 40 pairs, but only 30"):
        evaluate(image, recipe, np.arange(30), protocol="tfood", bag_size=10, n_bags=4)
    with pytest.raises(ValueError, match="bags of 31 pairs, but only 30"):
        bag_indices(np.arange(30), "ht", bag_size=31, n_bags=1)
    with pytest.raises(ValueError, match="unknown protocol 'adamine'"):
        bag_indices(np.arange(30), "adamine", 10, 1)
    with pytest.raises(ValueError, match="bag_size must be a positive integer"):
        bag_indices(np.arange(30), "tfood", 0, 1)
    with pytest.raises(ValueError, match="same shape"):
        evaluate(image, recipe[:, :3], np.arange(30), bag_size=10, n_bags=1)
    with pytest.raises(ValueError, match="29 ids for 30"):
        evaluate(image, recipe, np.arange(29), bag_size=10, n_bags=1)
    bad = image.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match="image embeddings contain NaN/inf .*row 4"):
        evaluate(bad, recipe, np.arange(30), bag_size=10, n_bags=1)
    huge = image.copy()
    huge[3] = 3e38  # finite, but its row sum overflows: must not be mistaken for NaN/inf
    evaluate(huge, recipe, np.arange(30), bag_size=10, n_bags=1)
    with pytest.raises(ValueError, match="square"):
        ranks(torch.zeros(3, 4))


def test_load_embeddings(tmp_path):
    image, recipe = correlated(10, 4, noise=1.0, seed=0)
    ids = np.array([f"r{i}" for i in range(10)])
    good = tmp_path / "EMB.npz"
    np.savez(good, image=image.astype(np.float16), recipe=recipe, ids=ids)
    im, rc, got_ids = load_embeddings(good)
    assert im.dtype == np.float32 and rc.shape == (10, 4) and got_ids.tolist() == ids.tolist()

    cases = {
        "missing.npz": (dict(image=image, ids=ids), r"missing array\(s\) recipe"),
        "shape.npz": (dict(image=image, recipe=recipe[:9], ids=ids), "differ in shape"),
        "ids.npz": (dict(image=image, recipe=recipe, ids=ids[:5]), "'ids' has shape"),
        "flat.npz": (dict(image=image[0], recipe=recipe, ids=ids), "must be \\[N, D\\]"),
    }
    nan = recipe.copy()
    nan[7, 0] = np.nan
    cases["nan.npz"] = (dict(image=image, recipe=nan, ids=ids), "'recipe' has NaN/inf .*first row 7")
    for name, (arrays, msg) in cases.items():
        path = tmp_path / name
        np.savez(path, **arrays)
        with pytest.raises(ValueError, match=msg) as info:
            load_embeddings(path)
        assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="cannot read embeddings file .*absent.npz"):
        load_embeddings(tmp_path / "absent.npz")
