"""Two-level matching module (MALM Sec. 3.2; training, and test-time re-ranking through
``fuse_pairs``), and T-Food's ITM head on the same fused pairs (``itm_logits``; the ``tfood``
baseline: T-Food's cross decoders are psi and psi' here).

Image and recipe token sets are projected to width D. psi: a transformer decoder where image tokens
query the recipe tokens; the head-averaged cross-attention weights of its last layer are A_I.
psi': a decoder where recipe tokens query I_att, giving R_att.

How negatives reach the fused module (the paper is silent; this is the suite's reading)
---------------------------------------------------------------------------------------
psi and psi' fuse an image with a recipe, so a similarity "between image i and recipe j" exists
only if the pair (i, j) itself is pushed through them. Running the module on the paired (i, i)
only and contrasting I_g[i] with R_g[j] over the batch is degenerate: the positive logit compares
two functions of one pair, every negative compares two different pairs, and copying recipe
information into both sides solves the loss without looking at the images (measured: with
constant images L_GC and L_LC fell from ln 32 to 0.22). Here every logit [i, j] is computed from
image i and recipe j alone: s(i, j) = <I_g(i, j), R_g(i, j)> / tau for L_GC, and per patch p
<I_att(i, j)[p], A_I(i, j)[p] R_att(i, j)> / tau for L_LC.

Which pairs (``model.matching.candidates``), in both directions:
* ``hard``: per anchor, the positive plus ``num_negatives`` hard negatives drawn without
  replacement from softmax(unimodal cosine similarity) with the diagonal masked -- T-Food's ITM
  (``networks/trijoint.py``, after ALBEF): image anchors draw recipes, recipe anchors draw images.
  T-Food applies the softmax to the raw cosine (no temperature); so does this module.
* ``batch``: every pair of the batch (B^2 pairs through psi/psi'); affordable for small models.

Under DDP the token sets and the unimodal embeddings are gathered from every rank (with gradients,
``gather_with_grad``); the negatives are drawn for the global batch with a generator every rank
seeds alike, and each rank fuses only the pairs of its own anchors. Pairs shared by the two
directions (the positives) are fused once.

With constant images both losses cannot fall below ln(number of candidates) in the ``batch``
reading (s(i, j) then depends on j only) and stay at that chance value up to the sampler's bias
in the ``hard`` reading (tested in ``tests/test_matching.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from malm.config import MatchingConfig
from malm.models.ops import (gather_nograd, gather_with_grad, masked_mean, max_over_ranks,
                             pad_tokens_to, safe_key_padding, world_info)


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
        self.heads_n, self.head_dim = heads, dim // heads
        # separate q / k / v maps: a fused kv map + unbind costs a cat and zero-fills in backward
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, ctx, key_pad=None, need_weights: bool = False):
        B, Q, D = x.shape
        K = ctx.shape[1]
        q = self.q(x).view(B, Q, self.heads_n, self.head_dim).transpose(1, 2)  # [B, h, Q, d]
        k = self.k(ctx).view(B, K, self.heads_n, self.head_dim).transpose(1, 2)  # [B, h, K, d]
        v = self.v(ctx).view(B, K, self.heads_n, self.head_dim).transpose(1, 2)
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

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, L, D] -> [B, h, L, d]"""
        return t.view(t.shape[0], t.shape[1], self.heads_n, self.head_dim).transpose(1, 2)

    def keys_values(self, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of a context ``ctx`` [B, K, D]: [B, h, K, d] each (``attend``)."""
        return self.heads(self.k(ctx)), self.heads(self.v(ctx))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_pad=None) -> torch.Tensor:
        """``forward`` from head-split queries, keys and values ([B, h, L, d]; no weights)."""
        B, _, Q, _ = q.shape
        keep = None if key_pad is None else ~key_pad[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.proj(out.transpose(1, 2).reshape(B, Q, self.heads_n * self.head_dim))


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

    def query_side(self, x, x_pad=None) -> tuple[torch.Tensor, torch.Tensor]:
        """What this block computes from ``x`` alone: x after self-attention, and its head-split
        cross-attention queries (``finish`` does the rest; together they are ``forward``)."""
        h = self.norm1(x)
        x = x + self.self_attn(h, h, x_pad)[0]
        return x, self.cross_attn.heads(self.cross_attn.q(self.norm2(x)))

    def finish(self, x, q, k, v, ctx_pad=None) -> torch.Tensor:
        """``forward`` after ``query_side`` (x, q) and the context's ``keys_values`` (k, v)."""
        x = x + self.cross_attn.attend(q, k, v, ctx_pad)
        return x + self.mlp(self.norm3(x))


class CrossDecoder(nn.Module):
    """A stack of DecoderBlocks + final LayerNorm; returns the last layer's cross-attention.

    x: [B, Q, D], ctx: [B, K, D] -> x [B, Q, D], attn [B, Q, K] (head mean, last layer) or None
    """

    def __init__(self, dim: int, heads: int, layers: int):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a matching decoder needs >= 1 layer, got {layers} "
                             "(model.matching.psi_layers / psi_prime_layers)")
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

    def forward_from(self, x, q, k, v, ctx, x_pad=None, ctx_pad=None):
        """``forward`` (no weights) with the first block's ``query_side`` (x, q) of the queries and
        its ``keys_values`` (k, v) of ``ctx`` given: a query or context shared by many pairs is
        computed once (test-time re-ranking). -> x [B, Q, D]"""
        x_pad = None if x_pad is None else safe_key_padding(x_pad)
        ctx_pad = None if ctx_pad is None else safe_key_padding(ctx_pad)
        x = self.blocks[0].finish(x, q, k, v, ctx_pad)
        for block in self.blocks[1:]:
            x, _ = block(x, ctx, x_pad, ctx_pad)
        return self.norm(x)


