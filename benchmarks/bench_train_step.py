"""Time one training step of the baseline variant, of MALM and of a plain timm ViT.

A MALM step is the trainer's own step function, :func:`malm.train.step.train_step` on what
:func:`malm.train.step.build_training` builds (forward with the per-step hard-negative stream +
criterion under optional bf16 autocast, backward, gradient clipping (train.grad_clip), Adam step
(fused on CUDA), scheduler step, logit-scale clamp and EMA teacher update): the bench times what
training runs. The baseline is the registered ``baseline`` variant (L_itc only, no
masking: T-Food without ITM) built the same way. The plain ViT is the same timm backbone alone:
forward + backward + AdamW step (fused on CUDA) on the same images, the reference a MALM step is
held against.

Configs: ``--config paper`` reads the ``model``, ``loss`` and ``train`` sections of
``configs/paper.yaml`` (its data/synth/eval/slurm parts are ignored), so the bench always follows the
paper config; ``small`` is the package default (the CPU model); a path to a YAML file is read the
same way as paper.yaml. The variant overlays come from
``baselines/{baseline,malm}.yaml``.

Steps of the three runners are interleaved (so load changes on a shared machine hit all three
alike) and the median is reported, as wall time and as process CPU time (on a shared CPU,
``--threads 1`` + CPU time is the figure least disturbed by other jobs). On CUDA the peak memory
of each runner is reported: its resident tensors (model, optimizer state, gradients, batches) plus
the largest transient of one of its steps, measured with the peak counter reset around each of
its own steps, so interleaved runners do not count against each other.

Targets (printed with PASS/FAIL):
  baseline step time / plain ViT step time <= 2.0  (the recipe encoder's cost, benchmark issue)
  MALM images/s / plain ViT images/s >= 0.6
  MALM step time / baseline step time  <= 1.3

    python benchmarks/bench_train_step.py --config small --batch 16 --steps 3
    python benchmarks/bench_train_step.py --config params.yaml --data data/cache --threads 2
    python benchmarks/bench_train_step.py --config paper --batch 128 --device cuda --bf16 \\
        --compile both --json train_step.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from malm import variants
from malm.config import Config, load_yaml, merge, to_dict
from malm.io import atomic_write_json
from malm.models.image import create_vit
from malm.train.step import build_training, train_step

REPO = Path(__file__).resolve().parents[1]
PAPER_YAML = REPO / "configs" / "paper.yaml"
# Sections of a config file that shape a training step; data/synth/eval/slurm (and non-config
# keys such as pipeline) are ignored: the bench makes its own synthetic batches.
STEP_SECTIONS = ("model", "loss", "train")
RUNNERS = ("baseline", "malm", "plain_vit")
TARGETS = {
    "baseline_over_vit_step_time": {"max": 2.0, "label": "baseline step / plain ViT step"},
    "malm_over_vit_images_per_s": {"min": 0.6, "label": "MALM img/s / plain ViT img/s"},
    "malm_over_baseline_step_time": {"max": 1.3, "label": "MALM step / baseline step"},
}
VOCAB = 10_000
MiB = 2**20


# ------------------------------------------------------------------------------------ config
def base_config(name: str) -> tuple[Config, str]:
    """(config, where it came from): ``small`` = package defaults, ``paper`` = configs/paper.yaml,
    anything else = a YAML file path; only STEP_SECTIONS of a file are applied, and the image encoder always starts from random init
    (model.image.pretrained=null, allow_random_init=true: weights do not change the timing)."""
    if name == "small":
        cfg, source = Config(), "malm.config defaults"
    else:
        path = PAPER_YAML if name == "paper" else Path(name)
        raw = load_yaml(path)
        cfg, source = merge(Config(), {k: v for k, v in raw.items() if k in STEP_SECTIONS}), str(path)
    # timing needs no weights: random init (the paper config otherwise insists on CLIP weights)
    return merge(cfg, {"model": {"image": {"pretrained": None, "allow_random_init": True}}}), source


def make_config(base: Config, variant: str) -> Config:
    """base <- the registered variant's overlay (as the CLI/DVC/Slurm entry points resolve it)."""
    return variants.resolve(variant, base)


DATA_CACHE: str | None = None  # --data: take the recipes of real batches from a prepared cache


