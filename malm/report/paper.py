"""The paper's numbers (arXiv 2305.11327v1 Tables 1-3, ``malm/paper/malm_paper_tables.csv``) and the
checks of the paper against itself.

``paper_table`` reads them in the tidy layout, always labelled ``source = "paper"``; each paper row
reports a registered variant (``paper:`` in the variant files), which ``table_variants`` and
``paper_with_variants`` resolve. ``paper_inconsistencies`` and ``paper_claims`` are computed from
these numbers only.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from malm import variants as variants_mod
from malm.eval.names import bag_label
from malm.report.collect import DIRECTIONS, METRICS

PAPER_CSV = Path(__file__).resolve().parents[1] / "paper" / "malm_paper_tables.csv"
# Table 1's rows of ours, in display order: the paper's systems (variants with a ``paper: table1``
# row: T-Food without ITM, H-T, T-Food, MALM) with the design card's component steps between the
# baseline and MALM (global matching only, without masking, without distillation)
TABLE1_ORDER = ("baseline", "ht", "tfood", "global_only", "no_mask", "no_distill", "malm")
DESIGN_CARD_STEPS = ("global_only", "no_mask", "no_distill")


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


def paper_lookup(paper: pd.DataFrame):
    """(table, method, bag_size, direction, metric) -> value (NaN where the paper prints '-')."""
    keys = ["table", "method", "bag_size", "direction", "metric"]
    table = dict(zip(map(tuple, paper[keys].itertuples(index=False)), paper["value"]))
    return lambda *key: float(table.get(key, float("nan")))


def table_variants(table: int) -> list[str]:
    """Registered variants of the paper's Table ``table`` (1: the variants with a ``table1`` row
    and the design card's component steps, ``TABLE1_ORDER`` first; 2/3: one per paper row, in the
    paper CSV's order, the aliased target preferred)."""
    reg = variants_mod.registry()
    if table == 1:
        rows = [v for v in reg if (reg[v].paper.get("table1") and reg[v].alias_of is None)
                or v in DESIGN_CARD_STEPS]
        return [v for v in TABLE1_ORDER if v in rows] + [v for v in sorted(rows) if v not in TABLE1_ORDER]
    out = []
    for method in dict.fromkeys(paper_table().query("table == @table")["method"]):
        cands = sorted((v for v in reg if reg[v].paper.get(f"table{table}") == method),
                       key=lambda v: reg[v].alias_of is not None)
        out += cands[:1]
    if table == 3:
        out.sort(key=lambda v: variants_mod.resolve(v).model.mask.ratio)
    return out


