"""Masked self-distillation predictor T (spec "Masked self-distillation").

T maps the student's full token set I_f (visible tokens + mask tokens) to predictions of the EMA
teacher's tokens. The teacher wrapper lives in ``malm.models.ema``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from malm.config import DistillConfig


class Predictor(nn.Module):
    """Transformer encoder (timm blocks, fused attention) between two linear maps.

    tokens [B, N, C] -> predictions [B, N, C]  (C = image token width, internal width cfg.width)
    """

    def __init__(self, cfg: DistillConfig, dim: int):
        super().__init__()
        width = cfg.predictor_width
        self.embed = nn.Linear(dim, width) if width != dim else nn.Identity()
        self.blocks = nn.Sequential(*[Block(width, cfg.predictor_heads, qkv_bias=True)
                                      for _ in range(cfg.predictor_layers)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.blocks(self.embed(tokens))))