def cache_batch(cfg: Config, B: int, seed: int) -> dict:
    """Batch ``seed`` of B consecutive train pairs of the prepared cache ``DATA_CACHE`` (the
    pipeline's own data loader path: RecipeImageDataset + collate)."""
    from malm.data.dataset import RecipeImageDataset, collate

    ds = RecipeImageDataset(DATA_CACHE, "train", train=True, image_size=cfg.model.image.img_size,
                            seed=seed)
    batch = collate([ds[i] for i in range(seed * B, (seed + 1) * B)])
    return {k: batch[k] for k in ("image", "title", "ingrs", "instrs", "cls")}


def make_batch(cfg: Config, B: int, device: torch.device, seed: int) -> dict:
    """Synthetic Recipe1M-shaped batch: 3..20 ingredient / instruction lines of 3..15 tokens
    (with ``--data``: images and recipes of the prepared cache instead)."""
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
    if DATA_CACHE:
        batch = {**cache_batch(cfg, B, seed), "mask": mask}
    else:
        batch = {"image": torch.randn(B, 3, img.img_size, img.img_size, generator=g),
                 "title": title, "ingrs": lines(d.max_ingrs), "instrs": lines(d.max_instrs),
                 "cls": torch.randint(0, 20, (B,), generator=g), "mask": mask}
    return {k: v.to(device) for k, v in batch.items()}


# ------------------------------------------------------------------------------------ runners
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One benchmarked step function with its own model, optimizer and batches.

    On CUDA it tracks its own memory: ``resident`` = bytes it keeps between steps (grown by the
    net allocation of each step, e.g. lazily created optimizer state), ``peak`` = the largest
    resident + transient of one of its steps (peak counter reset before each of its steps).
    """

    def __init__(self, name: str, device: torch.device, build: Callable[[], tuple[Callable, dict]]):
        self.name, self.device = name, device
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self.error: str | None = None
        self.info: dict = {}
        self.resident = self.peak = 0
        self.first_step: float | None = None  # wall s of step 0: includes torch.compile's first compile
        self.timed_compiles = 0  # dynamo frame compiles during timed steps (recompiles pollute timing)
        self.step: Callable[[int], None] | None = None
        cuda = device.type == "cuda"
        if cuda:
            sync(device)
            a0 = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        try:
            self.step, self.info = build()
        except Exception as exc:  # noqa: BLE001 - report and keep benchmarking the others
            self._fail("build", exc)
        if cuda:
            sync(device)
            self.resident = torch.cuda.memory_allocated(device) - a0
            self.peak = torch.cuda.max_memory_allocated(device) - a0

    def _fail(self, where: str, exc: BaseException) -> None:
        self.error = f"{where}: {type(exc).__name__}: {exc}"
        self.step = None
        print(f"  !! {self.name} failed in {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc(limit=-4)

    @property
    def ok(self) -> bool:
        return self.step is not None and self.error is None

    def run(self, i: int, record: bool) -> None:
        if not self.ok:
            return
        cuda = self.device.type == "cuda"
        sync(self.device)
        if cuda:
            a0 = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        f0 = _dynamo_frames()
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            self.step(i)
            sync(self.device)
        except Exception as exc:  # noqa: BLE001
            self._fail(f"step {i}", exc)
            return
        t1, c1 = time.perf_counter(), time.process_time()
        if self.first_step is None:
            self.first_step = t1 - t0
        if cuda:
            self.peak = max(self.peak, self.resident + torch.cuda.max_memory_allocated(self.device) - a0)
            self.resident += torch.cuda.memory_allocated(self.device) - a0
        if record:
            self.timed_compiles += _dynamo_frames() - f0
            self.times.append(t1 - t0)
            self.cpu_times.append(c1 - c0)

    def close(self) -> None:
        self.step = None


COMPILE_BACKEND = "inductor"  # set from --compile-backend


def _dynamo_stats() -> dict:
    """Process-wide torch.compile counters: frames converted, graph breaks (reason -> count)."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001
        return {}
    return {"frames": dict(counters["frames"]),
            "graph_breaks": {str(k)[:300]: int(v) for k, v in counters["graph_break"].items()}}


def _dynamo_frames() -> int:
    """Frames torch.compile has converted so far (first compiles and recompiles; 0 if unknown)."""
    try:
        from torch._dynamo.utils import counters
    except Exception:  # noqa: BLE001
        return 0
    return int(counters["frames"]["total"])


def _maybe_compile(module: torch.nn.Module, compiled: bool):
    return torch.compile(module, backend=COMPILE_BACKEND) if compiled else module


