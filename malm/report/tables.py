"""Display tables of our results beside the paper's: the paper's Tables 1-3 rebuilt (``table1``,
``table2``, ``table3``), their paired differences (``differences``, ``differences_table``), the
per-protocol tables of ``malm tables`` (``wide_table``, ``bag_differences_table``) and the grounding
table, with the cell formats they share.

Cells of ours read ``mean [95 % CI]`` (mean over seeds, bootstrap interval over seeds x bags) or
``mean ± std``. Our numbers and the paper's never share a number column without a label: Table 1
has a ``source`` column on every row, Tables 2/3 put each source in its own column block. A
variant without results gets "—" cells and the note "no results yet"; nothing is filled in.

``protocol`` may name several protocols, e.g. ``["tfood", "tfood+rerank10"]``: the dual-encoder
reading and the one re-ranked by the matching module (``malm.eval.names.rerank_protocol``) then get
a block each, labelled with the protocol. A variant without a matching module (Baseline) has no
re-ranked reading: its cells there are "—" with the note ``NO_RERANK``.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import pandas as pd

from malm import variants as variants_mod
from malm.eval.names import bag_label, parse_protocol
from malm.report.collect import DIRECTIONS, METRICS, bags_for, pick, same_config
from malm.report.compare import compare, comparison_pairs, summarise
from malm.report.paper import paper_lookup, table_variants

MISSING = "—"
NO_RESULTS = "no results yet"
NO_RERANK = "no matching module: no re-ranked reading"
# Table 1 rows quoted from the paper besides the registered variants' rows (Baseline, MALM).
TABLE1_PAPER_ROWS = ("H-T (ViT)", "T-Food (CLIP-ViT)", "Baseline (T-Food without ITM)", "MALM")


# ----------------------------------------------------------------------------- formatting
def fmt(mean: float, std: float | None = None, n: int = 1, digits: int = 1) -> str:
    """'mean ± std' over seeds (ddof=1) when n >= 2, 'mean' for one seed, '—' for nothing."""
    if mean is None or pd.isna(mean):
        return MISSING
    if n >= 2 and std is not None and not pd.isna(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def fmt_ci(mean: float, lo: float, hi: float, digits: int = 1) -> str:
    """'mean [lo, hi]'; the mean alone when there is no interval (one seed and one bag)."""
    if mean is None or pd.isna(mean):
        return "—"
    if pd.isna(lo) or pd.isna(hi):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def covers_zero(lo: float, hi: float) -> bool:
    """True when the interval [lo, hi] contains 0 or is undefined (NaN): no difference shown."""
    return not (lo > 0 or hi < 0)


def fmt_diff(mean: float, lo: float, hi: float, digits: int = 1) -> str:
    """A difference with its interval: '+2.1 [+0.8, +3.4]' when the interval excludes 0, and
    '≈0 (+0.3 [-0.9, +1.5])' when it covers 0 (judged on the unrounded bounds); '+0.3 (no CI)'
    without an interval. An interval that excludes 0 but would round to it ('-0.0 [-0.0, -0.0]')
    gets more digits, up to 4, so that the cell shows why it is not '≈0'."""
    if mean is None or pd.isna(mean):
        return "—"
    if pd.isna(lo) or pd.isna(hi):
        return f"{mean:+.{digits}f} (no CI)"
    if not covers_zero(lo, hi):
        near = min(abs(lo), abs(hi))
        while digits < 4 and round(near, digits) == 0:
            digits += 1
    cell = f"{mean:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return f"≈0 ({cell})" if covers_zero(lo, hi) else cell


def ours_label(rows: pd.DataFrame, protocol: str, bag_size: int) -> str:
    """'ours (synthetic, tfood 1k x10)'; names the dataset and bags the rows were measured on."""
    sel = rows[(rows["protocol"] == protocol) & (rows["bag_size"] == bag_size)]
    if not len(sel):
        return f"ours ({protocol} {bag_label(bag_size)}, {NO_RESULTS})"
    datasets = "/".join(sorted(map(str, sel["dataset"].unique())))
    n_bags = "/".join(str(int(n)) for n in sorted(sel["n_bags"].unique()))
    return f"ours ({datasets}, {protocol} {bag_label(bag_size)} x{n_bags})"


def _protocols(protocol: str | Sequence[str]) -> list[str]:
    """One protocol name or several -> a list (order kept, duplicates dropped)."""
    return [protocol] if isinstance(protocol, str) else list(dict.fromkeys(protocol))


def _is_rerank(protocol: str) -> bool:
    try:
        return parse_protocol(protocol)[1] > 0
    except ValueError:
        return False


def has_matching(name: str) -> bool:
    """Whether registered variant ``name`` builds a matching module (lambda_gc, lambda_lc or lambda_itm > 0), so
    that it has a re-ranked reading; True for a name not registered (nothing is assumed away)."""
    try:
        loss = variants_mod.resolve(name).loss
    except Exception:
        return True
    return loss.lambda_gc > 0 or loss.lambda_lc > 0 or loss.lambda_itm > 0


def _no_results(name: str | None, protocol: str) -> str:
    """The note of a row without results: ``NO_RERANK`` for a re-ranked protocol of a variant
    without a matching module, else ``NO_RESULTS``."""
    return NO_RERANK if name and _is_rerank(protocol) and not has_matching(name) else NO_RESULTS


def paper_label(paper: pd.DataFrame, table: int) -> str:
    cites = paper.loc[paper["table"] == table, "citation"].unique()
    return f"paper ({cites[0]})" if len(cites) else f"paper (Table {table})"


def _cells(summary: pd.DataFrame, bag_size: int, directions: Sequence[str], digits: int) -> dict:
    """Cells 'mean [95 % CI]' of one variant from ``summarise`` (the mean alone where there
    is no interval: one seed and one bag); runs evaluated with different numbers of bags are not
    pooled by ``summarise``: each is shown with its n_bags."""
    out = {}
    for d, m in itertools.product(directions, METRICS):
        s = summary[(summary.bag_size == bag_size) & (summary.direction == d) & (summary.metric == m)]
        cells = [fmt_ci(r.mean, r.ci_low, r.ci_high, digits) for r in s.itertuples()]
        if len(cells) > 1:
            cells = [f"{c} (x{int(n)})" for c, n in zip(cells, s["n_bags"])]
        out[f"{d} {m}" if len(directions) > 1 else m] = "; ".join(cells) or MISSING
    return out


def _paper_cells(val, table: int, method: str, bag_size: int, directions: Sequence[str],
                 digits: int) -> dict:
    """``val`` = ``paper_lookup(paper)``; '—' where the paper prints '-' or has no such row."""
    out = {}
    for d, m in itertools.product(directions, METRICS):
        out[f"{d} {m}" if len(directions) > 1 else m] = fmt(val(table, method, bag_size, d, m),
                                                            digits=digits)
    return out


def _seeds(rows: pd.DataFrame) -> str:
    return str(rows["seed"].nunique()) if len(rows) else "0"


def _ci_over(summary: pd.DataFrame) -> str:
    """What the intervals of one variant's cells resampled ('seeds x bags', ...), '' if none."""
    over = list(dict.fromkeys(summary["ci_over"].dropna())) if len(summary) else []
    return "; ".join(over)


