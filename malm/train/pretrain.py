"""The CLIP stand-in: pretrain the image encoder once, contrastively, on a separate corpus.

MALM starts its image encoder from OpenAI's CLIP; no such weights exist for the synthetic default,
and learning to see from scratch inside every benchmark run is what keeps it near chance. This
stage plays CLIP's part:

* **Corpus**: a synthetic Recipe1M-format set generated with its own seed (``pretrain.seed`` must
  differ from ``synth.seed``), its own size and, by default, the generator's full ingredient list
  (156, against the benchmark's 48): no recipe, image or seed is shared with the benchmark.
* **Captions**: the recipe title plus a random ``caption_keep`` share of its ingredients
  (``ingredients``: det_ingrs names, default, or layer1's raw lines), as a bag of words (partial,
  like web alt-text), encoded by a throw-away ``EmbeddingBag`` tower.
* **Objective**: symmetric InfoNCE with a learnable temperature (CLIP), Adam with warmup and a
  cosine decay (``schedule``), the ViT of ``model.image`` plus an embedding head; the head and the
  caption tower are discarded.
* **Output**: ``pretrain.out`` (the ViT as a timm state dict: ``model.image.pretrained`` loads it
  exactly as it loads OpenAI's file), ``pretrain.json`` (corpus, steps, time, the validation curve:
  image->caption R@1 on ``n_val`` held-out pairs) and ``pretrain_curve.png``.

What it does not mimic: CLIP saw 400M real image-text pairs; this corpus is drawn by the same
renderer as the benchmark (same look of each ingredient), so it is closer in domain than CLIP is to
Recipe1M.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from malm import config as C
from malm.data.cache import prepare, vocab_size
from malm.data.dataset import RecipeImageDataset, collate
from malm.eval.protocol import evaluate
from malm.io import atomic_write_json, save_checkpoint, save_figure
from malm.models.heads import EmbeddingHead
from malm.models.image import ImageEncoder
from malm.synth.write import generate
from malm.train.schedules import lr_factor
from malm.train.seeding import seed_everything, set_deterministic
from malm.train.step import Training, train_step

log = logging.getLogger(__name__)


def corpus_configs(cfg: C.Config) -> tuple[C.SynthConfig, C.DataConfig]:
    """(SynthConfig, DataConfig) of the pretraining corpus, derived from the benchmark's."""
    p = cfg.pretrain
    if p.seed == cfg.synth.seed:
        raise C.ConfigError(f"pretrain.seed={p.seed} equals synth.seed: the pretraining corpus must "
                            "not share its seed with the benchmark's data")
    synth = dataclasses.replace(cfg.synth, seed=p.seed, n_train=p.n_train, n_val=p.n_val,
                                n_test=min(200, cfg.synth.n_test), text_only_frac=0.0,
                                n_ingredients=p.n_ingredients)
    data = dataclasses.replace(cfg.data, root=p.root, cache_dir=p.cache_dir, synthetic=True,
                               max_pairs={}, batch_sampler="random",
                               ingredients=p.ingredients)
    return synth, data


class CaptionTower(nn.Module):
    """Bag of words -> unit vector. tokens [B, L] (0 = pad) -> [B, E]"""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.bag = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=0)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(self.bag(tokens)), dim=-1)


def caption_tokens(batch: dict, keep: float, generator: torch.Generator | None) -> torch.Tensor:
    """Title words + a random ``keep`` share of the ingredient lines (absent lines stay pads).

    title [B, T], ingrs [B, I, T] -> [B, T + I * T]
    """
    ingrs = batch["ingrs"]
    if keep < 1.0:
        drop = torch.rand(ingrs.shape[:2], generator=generator) >= keep
        ingrs = ingrs.masked_fill(drop.unsqueeze(-1), 0)
    return torch.cat([batch["title"], ingrs.flatten(1)], dim=1)


