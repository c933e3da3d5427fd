"""Projections to the joint embedding space (T-Food: Linear -> tanh -> L2 normalisation)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class EmbeddingHead(nn.Module):
    """x [B, in_dim] -> unit vectors [B, embed_dim], float32 (also under bf16 autocast: the
    retrieval embeddings are compared at a cosine resolution bf16's 8-bit mantissa does not hold)."""

    def __init__(self, in_dim: int, embed_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.normalize(torch.tanh(self.fc(x.float())), dim=-1)
