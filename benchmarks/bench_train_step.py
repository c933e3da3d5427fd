"""Time one training step of the baseline variant, of MALM and of a plain timm ViT.

A MALM step = forward + loss + backward + Adam step + EMA teacher update; the baseline is the same
with L_itc only and no masking (T-Food without ITM); the plain ViT is forward + backward of the same
backbone on the same images. Steps of the three are interleaved (so load changes on a shared
machine hit all three alike) and the median is reported, as wall time and as process CPU time
(on a shared CPU, ``--threads 1`` + CPU time is the figure least disturbed by other jobs).

    python benchmarks/bench_train_step.py --config small --batch 64 --steps 5
    python benchmarks/bench_train_step.py --config paper --batch 128 --device cuda --bf16
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from malm.config import Config, from_dict
from malm.losses import MALMCriterion
from malm.models import build_model
from malm.models.image import create_vit

PAPER = {  # spec "Model" / "Two-level matching module" / "Masked self-distillation"
    "image": {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "recipe": {"width": 512, "layers": 2, "heads": 4, "decoder_layers": 2},
    "matching": {"width": 768, "layers": 4, "heads": 4},
    "distill": {"predictor_width": 768, "predictor_layers": 2, "predictor_heads": 2},
    "embed_dim": 1024,
}
VARIANTS = {
    "baseline": {"loss": {"lambda_gc": 0.0, "lambda_lc": 0.0, "lambda_dist": 0.0},
                 "model": {"mask": {"ratio": 0.0}}},
    "malm": {"model": {"mask": {"ratio": 0.75}}},
}
VOCAB = 10_000


def make_config(size: str, variant: str) -> Config:
    model = dict(PAPER) if size == "paper" else {}
    overlay = VARIANTS[variant]
    model = {**model, **{k: {**model.get(k, {}), **v} for k, v in overlay.get("model", {}).items()}}
    return from_dict({"model": model, "loss": overlay.get("loss", {})})


def make_batch(cfg: Config, B: int, device: torch.device, seed: int) -> dict:
    """Synthetic Recipe1M-shaped batch: 3..20 ingredient / instruction lines of 3..15 tokens."""
    g = torch.Generator().manual_seed(seed)
    d, img = cfg.data, cfg.model.image

    def lines(n_max: int) -> torch.Tensor:
        ids = torch.randint(3, VOCAB, (B, n_max, d.max_tokens), generator=g)
        n = torch.randint(3, n_max + 1, (B, 1, 1), generator=g)
        length = torch.randint(3, d.max_tokens + 1, (B, n_max, 1), generator=g)
        keep = (torch.arange(n_max)[None, :, None] < n) & (torch.arange(d.max_tokens) < length)
        return ids * keep

    title = torch.randint(3, VOCAB, (B, d.max_tokens), generator=g)
    title *= torch.arange(d.max_tokens) < torch.randint(2, 8, (B, 1), generator=g)
    P = (img.img_size // img.patch_size) ** 2
    n_hidden = int(round(cfg.model.mask.ratio * P))
    mask = torch.rand(B, P, generator=g).argsort(1) < n_hidden
    batch = {"image": torch.randn(B, 3, img.img_size, img.img_size, generator=g),
             "title": title, "ingrs": lines(d.max_ingrs), "instrs": lines(d.max_instrs),
             "cls": torch.randint(0, 20, (B,), generator=g), "mask": mask}
    return {k: v.to(device) for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One benchmarked step function with its own model, optimizer and batches."""

    def __init__(self, name: str, step, device):
        self.name, self.step, self.device = name, step, device
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def run(self, i: int, record: bool) -> None:
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        self.step(i)
        sync(self.device)
        if record:
            self.times.append(time.perf_counter() - t0)
            self.cpu_times.append(time.process_time() - c0)


def malm_runner(name: str, size: str, args, device, autocast) -> Runner:
    cfg = make_config(size, name)
    model = build_model(cfg.model, cfg.loss, VOCAB).to(device).train()
    crit = MALMCriterion(cfg.loss, distill_beta=cfg.model.distill.beta)
    opt = torch.optim.Adam(model.param_groups(1e-5, 1e-6, 0.0))
    fwd = torch.compile(model) if args.compile else model
    batches = [make_batch(cfg, args.batch, device, seed=s) for s in range(2)]

    def step(i: int) -> None:
        batch = batches[i % 2]
        with autocast():
            logs = crit(fwd(batch), batch, epoch=0)
        opt.zero_grad(set_to_none=True)
        logs["loss"].backward()
        opt.step()
        model.update_teacher(0.999)

    n = sum(p.numel() for _, p in model.student_parameters())
    print(f"  {name}: {n / 1e6:.2f} M trainable params, parts: "
          f"matching={model.matching is not None} predictor={model.predictor is not None} "
          f"teacher={model.teacher is not None}")
    return Runner(name, step, device)


def vit_runner(size: str, args, device, autocast) -> Runner:
    cfg = make_config(size, "baseline")
    vit = create_vit(cfg.model.image).to(device).train()
    fwd = torch.compile(vit) if args.compile else vit
    images = make_batch(cfg, args.batch, device, seed=0)["image"]

    def step(i: int) -> None:
        vit.zero_grad(set_to_none=True)
        with autocast():
            out = fwd.forward_features(images) if not args.compile else fwd(images)
        out.float().mean().backward()

    return Runner("plain_vit", step, device)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=["small", "paper"], default="small")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per runner")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    def autocast():
        if not args.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    print(f"config={args.config} batch={args.batch} steps={args.steps} device={device} "
          f"bf16={args.bf16} compile={args.compile} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}")
    if device.type == "cuda":
        print(f"  gpu: {torch.cuda.get_device_name(device)}")
    runners = [malm_runner("baseline", args.config, args, device, autocast),
               malm_runner("malm", args.config, args, device, autocast),
               vit_runner(args.config, args, device, autocast)]
    for i in range(args.warmup + args.steps):
        for r in runners:
            r.run(i, record=i >= args.warmup)

    med = {r.name: statistics.median(r.times) for r in runners}
    cpu = {r.name: statistics.median(r.cpu_times) for r in runners}
    print(f"\n{'runner':<12}{'wall ms/step':>14}{'min ms':>10}{'images/s':>10}"
          f"{'cpu ms/step':>14}{'images/cpu-s':>14}")
    for r in runners:
        print(f"{r.name:<12}{1e3 * med[r.name]:>14.1f}{1e3 * min(r.times):>10.1f}"
              f"{args.batch / med[r.name]:>10.1f}{1e3 * cpu[r.name]:>14.1f}"
              f"{args.batch / cpu[r.name]:>14.1f}")
    for label, t in (("wall", med), ("cpu", cpu)):
        print(f"\n[{label}] MALM / baseline step: {t['malm'] / t['baseline']:.2f}x (target <= 1.3x)"
              f"   MALM / plain ViT: {t['malm'] / t['plain_vit']:.2f}x"
              f"   baseline / plain ViT: {t['baseline'] / t['plain_vit']:.2f}x")


if __name__ == "__main__":
    main()
