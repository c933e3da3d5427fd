"""Recipe1M retrieval metrics as small pure tensor functions (medR, R@k in both directions).

Conventions (shared with ``malm.eval.protocol``):

* Row ``i`` of the image and recipe embeddings is one pair, so the true match of query ``i`` is
  gallery item ``i``: the diagonal of the similarity matrix ``sim[i, j] = cos(image_i, recipe_j)``.
* ``img2rec``: image queries rank the recipes (rows of ``sim``); ``rec2img``: recipe queries rank the
  images (columns of ``sim``). Note that T-Food's dual-encoder metrics
  (mshukor/TFood ``recipe1m/models/metrics/trijoint.py``, ``Trijoint.calculate_metrics``) label these
  the other way round: its ``im2recipe`` is ``argsort(distances, axis=0)``, i.e. a recipe query over
  images. Compare our ``img2rec`` with T-Food's logged ``recall_*_recipe2im``.
* Rank is 1-based: ``1 + #{gallery items with a strictly greater similarity than the true match}``.
  Ties therefore count in the query's favour, exactly as H-T's
  ``np.count_nonzero(dists < np.diag(dists)[:, None], axis=-1) + 1``
  (amzn/image-to-recipe-transformers ``src/utils/metrics.py``). Exact float ties are only
  reproducible up to BLAS rounding; with real embeddings they do not occur.
* medR is ``np.median`` of the ranks (the mean of the two middle ranks for an even bag, as H-T and
  T-Food both use ``np.median``; ``torch.median`` would give the lower one). R@k is the percentage
  (0-100) of queries with ``rank <= k``. H-T's code reports fractions from an ``argpartition`` top-k,
  which equals ``rank <= k`` when there are no ties; T-Food also reports fractions.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from malm.eval.names import RECALL_KS

# Elements of the reused comparison buffer in ``ranks`` (8M float32 = 32 MB). Few large blocks beat
# many small ones on a busy CPU, where every op pays an OpenMP barrier.
_BLOCK_ELEMS = 1 << 23


@contextmanager
def full_fp32_matmul() -> Iterator[None]:
    """Run float32 matmuls at full precision (no TF32/bf16) inside the block, then restore.

    A training run may lower ``torch.set_float32_matmul_precision``; ranks of near neighbours must
    not depend on that.
    """
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def cosine_similarity(image: torch.Tensor, recipe: torch.Tensor,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, D] x [M, D] -> [N, M]`` cosine similarities in float32 (rows are L2-normalised first).

    ``sim[n, m] = <image_n / |image_n|, recipe_m / |recipe_m|>``; an all-zero row has similarity 0
    with everything (``F.normalize``'s eps), as sklearn's cosine distance of 1 in H-T.
    ``out``: optional float32 ``[N, M]`` buffer to reuse across bags (saves re-faulting 400 MB per
    10k bag on CPU).
    """
    image = F.normalize(image.float(), dim=1)
    recipe = F.normalize(recipe.float(), dim=1)
    with full_fp32_matmul():
        return torch.mm(image, recipe.T, out=out) if out is not None else image @ recipe.T


def ranks(sim: torch.Tensor, chunk_rows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks of the true matches (the diagonal) in both directions.

    sim: ``[N, N]``, ``sim[i, j]`` = similarity of image ``i`` and recipe ``j``.
    Returns ``(ranks_img2rec [N], ranks_rec2img [N])`` as int64 on ``sim.device``:

        ranks_img2rec[i] = 1 + #{j : sim[i, j] > sim[i, i]}     (row i: image query)
        ranks_rec2img[j] = 1 + #{i : sim[i, j] > sim[j, j]}     (column j: recipe query)

    Ties count in the query's favour (strictly greater). The comparisons run over blocks of
    ``chunk_rows`` rows into one reused float32 buffer (at most 32 MB by default, whatever N); ``sim``
    itself is the caller's (``N^2 * 4`` bytes: 400 MB for a 10k bag). The 0/1 comparisons are summed
    as float32, which is exact below 2^24 and several times faster on CPU than reducing a bool tensor.
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"ranks() needs a square [N, N] similarity matrix, got {tuple(sim.shape)}")
    n = sim.shape[0]
    if n >= 1 << 24:
        raise ValueError(f"ranks() counts in float32, exact only below 2^24 items; got N={n}")
    if chunk_rows is None:
        chunk_rows = max(1, _BLOCK_ELEMS // max(n, 1))
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    true_sim = sim.diagonal().contiguous()  # a strided view would defeat the vectorised compare
    ranks_rows = torch.empty(n, dtype=torch.float32, device=sim.device)
    ranks_cols = torch.zeros(n, dtype=torch.float32, device=sim.device)
    buf = torch.empty(min(chunk_rows, n), n, dtype=torch.float32, device=sim.device)
    for start in range(0, n, chunk_rows):  # loop over row blocks, not over queries
        stop = min(start + chunk_rows, n)
        block, out = sim[start:stop], buf[: stop - start]  # [c, N]
        torch.sum(torch.gt(block, true_sim[start:stop, None], out=out), dim=1,
                  out=ranks_rows[start:stop])
        ranks_cols += torch.gt(block, true_sim[None, :], out=out).sum(dim=0)
    return ranks_rows.long() + 1, ranks_cols.long() + 1


def retrieval_metrics(rank: torch.Tensor | np.ndarray,
                      ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """``[Q]`` 1-based ranks of one bag -> ``{"medR": median rank, "R@k": % of queries with rank <= k}``."""
    r = rank.detach().cpu().numpy() if isinstance(rank, torch.Tensor) else np.asarray(rank)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"retrieval_metrics() needs a non-empty [Q] rank vector, got shape {r.shape}")
    out = {"medR": float(np.median(r))}
    for k in ks:
        out[f"R@{k}"] = float(100.0 * np.count_nonzero(r <= k) / r.size)
    return out


def aggregate(per_bag: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per-bag metric dicts -> ``{name: {"mean", "std"}}``.

    ``std`` is the population std (``np.std``, ddof=0) as T-Food logs it
    (mshukor/TFood ``recipe1m/models/metrics/trijoint.py``); H-T's ``src/eval.py`` prints the mean only.
    """
    if not per_bag:
        raise ValueError("aggregate() needs at least one bag")
    names = list(per_bag[0])
    return {name: {"mean": float(np.mean([b[name] for b in per_bag])),
                   "std": float(np.std([b[name] for b in per_bag]))} for name in names}


def bag_metrics(image: torch.Tensor, recipe: torch.Tensor,
                sim_out: torch.Tensor | None = None) -> dict[str, dict[str, float]]:
    """One bag ``[B, D], [B, D]`` (aligned pairs) -> ``{"img2rec": {...}, "rec2img": {...}}``.

    ``sim_out``: optional float32 ``[B, B]`` buffer for the similarity matrix.
    """
    r_i2r, r_r2i = ranks(cosine_similarity(image, recipe, out=sim_out))
    return {"img2rec": retrieval_metrics(r_i2r), "rec2img": retrieval_metrics(r_r2i)}
