"""The pipeline's stages as pure functions, and one way to run any of them inline or as a job.

``dvc repro`` calls ``malm train|assess`` on the login node (``malm embed|evaluate`` run the parts
of ``assess`` one at a time); with ``slurm.executor=slurm``
each command submits its stage through submitit and blocks until the job ends, so DVC drives the
cluster without ever running inside a job (which would lock the repo).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import submitit

from malm import config as C
from malm.eval.run import evaluate_all
from malm.launch.submit import Checkpointable

log = logging.getLogger(__name__)


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
    if stage == "assess":
        from malm.eval.assess import assess

        return assess(kwargs["run_dir"], cfg, kwargs["emb_out"], kwargs["metrics_dir"],
                      kwargs.get("grounding_out"), kwargs.get("figure"),
                      checkpoint=kwargs.get("checkpoint", "best"), progress=kwargs.get("progress", True))
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
                return None  # embed/evaluate/assess run on rank 0 only
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
