"""The training loop: one function, ``train(cfg, run_dir)``, resumable from its run directory.

Determinism: everything random inside epoch ``e`` (data order, crops, masks, dropout) is seeded from
``(train.seed, e, rank)`` at the start of the epoch, and the model/optimiser state is checkpointed at
the end of every epoch. A run killed at any point and restarted therefore replays the interrupted
epoch from the same state with the same random numbers and ends with the same weights and metrics.

GPU path: bf16 autocast, fused Adam, optional ``torch.compile``, pinned-memory loading, and DDP when
launched with ``WORLD_SIZE > 1`` (torchrun, or submitit's distributed environment on Slurm).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from malm import config as C
from malm.train.checkpoint import (BEST_CHECKPOINT, CHECKPOINT, is_better, load_checkpoint,
                                   save_checkpoint)
from malm.train.distributed import FailureWatchdog, all_reduce_mean, setup_distributed
from malm.train.schedules import lr_factor

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ environment
def resolve_device(name: str) -> torch.device:
    """The device of a single-process run (train.device: auto, cpu, cuda)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 9_973 + rank * 101) % (2**31)


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    import random

    random.seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# ------------------------------------------------------------------------------------- data
def vocab_size(cache_dir: Path) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(cache_dir / "tokenizer.json")).get_vocab_size()


def num_patches(cfg: C.Config) -> int:
    return (cfg.model.image.img_size // cfg.model.image.patch_size) ** 2


def make_loader(cfg: C.Config, cache_dir: Path, split: str, train: bool, batch_size: int,
                device: torch.device, rank: int = 0, world: int = 1):
    from malm.data.dataset import RecipeImageDataset
    from malm.data.masking import MaskingCollate

    ds = RecipeImageDataset(cache_dir, split, train=train, image_size=cfg.model.image.img_size,
                            seed=cfg.train.seed, image_sampling=cfg.data.image_sampling)
    collate = MaskingCollate(num_patches(cfg), cfg.model.mask.ratio if train else 0.0,
                             cfg.model.mask.recipe_ratio if train else 0.0, mask_id=2,
                             seed=cfg.train.seed)
    common = dict(num_workers=cfg.data.num_workers, collate_fn=collate, pin_memory=device.type == "cuda",
                  persistent_workers=False)
    if train and cfg.data.batch_sampler == "triplet_classif":
        from malm.data.sampler import TripletClassifBatchSampler

        sampler = TripletClassifBatchSampler(
            ds.classes(), batch_size, background_frac=cfg.data.sampler_background_frac,
            same_class=cfg.data.sampler_same_class, seed=cfg.train.seed, rank=rank, world_size=world)
        return DataLoader(ds, batch_sampler=sampler, **common), collate, sampler
    sampler = None
    if world > 1 and train:
        sampler = torch.utils.data.distributed.DistributedSampler(ds, world, rank, shuffle=True,
                                                                  seed=cfg.train.seed, drop_last=True)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                        drop_last=train, **common)
    return loader, collate, sampler


def set_epoch(loader: DataLoader, collate, sampler, epoch: int) -> None:
    """Seed this epoch's crops, masks and order from (seed, epoch): a resumed epoch replays exactly."""
    loader.dataset.set_epoch(epoch)
    collate.set_epoch(epoch)
    if sampler is not None:
        sampler.set_epoch(epoch)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


