"""Small pure tensor functions shared by the encoders and the matching module.

Pad masks follow PyTorch's ``key_padding_mask`` convention: ``True`` = padding (ignored).
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Mean over the token axis ignoring pads; an all-pad row gives a zero vector.

    x: [B, S, D], pad: [B, S] bool (True = pad) -> [B, D]
    """
    keep = (~pad).to(x.dtype).unsqueeze(-1)  # [B, S, 1]
    return (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def safe_key_padding(pad: torch.Tensor) -> torch.Tensor:
    """Un-pad rows that are entirely padding so attention over them stays finite (no NaN).

    The outputs of such rows are garbage-but-finite; callers drop them with the *real* pad
    mask (masked_mean, zeroed tokens). pad: [B, S] bool -> [B, S] bool
    """
    return pad & ~pad.all(dim=1, keepdim=True)


def visible_indices(mask: torch.Tensor, num_visible: int) -> torch.Tensor:
    """Indices of the visible (mask False) patches of each row, in ascending patch order.

    A stable argsort puts the False entries first (MAE's ``ids_keep`` without the noise: the
    noise already lives on the data side, which drew the mask).
    mask: [B, P] bool (True = hidden), every row hides P - num_visible patches -> [B, V]
    """
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
    return order[:, :num_visible]


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x: [B, P, C], idx: [B, V] -> [B, V, C]"""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(base: torch.Tensor, idx: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """Out-of-place: ``base`` with ``src`` written at token positions ``idx`` (grads reach both).

    base: [B, P, C], idx: [B, V], src: [B, V, C] -> [B, P, C]
    """
    return base.scatter(1, idx.unsqueeze(-1).expand(-1, -1, base.shape[-1]), src)
