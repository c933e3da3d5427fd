"""The validation sweep that chooses the CPU default's loss balance, image view, freezing and
distillation schedules (issue "The ablation tables must measure the method, not the defaults").

The rule (one pass of coordinate search, the same for every variant, validation data only):

1. Start from the base point (``BASE``: the balanced probe of the issue).
2. Vary one knob at a time over its grid, the other knobs at their current choice, and train seed 0
   of every variant the knob applies to (``KNOBS``: the shared knobs for all variants that read
   them, the matching and distillation knobs for the variants that have them, and the Table 1
   peers' own loss weights -- T-Food's L_itm, H-T's recipe loss -- for the peer that has the term,
   starting from its published value).
3. Score a setting by the mean over those variants of the best-epoch validation img2rec R@1 (1k bag,
   the checkpoint the pipeline evaluates). Keep the best setting; a setting within 0.5 points of
   the best (a third of the seed-to-seed spread) loses to the earlier grid entry, which is the
   simpler or cheaper one. Knobs are visited in the order of ``KNOBS``.
4. A numeric knob whose best setting is an end of its grid gets its grid extended one step beyond
   that end (``EXTEND``; the same ratio as the last step), until the best setting is inside.

The test split is never read. Each cell is a ``malm train`` run (the pipeline's command) into
``--out/<cell>``; re-running skips finished cells. A cell's knob values are a config file layered
under the variant (``--config params.yaml --config <cell>/knobs.yaml``, as params.yaml itself), so
a variant that switches a term off keeps it off: the baseline trains without the matching terms
whatever the matching knob's value. The CSV records each run's resolved weights and mask ratio. Writes ``--out/sweep.csv`` (one row per cell) and
``--out/choices.json``.

    python benchmarks/sweep_defaults.py --out sweeps/defaults
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]

# the base point: the balanced probe (matching terms at 0.1, L_itc on the full image)
BASE = {"loss.lambda_gc": 0.1, "loss.lambda_lc": 0.1, "loss.itc_view": "full",
        "train.freeze_image_epochs": 2, "model.distill.momentum": 0.999}
MATCHING = ["global_only", "malm"]  # the two ends of the matching family
# knob: (override keys (set together), grid, variants scored)
KNOBS = [
    ("matching_scale", ("loss.lambda_gc", "loss.lambda_lc"), [0.1, 0.03, 0.3], MATCHING),
    ("itc_view", ("loss.itc_view",), ["full", "masked"], ["no_distill", "malm"]),
    ("freeze_image_epochs", ("train.freeze_image_epochs",), [2, 1],
     ["baseline", "global_only", "no_mask", "no_distill", "malm"]),
    ("distill_momentum", ("model.distill.momentum",), [0.999, 0.99, 0.9], ["malm"]),
    # the Table 1 peers' own loss weights, each for the one variant that has the term; set per
    # variant (a knob file's variant_overrides, applied after the variant's overlay, which switches
    # the term on), starting from the peer's published value (a tie goes to it)
    ("itm_scale", ("variant_overrides.tfood.loss.lambda_itm",), [1.0, 0.3, 0.1], ["tfood"]),
    ("recipe_scale", ("variant_overrides.ht.loss.lambda_recipe",), [1.0, 0.3, 0.1], ["ht"]),
]
TIE = 0.5
EXTEND = ("matching_scale", "itm_scale", "recipe_scale")  # numeric grids (ratio steps) that step 4 may extend


def cell_name(variant: str, point: dict) -> str:
    short = {"loss.lambda_gc": "lm", "loss.itc_view": "view", "train.freeze_image_epochs": "frz",
             "model.distill.momentum": "mom"}
    # knobs visited after the first four: named only once the point holds them, so that the cells
    # swept before these knobs existed keep their names (and are not trained again)
    later = {"variant_overrides.tfood.loss.lambda_itm": "itm",
             "variant_overrides.ht.loss.lambda_recipe": "rcp"}
    return variant + "_" + "_".join([f"{v}{point[k]}" for k, v in short.items()]
                                    + [f"{v}{point[k]}" for k, v in later.items() if k in point])


def run_cell(out: Path, variant: str, point: dict, seed: int, config: list[str],
             threads: int = 0) -> dict:
    run_dir = out / cell_name(variant, point)
    metrics = run_dir / "metrics.json"
    if not metrics.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        knobs: dict = {}
        for key, value in point.items():  # dotted keys -> a nested config file
            node = knobs
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        (run_dir / "knobs.yaml").write_text(yaml.safe_dump(knobs, sort_keys=False))
        files = [*config, str(run_dir / "knobs.yaml")]
        args = [sys.executable, "-m", "malm.cli", "train", *sum((["--config", c] for c in files), []),
                "--variant", variant, "--seed", str(seed), "--run-dir", str(run_dir),
                "--restart-on-config-change", *([f"train.threads={threads}"] if threads else [])]
        t0 = time.time()
        print(f"[sweep] {run_dir.name} ...", flush=True)
        p = subprocess.run(args, cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": "0", "OMP_WAIT_POLICY": "PASSIVE"})
        if p.returncode:
            raise RuntimeError(f"{run_dir}: malm train failed\n{p.stderr[-3000:]}")
        print(f"[sweep] {run_dir.name} done in {time.time() - t0:.0f} s", flush=True)
    m = json.loads(metrics.read_text())
    hist = json.loads((run_dir / "history.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    resolved = {f"run.lambda_{t}": cfg["loss"].get(f"lambda_{t}", 0.0)
                for t in ("gc", "lc", "dist", "itm", "recipe")}
    resolved["run.mask_ratio"] = cfg["model"]["mask"]["ratio"]
    return {"cell": run_dir.name, "variant": variant, "seed": seed, **point, **resolved,
            "val_R1_best": m.get("best/val/img2rec_R@1", m["val/img2rec_R@1"]),
            "val_R1_last": m["val/img2rec_R@1"], "best_epoch": m.get("best/epoch"),
            "curve": " / ".join(f"{r['val/img2rec_R@1']:.1f}" for r in hist), "wall_s": m["wall_s"]}


def choose(scores: list):
    """Step 3: the best-scoring value; one within TIE of the best loses to an earlier one."""
    best = max(s for _, s in scores)
    return next(v for v, s in scores if s >= best - TIE)


def _extension(knob: str, scores: list):
    """Step 4: the next value beyond the end of the tried grid that holds the best score so far, or
    None when the best is inside (or the knob is not extended). scores: [(value, score)]"""
    if knob not in EXTEND or len(scores) < 2:
        return None
    tried = sorted(v for v, _ in scores)
    best = choose(scores)
    if best == tried[0]:
        return round(tried[0] * tried[0] / tried[1], 6)
    if best == tried[-1]:
        return round(tried[-1] * tried[-1] / tried[-2], 6)
    return None


def summary_markdown(rows: pd.DataFrame, choices: dict) -> str:
    """One row per knob x value: each variant's best-epoch val R@1, their mean, and the choice."""
    lines = ["| knob | value | " + " | ".join(["variants: val R@1 (seed 0)", "mean", "chosen"]) + " |",
             "|---|---|---|---|---|"]
    for knob, _, _, _ in KNOBS:
        sel = rows[rows["knob"] == knob]
        for value, g in sel.groupby("value", sort=False):
            cells = ", ".join(f"{v} {r:.1f}" for v, r in zip(g["variant"], g["val_R1_best"]))
            chosen = "**yes**" if str(choices.get(knob, {}).get("chosen")) == str(value) else ""
            lines.append(f"| {knob} | {value} | {cells} | {g['val_R1_best'].mean():.2f} | {chosen} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="sweeps/defaults", help="Folder of the sweep's runs and tables.")
    ap.add_argument("--config", action="append", default=None,
                    help="Config files (default: params.yaml).")
    ap.add_argument("--seed", type=int, default=0, help="Training seed of every cell.")
    ap.add_argument("--jobs", type=int, default=1,
                    help="Cells trained at once (each with train.threads = cores // jobs).")
    ap.add_argument("--threads", type=int, default=0,
                    help="train.threads of every cell (default: cores // jobs with --jobs > 1, else "
                         "the config's); a runtime key, it does not change what a cell computes.")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = args.config or ["params.yaml"]
    point, rows, choices = dict(BASE), [], {}
    for knob, keys, grid, variants in KNOBS:
        scores: list = []
        threads = args.threads or (max(1, (os.cpu_count() or 2) // args.jobs) if args.jobs > 1 else 0)

        def run_values(values: list) -> None:  # every cell of these values, --jobs at a time
            cells = [(v, var) for v in values for var in variants]
            with ThreadPoolExecutor(args.jobs) as pool:
                done = list(pool.map(lambda c: run_cell(out, c[1], {**point, **{k: c[0] for k in keys}},
                                                        args.seed, config, threads), cells))
            for v in values:
                cell_rows = [r for (cv, _), r in zip(cells, done) if cv == v]
                rows.extend({"knob": knob, "value": v, **r} for r in cell_rows)
                scores.append((v, sum(r["val_R1_best"] for r in cell_rows) / len(cell_rows)))
            pd.DataFrame(rows).to_csv(out / "sweep.csv", index=False)

        run_values(list(grid))
        while (value := _extension(knob, scores)) is not None:
            run_values([value])
        chosen = choose(scores)
        choices[knob] = {"chosen": chosen, "scores": dict(scores), "variants": variants}
        point.update({k: chosen for k in keys})
        print(f"[sweep] {knob}: " + ", ".join(f"{v} -> {s:.2f}" for v, s in scores)
              + f"; chosen {chosen}", flush=True)
        (out / "choices.json").write_text(json.dumps({"point": point, "knobs": choices}, indent=1))
    (out / "sweep.md").write_text(summary_markdown(pd.DataFrame(rows), choices))
    print(json.dumps(point))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
