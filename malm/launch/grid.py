"""Ablation grids (variants x seeds x overrides) as one Slurm job array.

A grid file (``ablations/grids/*.yaml``)::

    name: table3
    variants: [mask_0.25, mask_0.5, malm, mask_0.9]
    seeds: [0, 1, 2]
    config: [params.yaml]          # base config files, as `malm train --config`
    overrides: {train: {epochs: 8}}  # applied to every cell

Each cell trains, embeds the test split and evaluates every protocol x bag of the ``eval`` section
(and, for variants with a matching module, the re-ranked ``<protocol>+rerank<k>`` of
``eval.rerank_protocols`` x ``eval.rerank_bags``, as the pipeline), under ``<out>/runs/<variant>/seed<k>`` and ``<out>/metrics/<variant>/seed<k>`` - the same layout
as the DVC pipeline, so ``malm grid collect`` builds the same tables.

Cells are keyed by their resolved config: a cell is FINISHED when its metrics exist *and* the config
its run was trained with (``<run_dir>/config.yaml``, runtime keys aside) equals the one it would run
now, *and* its checkpoint's inputs and code are today's (the check a resumed run makes: the data
cache's key, the pretrained weights, every ``malm`` file the run imported). A cell whose run was
made under another config (the grid's overrides, a base config file or a variant changed), on other
inputs or by other code is CHANGED: ``grid submit`` refuses it, naming the keys that differ, unless
``--rerun-changed`` moves its old run and metrics aside (``<dir>.stale-<UTC time>``, nothing is
deleted) and trains it again. Re-submitting skips finished cells and cells whose job is still
queued or running.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from malm import config as C
from malm import variants
from malm.eval.names import bag_label
from malm.io import atomic_write_json
from malm.launch.stage import StageJob, _run_inline

log = logging.getLogger(__name__)
JOBS = "jobs.json"
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                 "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "READY"}


@dataclass(frozen=True)
class Cell:
    variant: str
    seed: int
    run_dir: str
    metrics_dir: str

    @property
    def key(self) -> str:
        return f"{self.variant}/seed{self.seed}"

    def has_metrics(self, eval_cfg: C.EvalConfig) -> bool:
        d = Path(self.metrics_dir)
        return all((d / f"{p}_{bag_label(b)}.json").exists() for p in eval_cfg.protocols for b, _ in eval_cfg.bags)

    def changed_keys(self, cfg: C.Config) -> list[str] | None:
        """Dotted keys where the config the run was trained with differs from ``cfg`` (runtime keys
        aside); with the same config, the inputs and code that changed since its last checkpoint
        (``input <name>``, ``code malm/<file>``: :func:`malm.train.checkpoint.run_changes`); None
        when the run has no stored config yet (never started)."""
        stored = Path(self.run_dir) / "config.yaml"
        if not stored.exists():
            return None
        from malm.train.checkpoint import run_changes

        return (config_diff(C.identity(C.load(stored)), C.identity(cfg))
                or run_changes(cfg, self.run_dir))

    def finished(self, cfg: C.Config) -> bool:
        return self.has_metrics(cfg.eval) and self.changed_keys(cfg) == []


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Sorted dotted keys whose values differ between two nested dicts."""
    keys = []
    for k in sorted(set(a) | set(b), key=str):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


class CellJob(StageJob):
    """Train -> embed test -> evaluate, resumable at every step (requeue-safe)."""

    def __init__(self) -> None:
        super().__init__("cell")

    def __call__(self, cfg_dict: dict, kwargs: dict[str, Any]) -> Any:
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        cfg = C.from_dict(cfg_dict)  # once: the stages below share the object
        run_dir, metrics_dir = Path(kwargs["run_dir"]), Path(kwargs["metrics_dir"])
        _run_inline("train", cfg, {"run_dir": run_dir, "progress": False})
        if env.global_rank != 0:
            return None
        emb = run_dir / f"{cfg.eval.split}_embeddings.npz"
        if not emb.exists():  # embed + evaluate (+ re-rank) in one pass over the split
            return _run_inline("assess", cfg, {"run_dir": run_dir, "emb_out": emb,
                                               "metrics_dir": metrics_dir, "progress": False}
                               )["files"]["metrics"]
        return _run_inline("evaluate", cfg, {"emb": emb, "out_dir": metrics_dir, "run_dir": run_dir,
                                             "progress": False})


