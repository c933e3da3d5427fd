"""T-Food's hierarchical recipe encoder (spec "Model"; T-Food ``HTransformerRecipeEmbedding``).

word embedding (shared) -> per field a word-level transformer over each sentence
  title:         word tokens [B, Lt, W]
  ingredients:   line vectors (pad-masked mean of words) -> line-level transformer [B, Ni, W]
  instructions:  same [B, Ns, W]
-> cross-component decoder: each component attends to the concatenation of the other two
-> pooled = concat of the three component means [B, 3W]; tokens = concat of the three token sets.

Differences from T-Food's code, all towards H-T (which T-Food builds on) or robustness:
- pad masks everywhere (T-Food's port dropped them in the sentence merger and the decoder);
- H-T's learned positional encoding on words and on sentences (lost in T-Food's port);
- absent lines (all-pad sentences) are not encoded at all: only present sentences are packed
  through the word-level transformer (fewer FLOPs, no NaN from all-pad attention rows);
- pre-norm layers with a final LayerNorm and GELU by default (``model.recipe.norm_first`` /
  ``activation``: false / relu are H-T's and T-Food's post-norm ReLU layers), feed-forward width 4W
  (T-Food: 2048 for W=512, the same);
- ``model.recipe.decoder_layers: 0`` drops the cross-component decoder: H-T's encoder, whose three
  components meet only in the projection head;
- the word-level transformer skips padding: lines are grouped by length into
  ``length_buckets`` buckets, each trimmed to its longest line (about 45 % of the word positions
  of a Recipe1M-shaped batch are padding; exact, since pads are masked keys and positions are
  unchanged);
- on CPU the attention runs on PyTorch's math kernel: for these short sequences (<= 15 words,
  <= 20 lines) it is about 15 % faster than the fused CPU flash kernel (``benchmarks/
  bench_train_step.py``); on GPU the fused kernels are kept;
- only padding is trimmed: trailing word columns / line slots that are pad in every row, and
  before the decoder each component's token set is packed (non-pad tokens first, cut to the
  longest row of the batch). The decoder and the matching module treat tokens as a set (position
  information is already inside each token), so outputs are unchanged (tested).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from malm.config import RecipeEncoderConfig
from malm.models.ops import gather_tokens, masked_mean, safe_key_padding

FIELDS = ("title", "ingrs", "instrs")
# ordered pairs (a, b), a != b, of recipe components (indices into FIELDS): H-T's recipe loss
COMPONENT_PAIRS = tuple((a, b) for a in range(3) for b in range(3) if a != b)


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
                                      activation=cfg.activation, batch_first=True,
                                      norm_first=cfg.norm_first)


class SequenceEncoder(nn.Module):
    """Positions + transformer encoder over a padded sequence (uses fused SDPA): pre-norm layers
    with a final LayerNorm, or post-norm layers without one (``cfg.norm_first``, H-T's).

    x: [N, L, W], pad: [N, L] bool (True = pad; all-pad rows allowed) -> [N, L, W]
    """

    def __init__(self, cfg: RecipeEncoderConfig, max_len: int):
        super().__init__()
        self.pos = LearnedPositions(cfg.width, max_len, cfg.dropout)
        self.layers = nn.ModuleList(_encoder_layer(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width) if cfg.norm_first else nn.Identity()

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


def used_length(present: torch.Tensor) -> int:
    """1 + the last column that is non-pad in some row (>= 1). present [N, L] bool (one sync)

    Dropping the columns after it is exact: pads are masked keys and positions are unchanged.
    """
    L = present.shape[-1]
    last = (present.any(0) * torch.arange(1, L + 1, device=present.device)).max()
    return max(int(last), 1)


def pack_components(tokens: list[torch.Tensor], pads: list[torch.Tensor]
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Move each row's non-pad tokens first (order kept) and trim to the batch's longest row.

    tokens[i]: [B, L_i, W], pads[i]: [B, L_i] -> [B, L'_i, W], [B, L'_i]  (one host sync)
    """
    counts = torch.stack([(~p).sum(1).amax() for p in pads]).tolist()
    out_t, out_p = [], []
    for tok, pad, n in zip(tokens, pads, counts):
        n = max(int(n), 1)
        if n < pad.shape[1]:  # else nothing to trim (order does not matter)
            order = torch.argsort(pad.to(torch.int8), dim=1, stable=True)[:, :n]  # [B, n]
            tok, pad = gather_tokens(tok, order), torch.gather(pad, 1, order)
        out_t.append(tok)
        out_p.append(pad)
    return out_t, out_p


def ingredient_columns(title: torch.Tensor, ingrs: torch.Tensor, instrs: torch.Tensor,
                       pack: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each ingredient line lands in ``RecipeEncoder``'s token set (``tokens`` / ``pad``).

    The tokens are [title words | one per ingredient line | one per instruction line], after
    dropping the trailing word / line slots that are pad in every row (``used_length``) and, with
    ``pack``, packing each component (``pack_components``: non-pad tokens first, order kept, cut to
    the batch's longest row, only when that shortens the component). So line k of row b sits at
    ``title width + k`` when the ingredient component is not re-ordered, else at ``title width +
    (number of present lines before k in row b)``. Computed by running the same ``used_length`` /
    ``pack_components`` on slot tags (no model weights involved).

    title [B, Lt], ingrs [B, I, L], instrs [B, J, L] (token ids, 0 = pad)
    -> cols [B, I] long (the token column of line k of row b; -1 when that line is absent or not
       encoded), pad [B, S] bool (the pad mask the encoder returns for this batch)
    """
    B, I = ingrs.shape[:2]
    lt = used_length(title != 0)
    comps, pads = [torch.zeros(B, lt, 1, dtype=torch.long, device=title.device)], [title[:, :lt] == 0]
    for field, ids in (("ingrs", ingrs), ("instrs", instrs)):
        present = (ids != 0).any(-1)
        present = present[:, :used_length(present)]
        n = present.shape[1]
        tag = torch.arange(1, n + 1, device=ids.device) if field == "ingrs" else torch.zeros(
            n, dtype=torch.long, device=ids.device)
        comps.append(tag.view(1, n, 1).expand(B, n, 1))  # ingredient slot k carries k + 1
        pads.append(~present)
    if pack:
        comps, pads = pack_components(comps, pads)
    tag, pad = torch.cat(comps, dim=1)[..., 0], torch.cat(pads, dim=1)  # [B, S]
    cols = torch.full((B, I + 1), -1, dtype=torch.long, device=title.device)
    rows, s = torch.nonzero((tag > 0) & ~pad, as_tuple=True)
    cols[rows, tag[rows, s]] = s
    return cols[:, 1:], pad


class RecipeEncoder(nn.Module):
    """T-Food's hierarchical recipe encoder (H-T's with ``decoder_layers`` 0).

    forward(title [B, Lt], ingrs [B, Ni, L], instrs [B, Ns, L]) (token ids, 0 = pad) -> dict
      pooled [B, 3W]  concat of the title / ingredient / instruction means (-> projection head)
      tokens [B, S, W]  title words, ingredient lines, instruction lines after the
                        cross-component decoder (T-Food ``recipe_feat_sep``); with ``pack`` each
                        component is packed, S <= Lt + Ni + Ns
      pad    [B, S]  bool, True = pad / absent line
    """

    def __init__(self, cfg: RecipeEncoderConfig, vocab_size: int, max_len: int = 64,
                 pack: bool = True):
        super().__init__()
        self.pack = pack
        self.length_buckets = cfg.length_buckets
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

    def ingredient_columns(self, title: torch.Tensor, ingrs: torch.Tensor, instrs: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """The token layout of ``forward(title, ingrs, instrs)`` with this encoder's ``pack``:
        cols [B, I] (the ``tokens`` column of ingredient line k of row b, -1 when absent) and the
        ``pad`` [B, S] that ``forward`` returns. See :func:`ingredient_columns`."""
        return ingredient_columns(title, ingrs, instrs, pack=self.pack)

    def _words(self, field: str, ids: torch.Tensor) -> torch.Tensor:
        """ids [N, L] -> word tokens [N, L', W], L' = L without the trailing all-pad columns"""
        ids = ids[:, : used_length(ids != 0)]
        return self.words[field](self.embedding(ids), ids == 0)

    def _line_vectors(self, field: str, ids: torch.Tensor) -> torch.Tensor:
        """ids [M, L] (present lines) -> [M, W], the pad-masked mean of each line's word tokens.

        Lines are sorted by length and cut into ``length_buckets`` equal-count buckets; each
        bucket is trimmed to its own longest line (``_words``), so short lines do not pay for the
        batch's longest one. The bucket means are put back in the input order.
        """
        M = ids.shape[0]
        k = min(self.length_buckets, M)
        if k <= 1:
            words = self._words(field, ids)
            return masked_mean(words, ids[:, : words.shape[1]] == 0)
        positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
        order = torch.argsort(((ids != 0) * positions).amax(1), stable=True)
        means = []
        for idx in order.tensor_split(k):
            chunk = ids[idx]
            words = self._words(field, chunk)
            means.append(masked_mean(words, chunk[:, : words.shape[1]] == 0))
        return torch.cat(means)[torch.argsort(order)]

    def _lines(self, field: str, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [B, N, L] -> line tokens [B, N', W], pad [B, N'] (absent lines; trailing
        line slots absent in every row are dropped)"""
        present = (ids != 0).any(-1)  # [B, N]
        present = present[:, : used_length(present)]
        ids = ids[:, : present.shape[1]]
        B, N, _ = ids.shape
        packed = ids[present]  # [M, L] only the lines that exist
        vecs = self.embedding.weight.new_zeros(B, N, self.width)
        if packed.shape[0] > 0:
            vecs = vecs.index_put((present,), self._line_vectors(field, packed))
        pad = ~present
        return self.sentences[field](vecs, pad), pad

    def forward(self, title: torch.Tensor, ingrs: torch.Tensor, instrs: torch.Tensor) -> dict:
        kernel = sdpa_kernel(SDPBackend.MATH) if title.device.type == "cpu" else contextlib.nullcontext()
        with kernel:
            return self._forward(title, ingrs, instrs)

    def _forward(self, title: torch.Tensor, ingrs: torch.Tensor, instrs: torch.Tensor) -> dict:
        comps = [self._words("title", title)]
        pads = [title[:, :comps[0].shape[1]] == 0]
        for field, ids in (("ingrs", ingrs), ("instrs", instrs)):
            tok, pad = self._lines(field, ids)
            comps.append(tok)
            pads.append(pad)
        if self.pack:
            comps, pads = pack_components(comps, pads)
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
