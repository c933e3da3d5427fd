"""The training loop: one function, ``train(cfg, run_dir)``, resumable from its run directory.

Determinism: everything random inside epoch ``e`` (data order, crops, masks, dropout) is seeded from
``(train.seed, e, rank)`` at the start of the epoch (:mod:`malm.train.seeding`), and the
model/optimiser state is checkpointed at the end of every epoch. A run killed at any point and
restarted therefore replays the interrupted epoch from the same state with the same random numbers
and ends with the same weights and metrics.

GPU path: bf16 autocast, fused Adam, optional ``torch.compile``, pinned-memory loading, and DDP when
launched with ``WORLD_SIZE > 1`` (torchrun, or submitit's distributed environment on Slurm).

The step itself (forward, losses, backward, optimiser, EMA teacher) is :mod:`malm.train.step`,
shared with the DDP path, the stand-in pretraining and the train-step benchmark. The other pieces
live beside it: the loader (:mod:`malm.data.loader`), validation and embedding
(:mod:`malm.eval.embed`), resuming (:mod:`malm.train.checkpoint`), the run directory's logs
(:mod:`malm.train.runlog`), DDP (:mod:`malm.train.distributed`) and the schedules.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from malm import config as C
from malm.data.cache import prepare, vocab_size
from malm.data.loader import make_loader, set_epoch, to_device
from malm.eval.embed import eval_loader, validate
from malm.io import BEST_CHECKPOINT, CHECKPOINT, save_checkpoint
from malm.train import runlog
from malm.train.checkpoint import (changed_code, code_fingerprint, input_fingerprints, is_better,
                                   patience_exhausted, resume_state)
from malm.models.ops import all_reduce_mean
from malm.train.distributed import FailureWatchdog, setup_distributed
from malm.train.gradshare import shares
from malm.seeds import epoch_seed
from malm.train.seeding import seed_everything, set_deterministic
from malm.train.step import build_training, train_step

# the fingerprint of the code a run was trained with is part of what this module records
__all__ = ["train", "changed_code", "code_fingerprint"]
log = logging.getLogger(__name__)


def train(cfg: C.Config, run_dir: str | os.PathLike, progress: bool = True,
          restart_on_config_change: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (config.yaml, checkpoint.pt = the last epoch,
    checkpoint_best.pt = the best epoch on validation, history.json, dvclive/, metrics.json,
    starts.json: one entry per start, so resumes and Slurm requeues are visible).

    Resumes from ``run_dir/checkpoint.pt`` when present (a checkpoint of another config is an error,
    or with ``restart_on_config_change`` is removed and training starts afresh); returns the final
    metrics. Under DDP (WORLD_SIZE > 1) each rank uses its own device, and a failure on any rank
    ends every rank within seconds (``FailureWatchdog``). With ``train.patience`` > 0 the run ends
    (finished, ``stopped_early`` in the metrics) once validation has not improved for that many
    epochs (:func:`malm.train.checkpoint.patience_exhausted`); ``train.epochs`` is the maximum.
    """
    device, rank, world = setup_distributed(cfg.train.device)
    with FailureWatchdog():
        return _train(cfg, Path(run_dir), device, rank, world, progress, restart_on_config_change)


def _wrap(model, device: torch.device, world: int, compile_: bool):
    """The module the step calls: DDP over the parameters that train now, optionally compiled.

    Built again whenever the set of trainable parameters changes (the image encoder's freeze):
    DDP fixes its gradient buckets at construction, and a parameter that stops producing
    gradients later makes it fail with "Expected to have finished reduction in the prior iteration".
    """
    wrapped = model
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False)
    return torch.compile(wrapped) if compile_ else wrapped