def load_grid(path: str | os.PathLike, cli_overrides: list[str] | None = None) -> tuple[dict, list[tuple[Cell, C.Config]]]:
    """The grid spec and its cells with their resolved configs."""
    spec = C.load_yaml(path)
    unknown = set(spec) - {"name", "variants", "seeds", "config", "overrides", "out", "description"}
    if unknown:
        raise C.ConfigError(f"{path}: unknown grid keys {sorted(unknown)}")
    name = spec.get("name") or Path(path).stem
    out = Path(spec.get("out") or f"grids/{name}")
    C.merge(C.Config(), spec.get("overrides") or {})  # fail on a bad key before submitting anything
    cli = C.parse_overrides(cli_overrides or [])
    cells = []
    for v in spec["variants"]:
        for seed in spec.get("seeds") or [0]:
            cfg = variants.resolve_from_files(v, spec.get("config") or [], spec.get("overrides") or {},
                                              cli, {"train": {"seed": int(seed)}})
            cell = Cell(v, int(seed), str(out / "runs" / v / f"seed{seed}"),
                        str(out / "metrics" / v / f"seed{seed}"))
            cells.append((cell, cfg))
    return {"name": name, "out": str(out), "spec": spec}, cells


def _jobs(out: Path) -> dict:
    p = out / JOBS
    return json.loads(p.read_text()) if p.exists() else {}


def submit_grid(path: str | os.PathLike, executor: str = "slurm", cli_overrides: list[str] | None = None,
                seeds: list[int] | None = None, rerun_changed: bool = False) -> dict:
    """Submit the unfinished, inactive cells of a grid as ONE job array; returns {cell: job id}.
    ``seeds``: only the cells of these seeds (of the grid's own); the rest can follow later.
    A CHANGED cell (its run was made under another config) is refused, or with ``rerun_changed``
    its old run and metrics are moved aside and it is trained again."""
    from malm.launch.submit import submit_array

    grid, cells = load_grid(path, cli_overrides)
    if seeds is not None:
        known = {c.seed for c, _ in cells}
        if not set(seeds) <= known:
            raise C.ConfigError(f"{path}: seeds {sorted(set(seeds) - known)} are not in the grid "
                                f"(its seeds: {sorted(known)})")
        cells = [(c, cfg) for c, cfg in cells if c.seed in seeds]
    out = Path(grid["out"])
    out.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(out)
    states = cell_states(grid, cells)
    changed = [(c, states[c.key]["changed"]) for c, _ in cells if states[c.key]["state"] == "CHANGED"]
    if changed and not rerun_changed:
        lines = "\n".join(f"  {c.key} ({c.run_dir}): {', '.join(keys)}" for c, keys in changed)
        raise C.ConfigError(f"{path}: {len(changed)} cell(s) hold results made under another config "
                            f"(the keys that differ):\n{lines}\nre-run them with `malm grid submit "
                            f"{path} --rerun-changed` (their old runs and metrics are moved aside, "
                            "not deleted), or give the grid another `out`")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for c, keys in changed:
        for d in (Path(c.run_dir), Path(c.metrics_dir)):
            if d.exists():
                d.rename(d.with_name(f"{d.name}.stale-{stamp}"))
        log.warning("%s: config changed (%s); old run and metrics moved to *.stale-%s",
                    c.key, ", ".join(keys), stamp)
        states[c.key]["state"] = "NOT SUBMITTED"
    todo = [(c, cfg) for c, cfg in cells if states[c.key]["state"] not in ACTIVE_STATES | {"FINISHED"}]
    skipped = len(cells) - len(todo)
    if not todo:
        print(f"grid {grid['name']}: all {len(cells)} cells finished or in flight; nothing submitted")
        return {}
    slurm = C.merge(todo[0][1].slurm, {"executor": executor})
    submitted = submit_array(CellJob(), [(C.to_dict(cfg), {"run_dir": c.run_dir, "metrics_dir": c.metrics_dir})
                                         for c, cfg in todo],
                             cfg=slurm, folder=out / "slurm_logs" / "%j", name=f"malm-grid-{grid['name']}")
    for (c, cfg), job in zip(todo, submitted):
        jobs[c.key] = {"job_id": str(job.job_id), "executor": executor, "folder": str(out / "slurm_logs" / "%j")}
        C.save(cfg, Path(c.run_dir).parent / f"seed{c.seed}.config.yaml")
    atomic_write_json(out / JOBS, jobs)
    print(f"grid {grid['name']}: submitted {len(todo)} cells as one array, skipped {skipped} "
          f"(finished or in flight); status: malm grid status {path}")
    return {c.key: j.job_id for (c, _), j in zip(todo, submitted)}