class ImageTower(nn.Module):
    """The ViT of ``model.image`` (random init) + an embedding head on its CLS token."""

    def __init__(self, image_cfg: C.ImageEncoderConfig, dim: int):
        super().__init__()
        self.encoder = ImageEncoder(dataclasses.replace(image_cfg, pretrained=None), load_weights=False)
        self.head = EmbeddingHead(self.encoder.embed_dim, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens, _ = self.encoder.forward_visible(images, None)
        return self.head(tokens[:, 0])


def clip_loss(img: torch.Tensor, cap: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over the batch, matches on the diagonal. [B, E], [B, E] -> scalar"""
    logits = logit_scale.exp() * img @ cap.t()
    target = torch.arange(len(img), device=img.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class StandIn(nn.Module):
    """Image tower + caption tower + CLIP's learnable logit scale: the model one pretraining step
    trains (:func:`malm.train.step.train_step`). forward -> (image, caption, logit scale)."""

    def __init__(self, image_tower: ImageTower, caption_tower: CaptionTower, tau_init: float,
                 caption_keep: float):
        super().__init__()
        self.image_tower, self.caption_tower = image_tower, caption_tower
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / tau_init)))
        self.caption_keep = caption_keep

    def forward(self, batch: dict, generator: torch.Generator | None = None):
        image = self.image_tower(batch["image"])
        return image, self.caption_tower(caption_tokens(batch, self.caption_keep, generator)), self.logit_scale

    @torch.no_grad()
    def clamp_logit_scales(self) -> None:
        """After each optimiser step: keep the temperature in CLIP's range (logit scale <= 100)."""
        self.logit_scale.clamp_(0.0, math.log(100.0))


@torch.no_grad()
def validate(image_tower, caption_tower, loader) -> dict[str, float]:
    """Image->caption and caption->image R@1 / medR on the held-out corpus pairs (one bag)."""
    image_tower.eval()
    caption_tower.eval()
    imgs, caps, ids = [], [], []
    for batch in loader:
        imgs.append(image_tower(batch["image"]))
        caps.append(caption_tower(caption_tokens(batch, 1.0, None)))
        ids.extend(batch["id"])
    image_tower.train()
    caption_tower.train()
    image, caption = torch.cat(imgs).numpy(), torch.cat(caps).numpy()
    res = evaluate(image, caption, np.asarray(ids), protocol="tfood", bag_size=len(ids), n_bags=1)
    return {"val/img2cap_R@1": res["img2rec"]["R@1"]["mean"],
            "val/cap2img_R@1": res["rec2img"]["R@1"]["mean"],
            "val/img2cap_medR": res["img2rec"]["medR"]["mean"], "val/pairs": float(len(ids))}


def pretrain(cfg: C.Config, progress: bool = True) -> dict[str, Any]:
    """Generate the corpus (once), train, write ``pretrain.out`` + ``pretrain.json``; -> summary."""
    p = cfg.pretrain
    synth_cfg, data_cfg = corpus_configs(cfg)
    generate(data_cfg.root, synth_cfg, progress=progress)
    cache = prepare(data_cfg, progress=progress)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    set_deterministic(cfg.train.deterministic, torch.device("cpu"))  # the stand-in trains on the CPU
    seed_everything(p.seed)
    size = cfg.model.image.img_size
    train_ds = RecipeImageDataset(cache, "train", train=True, image_size=size, seed=p.seed)
    val_ds = RecipeImageDataset(cache, "val", train=False, image_size=size)
    g = torch.Generator().manual_seed(p.seed)
    train_loader = DataLoader(train_ds, batch_size=p.batch_size, shuffle=True, drop_last=True,
                              collate_fn=collate, generator=g, num_workers=cfg.data.num_workers)
    val_loader = DataLoader(val_ds, batch_size=256, collate_fn=collate)
    model = StandIn(ImageTower(cfg.model.image, p.embed_dim),
                    CaptionTower(vocab_size(cache), p.embed_dim), p.tau_init, p.caption_keep)
    optimizer = torch.optim.Adam(model.parameters(), lr=p.lr)
    total_steps = p.epochs * len(train_loader)
    t = Training(model=model, criterion=lambda out, batch, epoch: {"loss": clip_loss(*out)},
                 optimizer=optimizer, device=torch.device("cpu"),
                 scheduler=torch.optim.lr_scheduler.LambdaLR(
                     optimizer, lr_factor(p.warmup_steps, total_steps, p.schedule)),
                 steps_per_epoch=len(train_loader), total_steps=total_steps,
                 generator=lambda epoch, i: g)  # caption dropout draws from the loader's stream

    curve: list[dict[str, float]] = []
    start, samples, steps = time.perf_counter(), 0, 0
    for epoch in range(p.epochs):
        train_ds.set_epoch(epoch)
        losses = []
        for i, batch in enumerate(tqdm(train_loader, desc=f"pretrain epoch {epoch + 1}",
                                       disable=not progress, leave=False)):
            if batch is None:
                continue
            logs, _ = train_step(t, model, batch, epoch, i)
            losses.append(float(logs["loss"].detach()))
            samples += len(batch["id"])
            steps += 1
        minutes = (time.perf_counter() - start) / 60
        row = {"epoch": epoch + 1, "samples": float(samples), "minutes": minutes,
               "train/loss": float(np.mean(losses)) if losses else float("nan"),
               **validate(model.image_tower, model.caption_tower, val_loader)}
        curve.append(row)
        log.info("pretrain epoch %d: %s", epoch + 1, " ".join(f"{k}={v:.4g}" for k, v in row.items()))
        if p.minutes is not None and minutes >= p.minutes:
            break

    out = Path(p.out)
    save_checkpoint(out, model.image_tower.encoder.vit.state_dict())
    summary = {"weights": str(out), "corpus": {"root": p.root, "seed": p.seed, "n_train": len(train_ds),
                                               "n_val": len(val_ds), "n_ingredients": p.n_ingredients},
               "caption": f"title + {p.caption_keep:.0%} of the ingredients ({p.ingredients}), bag of words",
               "steps": steps, "samples": samples, "minutes": curve[-1]["minutes"], "curve": curve,
               "final": {k: v for k, v in curve[-1].items() if k.startswith("val/")}}
    atomic_write_json(out.with_name("pretrain.json"), summary)
    _plot_curve(curve, out.with_name("pretrain_curve.png"))
    return summary


def _plot_curve(curve: list[dict[str, float]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    x = [r["samples"] / 1000 for r in curve]
    ax.plot(x, [r["val/img2cap_R@1"] for r in curve], "o-", label="image -> caption")
    ax.plot(x, [r["val/cap2img_R@1"] for r in curve], "s--", label="caption -> image")
    ax.set_xlabel("samples seen (thousands)")
    ax.set_ylabel(f"val R@1 (%), bag of {int(curve[-1]['val/pairs'])}")
    ax.set_title("CLIP stand-in pretraining (synthetic corpus)")
    ax.legend()
    save_figure(fig, path)
