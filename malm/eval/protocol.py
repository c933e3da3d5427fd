"""Recipe1M retrieval protocols: which test pairs form each bag, and the mean/std over bags.

Two protocols, named in every result (the paper, Sec. 4.1, evaluates as T-Food and H-T do; their code
differs in which pairs form a bag):

* ``tfood`` (T-Food / MALM): consecutive bags of ``bag_size`` pairs in file order, i.e. the first
  ``n_bags * bag_size`` pairs (T-Food saves the first ``nb_bags * nb_matchs_per_bag`` matched pairs
  the test loader yields and cuts them into consecutive bags: mshukor/TFood
  ``recipe1m/models/metrics/trijoint.py``).
* ``ht`` (H-T, amzn/image-to-recipe-transformers ``src/eval.py``): the pairs are sorted by id
  (``idxs = np.argsort(ids)``, "sort by name so that we always pick the same samples"), then
  ``computeAverageMetrics`` draws ``ntimes`` (default 10) subsets with
  ``random.sample(range(0, len(imfeats)), k)`` (``medr_N`` default 1000) from Python's ``random``
  module, seeded once at import with ``random.seed(1234)``. The draws follow each other in one stream
  (no reseeding between bags), and each retrieval direction is a fresh process, so both directions
  see the same subsets. ``bag_indices`` reproduces these subsets exactly (a private
  ``random.Random(seed)`` gives the same stream without touching the global one).
"""

from __future__ import annotations

import os
import random
from typing import Any, Callable, Sequence

import numpy as np
import torch

from malm.eval.metrics import aggregate, bag_metrics, cosine_similarity, retrieval_metrics
from malm.eval.names import DIRECTIONS, METRIC_NAMES, PROTOCOLS, bag_label
from malm.io import atomic_write_json


