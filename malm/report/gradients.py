"""The gradient-share table: which loss term drives which shared encoder, per variant.

Reads the ``grad/<term>/<group>`` and ``grad_share/<term>/<group>`` columns that training logs
(:mod:`malm.train.gradshare`) from every run's ``history.json`` (one row per epoch: the mean over
the epoch's sampled steps). A group is averaged over the epochs in which it trained (the ViT's
frozen epochs have no ViT gradient) and then over seeds.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

GROUPS = ("recipe", "word_embedding", "vit")
TERMS = ("itc", "gc", "lc", "dist", "itm", "recipe")
TERM_NAMES = {"itc": "L_itc", "gc": "L_GC", "lc": "L_LC", "dist": "L_dist", "itm": "L_itm",
              "recipe": "L_recipe"}
GROUP_NAMES = {"recipe": "recipe encoder", "word_embedding": "word embedding", "vit": "ViT"}


def gradient_shares(hist: pd.DataFrame) -> pd.DataFrame:
    """Tidy: variant, display, group, term, norm (mean over trained epochs and seeds), share (the
    same mean of the per-epoch share), n_seeds, n_epochs. Empty when no run logged gradients."""
    cols = ["variant", "display", "group", "term", "norm", "share", "n_seeds", "n_epochs"]
    if hist is None or not len(hist):
        return pd.DataFrame(columns=cols)
    rows = []
    for (variant, display), h in hist.groupby(["variant", "display"], sort=False):
        for group in GROUPS:
            for term in TERMS:
                n_key, s_key = f"grad/{term}/{group}", f"grad_share/{term}/{group}"
                if n_key not in h or s_key not in h:
                    continue
                sel = h[h[s_key].notna()]
                if not len(sel):
                    continue
                per_seed = sel.groupby("seed")[[n_key, s_key]].mean()
                rows.append({"variant": variant, "display": display, "group": group, "term": term,
                             "norm": float(per_seed[n_key].mean()),
                             "share": float(per_seed[s_key].mean()),
                             "n_seeds": int(len(per_seed)), "n_epochs": int(len(sel))})
    return pd.DataFrame(rows, columns=cols)


def gradient_share_table(tidy: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Wide: one row per variant, one column per (group, term): 'share % (norm)'."""
    if not len(tidy):
        return pd.DataFrame()
    tidy = tidy.assign(cell=[f"{100 * s:.0f} % ({n:.3g})" for s, n in zip(tidy["share"], tidy["norm"])],
                       column=[f"{GROUP_NAMES[g]}: {TERM_NAMES[t]}" for g, t in zip(tidy["group"], tidy["term"])])
    wide = tidy.pivot(index="display", columns="column", values="cell").fillna("—")
    columns = [f"{GROUP_NAMES[g]}: {TERM_NAMES[t]}" for g in GROUPS for t in TERMS]
    wide = wide[[c for c in columns if c in wide.columns]]
    if order:
        wide = wide.reindex([d for d in order if d in wide.index] +
                            [d for d in wide.index if d not in order])
    wide.index.name = "variant"
    return wide