class TwoLevelMatching(nn.Module):
    """psi (image queries recipe) and psi' (recipe queries I_att), fused per candidate pair.

    forward(img_tokens [B, 1+P, C], rec_tokens [B, S, W], rec_pad [B, S], img_emb [B, E],
            rec_emb [B, E], generator) -> dict (B = this rank's batch, G = the global batch)
      pair_i_att [U, 1+P, D]  psi output of each fused pair, token 0 = CLS (I_g = pair_i_att[:, 0])
      pair_attn  [U, 1+P, S'] A_I of psi's last layer (rows sum to 1 over the pair's recipe tokens)
      pair_r_att [U, S', D]   psi' output;  pair_rec_pad [U, S'] the recipe pad mask
      cand_i2r [B, K] / cand_r2i [B, K]  rows into the U pairs: the candidates of each image anchor
                              (its recipe + negatives) and of each recipe anchor
      target_i2r [B] / target_r2i [B]    the column of the positive in cand_*
      logit_scale_gc / logit_scale_lc    exp of the learnable log scale (the parameter is clamped
                              to [0, ln 100] after each optimiser step, CLIP; ``clamp_logit_scales``)
    img_emb / rec_emb (the unimodal embeddings) rank the hard negatives; they are detached here.
    ``fuse_pairs`` runs psi/psi' on given aligned pairs (test-time re-ranking).
    """

    MAX_LOGIT_SCALE = math.log(100.0)

    def __init__(self, cfg: MatchingConfig, image_dim: int, recipe_dim: int, *,
                 global_loss: bool, local_loss: bool, itm: bool = False):
        super().__init__()
        if cfg.num_negatives < 1:
            raise ValueError(f"model.matching.num_negatives must be >= 1, got {cfg.num_negatives}")
        D = cfg.width
        self.candidates, self.num_negatives = cfg.candidates, cfg.num_negatives
        self.proj_image = nn.Linear(image_dim, D)
        self.proj_recipe = nn.Linear(recipe_dim, D)
        self.psi = CrossDecoder(D, cfg.heads, cfg.psi_layers)
        self.psi_r = CrossDecoder(D, cfg.heads, cfg.psi_prime_layers)
        self.scale_names = [n for n, on in (("gc", global_loss), ("lc", local_loss)) if on]
        # T-Food's ITM head (networks/trijoint.py proj_cross): match / no-match logits of a pair
        self.itm_head = nn.Linear(D, 2) if itm else None
        init = torch.tensor(math.log(1.0 / cfg.tau_init))
        for name in self.scale_names:
            if cfg.learn_tau:
                setattr(self, f"logit_scale_{name}", nn.Parameter(init.clone()))
            else:
                self.register_buffer(f"logit_scale_{name}", init.clone())

    @torch.no_grad()
    def clamp_logit_scales(self) -> None:
        """CLIP: clamp the log scale parameter itself, so its gradient never dies at the cap."""
        for name in self.scale_names:
            getattr(self, f"logit_scale_{name}").clamp_(0.0, self.MAX_LOGIT_SCALE)

    def forward(self, img_tokens, rec_tokens, rec_pad, img_emb, rec_emb,
                generator: torch.Generator | None = None) -> dict:
        rank, _ = world_info()
        B = img_tokens.shape[0]
        i = self.proj_image(img_tokens)
        r = self.proj_recipe(rec_tokens)
        S = max_over_ranks(r.shape[1], r.device)
        r, rec_pad = pad_tokens_to(r, rec_pad, S)
        i_all, r_all = gather_with_grad(i), gather_with_grad(r)  # [G, 1+P, D], [G, S, D]
        pad_all = gather_nograd(rec_pad)
        first = rank * B  # this rank's anchors are rows first .. first + B - 1 of the global batch
        cand_i2r, target_i2r, cand_r2i, target_r2i = self.sample_candidates(
            gather_nograd(img_emb.detach()), gather_nograd(rec_emb.detach()), first, B, generator)
        # unique (image, recipe) pairs of both directions; a pair = image * G + recipe
        G = i_all.shape[0]
        anchors = torch.arange(first, first + B, device=i.device).unsqueeze(1)
        keys = torch.cat([(anchors * G + cand_i2r).flatten(), (cand_r2i * G + anchors).flatten()])
        pairs, inverse = torch.unique(keys, return_inverse=True)
        pi, pr = pairs // G, pairs % G
        pad = pad_all[pr]
        # index_select, not i_all[pi]: each row repeats in many pairs, and the backward of advanced
        # indexing adds the repeats with atomics on 2+ CPU threads (a different rounding every run);
        # index_select's backward (index_add_) adds them in order, and is faster on the CPU.
        i_att, attn, r_att = self._fuse(i_all.index_select(0, pi), r_all.index_select(0, pr), pad,
                                        need_weights=True)
        K = cand_i2r.shape[1]
        out = {"pair_i_att": i_att, "pair_attn": attn, "pair_r_att": r_att, "pair_rec_pad": pad,
               "cand_i2r": inverse[:B * K].view(B, K), "target_i2r": target_i2r,
               "cand_r2i": inverse[B * K:].view(B, K), "target_r2i": target_r2i}
        for name in self.scale_names:
            out[f"logit_scale_{name}"] = getattr(self, f"logit_scale_{name}").exp()
        if self.itm_head is not None:
            out["pair_itm"] = self.itm_logits(r_att, pad)
        return out

    def itm_logits(self, r_att: torch.Tensor, rec_pad: torch.Tensor) -> torch.Tensor:
        """T-Food's ITM head on fused pairs: a linear map of psi''s recipe tokens (which attended to
        the image), pad-masked mean -> [U, 2] (column 1 = match). T-Food applies ``proj_cross`` to
        every output token of its cross decoder and averages, pads included; the linear map commutes
        with the mean, so this differs only in leaving the pads out.
        r_att [U, S, D], rec_pad [U, S] (True = pad)"""
        if self.itm_head is None:
            raise ValueError("this matching module has no ITM head (loss.lambda_itm = 0)")
        return self.itm_head(masked_mean(r_att, rec_pad))

    def fuse_pairs(self, img_tokens, rec_tokens, rec_pad, need_weights: bool = True):
        """psi and psi' on aligned pairs: image ``u`` with recipe ``u`` (the path of ``forward``'s
        fused candidates, without sampling them; test-time re-ranking, ``malm.eval.rerank``).

        img_tokens [U, 1+P, C], rec_tokens [U, S, W], rec_pad [U, S] -> i_att [U, 1+P, D],
        attn [U, 1+P, S] (A_I of psi's last layer; None unless ``need_weights``), r_att [U, S, D]
        """
        return self._fuse(self.proj_image(img_tokens), self.proj_recipe(rec_tokens), rec_pad,
                          need_weights)

    def pair_attention(self, img_tokens, rec_tokens, rec_pad) -> torch.Tensor:
        """A_I of aligned pairs (image ``u`` with recipe ``u``): psi's last-layer, head-averaged
        cross-attention of each image token over the recipe tokens -- ``fuse_pairs``'s ``attn``
        without running psi' (grounding, ``malm.eval.grounding``).

        img_tokens [U, 1+P, C], rec_tokens [U, S, W], rec_pad [U, S] (True = pad)
        -> attn [U, 1+P, S]: row 0 is the image CLS token, rows 1.. the patches (ViT order); each
           row sums to 1 over the pair's non-pad recipe tokens (pad columns get 0)
        """
        _, attn = self.psi(self.proj_image(img_tokens), self.proj_recipe(rec_tokens), None, rec_pad,
                           need_weights=True)
        return attn

    def image_side(self, img_tokens) -> tuple[torch.Tensor, torch.Tensor]:
        """What psi computes from an image alone: its first block's ``query_side`` of the
        projected tokens. img_tokens [N, 1+P, C] -> x [N, 1+P, D], q [N, h, 1+P, d]"""
        return self.psi.blocks[0].query_side(self.proj_image(img_tokens))

    def recipe_side(self, rec_tokens, rec_pad) -> tuple[torch.Tensor, ...]:
        """What psi and psi' compute from a recipe alone: the projected tokens r, psi's keys and
        values of r, and psi''s first-block ``query_side`` of r. rec_tokens [N, S, W], rec_pad
        [N, S] -> r [N, S, D], k, v [N, h, S, d], x [N, S, D], q [N, h, S, d]"""
        r = self.proj_recipe(rec_tokens)
        k, v = self.psi.blocks[0].cross_attn.keys_values(r)
        x, q = self.psi_r.blocks[0].query_side(r, safe_key_padding(rec_pad))
        return r, k, v, x, q

    def fuse_sides(self, image_side, recipe_side, rec_pad) -> tuple[torch.Tensor, torch.Tensor]:
        """``fuse_pairs`` (no weights) from aligned rows of ``image_side`` and ``recipe_side``:
        an image or recipe met in many pairs is encoded once. -> i_att [U, 1+P, D], r_att [U, S, D]"""
        x_i, q_i = image_side
        r, k, v, x_r, q_r = recipe_side
        i_att = self.psi.forward_from(x_i, q_i, k, v, r, None, rec_pad)
        k2, v2 = self.psi_r.blocks[0].cross_attn.keys_values(i_att)
        r_att = self.psi_r.forward_from(x_r, q_r, k2, v2, i_att, rec_pad, None)
        return i_att, r_att

    def _fuse(self, i, r, pad, need_weights: bool):
        """Projected image [U, 1+P, D] and recipe [U, S, D] tokens of U pairs -> i_att, attn, r_att"""
        i_att, attn = self.psi(i, r, None, pad, need_weights=need_weights)
        r_att, _ = self.psi_r(r, i_att, pad, None)
        return i_att, attn, r_att

    @torch.no_grad()
    def sample_candidates(self, img_emb, rec_emb, first: int, n: int,
                          generator: torch.Generator | None = None):
        """Candidates of anchors first .. first+n-1 of the global batch (img_emb, rec_emb [G, E]).

        -> cand_i2r [n, K] (global recipe rows), target_i2r [n], cand_r2i [n, K] (global image
        rows), target_r2i [n]. hard: column 0 is the positive, K = 1 + min(num_negatives, G - 1);
        batch: K = G and the positive is the anchor's own row.
        """
        G, device = img_emb.shape[0], img_emb.device
        rows = torch.arange(first, first + n, device=device)
        if self.candidates == "batch":
            every = torch.arange(G, device=device).expand(n, G)
            return every, rows, every, rows
        if self.candidates != "hard":
            raise ValueError(f"model.matching.candidates must be hard or batch, got {self.candidates!r}")
        k = min(self.num_negatives, G - 1)
        if k < 1:
            raise ValueError("hard negatives need a (global) batch of at least 2 pairs")
        sim = img_emb.float() @ rec_emb.float().t()  # [G images, G recipes]
        eye = torch.eye(G, dtype=torch.bool, device=device)
        # drawn for the whole global batch, so every rank draws the same numbers from `generator`
        w_i2r = sim.softmax(dim=1).masked_fill(eye, 0.0)
        w_r2i = sim.t().softmax(dim=1).masked_fill(eye, 0.0)
        neg_rec = torch.multinomial(w_i2r, k, replacement=False, generator=generator)[first:first + n]
        neg_img = torch.multinomial(w_r2i, k, replacement=False, generator=generator)[first:first + n]
        zero = torch.zeros(n, dtype=torch.long, device=device)
        return (torch.cat([rows[:, None], neg_rec], 1), zero,
                torch.cat([rows[:, None], neg_img], 1), zero)