def cell_states(grid: dict, cells: list[tuple[Cell, C.Config]]) -> dict[str, dict]:
    """{cell key: {state, job_id, changed}}: FINISHED when its metrics exist and its run was made
    under the cell's config; CHANGED when the run was made under another one (``changed`` lists the
    keys that differ); else the scheduler's state."""
    import submitit

    from malm.launch.submit import job_state

    jobs = _jobs(Path(grid["out"]))
    out = {}
    for c, cfg in cells:
        rec = jobs.get(c.key, {})
        diff, has_metrics = c.changed_keys(cfg), c.has_metrics(cfg.eval)
        if has_metrics and diff == []:
            state = "FINISHED"
        elif rec.get("executor") == "slurm":
            try:
                state = job_state(submitit.SlurmJob(rec["folder"], rec["job_id"]))
            except Exception as exc:  # sacct unavailable: say so rather than guess
                state = f"UNKNOWN ({exc.__class__.__name__})"
        elif rec:
            state = "SUBMITTED (local)"
        else:
            state = "NOT SUBMITTED"
        if state not in ACTIVE_STATES and state != "FINISHED":  # a job in flight is left alone
            if diff:
                state = "CHANGED"
            elif has_metrics:  # metrics without the config of the run that made them
                state, diff = "CHANGED", ["(no config.yaml in the run directory)"]
        out[c.key] = {"state": state, "job_id": rec.get("job_id", ""), "changed": diff or []}
    return out


def status(path: str | os.PathLike) -> dict[str, dict]:
    grid, cells = load_grid(path)
    states = cell_states(grid, cells)
    width = max(len(k) for k in states)
    for key, st in states.items():
        why = f" ({', '.join(st['changed'])} differ)" if st["state"] == "CHANGED" else ""
        print(f"{key:<{width}}  {st['job_id']:>10}  {st['state']}{why}")
    done = sum(s["state"] == "FINISHED" for s in states.values())
    print(f"grid {grid['name']}: {done}/{len(states)} cells finished")
    return states


def build_grid_tables(path: str | os.PathLike, dataset: str = "synthetic") -> dict[str, Path]:
    """The grid's metrics -> the same tidy tables and figures as the DVC pipeline."""
    from malm.report.write import build_tables

    grid, cells = load_grid(path)
    out = Path(grid["out"])
    stale = [f"{c.key}: {', '.join(c.changed_keys(cfg) or [])}" for c, cfg in cells
             if c.changed_keys(cfg) and c.has_metrics(cfg.eval)]
    if stale:
        raise C.ConfigError(f"{path}: these cells' metrics were made under another config, so the "
                            "tables would mix two experiments:\n  " + "\n  ".join(stale)
                            + f"\nre-run them (malm grid submit {path} --rerun-changed) first")
    return build_tables(out / "metrics", out / "tables", out / "figures", out / "summary.json",
                        runs_dir=out / "runs", dataset=dataset,
                        order=list(dict.fromkeys(c.variant for c, _ in cells)))
