"""Test-time re-ranking by the matching module: T-Food's published reading, as a named protocol.

T-Food re-ranks each query's top K = 10 by dual-encoder cosine with its cross-modal matching head
(mshukor/TFood ``recipe1m/models/metrics/trijoint.py``, ``CrossTrijoint``, ``k_test: 10``); its
"w/o ITM" row is the dual encoder. MALM's two-level matching module descends from that head, so the
suite reports both readings of one trained run, each under its own protocol name
(``malm.eval.names.rerank_protocol``): ``tfood`` (dual encoder) and ``tfood+rerank10``.

* ``embed_split_tokens`` (``malm.eval.embed``): the token sets psi / psi' read, from the same
  forward as the embeddings (full image, no mask, rows sorted by recipe id).
* ``PairScorer``: (image row, recipe row) index arrays -> one matching score per pair, batched,
  under ``torch.inference_mode``, cached across the bags of one split. Score = the ITM head's match
  logit when the model has one (T-Food's ITM, ``loss.lambda_itm``), else cos(I_g, R_g) of the fused
  pair when the model was trained with L_GC, else the mean over patches of the local score
  cos(I_att[p], A_I[p] R_att) (L_LC only); temperature-free (the order does not depend on it).
* ``rerank_ranks``: the 1-based ranks of a bag's true matches after re-ranking, both directions.
* ``evaluate_rerank`` / ``rerank_run``: a whole protocol x bag setting, and every setting of an
  ``eval`` config section for one run and embeddings file.

Rank rule (ours, and how it differs from T-Food)
------------------------------------------------
For each query the top K candidates by cosine are re-ordered by the matching score; everything past
K keeps the dual-encoder order. A true match inside the top K gets
``1 + #(candidates scored strictly higher) + #(candidates scored equally with a strictly higher
cosine)``: ties of the matching score fall back on the dual encoder's order, and only candidates tied
on both count in the query's favour (``malm.eval.metrics``' rule). So a matching module whose score
is constant leaves every rank as the dual encoder's; counting every score tie in the query's favour
would instead give such a module R@1 = the dual encoder's R@K. A true match outside the top K keeps
its dual-encoder rank (> K). The top K itself takes ties in the query's favour: a true match whose
cosine ties the K-th candidate's is taken into the top K in that candidate's place.
Consequences: R@k for k >= K and the rank of every true match outside the top K are exactly the dual
encoder's; medR can change only when the median rank lies within the top K.

T-Food instead fills every score past K with -100 and argsorts the whole row, so a true match
outside the top K sits at an arbitrary position among the N - K tied entries (its medR past K and
R@k for k > K carry no information), and ties of its score are broken by numpy's sort. Its score is
its ITM head's match logit (``proj_cross(...)[:, 1]``), and so is ours for a model with an ITM head
(the ``tfood`` baseline, ``loss.lambda_itm``); MALM's module has none, so for it ours is the
temperature-free cosine its losses are built on. Given the same scores, R@1/5/10 (K = 10) and every
medR within the top K follow the same order as T-Food's, up to those ties.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from malm import config as C
from malm.eval.embed import SplitTokens, embed_split_tokens, eval_loader, load_trained, resolve_device
from malm.eval.emb_file import embedding_provenance, load_embeddings
from malm.eval.metrics import ranks
from malm.eval.names import rerank_protocol
from malm.eval.protocol import evaluate
from malm.losses.similarity import pair_global_logits, pair_local_logits
from malm.models.recipe import used_length

log = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# recomputed embeddings may differ from the .npz's by float noise only (unit vectors): fp32, bf16
_EMB_TOL = {False: 1e-3, True: 5e-2}


# ------------------------------------------------------------------------------ ranks
def top_candidates(sim: torch.Tensor, k: int, base_rank: torch.Tensor) -> torch.Tensor:
    """Each row's top ``k`` columns by ``sim`` [Q, G] (descending), ties in the query's favour: a
    true match (column q of row q) with ``base_rank`` <= k that ``topk`` left out ties the k-th
    candidate and takes its place. -> [Q, k] int64"""
    top = sim.topk(k, dim=1).indices
    q = torch.arange(sim.shape[0], device=sim.device)
    missing = (base_rank <= k) & ~(top == q[:, None]).any(1)
    top[missing, k - 1] = q[missing]
    return top


def reranked_rank(cand: torch.Tensor, score: torch.Tensor, cand_sim: torch.Tensor,
                  base_rank: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's true match (the query's own index) after re-ordering its
    candidates by ``score``, ties broken by ``cand_sim``, ties on both in the query's favour; a
    true match outside ``cand`` keeps ``base_rank``.

    cand, score, cand_sim [Q, k] (candidate indices, matching scores, cosines), base_rank [Q] -> [Q]
    """
    q = torch.arange(cand.shape[0], device=cand.device)
    is_true = cand == q[:, None]
    pos = is_true.to(torch.int8).argmax(1, keepdim=True)
    s_true, c_true = score.gather(1, pos), cand_sim.gather(1, pos)
    above = (score > s_true) | ((score == s_true) & (cand_sim > c_true))
    return torch.where(is_true.any(1), 1 + above.sum(1), base_rank)


