"""T-Food's hierarchical recipe encoder (spec "Model"; T-Food ``HTransformerRecipeEmbedding``).

word embedding (shared) -> per field a word-level transformer over each sentence
  title:         word tokens [B, Lt, W]
  ingredients:   sentence vectors (pad-masked mean of words) -> sentence-level transformer [B, Ni, W]
  instructions:  same [B, Ns, W]
-> cross-component decoder: each component attends to the concatenation of the other two
-> pooled = concat of the three component means [B, 3W]; tokens = concat of the three token sets.

Differences from T-Food's code, all towards H-T (which T-Food builds on) or robustness:
- pad masks everywhere (T-Food's port dropped them in the sentence merger and the decoder);
- H-T's learned positional encoding on words and on sentences (lost in T-Food's port);
- absent lines (all-pad sentences) are not encoded at all: only present sentences are packed
  through the word-level transformer (fewer FLOPs, no NaN from all-pad attention rows);
- pre-norm layers (``norm_first``) with a final LayerNorm, feed-forward width 4W (T-Food: 2048
  for W=512, the same).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from malm.config import RecipeEncoderConfig
from malm.models.ops import masked_mean, safe_key_padding

FIELDS = ("title", "ingrs", "instrs")


class LearnedPositions(nn.Module):
    """H-T's LearnedPositionalEncoding: x + W[:L], then dropout. x: [N, L, D] -> [N, L, D]"""

    def __init__(self, dim: int, max_len: int, dropout: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.xavier_normal_(self.weight)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.weight.shape[0]:
            raise ValueError(f"sequence of {x.shape[1]} > {self.weight.shape[0]} positions")
        return self.dropout(x + self.weight[: x.shape[1]])


def _encoder_layer(cfg: RecipeEncoderConfig) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(cfg.width, cfg.heads, 4 * cfg.width, cfg.dropout,
                                      activation="gelu", batch_first=True, norm_first=True)


class SequenceEncoder(nn.Module):
    """Positions + pre-norm transformer encoder over a padded sequence (uses fused SDPA).

    x: [N, L, W], pad: [N, L] bool (True = pad; all-pad rows allowed) -> [N, L, W]
    """

    def __init__(self, cfg: RecipeEncoderConfig, max_len: int):
        super().__init__()
        self.pos = LearnedPositions(cfg.width, max_len, cfg.dropout)
        self.layers = nn.ModuleList(_encoder_layer(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = self.pos(x)
        pad = safe_key_padding(pad)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
        return self.norm(x)


class ComponentDecoder(nn.Module):
    """One component's tokens attend to the other components (pre-norm transformer decoder).

    x: [B, L, W], x_pad: [B, L], ctx: [B, K, W], ctx_pad: [B, K] -> [B, L, W]
    """

    def __init__(self, cfg: RecipeEncoderConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(cfg.width, cfg.heads, 4 * cfg.width, cfg.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, x, x_pad, ctx, ctx_pad):
        x_pad, ctx_pad = safe_key_padding(x_pad), safe_key_padding(ctx_pad)
        for layer in self.layers:
            x = layer(x, ctx, tgt_key_padding_mask=x_pad, memory_key_padding_mask=ctx_pad)
        return self.norm(x)


class RecipeEncoder(nn.Module):
    """T-Food hierarchical recipe encoder.

    forward(title [B, Lt], ingrs [B, Ni, L], instrs [B, Ns, L]) (token ids, 0 = pad) -> dict
      pooled [B, 3W]  concat of the title / ingredient / instruction means (-> projection head)
      tokens [B, S, W]  S = Lt + Ni + Ns: title words, ingredient lines, instruction lines
                        after the cross-component decoder (T-Food ``recipe_feat_sep``)
      pad    [B, S]  bool, True = pad / absent line
    """

    def __init__(self, cfg: RecipeEncoderConfig, vocab_size: int, max_len: int = 64):
        super().__init__()
        self.width = cfg.width
        self.out_dim = 3 * cfg.width
        self.embedding = nn.Embedding(vocab_size, cfg.width, padding_idx=0)
        nn.init.normal_(self.embedding.weight, std=0.02)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.words = nn.ModuleDict({f: SequenceEncoder(cfg, max_len) for f in FIELDS})
        self.sentences = nn.ModuleDict({f: SequenceEncoder(cfg, max_len) for f in FIELDS[1:]})
        if cfg.decoder_layers > 0:
            self.decoders = nn.ModuleDict({f: ComponentDecoder(cfg) for f in FIELDS})
        else:
            self.decoders = None

    def _words(self, field: str, ids: torch.Tensor) -> torch.Tensor:
        """ids [N, L] -> word tokens [N, L, W]"""
        return self.words[field](self.embedding(ids), ids == 0)

    def _lines(self, field: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, N, L] -> line tokens [B, N, W], pad [B, N] (absent lines)"""
        B, N, _ = ids.shape
        present = (ids != 0).any(-1)  # [B, N]
        packed = ids[present]  # [M, L] only the lines that exist
        vecs = self.embedding.weight.new_zeros(B, N, self.width)
        if packed.shape[0] > 0:
            words = self._words(field, packed)  # [M, L, W]
            vecs = vecs.index_put((present,), masked_mean(words, packed == 0))
        pad = ~present
        return self.sentences[field](vecs, pad), pad

    def forward(self, title: torch.Tensor, ingrs: torch.Tensor, instrs: torch.Tensor) -> dict:
        t_pad = title == 0
        comps = [self._words("title", title)]
        pads = [t_pad]
        for field, ids in (("ingrs", ingrs), ("instrs", instrs)):
            tok, pad = self._lines(field, ids)
            comps.append(tok)
            pads.append(pad)
        if self.decoders is not None:
            out = []
            for i, field in enumerate(FIELDS):
                others = [j for j in range(3) if j != i]
                ctx = torch.cat([comps[j] for j in others], dim=1)
                ctx_pad = torch.cat([pads[j] for j in others], dim=1)
                out.append(self.decoders[field](comps[i], pads[i], ctx, ctx_pad))
            comps = out
        pooled = torch.cat([masked_mean(c, p) for c, p in zip(comps, pads)], dim=-1)
        return {"pooled": pooled, "tokens": torch.cat(comps, dim=1), "pad": torch.cat(pads, dim=1)}
