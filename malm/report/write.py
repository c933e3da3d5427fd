"""Writing the report's files: a display table as Markdown + LaTeX (``export``), and every output
of ``malm tables`` (``build_tables``): the tidy ``results.csv`` + parquet, ``per_bag.csv``,
``summary.csv``, ``comparisons.csv``, ``tables.md``, the figures and the metrics JSON that
``dvc metrics show`` reads. Every file goes through :mod:`malm.io`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from malm import variants as variants_mod
from malm.eval.names import bag_label
from malm.io import atomic_write_json, atomic_write_text, write_table
from malm.report import figures
from malm.report.collect import (BAGS_FILE, SAMPLES_SEEN, collect, collect_bags, collect_grounding,
                                 load_histories)
from malm.report.compare import compare, comparison_pairs, rerank_comparisons, summarise
from malm.report.gradients import gradient_share_table, gradient_shares
from malm.report.tables import bag_differences_table, bag_n_bags, grounding_summary, wide_table

def to_latex(df: pd.DataFrame, caption: str | None = None) -> str:
    """LaTeX (booktabs) with special characters escaped, and the non-ASCII signs of the tables as
    math: ± -> $\\pm$, ≈ -> $\\approx$, Δ -> $\\Delta$, − (minus) -> $-$; — -> --, … -> \\dots."""
    index = not isinstance(df.index, pd.RangeIndex)
    tex = df.to_latex(index=index, escape=True, caption=caption, multicolumn=True,
                      multicolumn_format="c")
    for sign, latex in (("±", r"$\pm$"), ("≈", r"$\approx$"), ("Δ", r"$\Delta$"), ("−", "$-$"),
                        ("—", "--"), ("…", r"\dots{}")):
        tex = tex.replace(sign, latex)
    return tex


def to_markdown(df: pd.DataFrame) -> str:
    """Pipe table(s) with the numbers as printed. Two-level columns (source block, metric) become one
    small table per block, headed by the block's label in bold, so each header is just the metric;
    columns of an unnamed block go with the first block, the index is repeated in every block."""
    index = not isinstance(df.index, pd.RangeIndex)
    if not isinstance(df.columns, pd.MultiIndex):
        return df.to_markdown(index=index, disable_numparse=True)
    blocks = list(dict.fromkeys(c[0] for c in df.columns))
    shared = [c for c in df.columns if not c[0]]
    parts = []
    for i, block in enumerate(b for b in blocks if b):
        cols = (shared if i == 0 else []) + [c for c in df.columns if c[0] == block]
        part = df[cols].copy()
        part.columns = [c[1] for c in cols]
        parts.append(f"**{block}**\n\n{part.to_markdown(index=index, disable_numparse=True)}")
    return "\n\n".join(parts)


def export(df: pd.DataFrame, out_dir: str | os.PathLike, name: str, caption: str | None = None
           ) -> dict[str, Path]:
    """``<out_dir>/<name>.md`` (caption + pipe table(s), ``to_markdown``) and ``<name>.tex``;
    returns both paths."""
    out = Path(out_dir)
    md = (f"{caption}\n\n" if caption else "") + to_markdown(df) + "\n"
    paths = {"md": out / f"{name}.md", "tex": out / f"{name}.tex"}
    atomic_write_text(paths["md"], md)
    atomic_write_text(paths["tex"], to_latex(df, caption))
    return paths


# ----------------------------------------------------------------------------- malm tables
def build_tables(results_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 figures_dir: str | os.PathLike, metrics_path: str | os.PathLike,
                 runs_dir: str | os.PathLike | None = None, dataset: str = "synthetic",
                 order: list[str] | None = None,
                 grounding_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """results/<variant>/seed<k>/*.json -> in out_dir: tidy ``results.csv`` + parquet, ``per_bag.csv``
    (every bag's value), ``summary.csv`` (mean ± std over seeds, 95 % CI), ``comparisons.csv``
    (paired differences, ``compare``) and ``tables.md``; figures (figures_dir) and a small metrics
    JSON for ``dvc metrics show`` (metrics_path). With ``runs_dir``: ``curves.csv`` (every run's
    history) and the figures ``training_curves.png`` (per epoch) and ``learning_curves.png``
    (validation img2rec R@1 against training samples seen, best epochs and early stops marked)."""
    out, figs = Path(out_dir), Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [p for p in Path(results_dir).glob("*/seed*/*.json")]
    if not files:
        raise FileNotFoundError(f"no metrics files under {results_dir}/<variant>/seed<k>/")
    df = collect(files, dataset)
    bags = collect_bags(files, dataset)
    written = {}
    write_table(df, out / "results.csv")
    write_table(df, out / "results.parquet")
    write_table(bags, out / BAGS_FILE)
    summary = summarise(df, bags)
    write_table(summary, out / "summary.csv")
    cmp = pd.concat([compare(df, bags, comparison_pairs(df["variant"].unique())),
                     rerank_comparisons(df, bags)], ignore_index=True)
    write_table(cmp, out / "comparisons.csv")
    written.update(results=out / "results.csv", per_bag=out / BAGS_FILE,
                   summary=out / "summary.csv", comparisons=out / "comparisons.csv")

    displays = None
    if order:
        displays = [variants_mod.get(v).display for v in order]
    md = [f"# Results: ours ({dataset}), mean ± std over seeds\n",
          "Generated by `malm tables`; every number below was measured by this pipeline. "
          "The paper's numbers are in the notebooks, labelled as the paper's.\n\n"
          "Each protocol x bag size has two tables: the values (mean ± std over seeds of the per-run "
          "mean over bags) and the paired differences (variant − reference on the same seeds and "
          "test bags: mean difference [95 % bootstrap CI over seeds x bags]; '≈0 (...)' = the "
          "interval covers 0, no difference shown; medR: negative = better; P(better) = share of "
          "bootstrap resamples in which the variant's mean R@1 is the better one). Every variant "
          "is compared with Baseline, each Table 2/3 row with the row above it "
          "(`comparisons.csv` holds every metric; `malm/eval/stats.py` says how).\n\n"
          "Protocol `<p>+rerank<k>` (e.g. `tfood+rerank10`) is `<p>`'s bags with each query's top k "
          "by cosine re-ordered by the run's matching module (T-Food's test-time reading, "
          "`malm/eval/rerank.py`); plain `<p>` is the dual encoder. Re-ranking the top k leaves R@k "
          "and every rank past k as the dual encoder's. Variants without a matching module "
          "(Baseline) have only the dual-encoder reading.\n"]
    for (protocol, bag), _ in summary.groupby(["protocol", "bag_size"], sort=True):
        wide = wide_table(summary, protocol, int(bag), order=displays)
        md.append(f"\n## {wide.index.name}\n\n{wide.to_markdown()}\n")
        diff = bag_differences_table(cmp, protocol, int(bag))
        if len(diff):
            paired = ""
            if diff["seeds"].nunique() == 1 and diff["resampled"].nunique() == 1:
                n = bag_n_bags(summary, protocol, bag)
                paired = (f"Paired on {diff['seeds'].iloc[0]} seeds x {n} bag{'' if n == '1' else 's'}"
                          f"; resampled: {diff['resampled'].iloc[0]}.\n\n")
                diff = diff.drop(columns=["seeds", "resampled"])
            md.append(f"\n### Paired differences, {protocol} {bag_label(int(bag))}\n\n{paired}"
                      f"{diff.reset_index().to_markdown(index=False, disable_numparse=True)}\n")
        written[f"fig_{protocol}_{bag}"] = figures.save(
            figures.recall_bars(summary, protocol, int(bag), order=displays),
            figs / f"recall_{protocol}_{bag_label(int(bag))}.png")
    if grounding_dir is not None:
        gdf = collect_grounding(grounding_dir)
        if len(gdf):
            write_table(gdf, out / "grounding.csv")
            written["grounding"] = out / "grounding.csv"
            gsum = grounding_summary(gdf, order=displays)
            md.append("\n## Grounding: pointing game on the synthetic boxes (`malm grounding`)\n\n"
                      f"Test split, first {int(gdf['n_pairs'].max())} pairs, {gdf['rule'].iloc[0]} rule: for "
                      "each visible ingredient named on a recipe line, the patch whose psi "
                      "cross-attention puts most weight on that line's token is a hit when it lies in "
                      "the ingredient's box. Chance = the box's share of the patches. Mean ± std over "
                      "seeds; per-run 95 % intervals (bootstrap over pairs) in `grounding.csv`. "
                      "Variants without a matching module have no score.\n\n"
                      f"{gsum.to_markdown()}\n")
            written["fig_grounding"] = figures.save(figures.grounding_points(gdf, order=displays),
                                                  figs / "grounding.png")
    if runs_dir is not None:
        gtidy = gradient_shares(load_histories(runs_dir))
        if len(gtidy):
            write_table(gtidy, out / "gradient_shares.csv")
            written["gradient_shares"] = out / "gradient_shares.csv"
            md.append("\n## Gradient shares: which loss term drives the shared encoders\n\n"
                      "Each weighted loss term differentiated on its own every `train.log_every` "
                      "steps (`malm/train/gradshare.py`): its share of the summed gradient norms on "
                      "a parameter group, with the norm in parentheses; mean over the epochs in "
                      "which the group trains (the ViT: not while frozen) and over seeds. "
                      "`gradient_shares.csv` holds the numbers.\n\n"
                      f"{gradient_share_table(gtidy, order=displays).to_markdown()}\n")
    atomic_write_text(out / "tables.md", "".join(md))
    written["markdown"] = out / "tables.md"

    metrics = {}
    for r in summary.itertuples():
        key = f"{r.protocol}_{bag_label(r.bag_size)}/{r.direction}/{r.metric}"
        metrics.setdefault(r.variant, {})[key] = round(float(r.mean), 3)
    atomic_write_json(metrics_path, metrics)
    written["metrics"] = Path(metrics_path)

    if runs_dir is not None:
        hist = load_histories(runs_dir)
        if len(hist) and "val/img2rec_R@1" in hist:
            written["curves"] = figures.save(figures.training_curves(hist), figs / "training_curves.png")
            lc = figures.figure_curves(hist, "val/img2rec_R@1", figs / "learning_curves.png",
                                       x=SAMPLES_SEEN, order=displays)
            if lc is not None:
                written["learning_curves"] = lc
            cols = [c for c in ["variant", "display", "seed", "epoch", "best_epoch", "stopped_early"]
                    if c in hist] + [c for c in hist.columns if c.startswith(("val/", "train/"))]
            write_table(hist[cols], out / "curves.csv")
            written["curves_csv"] = out / "curves.csv"
    return written

