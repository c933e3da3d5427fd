"""Figures of the collected results (seaborn/matplotlib), for ``malm tables`` and the notebooks.

The builders (``recall_bars``, ``mask_ratio_curve``, ``training_curves``, ``learning_curves``,
``grounding_points``) take tidy frames and return a figure; ``figure_*`` pick the run sets of a
paper table and write the figure; ``save`` is :func:`malm.io.save_figure` (atomic, then closed).
No backend is chosen here: ``malm``'s entry point picks a file backend, a notebook keeps its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns

from malm.eval.names import DIRECTIONS, bag_label
from malm.io import save_figure as save
from malm.report.collect import SAMPLES_SEEN, bags_for, dedupe
from malm.report.compare import summarise
from malm.report.paper import mask_ratios, paper_mask_ratios, table_variants

__all__ = ["plt", "save", "recall_bars", "mask_ratio_curve", "training_curves", "learning_curves",
           "grounding_points", "figure_recall", "figure_mask_ratio", "figure_curves"]

def _ci_note(summary: pd.DataFrame) -> str:
    over = sorted(set(summary["ci_over"].dropna())) if "ci_over" in summary else []
    return "error bars = 95 % bootstrap CI" + (f", resampled: {'; '.join(over)}" if over else "")


def _yerr(d: pd.DataFrame):
    """Asymmetric error bars [2, n] from ci_low/ci_high (0 where there is no interval)."""
    lo = (d["mean"] - d["ci_low"]).fillna(0.0).clip(lower=0).to_numpy()
    hi = (d["ci_high"] - d["mean"]).fillna(0.0).clip(lower=0).to_numpy()
    return [lo, hi]


def recall_bars(summary: pd.DataFrame, protocol: str, bag_size: int, order: list[str] | None = None):
    """R@1/5/10 per variant (those of ``order`` in that order, if given), both directions: bars =
    mean over seeds, error bars = the 95 % bootstrap interval of that mean over seeds x bags
    (``summarise``'s ci_low/ci_high)."""
    d = summary[(summary.protocol == protocol) & (summary.bag_size == bag_size)
                & (summary.metric != "medR")]
    names = [n for n in order if n in set(d.display)] if order else list(dict.fromkeys(d.display))
    d = d[d.display.isin(names)]
    metrics = ["R@1", "R@5", "R@10"]
    colors = sns.color_palette(n_colors=max(len(names), 1))
    fig, axes = plt.subplots(1, len(DIRECTIONS), figsize=(4.2 * len(DIRECTIONS) + 1.8, 3.8),
                             sharey=True, squeeze=False)
    width = 0.8 / max(len(names), 1)
    for ax, direction in zip(axes[0], DIRECTIONS):
        for i, name in enumerate(names):
            v = d[(d.direction == direction) & (d.display == name)]
            # runs of one variant with different bag counts: the first (the title lists the counts)
            v = v.drop_duplicates("metric").set_index("metric").reindex(metrics)
            x = [j - 0.4 + width * (i + 0.5) for j in range(len(metrics))]
            ax.bar(x, v["mean"], width, yerr=_yerr(v), capsize=2, color=colors[i],
                   label=name, error_kw={"elinewidth": 1})
        ax.set_xticks(range(len(metrics)), metrics)
        ax.set_title(direction)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("recall (%)")
    if names:
        axes[0, -1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    source = d.source.iloc[0] if len(d) else "ours"
    n_bags = "/".join(str(int(n)) for n in sorted(d.n_bags.unique())) if len(d) else "0"
    bags = "bag" if n_bags == "1" else "bags"
    fig.suptitle(f"{source}: {protocol} protocol, {n_bags} {bags} of {bag_label(bag_size)}\n"
                 f"mean over seeds, {_ci_note(d)}", fontsize=10)
    fig.tight_layout()
    return fig


def mask_ratio_curve(summary: pd.DataFrame, ratios: dict[str, float], protocol: str, bag_size: int,
                     paper: pd.DataFrame | None = None):
    """img2rec R@1 against the mask ratio: ours (mean over seeds, error bars = 95 % bootstrap CI
    over seeds x bags) and, if given, the paper's."""
    d = summary[(summary.protocol == protocol) & (summary.bag_size == bag_size)
                & (summary.metric == "R@1") & (summary.direction == "img2rec")
                & summary.variant.isin(list(ratios))].copy()
    d["mask ratio"] = d.variant.map(ratios)
    d = d.sort_values("mask ratio")
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.errorbar(d["mask ratio"], d["mean"], yerr=_yerr(d), marker="o", capsize=3,
                label=f"ours ({protocol}, {bag_label(bag_size)}; left axis)")
    handles, labels = ax.get_legend_handles_labels()
    if paper is not None and len(paper):
        ax2 = ax.twinx()
        ax2.plot(paper["mask ratio"], paper["value"], "s--", color="grey",
                 label="paper (10k; right axis)")
        ax2.set_ylabel("paper R@1 (%)", color="grey")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2,
              frameon=False, fontsize=9)
    ax.set_xlabel("mask ratio")
    ax.set_ylabel("ours img2rec R@1 (%)")
    ax.set_title(f"Mask ratio (Table 3)\n{_ci_note(d)}", fontsize=10)
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame, y: str = "val/img2rec_R@1"):
    """A metric per epoch, one line per variant (band = std over seeds)."""
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    sns.lineplot(data=history, x="epoch", y=y, hue="display", errorbar="sd", ax=ax)
    ax.set_title(f"{y} during training\n(mean over seeds, band = ± std over seeds)", fontsize=10)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if ax.get_legend() is not None:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), title=None, frameon=False)
    fig.tight_layout()
    return fig


