"""Collect metrics JSON files into tidy tables, summarise them, and compare variants (paired).

Tidy columns (``results.csv``): variant, display, seed, protocol, bag_size, n_bags, direction,
metric, value, std, dataset, source. ``value``/``std`` are the mean/std over the bags of one run;
``summarise`` then gives mean +/- std over seeds and a 95 % bootstrap interval of the mean.
``per_bag.csv`` (``BAG_COLUMNS``) holds the value of every test bag of every run (the ``per_bag``
lists of ``malm evaluate``); ``comparisons.csv`` (``COMPARISON_COLUMNS``) the paired differences of
every variant against ``baseline`` and of each Table 2/3 step against the row above it
(``malm.eval.stats``). The paper's numbers (``malm/paper/malm_paper_tables.csv``) are read by
``paper_table`` and always labelled ``source = "paper"``; ours are ``source = "ours (<dataset>)"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from malm.eval import stats
from malm.eval.names import bag_label

COLUMNS = ["variant", "display", "seed", "protocol", "bag_size", "n_bags", "direction", "metric",
           "value", "std", "dataset", "source"]
METRICS = ["medR", "R@1", "R@5", "R@10"]
DIRECTIONS = ["img2rec", "rec2img"]
LOWER_IS_BETTER = {"medR"}
BAG_COLUMNS = ["variant", "display", "seed", "protocol", "bag_size", "n_bags", "direction", "metric",
               "bag", "value", "dataset", "source"]
BAGS_FILE = "per_bag.csv"  # written beside results.csv
COMPARISON_COLUMNS = ["variant", "reference", "display", "reference_display", "comparison",
                      "protocol", "bag_size", "n_bags", "direction", "metric", "mean_diff", "ci_low",
                      "ci_high", "p_better", "n_seeds", "resampling", "dataset"]
# one (run set, metric) = one [seeds, bags] array; its rows are matched on these columns
RUN_KEYS = ["variant", "protocol", "bag_size", "n_bags"]


def _display(variant: str) -> str:
    from malm import variants

    try:
        return variants.get(variant).display
    except Exception:  # a result of a variant no longer registered keeps its name
        return variant


def rows_from_metrics(result: dict, variant: str, seed: int, dataset: str = "synthetic") -> list[dict]:
    """Tidy rows from one ``malm evaluate`` result."""
    display = _display(variant)
    rows = []
    for direction in DIRECTIONS:
        for metric in METRICS:
            stats_ = result[direction][metric]
            rows.append({"variant": variant, "display": display, "seed": int(seed),
                         "protocol": result["protocol"], "bag_size": int(result["bag_size"]),
                         "n_bags": int(result["n_bags"]), "direction": direction, "metric": metric,
                         "value": float(stats_["mean"]), "std": float(stats_["std"]),
                         "dataset": dataset, "source": f"ours ({dataset})"})
    return rows


def bag_rows_from_metrics(result: dict, variant: str, seed: int, dataset: str = "synthetic"
                          ) -> list[dict]:
    """One row per test bag from a result's ``per_bag`` lists; [] when the result has none (files
    written before ``malm evaluate`` stored them)."""
    per_bag = result.get("per_bag")
    if not per_bag:
        return []
    display = _display(variant)
    rows = []
    for direction in DIRECTIONS:
        for metric in METRICS:
            values = per_bag[direction][metric]
            if len(values) != int(result["n_bags"]):
                raise ValueError(f"{variant} seed {seed}: {len(values)} per-bag values of "
                                 f"{direction} {metric} for n_bags = {result['n_bags']}")
            rows += [{"variant": variant, "display": display, "seed": int(seed),
                      "protocol": result["protocol"], "bag_size": int(result["bag_size"]),
                      "n_bags": int(result["n_bags"]), "direction": direction, "metric": metric,
                      "bag": t, "value": float(v), "dataset": dataset,
                      "source": f"ours ({dataset})"} for t, v in enumerate(values)]
    return rows


def _read_runs(paths: Iterable[str | os.PathLike]) -> list[tuple[str, int, dict]]:
    """(variant, seed, result) of metrics files laid out as ``.../<variant>/seed<k>/<any>.json``."""
    runs = []
    for path in sorted(Path(p) for p in paths):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read metrics file {path}: {exc}") from exc
        seed_dir, variant_dir = path.parent, path.parent.parent
        if not seed_dir.name.startswith("seed"):
            raise ValueError(f"metrics file {path} is not under <variant>/seed<k>/")
        runs.append((variant_dir.name, int(seed_dir.name[4:]), result))
    return runs


def collect(paths: Iterable[str | os.PathLike], dataset: str = "synthetic") -> pd.DataFrame:
    """Read metrics files laid out as ``.../<variant>/seed<k>/<anything>.json``."""
    rows: list[dict] = []
    for variant, seed, result in _read_runs(paths):
        rows.extend(rows_from_metrics(result, variant, seed, dataset))
    return pd.DataFrame(rows, columns=COLUMNS)


def collect_bags(paths: Iterable[str | os.PathLike], dataset: str = "synthetic") -> pd.DataFrame:
    """The per-bag values (``BAG_COLUMNS``) of the same files; runs without them add no rows."""
    rows: list[dict] = []
    for variant, seed, result in _read_runs(paths):
        rows.extend(bag_rows_from_metrics(result, variant, seed, dataset))
    return pd.DataFrame(rows, columns=BAG_COLUMNS)


# ------------------------------------------------------------------ seeds x bags arrays, CIs
def _metric_columns(directions: Sequence[str] = DIRECTIONS, metrics: Sequence[str] = METRICS
           ) -> list[tuple[str, str]]:
    return [(d, m) for d in directions for m in metrics]


def run_array(runs: pd.DataFrame, bags: pd.DataFrame | None, seeds: Sequence[int],
              columns: Sequence[tuple[str, str]]) -> tuple[np.ndarray, bool]:
    """``[seeds, bags, len(columns)]`` values of ONE run set (one variant, protocol, bag size and
    n_bags, and one origin when the frames carry it) for the given seeds, in that order.

    From ``bags`` (per-bag values) when they are complete for those seeds; else from the per-run
    means of ``runs`` as ``[seeds, 1, columns]``. Returns ``(array, per_bag_used)``.
    """
    index = pd.MultiIndex.from_tuples(list(columns), names=["direction", "metric"])
    if bags is not None and len(bags):
        b = bags[bags["seed"].isin(seeds)]
        wide = b.pivot_table(index=["seed", "bag"], columns=["direction", "metric"],
                             values="value", aggfunc="first").reindex(columns=index)
        n_bags = int(runs["n_bags"].iloc[0])
        full = pd.MultiIndex.from_product([list(seeds), range(n_bags)], names=["seed", "bag"])
        wide = wide.reindex(full)
        if not wide.isna().any().any():
            return wide.to_numpy().reshape(len(seeds), n_bags, len(columns)), True
    wide = runs.pivot_table(index="seed", columns=["direction", "metric"], values="value",
                            aggfunc="first").reindex(index=list(seeds), columns=index)
    if wide.isna().any().any():
        raise ValueError(f"missing per-run values for {runs['variant'].iloc[0]}, seeds {list(seeds)}")
    return wide.to_numpy()[:, None, :], False


def _bags_of(bags: pd.DataFrame | None, runs: pd.DataFrame) -> pd.DataFrame | None:
    """The per-bag rows of the run set ``runs`` (same variant, protocol, bag size, n_bags, and
    origin when both frames carry one)."""
    if bags is None or not len(bags):
        return None
    keys = RUN_KEYS + (["origin"] if "origin" in runs and "origin" in bags else [])
    sel = np.ones(len(bags), dtype=bool)
    for k in keys:
        sel &= (bags[k] == runs[k].iloc[0]).to_numpy()
    return bags[sel]


def _resampling(n_seeds: int, n_bags: int, per_bag: bool) -> str:
    """What the bootstrap resampled (``stats.resampling``), saying so when per-bag values of a
    multi-bag evaluation were missing and only the per-run means could be resampled."""
    if per_bag or n_bags == 1:
        return stats.resampling(n_seeds, n_bags)
    if n_seeds > 1:
        return "seeds (per-bag values missing)"
    return "none (1 seed, per-bag values missing)"


def summarise(df: pd.DataFrame, bags: pd.DataFrame | None = None, n_boot: int = stats.N_BOOT,
              seed: int = 0) -> pd.DataFrame:
    """Per variant x protocol x bag x direction x metric: ``mean`` and ``std`` over seeds (ddof=1),
    ``n_seeds``, and ``ci_low``/``ci_high``: the 95 % bootstrap interval of the mean over seeds x
    bags (``malm.eval.stats``; from ``bags`` when they hold every bag of every seed, else over the
    per-run means; ``ci_over`` says what was resampled; NaN for one seed and one bag). ``df`` must
    hold one run set per variant (one origin: ``malm.report.pick``), as the intervals pair rows by
    seed."""
    keys = ["variant", "display", "protocol", "bag_size", "n_bags", "direction", "metric", "source"]
    g = df.groupby(keys, sort=False)["value"]
    out = g.agg(mean="mean", std="std", n_seeds="count").reset_index()
    out["std"] = out["std"].fillna(0.0)
    ci_rows = []
    run_keys = RUN_KEYS + ["source"]
    for key, runs in df.groupby(run_keys, sort=False):
        seeds = sorted(runs["seed"].unique())
        cols = list(dict.fromkeys(zip(runs["direction"], runs["metric"])))
        x, used = run_array(runs, _bags_of(bags, runs), seeds, cols)
        r = stats.bootstrap_mean(x, n_boot=n_boot, seed=seed)
        over = _resampling(len(seeds), int(runs["n_bags"].iloc[0]), used)
        ci_rows += [dict(zip(run_keys, key), direction=d, metric=m, ci_low=lo, ci_high=hi,
                         ci_over=over)
                    for (d, m), lo, hi in zip(cols, np.atleast_1d(r.ci_low), np.atleast_1d(r.ci_high))]
    if not ci_rows:
        return out.assign(ci_low=np.nan, ci_high=np.nan, ci_over=None)
    ci = pd.DataFrame(ci_rows)
    return out.merge(ci, on=run_keys + ["direction", "metric"], how="left")


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


# ------------------------------------------------------------------------ paired comparisons
def comparison_pairs(present: Iterable[str], baseline: str = "baseline"
                     ) -> list[tuple[str, str, str]]:
    """(variant, reference, why) of the paired comparisons among the ``present`` variants:

    * every variant against ``baseline`` (why: 'vs baseline');
    * each row of the paper's Table 2 (baseline, +LLC, +LLC+LGC, MALM, mask both) and Table 3
      (mask ratio 0.25, 0.5, 0.75, 0.9) against the row directly above it (why: 'Table 2 step',
      'Table 3 step'), a row being filled by its registered variant or, failing that, an alias of it
      (``llc_lgc`` / ``no_distill``, ``malm`` / ``mask_0.75``). A step whose upper row is absent is
      skipped, not bridged.

    A pair reached twice is listed once, its reasons joined with '; '.
    """
    from malm import report, variants

    reg = variants.registry()
    present = list(dict.fromkeys(present))
    why: dict[tuple[str, str], list[str]] = {}
    if baseline in present:
        for v in present:
            if v != baseline:
                why.setdefault((v, baseline), []).append(f"vs {baseline}")
    for table in (2, 3):
        rows = []
        for name in report.table_variants(table):
            found = [v for v in report.same_config(name, reg) if v in present]
            rows.append(found[0] if found else None)
        for upper, lower in zip(rows, rows[1:]):
            if upper and lower and upper != lower:
                why.setdefault((lower, upper), []).append(f"Table {table} step")
    return [(v, r, "; ".join(w)) for (v, r), w in why.items()]


def compare(df: pd.DataFrame, bags: pd.DataFrame | None, pairs: Iterable[tuple[str, str, str]],
            n_boot: int = stats.N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap (``stats.paired_bootstrap``) of each (variant, reference, why) in ``pairs``,
    per protocol x bag size x n_bags that both have, on the seeds both have, measured on the same
    dataset (``COMPARISON_COLUMNS``).

    df/bags: tidy results / per-bag values holding one run set per variant (one origin). Per-bag
    values are used when both sides have them for every common seed; else the per-run means (the
    ``resampling`` column says so). ``mean_diff`` = variant - reference (medR: negative = better).
    """
    rows = []
    cols = _metric_columns()
    higher = np.array([m not in LOWER_IS_BETTER for _, m in cols])
    for variant, reference, why in pairs:
        a_all, b_all = df[df["variant"] == variant], df[df["variant"] == reference]
        for (protocol, bag_size, n_bags), a in a_all.groupby(["protocol", "bag_size", "n_bags"]):
            b = b_all[(b_all["protocol"] == protocol) & (b_all["bag_size"] == bag_size)
                      & (b_all["n_bags"] == n_bags)]
            seeds = sorted(set(a["seed"]) & set(b["seed"]))
            if not seeds or set(a["dataset"]) != set(b["dataset"]):  # nothing to pair on
                continue
            xa, used_a = run_array(a, _bags_of(bags, a), seeds, cols)
            xb, used_b = run_array(b, _bags_of(bags, b), seeds, cols)
            if used_a != used_b:  # pair like with like: both per-run means
                xa, used_a = run_array(a, None, seeds, cols)
                xb, used_b = run_array(b, None, seeds, cols)
            r = stats.paired_bootstrap(xa, xb, n_boot=n_boot, seed=seed, higher_is_better=higher)
            datasets = "/".join(sorted(map(str, set(a["dataset"]))))
            for i, (d, m) in enumerate(cols):
                rows.append({"variant": variant, "reference": reference,
                             "display": a["display"].iloc[0], "reference_display": b["display"].iloc[0],
                             "comparison": why, "protocol": protocol, "bag_size": int(bag_size),
                             "n_bags": int(n_bags), "direction": d, "metric": m,
                             "mean_diff": r.mean[i], "ci_low": r.ci_low[i], "ci_high": r.ci_high[i],
                             "p_better": r.p_better[i], "n_seeds": len(seeds),
                             "resampling": _resampling(len(seeds), int(n_bags), used_a),
                             "dataset": datasets})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def covers_zero(lo: float, hi: float) -> bool:
    """True when the interval [lo, hi] contains 0 or is undefined (NaN): no difference shown."""
    return not (lo > 0 or hi < 0)


