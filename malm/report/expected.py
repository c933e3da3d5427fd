"""Expected results and the regression check (what mmpretrain's model-index gives its users): for
each variant x protocol x bag x direction x metric, the value a results directory should reproduce
and the tolerance it is held to. ``malm check-results`` writes such a file from results
(``--write``; ``--paper`` from the paper's tables) and compares results against one.

The file (``expected/<name>.csv``; ``read_expected`` / ``write_expected``): leading ``#`` lines say
what the numbers are and where they came from, and carry the rule's parameters as ``# rule.k: 4``
lines (the check reads them); then CSV with ``EXPECTED_COLUMNS``, one row per ``KEYS``.

The rule (``Rule``; the same for every file, only its three parameters differ):

    expected   = mean over the seeds of each run's value (a run's value: the mean over its bags)
    seed_std   = std over those seeds (ddof 1); empty with one seed
    pooled_std = sqrt(mean over the variants of seed_std^2), per protocol x bag x direction x metric
    tolerance  = max(k * pooled_std * sqrt(1/n_expected + 1/n_measured), floor[medR or R@k])

The check compares a new run's seed-mean with the expected seed-mean. When nothing changed but the
random realisation of the runs (another machine or thread count, an edit that reorders random
draws: the same seeds then give other runs), their difference has the standard error
``pooled_std * sqrt(1/n_e + 1/n_m)`` (0.82 ``pooled_std`` for 3 seeds against 3). The test bags
are the same fixed draws in both (``tfood``: consecutive; ``ht``: ``random.Random(1234)``), so
sampling the bags cancels in the difference; the bag noise that remains (how a run's realisation
reads on these bags) is inside the seed std, as each seed's value is read on those bags. The std
is pooled over the variants because three seeds give it 2 degrees of freedom: alone it falls below
half the true std about one time in five (chi-square, 2 df); five variants give 10.
``k = 4``: a file holds a few hundred rows but they move together (the metrics and directions of
one run set, the protocols of one set of embeddings), roughly 25 independent groups; with a 10-df
t, P(|t| > 4) = 0.25 % per group, about 6 % that any of 25 fails on noise alone (k = 3: 1.3 %,
about 28 %). The floor guards against a pooled std that is small by chance or zero (bit-identical
seeds); it is set per file and its header says why (``DEFAULT_RULE_TEXT`` for the defaults).

``check``: rows are matched on ``KEYS``; a row beyond its tolerance fails, in either direction
(``WORSE``, or ``BETTER``: the numbers moved, so the expectations no longer describe the code; after
an intended change, write them again), a row of the file that the results lack fails
(``MISSING``), as does a different ``n_bags``; rows the file does not list are reported
(``extra``) and pass.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import itertools
import math
import os
import subprocess
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from malm.eval.names import DIRECTIONS, LOWER_IS_BETTER, METRIC_NAMES, bag_label, rerank_protocol
from malm.io import atomic_write_text

KEYS = ["variant", "protocol", "bag_size", "direction", "metric"]
EXPECTED_COLUMNS = ["variant", "protocol", "bag_size", "n_bags", "direction", "metric", "expected",
                    "tolerance", "n_seeds", "seed_std", "pooled_std", "source"]
RESULT_COLUMNS = ["variant", "seed", "protocol", "bag_size", "n_bags", "direction", "metric", "value"]
CHECK_COLUMNS = KEYS + ["n_bags", "expected", "measured", "diff", "tolerance", "n_seeds", "status",
                        "passed"]
EXPECTED_DIR = Path(__file__).resolve().parents[2] / "expected"  # the repository's expected/
RESULTS_FILE = "results.csv"
DECIMALS = 6  # written to the file; the check allows this rounding
EPS = 0.5 * 10 ** -DECIMALS + 1e-9
# The paper's protocol on Recipe1M (T-Food's evaluation, 51k test pairs): 10 bags of 1k, 5 of 10k;
# its variants with a matching module are most likely read re-ranked (T-Food's k_test = 10; README
# "Which reading are the paper's numbers?").
PAPER_N_BAGS = {1000: 10, 10000: 5}
PAPER_RERANK_K = 10


@dataclasses.dataclass(frozen=True)
class Rule:
    """``tolerance = max(k * pooled_std * sqrt(1/n_expected + 1/n_measured), floor)``; the floor is
    ``floor_medR`` (ranks) for medR, ``floor_recall`` (points) for R@k. Defaults: a derived file of
    several seeds (module docstring)."""

    k: float = 4.0
    floor_recall: float = 0.5
    floor_medR: float = 0.5

    def floor(self, metric: str) -> float:
        return self.floor_medR if metric == "medR" else self.floor_recall

    def tolerance(self, metric: str, pooled_std: float | None, n_expected: float | None,
                  n_measured: float | None) -> float:
        """The tolerance of one row; the floor alone without a std (one seed, the paper)."""
        floor = self.floor(metric)
        if not all(_finite(x) for x in (pooled_std, n_expected, n_measured)) \
                or min(n_expected, n_measured) < 1:
            return floor
        return max(self.k * pooled_std * math.sqrt(1 / n_expected + 1 / n_measured), floor)

    def header(self) -> list[str]:
        return [f"rule.{f.name}: {getattr(self, f.name):g}" for f in dataclasses.fields(self)]

    @classmethod
    def from_header(cls, lines: Iterable[str], path: str | os.PathLike = "") -> "Rule":
        found = {}
        for line in lines:
            key, sep, value = line.partition(":")
            if sep and key.strip().startswith("rule."):
                found[key.strip()[5:]] = float(value)
        names = [f.name for f in dataclasses.fields(cls)]
        if set(names) - set(found):
            raise ValueError(f"{path}: the header lacks "
                             f"{', '.join(f'# rule.{n}:' for n in names if n not in found)}")
        return cls(**{n: found[n] for n in names})


# The smoke profile's results are quantised by their tiny bags (R@k by 1 query = 1 point in the
# bag of 100, 0.67 in the 3 bags of 50; medR by 0.5 and 0.17) and bit-reproducible: the floors sit
# below one query, so any moved query fails (expected/smoke.csv says why).
SMOKE_RULE = Rule(k=4.0, floor_recall=0.5, floor_medR=0.1)
# The paper gives no std; expected/paper.csv says where 2 points and 1 rank come from.
PAPER_RULE = Rule(k=4.0, floor_recall=2.0, floor_medR=1.0)


def _finite(x) -> bool:
    try:
        return x is not None and not pd.isna(x) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------ results
def results_file(path: str | os.PathLike) -> Path:
    """``results.csv`` (or ``.parquet``) of a results directory: ``PATH`` itself when it is a file,
    else ``PATH/tables/results.csv`` (``results/``, ``converge/``) or ``PATH/results.csv``."""
    p = Path(path)
    if p.is_file():
        return p
    for cand in (p / "tables" / RESULTS_FILE, p / RESULTS_FILE):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no {RESULTS_FILE} at {p}, {p / 'tables'} or as a file: run "
                            "`malm tables` (`make repro`) first")


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """The tidy results (``malm tables``' results.csv: one row per run x protocol x bag x direction
    x metric) of a results directory or file."""
    f = results_file(path)
    df = pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f)
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{f}: not a results table (no column {', '.join(missing)})")
    dup = df[df.duplicated(["seed"] + KEYS, keep=False)]
    if len(dup):
        r = dup.iloc[0]
        raise ValueError(f"{f}: {len(dup)} rows repeat a run's cell, e.g. {_name(r)} seed {r.seed}")
    return df


def seed_means(results: pd.DataFrame) -> pd.DataFrame:
    """Per ``KEYS``: n_bags, the mean over seeds (``value``), ``n_seeds`` and ``seed_std``."""
    g = results.groupby(KEYS, sort=False)
    out = g["value"].agg(value="mean", n_seeds="count", seed_std="std").reset_index()
    n_bags = g["n_bags"].agg(["min", "max"]).reset_index()
    odd = n_bags[n_bags["min"] != n_bags["max"]]
    if len(odd):
        raise ValueError(f"seeds of {_name(odd.iloc[0])} were evaluated on different n_bags")
    out.insert(3, "n_bags", n_bags["min"].to_numpy())
    return out


def _order(df: pd.DataFrame) -> pd.DataFrame:
    """Sorted by variant (first appearance), protocol, bag, direction, metric (the suite's order)."""
    variants = list(dict.fromkeys(df["variant"]))
    key = {"variant": lambda s: s.map(variants.index),
           "direction": lambda s: s.map(lambda d: DIRECTIONS.index(d) if d in DIRECTIONS else 99),
           "metric": lambda s: s.map(lambda m: METRIC_NAMES.index(m) if m in METRIC_NAMES else 99)}
    return df.sort_values(KEYS, key=lambda s: key.get(s.name, lambda x: x)(s),
                          kind="stable").reset_index(drop=True)


def derive(results: pd.DataFrame, rule: Rule, source: str = "") -> pd.DataFrame:
    """The expected rows (``EXPECTED_COLUMNS``) of complete results: every variant with the same
    seeds, every cell with all of them (else ValueError naming what is missing)."""
    seeds = results.groupby("variant", sort=False)["seed"].agg(lambda s: tuple(sorted(set(s))))
    if seeds.nunique() > 1:
        raise ValueError("variants were run with different seeds: "
                         + "; ".join(f"{v} {list(s)}" for v, s in seeds.items()))
    m = seed_means(results)
    n = len(seeds.iloc[0])
    short = m[m["n_seeds"] < n]
    if len(short):
        raise ValueError(f"incomplete results: {len(short)} cells lack seeds of {list(seeds.iloc[0])}, "
                         f"e.g. {_name(short.iloc[0])} ({short.iloc[0].n_seeds} of {n})")
    pool_keys = ["protocol", "bag_size", "n_bags", "direction", "metric"]
    var = m["seed_std"] ** 2
    m["pooled_std"] = np.sqrt(var.groupby([m[k] for k in pool_keys]).transform("mean"))
    m = m.rename(columns={"value": "expected"})
    m["tolerance"] = [rule.tolerance(r.metric, r.pooled_std, r.n_seeds, r.n_seeds)
                      for r in m.itertuples()]
    m["source"] = source
    return _order(m[EXPECTED_COLUMNS])


def paper_expected(rule: Rule = PAPER_RULE) -> pd.DataFrame:
    """The paper's Tables 1-3 as expected rows: the rows that report a registered variant (aliases
    resolved), T-Food's protocol (``PAPER_N_BAGS``), re-ranked for a variant with a matching module.
    A setting printed in several tables takes the first table's value; ``source`` names the others."""
    from malm.report.paper import paper_table, paper_with_variants
    from malm.report.tables import has_matching

    p = paper_with_variants(paper_table()).dropna(subset=["value"])
    p = p[~p["config"].str.contains(":", regex=False)].sort_values("table", kind="stable")
    rows = []
    for (variant, bag, direction, metric), g in p.groupby(["config", "bag_size", "direction", "metric"],
                                                          sort=False):
        first, others = g.iloc[0], g.iloc[1:]
        source = f"Table {first.table} '{first.method}'" + "".join(
            f"; Table {o.table} '{o.method}' prints {o.value:g}" for o in others.itertuples())
        rows.append({"variant": variant, "bag_size": int(bag), "n_bags": PAPER_N_BAGS[int(bag)],
                     "protocol": (rerank_protocol("tfood", PAPER_RERANK_K) if has_matching(variant)
                                  else "tfood"),
                     "direction": direction, "metric": metric, "expected": float(first.value),
                     "n_seeds": np.nan, "seed_std": np.nan, "pooled_std": np.nan, "source": source})
    out = pd.DataFrame(rows)
    out["tolerance"] = [rule.floor(m) for m in out["metric"]]
    return _order(out[EXPECTED_COLUMNS])


# ------------------------------------------------------------------------------ the file
def write_expected(table: pd.DataFrame, path: str | os.PathLike, rule: Rule,
                   lines: Sequence[str] = ()) -> Path:
    """``lines`` and the rule as ``#`` lines, then the rows (6 decimals)."""
    path = Path(path)
    table = table[EXPECTED_COLUMNS].copy()
    table["n_seeds"] = table["n_seeds"].astype("Int64")
    head = "".join(f"# {line}".rstrip() + "\n" for line in [*lines, *rule.header()])
    atomic_write_text(path, head + table.to_csv(index=False, float_format=f"%.{DECIMALS}f",
                                                lineterminator="\n"))
    return path


def read_expected(path: str | os.PathLike) -> tuple[pd.DataFrame, Rule, list[str]]:
    """(rows, rule, header lines without '# '). Refuses a file whose tolerance column is not its
    rule's (an edited number would otherwise be silently recomputed by the check)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no expected results at {path}: write them from a finished run with "
                                f"`malm check-results RESULTS --write --expected {path}`")
    text = path.read_text()
    lines = text.splitlines()
    n_head = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    header = [line[1:].strip() for line in lines[:n_head]]
    rule = Rule.from_header(header, path)
    table = pd.read_csv(io.StringIO("\n".join(lines[n_head:])), keep_default_na=False,
                        na_values=[""], dtype={"source": str})
    missing = [c for c in EXPECTED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)}")
    table["source"] = table["source"].fillna("")
    dup = table[table.duplicated(KEYS, keep=False)]
    if len(dup):
        raise ValueError(f"{path}: {_name(dup.iloc[0])} is listed {len(dup)} times")
    for r in table.itertuples():
        want = rule.tolerance(r.metric, r.pooled_std, r.n_seeds, r.n_seeds)
        if abs(r.tolerance - want) > 1e-4:  # 6-decimal rounding of pooled_std, x k
            raise ValueError(f"{path}: {_name(r)} has tolerance {r.tolerance:g}, its rule gives "
                             f"{want:g}: change the rule in the header, or write the file again "
                             "(`malm check-results ... --write`)")
    return table, rule, header


def _git_commit(where: Path) -> str:
    """The commit of the repository at ``where``, '+ uncommitted changes' when its tracked files
    differ from it; 'unknown' outside git. Read-only git commands."""
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(where), *a], capture_output=True,  # noqa: E731
                                        text=True, timeout=30)
        head = run("rev-parse", "--short", "HEAD")
        if head.returncode:
            return "unknown"
        dirty = bool(run("--no-optional-locks", "status", "--porcelain", "--untracked-files=no")
                     .stdout.strip())  # --no-optional-locks: never writes the index
        return head.stdout.strip() + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


RULE_TEXT = [
    "The rule (malm/report/expected.py): expected = mean over seeds of each run's value (a run's",
    "value: the mean over its test bags); seed_std = std over the seeds (ddof 1); pooled_std =",
    "sqrt(mean over the variants of seed_std^2) per protocol x bag x direction x metric;",
    "tolerance = max(k * pooled_std * sqrt(1/n_seeds + 1/n_measured), floor), floor = rule.floor_medR",
    "(ranks) for medR, rule.floor_recall (points) for R@k; without a std, the floor alone. The check",
    "(`malm check-results`) recomputes it for the measured number of seeds; a row fails when",
    "|measured seed-mean - expected| > tolerance, either way (WORSE / BETTER), or when the results",
    "lack it (MISSING) or read it on other n_bags; rows the file does not list pass (extra).",
]


DEFAULT_RULE_TEXT = [
    "k = 4: the rows move together (the metrics and directions of one run set, the protocols of one",
    "set of embeddings), perhaps 25 independent groups; with the 10-df t of a std pooled over 5",
    "variants x 3 seeds, P(|t| > 4) = 0.25 % per group, about 6 % that any of 25 fails on noise",
    "alone (k = 3: 1.3 %, about 28 %). Pooled because a 3-seed std alone (2 df) is below half the",
    "true one about 1 time in 5. Floors (0.5 points of R@k, 0.5 rank of medR) guard against a",
    "pooled std small by chance or zero (bit-identical seeds); the README's baseline seeds (tfood 1k",
    "img2rec R@1 21.2, 20.5, 20.2: std 0.51) give 1.7 points, so the floor binds only for rows",
    "whose pooled std is below 0.15 points (0.15 rank). The test bags are fixed (tfood consecutive,",
    "ht random.Random(1234)), so bag sampling cancels in the difference; how a seed reads on those",
    "bags is inside the seed std.",
]


def write_from_results(results: str | os.PathLike, path: str | os.PathLike, rule: Rule,
                       notes: Sequence[str] = ()) -> Path:
    """Derive ``path`` from the results at ``results`` (``derive``), with a header that records
    where they came from."""
    f = results_file(results)
    df = read_results(f)
    seeds = sorted(df["seed"].unique().tolist())
    table = derive(df, rule, source=f"mean of seeds {' '.join(map(str, seeds))}")
    variants = list(dict.fromkeys(table["variant"]))
    lines = [f"Expected results: {len(variants)} variants x {len(seeds)} seed(s) "
             f"(variants {', '.join(variants)}; seeds {', '.join(map(str, seeds))}),",
             f"derived from {f} by `malm check-results --write` on "
             f"{datetime.date.today().isoformat()},",
             f"malm at commit {_git_commit(EXPECTED_DIR.parent)}.", *notes, "", *RULE_TEXT,
             *(DEFAULT_RULE_TEXT if rule == Rule() else
               ["k and the floors differ from the defaults (malm/report/expected.py): see above."])]
    return write_expected(table, path, rule, lines)


PAPER_TEXT = [
    "The MALM paper's numbers (arXiv 2305.11327v1 Tables 1-3, malm/paper/malm_paper_tables.csv) as",
    "expected results for a run on Recipe1M: the rows that report a registered variant (aliases",
    "resolved: 'mask ratio 0.75' is malm, '+LLC+LGC' no_distill), on T-Food's protocol (tfood, 10",
    "bags of 1k, 5 of 10k); a variant with a matching module is read re-ranked (tfood+rerank10),",
    "which is most likely the paper's reading but not stated by it (README \"Which reading are the",
    "paper's numbers?\"); check the dual-encoder reading by hand if yours is that one. A setting",
    "printed in several tables takes the first table's value and names the others in `source`.",
    "Select the variants you ran with --variants (a variant of the file your results lack fails).",
    "",
    "Tolerance: the paper gives no std or number of runs, so nothing is pooled (k is unused) and",
    "every row is held to the floor. Its own numbers give two pairs that could be two runs of one",
    "model: MALM 10k img2rec, Table 1 (45.9/72.3/80.5 R@1/5/10) against Tables 2 and 3",
    "(44.2/71.7/80.1): 1.7/0.6/0.4 points apart (Table 2's row also equals Table 1's rec2img row,",
    "so it may be a copied row rather than another run), and r = 0.90 in an earlier draft",
    "(44.8/71.8/80.0) against the published 43.8/70.1/79.8: 1.0/1.7/0.2 (malm/paper/README.md). The",
    "largest, 1.7 points, rounded up: floor_recall = 2 points of R@k. No two rows of one setting",
    "differ in medR, so nothing to derive there: floor_medR = 1 rank is a chosen default (the",
    "paper's own rows print 1.0 at 1k and 2.0-2.8 at 10k: a rank is the step its numbers resolve).",
    "These are estimates of run-to-run spread from the paper's printed numbers, not measurements.",
]


def existing_rule(path: str | os.PathLike, default: Rule) -> Rule:
    """The rule in the header of the file at ``path`` (kept when it is written again), else
    ``default``."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return default
    head = [line[1:] for line in itertools.takewhile(lambda x: x.startswith("#"), lines)]
    try:
        return Rule.from_header(head, path)
    except ValueError:
        return default


def existing_notes(path: str | os.PathLike) -> list[str]:
    """The ``--note`` lines in the header of the derived file at ``path`` (kept when it is written
    again without new ones); [] when there is none."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    head = [line[2:] if line.startswith("# ") else line[1:]
            for line in itertools.takewhile(lambda x: x.startswith("#"), lines)]
    start = next((i + 1 for i, x in enumerate(head) if x.startswith("malm at commit ")), None)
    end = next((i for i, x in enumerate(head) if x == RULE_TEXT[0]), None)
    if start is None or end is None or end < start:
        return []
    notes = head[start:end]
    while notes and not notes[-1].strip():
        notes.pop()
    return notes


def write_paper(path: str | os.PathLike, rule: Rule = PAPER_RULE) -> Path:
    return write_expected(paper_expected(rule), path, rule,
                          [*PAPER_TEXT, "", *RULE_TEXT])


# ------------------------------------------------------------------------------ the check
def check(expected: pd.DataFrame, results: pd.DataFrame, rule: Rule,
          variants: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per expected row (then the results' extra rows): ``CHECK_COLUMNS``; ``passed`` is
    False for a row beyond its tolerance, missing from the results, or read on other n_bags."""
    if variants:
        unknown = [v for v in variants if v not in set(expected["variant"])]
        if unknown:
            raise ValueError(f"no expected rows for {', '.join(unknown)} (the file lists "
                             f"{', '.join(dict.fromkeys(expected['variant']))})")
        expected = expected[expected["variant"].isin(variants)]
        results = results[results["variant"].isin(variants)]
    got = seed_means(results).rename(columns={"value": "measured", "n_seeds": "n_measured",
                                              "n_bags": "n_bags_measured"})
    m = expected.assign(pos=np.arange(len(expected))).merge(
        got[KEYS + ["n_bags_measured", "measured", "n_measured"]].assign(pos_m=np.arange(len(got))),
        on=KEYS, how="outer", indicator="side")
    m = m.sort_values(["pos", "pos_m"], na_position="last")  # the file's order, then extra rows
    rows = []
    for r in m.itertuples():
        row = {k: getattr(r, k) for k in KEYS}
        row.update(expected=r.expected, measured=r.measured, n_seeds=r.n_measured)
        if r.side == "right_only":
            row.update(n_bags=r.n_bags_measured, diff=np.nan, tolerance=np.nan, status="extra",
                       passed=True)
        elif r.side == "left_only":
            row.update(n_bags=r.n_bags, diff=np.nan, tolerance=np.nan, n_seeds=0,
                       status="MISSING", passed=False)
        else:
            tol = rule.tolerance(r.metric, r.pooled_std, r.n_seeds, r.n_measured)
            diff = r.measured - r.expected
            if int(r.n_bags_measured) != int(r.n_bags):
                status = f"N_BAGS {int(r.n_bags_measured)}"
            elif abs(diff) <= tol + EPS:
                status = "ok"
            else:
                status = "WORSE" if (diff > 0) == (r.metric in LOWER_IS_BETTER) else "BETTER"
            row.update(n_bags=r.n_bags, diff=diff, tolerance=tol, status=status,
                       passed=status == "ok")
        rows.append(row)
    out = pd.DataFrame(rows, columns=CHECK_COLUMNS)
    out["n_seeds"] = out["n_seeds"].astype("Int64")
    out["n_bags"] = out["n_bags"].astype(int)
    return out.reset_index(drop=True)


def _name(r) -> str:
    """'malm tfood 1k x10 img2rec R@1' of a row (a Series or a namedtuple)."""
    d = r.to_dict() if isinstance(r, pd.Series) else r._asdict()
    bags = f" x{int(d['n_bags'])}" if _finite(d.get("n_bags")) else ""
    return (f"{d['variant']} {d['protocol']} {bag_label(int(d['bag_size']))}{bags} {d['direction']} "
            f"{d['metric']}")


def _num(x, signed: bool = False) -> str:
    return "" if not _finite(x) else (f"{round(x, 2) + 0.0:+.2f}" if signed else f"{x:.2f}")


def format_check(result: pd.DataFrame, only_failures: bool = False) -> str:
    """The table (variant, protocol, bag, direction, metric, expected, measured, diff, tolerance,
    seeds, status), the failing rows by name and a one-line verdict."""
    from tabulate import tabulate

    shown = result[~result["passed"]] if only_failures else result
    table = [[r.variant, r.protocol, f"{bag_label(int(r.bag_size))} x{r.n_bags}", r.direction, r.metric,
              _num(r.expected), _num(r.measured), _num(r.diff, signed=True), _num(r.tolerance),
              "" if pd.isna(r.n_seeds) else int(r.n_seeds), r.status] for r in shown.itertuples()]
    text = tabulate(table, headers=["variant", "protocol", "bag", "direction", "metric", "expected",
                                    "measured", "diff", "tol", "seeds", "status"],
                    tablefmt="simple", disable_numparse=True,
                    colalign=["left"] * 5 + ["right"] * 6) if table else ""
    failed = result[~result["passed"]]
    lines = [text] if text else []
    for r in failed.itertuples():
        if r.status == "MISSING":
            lines.append(f"FAIL {_name(r)}: expected {r.expected:.2f}, not in the results")
        elif r.status.startswith("N_BAGS"):
            lines.append(f"FAIL {_name(r)}: read on {r.status.split()[1]} bags, expected on {r.n_bags}")
        else:
            lines.append(f"FAIL {_name(r)}: measured {r.measured:.2f}, expected {r.expected:.2f} "
                         f"+- {r.tolerance:.2f} ({r.diff:+.2f}, {r.status.lower()})")
    counts = result["status"].str.split().str[0].value_counts()
    n_exp = int((result["status"] != "extra").sum())
    parts = [f"{int(counts.get(s, 0))} {s.lower()}" for s in ("WORSE", "BETTER", "MISSING", "N_BAGS")]
    lines.append(f"check-results: {int(counts.get('ok', 0))} of {n_exp} expected rows within "
                 f"tolerance; {', '.join(parts).replace('n_bags', 'on other n_bags')}; "
                 f"{int(counts.get('extra', 0))} extra rows (not checked) -> "
                 + ("PASS" if result["passed"].all() else "FAIL"))
    return "\n".join(lines)


def check_path(results: str | os.PathLike, expected: str | os.PathLike,
               variants: Sequence[str] | None = None) -> pd.DataFrame:
    """``check`` of the results at ``results`` against the file ``expected``."""
    table, rule, _ = read_expected(expected)
    return check(table, read_results(results), rule, variants)