def learning_curves(history: pd.DataFrame, y: str = "val/img2rec_R@1", x: str = SAMPLES_SEEN,
                    order: list[str] | None = None):
    """``y`` against training samples seen (``x``, per run: cumulative ``train/samples``), every
    variant in one axes: one line per variant = the mean over its seeds at each epoch, band = min-max
    over those seeds. Where some seeds have stopped (early stopping) and others go on, the line goes
    on dashed: the mean of the seeds still training. Markers per run: triangle = its best epoch
    (``best_epoch``, the checkpoint_best.pt that embed/evaluate use), cross = where it stopped early
    (``stopped_early``). Rows: ``load_histories`` / ``curves.csv`` (variant, display, seed, epoch,
    x, y, optionally best_epoch and stopped_early)."""
    from matplotlib.lines import Line2D

    d = history.dropna(subset=[x, y]).sort_values(["display", "seed", "epoch"])
    present = list(dict.fromkeys(d["display"]))
    names = [n for n in (order or []) if n in present] + [n for n in present if n not in (order or [])]
    colors = sns.color_palette(n_colors=max(len(names), 1))
    scale = 1e3 if len(d) and d[x].max() >= 1e4 else 1.0
    fig, ax = plt.subplots(figsize=(7.8, 4.0))
    for color, name in zip(colors, names):
        v = d[d["display"] == name]
        n_runs = v["seed"].nunique()
        g = v.groupby("epoch")
        agg = pd.DataFrame({"x": g[x].mean() / scale, "mean": g[y].mean(), "lo": g[y].min(),
                            "hi": g[y].max(), "n": g[y].count()}).sort_index()
        full = agg[agg["n"] == n_runs]
        ax.plot(full["x"], full["mean"], "-", color=color,
                label=f"{name} ({n_runs} seed{'s' if n_runs != 1 else ''})")
        tail = agg.loc[agg.index >= full.index.max()]
        if len(tail) > 1:  # continued by the seeds that had not stopped yet
            ax.plot(tail["x"], tail["mean"], "--", color=color, label=f"_{name} (fewer seeds)")
        ax.fill_between(agg["x"], agg["lo"], agg["hi"], color=color, alpha=0.18, lw=0)
        for _, run in v.groupby("seed"):
            if "best_epoch" in run and run["best_epoch"].notna().any():
                b = run[run["epoch"] == run["best_epoch"].iloc[0]]
                ax.scatter(b[x] / scale, b[y], marker="^", s=36, facecolors="none",
                           edgecolors=[color], zorder=3)
            if "stopped_early" in run and run["stopped_early"].fillna(False).astype(bool).any():
                last = run.iloc[[-1]]
                ax.scatter(last[x] / scale, last[y], marker="x", s=36, color=color, zorder=3)
    handles, labels = ax.get_legend_handles_labels()
    keys = [Line2D([], [], color="0.3", ls="--", label="mean of the seeds still training"),
            Line2D([], [], color="0.3", marker="^", ls="none", markerfacecolor="none",
                   label="a run's best epoch (checkpoint_best)"),
            Line2D([], [], color="0.3", marker="x", ls="none", label="a run's early stop")]
    if names:
        ax.legend(handles=handles + keys, loc="upper left", bbox_to_anchor=(1.02, 1),
                  frameon=False, fontsize=8)
    ax.set_xlabel("training samples seen" + (" (thousands)" if scale != 1 else ""))
    ax.set_ylabel(y)
    ax.set_title(f"Learning curves: {y} against samples seen\n(line = mean over seeds, "
                 "band = min–max over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def grounding_points(df: pd.DataFrame, order: list[str] | None = None):
    """Pointing accuracy per variant (``collect.collect_grounding``): one point per seed with its
    95 % interval (bootstrap over test pairs), and the chance rate as a grey bar behind them."""
    names = [d for d in (order or []) if d in set(df["display"])] or list(dict.fromkeys(df["display"]))
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2.5, 3.6))
    seeds = sorted(df["seed"].unique())
    for x, name in enumerate(names):
        d = df[df["display"] == name]
        ax.bar(x, d["chance"].mean(), width=0.7, color="0.85", zorder=0,
               label="chance (box share of patches)" if x == 0 else None)
        for r in d.itertuples():
            off = (seeds.index(r.seed) - (len(seeds) - 1) / 2) * 0.15
            ax.errorbar(x + off, r.accuracy, yerr=[[r.accuracy - r.ci_low], [r.ci_high - r.accuracy]],
                        fmt="o", color=sns.color_palette()[seeds.index(r.seed) % 10], capsize=3,
                        label=f"seed {r.seed}" if x == 0 or name == names[0] else None)
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="upper left")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("pointing accuracy")
    ax.set_ylim(0, max(0.05, float(df["ci_high"].max()) * 1.25))
    ax.set_title(f"Does psi point at the named ingredient? ({df['split'].iloc[0]} split, "
                 f"{int(df['n_pairs'].max())} pairs; error bars = 95 % CI over pairs)", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ the paper tables' figures
def figure_recall(ours: pd.DataFrame, names: Sequence[str], protocol: str, bag_size: int,
                  path: str | os.PathLike, prefer: str | None = None,
                  bags: pd.DataFrame | None = None) -> Path | None:
    """R@K per variant (bars = mean over seeds, error bars = 95 % bootstrap CI over seeds x bags);
    None when there is nothing to plot."""
    d = dedupe(ours[ours.protocol == protocol], names, prefer)
    d = d[d.bag_size == bag_size]
    if not len(d):
        return None
    order = list(dict.fromkeys(d["display"]))
    summary = summarise(d, bags_for(bags, d))
    return save(recall_bars(summary, protocol, bag_size, order=order), path)


def figure_mask_ratio(ours: pd.DataFrame, paper: pd.DataFrame, protocol: str, bag_size: int,
                      path: str | os.PathLike, prefer: str | None = None,
                      bags: pd.DataFrame | None = None) -> Path | None:
    """img2rec R@1 vs mask ratio: ours (left axis, error bars = 95 % CI) and the paper's (right
    axis, 10k)."""
    # one run set per ratio: malm and its alias mask_0.75 must not both count at r = 0.75
    d = dedupe(ours[ours.protocol == protocol], table_variants(3), prefer)
    d = d[d.bag_size == bag_size]
    if not len(d):
        return None
    p = paper_mask_ratios(paper)
    p = p[(p.metric == "R@1") & (p.direction == "img2rec")]
    summary = summarise(d, bags_for(bags, d))
    fig = mask_ratio_curve(summary, mask_ratios(list(d.variant.unique())), protocol,
                                 bag_size, p)
    return save(fig, path)


def figure_curves(curves: pd.DataFrame, y: str, path: str | os.PathLike,
                  prefer: str | None = None, x: str = "epoch",
                  order: list[str] | None = None) -> Path | None:
    """One metric per epoch (``x="epoch"``: ``training_curves``, band = std over seeds) or against
    training samples seen (``x=SAMPLES_SEEN``: ``learning_curves``, band = min-max over seeds, best
    epochs and early stops marked), one line per variant; None when there is nothing to plot."""
    if not len(curves) or y not in curves or curves[y].isna().all():
        return None
    # curves.csv read back (``load_curves``) may hold several origins; ``load_histories``: one
    one = dedupe(curves, None, prefer) if "origin" in curves else curves
    if x == "epoch":
        return save(training_curves(one, y=y), path)
    if x not in curves or curves[x].isna().all():
        return None  # histories written before train/samples was recorded
    return save(learning_curves(one, y=y, x=x, order=order), path)

