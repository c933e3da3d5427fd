"""The pipeline's stages as pure functions, and one way to run any of them inline or as a job.

``dvc repro`` calls ``malm train|embed|evaluate`` on the login node; with ``slurm.executor=slurm``
each command submits its stage through submitit and blocks until the job ends, so DVC drives the
cluster without ever running inside a job (which would lock the repo).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator

import submitit

from malm import config as C
from malm.eval.embeddings import embedding_provenance, load_embeddings
from malm.eval.names import bag_label
from malm.eval.protocol import evaluate
from malm.io import atomic_write_json
from malm.launch.submit import Checkpointable

log = logging.getLogger(__name__)


def evaluate_bags(emb: str | os.PathLike, eval_cfg: C.EvalConfig) -> Iterator[tuple[dict, tuple[str, int, int]]]:
    """Every protocol x bag of ``eval_cfg`` on one embeddings file, in order: (result, (protocol,
    bag_size, n_bags)). tfood with ``eval.clamp_bags``: a split too small for n_bags consecutive bags
    gets as many as it holds (recorded as the result's n_bags)."""
    image, recipe, ids = load_embeddings(emb)
    for protocol in eval_cfg.protocols:
        for bag_size, n_bags in eval_cfg.bags:
            if protocol == "tfood" and eval_cfg.clamp_bags and len(ids) < bag_size * n_bags:
                fit = len(ids) // bag_size
                if fit == 0:
                    raise ValueError(f"{emb}: {len(ids)} pairs cannot hold one bag of {bag_size}")
                log.warning("%s: %d pairs hold %d consecutive bag(s) of %d, not %d (recorded as n_bags)",
                            emb, len(ids), fit, bag_size, n_bags)
                n_bags = fit
            result = evaluate(image, recipe, ids, protocol=protocol, bag_size=bag_size, n_bags=n_bags,
                              seed=eval_cfg.seed)
            result["embeddings"] = str(emb)
            yield result, (protocol, bag_size, n_bags)


def evaluate_all(emb: str | os.PathLike, eval_cfg: C.EvalConfig, out_dir: str | os.PathLike,
                 run_dir: str | os.PathLike | None = None, progress: bool = True) -> list[Path]:
    """Every protocol x bag of ``eval_cfg`` on one embeddings file -> ``out_dir/<protocol>_<bag>.json``.

    With ``run_dir`` (the run the embeddings came from), ``eval.rerank_k`` > 0 and a model that has
    a matching module, also ``out_dir/<protocol>+rerank<k>_<bag>.json`` for each bag size of
    ``eval.rerank_bags`` (``malm.eval.rerank``); otherwise a log line says why there are none.
    """
    written, settings = [], []
    for result, setting in evaluate_bags(emb, eval_cfg):
        result.update(embedding_provenance(emb))
        written.append(_write_result(result, out_dir))
        settings.append(setting)
    if run_dir is None:
        log.info("no --run-dir: no re-ranked results (the matching module needs the trained run)")
        return written
    from malm.eval.rerank import rerank_run

    results, why = rerank_run(emb, run_dir, eval_cfg, settings, progress=progress)
    log.info("%s", why)
    written += [_write_result(r, out_dir) for r in results]
    return written


def _write_result(result: dict, out_dir: str | os.PathLike) -> Path:
    """``out_dir/<protocol>_<bag>.json``, and its log line."""
    path = Path(out_dir) / f"{result['protocol']}_{bag_label(result['bag_size'])}.json"
    atomic_write_json(path, result)
    log.info("%s %s x%d: img2rec R@1 %.2f medR %.1f | rec2img R@1 %.2f medR %.1f", result["protocol"],
             bag_label(result["bag_size"]), result["n_bags"], result["img2rec"]["R@1"]["mean"],
             result["img2rec"]["medR"]["mean"], result["rec2img"]["R@1"]["mean"],
             result["rec2img"]["medR"]["mean"])
    return path


def _run_inline(stage: str, cfg: C.Config, kwargs: dict[str, Any]) -> Any:
    """Run ``stage`` in this process on the config object ``cfg`` (no copy, no re-parse)."""
    if stage == "train":
        from malm.train.trainer import train

        return train(cfg, kwargs["run_dir"], progress=kwargs.get("progress", True),
                     restart_on_config_change=kwargs.get("restart_on_config_change", False))
    if stage == "embed":
        from malm.eval.embed import embed

        return str(embed(kwargs["run_dir"], kwargs["split"], kwargs["out"], progress=kwargs.get("progress", True),
                         checkpoint=kwargs.get("checkpoint", "best")))
    if stage == "evaluate":
        return [str(p) for p in evaluate_all(kwargs["emb"], cfg.eval, kwargs["out_dir"],
                                             run_dir=kwargs.get("run_dir"),
                                             progress=kwargs.get("progress", True))]
    raise ValueError(f"unknown stage {stage!r}")


class StageJob(Checkpointable):
    """A stage as a requeueable job: on time-out/preemption submitit resubmits it with the same
    arguments and the trainer resumes from the run directory's last checkpoint (on every rank).

    The job carries its config as a plain dict (``C.to_dict``), parsed back once in the job
    (``C.from_dict``): the pickle holds no package classes, and a requeued job that starts under
    edited code re-validates the config (a removed key is dropped, an unknown one named) instead of
    unpickling a stale dataclass."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def __call__(self, cfg_dict: dict, kwargs: dict[str, Any]) -> Any:
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # DDP: RANK, WORLD_SIZE, MASTER_ADDR/PORT, LOCAL_RANK for torch
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            if self.stage != "train" and env.global_rank != 0:
                return None  # embed/evaluate run on rank 0 only
        return _run_inline(self.stage, C.from_dict(cfg_dict), kwargs)


def run_stage(stage: str, cfg: C.Config, executor: str | None = None, **kwargs: Any) -> Any:
    """Run ``stage`` inline on ``cfg`` itself, or submit it with the ``slurm`` config section (the
    config as a dict: :class:`StageJob`) and wait for it."""
    executor = executor or cfg.slurm.executor
    if executor == "inline":
        return _run_inline(stage, cfg, kwargs)
    from malm.launch.submit import submit_and_wait

    slurm = C.merge(cfg.slurm, {"executor": executor})
    name = f"malm-{stage}-{cfg.variant}-s{cfg.train.seed}"
    job = StageJob(stage)
    return submit_and_wait(job, C.to_dict(cfg), {**kwargs, "progress": False}, cfg=slurm,
                           folder=Path(slurm.log_dir) / "%j", name=name)
