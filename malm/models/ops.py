"""Small pure tensor functions shared by the encoders and the matching module, and every collective
across DDP ranks (gathers with and without gradients, ``all_reduce_mean``): the one home of
distributed ops, used by the model, the losses and the trainer. Process-group setup and the failure
watchdog are :mod:`malm.train.distributed`.

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


# ------------------------------------------------------------------ across ranks (DDP)
def is_dist() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over all ranks, as a new tensor (a copy of ``x`` in a single process)."""
    y = x.detach().clone()
    if not y.is_floating_point():
        y = y.float()
    if is_dist():
        dist = torch.distributed
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        y /= dist.get_world_size()
    return y


def world_info() -> tuple[int, int]:
    """(rank, world_size) of the default process group; (0, 1) when not distributed."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient of the gathered tensor and returns this
    rank's slice (open_clip's ``gather_features`` with full gradients). Works on gloo and NCCL."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world = world_info()
        ctx.rank, ctx.n = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        torch.distributed.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] of every rank (equal n) -> [world * n, ...], rank order.

    Gradient contract: every rank computes a loss whose mean over ranks is the global loss (the same
    full loss on every rank, or a mean over this rank's anchors). The backward sums the ranks'
    gradients and DDP averages the parameter gradients, so the update equals the single-process
    update on the concatenated batch. Identity when not distributed.
    """
    return x if world_info()[1] == 1 else _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """``gather_with_grad`` without autograd (labels, detached embeddings)."""
    world = world_info()[1]
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def pad_tokens_to(x: torch.Tensor, pad: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Append pad positions up to ``length``: x [B, S, D], pad [B, S] -> [B, L, D], [B, L]"""
    extra = length - x.shape[1]
    if extra <= 0:
        return x, pad
    x = torch.cat([x, x.new_zeros(x.shape[0], extra, x.shape[2])], dim=1)
    return x, torch.cat([pad, pad.new_ones(pad.shape[0], extra)], dim=1)


def max_over_ranks(n: int, device: torch.device) -> int:
    """The largest ``n`` over ranks (ranks trim their recipe tokens to their own longest row)."""
    if world_info()[1] == 1:
        return n
    t = torch.tensor([n], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())