def malm_runner(variant: str, base: Config, args, device, autocast, compiled: bool) -> Runner:
    """The trainer's own step (:func:`malm.train.step.train_step` on what
    :func:`malm.train.step.build_training` builds) for ``variant``; ``--bf16`` sets its autocast."""

    def build():
        cfg = merge(make_config(base, variant), {"train": {"seed": args.seed}})
        # the schedules laid out over the timed steps (their values do not change a step's cost)
        t = build_training(cfg, VOCAB, device, steps_per_epoch=max(args.warmup + args.steps, 1))
        t.amp = args.bf16
        model = t.model.train()
        if args.freeze_image:
            model.set_image_trainable(False)
        fwd = _maybe_compile(model, compiled)
        batches = [make_batch(cfg, args.batch, device, seed=s) for s in range(2)]

        def step(i: int) -> None:
            train_step(t, fwd, batches[i % 2], 0, i)

        n = sum(p.numel() for _, p in model.student_parameters() if p.requires_grad)
        info = {"trainable_params_M": n / 1e6, "matching": model.matching is not None,
                "predictor": model.predictor is not None, "teacher": model.teacher is not None,
                "grad_clip": t.grad_clip, "mask_ratio": cfg.model.mask.ratio}
        if variant == "malm":
            info["matching_cfg"] = to_dict(cfg.model.matching)
        print(f"  {variant}{' (compiled)' if compiled else ''}: {n / 1e6:.2f} M trainable params, parts: "
              f"matching={info['matching']} predictor={info['predictor']} teacher={info['teacher']}")
        return step, info

    return Runner(variant, device, build)


def vit_runner(base: Config, args, device, autocast, compiled: bool) -> Runner:
    """The plain timm ViT of the config's image encoder: forward + backward + fused AdamW."""

    def build():
        cfg = make_config(base, "baseline")
        torch.manual_seed(args.seed)
        vit = create_vit(cfg.model.image).to(device).train()
        opt = torch.optim.AdamW(vit.parameters(), lr=cfg.train.lr_image, fused=device.type == "cuda")
        fwd = _maybe_compile(vit, compiled)
        images = make_batch(cfg, args.batch, device, seed=0)["image"]

        def step(i: int) -> None:
            opt.zero_grad(set_to_none=True)
            with autocast():
                out = fwd(images)  # forward_features + pooling (no classifier: num_classes=0)
            out.float().pow(2).mean().backward()
            opt.step()

        n = sum(p.numel() for p in vit.parameters())
        print(f"  plain_vit{' (compiled)' if compiled else ''}: {cfg.model.image.arch} "
              f"{n / 1e6:.2f} M params, fused AdamW={device.type == 'cuda'}")
        return step, {"trainable_params_M": n / 1e6, "arch": cfg.model.image.arch}

    return Runner("plain_vit", device, build)


# ------------------------------------------------------------------------------------ report
def summarize(runners: list[Runner], batch: int, device: torch.device) -> dict:
    out = {}
    for r in runners:
        row: dict[str, Any] = {"ok": r.ok and bool(r.times), "error": r.error, **r.info,
                               "first_step_s": r.first_step}
        if r.times:
            med, cpu = statistics.median(r.times), statistics.median(r.cpu_times)
            row.update({"step_ms_median": 1e3 * med, "step_ms_min": 1e3 * min(r.times),
                        "images_per_s": batch / med, "cpu_ms_median": 1e3 * cpu,
                        "images_per_cpu_s": batch / cpu if cpu > 0 else None,
                        "steps_timed": len(r.times), "compiles_in_timed_steps": r.timed_compiles})
        if device.type == "cuda":
            row["peak_mem_MiB"] = r.peak / MiB
            row["resident_mem_MiB"] = r.resident / MiB
        out[r.name] = row
    return out


def ratios(rows: dict) -> dict:
    def get(name, key):
        return rows.get(name, {}).get(key)

    res: dict[str, Any] = {}
    m, v, b = get("malm", "images_per_s"), get("plain_vit", "images_per_s"), get("baseline", "images_per_s")
    ms, bs = get("malm", "step_ms_median"), get("baseline", "step_ms_median")
    vs = get("plain_vit", "step_ms_median")
    values = {"baseline_over_vit_step_time": bs / vs if bs and vs else None,
              "malm_over_vit_images_per_s": m / v if m and v else None,
              "malm_over_baseline_step_time": ms / bs if ms and bs else None}
    for key, value in values.items():
        t = TARGETS[key]
        passed = None if value is None else (value >= t["min"] if "min" in t else value <= t["max"])
        res[key] = {"value": value, "target": (">= " if "min" in t else "<= ") + str(t.get("min", t.get("max"))),
                    "pass": passed}
    res["baseline_over_vit_images_per_s"] = {"value": b / v if b and v else None}
    cm, cv, cb = get("malm", "cpu_ms_median"), get("plain_vit", "cpu_ms_median"), get("baseline", "cpu_ms_median")
    res["cpu_time"] = {"malm_over_vit_images_per_s": cv / cm if cm and cv else None,
                       "malm_over_baseline_step_time": cm / cb if cm and cb else None}
    return res