def rerank_ranks(sim: torch.Tensor, k: int, score_fn: ScoreFn) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks of the true matches after re-ranking each query's top ``k``, both directions.

    sim [B, B]: ``sim[i, j]`` = cosine of image ``i`` and recipe ``j``, true matches on the diagonal.
    score_fn(image indices [M], recipe indices [M]) -> matching scores [M] (float, finite), indices
    into this bag. img2rec: row ``i``'s top k recipes, re-ordered; rec2img: column ``j``'s top k images.
    Returns ``(ranks_img2rec [B], ranks_rec2img [B])`` int64 (the module docstring's rank rule);
    ``k >= B`` re-orders whole rows, ``k = 1`` is the dual encoder. One ``score_fn`` call for both
    directions (pairs shared by them can be scored once).
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"rerank_ranks() needs a square [B, B] similarity matrix, got {tuple(sim.shape)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    B = sim.shape[0]
    k = min(k, B)
    base_i2r, base_r2i = ranks(sim)
    sim_t = sim.t()
    cand_i2r = top_candidates(sim, k, base_i2r)    # [B, k] recipes of image query i
    cand_r2i = top_candidates(sim_t, k, base_r2i)  # [B, k] images of recipe query j
    q = torch.arange(B, device=sim.device)[:, None].expand(B, k)
    img = torch.cat([q.flatten(), cand_r2i.flatten()])
    rec = torch.cat([cand_i2r.flatten(), q.flatten()])
    score = score_fn(img, rec).to(sim.device, torch.float32)
    if score.shape != img.shape:
        raise ValueError(f"score_fn returned shape {tuple(score.shape)} for {img.numel()} pairs")
    if not torch.isfinite(score).all():
        raise ValueError("matching scores contain NaN/inf (a NaN would rank its true match first)")
    s_i2r, s_r2i = score[:B * k].view(B, k), score[B * k:].view(B, k)
    r_i2r = reranked_rank(cand_i2r, s_i2r, sim.gather(1, cand_i2r), base_i2r)
    r_r2i = reranked_rank(cand_r2i, s_r2i, sim_t.gather(1, cand_r2i), base_r2i)
    return r_i2r, r_r2i


# ------------------------------------------------------------------------------ pair scores
def score_kind(matching) -> str:
    """'itm' (T-Food's match logit) when the module has an ITM head, else 'global' (cos(I_g, R_g))
    when it was trained with L_GC, else 'local'."""
    if getattr(matching, "itm_head", None) is not None:
        return "itm"
    return "global" if "gc" in matching.scale_names else "local"


def fused_score(matching, kind: str, i_att: torch.Tensor, r_att: torch.Tensor,
                rec_pad: torch.Tensor) -> torch.Tensor:
    """The score of fused pairs from psi / psi''s outputs: cos(I_g, R_g) (global) or the ITM head's
    match logit (itm, T-Food's ``proj_cross(...)[:, 1]``). -> [U] float32"""
    if kind == "itm":
        return matching.itm_logits(r_att, rec_pad)[:, 1].float()
    return pair_global_logits(i_att.float(), r_att.float(), rec_pad, 1.0)


def pair_scores(matching, img_tokens: torch.Tensor, rec_tokens: torch.Tensor, rec_pad: torch.Tensor,
                kind: str) -> torch.Tensor:
    """Temperature-free matching score of U aligned pairs (image ``u`` with recipe ``u``).

    img_tokens [U, 1+P, C], rec_tokens [U, S, W], rec_pad [U, S] -> [U] float32:
    itm: the ITM head's match logit (T-Food); global: cos(I_g, R_g) (``pair_global_logits`` at
    scale 1); local: the mean over the P patches of cos(I_att[p], A_I[p] R_att)
    (``pair_local_logits`` at scale 1), as the losses score a pair.
    """
    if kind not in ("itm", "global", "local"):
        raise ValueError(f"kind must be itm, global or local, got {kind!r}")
    i_att, attn, r_att = matching.fuse_pairs(img_tokens, rec_tokens, rec_pad,
                                             need_weights=kind == "local")
    if kind != "local":
        return fused_score(matching, kind, i_att, r_att, rec_pad)
    return pair_local_logits(i_att.float(), attn.float(), r_att.float(), 1.0).mean(1)


class PairScorer:
    """Matching scores of (image row, recipe row) pairs of one split, cached across calls.

    ``scorer(img_rows, rec_rows)`` (int tensors of one shape, id-sorted rows of ``tokens``) ->
    float32 scores of that shape, on ``img_rows``' device. Each distinct pair is fused once per
    split: pairs met before (another direction, an overlapping bag) come from the cache, a sorted
    key array (key = image row x N + recipe row) searched with ``searchsorted``. New pairs run in
    chunks of ``chunk`` through ``pair_scores`` on ``device`` (bf16 autocast with ``amp`` on CUDA),
    each chunk's recipe tokens trimmed to its longest recipe (exact: pads are masked keys).
    ``requested`` / ``scored`` count the pairs asked for and the pairs fused.
    """

    def __init__(self, matching, tokens: SplitTokens, device: torch.device | str = "cpu", *,
                 chunk: int = 2048, amp: bool = False):
        if matching is None:
            raise ValueError("this model has no matching module: nothing to re-rank with")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.matching, self.tokens = matching.eval(), tokens
        self.device = torch.device(device)
        self.chunk, self.amp = chunk, amp and self.device.type == "cuda"
        self.kind = score_kind(matching)
        self.n = len(tokens)
        self._keys = torch.empty(0, dtype=torch.long)
        self._vals = torch.empty(0, dtype=torch.float32)
        self.requested = self.scored = 0

    def __call__(self, img_rows: torch.Tensor, rec_rows: torch.Tensor) -> torch.Tensor:
        if img_rows.shape != rec_rows.shape:
            raise ValueError(f"image rows {tuple(img_rows.shape)} and recipe rows "
                             f"{tuple(rec_rows.shape)} differ in shape")
        out_device = img_rows.device
        img, rec = img_rows.reshape(-1).long().cpu(), rec_rows.reshape(-1).long().cpu()
        for name, r in (("image", img), ("recipe", rec)):
            if r.numel() and (int(r.min()) < 0 or int(r.max()) >= self.n):
                raise IndexError(f"{name} rows must lie in [0, {self.n}), got {int(r.min())}..{int(r.max())}")
        self.requested += img.numel()
        uniq, inverse = torch.unique(img * self.n + rec, return_inverse=True)
        vals = torch.empty(uniq.shape[0], dtype=torch.float32)
        pos = torch.searchsorted(self._keys, uniq).clamp(max=max(len(self._keys) - 1, 0))
        hit = (self._keys[pos] == uniq) if len(self._keys) else torch.zeros_like(uniq, dtype=torch.bool)
        vals[hit] = self._vals[pos[hit]]
        new = uniq[~hit]
        if new.numel():
            fresh = self.score_pairs(new // self.n, new % self.n)
            vals[~hit] = fresh
            keys = torch.cat([self._keys, new])
            order = torch.argsort(keys)
            self._keys, self._vals = keys[order], torch.cat([self._vals, fresh])[order]
        return vals[inverse].view(img_rows.shape).to(out_device)

    @torch.inference_mode()
    def score_pairs(self, img_rows: torch.Tensor, rec_rows: torch.Tensor) -> torch.Tensor:
        """Uncached: fuse every pair (image row, recipe row) [M] -> [M] float32 on the CPU.

        The global score takes the shared path: what psi/psi' compute from an image alone or a
        recipe alone (``TwoLevelMatching.image_side`` / ``recipe_side``: about half of a pair's
        FLOPs at the CPU default) is computed once per distinct image and recipe of the call, and
        only the rest runs per pair (``fuse_sides``; equal to ``fuse_pairs`` up to float rounding,
        tested). The local score needs psi's attention weights and fuses each pair whole.
        """
        if self.kind in ("global", "itm"):
            return self._score_global(img_rows, rec_rows)
        out = []
        for start in range(0, img_rows.shape[0], self.chunk):
            ii, rr = img_rows[start:start + self.chunk], rec_rows[start:start + self.chunk]
            img = self.tokens.take_image(ii)
            rec, pad = self.tokens.take_recipe(rr)
            L = used_length(~pad)
            img, rec, pad = (t.to(self.device, non_blocking=True) for t in (img, rec[:, :L], pad[:, :L]))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                out.append(pair_scores(self.matching, img, rec, pad, self.kind).float().cpu())
        self.scored += img_rows.shape[0]
        return torch.cat(out) if out else torch.empty(0)

    def _sides(self, rows: torch.Tensor, image: bool) -> list[torch.Tensor]:
        """``image_side`` / ``recipe_side`` (+ the pad mask) of id-sorted ``rows``, in chunks."""
        parts: list[list[torch.Tensor]] = []
        for start in range(0, rows.shape[0], self.chunk):
            rr = rows[start:start + self.chunk]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                if image:
                    side = self.matching.image_side(self.tokens.take_image(rr).to(self.device))
                else:
                    rec, pad = (t.to(self.device) for t in self.tokens.take_recipe(rr))
                    side = (*self.matching.recipe_side(rec, pad), pad)
            parts.append(list(side))
        return [torch.cat(ts) for ts in zip(*parts)]

    def _score_global(self, img_rows: torch.Tensor, rec_rows: torch.Tensor) -> torch.Tensor:
        uimg, inv_img = torch.unique(img_rows, return_inverse=True)
        urec, inv_rec = torch.unique(rec_rows, return_inverse=True)
        img_side = self._sides(uimg, image=True)
        rec_side = self._sides(urec, image=False)
        inv_img, inv_rec = inv_img.to(self.device), inv_rec.to(self.device)
        out = []
        for start in range(0, img_rows.shape[0], self.chunk):
            ii, rr = inv_img[start:start + self.chunk], inv_rec[start:start + self.chunk]
            pad = rec_side[-1].index_select(0, rr)
            L = used_length(~pad)  # this chunk's longest recipe: the rest is padding
            r, k, v, x_r, q_r = (t.index_select(0, rr) for t in rec_side[:-1])
            r, x_r, pad = r[:, :L], x_r[:, :L], pad[:, :L]
            k, v, q_r = k[:, :, :L], v[:, :, :L], q_r[:, :, :L]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                i_att, r_att = self.matching.fuse_sides([t.index_select(0, ii) for t in img_side],
                                                        (r, k, v, x_r, q_r), pad)
                out.append(fused_score(self.matching, self.kind, i_att, r_att, pad).float().cpu())
        self.scored += img_rows.shape[0]
        return torch.cat(out) if out else torch.empty(0)


# ------------------------------------------------------------------------------ protocols
def evaluate_rerank(image: np.ndarray | torch.Tensor, recipe: np.ndarray | torch.Tensor,
                    ids: Sequence[Any] | np.ndarray, scorer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    k: int = 10, protocol: str = "tfood", bag_size: int = 1000, n_bags: int = 10,
                    seed: int = 1234, device: str | torch.device | None = None) -> dict:
    """``malm.eval.protocol.evaluate`` with each bag's ranks from ``rerank_ranks``: the same bags
    and result layout, ``protocol`` = ``<protocol>+rerank<k>``, plus ``base_protocol`` and
    ``rerank_k``. ``scorer(image rows, recipe rows)`` takes rows of ``image`` / ``recipe`` (the
    split), e.g. a ``PairScorer``."""

    def rank_fn(sim: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        bag = torch.from_numpy(rows).to(sim.device)
        return rerank_ranks(sim, k, lambda i, r: scorer(bag[i], bag[r]))

    result = evaluate(image, recipe, ids, protocol=protocol, bag_size=bag_size, n_bags=n_bags,
                      seed=seed, device=device, rank_fn=rank_fn)
    result["protocol"] = rerank_protocol(protocol, k)
    result["base_protocol"], result["rerank_k"] = protocol, k
    return result


def rerank_bag_sizes(eval_cfg: C.EvalConfig) -> list[int]:
    """The bag sizes ``eval.rerank_bags`` selects (null = every bag size of ``eval.bags``)."""
    sizes = [int(b) for b, _ in eval_cfg.bags]
    if eval_cfg.rerank_bags is None:
        return sizes
    unknown = sorted(set(eval_cfg.rerank_bags) - set(sizes))
    if unknown:
        raise ValueError(f"eval.rerank_bags {unknown} are not bag sizes of eval.bags ({sizes})")
    return [b for b in sizes if b in set(eval_cfg.rerank_bags)]


def rerank_protocols(eval_cfg: C.EvalConfig) -> list[str]:
    """The protocols ``eval.rerank_protocols`` selects (null = every protocol of ``eval.protocols``)."""
    if eval_cfg.rerank_protocols is None:
        return list(eval_cfg.protocols)
    unknown = sorted(set(eval_cfg.rerank_protocols) - set(eval_cfg.protocols))
    if unknown:
        raise ValueError(f"eval.rerank_protocols {unknown} are not in eval.protocols ({eval_cfg.protocols})")
    return [p for p in eval_cfg.protocols if p in set(eval_cfg.rerank_protocols)]


def rerank_selection(eval_cfg: C.EvalConfig, settings: Sequence[tuple[str, int, int]]
                     ) -> tuple[list[tuple[str, int, int]], str]:
    """The settings of ``settings`` that ``eval`` re-ranks, and, when there are none, why."""
    k = eval_cfg.rerank_k
    if k < 0:
        raise ValueError(f"eval.rerank_k must be >= 0, got {k}")
    if k == 0:
        return [], "eval.rerank_k = 0: no re-ranked results"
    sizes, protocols = set(rerank_bag_sizes(eval_cfg)), set(rerank_protocols(eval_cfg))
    settings = [s for s in settings if s[0] in protocols and s[1] in sizes]
    if not settings:
        return [], (f"eval.rerank_protocols {eval_cfg.rerank_protocols} x eval.rerank_bags "
                    f"{eval_cfg.rerank_bags} select none of the evaluated settings")
    return settings, ""


def no_matching_reason(run_dir: str | os.PathLike, variant: str) -> str:
    return (f"{run_dir} ({variant}) has no matching module (lambda_gc = lambda_lc = lambda_itm = 0): "
            "no re-ranked results, the dual encoder is its only reading")


def rerank_run(emb: str | os.PathLike, run_dir: str | os.PathLike, eval_cfg: C.EvalConfig,
               settings: Sequence[tuple[str, int, int]], *, device: str | torch.device | None = None,
               chunk: int = 2048, progress: bool = True) -> tuple[list[dict], str]:
    """The re-ranked results of one run for ``settings`` ((protocol, bag_size, n_bags), the
    dual-encoder settings already evaluated on ``emb``), and a line saying what was done.

    Returns ``([], why)`` without re-ranking when ``eval.rerank_k`` is 0, no setting is selected by
    ``eval.rerank_protocols`` x ``eval.rerank_bags`` or the run's model has no matching module. Otherwise the model is loaded
    from the checkpoint the embeddings file records (best|last), the split ``eval.split`` is run
    through it once more for its token sets, and the recomputed embeddings must equal the file's
    (same ids, max |difference| <= 1e-3; 5e-2 under bf16) -- so the cosine top K and the matching
    scores come from one model. Each result records the run, checkpoint and scoring.
    (``malm.eval.assess`` keeps the token sets of its one forward instead: ``rerank_scored``.)
    """
    settings, why = rerank_selection(eval_cfg, settings)
    if not settings:
        return [], why
    prov = embedding_provenance(emb)
    if "checkpoint" not in prov:
        raise ValueError(f"{emb} does not record which checkpoint made it; re-embed it (malm embed) "
                         "so that re-ranking loads the same weights")
    device = resolve_device("auto") if device is None else torch.device(device)
    model, cfg, cache_dir, info = load_trained(run_dir, device, prov["checkpoint"])
    if model.matching is None:
        return [], no_matching_reason(run_dir, cfg.variant)
    if "checkpoint_epoch" in prov and prov["checkpoint_epoch"] != info["checkpoint_epoch"]:
        raise ValueError(f"{emb} was made by epoch {prov['checkpoint_epoch']} of the {prov['checkpoint']} "
                         f"checkpoint, {run_dir} now holds epoch {info['checkpoint_epoch']}: re-embed")
    image, recipe, ids = load_embeddings(emb)
    amp = cfg.train.amp and device.type == "cuda"
    t0 = time.perf_counter()
    loader = eval_loader(cfg.data, cfg.model.image, cache_dir, eval_cfg.split,
                         max(cfg.train.batch_size, 128), device)
    image2, recipe2, ids2, tokens = embed_split_tokens(
        model, loader, device, amp=amp, progress=progress,
        token_dtype=torch.bfloat16 if amp else torch.float32)
    t_tokens = time.perf_counter() - t0
    if len(ids2) != len(ids) or not np.array_equal(ids2.astype(str), ids.astype(str)):
        raise ValueError(f"{emb} holds {len(ids)} pairs of other ids than split {eval_cfg.split!r} of "
                         f"{run_dir} ({len(ids2)} pairs): wrong split or run")
    diff = max(float(np.abs(image2 - image).max()), float(np.abs(recipe2 - recipe).max()))
    if diff > _EMB_TOL[amp]:
        raise ValueError(f"{emb} was not made by {run_dir}'s {prov['checkpoint']} checkpoint "
                         f"(recomputed embeddings differ by up to {diff:.3g}): re-embed")
    return rerank_scored(model, info, image, recipe, ids, tokens, eval_cfg, settings, emb=emb,
                         run_dir=run_dir, device=device, amp=amp, chunk=chunk,
                         token_pass_seconds=t_tokens)


def rerank_scored(model, info: dict, image: np.ndarray, recipe: np.ndarray, ids: np.ndarray,
                  tokens: SplitTokens, eval_cfg: C.EvalConfig, settings: Sequence[tuple[str, int, int]],
                  *, emb: str | os.PathLike, run_dir: str | os.PathLike, device: torch.device,
                  amp: bool = False, chunk: int = 2048, token_pass_seconds: float = 0.0
                  ) -> tuple[list[dict], str]:
    """Re-rank ``settings`` (already selected: ``rerank_selection``) with ``model``'s matching module
    on the token sets of the same forward that made ``image`` / ``recipe`` (id-sorted rows)."""
    k = eval_cfg.rerank_k
    if device.type == "cuda" and tokens.nbytes < 0.5 * torch.cuda.mem_get_info(device)[0]:
        tokens = tokens.to(device)  # else every chunk's tokens cross PCIe (~0.35 MB a pair at ViT-B/16)
    scorer = PairScorer(model.matching, tokens, device, chunk=chunk, amp=amp)
    results = []
    for protocol, bag_size, n_bags in settings:
        t1, before = time.perf_counter(), scorer.scored
        res = evaluate_rerank(image, recipe, ids, scorer, k, protocol, bag_size, n_bags,
                              seed=eval_cfg.seed)
        res.update({"embeddings": str(emb), "run_dir": str(run_dir), **info,
                    "rerank_score": scorer.kind, "rerank_pairs_scored": scorer.scored - before,
                    "rerank_seconds": round(time.perf_counter() - t1, 3),
                    "token_pass_seconds": round(token_pass_seconds, 3)})
        results.append(res)
    return results, (f"re-ranked the top {k} with {run_dir}'s matching module ({scorer.kind} score, "
                     f"{info['checkpoint']} checkpoint, epoch {info['checkpoint_epoch']}): "
                     f"{scorer.scored} pairs fused for {scorer.requested} requested")
