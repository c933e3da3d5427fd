"""The DataLoader of a cache split: dataset, masking collate and batch sampler, seeded per epoch.

Training draws batches with ``data.batch_sampler`` (shuffled pairs, or T-Food's class-balanced
sampler), split across DDP ranks, and masks on the data side (``model.mask``); evaluation reads
every pair once, in cache order, unmasked. :func:`set_epoch` seeds the epoch's crops, masks and
order from ``(seed, epoch)``, so a resumed epoch replays exactly.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from malm.config import DataConfig
from malm.data.dataset import RecipeImageDataset
from malm.data.masking import MaskingCollate
from malm.data.sampler import TripletClassifBatchSampler


def make_loader(data: DataConfig, cache_dir: str | os.PathLike, split: str, *, train: bool,
                batch_size: int, image_size: int, num_patches: int, seed: int = 0,
                mask_ratio: float = 0.0, recipe_mask_ratio: float = 0.0, pin_memory: bool = False,
                rank: int = 0, world: int = 1):
    """(loader, collate, sampler) of ``split``; ``batch_size`` is this rank's.

    ``image_size`` / ``num_patches``: the model's input side and patch count (``model.image``);
    ``mask_ratio`` / ``recipe_mask_ratio`` apply in training only. ``sampler`` is None unless the
    batches come from a sampler that needs :func:`set_epoch` (class-balanced, or DDP).
    """
    ds = RecipeImageDataset(cache_dir, split, train=train, image_size=image_size, seed=seed,
                            image_sampling=data.image_sampling)
    collate = MaskingCollate(num_patches, mask_ratio if train else 0.0,
                             recipe_mask_ratio if train else 0.0, seed=seed)
    common = dict(num_workers=data.num_workers, collate_fn=collate, pin_memory=pin_memory,
                  persistent_workers=False)
    if train and data.batch_sampler == "triplet_classif":
        sampler = TripletClassifBatchSampler(
            ds.classes(), batch_size, background_frac=data.sampler_background_frac,
            same_class=data.sampler_same_class, seed=seed, rank=rank, world_size=world)
        return DataLoader(ds, batch_sampler=sampler, **common), collate, sampler
    sampler = None
    if world > 1 and train:
        sampler = DistributedSampler(ds, world, rank, shuffle=True, seed=seed, drop_last=True)
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
