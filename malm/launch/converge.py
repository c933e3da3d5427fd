"""The converge profile (``malm converge``, ``make converge``): every variant x seed trained long
enough for its validation score to flatten (configs/converge.yaml: a fixed length, or early stopping
with ``train.patience``), then embedded, evaluated and tabulated into a folder of its
own, so the tables and learning curves tell "learns slower" from "reaches less".

Per run, the same stage functions as the DVC pipeline's commands (``malm train`` ->
``malm embed --checkpoint best`` -> ``malm evaluate --out-dir``; :func:`malm.launch.stage.run_stage`,
inline or as Slurm jobs by ``slurm.executor``), then ``malm tables`` (:func:`build_tables`)::

    <out>/runs/<variant>/seed<k>/                   the training run (checkpoint_best.pt, ...)
    <out>/embeddings/<variant>/seed<k>/<split>.npz  the best checkpoint's embeddings of eval.split
    <out>/metrics/<variant>/seed<k>/*.json          every protocol x bag of the eval section
    <out>/tables/, figures/, summary.json           as results/ (learning_curves.png among them)
    <out>/converge.json, converge.md                per run: wall time, epochs run, early stop,
                                                    best epoch; the invocation's total wall time

With ``pipeline.workers`` > 1 (params.yaml: 2) the runs still to train are trained first,
that many side by side (:func:`malm.launch.pool.train_runs`, as the pipeline's train stage does),
then embedded and evaluated one after another.

Resumable: a run whose ``metrics.json`` exists and whose stored config equals the one it resolves
to now (and whose checkpoint's inputs and code are today's) is finished and not trained again; an
unfinished one resumes from its last checkpoint; one trained under another config, on other inputs
or by other code is refused (naming what differs) rather than overwritten. Embedding and
evaluation are redone only when a run's metrics are missing or older than its best checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from malm import config as C
from malm import variants as variants_mod
from malm.eval.names import bag_label
from malm.io import BEST_CHECKPOINT, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
DEFAULT_CONFIGS = ("params.yaml", "configs/converge.yaml")
SUMMARY = "converge.json"


@dataclass
class Run:
    """One variant x seed of the profile and where its outputs go."""

    variant: str
    seed: int
    cfg: C.Config
    out: Path
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / self.variant / f"seed{self.seed}"

    @property
    def emb(self) -> Path:
        split = self.cfg.eval.split
        return self.out / "embeddings" / self.variant / f"seed{self.seed}" / f"{split}.npz"

    @property
    def metrics_dir(self) -> Path:
        return self.out / "metrics" / self.variant / f"seed{self.seed}"

    def metric_files(self) -> list[Path]:
        return [self.metrics_dir / f"{p}_{bag_label(b)}.json" for p in self.cfg.eval.protocols
                for b, _ in self.cfg.eval.bags]

    def changed_keys(self) -> list[str] | None:
        """Keys where the run's stored config differs from the one it resolves to now (runtime keys
        aside); with the same config, the inputs and code that changed since its last checkpoint
        (``input <name>``, ``code malm/<file>``); None when it never started."""
        from malm.launch.grid import config_diff
        from malm.train.checkpoint import run_changes

        stored = self.run_dir / "config.yaml"
        if not stored.exists():
            return None
        return (config_diff(C.identity(C.load(stored)), C.identity(self.cfg))
                or run_changes(self.cfg, self.run_dir))

    def refuse_changed(self) -> None:
        """A ConfigError naming what differs when the run was made under another config, on other
        inputs or by other code: the profile never overwrites a run."""
        changed = self.changed_keys()
        if changed:
            raise C.ConfigError(f"{self.run_dir} was trained under another config, other inputs or "
                                f"other code (differs in {', '.join(changed)}); give another --out "
                                "or move that run aside")

    def trained(self) -> bool:
        """Finished training (metrics.json is written once, when the last epoch or the early stop
        is checkpointed) under the config it resolves to now."""
        return (self.run_dir / "metrics.json").exists() and self.changed_keys() == []

    def evaluated(self) -> bool:
        """Every metrics file exists and is newer than the run's best checkpoint."""
        best = self.run_dir / BEST_CHECKPOINT
        files = self.metric_files()
        if not best.exists() or not all(f.exists() for f in files):
            return False
        return min(f.stat().st_mtime_ns for f in files) >= best.stat().st_mtime_ns


