"""Similarities the losses score, as small pure tensor functions (no parameters, no state).

Einsum legend: u fused pair, p patch, s recipe token, d width. Pad masks follow PyTorch's
``key_padding_mask`` convention: ``True`` = padding (ignored).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from malm.models.ops import masked_mean


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [N, E], b [M, E] -> 1 - cos [N, M]"""
    return 1.0 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()


def global_features(i_att: torch.Tensor, r_att: torch.Tensor, rec_pad: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """I_g = I_att[:, CLS], R_g = pad-masked mean_S R_att, both L2-normalised (one row per pair).

    i_att [U, 1+P, D], r_att [U, S, D], rec_pad [U, S] -> I_g [U, D], R_g [U, D]
    """
    return F.normalize(i_att[:, 0], dim=-1), F.normalize(masked_mean(r_att, rec_pad), dim=-1)


def local_recipe_features(attn: torch.Tensor, r_att: torch.Tensor) -> torch.Tensor:
    """R_lp = A_I[:, p, :] applied to R_att: one attention-weighted recipe vector per patch.

    u pair, p patch, s recipe token, d width
    attn [U, P, S] (pad columns are 0), r_att [U, S, D] -> [U, P, D]
    """
    return torch.einsum("ups,usd->upd", attn, r_att)


def pair_global_logits(i_att, r_att, rec_pad, scale) -> torch.Tensor:
    """s(pair) = scale * cos(I_g, R_g) of each fused pair: [U, 1+P, D], [U, S, D], [U, S] -> [U]"""
    img, rec = global_features(i_att, r_att, rec_pad)
    return scale * (img * rec).sum(-1)


def pair_local_logits(i_att, attn, r_att, scale) -> torch.Tensor:
    """Per patch p: scale * cos(I_att[p], A_I[p] R_att) of each fused pair (CLS excluded).

    i_att [U, 1+P, D], attn [U, 1+P, S], r_att [U, S, D] -> [U, P]
    """
    img = F.normalize(i_att[:, 1:], dim=-1)
    rec = F.normalize(local_recipe_features(attn[:, 1:], r_att), dim=-1)
    return scale * (img * rec).sum(-1)