def fmt_ci(mean: float, lo: float, hi: float, digits: int = 1) -> str:
    """'mean [lo, hi]'; the mean alone when there is no interval (one seed and one bag)."""
    if mean is None or pd.isna(mean):
        return "—"
    if pd.isna(lo) or pd.isna(hi):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fmt_diff(mean: float, lo: float, hi: float, digits: int = 1) -> str:
    """A difference with its interval: '+2.1 [+0.8, +3.4]' when the interval excludes 0, and
    '≈0 (+0.3 [-0.9, +1.5])' when it covers 0 (judged on the unrounded bounds); '+0.3 (no CI)'
    without an interval."""
    if mean is None or pd.isna(mean):
        return "—"
    if pd.isna(lo) or pd.isna(hi):
        return f"{mean:+.{digits}f} (no CI)"
    cell = f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return f"≈0 ({cell})" if covers_zero(lo, hi) else cell


def differences_table(cmp: pd.DataFrame, protocol: str, bag_size: int, digits: int = 1
                      ) -> pd.DataFrame:
    """One protocol x bag of ``compare``: rows 'variant − reference' x direction, columns the four
    metrics ('Δ [95 % CI]', '≈0 (...)' where the interval covers 0), P(better) of R@1, why."""
    c = cmp[(cmp["protocol"] == protocol) & (cmp["bag_size"] == bag_size)]
    rows = {}
    for (v, r, d), g in c.groupby(["display", "reference_display", "direction"], sort=False):
        cells = {m: fmt_diff(x.mean_diff, x.ci_low, x.ci_high, digits)
                 for x in g.itertuples() for m in [x.metric]}
        r1 = g[g["metric"] == "R@1"]
        rows[(f"{v} − {r}", d)] = {**{m: cells.get(m, "—") for m in METRICS},
                                   "P(better), R@1": "—" if r1.empty or pd.isna(r1.p_better.iloc[0])
                                   else f"{r1.p_better.iloc[0]:.2f}",
                                   "seeds": str(int(g["n_seeds"].iloc[0])),
                                   "resampled": g["resampling"].iloc[0],
                                   "why": g["comparison"].iloc[0]}
    out = pd.DataFrame.from_dict(rows, orient="index")
    if len(out):
        out.index = pd.MultiIndex.from_tuples(out.index, names=["variant − reference", "direction"])
    return out


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


