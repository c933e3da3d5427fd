"""Seaborn figures of the collected results (used by ``malm tables`` and the notebooks)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def recall_bars(df: pd.DataFrame, protocol: str, bag_size: int, order: list[str] | None = None):
    """R@1/5/10 per variant (mean over seeds, error bars = std over seeds), both directions."""
    d = df[(df.protocol == protocol) & (df.bag_size == bag_size) & (df.metric != "medR")]
    g = sns.catplot(data=d, x="metric", y="value", hue="display", col="direction", kind="bar",
                    errorbar="sd", hue_order=order, height=3.6, aspect=1.25)
    g.set_axis_labels("", "recall (%)")
    g.figure.suptitle(f"ours ({d.dataset.iloc[0] if len(d) else ''}): {protocol} protocol, "
                      f"{bag_size // 1000}k bags, mean ± std over seeds", y=1.03)
    return g.figure


def mask_ratio_curve(df: pd.DataFrame, ratios: dict[str, float], protocol: str, bag_size: int,
                     paper: pd.DataFrame | None = None):
    """img2rec R@1 against the mask ratio: ours (mean ± std over seeds) and, if given, the paper's."""
    d = df[(df.protocol == protocol) & (df.bag_size == bag_size) & (df.metric == "R@1")
           & (df.direction == "img2rec") & df.variant.isin(list(ratios))].copy()
    d["mask ratio"] = d.variant.map(ratios)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    sns.lineplot(data=d, x="mask ratio", y="value", errorbar="sd", marker="o", ax=ax,
                 label=f"ours ({protocol}, {bag_size // 1000}k)")
    if paper is not None and len(paper):
        ax2 = ax.twinx()
        ax2.plot(paper["mask ratio"], paper["value"], "s--", color="grey", label="paper (10k)")
        ax2.set_ylabel("paper R@1 (%)", color="grey")
        ax2.legend(loc="lower right")
    ax.set_ylabel("ours img2rec R@1 (%)")
    ax.set_title("Mask ratio (Table 3)")
    fig.tight_layout()
    return fig


def training_curves(history: pd.DataFrame, y: str = "val/img2rec_R@1"):
    """A metric per epoch, one line per variant (band = std over seeds)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(data=history, x="epoch", y=y, hue="display", errorbar="sd", ax=ax)
    ax.set_title(f"{y} during training (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
    plt.close(fig)
    return path
