"""malm.eval.stats: the paired two-level bootstrap against hand-enumerated cases, its edge cases,
and the comparisons built on it (malm.report)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from malm.eval import stats


def enumerate_two_level(d: np.ndarray) -> np.ndarray:
    """Every equally likely outcome of the two-level resampling of ``d [S, B]``: the S drawn seeds,
    then for each drawn seed its B drawn bags; returns the mean of each outcome."""
    s, b = d.shape
    outcomes = []
    for seeds in itertools.product(range(s), repeat=s):
        per_slot = [[d[i, list(bags)].mean() for bags in itertools.product(range(b), repeat=b)]
                    for i in seeds]
        outcomes += [np.mean(combo) for combo in itertools.product(*per_slot)]
    return np.asarray(outcomes)


def test_two_seeds_one_bag_by_hand():
    # d = a - b = [0, 2]: resampled means 0, 1, 2 with probability 1/4, 1/2, 1/4
    a, b = np.array([[5.0], [9.0]]), np.array([[5.0], [7.0]])
    r = stats.paired_bootstrap(a, b, n_boot=20000, seed=1)
    assert r.mean == 1.0 and (r.n_seeds, r.n_bags) == (2, 1)
    assert (r.ci_low, r.ci_high) == (0.0, 2.0)  # 25 % of the mass at each end > 2.5 %
    assert r.p_better == pytest.approx(0.5 + 0.25 + 0.25 / 2, abs=0.01)  # ties (d* = 0) count 1/2
    assert stats.bootstrap_means(a - b, n_boot=20000, seed=1).mean() == pytest.approx(1.0, abs=0.02)


def test_two_seeds_two_bags_match_the_enumeration():
    d = np.array([[-2.0, 2.0], [0.0, 4.0]])
    exact = enumerate_two_level(d)  # 4 seed draws x 4 x 4 bag draws = 64 equally likely outcomes
    assert len(exact) == 64 and exact.mean() == pytest.approx(d.mean())
    r = stats.paired_bootstrap(d, np.zeros_like(d), n_boot=40000, seed=0)
    assert r.mean == pytest.approx(1.0)
    p_exact = (exact > 0).mean() + 0.5 * (exact == 0).mean()
    assert r.p_better == pytest.approx(p_exact, abs=0.01)
    boot = stats.bootstrap_means(d, n_boot=40000, seed=0)
    for v in np.unique(exact):  # the bootstrap distribution is the enumerated one
        assert (boot == v).mean() == pytest.approx((exact == v).mean(), abs=0.01)
    lo, hi = np.quantile(exact, [0.025, 0.975])
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo), pytest.approx(hi))


def test_constant_difference_gives_a_zero_width_interval_whatever_the_spread():
    rng = np.random.default_rng(0)
    ref = rng.normal(30, 10, size=(3, 10))  # large seed and bag spread, shared by both: paired
    r = stats.paired_bootstrap(ref + 1.5, ref, n_boot=2000)
    assert r.mean == pytest.approx(1.5)
    assert r.ci_low == pytest.approx(1.5) and r.ci_high == pytest.approx(1.5)
    assert r.p_better == 1.0


def test_no_difference_covers_zero_and_is_undecided():
    x = np.random.default_rng(1).normal(20, 5, size=(3, 10))
    same = stats.paired_bootstrap(x, x.copy())
    assert same.mean == 0.0 and same.ci_low == 0.0 == same.ci_high and same.p_better == 0.5
    noise = np.random.default_rng(2).normal(0, 1, size=(3, 10))
    noise -= noise.mean()  # mean difference exactly 0, spread around it
    r = stats.paired_bootstrap(x + noise, x)
    assert r.mean == pytest.approx(0.0, abs=1e-12) and r.ci_low < 0 < r.ci_high
    assert 0.3 < r.p_better < 0.7


def test_clear_improvement_excludes_zero():
    rng = np.random.default_rng(3)
    base = rng.normal(20, 4, size=(3, 10))
    r = stats.paired_bootstrap(base + 5 + rng.normal(0, 1, size=(3, 10)), base)
    assert 0 < r.ci_low < r.mean < r.ci_high and r.p_better > 0.999


def test_medr_lower_is_better():
    rng = np.random.default_rng(4)
    ref = rng.normal(50, 5, size=(3, 10))
    r = stats.paired_bootstrap(ref - 10 + rng.normal(0, 1, size=(3, 10)), ref,
                               higher_is_better=False)
    assert r.ci_high < 0 and r.p_better > 0.999
    worse = stats.paired_bootstrap(ref + 10, ref, higher_is_better=False)
    assert worse.p_better == 0.0
    # trailing dimensions: R@1 and medR in one call, each judged in its own direction
    both = stats.paired_bootstrap(np.stack([ref + 1, ref - 1], -1), np.stack([ref, ref], -1),
                                  higher_is_better=np.array([True, False]))
    assert both.p_better.tolist() == [1.0, 1.0] and both.mean.tolist() == pytest.approx([1, -1])


def test_one_seed_resamples_bags_only_and_one_run_has_no_interval():
    one_seed = stats.paired_bootstrap(np.array([[0.0, 2.0]]), np.zeros((1, 2)), n_boot=20000)
    assert (one_seed.ci_low, one_seed.ci_high) == (0.0, 2.0)  # as [0, 2] over two seeds
    assert one_seed.p_better == pytest.approx(0.875, abs=0.01)
    assert stats.resampling(1, 2) == "bags (1 seed)" and stats.resampling(3, 1) == "seeds (1 bag)"
    single = stats.paired_bootstrap(np.array([[3.0]]), np.array([[1.0]]))
    assert single.mean == 2.0 and np.isnan(single.ci_low) and np.isnan(single.p_better)


def test_deterministic_and_validated():
    x = np.random.default_rng(5).normal(size=(3, 4))
    assert stats.paired_bootstrap(x, 0 * x, seed=7) == stats.paired_bootstrap(x, 0 * x, seed=7)
    with pytest.raises(ValueError, match="same shape"):
        stats.paired_bootstrap(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_mean(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="seeds, bags"):
        stats.bootstrap_mean(np.zeros(3))


# ------------------------------------------------------------- comparisons (malm.report)
def write_run(root, variant: str, seed: int, r1: list[float], medr: list[float], bag_size=100):
    """A metrics JSON as ``malm evaluate`` writes it, with hand-made per-bag values."""
    import json

    from malm.report.collect import DIRECTIONS

    per = {"medR": medr, "R@1": r1, "R@5": [2 * v for v in r1], "R@10": [3 * v for v in r1]}
    result = {"protocol": "tfood", "bag_size": bag_size, "n_bags": len(r1), "n_rows": 1000,
              "seed": None, "per_bag": {d: per for d in DIRECTIONS}}
    for d in DIRECTIONS:
        result[d] = {m: {"mean": float(np.mean(v)), "std": float(np.std(v))} for m, v in per.items()}
    path = root / variant / f"seed{seed}" / "tfood_100.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))
    return path


@pytest.fixture()
def tree(tmp_path):
    base = {0: [10.0, 20.0, 30.0], 1: [14.0, 18.0, 40.0]}
    for seed, r1 in base.items():
        write_run(tmp_path, "baseline", seed, r1, [50.0, 40.0, 30.0])
        write_run(tmp_path, "malm", seed, [v + 1.0 for v in r1], [48.0, 38.0, 28.0])  # +1, -2
        write_run(tmp_path, "no_distill", seed, r1, [50.0, 40.0, 30.0])  # = baseline
    write_run(tmp_path, "llc", 0, [11.0, 19.0, 30.0], [50.0, 40.0, 30.0])  # one seed only
    return tmp_path


def test_comparison_pairs_follow_the_tables():
    from malm.report.compare import comparison_pairs

    pairs = {(v, r): w for v, r, w in comparison_pairs(
        ["baseline", "llc", "llc_lgc", "malm", "mask_both", "mask_0.25", "mask_0.9"])}
    assert pairs[("llc", "baseline")] == "vs baseline; Table 2 step"
    assert pairs[("llc_lgc", "llc")] == pairs[("malm", "llc_lgc")] == "Table 2 step"
    assert pairs[("mask_both", "malm")] == "Table 2 step"
    assert pairs[("mask_0.9", "malm")] == "Table 3 step"  # malm is the 0.75 row
    assert ("malm", "mask_0.25") not in pairs  # 0.5 is absent: the step is skipped, not bridged
    # the alias fills its row: no_distill stands for +LLC+LGC
    assert ("malm", "no_distill") in {(v, r) for v, r, _ in comparison_pairs(["no_distill", "malm"])}
    # the design card's chain: each variant adds one component to the one before it
    chain = {(v, r): w for v, r, w in comparison_pairs(["baseline", "global_only", "no_mask",
                                                         "no_distill", "malm"])}
    assert chain[("global_only", "baseline")] == "vs baseline; component step: +L_GC"
    assert chain[("no_mask", "global_only")] == "component step: +L_LC"
    assert chain[("no_distill", "no_mask")] == "component step: +masking"
    assert "component step: +L_dist" in chain[("malm", "no_distill")]


def test_rerank_step_pairs_each_variant_with_its_own_dual_encoder_reading():
    import pandas as pd

    from malm.report.compare import rerank_comparisons

    rows = []
    for seed, (dual, rer) in enumerate([(20.0, 23.0), (21.0, 23.0), (19.0, 23.5)]):
        for protocol, value in (("tfood", dual), ("tfood+rerank10", rer)):
            for direction in ("img2rec", "rec2img"):
                for metric in ("medR", "R@1", "R@5", "R@10"):
                    rows.append({"variant": "malm", "display": "MALM", "seed": seed, "protocol": protocol,
                                 "bag_size": 1000, "n_bags": 1, "direction": direction, "metric": metric,
                                 "value": value if metric == "R@1" else 5.0, "std": 0.0,
                                 "dataset": "x", "source": "ours (x)"})
    df = pd.DataFrame(rows)
    cmp = rerank_comparisons(df, None, n_boot=200)
    r1 = cmp[(cmp.direction == "img2rec") & (cmp.metric == "R@1")].iloc[0]
    assert (r1.variant, r1.reference, r1.protocol) == ("malm+rerank10", "malm", "tfood")
    assert r1.comparison == "re-ranking step: top 10"
    assert r1.mean_diff == pytest.approx(23.1667 - 20.0, abs=1e-3)
    assert r1.ci_low > 0  # every seed gains
    same = df.assign(value=df["value"].where(df["protocol"] == "tfood", None))
    same["value"] = same.groupby(["seed", "direction", "metric"])["value"].transform("first")
    flat = rerank_comparisons(same, None, n_boot=200)
    assert (flat["mean_diff"] == 0).all()  # identical readings: no difference
    assert rerank_comparisons(df[df.protocol == "tfood"], None).empty


def test_compare_uses_the_per_bag_values_paired(tree):
    from malm.report.collect import collect, collect_bags
    from malm.report.compare import compare, comparison_pairs, summarise

    files = list(tree.glob("*/seed*/*.json"))
    df, bags = collect(files), collect_bags(files)
    assert len(bags) == 7 * 3 * 8 and set(bags["bag"]) == {0, 1, 2}
    cmp = compare(df, bags, comparison_pairs(df["variant"].unique()), n_boot=2000)
    c = cmp.set_index(["variant", "reference", "direction", "metric"])
    m = c.loc[("malm", "baseline", "img2rec", "R@1")]  # +1 on every seed and bag: exactly [1, 1]
    assert (m.mean_diff, m.ci_low, m.ci_high, m.p_better) == (1.0, 1.0, 1.0, 1.0)
    assert (m.n_seeds, m.n_bags, m.resampling) == (2, 3, "seeds x bags")
    medr = c.loc[("malm", "baseline", "img2rec", "medR")]  # -2 = better: p_better 1
    assert (medr.mean_diff, medr.ci_low, medr.ci_high, medr.p_better) == (-2.0, -2.0, -2.0, 1.0)
    same = c.loc[("no_distill", "baseline", "rec2img", "R@10")]
    assert same.mean_diff == 0.0 and same.ci_low <= 0 <= same.ci_high and same.p_better == 0.5
    assert c.loc[("malm", "no_distill", "img2rec", "R@1")].comparison == "Table 2 step; component step: +L_dist"
    one = c.loc[("llc", "baseline", "img2rec", "R@1")]  # llc has seed 0 only: paired on it alone
    assert (one.n_seeds, one.resampling) == (1, "bags (1 seed)")
    assert one.mean_diff == pytest.approx(0.0) and one.ci_low < 0 < one.ci_high
    # the interval of a mean: from the bags, and over the run means when they are missing
    s = summarise(df, bags, n_boot=2000).set_index(["variant", "direction", "metric"])
    assert s.loc[("baseline", "img2rec", "R@1"), "ci_over"] == "seeds x bags"
    lo, hi = s.loc[("baseline", "img2rec", "R@1"), ["ci_low", "ci_high"]]
    assert 10.0 <= lo < 22.0 < hi <= 40.0  # within the range of the bags, around the mean 22
    s = summarise(df, None, n_boot=2000).set_index(["variant", "direction", "metric"])
    assert s.loc[("baseline", "img2rec", "R@1"), "ci_over"] == "seeds (per-bag values missing)"
    assert tuple(s.loc[("baseline", "img2rec", "R@1"), ["ci_low", "ci_high"]]) == (20.0, 24.0)


def test_difference_cells_say_when_the_interval_covers_zero():
    from malm.report.tables import covers_zero, fmt_ci, fmt_diff

    assert fmt_diff(2.06, 0.84, 3.4) == "+2.1 [+0.8, +3.4]"
    assert fmt_diff(0.3, -0.9, 1.5) == "≈0 (+0.3 [-0.9, +1.5])"
    assert fmt_diff(-1.0, -1.5, -0.2) == "-1.0 [-1.5, -0.2]"  # medR: lower, shown as a difference
    assert fmt_diff(0.3, np.nan, np.nan) == "+0.3 (no CI)"
    # an interval that excludes 0 but rounds to it gets the digits that show it
    assert fmt_diff(-0.004, -0.006, -0.002) == "-0.004 [-0.006, -0.002]"
    assert fmt_diff(0.02, 0.01, 0.03) == "+0.02 [+0.01, +0.03]"
    assert fmt_diff(-0.004, -0.009, 0.001) == "≈0 (-0.0 [-0.0, +0.0])"  # covers 0: no extra digits
    assert covers_zero(0.0, 1.0) and covers_zero(np.nan, np.nan) and not covers_zero(0.01, 1.0)
    assert fmt_ci(11.0, 10.0, 12.0) == "11.0 [10.0, 12.0]" and fmt_ci(11.0, np.nan, np.nan) == "11.0"


def test_build_tables_writes_bags_comparisons_and_a_bag_of_100_title(tree, tmp_path_factory):
    from malm.report.write import build_tables

    out = tmp_path_factory.mktemp("tables")
    written = build_tables(tree, out / "tables", out / "figs", out / "summary.json")
    cmp = pd.read_csv(written["comparisons"])
    assert {"variant", "reference", "protocol", "bag_size", "direction", "metric", "mean_diff",
            "ci_low", "ci_high", "p_better", "n_seeds", "n_bags"} <= set(cmp.columns)
    assert len(pd.read_csv(written["per_bag"])) == 7 * 3 * 8
    md = written["markdown"].read_text()
    assert "### Paired differences, tfood 100" in md and "≈0 (+0.0 [" in md  # no_distill = baseline
    assert (out / "figs" / "recall_tfood_100.png").exists()


def test_recall_figure_title_uses_the_bag_label():
    from malm.report import figures as plots
    from malm.report.compare import summarise

    rows = [dict(variant="malm", display="MALM", seed=s, protocol="tfood", bag_size=100, n_bags=10,
                 direction=d, metric=m, value=10.0 + s, std=0.0, dataset="synthetic",
                 source="ours (synthetic)")
            for s in (0, 1) for d in ("img2rec", "rec2img") for m in ("R@1", "R@5", "R@10")]
    fig = plots.recall_bars(summarise(pd.DataFrame(rows), n_boot=200), "tfood", 100)
    title = fig._suptitle.get_text()
    assert "10 bags of 100" in title and "0k" not in title and "95 % bootstrap CI" in title
    plots.plt.close(fig)


def test_difference_tables_export_as_plain_latex():
    from malm import report

    df = pd.DataFrame({("ours 1k: Δ [95 % CI]", "R@1"): ["≈0 (+0.3 [-0.9, +1.5])"]},
                      index=["MALM − Baseline"])
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    tex = report.to_latex(df)
    assert r"$\approx$0" in tex and r"$\Delta$" in tex and "MALM $-$ Baseline" in tex
    assert not any(ord(ch) > 127 for ch in tex)
    md = report.to_markdown(df)
    assert md.startswith("**ours 1k: Δ [95 % CI]**") and "| R@1" in md