def bag_n_bags(summary: pd.DataFrame, protocol: str, bag_size: int) -> str:
    """The number(s) of bags of one protocol x bag size in ``summary`` ('10', or '1/10')."""
    s = summary[(summary.protocol == protocol) & (summary.bag_size == bag_size)]
    return "/".join(str(int(n)) for n in sorted(s["n_bags"].unique()))


# ------------------------------------------------------------------------------------ grounding
GROUNDING_FILE = "grounding.json"


def collect_grounding(grounding_dir: str | os.PathLike) -> pd.DataFrame:
    """<grounding_dir>/<variant>/seed<k>/grounding.json (``malm grounding``) -> one row per run:
    variant, display, seed, split, rule, n_pairs, n_targets, accuracy, chance, lift, mass_in_box,
    ci_low/ci_high (95 % bootstrap over the run's test pairs). Variants without a matching module
    (their JSON says has_matching: false) have no row."""
    rows = []
    for path in sorted(Path(grounding_dir).glob(f"*/seed*/{GROUNDING_FILE}")):
        try:
            r = json.loads(path.read_text())
            if not r.get("has_matching"):
                continue
            lo, hi = r["accuracy_ci95"]
            rows.append({"variant": path.parent.parent.name, "display": _display(path.parent.parent.name),
                         "seed": int(path.parent.name.removeprefix("seed")), "split": r["split"],
                         "rule": r["rule"], "n_pairs": r["n_pairs"], "n_targets": r["n_targets"],
                         "accuracy": r["accuracy"], "chance": r["chance"], "lift": r["lift"],
                         "mass_in_box": r["mass_in_box"], "ci_low": lo, "ci_high": hi})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a `malm grounding` result ({exc!r})") from exc
    return pd.DataFrame(rows)