# ------------------------------------------------------------------------- the paper's tables
def table1(ours: pd.DataFrame, paper: pd.DataFrame, protocol: str | Sequence[str] = "tfood",
           bag_sizes: Sequence[int] = (1000, 10000), names: Sequence[str] | None = None,
           paper_rows: Sequence[str] = TABLE1_PAPER_ROWS, prefer: str | None = None,
           digits: int = 1, bags: pd.DataFrame | None = None) -> pd.DataFrame:
    """Main comparison. Per bag size: a block of the paper's rows, then a block of ours per
    protocol (``protocol``: one name or several, e.g. ``["tfood", "tfood+rerank10"]``), each row
    labelled in ``source``. Columns: bag, source, method, variant, seeds, <direction metric> x8, note.
    Our cells: 'mean [95 % CI]' (``bags``: ``load_bags``; without them the intervals resample the
    per-run means over seeds only; the note says what was resampled). Each variant's runs of every
    protocol come from one file (``pick``)."""
    reg = variants_mod.registry()
    unknown = set(paper_rows) - set(paper.loc[paper.table == 1, "method"])
    if unknown:
        raise ValueError(f"not rows of the paper's Table 1: {sorted(unknown)}")
    names = table_variants(1) if names is None else names
    by_paper_row = {reg[v].paper.get("table1"): v for v in reg if reg[v].paper.get("table1")}
    protocols = _protocols(protocol)
    mine = ours[ours["protocol"].isin(protocols)]
    val = paper_lookup(paper)
    picked = {name: pick(mine, same_config(name, reg), prefer) for name in names}
    rows = []
    for bag in bag_sizes:
        for method in paper_rows:
            rows.append({"bag": bag_label(bag), "source": paper_label(paper, 1), "method": method,
                         "variant": by_paper_row.get(method, ""), "seeds": "",
                         **_paper_cells(val, 1, method, bag, DIRECTIONS, digits), "note": ""})
        for prot in protocols:
            label = ours_label(pd.concat([p[0] for p in picked.values()] + [mine.iloc[0:0]]),
                               prot, bag)
            for name in names:
                sel, used, origin = picked[name]
                sel = sel[(sel.protocol == prot) & (sel.bag_size == bag)]
                summary = summarise(sel, bags_for(bags, sel))
                note = _no_results(used or name, prot) if not len(sel) else f"from {origin}" + (
                    f" (as {used})" if used != name else "")
                if _ci_over(summary):
                    note += f"; CI: {_ci_over(summary)}"
                if reg.get(name) is not None and reg[name].paper.get("table1"):
                    note += f"; paper row: {reg[name].paper['table1']}"
                rows.append({"bag": bag_label(bag), "source": label,
                             "method": reg[name].display if name in reg else name, "variant": name,
                             "seeds": _seeds(sel), **_cells(summary, bag, DIRECTIONS, digits),
                             "note": note})
    return pd.DataFrame(rows)