def profile_settings(config_files: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The typed ``pipeline`` (variants, seeds) and ``converge`` (out) sections of the config files,
    the last file that sets a key winning (as for every section); an unset list is None."""
    cfg = C.from_files(config_files)
    return {"variants": list(cfg.pipeline.variants) or None, "seeds": list(cfg.pipeline.seeds) or None,
            "out": cfg.converge.out}


def plan(config_files: Sequence[str | os.PathLike] = DEFAULT_CONFIGS,
         variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
         out: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> list[Run]:
    """The runs of the profile: ``variants`` x ``seeds`` (default: ``pipeline`` of the config
    files), each resolved as ``malm train --config ... --variant V --seed S KEY=VALUE...`` does."""
    settings = profile_settings(config_files)
    variants = list(variants or settings["variants"] or [])
    seeds = [int(s) for s in (seeds if seeds is not None else settings["seeds"] or [])]
    if not variants or not seeds:
        raise C.ConfigError("no variants or seeds: give --variants/--seeds, or config files with a "
                            "`pipeline` section (params.yaml)")
    unknown = [v for v in variants if v not in variants_mod.registry()]
    if unknown:
        raise C.ConfigError(f"unknown variant(s) {unknown} (`malm variants` lists them)")
    out = Path(out or settings["out"] or C.ConvergeConfig().out)
    cli = C.parse_overrides(list(overrides))
    runs = []
    for v in variants:
        for s in seeds:
            cfg = variants_mod.resolve_from_files(v, list(config_files), cli,
                                                  {"train": {"seed": s}})
            runs.append(Run(v, s, cfg, out))
    return runs


def check_inputs(cfg: C.Config) -> None:
    """Fail before the first run, not inside it, when the data or the stand-in's weights that the
    pipeline's `prepare` / `pretrain` stages make are not there yet."""
    first = "run `make converge` (its set-up runs `dvc repro prepare pretrain`) or those stages first"
    if not (Path(cfg.data.root) / "layer1.json").is_file():
        raise C.ConfigError(f"data.root={cfg.data.root} holds no dataset (layer1.json): {first}")
    spec = cfg.model.image.pretrained
    if spec and (spec.endswith((".pt", ".pth", ".bin", ".safetensors")) or os.sep in spec) \
            and not Path(spec).expanduser().is_file():
        raise C.ConfigError(f"model.image.pretrained={spec}: no such file: {first}")


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _run_one(run: Run, executor: str | None, progress: bool) -> dict[str, Any]:
    from malm.launch.stage import run_stage

    t0 = time.perf_counter()
    steps = []
    run.refuse_changed()
    if run.trained():
        steps.append("trained before")
    else:
        result = run_stage("train", run.cfg, executor, run_dir=str(run.run_dir), progress=progress)
        if not (run.run_dir / "metrics.json").exists() and isinstance(result, dict) and result:
            # a run killed after its last checkpoint, before metrics.json: the trainer returns the
            # checkpointed metrics without writing them again
            atomic_write_json(run.run_dir / "metrics.json", result)
        steps.append("trained")
    if run.evaluated():
        steps.append("evaluated before")
    else:  # `malm assess` without grounding: embed with the best checkpoint, evaluate, re-rank
        run_stage("assess", run.cfg, executor, run_dir=str(run.run_dir), emb_out=str(run.emb),
                  metrics_dir=str(run.metrics_dir), checkpoint="best", progress=progress)
        steps.append("embedded + evaluated")
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    return {"variant": run.variant, "seed": run.seed, "run_dir": str(run.run_dir),
            "steps": steps, "wall_s": round(time.perf_counter() - t0, 1),
            "train_wall_s": round(float(metrics.get("wall_s", float("nan"))), 1),
            "epochs_run": metrics.get("epochs_run", metrics.get("epochs")),
            "max_epochs": metrics.get("epochs"), "stopped_early": metrics.get("stopped_early", False),
            "best_epoch": metrics.get("best/epoch"),
            "best_val_img2rec_R@1": metrics.get("best/val/img2rec_R@1"),
            "best_val_img2rec_medR": metrics.get("best/val/img2rec_medR")}


RISING_WINDOW = 3


def still_rising(record: dict[str, Any]) -> bool:
    """A run that ended without an early stop and whose best validation epoch is one of its last
    :data:`RISING_WINDOW`: its curve may not have flattened yet."""
    best, ran = record.get("best_epoch"), record.get("epochs_run")
    if best is None or ran is None or record.get("stopped_early"):
        return False
    return int(best) > int(ran) - RISING_WINDOW


def _markdown(summary: dict[str, Any]) -> str:
    rows = ["| run | this invocation | training (all starts) | epochs run / max | stopped early | "
            "best epoch | best val img2rec R@1 | steps |", "|---|---|---|---|---|---|---|---|"]
    rising = []
    for r in summary["runs"]:
        r1 = r["best_val_img2rec_R@1"]
        rows.append(f"| {r['variant']}/seed{r['seed']} | {_fmt_s(r['wall_s'])} | "
                    f"{_fmt_s(r['train_wall_s'])} | {r['epochs_run']} / {r['max_epochs']} | "
                    f"{'yes' if r['stopped_early'] else 'no'} | {r['best_epoch']} | "
                    f"{'—' if r1 is None else f'{r1:.2f}'} | {', '.join(r['steps'])} |")
        if still_rising(r):
            rising.append(f"{r['variant']}/seed{r['seed']}")
    note = ("" if not rising else
            f"\n**Best epoch in the last {RISING_WINDOW} epochs run, without an early stop (may still "
            f"be rising; raise train.epochs): {', '.join(rising)}.**\n")
    return (f"# The converge profile: wall time\n\n"
            f"`{summary['command']}` on {summary['machine']}, {summary['started']} to "
            f"{summary['ended']}.\n\n"
            f"**Total wall time of this invocation: {_fmt_s(summary['total_wall_s'])}** "
            f"({summary['total_wall_s']:.0f} s; runs {_fmt_s(summary['runs_wall_s'])}, tables "
            f"{_fmt_s(summary['tables_wall_s'])}). Training time summed over the runs, every start "
            f"of each included: {_fmt_s(summary['train_wall_s_sum'])}.\n\n" + "\n".join(rows) + "\n"
            + note)


def run_converge(config_files: Sequence[str | os.PathLike] = DEFAULT_CONFIGS,
                 variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                 out: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                 executor: str | None = None, dataset: str = "synthetic", tables: bool = True,
                 progress: bool = True, echo=print) -> dict[str, Any]:
    """Train, embed and evaluate every run of :func:`plan` (skipping what is done), then build the
    tables and figures into ``<out>``; writes and returns the summary (``<out>/converge.json``)."""
    runs = plan(config_files, variants, seeds, out, overrides)
    out = runs[0].out
    cfg0 = runs[0].cfg
    check_inputs(cfg0)
    out.mkdir(parents=True, exist_ok=True)
    echo(f"converge: {len(runs)} run(s) ({', '.join(dict.fromkeys(r.variant for r in runs))} x "
         f"seeds {', '.join(str(s) for s in dict.fromkeys(r.seed for r in runs))}) into {out}/; "
         f"at most {cfg0.train.epochs} epochs, patience {cfg0.train.patience}")
    started, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    trained_now: set[str] = set()
    todo = [r for r in runs if not r.trained()]
    if cfg0.pipeline.workers > 1 and len(todo) > 1:
        # pipeline.workers runs side by side (malm train-runs), then evaluated one after another
        from malm.launch.pool import train_runs

        for run in todo:
            run.refuse_changed()
        keys = [r.key for r in todo]
        train_runs(config_files, variants=list(dict.fromkeys(r.variant for r in runs)),
                   seeds=list(dict.fromkeys(r.seed for r in runs)), runs_dir=out / "runs",
                   overrides=overrides, executor=executor, only=keys, progress=progress, echo=echo)
        trained_now = set(keys)
    records = []
    for i, run in enumerate(runs, 1):
        echo(f"[{i}/{len(runs)}] {run.key}: starting")
        rec = _run_one(run, executor, progress)
        if run.key in trained_now:
            rec["steps"] = ["trained"] + rec["steps"][1:]
        records.append(rec)
        how = (f"stopped early after epoch {rec['epochs_run']}/{rec['max_epochs']}"
               if rec["stopped_early"] else f"{rec['epochs_run']}/{rec['max_epochs']} epochs")
        r1 = rec["best_val_img2rec_R@1"]
        echo(f"[{i}/{len(runs)}] {run.key}: {', '.join(rec['steps'])}; {how}, best epoch "
             f"{rec['best_epoch']} (val img2rec R@1 {'—' if r1 is None else f'{r1:.2f}'}); "
             f"wall {_fmt_s(rec['wall_s'])} (training, every start: {_fmt_s(rec['train_wall_s'])})")
    runs_wall = time.perf_counter() - t0
    written: dict[str, str] = {}
    t1 = time.perf_counter()
    if tables:
        from malm.report.write import build_tables

        order = list(dict.fromkeys(r.variant for r in runs))
        written = {k: str(v) for k, v in build_tables(
            out / "metrics", out / "tables", out / "figures", out / "summary.json",
            runs_dir=out / "runs", dataset=dataset, order=order).items()}
        echo(f"tables: {out / 'tables'}/, figures: {out / 'figures'}/ "
             f"({_fmt_s(time.perf_counter() - t1)})")
    tables_wall = time.perf_counter() - t1
    total = time.perf_counter() - t0
    names = ",".join(dict.fromkeys(r.variant for r in runs))
    seed_list = ",".join(str(s) for s in dict.fromkeys(r.seed for r in runs))
    summary = {
        "command": " ".join(["malm converge", *[f"--config {c}" for c in config_files],
                             f"--variants {names}", f"--seeds {seed_list}", f"--out {out}",
                             *overrides]),
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, "
                   f"{os.cpu_count()} CPUs)",
        "started": started, "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "max_epochs": cfg0.train.epochs, "patience": cfg0.train.patience,
        "total_wall_s": round(total, 1), "runs_wall_s": round(runs_wall, 1),
        "tables_wall_s": round(tables_wall, 1),
        "train_wall_s_sum": round(sum(r["train_wall_s"] for r in records), 1),
        "runs": records, "written": written}
    atomic_write_json(out / SUMMARY, summary)
    atomic_write_text(out / "converge.md", _markdown(summary))
    total = summary["total_wall_s"]
    echo(f"converge: total wall time {_fmt_s(total)} ({total:.0f} s); summary in {out / SUMMARY} "
         f"and {out / 'converge.md'}")
    return summary
