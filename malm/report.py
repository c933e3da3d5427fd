"""The paper's Tables 1-3 rebuilt from collected results, beside the paper's numbers (notebooks).

Pure functions over the tidy frames of :mod:`malm.results`: ``load_ours`` reads one or more
``results.csv`` (DVC pipeline, Slurm grids) and tags each row with its ``origin``, ``load_bags`` the
``per_bag.csv`` beside each; ``table1`` / ``table2`` / ``table3`` give display tables (cells
``mean [95 % CI]``: mean over seeds, bootstrap interval over seeds x bags), ``differences`` and
``differences_table`` the paired differences of each table's comparisons (``malm.eval.stats``);
``paper_inconsistencies`` and ``paper_claims`` check the paper against itself, computed from
``malm_paper_tables.csv``.

Our numbers and the paper's never share a number column without a label: Table 1 has a ``source``
column on every row, Tables 2/3 put each source in its own column block (exported to Markdown as one
small table per block, under the block's label). A variant without results gets "—" cells and the
note "no results yet"; nothing is filled in.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from malm import variants as variants_mod
from malm import results as results_mod
from malm.results import (BAG_COLUMNS, BAGS_FILE, COLUMNS, DIRECTIONS, METRICS, bag_label, fmt_ci,
                          fmt_diff, summarise)

PathsLike = Mapping[str, "str | os.PathLike"] | Sequence["str | os.PathLike"]
MISSING = "—"
NO_RESULTS = "no results yet"
# Table 1 rows quoted from the paper besides the registered variants' rows (Baseline, MALM).
TABLE1_PAPER_ROWS = ("H-T (ViT)", "T-Food (CLIP-ViT)", "Baseline (T-Food without ITM)", "MALM")
TABLE1_ORDER = ("baseline", "global_only", "no_mask", "no_distill", "malm")  # display order only


# ----------------------------------------------------------------------------------- loading
def _labelled(paths: PathsLike) -> list[tuple[str, Path]]:
    if isinstance(paths, Mapping):
        return [(str(k), Path(v)) for k, v in paths.items()]
    return [(str(p), Path(p)) for p in paths]


def _read_many(paths: PathsLike, required: Sequence[str]) -> pd.DataFrame:
    frames = []
    for origin, path in _labelled(paths):
        if not path.is_file():
            continue
        df = pd.read_csv(path)
        lacking = [c for c in required if c not in df.columns]
        if lacking:
            raise ValueError(f"{path}: missing columns {lacking}")
        frames.append(df.assign(origin=origin))
    if not frames:
        return pd.DataFrame(columns=[*required, "origin"])
    return pd.concat(frames, ignore_index=True)


def load_ours(paths: PathsLike) -> pd.DataFrame:
    """Tidy results (``malm.results.COLUMNS``) of every existing file, plus ``origin`` = the file's
    label (the mapping key, or the path). Files that do not exist are skipped (see ``inventory``)."""
    return _read_many(paths, COLUMNS)


def load_bags(paths: PathsLike) -> pd.DataFrame:
    """The per-bag values (``malm.results.BAG_COLUMNS``, file ``per_bag.csv``) beside each of the
    given ``results.csv`` files, labelled with the same ``origin``; files without one add nothing
    (their intervals then resample the per-run means over seeds only, and say so)."""
    labelled = _labelled(paths)
    return _read_many({origin: path.with_name(BAGS_FILE) for origin, path in labelled},
                      BAG_COLUMNS)


def load_curves(paths: PathsLike) -> pd.DataFrame:
    """Per-epoch histories (``curves.csv``: variant, display, seed, epoch, val/*, train/*) + origin."""
    return _read_many(paths, ["variant", "display", "seed", "epoch"])


def inventory(paths: PathsLike) -> pd.DataFrame:
    """One row per input file: does it exist, and which variants/seeds/protocols it holds."""
    rows = []
    for origin, path in _labelled(paths):
        row = {"origin": origin, "path": str(path), "exists": path.is_file(), "rows": 0,
               "variants": "", "seeds": "", "protocols": ""}
        if row["exists"]:
            df = pd.read_csv(path)
            row["rows"] = len(df)
            for col in ("variant", "seed", "protocol"):
                if col in df:
                    row[f"{col}s"] = ", ".join(str(v) for v in sorted(df[col].unique()))
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- selection
def same_config(name: str, reg: Mapping[str, variants_mod.Variant] | None = None) -> list[str]:
    """``name`` first, then every registered variant that is the same configuration (aliases)."""
    reg = reg if reg is not None else variants_mod.registry()
    root = (reg[name].alias_of or name) if name in reg else name
    group = [v for v in reg if v == root or reg[v].alias_of == root]
    return [name] + [v for v in group if v != name]


def pick(ours: pd.DataFrame, candidates: Sequence[str], prefer: str | None = None
         ) -> tuple[pd.DataFrame, str | None, str | None]:
    """The rows of one (origin, variant): the first origin (``prefer`` first, then load order) that
    holds any candidate, the first candidate (in order) found there. Never mixes runs of two files
    or of two alias names, so the seeds of one row come from one place."""
    origins = list(dict.fromkeys(([prefer] if prefer else []) + list(ours["origin"].unique())))
    for origin, name in itertools.product(origins, candidates):
        rows = ours[(ours["origin"] == origin) & (ours["variant"] == name)]
        if len(rows):
            return rows, name, origin
    return ours.iloc[0:0], None, None


def dedupe(ours: pd.DataFrame, names: Sequence[str] | None = None, prefer: str | None = None
           ) -> pd.DataFrame:
    """One (origin, variant) per requested variant, aliases as fallback (``pick``): for figures,
    where one seed must not count twice. ``names=None``: every variant present, as itself."""
    reg = variants_mod.registry()
    if names is None:
        parts = [pick(ours, [n], prefer)[0] for n in dict.fromkeys(ours["variant"])]
    else:
        parts = [pick(ours, same_config(n, reg), prefer)[0] for n in dict.fromkeys(names)]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else ours.iloc[0:0]


def table_variants(table: int) -> list[str]:
    """Registered variants of the paper's Table ``table`` (1: the baselines/ folder in display
    order; 2/3: one per paper row, in the paper CSV's order, the aliased target preferred)."""
    reg = variants_mod.registry()
    if table == 1:
        baselines = [v for v in reg if reg[v].source.parent.name == "baselines"]
        return [v for v in TABLE1_ORDER if v in baselines] + \
            [v for v in baselines if v not in TABLE1_ORDER]
    from malm.results import paper_table

    out = []
    for method in dict.fromkeys(paper_table().query("table == @table")["method"]):
        cands = sorted((v for v in reg if reg[v].paper.get(f"table{table}") == method),
                       key=lambda v: reg[v].alias_of is not None)
        out += cands[:1]
    if table == 3:
        out.sort(key=lambda v: variants_mod.resolve(v).model.mask.ratio)
    return out


# ----------------------------------------------------------------------------- formatting
def fmt(mean: float, std: float | None = None, n: int = 1, digits: int = 1) -> str:
    """'mean ± std' over seeds (ddof=1) when n >= 2, 'mean' for one seed, '—' for nothing."""
    if mean is None or pd.isna(mean):
        return MISSING
    if n >= 2 and std is not None and not pd.isna(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def ours_label(rows: pd.DataFrame, protocol: str, bag_size: int) -> str:
    """'ours (synthetic, tfood 1k x10)'; names the dataset and bags the rows were measured on."""
    sel = rows[(rows["protocol"] == protocol) & (rows["bag_size"] == bag_size)]
    if not len(sel):
        return f"ours ({protocol} {bag_label(bag_size)}, {NO_RESULTS})"
    datasets = "/".join(sorted(map(str, sel["dataset"].unique())))
    n_bags = "/".join(str(int(n)) for n in sorted(sel["n_bags"].unique()))
    return f"ours ({datasets}, {protocol} {bag_label(bag_size)} x{n_bags})"


def paper_label(paper: pd.DataFrame, table: int) -> str:
    cites = paper.loc[paper["table"] == table, "citation"].unique()
    return f"paper ({cites[0]})" if len(cites) else f"paper (Table {table})"


def _cells(summary: pd.DataFrame, bag_size: int, directions: Sequence[str], digits: int) -> dict:
    """Cells 'mean [95 % CI]' of one variant from ``results.summarise`` (the mean alone where there
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


def _lookup(paper: pd.DataFrame):
    """(table, method, bag_size, direction, metric) -> value (NaN where the paper prints '-')."""
    keys = ["table", "method", "bag_size", "direction", "metric"]
    table = dict(zip(map(tuple, paper[keys].itertuples(index=False)), paper["value"]))
    return lambda *key: float(table.get(key, float("nan")))


def _paper_cells(val, table: int, method: str, bag_size: int, directions: Sequence[str],
                 digits: int) -> dict:
    """``val`` = ``_lookup(paper)``; '—' where the paper prints '-' or has no such row."""
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


def _bags_for(bags: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame | None:
    """The per-bag rows of the picked (origin, variant) run sets in ``rows``."""
    if bags is None or not len(bags) or not len(rows):
        return None
    keys = rows[["origin", "variant"]].drop_duplicates()
    return bags.merge(keys, on=["origin", "variant"], how="inner")


# ---------------------------------------------------------------------------------- tables
def table1(ours: pd.DataFrame, paper: pd.DataFrame, protocol: str = "tfood",
           bag_sizes: Sequence[int] = (1000, 10000), names: Sequence[str] | None = None,
           paper_rows: Sequence[str] = TABLE1_PAPER_ROWS, prefer: str | None = None,
           digits: int = 1, bags: pd.DataFrame | None = None) -> pd.DataFrame:
    """Main comparison. Per bag size: a block of the paper's rows, then a block of ours, each row
    labelled in ``source``. Columns: bag, source, method, variant, seeds, <direction metric> x8, note.
    Our cells: 'mean [95 % CI]' (``bags``: ``load_bags``; without them the intervals resample the
    per-run means over seeds only; the note says what was resampled)."""
    reg = variants_mod.registry()
    unknown = set(paper_rows) - set(paper.loc[paper.table == 1, "method"])
    if unknown:
        raise ValueError(f"not rows of the paper's Table 1: {sorted(unknown)}")
    names = table_variants(1) if names is None else names
    by_paper_row = {reg[v].paper.get("table1"): v for v in reg if reg[v].paper.get("table1")}
    mine = ours[ours["protocol"] == protocol]
    val = _lookup(paper)
    picked = {name: pick(mine, same_config(name, reg), prefer) for name in names}
    rows = []
    for bag in bag_sizes:
        for method in paper_rows:
            rows.append({"bag": bag_label(bag), "source": paper_label(paper, 1), "method": method,
                         "variant": by_paper_row.get(method, ""), "seeds": "",
                         **_paper_cells(val, 1, method, bag, DIRECTIONS, digits), "note": ""})
        label = ours_label(pd.concat([p[0] for p in picked.values()] + [mine.iloc[0:0]]),
                           protocol, bag)
        for name in names:
            sel, used, origin = picked[name]
            sel = sel[sel.bag_size == bag]
            summary = summarise(sel, _bags_for(bags, sel))
            note = NO_RESULTS if not len(sel) else f"from {origin}" + (
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


def ablation_table(ours: pd.DataFrame, paper: pd.DataFrame, table: int, protocol: str = "tfood",
                   bag_sizes: Sequence[int] = (1000, 10000), direction: str = "img2rec",
                   prefer: str | None = None, digits: int = 1, bags: pd.DataFrame | None = None
                   ) -> pd.DataFrame:
    """Tables 2/3: one row per paper row; column blocks (level 0): the paper's numbers (Recipe1M 10k),
    ours per bag size ('mean [95 % CI]', ``table1``), and which of our runs gave them. Table 3 is
    indexed by the mask ratio."""
    reg = variants_mod.registry()
    key = f"table{table}"
    methods = list(dict.fromkeys(paper.loc[paper.table == table, "method"]))
    mine = ours[(ours["protocol"] == protocol) & (ours["direction"] == direction)]
    val = _lookup(paper)
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
        for bag in bag_sizes:
            lbl = ours_label(used_rows, protocol, bag) + f" {direction}"
            at_bag = sel[sel.bag_size == bag]
            summary = summarise(at_bag, _bags_for(bags, at_bag))
            cells = _cells(summary, bag, [direction], digits)
            row.update({(lbl, m): v for m, v in cells.items()})
            if _ci_over(summary):
                over.append(f"{bag_label(bag)}: {_ci_over(summary)}")
        others = [c for c in cands if c != used] if used else []
        row[("our runs", "variant")] = used or (" / ".join(cands) if cands else "(not registered)")
        row[("our runs", "seeds")] = _seeds(sel)
        row[("our runs", "note")] = (NO_RESULTS if used is None else f"from {origin}") + (
            f"; same config as {', '.join(others)}" if others else "") + (
            f"; CI: {', '.join(over)}" if over else "")
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


# ------------------------------------------------------------------- paired differences
TABLE_COMPARISONS = {1: ("vs baseline",), 2: ("vs baseline", "Table 2 step"),
                     3: ("Table 3 step", "vs baseline")}


def differences(ours: pd.DataFrame, table: int, protocol: str = "tfood",
                bag_sizes: Sequence[int] = (1000, 10000), prefer: str | None = None,
                bags: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paired differences (``malm.results.compare``, ``COMPARISON_COLUMNS``) of Table ``table``'s
    comparisons: Table 1: each variant vs Baseline; Table 2: each row vs the row above and vs
    Baseline; Table 3: each mask ratio vs the ratio above and vs Baseline. Each variant's runs come
    from one file (``pick``, ``prefer`` first, aliases as fallback), as in the tables; two runs of
    one comparison are paired on the seeds both have and need the same bags (size and count)."""
    reg = variants_mod.registry()
    mine = ours[(ours["protocol"] == protocol) & ours["bag_size"].isin(list(bag_sizes))]
    names = list(dict.fromkeys(table_variants(table) + ["baseline"]))
    picked = [pick(mine, same_config(n, reg), prefer)[0] for n in names]
    rows = pd.concat([p for p in picked if len(p)] + [mine.iloc[0:0]], ignore_index=True)
    wanted = TABLE_COMPARISONS[table]
    pairs = [(v, r, w) for v, r, w in results_mod.comparison_pairs(rows["variant"].unique())
             if any(x in w for x in wanted)]
    pairs.sort(key=lambda p: min(i for i, x in enumerate(wanted) if x in p[2]))
    return results_mod.compare(rows, _bags_for(bags, rows), pairs)


def differences_table(cmp: pd.DataFrame, protocol: str = "tfood",
                      bag_sizes: Sequence[int] = (1000, 10000),
                      directions: Sequence[str] = ("img2rec",), digits: int = 1) -> pd.DataFrame:
    """Display table of ``differences``: one row per 'variant − reference'; a column block per bag
    size x direction (label: ``ours (<dataset>, <protocol> <bag> x<n>) <direction>: Δ [95 % CI]``)
    with medR, R@1, R@5, R@10 and P(better) of R@1; a last block 'paired on' (comparison, seeds,
    what was resampled). A difference whose interval covers 0 reads '≈0 (...)'."""
    if not len(cmp):
        return pd.DataFrame()
    out: dict[str, dict] = {}
    for (v, r), g in cmp.groupby(["display", "reference_display"], sort=False):
        row: dict = {}
        over = []
        for bag, d in itertools.product(bag_sizes, directions):
            c = g[(g.bag_size == bag) & (g.direction == d)]
            n_bags = "/".join(str(int(n)) for n in sorted(c.n_bags.unique())) or "?"
            datasets = "/".join(sorted(c.dataset.unique())) or "?"
            lbl = f"ours ({datasets}, {protocol} {bag_label(bag)} x{n_bags}) {d}: Δ [95 % CI]"
            cells = {x.metric: fmt_diff(x.mean_diff, x.ci_low, x.ci_high, digits)
                     for x in c.itertuples()}
            row.update({(lbl, m): cells.get(m, MISSING) for m in METRICS})
            r1 = c[c.metric == "R@1"]
            row[(lbl, "P(better), R@1")] = (MISSING if r1.empty or pd.isna(r1.p_better.iloc[0])
                                            else f"{r1.p_better.iloc[0]:.2f}")
            if len(c):
                over.append(f"{bag_label(bag)}: {c.n_seeds.iloc[0]} seeds, {c.resampling.iloc[0]}")
        row[("paired on", "comparison")] = g["comparison"].iloc[0]
        row[("paired on", "resampled")] = "; ".join(dict.fromkeys(over))
        out[f"{v} − {r}"] = row
    df = pd.DataFrame.from_dict(out, orient="index")
    df.columns = pd.MultiIndex.from_tuples(df.columns)
    df.index.name = "variant − reference"
    return df


def coverage(ours: pd.DataFrame, names: Sequence[str], protocol: str, bag_sizes: Sequence[int],
             prefer: str | None = None) -> pd.DataFrame:
    """Per variant x bag: seeds found (with alias fallback) and where; 0 = no results yet."""
    reg = variants_mod.registry()
    mine = ours[ours["protocol"] == protocol]
    rows = []
    for name in names:
        sel, used, origin = pick(mine, same_config(name, reg), prefer)
        for bag in bag_sizes:
            s = sel[sel.bag_size == bag]
            rows.append({"variant": name, "bag": bag_label(bag), "seeds": int(s["seed"].nunique()),
                         "from": f"{origin} ({used})" if len(s) else ""})
    return pd.DataFrame(rows)


def missing_note(cov: pd.DataFrame, what: str, how: str = "") -> str:
    """A Markdown sentence naming the variants x bags of ``coverage`` without results ('' if none)."""
    lacking = cov[cov["seeds"] == 0]
    if not len(lacking):
        return ""
    items = ", ".join(f"`{v}` ({', '.join(g['bag'])})"
                      for v, g in lacking.groupby("variant", sort=False))
    return f"**{what}: no results yet for {items}.** Their cells are '{MISSING}'." \
        + (f" {how}" if how else "")


# ------------------------------------------------------------------------- the paper, checked
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
    (The prose itself is not stored here; the claims are the abstract's and the ablations' as the
    spec restates them.)"""
    reg = variants_mod.registry()
    t1 = {k: reg[k].paper["table1"] for k in ("baseline", "malm")}
    t2 = {k: reg[k].paper["table2"] for k in ("baseline", "llc", "no_distill", "malm", "mask_both")}
    recalls = ["R@1", "R@5", "R@10"]
    val = _lookup(paper)
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


# ---------------------------------------------------------------------------------- export
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
    from malm.io import atomic_write_text

    out = Path(out_dir)
    md = (f"{caption}\n\n" if caption else "") + to_markdown(df) + "\n"
    paths = {"md": out / f"{name}.md", "tex": out / f"{name}.tex"}
    atomic_write_text(paths["md"], md)
    atomic_write_text(paths["tex"], to_latex(df, caption))
    return paths


# --------------------------------------------------------------------------------- figures
def figure_recall(ours: pd.DataFrame, names: Sequence[str], protocol: str, bag_size: int,
                  path: str | os.PathLike, prefer: str | None = None,
                  bags: pd.DataFrame | None = None) -> Path | None:
    """R@K per variant (bars = mean over seeds, error bars = 95 % bootstrap CI over seeds x bags);
    None when there is nothing to plot."""
    from malm import plots

    d = dedupe(ours[ours.protocol == protocol], names, prefer)
    d = d[d.bag_size == bag_size]
    if not len(d):
        return None
    order = list(dict.fromkeys(d["display"]))
    summary = summarise(d, _bags_for(bags, d))
    return plots.save(plots.recall_bars(summary, protocol, bag_size, order=order), path)


def figure_mask_ratio(ours: pd.DataFrame, paper: pd.DataFrame, protocol: str, bag_size: int,
                      path: str | os.PathLike, prefer: str | None = None,
                      bags: pd.DataFrame | None = None) -> Path | None:
    """img2rec R@1 vs mask ratio: ours (left axis, error bars = 95 % CI) and the paper's (right
    axis, 10k)."""
    from malm import plots

    # one run set per ratio: malm and its alias mask_0.75 must not both count at r = 0.75
    d = dedupe(ours[ours.protocol == protocol], table_variants(3), prefer)
    d = d[d.bag_size == bag_size]
    if not len(d):
        return None
    p = paper_mask_ratios(paper)
    p = p[(p.metric == "R@1") & (p.direction == "img2rec")]
    summary = summarise(d, _bags_for(bags, d))
    fig = plots.mask_ratio_curve(summary, mask_ratios(list(d.variant.unique())), protocol,
                                 bag_size, p)
    return plots.save(fig, path)


def figure_curves(curves: pd.DataFrame, y: str, path: str | os.PathLike,
                  prefer: str | None = None) -> Path | None:
    """One metric per epoch, one line per variant (band = std over seeds)."""
    from malm import plots

    if not len(curves) or y not in curves or curves[y].isna().all():
        return None
    return plots.save(plots.training_curves(dedupe(curves, None, prefer), y=y), path)
