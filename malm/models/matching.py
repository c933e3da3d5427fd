"""Two-level matching module (spec "Two-level matching module"; training only).

Image and recipe token sets are projected to width D. psi: a transformer decoder where image tokens
query the recipe tokens; the head-averaged cross-attention weights of its last layer are A_I.
psi': a decoder where recipe tokens query I_att, giving R_att. The similarity pieces used by the
global / local contrastive losses are the pure functions at the bottom.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from malm.config import MatchingConfig
from malm.models.ops import masked_mean, safe_key_padding


class MultiheadAttention(nn.Module):
    """Multi-head attention of queries ``x`` over ``ctx`` with an optional key pad mask.

    The output uses fused SDPA; when ``need_weights`` the softmax is computed explicitly (once) and
    used for both the output and the returned head-averaged weights.
    x: [B, Q, D], ctx: [B, K, D], key_pad: [B, K] bool (True = pad, no all-pad rows)
    -> out [B, Q, D], attn [B, Q, K] or None
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim = heads, dim // heads
        # separate q / k / v maps: a fused kv map + unbind costs a cat and zero-fills in backward
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, ctx, key_pad=None, need_weights: bool = False):
        B, Q, D = x.shape
        K = ctx.shape[1]
        q = self.q(x).view(B, Q, self.heads, self.head_dim).transpose(1, 2)  # [B, h, Q, d]
        k = self.k(ctx).view(B, K, self.heads, self.head_dim).transpose(1, 2)  # [B, h, K, d]
        v = self.v(ctx).view(B, K, self.heads, self.head_dim).transpose(1, 2)
        keep = None if key_pad is None else ~key_pad[:, None, None, :]  # [B, 1, 1, K]
        if need_weights:
            # b batch, h head, q query, k key, d head dim
            logits = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(self.head_dim)
            if keep is not None:
                logits = logits.masked_fill(~keep, float("-inf"))
            weights = logits.softmax(dim=-1)  # [B, h, Q, K]
            out = torch.einsum("bhqk,bhkd->bhqd", weights, v)
            attn = weights.mean(dim=1)  # [B, Q, K]
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            attn = None
        return self.proj(out.transpose(1, 2).reshape(B, Q, D)), attn


