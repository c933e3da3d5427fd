"""Our numbers summarised over seeds, and variants compared with each other, both with bootstrap
intervals over seeds x test bags (:mod:`malm.eval.stats`).

``summarise``: per variant x protocol x bag x direction x metric, mean and std over seeds and the 95 %
interval of the mean. ``compare``: the paired differences (``COMPARISON_COLUMNS``) of each
(variant, reference) of ``comparison_pairs``: every variant against ``baseline``, and each Table 2/3
step against the row above it. One (run set, metric) is one ``[seeds, bags]`` array
(``run_array``): from the per-bag values when every bag of every seed is there, else from the
per-run means (``resampling`` says which).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from malm import variants as variants_mod
from malm.eval import stats
from malm.eval.names import LOWER_IS_BETTER, RERANK_TAG, is_rerank, parse_protocol
from malm.report.collect import DIRECTIONS, METRICS, RUN_KEYS, same_config
from malm.report.paper import table_variants

COMPARISON_COLUMNS = ["variant", "reference", "display", "reference_display", "comparison",
                      "protocol", "bag_size", "n_bags", "direction", "metric", "mean_diff", "ci_low",
                      "ci_high", "p_better", "n_seeds", "resampling", "dataset"]


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
    hold one run set per variant (one origin: ``malm.report.collect.pick``), as the intervals pair
    rows by seed."""
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


# The default variants as one chain, each adding one of MALM's components (paper Sec. 3; Table 2's
# rows) to the one before.
COMPONENT_STEPS = (("global_only", "baseline", "+L_GC"), ("no_mask", "global_only", "+L_LC"),
                   ("no_distill", "no_mask", "+masking"), ("malm", "no_distill", "+L_dist"))


def comparison_pairs(present: Iterable[str], baseline: str = "baseline"
                     ) -> list[tuple[str, str, str]]:
    """(variant, reference, why) of the paired comparisons among the ``present`` variants:

    * every variant against ``baseline`` (why: 'vs baseline');
    * each row of the paper's Table 2 (baseline, +LLC, +LLC+LGC, MALM, mask both) and Table 3
      (mask ratio 0.25, 0.5, 0.75, 0.9) against the row directly above it (why: 'Table 2 step',
      'Table 3 step'), a row being filled by its registered variant or, failing that, an alias of it
      (``llc_lgc`` / ``no_distill``, ``malm`` / ``mask_0.75``). A step whose upper row is absent is
      skipped, not bridged;
    * each step of ``COMPONENT_STEPS`` (why: 'component step: +L_GC', ...): global matching only vs
      baseline, without masking vs global matching only, without distillation vs without masking,
      MALM vs without distillation.

    A pair reached twice is listed once, its reasons joined with '; '.
    """
    reg = variants_mod.registry()
    present = list(dict.fromkeys(present))
    why: dict[tuple[str, str], list[str]] = {}
    if baseline in present:
        for v in present:
            if v != baseline:
                why.setdefault((v, baseline), []).append(f"vs {baseline}")
    for table in (2, 3):
        rows = []
        for name in table_variants(table):
            found = [v for v in same_config(name, reg) if v in present]
            rows.append(found[0] if found else None)
        for upper, lower in zip(rows, rows[1:]):
            if upper and lower and upper != lower:
                why.setdefault((lower, upper), []).append(f"Table {table} step")
    for v, r, adds in COMPONENT_STEPS:
        if v in present and r in present:
            why.setdefault((v, r), []).append(f"component step: {adds}")
    return [(v, r, "; ".join(w)) for (v, r), w in why.items()]


def rerank_comparisons(df: pd.DataFrame, bags: pd.DataFrame | None, n_boot: int = stats.N_BOOT,
                       seed: int = 0) -> pd.DataFrame:
    """The re-ranking step: each variant's ``<protocol>+rerank<k>`` results against its own
    dual-encoder ``<protocol>`` results on the same seeds and bags (``COMPARISON_COLUMNS``; variant
    ``<name>+rerank<k>``, reference ``<name>``, protocol the base protocol, comparison
    're-ranking step: top <k>')."""
    rer = df[df["protocol"].map(is_rerank)]
    if not len(rer):
        return pd.DataFrame(columns=COMPARISON_COLUMNS)

    def relabel(frame: pd.DataFrame) -> pd.DataFrame:
        base_k = frame["protocol"].map(parse_protocol)
        return frame.assign(protocol=[b for b, _ in base_k],
                            variant=[f"{v}{RERANK_TAG}{k}" for v, (_, k) in zip(frame["variant"], base_k)],
                            display=[f"{d} (re-ranked top {k})" for d, (_, k) in zip(frame["display"], base_k)])

    dual = df[~df["protocol"].map(is_rerank)]
    both = pd.concat([dual, relabel(rer)], ignore_index=True)
    both_bags = None
    if bags is not None and len(bags):
        both_bags = pd.concat([bags[~bags["protocol"].map(is_rerank)],
                               relabel(bags[bags["protocol"].map(is_rerank)])], ignore_index=True)
    pairs = []
    for v, protocol in rer[["variant", "protocol"]].drop_duplicates().itertuples(index=False):
        k = parse_protocol(protocol)[1]
        pairs.append((f"{v}{RERANK_TAG}{k}", v, f"re-ranking step: top {k}"))
    return compare(both, both_bags, list(dict.fromkeys(pairs)), n_boot=n_boot, seed=seed)


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