def ablation_table(ours: pd.DataFrame, paper: pd.DataFrame, table: int,
                   protocol: str | Sequence[str] = "tfood",
                   bag_sizes: Sequence[int] = (1000, 10000), direction: str = "img2rec",
                   prefer: str | None = None, digits: int = 1, bags: pd.DataFrame | None = None
                   ) -> pd.DataFrame:
    """Tables 2/3: one row per paper row; column blocks (level 0): the paper's numbers (Recipe1M 10k),
    ours per protocol x bag size ('mean [95 % CI]', ``table1``; ``protocol``: one name or several),
    and which of our runs gave them. Table 3 is indexed by the mask ratio."""
    reg = variants_mod.registry()
    key = f"table{table}"
    methods = list(dict.fromkeys(paper.loc[paper.table == table, "method"]))
    protocols = _protocols(protocol)
    mine = ours[ours["protocol"].isin(protocols) & (ours["direction"] == direction)]
    val = paper_lookup(paper)
    picks, ratios = {}, {}
    for method in methods:
        cands = [v for v in reg if reg[v].paper.get(key) == method]
        cands.sort(key=lambda v: reg[v].alias_of is not None)  # the aliased target first
        picks[method] = pick(mine, cands, prefer) + (cands,)
        if cands:
            ratios[method] = variants_mod.resolve(cands[0]).model.mask.ratio
    if table == 3:
        methods.sort(key=lambda m: ratios.get(m, float("inf")))
    used_rows = pd.concat([p[0] for p in picks.values()] + [mine.iloc[0:0]], ignore_index=True)
    plabel = f"{paper_label(paper, table)}, Recipe1M 10k {direction}"
    out = {}
    for method in methods:
        sel, used, origin, cands = picks[method]
        row = {("", "paper row"): method}
        # the paper's tables 2/3 are 10k img2rec only; other directions have no paper numbers
        row.update({(plabel, m): v for m, v in
                    _paper_cells(val, table, method, 10000, [direction], digits).items()})
        over = []
        for prot, bag in itertools.product(protocols, bag_sizes):
            lbl = ours_label(used_rows, prot, bag) + f" {direction}"
            at_bag = sel[(sel.protocol == prot) & (sel.bag_size == bag)]
            summary = summarise(at_bag, bags_for(bags, at_bag))
            cells = _cells(summary, bag, [direction], digits)
            row.update({(lbl, m): v for m, v in cells.items()})
            if _ci_over(summary):
                over.append(f"{prot + ' ' if len(protocols) > 1 else ''}{bag_label(bag)}: "
                            f"{_ci_over(summary)}")
        others = [c for c in cands if c != used] if used else []
        no_rerank = [p for p in protocols if _no_results(used or (cands[0] if cands else None), p)
                     == NO_RERANK]
        row[("our runs", "variant")] = used or (" / ".join(cands) if cands else "(not registered)")
        row[("our runs", "seeds")] = _seeds(sel)
        row[("our runs", "note")] = (NO_RESULTS if used is None else f"from {origin}") + (
            f"; same config as {', '.join(others)}" if others else "") + (
            f"; CI: {', '.join(over)}" if over else "") + (
            f"; {', '.join(no_rerank)}: {NO_RERANK}" if no_rerank else "")
        out[f"{ratios[method]:.2f}" if table == 3 and method in ratios else method] = row
    df = pd.DataFrame.from_dict(out, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index.name = "mask ratio" if table == 3 else "paper row"
    if table != 3:
        df = df.drop(columns=[("", "paper row")])
    return df


def table2(ours: pd.DataFrame, paper: pd.DataFrame, **kw) -> pd.DataFrame:
    """Component ablation (Baseline, +LLC, +LLC+LGC (= no_distill), MALM, mask both)."""
    return ablation_table(ours, paper, 2, **kw)


def table3(ours: pd.DataFrame, paper: pd.DataFrame, **kw) -> pd.DataFrame:
    """Mask ratio 0.25 / 0.5 / 0.75 / 0.9, indexed by the ratio of the registered variant."""
    return ablation_table(ours, paper, 3, **kw)


# ------------------------------------------------------------------------ paired differences
TABLE_COMPARISONS = {1: ("vs baseline",), 2: ("vs baseline", "Table 2 step"),
                     3: ("Table 3 step", "vs baseline")}


def differences(ours: pd.DataFrame, table: int, protocol: str | Sequence[str] = "tfood",
                bag_sizes: Sequence[int] = (1000, 10000), prefer: str | None = None,
                bags: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paired differences (``compare``, ``malm.report.compare.COMPARISON_COLUMNS``) of Table ``table``'s
    comparisons: Table 1: each variant vs Baseline; Table 2: each row vs the row above and vs
    Baseline; Table 3: each mask ratio vs the ratio above and vs Baseline. Each variant's runs come
    from one file (``pick``, ``prefer`` first, aliases as fallback), as in the tables; two runs of
    one comparison are paired on the seeds both have and need the same bags (size and count), and
    are compared within each protocol of ``protocol`` (one name or several)."""
    reg = variants_mod.registry()
    mine = ours[ours["protocol"].isin(_protocols(protocol)) & ours["bag_size"].isin(list(bag_sizes))]
    names = list(dict.fromkeys(table_variants(table) + ["baseline"]))
    picked = [pick(mine, same_config(n, reg), prefer)[0] for n in names]
    rows = pd.concat([p for p in picked if len(p)] + [mine.iloc[0:0]], ignore_index=True)
    wanted = TABLE_COMPARISONS[table]
    pairs = [(v, r, w) for v, r, w in comparison_pairs(rows["variant"].unique())
             if any(x in w for x in wanted)]
    pairs.sort(key=lambda p: min(i for i, x in enumerate(wanted) if x in p[2]))
    return compare(rows, bags_for(bags, rows), pairs)


def differences_table(cmp: pd.DataFrame, protocol: str | Sequence[str] = "tfood",
                      bag_sizes: Sequence[int] = (1000, 10000),
                      directions: Sequence[str] = ("img2rec",), digits: int = 1) -> pd.DataFrame:
    """Display table of ``differences``: one row per 'variant − reference'; a column block per
    protocol x bag size x direction (label: ``ours (<dataset>, <protocol> <bag> x<n>) <direction>: Δ [95 % CI]``)
    with medR, R@1, R@5, R@10 and P(better) of R@1; a last block 'paired on' (comparison, seeds,
    what was resampled). A difference whose interval covers 0 reads '≈0 (...)'."""
    if not len(cmp):
        return pd.DataFrame()
    protocols = _protocols(protocol)
    blocks = list(itertools.product(protocols, bag_sizes, directions))
    labels = {}  # one label per block, from every comparison in it (rows without one read '—')
    for prot, bag, d in blocks:
        c = cmp[(cmp.protocol == prot) & (cmp.bag_size == bag) & (cmp.direction == d)]
        n_bags = "/".join(str(int(n)) for n in sorted(c.n_bags.unique())) or "?"
        datasets = "/".join(sorted(c.dataset.unique())) or "?"
        labels[prot, bag, d] = f"ours ({datasets}, {prot} {bag_label(bag)} x{n_bags}) {d}: Δ [95 % CI]"
    out: dict[str, dict] = {}
    for (v, r), g in cmp.groupby(["display", "reference_display"], sort=False):
        row: dict = {}
        over = []
        for prot, bag, d in blocks:
            c = g[(g.protocol == prot) & (g.bag_size == bag) & (g.direction == d)]
            lbl = labels[prot, bag, d]
            cells = {x.metric: fmt_diff(x.mean_diff, x.ci_low, x.ci_high, digits)
                     for x in c.itertuples()}
            row.update({(lbl, m): cells.get(m, MISSING) for m in METRICS})
            r1 = c[c.metric == "R@1"]
            row[(lbl, "P(better), R@1")] = (MISSING if r1.empty or pd.isna(r1.p_better.iloc[0])
                                            else f"{r1.p_better.iloc[0]:.2f}")
            if len(c):
                over.append(f"{prot + ' ' if len(protocols) > 1 else ''}{bag_label(bag)}: "
                            f"{c.n_seeds.iloc[0]} seeds, {c.resampling.iloc[0]}")
        row[("paired on", "comparison")] = g["comparison"].iloc[0]
        row[("paired on", "resampled")] = "; ".join(dict.fromkeys(over))
        out[f"{v} − {r}"] = row
    df = pd.DataFrame.from_dict(out, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index.name = "variant − reference"
    return df


def coverage(ours: pd.DataFrame, names: Sequence[str], protocol: str | Sequence[str],
             bag_sizes: Sequence[int], prefer: str | None = None) -> pd.DataFrame:
    """Per variant x bag: seeds found (with alias fallback) and where; 0 = no results yet. With
    several protocols, one row per protocol x bag ('bag' then reads '<protocol> <bag>'), and none
    for the re-ranked protocols of a variant without a matching module (it has no such reading)."""
    reg = variants_mod.registry()
    protocols = _protocols(protocol)
    mine = ours[ours["protocol"].isin(protocols)]
    rows = []
    for name in names:
        sel, used, origin = pick(mine, same_config(name, reg), prefer)
        for prot, bag in itertools.product(protocols, bag_sizes):
            if _no_results(used or name, prot) == NO_RERANK:
                continue
            s = sel[(sel.protocol == prot) & (sel.bag_size == bag)]
            where = f"{prot} {bag_label(bag)}" if len(protocols) > 1 else bag_label(bag)
            rows.append({"variant": name, "bag": where, "seeds": int(s["seed"].nunique()),
                         "from": f"{origin} ({used})" if len(s) else ""})
    return pd.DataFrame(rows, columns=["variant", "bag", "seeds", "from"])


def missing_note(cov: pd.DataFrame, what: str, how: str = "") -> str:
    """A Markdown sentence naming the variants x bags of ``coverage`` without results ('' if none)."""
    lacking = cov[cov["seeds"] == 0]
    if not len(lacking):
        return ""
    items = ", ".join(f"`{v}` ({', '.join(g['bag'])})"
                      for v, g in lacking.groupby("variant", sort=False))
    return f"**{what}: no results yet for {items}.** Their cells are '{MISSING}'." \
        + (f" {how}" if how else "")


# ---------------------------------------------------------------- the tables of malm tables
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


def bag_differences_table(cmp: pd.DataFrame, protocol: str, bag_size: int, digits: int = 1
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


def bag_n_bags(summary: pd.DataFrame, protocol: str, bag_size: int) -> str:
    """The number(s) of bags of one protocol x bag size in ``summary`` ('10', or '1/10')."""
    s = summary[(summary.protocol == protocol) & (summary.bag_size == bag_size)]
    return "/".join(str(int(n)) for n in sorted(s["n_bags"].unique()))


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