def bag_indices(ids: Sequence[Any] | np.ndarray, protocol: str = "tfood", bag_size: int = 1000,
                n_bags: int = 10, seed: int = 1234) -> list[np.ndarray]:
    """Row indices (into the given, unsorted rows) of each bag: ``n_bags`` int64 arrays ``[bag_size]``.

    ``tfood``: ``[0, B), [B, 2B), ...`` (``seed`` unused). ``ht``: with ``order`` the stable argsort of
    ``ids``, bag ``t`` is ``order[random.Random(seed)``'s ``t``-th ``sample(range(N), bag_size)]``,
    in the sampled order. Ids must be unique for ``ht`` to match H-T (its quicksort order of
    duplicates is unspecified; here duplicates keep file order).
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be a 1-D array, got shape {ids.shape}")
    n = len(ids)
    _check_bags(bag_size, n_bags)
    if protocol == "tfood":
        need = n_bags * bag_size
        if n < need:
            raise ValueError(f"tfood protocol needs {n_bags} x {bag_size} = {need} pairs, "
                             f"but only {n} are given")
        return [np.arange(t * bag_size, (t + 1) * bag_size, dtype=np.int64) for t in range(n_bags)]
    if protocol == "ht":
        if n < bag_size:
            raise ValueError(f"ht protocol samples bags of {bag_size} pairs, but only {n} are given")
        order = np.argsort(ids, kind="stable")
        rng = random.Random(seed)  # == random.seed(seed) once, then successive draws (H-T eval.py)
        return [order[np.asarray(rng.sample(range(n), bag_size), dtype=np.int64)]
                for _ in range(n_bags)]
    raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")


def evaluate(image: torch.Tensor | np.ndarray, recipe: torch.Tensor | np.ndarray,
             ids: Sequence[Any] | np.ndarray, protocol: str = "tfood", bag_size: int = 1000,
             n_bags: int = 10, seed: int = 1234, device: str | torch.device | None = None,
             rank_fn: Callable[[torch.Tensor, np.ndarray], tuple[torch.Tensor, torch.Tensor]] | None = None
             ) -> dict:
    """Retrieval metrics of aligned embeddings under one protocol, both directions.

    image, recipe: ``[N, D]`` (row ``i`` of both is pair ``ids[i]``); cosine similarity in float32.
    device: where the per-bag ``[B, B]`` similarity is computed (``None``: where ``image`` lives).
    rank_fn: ``(sim [B, B], bag rows [B]) -> (ranks_img2rec [B], ranks_rec2img [B])``, the 1-based
    ranks of one bag's true matches; ``None`` = ``metrics.ranks`` (the dual encoder). The re-ranked
    readings (``malm.eval.rerank``) pass their own and rename ``protocol`` in the result.
    Returns ``{"protocol", "bag_size", "n_bags", "n_rows", "seed", "img2rec": {"medR": {"mean",
    "std"}, "R@1": ..., "R@5": ..., "R@10": ...}, "rec2img": {...}, "per_bag": {"img2rec":
    {"medR": [n_bags values], ...}, "rec2img": {...}}}``; ``seed`` is ``None`` for ``tfood``.
    """
    image_t = _as_matrix(image, "image")
    recipe_t = _as_matrix(recipe, "recipe")
    if image_t.shape != recipe_t.shape:
        raise ValueError(f"image {tuple(image_t.shape)} and recipe {tuple(recipe_t.shape)} "
                         "embeddings must have the same shape [N, D]")
    n = image_t.shape[0]
    if len(ids) != n:
        raise ValueError(f"got {len(ids)} ids for {n} embedding rows")
    _check_finite(image_t, "image")
    _check_finite(recipe_t, "recipe")
    bags = bag_indices(ids, protocol, bag_size, n_bags, seed)
    device = torch.device(device) if device is not None else image_t.device

    per_bag: dict[str, list[dict[str, float]]] = {d: [] for d in DIRECTIONS}
    sim = torch.empty(bag_size, bag_size, dtype=torch.float32, device=device)  # reused per bag
    for idx in bags:  # one [B, B] similarity matrix per bag
        rows = torch.from_numpy(idx).to(image_t.device)
        img_b, rec_b = image_t.index_select(0, rows).to(device), recipe_t.index_select(0, rows).to(device)
        if rank_fn is None:
            out = bag_metrics(img_b, rec_b, sim_out=sim)
        else:
            r_i2r, r_r2i = rank_fn(cosine_similarity(img_b, rec_b, out=sim), idx)
            out = {"img2rec": retrieval_metrics(r_i2r), "rec2img": retrieval_metrics(r_r2i)}
        for d in DIRECTIONS:
            per_bag[d].append(out[d])

    result: dict[str, Any] = {"protocol": protocol, "bag_size": bag_size, "n_bags": n_bags,
                              "n_rows": n, "seed": seed if protocol == "ht" else None}
    for d in DIRECTIONS:
        result[d] = aggregate(per_bag[d])
    result["per_bag"] = {d: {m: [b[m] for b in per_bag[d]] for m in METRIC_NAMES}
                         for d in DIRECTIONS}
    return result


def flat_metrics(result: dict) -> dict[str, float]:
    """``{"<protocol>/<bag>/<direction>/<metric>_<mean|std>": value}`` for loggers (e.g. dvclive).

    ``<bag>`` is ``1k``/``10k`` for multiples of 1000, else the number, e.g. ``tfood/1k/img2rec/R@1_mean``.
    """
    bag = bag_label(result["bag_size"])
    return {f"{result['protocol']}/{bag}/{d}/{m}_{s}": v
            for d in DIRECTIONS for m, stats in result[d].items() for s, v in stats.items()}


def save_result(result: dict, path: str | os.PathLike) -> None:
    """Write an ``evaluate`` result as JSON (atomically)."""
    atomic_write_json(path, result)


def _check_finite(t: torch.Tensor, name: str) -> None:
    # Row sums propagate NaN/inf and are ~10x cheaper than isfinite() on the whole [N, D] array;
    # only the suspicious rows (NaN/inf, or a finite overflow) get the exact check.
    suspect = (~torch.isfinite(t.sum(dim=1))).nonzero().flatten()
    if suspect.numel():
        bad = suspect[~torch.isfinite(t[suspect]).all(dim=1)]
        if bad.numel():
            raise ValueError(f"{name} embeddings contain NaN/inf (first bad row {int(bad[0])}, "
                             f"{bad.numel()} rows in all)")


def _check_bags(bag_size: int, n_bags: int) -> None:
    for name, v in (("bag_size", bag_size), ("n_bags", n_bags)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _as_matrix(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        a = np.asarray(x)
        if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer)
                                       or np.issubdtype(a.dtype, np.floating)):
            raise ValueError(f"{name} embeddings must be real numbers, got dtype {a.dtype}")
        x = torch.from_numpy(a)
    if x.dtype == torch.bool or x.dtype.is_complex:
        raise ValueError(f"{name} embeddings must be real numbers, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} embeddings must be [N, D], got shape {tuple(x.shape)}")
    return x.float()