class DecoderBlock(nn.Module):
    """Pre-norm transformer decoder layer: self-attention, cross-attention, MLP.

    Like ``nn.TransformerDecoderLayer(norm_first=True)`` (T-Food's decoder) the context is used as
    given (it is already a normalised / projected token set). The MLP width defaults to 8/3 D:
    T-Food's layers keep PyTorch's dim_feedforward=2048 at D=768.
    x: [B, Q, D], ctx: [B, K, D], pads [B, Q] / [B, K] -> x [B, Q, D], cross-attn [B, Q, K] or None
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 8 / 3):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(dim), MultiheadAttention(dim, heads)
        self.norm2, self.cross_attn = nn.LayerNorm(dim), MultiheadAttention(dim, heads)
        self.norm3 = nn.LayerNorm(dim)
        hidden = int(round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x, ctx, x_pad=None, ctx_pad=None, need_weights: bool = False):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, x_pad)[0]
        out, attn = self.cross_attn(self.norm2(x), ctx, ctx_pad, need_weights)
        x = x + out
        x = x + self.mlp(self.norm3(x))
        return x, attn


class CrossDecoder(nn.Module):
    """A stack of DecoderBlocks + final LayerNorm; returns the last layer's cross-attention.

    x: [B, Q, D], ctx: [B, K, D] -> x [B, Q, D], attn [B, Q, K] (head mean, last layer) or None
    """

    def __init__(self, dim: int, heads: int, layers: int):
        super().__init__()
        if layers < 1:
            raise ValueError("model.matching.layers must be >= 1")
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, ctx, x_pad=None, ctx_pad=None, need_weights: bool = False):
        x_pad = None if x_pad is None else safe_key_padding(x_pad)
        ctx_pad = None if ctx_pad is None else safe_key_padding(ctx_pad)
        attn = None
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x, attn = block(x, ctx, x_pad, ctx_pad, need_weights and i == last)
        return self.norm(x), attn


class TwoLevelMatching(nn.Module):
    """psi (image queries recipe) and psi' (recipe queries I_att) over width-D projections.

    forward(img_tokens [B, 1+P, C], rec_tokens [B, S, W], rec_pad [B, S]) -> dict
      i_att [B, 1+P, D]   psi output, token 0 = CLS (I_g = i_att[:, 0])
      attn  [B, 1+P, S]   A_I: head-averaged cross-attention of psi's last layer (rows sum to 1
                          over the non-pad recipe tokens; row 0 = CLS, the local loss uses 1:)
      r_att [B, S, D]     psi' output
      rec_pad [B, S]      the recipe pad mask (for the pad-masked mean R_g)
      logit_scale_gc / logit_scale_lc  exp of the learnable log scale, clamped at 100 (CLIP)
    """

    def __init__(self, cfg: MatchingConfig, image_dim: int, recipe_dim: int, *,
                 global_loss: bool, local_loss: bool):
        super().__init__()
        D = cfg.width
        self.proj_image = nn.Linear(image_dim, D)
        self.proj_recipe = nn.Linear(recipe_dim, D)
        self.psi = CrossDecoder(D, cfg.heads, cfg.layers)
        self.psi_r = CrossDecoder(D, cfg.heads, cfg.layers)
        self.scale_names = [n for n, on in (("gc", global_loss), ("lc", local_loss)) if on]
        init = torch.tensor(math.log(1.0 / cfg.tau_init))
        for name in self.scale_names:
            if cfg.learn_tau:
                setattr(self, f"logit_scale_{name}", nn.Parameter(init.clone()))
            else:
                self.register_buffer(f"logit_scale_{name}", init.clone())

    def forward(self, img_tokens, rec_tokens, rec_pad) -> dict:
        i = self.proj_image(img_tokens)
        r = self.proj_recipe(rec_tokens)
        i_att, attn = self.psi(i, r, None, rec_pad, need_weights=True)
        r_att, _ = self.psi_r(r, i_att, rec_pad, None)
        out = {"i_att": i_att, "attn": attn, "r_att": r_att, "rec_pad": rec_pad}
        for name in self.scale_names:
            out[f"logit_scale_{name}"] = getattr(self, f"logit_scale_{name}").exp().clamp(max=100.0)
        return out


# ---------------------------------------------------------------- similarity pieces (pure)
def global_features(i_att: torch.Tensor, r_att: torch.Tensor, rec_pad: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """I_g = I_att[:, CLS], R_g = pad-masked mean_S R_att, both L2-normalised.

    i_att [B, 1+P, D], r_att [B, S, D], rec_pad [B, S] -> I_g [B, D], R_g [B, D]
    """
    return F.normalize(i_att[:, 0], dim=-1), F.normalize(masked_mean(r_att, rec_pad), dim=-1)


def local_recipe_features(attn: torch.Tensor, r_att: torch.Tensor) -> torch.Tensor:
    """R_lp = A_I[:, p, :] applied to R_att: one attention-weighted recipe vector per patch.

    b batch, p patch, s recipe token, d width
    attn [B, P, S] (pad columns are 0), r_att [B, S, D] -> [B, P, D]
    """
    return torch.einsum("bps,bsd->bpd", attn, r_att)


def global_logits(img: torch.Tensor, rec: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """i image, j recipe, d width.  img [B, D], rec [B, D] (unit) -> [B_i, B_j]"""
    return scale * torch.einsum("id,jd->ij", img, rec)


def local_logits(img: torch.Tensor, rec: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-patch image-recipe logits over the batch.

    i image, j recipe, p patch, d width.  img [B, P, D], rec [B, P, D] (unit) -> [P, B_i, B_j]
    """
    return scale * torch.einsum("ipd,jpd->pij", img, rec)
