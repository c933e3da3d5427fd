"""Collect metrics JSON files into one tidy table, and summarise it as the paper's tables.

Tidy columns: variant, display, seed, protocol, bag_size, n_bags, direction, metric, value, std,
source. ``value``/``std`` are the mean/std over the bags of one run; ``summarise`` then gives
mean +/- std over seeds. The paper's numbers (``shared/data/malm_paper_tables.csv``) are read by
``paper_table`` and always labelled ``source = "paper"``; ours are ``source = "ours (<dataset>)"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

COLUMNS = ["variant", "display", "seed", "protocol", "bag_size", "n_bags", "direction", "metric",
           "value", "std", "dataset", "source"]
METRICS = ["medR", "R@1", "R@5", "R@10"]
DIRECTIONS = ["img2rec", "rec2img"]


def bag_label(bag_size: int) -> str:
    return f"{bag_size // 1000}k" if bag_size % 1000 == 0 else str(bag_size)


def rows_from_metrics(result: dict, variant: str, seed: int, dataset: str = "synthetic") -> list[dict]:
    """Tidy rows from one ``malm evaluate`` result."""
    from malm import variants

    try:
        display = variants.get(variant).display
    except Exception:  # a result of a variant no longer registered keeps its name
        display = variant
    rows = []
    for direction in DIRECTIONS:
        for metric in METRICS:
            stats = result[direction][metric]
            rows.append({"variant": variant, "display": display, "seed": int(seed),
                         "protocol": result["protocol"], "bag_size": int(result["bag_size"]),
                         "n_bags": int(result["n_bags"]), "direction": direction, "metric": metric,
                         "value": float(stats["mean"]), "std": float(stats["std"]),
                         "dataset": dataset, "source": f"ours ({dataset})"})
    return rows


def collect(paths: Iterable[str | os.PathLike], dataset: str = "synthetic") -> pd.DataFrame:
    """Read metrics files laid out as ``.../<variant>/seed<k>/<anything>.json``."""
    rows: list[dict] = []
    for path in sorted(Path(p) for p in paths):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read metrics file {path}: {exc}") from exc
        seed_dir, variant_dir = path.parent, path.parent.parent
        if not seed_dir.name.startswith("seed"):
            raise ValueError(f"metrics file {path} is not under <variant>/seed<k>/")
        rows.extend(rows_from_metrics(result, variant_dir.name, int(seed_dir.name[4:]), dataset))
    return pd.DataFrame(rows, columns=COLUMNS)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per variant x protocol x bag x direction x metric (ddof=1)."""
    keys = ["variant", "display", "protocol", "bag_size", "n_bags", "direction", "metric", "source"]
    g = df.groupby(keys, sort=False)["value"]
    out = g.agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def wide_table(summary: pd.DataFrame, protocol: str, bag_size: int, order: list[str] | None = None,
               digits: int = 1) -> pd.DataFrame:
    """Rows = variants; columns = direction x metric; cells = 'mean ± std' over seeds ('mean (1 seed)'
    when there is one: a single run has no spread to show)."""
    s = summary[(summary.protocol == protocol) & (summary.bag_size == bag_size)].copy()
    s["cell"] = [f"{m:.{digits}f} ± {d:.{digits}f}" if n >= 2 else f"{m:.{digits}f} (1 seed)"
                 for m, d, n in zip(s["mean"], s["std"], s["n_seeds"])]
    wide = s.pivot_table(index="display", columns=["direction", "metric"], values="cell", aggfunc="first")
    wide = wide.reindex(columns=pd.MultiIndex.from_product([DIRECTIONS, METRICS]))
    if order:
        wide = wide.reindex([o for o in order if o in wide.index])
    wide.columns = [f"{d} {m}" for d, m in wide.columns]
    wide.index.name = f"ours: {protocol} {bag_label(bag_size)} x{int(s.n_bags.iloc[0]) if len(s) else 0}"
    return wide


PAPER_CSV = Path(__file__).parent / "paper" / "malm_paper_tables.csv"


def paper_table(path: str | os.PathLike = PAPER_CSV) -> pd.DataFrame:
    """The paper's Tables 1-3 in the tidy layout (table, method, bag_size, direction, metric, value,
    citation), ``source = 'paper'``."""
    raw = pd.read_csv(path)
    long = raw.melt(id_vars=["table", "method", "bag", "direction", "source"], value_vars=METRICS,
                    var_name="metric", value_name="value")
    long = long.rename(columns={"source": "citation"})
    long["bag_size"] = long["bag"].str.rstrip("k").astype(int) * 1000
    long["source"] = "paper"
    return long.drop(columns=["bag"])


def load_histories(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """Per-epoch training history of every run (``runs/<variant>/seed<k>/history.json``)."""
    from malm import variants

    frames = []
    for path in sorted(Path(runs_dir).glob("*/seed*/history.json")):
        hist = pd.DataFrame(json.loads(path.read_text()))
        variant = path.parent.parent.name
        try:
            hist["display"] = variants.get(variant).display
        except Exception:
            hist["display"] = variant
        hist["variant"], hist["seed"] = variant, int(path.parent.name[4:])
        frames.append(hist)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_tables(results_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 figures_dir: str | os.PathLike, metrics_path: str | os.PathLike,
                 runs_dir: str | os.PathLike | None = None, dataset: str = "synthetic",
                 order: list[str] | None = None) -> dict[str, Path]:
    """results/<variant>/seed<k>/*.json -> tidy CSV + parquet, seed summary, Markdown tables (out_dir),
    figures (figures_dir) and a small metrics JSON for ``dvc metrics show`` (metrics_path)."""
    from malm import plots
    from malm.config import atomic_write_json, atomic_write_text

    out, figs = Path(out_dir), Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [p for p in Path(results_dir).glob("*/seed*/*.json")]
    if not files:
        raise FileNotFoundError(f"no metrics files under {results_dir}/<variant>/seed<k>/")
    df = collect(files, dataset)
    written = {}
    tmp = out / ".results.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "results.csv")
    tmp = out / ".results.parquet.tmp"
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out / "results.parquet")
    summary = summarise(df)
    tmp = out / ".summary.csv.tmp"
    summary.to_csv(tmp, index=False)
    os.replace(tmp, out / "summary.csv")
    written.update(results=out / "results.csv", summary=out / "summary.csv")

    displays = None
    if order:
        from malm import variants

        displays = [variants.get(v).display for v in order]
    md = [f"# Results: ours ({dataset}), mean ± std over seeds\n",
          "Generated by `malm tables`; every number below was measured by this pipeline. "
          "The paper's numbers are in the notebooks, labelled as the paper's.\n"]
    for (protocol, bag), _ in summary.groupby(["protocol", "bag_size"], sort=True):
        wide = wide_table(summary, protocol, int(bag), order=displays)
        md.append(f"\n## {wide.index.name}\n\n{wide.to_markdown()}\n")
        written[f"fig_{protocol}_{bag}"] = plots.save(
            plots.recall_bars(df, protocol, int(bag), order=displays), figs / f"recall_{protocol}_{bag_label(int(bag))}.png")
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
            written["curves"] = plots.save(plots.training_curves(hist), figs / "training_curves.png")
            cols = [c for c in ["variant", "display", "seed", "epoch"] if c in hist] + \
                [c for c in hist.columns if c.startswith(("val/", "train/"))]
            tmp = out / ".curves.csv.tmp"
            hist[cols].to_csv(tmp, index=False)
            os.replace(tmp, out / "curves.csv")
            written["curves_csv"] = out / "curves.csv"
    return written
