"""Expected results and `malm check-results` (malm/report/expected.py): the tolerance rule, the
check passing on the results its file was derived from, failing (exit 1, the row named) on a
moved, missing or re-bagged row, the printed table, and the committed files in expected/ (the
paper's is what malm/paper gives now; the smoke profile's is checked on a real run by
tests/test_pipeline.py::test_dvc_repro_smoke)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from malm.cli import main
from malm.report import expected as E

VARIANTS = ["baseline", "malm"]
SEEDS = [0, 1, 2]


def make_results(tmp_path, seeds=SEEDS, variants=VARIANTS):
    """A results/ directory (tables/results.csv in `malm tables`' layout) with invented numbers:
    2 variants x 3 seeds, tfood 1k x10 and 10k x1, both directions, 4 metrics."""
    rng = np.random.default_rng(0)
    rows = []
    for v in variants:
        for s in seeds:
            for bag, n_bags in ((1000, 10), (10000, 1)):
                for d in ("img2rec", "rec2img"):
                    base = {"R@1": 20.0, "R@5": 45.0, "R@10": 58.0, "medR": 7.0}
                    for m, x in base.items():
                        noise = rng.normal(0, 0.6 if m != "medR" else 0.3)
                        rows.append({"variant": v, "display": v, "seed": s, "protocol": "tfood",
                                     "bag_size": bag, "n_bags": n_bags, "direction": d, "metric": m,
                                     "value": round(x + noise, 4), "std": 1.0,
                                     "dataset": "synthetic", "source": "ours (synthetic)"})
    out = tmp_path / "results"
    (out / "tables").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(out / "tables" / "results.csv", index=False)
    return out


def edit_results(results_dir, fn):
    f = results_dir / "tables" / "results.csv"
    df = pd.read_csv(f)
    fn(df).to_csv(f, index=False)


@pytest.fixture
def derived(tmp_path, capsys):
    """results/ and the expected file written from it with `malm check-results --write`."""
    results = make_results(tmp_path)
    exp = tmp_path / "expected.csv"
    assert main(["check-results", str(results), "--write", "--expected", str(exp),
                 "--note", "invented results of tests/test_expected.py"]) == 0
    assert f"wrote {exp}" in capsys.readouterr().out
    return results, exp


def test_tolerance_rule():
    rule = E.Rule(k=4.0, floor_recall=0.5, floor_medR=0.25)
    # k x the standard error of the difference of two seed-means
    assert rule.tolerance("R@1", 1.0, 3, 3) == pytest.approx(4 * math.sqrt(2 / 3))
    assert rule.tolerance("R@1", 1.0, 3, 1) == pytest.approx(4 * math.sqrt(1 / 3 + 1))  # 1 new seed: wider
    assert rule.tolerance("R@1", 0.05, 3, 3) == 0.5  # the floor, per metric
    assert rule.tolerance("medR", 0.05, 3, 3) == 0.25
    assert rule.tolerance("R@5", float("nan"), 1, 1) == 0.5  # no std (one seed, the paper): the floor
    assert rule.tolerance("R@5", float("nan"), float("nan"), 3) == 0.5
    assert E.Rule.from_header(["x: 1", *rule.header()]) == rule
    with pytest.raises(ValueError, match="rule.floor_medR"):
        E.Rule.from_header(["rule.k: 4", "rule.floor_recall: 1"])

    # derive: mean over seeds, std over seeds, pooled over the variants of one cell
    df = pd.DataFrame([{"variant": v, "seed": s, "protocol": "tfood", "bag_size": 1000, "n_bags": 10,
                        "direction": "img2rec", "metric": "R@1", "value": x}
                       for v, xs in (("a", [10.0, 11.0, 12.0]), ("b", [20.0, 20.0, 23.0]))
                       for s, x in enumerate(xs)])
    t = E.derive(df, rule).set_index("variant")
    assert t.loc["a", "expected"] == pytest.approx(11.0) and t.loc["b", "expected"] == pytest.approx(21.0)
    assert t.loc["a", "seed_std"] == pytest.approx(1.0)
    assert t.loc["b", "seed_std"] == pytest.approx(math.sqrt(3))
    pooled = math.sqrt((1.0 + 3.0) / 2)
    assert t["pooled_std"].tolist() == pytest.approx([pooled, pooled])
    assert t["tolerance"].tolist() == pytest.approx([4 * pooled * math.sqrt(2 / 3)] * 2)
    assert (t["n_seeds"] == 3).all()
    # incomplete results are refused, naming the cell
    with pytest.raises(ValueError, match=r"incomplete results.*a tfood 1k x10 img2rec R@5 \(1 of 3\)"):
        E.derive(pd.concat([df, df.iloc[:1].assign(metric="R@5")]), rule)
    with pytest.raises(ValueError, match="different seeds"):
        E.derive(df[~((df.variant == "b") & (df.seed == 2))], rule)


def test_check_passes_on_its_own_results_and_prints_the_table(derived, capsys):
    results, exp = derived
    text = exp.read_text()
    assert "# rule.k: 4\n# rule.floor_recall: 0.5\n# rule.floor_medR: 0.5\n" in text  # defaults
    assert "# invented results of tests/test_expected.py\n" in text
    table, rule, _ = E.read_expected(exp)
    assert len(table) == 2 * 2 * 2 * 4 and (table["n_seeds"] == 3).all()

    assert main(["check-results", str(results), "--expected", str(exp)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["variant", "protocol", "bag", "direction", "metric", "expected", "measured",
                      "diff", "tol", "seeds", "status"]
    line = next(x for x in out.splitlines() if x.split()[:5] == ["malm", "tfood", "1k", "x10", "img2rec"]
                and x.split()[5] == "R@1")
    assert line.split()[-1] == "ok" and line.split()[-4] == "+0.00"
    assert out.rstrip().endswith("32 of 32 expected rows within tolerance; 0 worse, 0 better, "
                                 "0 missing, 0 on other n_bags; 0 extra rows (not checked) -> PASS")
    # the tables stage's own folder, or the file itself, work too
    assert main(["check-results", str(results / "tables"), "--expected", str(exp),
                 "--failures-only"]) == 0
    assert capsys.readouterr().out.startswith("check-results: 32 of 32")


def test_check_fails_on_a_lowered_r1(derived, capsys):
    results, exp = derived
    table, rule, _ = E.read_expected(exp)
    row = table.query("variant == 'malm' and bag_size == 1000 and direction == 'img2rec' "
                      "and metric == 'R@1'").iloc[0]
    drop = row.tolerance + 0.3  # every seed lowered: the seed-mean drops by that much

    def lower(df):
        sel = ((df.variant == "malm") & (df.bag_size == 1000) & (df.direction == "img2rec")
               & (df.metric == "R@1"))
        df.loc[sel, "value"] -= drop
        return df

    edit_results(results, lower)
    assert main(["check-results", str(results), "--expected", str(exp)]) == 1
    out = capsys.readouterr().out
    assert (f"FAIL malm tfood 1k x10 img2rec R@1: measured {row.expected - drop:.2f}, expected "
            f"{row.expected:.2f} +- {row.tolerance:.2f} ({-drop:+.2f}, worse)") in out
    assert out.count("FAIL ") == 1 and out.rstrip().endswith("-> FAIL")
    assert "31 of 32 expected rows within tolerance; 1 worse" in out
    # within tolerance passes
    edit_results(results, lambda df: lower_back(df, drop - 0.5 * row.tolerance))
    assert main(["check-results", str(results), "--expected", str(exp)]) == 0


def lower_back(df, by):
    sel = ((df.variant == "malm") & (df.bag_size == 1000) & (df.direction == "img2rec")
           & (df.metric == "R@1"))
    df.loc[sel, "value"] += by
    return df


def test_check_fails_on_a_missing_row_and_passes_extra_rows(derived, capsys):
    results, exp = derived

    def move(df):
        gone = (df.variant == "baseline") & (df.bag_size == 10000) & (df.metric == "medR") \
            & (df.direction == "rec2img")
        extra = df[(df.variant == "malm")].assign(protocol="ht")  # a protocol the file does not list
        return pd.concat([df[~gone], extra])

    edit_results(results, move)
    assert main(["check-results", str(results), "--expected", str(exp)]) == 1
    out = capsys.readouterr().out
    assert "FAIL baseline tfood 10k x1 rec2img medR: expected" in out and "not in the results" in out
    assert "1 missing" in out and "16 extra rows (not checked) -> FAIL" in out
    assert any(x.split()[:2] == ["malm", "ht"] and x.split()[-1] == "extra" for x in out.splitlines())
    # --variants: only malm is checked (its rows are all there); the extra rows still pass
    assert main(["check-results", str(results), "--expected", str(exp), "--variants", "malm"]) == 0
    assert "16 of 16 expected rows" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no expected rows for nope"):
        E.check_path(results, exp, ["nope"])


def test_check_fails_on_other_n_bags_and_fewer_seeds_widen_the_tolerance(derived, capsys):
    results, exp = derived
    table, rule, _ = E.read_expected(exp)
    # one seed only: each row's tolerance is for a 1-seed mean against the 3-seed expectation
    edit_results(results, lambda df: df[df.seed == 0])
    res = E.check_path(results, exp)
    assert (res["n_seeds"] == 1).all()
    want = [rule.tolerance(r.metric, r.pooled_std, 3, 1) for r in table.itertuples()]
    assert res["tolerance"].to_numpy() == pytest.approx(want)
    assert (res["tolerance"].to_numpy() >= table["tolerance"].to_numpy()).all()

    edit_results(results, lambda df: df.assign(n_bags=df.n_bags.where(df.bag_size != 1000, 5)))
    assert main(["check-results", str(results), "--expected", str(exp)]) == 1
    out = capsys.readouterr().out
    assert "FAIL malm tfood 1k x10 img2rec R@1: read on 5 bags, expected on 10" in out
    assert "16 on other n_bags" in out


def test_expected_file_refuses_an_edited_tolerance_and_keeps_its_rule(derived, tmp_path, capsys):
    results, exp = derived
    lines = exp.read_text().splitlines()
    i = next(i for i, x in enumerate(lines) if x.startswith("malm,tfood,1000,10,img2rec,R@1,"))
    cells = lines[i].split(",")
    cells[7] = "9.000000"
    edited = tmp_path / "edited.csv"
    edited.write_text("\n".join(lines[:i] + [",".join(cells)] + lines[i + 1:]) + "\n")
    with pytest.raises(ValueError, match="malm tfood 1k x10 img2rec R@1 has tolerance 9"):
        E.read_expected(edited)
    assert main(["check-results", str(results), "--expected", str(edited)]) == 2
    assert "its rule gives" in capsys.readouterr().err
    assert main(["check-results", str(results), "--expected", str(tmp_path / "none.csv")]) == 2
    assert "--write --expected" in capsys.readouterr().err

    # writing again keeps the file's rule unless a flag changes it
    assert main(["check-results", str(results), "--write", "--expected", str(exp), "--k", "3"]) == 0
    assert E.read_expected(exp)[1] == E.Rule(k=3.0, floor_recall=0.5, floor_medR=0.5)
    assert main(["check-results", str(results), "--write", "--expected", str(exp)]) == 0
    assert E.read_expected(exp)[1].k == 3.0
    assert "# invented results of tests/test_expected.py\n" in exp.read_text()  # notes kept too
    assert main(["check-results", str(results), "--write", "--expected", str(exp), "--note", "new"]) == 0
    assert E.existing_notes(exp) == ["new"]
    assert main(["check-results", str(results), "--expected", str(exp), "--k", "2"]) == 2  # write only


def test_every_option_has_help():
    from malm.cli import make_parser

    sub = next(a for a in make_parser()._actions if a.dest == "command").choices["check-results"]
    for action in sub._actions:
        assert action.help, action.dest


def test_paper_file_is_the_papers_tables(tmp_path):
    """expected/paper.csv is what the paper's CSV gives now (regenerate:
    `malm check-results --write --paper --expected expected/paper.csv`)."""
    assert E.write_paper(tmp_path / "paper.csv").read_text() == \
        (E.EXPECTED_DIR / "paper.csv").read_text()
    table, rule, header = E.read_expected(E.EXPECTED_DIR / "paper.csv")
    assert rule == E.PAPER_RULE and "rule.floor_recall: 2" in header
    assert set(table["variant"]) == {"baseline", "ht", "tfood", "malm", "llc", "no_distill", "mask_both",
                                     "mask_0.25", "mask_0.5", "mask_0.9"}
    t = table.set_index(["variant", "protocol", "bag_size", "direction", "metric"])
    malm = t.loc[("malm", "tfood+rerank10", 10000, "img2rec", "R@1")]
    assert malm.expected == 45.9 and malm.n_bags == 5 and malm.tolerance == 2.0
    assert "Table 1 'MALM'" in malm.source and "prints 44.2" in malm.source
    assert t.loc[("baseline", "tfood", 1000, "rec2img", "medR")].tolerance == 1.0
    assert not any(p.endswith("rerank10") for p in table.loc[table.variant.isin(["baseline", "ht"]),
                                                              "protocol"])
    # T-Food's 72.3 is its re-ranked reading (CrossTrijoint, k_test 10): the tfood variant's ITM head
    tfood = t.loc[("tfood", "tfood+rerank10", 1000, "img2rec", "R@1")]
    assert tfood.expected == 72.3 and "T-Food (CLIP-ViT)" in tfood.source
    assert t.loc[("ht", "tfood", 1000, "img2rec", "R@1")].expected == 64.2


def test_smoke_file_reads():
    """expected/smoke.csv: the smoke pipeline's 2 variants x 1 seed at the smoke floors."""
    table, rule, header = E.read_expected(E.EXPECTED_DIR / "smoke.csv")
    assert rule == E.SMOKE_RULE
    assert set(table["variant"]) == {"baseline", "malm"} and (table["n_seeds"] == 1).all()
    assert len(table) == 2 * 2 * 2 * 2 * 4 + 2 * 2 * 4  # tfood, ht x 2 bags; malm's tfood+rerank10
    assert set(table["bag_size"]) == {50, 100}