# -------------------------------------------------------------------------------- embedding
@torch.no_grad()
def embed_split(model, cfg: C.Config, cache_dir: Path, split: str, device: torch.device,
                limit: int | None = None, progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embed every pair of a split (first image, centre crop) -> image [N,E], recipe [N,E], ids [N],
    rows sorted by recipe id. ``limit`` keeps the first ``limit`` ids."""
    loader, _, _ = make_loader(cfg, cache_dir, split, train=False, batch_size=max(cfg.train.batch_size, 128),
                               device=device)
    model.eval()
    amp = device.type == "cuda" and cfg.train.amp
    imgs, recs, ids = [], [], []
    for batch in tqdm(loader, desc=f"embed {split}", disable=not progress, leave=False):
        if batch is None:
            continue
        if batch.pop("n_skipped", 0):
            raise RuntimeError(f"{cache_dir}/{split}: unreadable cached images while embedding; "
                               "rebuild the cache (malm data prepare)")
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            imgs.append(model.embed_image(batch["image"]).float().cpu())
            recs.append(model.embed_recipe(batch).float().cpu())
        ids.extend(batch["id"])
    image, recipe = torch.cat(imgs).numpy(), torch.cat(recs).numpy()
    ids_arr = np.asarray(ids)
    order = np.argsort(ids_arr, kind="stable")
    image, recipe, ids_arr = image[order], recipe[order], ids_arr[order]
    if limit is not None:
        image, recipe, ids_arr = image[:limit], recipe[:limit], ids_arr[:limit]
    return image.astype(np.float32), recipe.astype(np.float32), ids_arr


def save_embeddings(path: str | os.PathLike, image: np.ndarray, recipe: np.ndarray, ids: np.ndarray,
                    **meta: Any) -> None:
    """Atomic .npz with image, recipe, ids and optional scalar metadata (e.g. the checkpoint used)."""
    from malm.io import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, image=image, recipe=recipe, ids=ids, **{k: np.asarray(v) for k, v in meta.items()})


def validate(model, cfg: C.Config, cache_dir: Path, device: torch.device, progress: bool) -> dict[str, float]:
    """Validation R@1 / medR on the first ``train.val_pairs`` val pairs (one 1k bag, tfood protocol)."""
    from malm.eval.protocol import evaluate

    image, recipe, ids = embed_split(model, cfg, cache_dir, "val", device, limit=cfg.train.val_pairs,
                                     progress=progress)
    res = evaluate(image, recipe, ids, protocol="tfood", bag_size=len(ids), n_bags=1)
    return {"val/img2rec_R@1": res["img2rec"]["R@1"]["mean"], "val/rec2img_R@1": res["rec2img"]["R@1"]["mean"],
            "val/img2rec_medR": res["img2rec"]["medR"]["mean"], "val/bag_size": float(len(ids))}


# ------------------------------------------------------------------------------------ train
def _dvclive_replay(run_dir: Path, history: list[dict[str, float]]):
    """(Re)write dvclive logs from the checkpointed history: exact after a resume, no duplicates."""
    from dvclive import Live

    live = Live(dir=str(run_dir / "dvclive"), resume=False, save_dvc_exp=False, dvcyaml=None,
                report=None)
    for row in history:
        for k, v in row.items():
            if k != "epoch":
                live.log_metric(k, v)
        live.next_step()
    return live


def _record_start(run_dir: Path, start_epoch: int) -> None:
    """Append this start to ``run_dir/starts.json``: an audit trail of resumes and Slurm requeues."""
    path = run_dir / "starts.json"
    starts = json.loads(path.read_text()) if path.exists() else []
    starts.append({"start_epoch": start_epoch, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                   "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0) or 0)})
    C.atomic_write_json(path, starts)


def train(cfg: C.Config, run_dir: str | os.PathLike, progress: bool = True,
          restart_on_config_change: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into ``run_dir`` (config.yaml, checkpoint.pt = the last epoch,
    checkpoint_best.pt = the best epoch on validation, history.json, dvclive/, metrics.json,
    starts.json: one entry per start, so resumes and Slurm requeues are visible).

    Resumes from ``run_dir/checkpoint.pt`` when present (a checkpoint of another config is an error,
    or with ``restart_on_config_change`` is removed and training starts afresh); returns the final
    metrics. Under DDP (WORLD_SIZE > 1) each rank uses its own device, and a failure on any rank
    ends every rank within seconds (``FailureWatchdog``).
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


def input_fingerprints(cfg: C.Config) -> dict[str, str]:
    """sha256 of the local files a run starts from (``model.image.pretrained``), so that a run
    resumed under the same config but with rebuilt weights (``dvc repro`` after the pretrain
    stage changed) is recognised as a different run instead of a finished one."""
    spec = cfg.model.image.pretrained
    if not spec or not Path(spec).is_file():
        return {}
    return {"model.image.pretrained": _sha256(spec)}


def _sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_fingerprint() -> dict[str, str]:
    """{package-relative path: sha256} of every ``malm`` source file this process has imported:
    the code a run was trained with. A run resumed under changed code is a different run (DVC
    re-runs ``train`` after a code edit, and a finished checkpoint must not count as its result)."""
    import sys

    pkg = Path(__file__).resolve().parents[1]
    out = {}
    for name, module in list(sys.modules.items()):
        f = getattr(module, "__file__", None)
        if (name == "malm" or name.startswith("malm.")) and f and Path(f).suffix == ".py":
            out[Path(f).resolve().relative_to(pkg).as_posix()] = _sha256(f)
    return dict(sorted(out.items()))


def changed_code(recorded: dict[str, str]) -> list[str]:
    """The files of a recorded ``code_fingerprint`` that differ (or are gone) now."""
    pkg = Path(__file__).resolve().parents[1]
    return [f for f, h in recorded.items() if not (pkg / f).is_file() or _sha256(pkg / f) != h]


def _train(cfg: C.Config, run_dir: Path, device: torch.device, rank: int, world: int,
           progress: bool, restart_on_config_change: bool) -> dict[str, Any]:
    from malm.data.cache import prepare
    from malm.data.dataset import mix_seed
    from malm.losses.criterion import MALMCriterion
    from malm.models.malm import build_model
    from malm.train.ema import cosine_momentum_schedule

    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if cfg.train.batch_size % world:
        raise C.ConfigError(f"train.batch_size={cfg.train.batch_size} is not divisible by the "
                            f"{world} ranks (it is the global batch)")

    ckpt_path, best_path = run_dir / CHECKPOINT, run_dir / BEST_CHECKPOINT
    state = load_checkpoint(ckpt_path) if ckpt_path.exists() else None
    inputs = input_fingerprints(cfg)
    if state is not None:
        saved = C.from_dict(state["config"])
        changed = C.identity(saved) != C.identity(cfg)
        changed_inputs = [k for k in inputs if state.get("inputs", {}).get(k) != inputs[k]]
        code = changed_code(state.get("code", {}))
        if changed or changed_inputs or code:
            what = ("config" if changed else f"the file behind {', '.join(changed_inputs)}" if changed_inputs
                    else f"code (malm/{', malm/'.join(code)})")
            if not restart_on_config_change:
                raise C.ConfigError(f"{ckpt_path} was made with a different {what}; use a new --run-dir "
                                    f"(see {run_dir / 'config.yaml'} for the config it was made with)")
            log.warning("%s: %s changed; starting afresh", ckpt_path, what)
            if rank == 0:
                for name in (CHECKPOINT, BEST_CHECKPOINT, "history.json", "metrics.json"):
                    (run_dir / name).unlink(missing_ok=True)
            state = None
        if state is not None and state.get("finished"):
            log.info("run %s already finished; nothing to do", run_dir)
            return state["metrics"]
    if rank == 0:
        C.save(cfg, run_dir / "config.yaml")

    cache_dir = prepare(cfg.data, progress=progress and rank == 0)
    seed_everything(cfg.train.seed)  # model init
    model = build_model(cfg.model, cfg.loss, vocab_size(cache_dir)).to(device)
    criterion = MALMCriterion(cfg.loss, distill_beta=cfg.model.distill.beta)  # stateless
    params = [g for g in model.param_groups(cfg.train.lr, cfg.train.lr_image, cfg.train.weight_decay,
                                               cfg.train.lr_word_embedding)
              if g["params"]]
    optimizer = torch.optim.Adam(params, fused=device.type == "cuda")
    loader, collate, sampler = make_loader(cfg, cache_dir, "train", True, cfg.train.batch_size // world,
                                           device, rank, world)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise C.ConfigError(f"the train split gives no full batch of train.batch_size={cfg.train.batch_size}")
    total_steps = steps_per_epoch * cfg.train.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(max(cfg.train.warmup_steps, 0), total_steps, cfg.train.lr_schedule))
    momentum = cosine_momentum_schedule(cfg.model.distill.momentum, cfg.model.distill.momentum_end,
                                        cfg.train.epochs, steps_per_epoch)

    start_epoch, history, wall, best = 0, [], 0.0, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history, wall = state["epoch"], state["history"], state["wall_s"]
        best = state.get("best")
        log.info("resuming %s at epoch %d/%d", run_dir, start_epoch, cfg.train.epochs)
    if rank == 0:
        _record_start(run_dir, start_epoch)

    live = _dvclive_replay(run_dir, history) if rank == 0 else None
    amp = device.type == "cuda" and cfg.train.amp
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
        n_seen = skipped = 0
        bar = tqdm(loader, desc=f"{cfg.variant} epoch {epoch + 1}/{cfg.train.epochs}",
                   disable=not progress or rank != 0, leave=False)
        for i, batch in enumerate(bar):
            step = epoch * steps_per_epoch + i
            if batch is None:  # every image of the batch unreadable: counted by the dataset
                continue
            skipped += batch.pop("n_skipped", 0)
            batch = to_device(batch, device)
            # hard negatives: one stream per step, the same on every rank (drawn for the global batch)
            negatives = torch.Generator(device=device).manual_seed(mix_seed(cfg.train.seed, epoch, i))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = train_model(batch, generator=negatives)
                losses = criterion(out, batch, epoch)
            loss = losses["loss"]
            if not torch.isfinite(all_reduce_mean(loss.detach()) if world > 1 else loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch} step {i} (rank {rank}): "
                                         f"{ {k: float(v) for k, v in losses.items()} }")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            model.clamp_logit_scales()
            model.update_teacher(float(momentum[min(step, total_steps - 1)]))
            bs = batch["image"].shape[0]
            n_seen += bs
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() * bs
            if i % max(cfg.train.log_every, 1) == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        train_secs = time.perf_counter() - t0
        # every rank saw as many samples: the mean of the ranks' means is the global mean
        means = {k: float(all_reduce_mean(v / max(n_seen, 1)) if world > 1 else v / max(n_seen, 1))
                 for k, v in sums.items()}
        row = {"epoch": epoch + 1, **{f"train/{k}": v for k, v in means.items()}}
        for gi, group in enumerate(optimizer.param_groups):
            row[f"lr/{group.get('name', gi)}"] = group["lr"]
        row["train/samples_per_s"] = n_seen * world / max(train_secs, 1e-9)
        row["train/samples"] = float(n_seen * world)
        row["train/seconds"] = train_secs
        if skipped:
            log.warning("epoch %d: %d unreadable images skipped", epoch + 1, skipped)
            row["train/skipped_images"] = float(skipped)
        if rank == 0:
            row.update(validate(model, cfg, cache_dir, device, progress))
        wall += time.perf_counter() - t0
        history.append(row)
        finished = epoch + 1 == cfg.train.epochs
        if rank == 0:
            val = {k: row[k] for k in ("val/img2rec_medR", "val/img2rec_R@1")}
            if best is None or is_better(val, best):
                best = {"epoch": epoch + 1, **val}
                save_checkpoint(best_path, {"config": C.to_dict(cfg), "epoch": epoch + 1,
                                            "model": model.state_dict(), "val": val, "best": best})
        if finished:
            metrics = {"variant": cfg.variant, "seed": cfg.train.seed, "epochs": cfg.train.epochs,
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
            C.atomic_write_json(run_dir / "history.json", history)
            for k, v in row.items():
                if k != "epoch":
                    live.log_metric(k, v)
            live.next_step()
            log.info("epoch %d/%d %s", epoch + 1, cfg.train.epochs,
                     " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
    if rank == 0:
        if not metrics:
            metrics = state["metrics"] if state else {}
        C.atomic_write_json(run_dir / "metrics.json", metrics)
        live.end()
    return metrics


CHECKPOINT_CHOICES = {"best": BEST_CHECKPOINT, "last": CHECKPOINT}


def load_trained(run_dir: str | os.PathLike, device: torch.device | str = "cpu",
                 checkpoint: str = "last"):
    """(model, cfg, cache_dir, info) from a run directory's checkpoint and the config it carries.

    ``checkpoint``: last (checkpoint.pt, the last finished epoch) or best (checkpoint_best.pt, the
    best epoch on validation: medR, then R@1, T-Food's saving criteria). ``info`` says which file
    and epoch were loaded.
    """
    from malm.data.cache import require_cache
    from malm.models.malm import build_model

    if checkpoint not in CHECKPOINT_CHOICES:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_CHOICES)}, got {checkpoint!r}")
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_CHOICES[checkpoint]
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (train the run first; runs made before best "
                                "checkpoints were kept need --checkpoint last)")
    state = load_checkpoint(path)
    cfg = C.from_dict(state["config"])
    last = load_checkpoint(run_dir / CHECKPOINT) if checkpoint == "best" else state
    if not last.get("finished"):
        log.warning("%s is not finished (epoch %d of %d)", run_dir, last["epoch"], cfg.train.epochs)
    cache_dir = require_cache(cfg.data, who=f"loading the trained run {run_dir}")
    model = build_model(cfg.model, cfg.loss, vocab_size(cache_dir))
    model.load_state_dict(state["model"])
    info = {"checkpoint": checkpoint, "checkpoint_file": path.name, "checkpoint_epoch": int(state["epoch"])}
    return model.to(device), cfg, cache_dir, info


def embed(run_dir: str | os.PathLike, split: str, out: str | os.PathLike, progress: bool = True,
          checkpoint: str = "best") -> Path:
    """Embed ``split`` with the trained run's ``checkpoint`` (best|last) -> ``out`` (.npz: image,
    recipe, ids sorted by id, and which checkpoint and epoch made them)."""
    device = resolve_device("auto")
    model, cfg, cache_dir, info = load_trained(run_dir, device, checkpoint)
    image, recipe, ids = embed_split(model, cfg, cache_dir, split, device, progress=progress)
    save_embeddings(out, image, recipe, ids, **info)
    log.info("wrote %s: %d pairs, dim %d, from the %s checkpoint (epoch %d)", out, len(ids),
             image.shape[1], checkpoint, info["checkpoint_epoch"])
    return Path(out)

