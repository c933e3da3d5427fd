"""The training step: one function that every loop which trains calls.

* :func:`build_training` builds what a MALM run trains with (model, criterion, Adam groups, the
  learning-rate and teacher-momentum schedules) from a config: the trainer (single process and DDP,
  :mod:`malm.train.trainer`) and the train-step benchmark (``benchmarks/bench_train_step.py``) use
  it, so the benchmark times what training runs.
* :func:`forward_losses` is the forward half (per-step hard-negative stream, bf16 autocast, the
  criterion): the DDP equivalence test (``tests/ddp_equivalence_worker.py``) compares its gradients.
* :func:`train_step` is one whole step: forward, the finite-loss check (over all ranks), optional
  per-term gradient norms (:mod:`malm.train.gradshare`), backward, gradient clipping, the optimiser
  and scheduler steps, the logit-scale clamp and the EMA teacher update.

The CLIP stand-in pretraining (:mod:`malm.train.pretrain`) has its own model and loss but builds a
:class:`Training` around them and calls the same :func:`train_step`; a model takes part in the
optional hooks by defining ``clamp_logit_scales()`` and ``update_teacher(momentum)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from malm import config as C
from malm.models.ops import all_reduce_mean
from malm.seeds import mix_seed
from malm.train.gradshare import parameter_groups, term_grad_norms, weighted_terms

Criterion = Callable[[Any, dict, int], dict[str, torch.Tensor]]


@dataclass
class Training:
    """What a step needs, built once per run.

    ``model`` is the raw module (hooks, gradient clipping and norms act on it); the module a step
    calls may be a DDP or compiled wrapper of it. ``criterion(out, batch, epoch)`` returns the
    loss terms and their total under ``"loss"``. ``generator(epoch, i)`` gives the random stream
    the forward draws from (hard negatives; None = the model's default).
    """

    model: torch.nn.Module
    criterion: Criterion
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    steps_per_epoch: int
    total_steps: int
    grad_clip: float = 0.0
    amp: bool = False
    momentum: np.ndarray | None = None  # EMA teacher momentum per global step
    loss_weights: dict[str, float] | None = None  # the weights of the terms whose gradients are logged
    generator: Callable[[int, int], torch.Generator | None] | None = None


def build_training(cfg: C.Config, vocab_size: int, device: torch.device,
                   steps_per_epoch: int) -> Training:
    """The model (initialised from ``train.seed``), criterion, optimiser and schedules of ``cfg``.

    ``steps_per_epoch`` lays the learning-rate and momentum schedules out over ``train.epochs``.
    """
    # imported here: the stand-in pretraining (which has its own model and loss) calls train_step,
    # and its DVC stage should not depend on the MALM model and losses
    from malm.losses.criterion import MALMCriterion
    from malm.models.malm import build_model
    from malm.train.schedules import cosine_momentum_schedule, lr_factor
    from malm.train.seeding import seed_everything

    if steps_per_epoch <= 0:
        raise C.ConfigError(f"the train split gives no full batch of train.batch_size={cfg.train.batch_size}")
    seed_everything(cfg.train.seed)  # model init
    model = build_model(cfg.model, cfg.loss, vocab_size).to(device)
    criterion = MALMCriterion(cfg.loss, distill_beta=cfg.model.distill.beta)  # stateless
    groups = [g for g in model.param_groups(cfg.train.lr, cfg.train.lr_image, cfg.train.weight_decay,
                                               cfg.train.lr_word_embedding)
              if g["params"]]
    optimizer = torch.optim.Adam(groups, fused=device.type == "cuda")
    total_steps = steps_per_epoch * cfg.train.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(max(cfg.train.warmup_steps, 0), total_steps, cfg.train.lr_schedule,
                             step_every=cfg.train.lr_step_epochs * steps_per_epoch,
                             gamma=cfg.train.lr_step_gamma))
    seed = cfg.train.seed

    def negatives(epoch: int, i: int) -> torch.Generator:
        # one stream per step, the same on every rank (hard negatives are drawn for the global batch)
        return torch.Generator(device=device).manual_seed(mix_seed(seed, epoch, i))

    return Training(
        model=model, criterion=criterion, optimizer=optimizer, scheduler=scheduler, device=device,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, grad_clip=cfg.train.grad_clip,
        amp=device.type == "cuda" and cfg.train.amp,
        momentum=cosine_momentum_schedule(cfg.model.distill.momentum, cfg.model.distill.momentum_end,
                                          cfg.train.epochs, steps_per_epoch),
        loss_weights={"itc": cfg.loss.lambda_itc, "gc": cfg.loss.lambda_gc,
                      "lc": cfg.loss.lambda_lc, "dist": cfg.loss.lambda_dist,
                      "itm": cfg.loss.lambda_itm, "recipe": cfg.loss.lambda_recipe},
        generator=negatives)


def forward_losses(t: Training, module: torch.nn.Module, batch: dict, epoch: int, i: int
                   ) -> dict[str, torch.Tensor]:
    """Forward pass and criterion of step ``i`` of ``epoch`` (under bf16 autocast with ``t.amp``)."""
    kwargs = {}
    if t.generator is not None:
        kwargs["generator"] = t.generator(epoch, i)
    with torch.autocast(t.device.type, dtype=torch.bfloat16, enabled=t.amp):
        out = module(batch, **kwargs)
        return t.criterion(out, batch, epoch)


def train_step(t: Training, module: torch.nn.Module, batch: dict, epoch: int, i: int, *,
               log_grad_norms: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One optimisation step on ``batch`` (step ``i`` of ``epoch``) -> (loss terms, gradient norms).

    ``module`` is what the forward calls (``t.model`` or its DDP/compiled wrapper). The gradient
    norms (``grad/<term>/<group>``, :mod:`malm.train.gradshare`) are computed only with
    ``log_grad_norms`` and ``t.loss_weights``; they take extra backward passes but leave the update
    unchanged. A non-finite loss on any rank raises ``FloatingPointError`` on every rank.
    """
    losses = forward_losses(t, module, batch, epoch, i)
    loss = losses["loss"]
    if not torch.isfinite(all_reduce_mean(loss.detach())):
        raise FloatingPointError(f"non-finite loss at epoch {epoch} step {i}: "
                                 f"{ {k: float(v.detach()) for k, v in losses.items()} }")
    norms: dict[str, float] = {}
    if log_grad_norms and t.loss_weights:
        norms = term_grad_norms(weighted_terms(losses, t.loss_weights), parameter_groups(t.model))
    t.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if t.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.grad_clip)
    t.optimizer.step()
    t.scheduler.step()
    clamp = getattr(t.model, "clamp_logit_scales", None)
    if clamp is not None:
        clamp()
    if t.momentum is not None:
        step = epoch * t.steps_per_epoch + i
        t.model.update_teacher(float(t.momentum[min(step, t.total_steps - 1)]))
    return losses, norms
