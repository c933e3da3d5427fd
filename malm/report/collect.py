"""Our results as tidy tables: ``malm evaluate``'s metrics JSON files -> one row per (run,
protocol, bag, direction, metric), and the same tables read back for the notebooks.

Tidy columns (``results.csv``, ``COLUMNS``): variant, display, seed, protocol, bag_size, n_bags,
direction, metric, value, std, dataset, source. ``value``/``std`` are the mean/std over the bags of
one run. ``per_bag.csv`` (``BAG_COLUMNS``) holds the value of every test bag of every run (the
``per_bag`` lists of ``malm evaluate``). Ours are ``source = "ours (<dataset>)"``; the paper's
numbers (:mod:`malm.report.paper`) are ``source = "paper"``.

Reading back: ``load_ours`` reads one or more ``results.csv`` (DVC pipeline, Slurm grids) and tags
each row with its ``origin``, ``load_bags`` the ``per_bag.csv`` beside each; ``pick`` / ``dedupe``
choose one (origin, variant) run set per row, aliases as fallback.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from malm import variants as variants_mod
from malm.eval import names

DIRECTIONS = list(names.DIRECTIONS)
METRICS = list(names.METRIC_NAMES)
COLUMNS = ["variant", "display", "seed", "protocol", "bag_size", "n_bags", "direction", "metric",
           "value", "std", "dataset", "source"]
BAG_COLUMNS = ["variant", "display", "seed", "protocol", "bag_size", "n_bags", "direction", "metric",
               "bag", "value", "dataset", "source"]
BAGS_FILE = "per_bag.csv"  # written beside results.csv
# one (run set, metric) = one [seeds, bags] array; its rows are matched on these columns
RUN_KEYS = ["variant", "protocol", "bag_size", "n_bags"]

GROUNDING_FILE = "grounding.json"
# the x axis of the learning curves: training samples seen up to the end of an epoch (per run)
SAMPLES_SEEN = "train/samples_seen"
PathsLike = Mapping[str, "str | os.PathLike"] | Sequence["str | os.PathLike"]


def display_name(variant: str) -> str:
    """The name tables print for ``variant``; a variant no longer registered keeps its name."""
    try:
        return variants_mod.get(variant).display
    except Exception:
        return variant


# ------------------------------------------------------------------------ metrics JSON -> rows
def rows_from_metrics(result: dict, variant: str, seed: int, dataset: str = "synthetic") -> list[dict]:
    """Tidy rows from one ``malm evaluate`` result."""
    display = display_name(variant)
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
    display = display_name(variant)
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


def collect_grounding(grounding_dir: str | os.PathLike) -> pd.DataFrame:
    """<grounding_dir>/<variant>/seed<k>/grounding.json (``malm grounding``) -> one row per run:
    variant, display, seed, split, rule, n_pairs, n_targets, accuracy, chance, lift, mass_in_box,
    ci_low/ci_high (95 % bootstrap over the run's test pairs). Variants without a matching module
    (their JSON says has_matching: false) and runs on data without boxes (has_truth: false) have
    no row."""
    rows = []
    for path in sorted(Path(grounding_dir).glob(f"*/seed*/{GROUNDING_FILE}")):
        try:
            r = json.loads(path.read_text())
            if not r.get("has_matching") or r.get("has_truth") is False:
                continue  # a note: no matching module, or no boxes (real Recipe1M)
            lo, hi = r["accuracy_ci95"]
            variant = path.parent.parent.name
            rows.append({"variant": variant, "display": display_name(variant),
                         "seed": int(path.parent.name.removeprefix("seed")), "split": r["split"],
                         "rule": r["rule"], "n_pairs": r["n_pairs"], "n_targets": r["n_targets"],
                         "accuracy": r["accuracy"], "chance": r["chance"], "lift": r["lift"],
                         "mass_in_box": r["mass_in_box"], "ci_low": lo, "ci_high": hi})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a `malm grounding` result ({exc!r})") from exc
    return pd.DataFrame(rows)


def best_epoch(hist: pd.DataFrame) -> int | None:
    """The best epoch of one run's history by the trainer's rule (T-Food's saving criteria,
    ``malm.train.checkpoint.is_better``: lowest val img2rec medR, then highest R@1, the first such
    epoch): the epoch of its ``checkpoint_best.pt``. None without those columns. Kept here rather
    than imported so that the report reads no training code (README "The pipeline (DVC)")."""
    cols = ["val/img2rec_medR", "val/img2rec_R@1"]
    if not len(hist) or any(c not in hist or hist[c].isna().all() for c in cols):
        return None
    d = hist.dropna(subset=cols).sort_values("epoch")
    d = d.sort_values(cols, ascending=[True, False], kind="stable")  # ties keep the earliest epoch
    return int(d["epoch"].iloc[0])


def load_histories(runs_dir: str | os.PathLike) -> pd.DataFrame:
    """Per-epoch training history of every run (``runs/<variant>/seed<k>/history.json``), with
    per run: ``train/samples_seen`` (cumulative ``train/samples``, where the history has them),
    ``best_epoch`` (``best_epoch``) and ``stopped_early`` (from the run's ``metrics.json``; False
    while it has none, i.e. before the run finished)."""
    frames = []
    for path in sorted(Path(runs_dir).glob("*/seed*/history.json")):
        hist = pd.DataFrame(json.loads(path.read_text()))
        if not len(hist):
            continue
        variant = path.parent.parent.name
        hist["display"] = display_name(variant)
        hist["variant"], hist["seed"] = variant, int(path.parent.name[4:])
        hist = hist.sort_values("epoch", ignore_index=True)
        if "train/samples" in hist:
            hist[SAMPLES_SEEN] = hist["train/samples"].cumsum()
        hist["best_epoch"] = best_epoch(hist)
        metrics = path.with_name("metrics.json")
        try:
            stopped = bool(json.loads(metrics.read_text()).get("stopped_early", False))
        except (OSError, json.JSONDecodeError):
            stopped = False
        hist["stopped_early"] = stopped
        frames.append(hist)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------------------------------------- reading back
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
    """Tidy results (``COLUMNS``) of every existing file, plus ``origin`` = the file's
    label (the mapping key, or the path). Files that do not exist are skipped (see ``inventory``)."""
    return _read_many(paths, COLUMNS)


def load_bags(paths: PathsLike) -> pd.DataFrame:
    """The per-bag values (``BAG_COLUMNS``, file ``per_bag.csv``) beside each of the
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


# ---------------------------------------------------------------------------------- selection
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



def bags_for(bags: pd.DataFrame | None, rows: pd.DataFrame) -> pd.DataFrame | None:
    """The per-bag rows of the picked (origin, variant) run sets in ``rows``."""
    if bags is None or not len(bags) or not len(rows):
        return None
    keys = rows[["origin", "variant"]].drop_duplicates()
    return bags.merge(keys, on=["origin", "variant"], how="inner")