def _train(cfg: C.Config, run_dir: Path, device: torch.device, rank: int, world: int,
           progress: bool, restart_on_config_change: bool) -> dict[str, Any]:
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    set_deterministic(cfg.train.deterministic, device)
    if cfg.train.patience < 0:
        raise C.ConfigError(f"train.patience={cfg.train.patience}: give 0 (off) or a number of epochs")
    if cfg.train.batch_size % world:
        raise C.ConfigError(f"train.batch_size={cfg.train.batch_size} is not divisible by the "
                            f"{world} ranks (it is the global batch)")

    ckpt_path, best_path = run_dir / CHECKPOINT, run_dir / BEST_CHECKPOINT
    inputs = input_fingerprints(cfg)
    state = resume_state(cfg, run_dir, inputs, restart_on_config_change=restart_on_config_change,
                         rank=rank)
    if state is not None and state.get("finished"):
        log.info("run %s already finished; nothing to do", run_dir)
        return state["metrics"]
    if rank == 0:
        runlog.save_config(cfg, run_dir)

    cache_dir = prepare(cfg.data, progress=progress and rank == 0)
    loader, collate, sampler = make_loader(
        cfg.data, cache_dir, "train", train=True, batch_size=cfg.train.batch_size // world,
        image_size=cfg.model.image.img_size, num_patches=cfg.model.image.num_patches,
        seed=cfg.train.seed, mask_ratio=cfg.model.mask.ratio,
        recipe_mask_ratio=cfg.model.mask.recipe_ratio, pin_memory=device.type == "cuda",
        rank=rank, world=world)
    steps_per_epoch = len(loader)
    t = build_training(cfg, vocab_size(cache_dir), device, steps_per_epoch)
    model, optimizer, scheduler = t.model, t.optimizer, t.scheduler
    val_loader = (eval_loader(cfg.data, cfg.model.image, cache_dir, "val",
                              max(cfg.train.batch_size, 128), device) if rank == 0 else None)

    start_epoch, history, wall, best = 0, [], 0.0, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history, wall = state["epoch"], state["history"], state["wall_s"]
        best = state.get("best")
        log.info("resuming %s at epoch %d/%d", run_dir, start_epoch, cfg.train.epochs)
    if rank == 0:
        runlog.record_start(run_dir, start_epoch)

    live = runlog.open_live(run_dir, history) if rank == 0 else None
    train_model, wrapped_for = None, None

    metrics: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.train.epochs):
        t0 = time.perf_counter()
        g = seed_everything(epoch_seed(cfg.train.seed, epoch, rank))
        loader.generator = g  # data order of this epoch
        set_epoch(loader, collate, sampler, epoch)
        trainable = epoch >= cfg.train.freeze_image_epochs
        model.set_image_trainable(trainable)
        if wrapped_for != trainable:
            train_model, wrapped_for = _wrap(model, device, world, cfg.train.compile), trainable
        model.train()
        sums: dict[str, torch.Tensor] = {}
        grad_sums: dict[str, list[float]] = {}  # grad/<term>/<group> samples of this epoch
        n_seen = skipped = 0
        bar = tqdm(loader, desc=f"{cfg.variant} epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not progress or rank != 0, leave=False)
        for i, batch in enumerate(bar):
            if batch is None:  # every image of the batch unreadable: counted by the dataset
                continue
            skipped += batch.pop("n_skipped", 0)
            batch = to_device(batch, device)
            log_step = i % max(cfg.train.log_every, 1) == 0
            losses, norms = train_step(t, train_model, batch, epoch, i,
                                       log_grad_norms=log_step and cfg.train.log_grad_norms)
            for k, v in norms.items():
                grad_sums.setdefault(k, []).append(v)
            bs = batch["image"].shape[0]
            n_seen += bs
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() * bs
            if log_step:
                bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
        train_secs = time.perf_counter() - t0
        # every rank saw as many samples: the mean of the ranks' means is the global mean
        means = {k: float(all_reduce_mean(v / max(n_seen, 1)) if world > 1 else v / max(n_seen, 1))
                 for k, v in sums.items()}
        row = {"epoch": epoch + 1, **{f"train/{k}": v for k, v in means.items()}}
        if grad_sums:  # this rank's sampled steps (the groups' gradients before the DDP average)
            norms = {k: sum(v) / len(v) for k, v in grad_sums.items()}
            row.update(norms)
            row.update(shares(norms))
        for gi, group in enumerate(optimizer.param_groups):
            row[f"lr/{group.get('name', gi)}"] = group["lr"]
        row["train/samples_per_s"] = n_seen * world / max(train_secs, 1e-9)
        row["train/samples"] = float(n_seen * world)
        row["train/seconds"] = train_secs
        if skipped:
            log.warning("epoch %d: %d unreadable images skipped", epoch + 1, skipped)
            row["train/skipped_images"] = float(skipped)
        if rank == 0:
            row.update(validate(model, val_loader, device, limit=cfg.train.val_pairs,
                                amp=cfg.train.amp, progress=progress))
        wall += time.perf_counter() - t0
        history.append(row)
        if rank == 0:
            val = {k: row[k] for k in ("val/img2rec_medR", "val/img2rec_R@1")}
            if best is None or is_better(val, best):
                best = {"epoch": epoch + 1, **val}
                save_checkpoint(best_path, {"config": C.to_dict(cfg), "epoch": epoch + 1,
                                            "model": model.state_dict(), "val": val, "best": best})
        # early stopping (train.patience): a function of the epoch and `best`, both in the checkpoint,
        # so a killed and resumed run stops at the same epoch; rank 0 (the one that validates) decides
        stop = rank == 0 and patience_exhausted(best, epoch + 1, cfg.train.patience)
        if world > 1:
            stop = bool(all_reduce_mean(torch.tensor(float(stop), device=device)) > 0)
        finished = epoch + 1 == cfg.train.epochs or stop
        if finished:
            metrics = {"variant": cfg.variant, "seed": cfg.train.seed, "epochs": cfg.train.epochs,
                       "epochs_run": epoch + 1, "patience": cfg.train.patience,
                       "stopped_early": epoch + 1 < cfg.train.epochs,
                       "wall_s": wall, **{k: v for k, v in row.items() if k.startswith("val/")}}
            if best is not None:
                metrics.update({f"best/{k}": v for k, v in best.items()})
        if rank == 0:
            save_checkpoint(ckpt_path, {
                "config": C.to_dict(cfg), "epoch": epoch + 1, "history": history, "wall_s": wall,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "finished": finished, "metrics": metrics, "best": best, "inputs": inputs,
                "code": code_fingerprint()})
            runlog.save_history(run_dir, history)
            runlog.log_row(live, row)
            log.info("epoch %d/%d %s", epoch + 1, cfg.train.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
            if finished and epoch + 1 < cfg.train.epochs:
                log.info("early stop after epoch %d/%d: validation has not improved for %d epoch(s) "
                         "since epoch %d (train.patience=%d)", epoch + 1, cfg.train.epochs,
                         epoch + 1 - best["epoch"], best["epoch"], cfg.train.patience)
        if finished:
            break
    if rank == 0:
        if not metrics:
            metrics = state["metrics"] if state else {}
        runlog.save_metrics(run_dir, metrics)
        live.end()
    return metrics
