"""notebooks/paper_tables.ipynb and malm/report/: tables against hand computations on a fixture,
the paper's inconsistencies on the real paper CSV, missing results, a headless run of the notebook,
and no stale outputs in the committed notebook."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from malm import report
from malm.report.compare import summarise
from malm.report.paper import paper_table

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "results"  # made-up numbers, see its README.md
NOTEBOOK = ROOT / "notebooks" / "paper_tables.ipynb"
PARAMETERS = ["results_csv", "curves_csv", "grounding_csv", "pretrain_json", "grid_dirs", "out_dir",
              "protocol", "rerank_k", "bag_sizes"]


@pytest.fixture(scope="module")
def paper() -> pd.DataFrame:
    return paper_table()


@pytest.fixture(scope="module")
def ours() -> pd.DataFrame:
    return report.load_ours({"pipeline": FIXTURE / "results.csv",
                             "table2": FIXTURE / "absent" / "results.csv"})


def row(t1: pd.DataFrame, bag: str, variant: str) -> pd.Series:
    sel = t1[(t1.bag == bag) & (t1.variant == variant) & t1.source.str.startswith("ours")]
    assert len(sel) == 1
    return sel.iloc[0]


# ------------------------------------------------------------------------------ loading
def test_load_skips_missing_files_and_labels_origin(ours):
    assert set(ours.origin) == {"pipeline"}
    assert len(ours) == len(pd.read_csv(FIXTURE / "results.csv"))
    inv = report.inventory({"pipeline": FIXTURE / "results.csv", "table2": FIXTURE / "absent.csv"})
    assert inv.exists.tolist() == [True, False]
    assert inv.loc[0, "seeds"] == "0, 1"


def test_load_rejects_a_file_without_the_tidy_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("variant,seed\nmalm,0\n")
    with pytest.raises(ValueError, match="missing columns"):
        report.load_ours([tmp_path / "bad.csv"])


# ------------------------------------------------------------------ mean ± std over seeds
def test_table1_mean_std_over_seeds_by_hand(ours, paper):
    t1 = report.table1(ours, paper, protocol="tfood", bag_sizes=[1000, 10000])
    # Cells: 'mean [95 % CI]'. The fixture has no per_bag.csv, so the interval resamples the two
    # seeds' run means: resampled means min, mid, max with probability 1/4, 1/2, 1/4 -> [min, max].
    # baseline img2rec 1k R@1: seeds 10.0, 12.0 -> mean 11.0, CI [10.0, 12.0]
    b = row(t1, "1k", "baseline")
    assert b["img2rec R@1"] == "11.0 [10.0, 12.0]" and b["seeds"] == "2"
    assert "CI: seeds (per-bag values missing)" in b["note"]
    # rec2img = img2rec - 0.5; R@10 = 2.5 R@1 -> 25.0, 30.0
    assert b["rec2img R@1"] == "10.5 [9.5, 11.5]" and b["img2rec R@10"] == "27.5 [25.0, 30.0]"
    # malm 10k: R@1 / 4 -> 3.75, 4.0 -> mean 3.875; medR 4 x 100/R1: 26.8, 25.0
    m = row(t1, "10k", "malm")
    assert m["img2rec R@1"] == "3.9 [3.8, 4.0]"
    medr = [round(100 / 15, 1) * 4, round(100 / 16, 1) * 4]
    assert m["img2rec medR"] == f"{sum(medr) / 2:.1f} [{min(medr):.1f}, {max(medr):.1f}]"
    # the spread over seeds is still summarise's std (ddof 1): sqrt(2) = 1.41 and 0.177
    s = summarise(ours[ours.variant == "baseline"])
    std = s[(s.protocol == "tfood") & (s.bag_size == 1000) & (s.direction == "img2rec")
            ].set_index("metric")["std"]
    assert std["R@1"] == pytest.approx(math.sqrt(2)) and std["R@10"] == pytest.approx(2.5 * math.sqrt(2))
    s = summarise(ours[ours.variant == "malm"])
    assert s[(s.protocol == "tfood") & (s.bag_size == 10000) & (s.direction == "img2rec")
             & (s.metric == "R@1")]["std"].item() \
        == pytest.approx(0.25 / math.sqrt(2))
    # one seed (and no per-bag values): the value alone, never a made-up spread
    g = row(t1, "1k", "global_only")
    assert g["img2rec R@1"] == "11.0" and g["seeds"] == "1"


def test_table1_labels_sources_and_keeps_paper_numbers(ours, paper):
    t1 = report.table1(ours, paper, bag_sizes=[1000, 10000])
    assert set(t1.source) == {"paper (arXiv 2305.11327v1 Table 1)", "ours (fixture, tfood 1k x10)",
                              "ours (fixture, tfood 10k x1)"}
    p = t1[(t1.bag == "10k") & (t1.method == "MALM") & t1.source.str.startswith("paper")].iloc[0]
    assert (p["img2rec R@1"], p["rec2img R@1"]) == ("45.9", "44.2")
    assert {"H-T (ViT)", "T-Food (CLIP-ViT)"} <= set(t1.method)


def test_protocol_filter(ours, paper):
    t1 = report.table1(ours, paper, protocol="ht", bag_sizes=[1000])
    assert row(t1, "1k", "baseline")["img2rec R@1"] == "12.0 [11.0, 13.0]"  # ht rows: R@K + 1
    assert row(t1, "1k", "malm")["note"].startswith(report.NO_RESULTS)


# --------------------------------------------------------------------- missing results
def test_missing_variants_are_dashes_never_numbers(ours, paper):
    t2 = report.table2(ours, paper, prefer="table2")
    llc = t2.loc["+LLC"]
    ours_cols = [c for c in t2.columns if c[0].startswith("ours")]
    assert all(llc[c] == report.MISSING for c in ours_cols)
    assert llc[("our runs", "note")] == report.NO_RESULTS
    assert llc[("paper (arXiv 2305.11327v1 Table 2), Recipe1M 10k img2rec", "R@1")] == "41.7"
    t3 = report.table3(ours, paper)
    assert list(t3.index) == ["0.25", "0.50", "0.75", "0.90"]
    assert all(t3.loc["0.50", c] == report.MISSING for c in ours_cols)
    note = report.missing_note(report.coverage(ours, report.table_variants(2), "tfood", [1000]), "T2")
    assert "`llc`" in note and "`mask_both`" in note and "`baseline`" not in note


def test_no_results_at_all(tmp_path, paper):
    empty = report.load_ours([tmp_path / "nothing.csv"])
    assert empty.empty
    t1 = report.table1(empty, paper)
    ours_rows = t1[t1.source.str.startswith("ours")]
    assert (ours_rows["img2rec R@1"] == report.MISSING).all()
    assert (t1[t1.source.str.startswith("paper")]["img2rec R@1"] != report.MISSING).all()
    for t in (report.table2(empty, paper), report.table3(empty, paper)):
        assert (t[("our runs", "seeds")] == "0").all()
    assert report.figure_recall(empty, ["malm"], "tfood", 1000, tmp_path / "r.png") is None
    assert report.figure_mask_ratio(empty, paper, "tfood", 1000, tmp_path / "m.png") is None
    assert report.figure_curves(report.load_curves([tmp_path / "c.csv"]), "train/loss",
                                tmp_path / "c.png") is None
    assert report.load_bags([tmp_path / "nothing.csv"]).empty
    for table in (1, 2, 3):
        assert report.differences(empty, table).empty
    assert report.differences_table(report.differences(empty, 2)).empty
    assert not list(tmp_path.glob("*.png"))


# ------------------------------------------------------- aliases, several result files
def test_alias_fills_the_row_and_one_file_per_row(ours, paper):
    t2 = report.table2(ours, paper, prefer="table2")
    r = t2.loc["+LLC+LGC"]  # no llc_lgc runs: its alias no_distill's
    assert r[("our runs", "variant")] == "no_distill"
    assert "llc_lgc" in r[("our runs", "note")]
    # the Table 3 grid re-ran malm (made-up +100): Table 3 takes it, Table 1 the pipeline's; never pooled
    grid = ours[ours.variant == "malm"].assign(origin="table3", value=lambda d: d.value + 100)
    both = pd.concat([ours, grid], ignore_index=True)
    t3 = report.table3(both, paper, bag_sizes=[1000], prefer="table3")
    cell = t3.loc["0.75", ("ours (fixture, tfood 1k x10) img2rec", "R@1")]
    assert cell == "115.5 [115.0, 116.0]" and t3.loc["0.75", ("our runs", "note")].startswith("from table3")
    assert row(report.table1(both, paper, bag_sizes=[1000]), "1k", "malm")["img2rec R@1"] == \
        "15.5 [15.0, 16.0]"
    assert set(report.dedupe(both, ["malm"], prefer="table3").origin) == {"table3"}
    # malm and its alias mask_0.75 both present: the mask-ratio figure takes one run set at 0.75
    alias = ours[ours.variant == "malm"].assign(variant="mask_0.75")
    d = report.dedupe(pd.concat([ours, alias]), report.table_variants(3))
    assert "malm" in set(d.variant) and "mask_0.75" not in set(d.variant)


def test_runs_with_different_bag_counts_are_not_pooled(ours, paper):
    odd = ours.copy()
    odd.loc[(odd.variant == "malm") & (odd.seed == 1) & (odd.bag_size == 10000), "n_bags"] = 5
    cell = row(report.table1(odd, paper, bag_sizes=[10000]), "10k", "malm")["img2rec R@1"]
    assert cell == "3.8 (x1); 4.0 (x5)"


# --------------------------------------------------------------- the paper, checked
def test_paper_inconsistencies_finds_exactly_the_known_ones(paper):
    flags = report.paper_inconsistencies(paper)
    found = {(k, frozenset(r)) for k, r in zip(flags.kind, flags.rows)}
    assert found == {
        ("same setting, different numbers", frozenset({
            "Table 1 'MALM' 10k img2rec", "Table 2 '+LLC+LGC+Ldist (MALM)' 10k img2rec",
            "Table 3 'mask ratio 0.75' 10k img2rec"})),
        ("different settings, identical numbers", frozenset({  # Table 2's MALM = Table 1's rec2img
            "Table 1 'MALM' 10k rec2img", "Table 2 '+LLC+LGC+Ldist (MALM)' 10k img2rec",
            "Table 3 'mask ratio 0.75' 10k img2rec"})),
        ("different settings, identical numbers", frozenset({  # +LLC = r 0.50
            "Table 2 '+LLC' 10k img2rec", "Table 3 'mask ratio 0.50' 10k img2rec"})),
    }


def test_paper_inconsistencies_are_computed_not_hard_coded(paper):
    fixed = paper.copy()
    t1_malm = (fixed.table == 1) & (fixed.method == "MALM") & (fixed.bag_size == 10000)
    t23_malm = fixed.method.isin(["+LLC+LGC+Ldist (MALM)", "mask ratio 0.75"])
    for metric, v in {"R@1": 45.9, "R@5": 72.3, "R@10": 80.5}.items():  # as the ACM MM draft
        fixed.loc[t23_malm & (fixed.metric == metric), "value"] = v
    fixed.loc[t1_malm & (fixed.direction == "rec2img") & (fixed.metric == "R@1"), "value"] = 44.3
    fixed.loc[(fixed.method == "+LLC") & (fixed.metric == "R@1"), "value"] = 41.0
    assert report.paper_inconsistencies(fixed).empty


def test_paper_claims(paper):
    claims = report.paper_claims(paper)
    flagged = claims[claims.flag]
    assert len(flagged) == 3
    assert flagged.claim.str.contains("outperforms every other").any()
    assert "T-Food (CLIP-ViT) 44.6" in flagged.evidence.iloc[0]
    assert flagged.evidence.str.contains(r"Table 1: \+7.6; Table 2: \+5.9").any()
    assert claims[claims.claim.str.contains("0.75 is the best")].holds.all()


# -------------------------------------------------------------------------------- export
def test_export_markdown_and_latex(tmp_path, ours, paper):
    paths = report.export(report.table3(ours, paper), tmp_path, "table3", caption="T3 caption")
    md, tex = paths["md"].read_text(), paths["tex"].read_text()
    # one small table per source block: the block's label once, then plain metric headers
    assert md.startswith("T3 caption") and "**ours (fixture, tfood 1k x10) img2rec**" in md
    assert "| mask ratio   | medR" in md and "img2rec: R@1" not in md
    headers = [line for line in md.splitlines() if line.startswith("| mask ratio")]
    assert len(headers) == 4  # paper, ours 1k, ours 10k, our runs
    assert max(map(len, headers[:3])) < 100  # the number blocks fit a terminal
    assert "| 2.0 " in md  # the paper's numbers as printed (no 2.0 -> 2)
    assert r"mask\_0.25" in tex and "—" not in tex and r"\caption{T3 caption}" in tex
    assert r"$\pm$" in report.to_latex(pd.DataFrame({"R@1": ["3.0 ± 1.4"]}))  # cells: 'mean [CI]' now


# ------------------------------------------------------------------------------ notebook
def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert not any("execution" in c.metadata for c in nb.cells)  # nbclient's timing metadata
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for name in PARAMETERS:
        assert f"{name} = " in params[0].source
    assert '"../results/tables/results.csv"' in params[0].source


def test_notebook_runs_headless_on_the_fixture(tmp_path, monkeypatch):
    from ipykernel.kernelspec import write_kernel_spec
    from nbclient import NotebookClient

    # a kernelspec of this interpreter (the venv's), found first through JUPYTER_PATH
    spec = Path(write_kernel_spec(tmp_path / "jupyter" / "kernels" / "malm-test"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no history in the user's profile
    assert (spec / "kernel.json").read_text().count(sys.executable.replace("\\", "\\\\")) == 1
    out = tmp_path / "out"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    # made-up grounding rows and pretraining summary (the real ones come from the pipeline)
    grounding = tmp_path / "tables" / "grounding.csv"
    grounding.parent.mkdir()
    pd.DataFrame([{"variant": "malm", "display": "MALM", "seed": s, "split": "test", "rule": "centre",
                   "n_pairs": 100, "n_targets": 300, "accuracy": a, "chance": 0.1, "lift": a / 0.1,
                   "mass_in_box": 0.2, "ci_low": a - 0.05, "ci_high": a + 0.05}
                  for s, a in ((0, 0.3), (1, 0.2))]).to_csv(grounding, index=False)
    pretrain = tmp_path / "pretrain.json"
    pretrain.write_text(json.dumps({"corpus": {"seed": 1}, "caption": "title + lines", "steps": 10,
                                    "samples": 640, "minutes": 0.5, "curve": [
                                        {"epoch": 1, "samples": 640.0, "val/img2cap_R@1": 12.5}]}))
    params.source = "\n".join([
        f"results_csv = {str(FIXTURE / 'results.csv')!r}",
        f"curves_csv = {str(FIXTURE / 'curves.csv')!r}",
        f"grounding_csv = {str(grounding)!r}", f"pretrain_json = {str(pretrain)!r}",
        f"grid_dirs = [{str(tmp_path / 'grids' / 'table2')!r}, {str(tmp_path / 'grids' / 'table3')!r}]",
        f"out_dir = {str(out)!r}", "protocol = 'tfood'", "rerank_k = 10", "bag_sizes = [1000, 10000]"])
    NotebookClient(nb, timeout=120, kernel_name="malm-test",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    expected = {f"{t}.{ext}" for t in ("table1", "table2", "table3", "paper_inconsistencies",
                                       "paper_claims") for ext in ("md", "tex")}
    expected |= {f"{kind}_tfood_{b}.png" for kind in ("recall_table1", "recall_table2", "mask_ratio")
                 for b in ("1k", "10k")}
    expected |= {"curves_val_img2rec_R1.png", "curves_train_loss.png", "comparisons.csv", "grounding.png",
                 "learning_curves.png"}
    expected |= {f"table{t}_differences.{ext}" for t in (1, 2, 3) for ext in ("md", "tex")}
    assert {p.name for p in out.iterdir()} == expected
    assert "ours (fixture, tfood 10k x1)" in (out / "table1.md").read_text()
    # both readings, each named: the dual encoder and the re-ranked one (none for the baseline)
    assert "ours (fixture, tfood+rerank10 10k x1)" in (out / "table1.md").read_text()
    assert "**ours (fixture, tfood+rerank10 1k x10) img2rec**" in (out / "table2.md").read_text()
    assert report.NO_RERANK in (out / "table1.md").read_text()
    # paired differences: malm - no_distill is Table 2's last measured step; seeds 0/1 of R@1 1k
    # differ by 15 - 13 = 2 and 16 - 14 = 2, so the interval is exactly [2, 2] (per-run means)
    step = next(line for line in (out / "table2_differences.md").read_text().splitlines()
                if line.startswith("| MALM − Without distillation"))  # the 1k block comes first
    assert [c.strip() for c in step.split("|")[2:4]] == ["-0.9 [-1.0, -0.9]", "+2.0 [+2.0, +2.0]"]
    cmp = pd.read_csv(out / "comparisons.csv")
    assert set(cmp.table) == {1, 2, 3}
    one_seed = cmp.variant == "global_only"  # one run: a difference, but no interval
    assert cmp[one_seed].ci_low.isna().all() and cmp[~one_seed].ci_low.notna().all()
    assert set(cmp[~one_seed].resampling) == {"seeds (per-bag values missing)", "seeds (1 bag)"}
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "no results yet for `llc`" in text and "3 inconsistencies" in text
    shown = text + "".join(str(o.get("data", {}).get("text/plain", "")) for c in nb.cells
                           if c.cell_type == "code" for o in c.outputs)
    assert "0.250 ± 0.071" in shown and "2/2" in shown  # the grounding table
    assert "640 samples" in shown  # the pretraining summary


def test_wide_table_shows_no_spread_for_one_seed():
    """One seed has no std: the cell says so instead of a made-up '± 0.0'."""
    import pandas as pd

    from malm.report.compare import summarise
    from malm.report.tables import wide_table

    rows = [dict(variant="malm", display="MALM", seed=s, protocol="tfood", bag_size=1000, n_bags=10,
                 direction=d, metric="R@1", value=v, std=0.0, dataset="synthetic", source="ours")
            for s, v in ((0, 2.0),) for d in ("img2rec", "rec2img")]
    one = wide_table(summarise(pd.DataFrame(rows)), "tfood", 1000)
    assert one.loc["MALM", "img2rec R@1"] == "2.0 (1 seed)"
    rows += [{**r, "seed": 1, "value": 4.0} for r in rows]
    two = wide_table(summarise(pd.DataFrame(rows)), "tfood", 1000)
    assert two.loc["MALM", "img2rec R@1"] == "3.0 ± 1.4"
