"""The CLIP stand-in: a shortened pretraining learns, its weights load through
model.image.pretrained, its corpus shares no seed with the benchmark, and its loss cannot fall
below chance when the images carry no information."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import SMOKE
from malm import config as C
from malm import variants
from malm.train.pretrain import CaptionTower, clip_loss, corpus_configs, pretrain


def _cfg(tmp_path, **extra) -> C.Config:
    over = {"pretrain": {"root": str(tmp_path / "synth"), "cache_dir": str(tmp_path / "cache"),
                         "out": str(tmp_path / "w" / "vit.pt"), "n_train": 320, "n_val": 100,
                         "n_ingredients": 24, "epochs": 16, "batch_size": 32,
                         "lr": 3e-3,
                         **extra},
            "train": {"threads": 1}}
    return variants.resolve_from_files("baseline", [SMOKE], over)


def test_corpus_never_shares_the_benchmark_seed(tmp_path):
    cfg = _cfg(tmp_path)
    synth, data = corpus_configs(cfg)
    assert synth.seed != cfg.synth.seed and data.root != cfg.data.root
    with pytest.raises(C.ConfigError, match="pretrain.seed"):
        corpus_configs(C.merge(cfg, {"pretrain": {"seed": cfg.synth.seed}}))


def test_clip_loss_cannot_fall_below_chance_with_constant_images():
    torch.manual_seed(0)
    B, V = 16, 50
    tower = CaptionTower(V, 8)
    scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    img = torch.nn.functional.normalize(torch.randn(1, 8), dim=-1).expand(B, -1)  # one picture
    opt = torch.optim.Adam([*tower.parameters(), scale], lr=1e-2)
    tokens = torch.randint(1, V, (B, 6))
    for _ in range(100):
        loss = clip_loss(img, tower(tokens), scale)
        assert loss.item() >= math.log(B) - 1e-4  # Jensen: the image side cannot tell them apart
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_shortened_pretraining_learns_and_its_weights_load(tmp_path):
    cfg = _cfg(tmp_path)
    summary = pretrain(cfg, progress=False)
    curve = summary["curve"]
    # 16 epochs of 10 steps on 320 tiny images (measured: medR 50 -> about 22, loss 3.7 -> 2.9):
    # held-out image->caption ranks well above chance (medR (n + 1) / 2) and the loss below ln B
    chance_medr = (curve[-1]["val/pairs"] + 1) / 2
    medr = [r["val/img2cap_medR"] for r in curve]
    assert min(medr[-3:]) <= 0.6 * chance_medr, medr
    assert curve[-1]["train/loss"] < math.log(32) - 0.3, [r["train/loss"] for r in curve]
    saved = json.loads((tmp_path / "w" / "pretrain.json").read_text())
    assert saved["final"] == summary["final"] and (tmp_path / "w" / "pretrain_curve.png").exists()
    # the benchmark's model starts from these weights exactly as from a CLIP file
    from malm.models.image import ImageEncoder

    enc = ImageEncoder(C.merge(cfg.model.image, {"pretrained": summary["weights"]}))
    state = torch.load(summary["weights"], weights_only=True)
    assert torch.equal(enc.vit.patch_embed.proj.weight, state["patch_embed.proj.weight"])