def _fmt(x, spec: str, width: int = 0) -> str:
    """Right-aligned number (``-`` when missing); width 0 = no padding."""
    text = "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)
    return text.rjust(width)


def _status(r: dict) -> str:
    if not r["ok"]:
        return f"FAILED {r['error']}"
    n = r.get("compiles_in_timed_steps") or 0
    return f"ok, but {n} torch.compile (re)compiles inside timed steps" if n else "ok"


def print_phase(mode: str, rows: dict, rat: dict, device: torch.device) -> None:
    cuda = device.type == "cuda"
    print(f"\n== {mode} ==")
    head = (f"{'runner':<12}{'ms/step':>10}{'min ms':>10}{'img/s':>10}{'cpu ms':>10}{'img/cpu-s':>11}"
            + (f"{'peak MiB':>11}" if cuda else "") + f"{'params M':>10}  status")
    print(head)
    print("-" * len(head) + "------")
    for name, r in rows.items():
        print(f"{name:<12}{_fmt(r.get('step_ms_median'), '.1f', 10)}{_fmt(r.get('step_ms_min'), '.1f', 10)}"
              f"{_fmt(r.get('images_per_s'), '.1f', 10)}{_fmt(r.get('cpu_ms_median'), '.1f', 10)}"
              f"{_fmt(r.get('images_per_cpu_s'), '.1f', 11)}"
              + (_fmt(r.get('peak_mem_MiB'), '.0f', 11) if cuda else "")
              + f"{_fmt(r.get('trainable_params_M'), '.2f', 10)}  {_status(r)}")
    for key, t in TARGETS.items():
        r = rat[key]
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[r["pass"]]
        print(f"  {t['label']:<32} {_fmt(r['value'], '.3f', 7)}  (target {r['target']})  {verdict}")
    print(f"  {'baseline img/s / plain ViT img/s':<32} {_fmt(rat['baseline_over_vit_images_per_s']['value'], '.3f', 7)}")
    if not cuda:
        c = rat["cpu_time"]
        print(f"  [cpu time] MALM/ViT img/s {_fmt(c['malm_over_vit_images_per_s'], '.3f', 0)}   "
              f"MALM/baseline step {_fmt(c['malm_over_baseline_step_time'], '.3f', 0)}")


def environment(device: torch.device) -> dict:
    import timm

    env = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
           "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env.update({"gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda,
                    "gpu_mem_GiB": torch.cuda.get_device_properties(device).total_memory / 2**30})
    return env


