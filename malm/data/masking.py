"""Masks made on the data side (dinov2 ``data/masking.py`` + ``collate.py``): they travel in the
batch dict, so the model's ``forward`` has no randomness of its own.

* :func:`random_patch_mask` -- MAE's ``random_masking``: per row, argsort uniform noise, keep the
  ``P - round(ratio * P)`` lowest-noise patches, hide the rest (MALM 3.1 mask augmentation).
* :func:`mask_tokens` -- the "mask both" ablation: hide ``round(ratio * n)`` of the ``n`` non-pad
  tokens of every line (pads never touched) by replacing them with ``[MASK]``.
* :class:`MaskingCollate` -- stacks samples and adds ``mask`` [B, P] (always; all False at ratio 0).

Determinism: each batch's generator is seeded from (seed, epoch, the batch's sample indices), so
masks depend on which samples form the batch and the epoch -- not on worker count or on how many
batches came before -- and a resumed run (same sampler seed, ``set_epoch``) reproduces them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from malm.data.dataset import TEXT_KEYS, collate
from malm.seeds import mix_seed
from malm.data.text import MASK_ID, PAD_ID


def num_hidden(num: int, ratio: float) -> int:
    """Patches hidden out of ``num`` at ``ratio``: ``round(ratio * num)`` (half to even)."""
    return int(round(ratio * num))


def random_patch_mask(batch_size: int, num_patches: int, ratio: float,
                      generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """BoolTensor ``[B, P]``, True = hidden from the student; exactly ``round(ratio * P)`` per row.

    noise [B, P] ~ U(0, 1); ids_shuffle = argsort(noise) (ascending: small is kept, as MAE);
    mask[b, ids_shuffle[b, len_keep:]] = True.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    n_hide = num_hidden(num_patches, ratio)
    noise = torch.rand(batch_size, num_patches, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    mask = torch.zeros(batch_size, num_patches, dtype=torch.bool)
    mask.scatter_(1, ids_shuffle[:, num_patches - n_hide:], True)
    return mask if device is None else mask.to(device)


def mask_tokens(tokens: torch.Tensor, ratio: float, mask_id: int = MASK_ID,
                generator: torch.Generator | None = None, pad_id: int = PAD_ID
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask recipe words: ``tokens [..., T]`` -> ``(masked [..., T], mask [..., T] bool)``.

    In each line (last dim) with n non-pad tokens, exactly ``round(ratio * n)`` non-pad tokens are
    replaced by ``mask_id``; pads stay pads and are never in ``mask``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"token mask ratio must be in [0, 1], got {ratio}")
    valid = tokens != pad_id
    noise = torch.rand(tokens.shape, generator=generator)
    noise = noise.masked_fill(~valid, 2.0)                    # pads sort last
    rank = noise.argsort(dim=-1).argsort(dim=-1)             # rank of each token's noise in its line
    n_hide = torch.round(valid.sum(-1, keepdim=True) * ratio)  # half to even, as num_hidden
    mask = (rank < n_hide) & valid
    return tokens.masked_fill(mask, mask_id), mask


class MaskingCollate:
    """Collate for the DataLoader: :func:`malm.data.dataset.collate` plus

    * ``mask`` [B, P] bool, True = patch hidden from the student (all False when ``ratio == 0``);
    * when ``recipe_ratio > 0``: ``title/ingrs/instrs`` with words replaced by ``[MASK]`` and
      ``title_mask/ingrs_mask/instrs_mask`` (same shapes, bool) saying which.

    Picklable (DataLoader workers); call :meth:`set_epoch` before iterating each epoch.
    """

    def __init__(self, num_patches: int, ratio: float, recipe_ratio: float = 0.0,
                 mask_id: int = MASK_ID, seed: int = 0):
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        if not 0.0 <= recipe_ratio <= 1.0:
            raise ValueError(f"recipe mask ratio must be in [0, 1], got {recipe_ratio}")
        self.num_patches, self.ratio, self.recipe_ratio = int(num_patches), float(ratio), float(recipe_ratio)
        self.mask_id, self.seed, self.epoch = int(mask_id), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self, indices: Sequence[int]) -> torch.Generator:
        """The batch's generator, seeded from (seed, epoch, sample indices)."""
        return torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, len(indices), *indices))

    def __call__(self, samples: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
        batch = collate(samples)
        if batch is None:
            return None
        b = len(batch["id"])
        if self.ratio == 0.0 and self.recipe_ratio == 0.0:
            batch["mask"] = torch.zeros(b, self.num_patches, dtype=torch.bool)
            return batch
        g = self.generator(batch["index"].tolist())
        batch["mask"] = random_patch_mask(b, self.num_patches, self.ratio, g)
        if self.recipe_ratio > 0.0:
            for k in TEXT_KEYS:
                batch[k], batch[f"{k}_mask"] = mask_tokens(batch[k], self.recipe_ratio,
                                                           self.mask_id, g)
        return batch
