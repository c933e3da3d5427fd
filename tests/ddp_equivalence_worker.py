"""Run under torchrun with 2 ranks: the gathered losses and the DDP-averaged gradients of 2 x n
samples equal the single-process loss and gradients on the same 2n samples.

argv: SMOKE_CONFIG CACHE_DIR OUT_JSON [KEY=VALUE ...]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from malm import config as C
from malm import variants
from malm.data.cache import vocab_size
from malm.data.dataset import RecipeImageDataset
from malm.data.masking import MaskingCollate
from malm.train.step import build_training, forward_losses

N_PER_RANK = 16


def losses_and_grads(t, batch):
    """The trainer's forward half (malm.train.step.forward_losses), then backward."""
    model = t.model
    model.zero_grad(set_to_none=True)
    logs = forward_losses(t, model, batch, epoch=1, i=0)
    logs["loss"].backward()
    grads = {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
             for n, p in model.student_parameters()}
    return {k: float(v) for k, v in logs.items() if k.endswith("loss")}, grads


def main() -> None:
    smoke, cache_dir, out_path, *overrides = sys.argv[1:]
    cfg = variants.resolve_from_files("malm", [smoke], C.parse_overrides(overrides))
    cache = Path(cache_dir)
    t = build_training(cfg, vocab_size(cache), torch.device("cpu"), steps_per_epoch=1)
    t.model.eval()  # eval: no dropout
    ds = RecipeImageDataset(cache, "train", train=True, image_size=cfg.model.image.img_size, seed=0)
    P = (cfg.model.image.img_size // cfg.model.image.patch_size) ** 2
    collate = MaskingCollate(P, cfg.model.mask.ratio, seed=0)
    full = collate([ds[i] for i in range(2 * N_PER_RANK)])
    full.pop("n_skipped")
    ref_losses, ref_grads = losses_and_grads(t, full)  # before the process group

    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    part = {k: (v[rank * N_PER_RANK:(rank + 1) * N_PER_RANK] if torch.is_tensor(v) or isinstance(v, list) else v)
            for k, v in full.items()}
    losses, grads = losses_and_grads(t, part)
    world = torch.distributed.get_world_size()
    for name in list(losses):  # what the trainer logs: the mean over ranks
        t = torch.tensor(losses[name])
        torch.distributed.all_reduce(t)
        losses[name] = float(t) / world
    errors = {}
    for name, g in grads.items():  # what DDP applies: the mean over ranks
        torch.distributed.all_reduce(g)
        g /= world
        # relative to the parameter's largest gradient, floored: attention key biases have a zero
        # gradient in exact arithmetic (softmax is shift-invariant), float noise ~1e-9
        scale = ref_grads[name].abs().max().clamp(min=1e-4)
        errors[name] = float((g - ref_grads[name]).abs().max() / scale)
    worst = max(errors.values())
    if rank == 0:
        with open(out_path, "w") as fh:
            json.dump({"ref": ref_losses, "ddp": losses, "worst_grad_rel_err": worst,
                       "worst_params": sorted(errors, key=errors.get)[-5:],
                       "n_params": len(grads)}, fh)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