# ------------------------------------------------------------------------------------ main
def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="\n".join(__doc__.split("\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", metavar="{small,paper,PATH}",
                    help="Model/loss/train config: small = the package defaults (CPU model); paper = the "
                         f"model, loss and train sections of {PAPER_YAML.relative_to(REPO)}; or a path to a "
                         "YAML file read the same way. (default: small)")
    ap.add_argument("--batch", type=int, default=64, help="Batch size of every runner. (default: 64)")
    ap.add_argument("--steps", type=int, default=5, help="Timed steps per runner (the median is reported). "
                                                         "(default: 5)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="Untimed steps per runner first (cuDNN/allocator warm-up; compilation happens in "
                         "the first of them, so keep >= 2 with --compile). (default: 2)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default: cpu)")
    ap.add_argument("--bf16", action="store_true",
                    help="bf16 autocast around forward + loss, as the trainer on CUDA (train.amp). Very slow on "
                         "CPUs without native bf16: a CUDA option.")
    ap.add_argument("--compile", nargs="?", const="on", default="off", choices=["off", "on", "both"],
                    help="torch.compile each runner's model (MALM/baseline model, plain ViT). Bare --compile "
                         "or 'on' = compiled only; 'both' = an eager phase then a compiled phase, each with "
                         "its own table, ratios and peak memory; 'off' = eager only. (default: off)")
    ap.add_argument("--compile-backend", default="inductor",
                    help="torch.compile backend: inductor (what training uses) or e.g. aot_eager, which "
                         "traces forward and backward like inductor but generates no kernels: a quick check "
                         "of the compile path on CPU, not a speed figure. (default: inductor)")
    ap.add_argument("--recompile-limit", type=int, default=0,
                    help="torch._dynamo recompile_limit per code object (0 = torch's default, 8). A frame "
                         "that needs more recompiles runs eager from then on; a low limit bounds the compile "
                         "time of a model that recompiles every step (the status column and "
                         "compiles_in_timed_steps in the JSON show it). (default: 0)")
    ap.add_argument("--freeze-image", action="store_true",
                    help="Freeze the ViT backbone of the MALM/baseline runners (the paper's first 20 epochs, "
                         "train.freeze_image_epochs); the plain ViT still trains. Default: unfrozen, the "
                         "steady state.")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default).")
    ap.add_argument("--seed", type=int, default=0, help="Seed of model init, batches and hard negatives.")
    ap.add_argument("--data", metavar="CACHE_DIR", default=None,
                    help="Time on batches of a prepared cache (e.g. data/cache: the embedded default's "
                         "recipes, about 6.5 lines each) instead of the Recipe1M-shaped random batch "
                         "(3-20 lines of 3-15 tokens). The cache's vocabulary must fit in the bench's "
                         f"{VOCAB} word ids.")
    ap.add_argument("--json", metavar="OUT", default=None,
                    help="Also write every figure (per phase and runner: ms/step, img/s, CPU time, peak "
                         "memory, params; the ratios with targets; config and environment) to this JSON "
                         "file. Rewritten after each phase, so a run cut short keeps what finished.")
    return ap


def main(argv=None) -> int:
    global COMPILE_BACKEND
    args = make_parser().parse_args(argv)
    COMPILE_BACKEND = args.compile_backend
    global DATA_CACHE
    DATA_CACHE = args.data
    if args.recompile_limit > 0:
        import torch._dynamo.config as dynamo_config

        for name in ("recompile_limit", "cache_size_limit"):  # new / old name of the same knob
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, args.recompile_limit)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    base, source = base_config(args.config)
    modes = {"off": ["eager"], "on": ["compiled"], "both": ["eager", "compiled"]}[args.compile]

    def autocast():
        if not args.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    env = environment(device)
    img = base.model.image
    print(f"config={args.config} ({source}) batch={args.batch} steps={args.steps} warmup={args.warmup} "
          f"device={device} bf16={args.bf16} compile={args.compile}"
          f"{'/' + args.compile_backend if args.compile != 'off' else ''} freeze_image={args.freeze_image} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"  image: {img.arch} {img.img_size}px/{img.patch_size} d={img.embed_dim} x{img.depth}   "
          f"matching: {to_dict(base.model.matching)}")
    if device.type == "cuda":
        print(f"  gpu: {env['gpu']} ({env['gpu_mem_GiB']:.0f} GiB), cuda {env['cuda']}")

    report: dict[str, Any] = {"args": vars(args), "config_source": source, "env": env,
                              "config": {"model": to_dict(base.model), "loss": to_dict(base.loss),
                                         "train": to_dict(base.train)},
                              "targets": {k: {kk: vv for kk, vv in v.items()} for k, v in TARGETS.items()},
                              "phases": {}}
    all_ok = True
    for mode in modes:
        compiled = mode == "compiled"
        print(f"\n[{mode}] building runners")
        runners = [malm_runner("baseline", base, args, device, autocast, compiled),
                   malm_runner("malm", base, args, device, autocast, compiled),
                   vit_runner(base, args, device, autocast, compiled)]
        t0 = time.perf_counter()
        for i in range(args.warmup + args.steps):
            for r in runners:
                r.run(i, record=i >= args.warmup)
        rows = summarize(runners, args.batch, device)
        rat = ratios(rows)
        report["phases"][mode] = {"runners": rows, "ratios": rat, "seconds": time.perf_counter() - t0}
        if compiled:
            report["phases"][mode]["dynamo"] = _dynamo_stats()
        all_ok &= all(r["ok"] for r in rows.values())
        print_phase(mode, rows, rat, device)
        for r in runners:
            r.close()
        del runners
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if args.json:
            atomic_write_json(args.json, report)
    if len(modes) == 2:
        e, c = (report["phases"][m]["runners"] for m in modes)
        speed = {n: (c[n]["images_per_s"] / e[n]["images_per_s"]
                     if c[n].get("images_per_s") and e[n].get("images_per_s") else None) for n in RUNNERS}
        report["compile_speedup"] = speed
        print("\ncompiled / eager img/s: " + "   ".join(f"{n} {_fmt(s, '.2f', 0)}x" for n, s in speed.items()))
        if args.json:
            atomic_write_json(args.json, report)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