def grounding_summary(df: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per variant over seeds: pointing accuracy mean ± std, the chance rate, the lift, and in how
    many seeds the run's own 95 % interval lies above chance."""
    if not len(df):
        return pd.DataFrame()
    g = df.groupby("display", sort=False)
    out = pd.DataFrame({
        "seeds": g["seed"].nunique(),
        "pointing accuracy": g["accuracy"].agg(
            lambda a: f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) >= 2 else f"{a.mean():.3f} (1 seed)"),
        "chance": g["chance"].mean().round(3),
        "lift (x chance)": g["lift"].mean().round(2),
        "seeds with CI above chance": g.apply(lambda d: f"{int((d['ci_low'] > d['chance']).sum())}/{len(d)}",
                                              include_groups=False),
        "pairs / ingredients per run": g.apply(lambda d: f"{int(d['n_pairs'].mean())} / {int(d['n_targets'].mean())}",
                                               include_groups=False),
    })
    if order:
        out = out.reindex([d for d in order if d in out.index])
    out.index.name = "variant"
    return out


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    from malm.io import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def build_tables(results_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 figures_dir: str | os.PathLike, metrics_path: str | os.PathLike,
                 runs_dir: str | os.PathLike | None = None, dataset: str = "synthetic",
                 order: list[str] | None = None,
                 grounding_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """results/<variant>/seed<k>/*.json -> in out_dir: tidy ``results.csv`` + parquet, ``per_bag.csv``
    (every bag's value), ``summary.csv`` (mean ± std over seeds, 95 % CI), ``comparisons.csv``
    (paired differences, ``compare``) and ``tables.md``; figures (figures_dir) and a small metrics
    JSON for ``dvc metrics show`` (metrics_path)."""
    from malm import plots
    from malm.io import atomic_write_json, atomic_write_text

    out, figs = Path(out_dir), Path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [p for p in Path(results_dir).glob("*/seed*/*.json")]
    if not files:
        raise FileNotFoundError(f"no metrics files under {results_dir}/<variant>/seed<k>/")
    df = collect(files, dataset)
    bags = collect_bags(files, dataset)
    written = {}
    _write_csv(df, out / "results.csv")
    from malm.io import atomic_path

    with atomic_path(out / "results.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    _write_csv(bags, out / BAGS_FILE)
    summary = summarise(df, bags)
    _write_csv(summary, out / "summary.csv")
    cmp = compare(df, bags, comparison_pairs(df["variant"].unique()))
    _write_csv(cmp, out / "comparisons.csv")
    written.update(results=out / "results.csv", per_bag=out / BAGS_FILE,
                   summary=out / "summary.csv", comparisons=out / "comparisons.csv")

    displays = None
    if order:
        from malm import variants

        displays = [variants.get(v).display for v in order]
    md = [f"# Results: ours ({dataset}), mean ± std over seeds\n",
          "Generated by `malm tables`; every number below was measured by this pipeline. "
          "The paper's numbers are in the notebooks, labelled as the paper's.\n\n"
          "Each protocol x bag size has two tables: the values (mean ± std over seeds of the per-run "
          "mean over bags) and the paired differences (variant − reference on the same seeds and "
          "test bags: mean difference [95 % bootstrap CI over seeds x bags]; '≈0 (...)' = the "
          "interval covers 0, no difference shown; medR: negative = better; P(better) = share of "
          "bootstrap resamples in which the variant's mean R@1 is the better one). Every variant "
          "is compared with Baseline, each Table 2/3 row with the row above it "
          "(`comparisons.csv` holds every metric; `malm/eval/stats.py` says how).\n"]
    for (protocol, bag), _ in summary.groupby(["protocol", "bag_size"], sort=True):
        wide = wide_table(summary, protocol, int(bag), order=displays)
        md.append(f"\n## {wide.index.name}\n\n{wide.to_markdown()}\n")
        diff = differences_table(cmp, protocol, int(bag))
        if len(diff):
            paired = ""
            if diff["seeds"].nunique() == 1 and diff["resampled"].nunique() == 1:
                n = bag_n_bags(summary, protocol, bag)
                paired = (f"Paired on {diff['seeds'].iloc[0]} seeds x {n} bag{'' if n == '1' else 's'}"
                          f"; resampled: {diff['resampled'].iloc[0]}.\n\n")
                diff = diff.drop(columns=["seeds", "resampled"])
            md.append(f"\n### Paired differences, {protocol} {bag_label(int(bag))}\n\n{paired}"
                      f"{diff.reset_index().to_markdown(index=False, disable_numparse=True)}\n")
        written[f"fig_{protocol}_{bag}"] = plots.save(
            plots.recall_bars(summary, protocol, int(bag), order=displays),
            figs / f"recall_{protocol}_{bag_label(int(bag))}.png")
    if grounding_dir is not None:
        gdf = collect_grounding(grounding_dir)
        if len(gdf):
            _write_csv(gdf, out / "grounding.csv")
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
            written["fig_grounding"] = plots.save(plots.grounding_points(gdf, order=displays),
                                                  figs / "grounding.png")
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
            _write_csv(hist[cols], out / "curves.csv")
            written["curves_csv"] = out / "curves.csv"
    return written