def paper_with_variants(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's rows + ``config``: the registered variant (aliases resolved) a row reports,
    else '<table>:<method>' (a row of its own)."""
    reg = variants_mod.registry()
    mapping = {}
    for name, v in reg.items():
        for key, method in v.paper.items():
            mapping[(int(key.removeprefix("table")), method)] = v.alias_of or name
    out = paper.copy()
    out["config"] = [mapping.get((t, m), f"{t}:{m}") for t, m in zip(out.table, out.method)]
    return out


def _wide(paper: pd.DataFrame) -> pd.DataFrame:
    keys = ["table", "method", "config", "bag_size", "direction"]
    w = paper_with_variants(paper).pivot_table(index=keys, columns="metric", values="value")
    return w.reindex(columns=METRICS).dropna().reset_index()


def _name(r) -> str:
    return f"Table {r.table} '{r.method}' {bag_label(r.bag_size)} {r.direction}"


def _nums(r) -> str:
    return "/".join(f"{getattr(r, m.replace('@', '_'))}" for m in METRICS)


def paper_inconsistencies(paper: pd.DataFrame) -> pd.DataFrame:
    """Flags computed from the paper's numbers (all four metrics printed):
    - 'same setting, different numbers': rows that report one configuration (same registered
      variant, bag size, direction) in different tables but disagree;
    - 'different settings, identical numbers': rows of different configurations or directions with
      the same medR/R@1/R@5/R@10 (a copied row)."""
    w = _wide(paper).rename(columns=lambda c: c.replace("@", "_"))
    cols = [m.replace("@", "_") for m in METRICS]
    flags = []
    for _, g in w.groupby(["config", "bag_size", "direction"], sort=False):
        if len(g) > 1 and len(g[cols].drop_duplicates()) > 1:
            flags.append({"kind": "same setting, different numbers",
                          "rows": tuple(_name(r) for r in g.itertuples()),
                          "finding": "; ".join(f"{_name(r)} = {_nums(r)}" for r in g.itertuples())})
    for _, g in w.groupby(cols, sort=False):
        if len(g.drop_duplicates(["config", "bag_size", "direction"])) > 1:
            r0 = g.iloc[0]
            flags.append({"kind": "different settings, identical numbers",
                          "rows": tuple(_name(r) for r in g.itertuples()),
                          "finding": " = ".join(_name(r) for r in g.itertuples())
                          + f" = {'/'.join(str(r0[c]) for c in cols)} (medR/R@1/R@5/R@10)"})
    return pd.DataFrame(flags, columns=["kind", "rows", "finding"])


def paper_claims(paper: pd.DataFrame) -> pd.DataFrame:
    """Claims about the paper's results that its own numbers can test; ``holds`` is computed.
    (The prose itself is not stored here; the claims are the abstract's and Sec. 4.3's ablation
    statements of the paper.)"""
    reg = variants_mod.registry()
    t1 = {k: reg[k].paper["table1"] for k in ("baseline", "malm")}
    t2 = {k: reg[k].paper["table2"] for k in ("baseline", "llc", "no_distill", "malm", "mask_both")}
    recalls = ["R@1", "R@5", "R@10"]
    val = paper_lookup(paper)
    claims = []

    worse = []  # MALM vs every other Table 1 row, every printed cell (medR: lower is better)
    for method in sorted(set(paper.loc[paper.table == 1, "method"]) - {t1["malm"]}):
        for bag, d, m in itertools.product(sorted(paper.bag_size.unique()), DIRECTIONS, METRICS):
            ours_v, other = (val(1, x, bag, d, m) for x in (t1["malm"], method))
            if pd.isna(ours_v) or pd.isna(other):
                continue
            if (ours_v > other) if m == "medR" else (ours_v < other):
                worse.append(f"{bag_label(bag)} {d} {m}: MALM {ours_v} vs {method} {other}")
    claims.append({"claim": "MALM outperforms every other method of Table 1 (abstract: 'clearly "
                   "outperform SOTA')", "holds": not worse,
                   "evidence": "; ".join(worse) or "MALM best or tied in every printed cell"})

    order = ["baseline", "llc", "no_distill", "malm"]
    steps = []
    for m in recalls:
        vals = [val(2, t2[k], 10000, "img2rec", m) for k in order]
        steps += [f"{m}: {t2[a]} {x} -> {t2[b]} {y}" for (a, x), (b, y) in
                  zip(zip(order, vals), zip(order[1:], vals[1:])) if not y > x]
    claims.append({"claim": "Table 2: each component adds (Baseline < +LLC < +LLC+LGC < MALM, "
                   "R@1/5/10)", "holds": not steps, "evidence": "; ".join(steps) or "monotone"})

    both = [f"{m}: mask both {val(2, t2['mask_both'], 10000, 'img2rec', m)} vs MALM "
            f"{val(2, t2['malm'], 10000, 'img2rec', m)}" for m in recalls
            if not val(2, t2["mask_both"], 10000, "img2rec", m)
            < val(2, t2["malm"], 10000, "img2rec", m)]
    claims.append({"claim": "Table 2: masking the recipe too is worse than masking the image only",
                   "holds": not both, "evidence": "; ".join(both) or "lower on R@1/5/10"})

    t3 = paper_mask_ratios(paper)
    best = {m: t3.loc[t3[t3.metric == m]["value"].idxmax(), "mask ratio"] for m in recalls}
    claims.append({"claim": "Table 3: mask ratio 0.75 is the best", "holds":
                   all(b == 0.75 for b in best.values()),
                   "evidence": ", ".join(f"best {m}: r = {b}" for m, b in best.items())})

    gains = {t: val(t, (t1 if t == 1 else t2)["malm"], 10000, "img2rec", "R@1")
             - val(t, (t1 if t == 1 else t2)["baseline"], 10000, "img2rec", "R@1")
             for t in (1, 2)}
    claims.append({"claim": "MALM's gain over the Baseline (10k img2rec R@1) is one number "
                   "(Tables 1 and 2 report the same two models)",
                   "holds": abs(gains[1] - gains[2]) < 1e-9,
                   "evidence": f"Table 1: +{gains[1]:.1f}; Table 2: +{gains[2]:.1f}"})
    tfood = val(1, "T-Food (CLIP-ViT)", 10000, "img2rec", "R@1")
    g1, g2 = (val(1, t1["malm"], 10000, "img2rec", "R@1") - tfood,
              val(2, t2["malm"], 10000, "img2rec", "R@1") - tfood)
    claims.append({"claim": "MALM's gain over T-Food (CLIP-ViT) (10k img2rec R@1) is the same "
                   "whichever table's MALM row is used", "holds": abs(g1 - g2) < 1e-9,
                   "evidence": f"with Table 1's MALM: {g1:+.1f}; with Table 2's: {g2:+.1f}"})
    out = pd.DataFrame(claims)
    out.insert(2, "flag", ~out["holds"])
    return out


def paper_mask_ratios(paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 3 with ``mask ratio`` taken from the registered variant of each row."""
    reg = variants_mod.registry()
    ratio = {v.paper["table3"]: variants_mod.resolve(n).model.mask.ratio
             for n, v in reg.items() if "table3" in v.paper}
    t3 = paper[paper.table == 3].copy()
    t3["mask ratio"] = t3["method"].map(ratio)
    return t3.dropna(subset=["mask ratio"]).sort_values("mask ratio").reset_index(drop=True)


def mask_ratios(names: Sequence[str]) -> dict[str, float]:
    return {n: variants_mod.resolve(n).model.mask.ratio for n in names}

