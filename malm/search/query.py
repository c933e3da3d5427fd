"""Querying an index: photos -> recipes (:func:`search`) and recipes -> images
(:func:`search_images`).

Ranking is one matrix product of the batch's query embeddings with the whole gallery and a
``torch.topk`` per row (:func:`top_k`); nothing loops over recipes in Python. ``rerank=K``
re-orders each query's top K by the run's matching module (:func:`malm.eval.rerank.pair_scores`,
the score of ``malm evaluate --run-dir``'s re-ranked protocols), ties of the matching score broken
by the cosine; ranks past K keep the cosine order, as the evaluation's rank rule.

A photo that cannot be read is a failure (:class:`malm.search.photo.PhotoError`: one line naming
the file and the reason); the other photos of the call still get their results, and
:attr:`SearchResult.failures` lists the failures for the caller (the CLI exits non-zero).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from malm.search.index import Index, load_index, read_recipe_file, recipe_query  # noqa: F401
from malm.search.photo import PhotoError, expand_photos, load_photo


@dataclass
class Hit:
    """One result: ``score`` is the dual-encoder cosine; ``match_score`` the matching module's
    score when re-ranked (None past the re-ranked top K). ``row`` is the recipe's row in the index
    (or the image's, for recipe -> image hits, whose ``image`` is the file)."""

    rank: int
    score: float
    id: str
    title: str
    row: int
    match_score: float | None = None
    ingredients: list[str] = field(default_factory=list)
    image: str | None = None


@dataclass
class QueryResult:
    query: str
    hits: list[Hit]


@dataclass
class SearchResult:
    """``results`` (one per query that could be read, in input order), ``failures`` (one
    :class:`PhotoError` per photo that could not), ``embeddings`` [len(results), E] of the queries."""

    direction: str
    k: int
    rerank: int
    results: list[QueryResult]
    failures: list[PhotoError]
    embeddings: np.ndarray

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    def failure_lines(self) -> list[str]:
        """One line per failure: ``<file>: <reason>``."""
        return [str(f) for f in self.failures]

    def to_json(self) -> dict:
        return {"direction": self.direction, "k": self.k, "rerank": self.rerank,
                "results": [{"query": r.query, "hits": [asdict(h) for h in r.hits]} for r in self.results],
                "failures": [{"query": f.path, "error": f.reason} for f in self.failures]}


# ------------------------------------------------------------------------------------ ranking
def top_k(queries, gallery, k: int):
    """Each query's ``k`` best gallery rows by dot product (cosine for unit vectors), descending:
    one matrix product [Q, E] x [E, N] and ``torch.topk``. numpy or torch in; returns
    (scores [Q, min(k, N)] float32, rows [Q, min(k, N)] int64) as torch tensors on the CPU."""
    import torch

    q = torch.as_tensor(queries)
    g = torch.as_tensor(gallery).to(q.device)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"queries {tuple(q.shape)} and gallery {tuple(g.shape)} do not fit")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(int(k), g.shape[0])
    sim = q.float() @ g.float().t()
    scores, rows = torch.topk(sim, k, dim=1, largest=True, sorted=True)
    return scores.cpu(), rows.cpu()


def rerank_order(match: Any, k: int):
    """Column order of each row's first ``k`` candidates (already in cosine order) re-ranked by the
    matching score ``match`` [Q, k]: descending, ties kept in cosine order (a stable sort)."""
    import torch

    return torch.sort(torch.as_tensor(match)[:, :k], dim=1, descending=True, stable=True).indices


def _check(k: int, rerank: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(rerank, bool) or not isinstance(rerank, int) or rerank < 0:
        raise ValueError(f"rerank must be 0 (off) or the number of candidates to re-rank, got {rerank!r}")


def _apply_rerank(rows, cos, match, K: int):
    """Rows/cosines [Q, n] in cosine order and matching scores [Q, K] of their first K ->
    (rows, cosines, match [Q, n] with NaN past K), the first K re-ordered."""
    import torch

    order = rerank_order(match, K)
    rows, cos = rows.clone(), cos.clone()
    rows[:, :K], cos[:, :K] = rows[:, :K].gather(1, order), cos[:, :K].gather(1, order)
    full = torch.full(rows.shape, float("nan"))
    full[:, :K] = torch.as_tensor(match)[:, :K].gather(1, order)
    return rows, cos, full


def _hits(index: Index, rows, cos, match, k: int, images: bool) -> list[list[Hit]]:
    out = []
    for q in range(rows.shape[0]):
        hits = []
        for j in range(min(k, rows.shape[1])):
            r = int(rows[q, j])
            m = None if match is None or np.isnan(float(match[q, j])) else float(match[q, j])
            rec = int(index.image_recipe[r]) if images else r
            hits.append(Hit(rank=j + 1, score=float(cos[q, j]), id=str(index.ids[rec]),
                            title=index.title(rec), row=r, match_score=m,
                            ingredients=index.ingredients(rec),
                            image=index.image_path(r) if images else None))
        out.append(hits)
    return out


# ------------------------------------------------------------------------------------ photos
def _load_all(paths: Sequence[str], cfg, workers: int) -> list:
    def one(p: str):
        try:
            return load_photo(p, cfg)
        except PhotoError as exc:
            return exc

    if len(paths) == 1 or workers <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:  # Pillow decodes with the GIL released
        return list(pool.map(one, paths))


def _photo_args(photos: Iterable[str | os.PathLike] | str | os.PathLike) -> tuple[list[str], list[PhotoError]]:
    if isinstance(photos, (str, os.PathLike)):
        photos = [photos]
    files, empty = [], []
    for p in photos:
        found = expand_photos([p])
        if Path(p).is_dir() and not found:
            empty.append(PhotoError(p, "folder holds no image file (by suffix)"))
        files += found
    return files, empty


def search(index: Index | str | os.PathLike, photos, k: int = 5, rerank: int = 0, *,
           batch_size: int = 64, device: Any = None, workers: int | None = None) -> SearchResult:
    """The ``k`` best recipes of the index for each photo (files; folders expand to their image
    files). Photos are preprocessed as evaluation preprocesses a cached image
    (:func:`malm.search.photo.load_photo`), embedded ``batch_size`` at a time and ranked against
    every recipe with one matrix product; ``rerank=K`` re-orders each photo's top K with the run's
    matching module (an error when the model has none). Unreadable photos are reported in
    ``failures``, not raised."""
    import torch

    from malm.search.model import embed_images, match_scores, recipe_tokens

    _check(k, rerank)
    index = index if isinstance(index, Index) else load_index(index)
    paths, failures = _photo_args(photos)
    if not paths and not failures:
        raise ValueError("no photo given")
    model = index.model(device)
    if rerank and model.matching is None:
        raise ValueError(f"{index.meta['run_dir']} ({index.meta['variant']}) has no matching module "
                         "(lambda_gc = lambda_lc = lambda_itm = 0): --rerank needs one; search without it")
    dev = next(model.parameters()).device
    cfg = index.config
    amp = bool(cfg.train.amp) and dev.type == "cuda"
    gallery = index.gallery("recipe", dev)
    workers = workers or min(8, os.cpu_count() or 1)
    results, embs = [], []
    for s in range(0, len(paths), batch_size):
        chunk = paths[s:s + batch_size]
        loaded = _load_all(chunk, cfg, workers)
        failures += [x for x in loaded if isinstance(x, PhotoError)]
        ok = [(p, t) for p, t in zip(chunk, loaded) if not isinstance(t, PhotoError)]
        if not ok:
            continue
        emb, tok = embed_images(model, torch.stack([t for _, t in ok]), amp=amp, tokens=True)
        embs.append(emb)
        cos, rows = top_k(emb.to(dev), gallery, max(k, rerank))
        match = None
        if rerank:
            K = min(rerank, rows.shape[1])
            cand = rows[:, :K]
            uniq, inv = torch.unique(cand, return_inverse=True)
            title, ingrs, instrs = (a[uniq.numpy()] for a in index.tokens())
            _, rtok, rpad = recipe_tokens(model, title, ingrs, instrs, amp=amp)
            q = torch.arange(cand.shape[0])[:, None].expand_as(cand).reshape(-1)
            m = match_scores(model, tok, q, rtok, rpad, inv.reshape(-1), amp=amp).view(cand.shape)
            rows, cos, match = _apply_rerank(rows, cos, m, K)
        for (p, _), hits in zip(ok, _hits(index, rows, cos, match, k, images=False)):
            results.append(QueryResult(p, hits))
    order = {p: i for i, p in enumerate(paths)}
    failures.sort(key=lambda f: order.get(f.path, -1))
    emb = (torch.cat(embs).numpy() if embs else np.zeros((0, index.embed_dim), np.float32))
    return SearchResult("image->recipe", k, rerank, results, failures, emb)


# ------------------------------------------------------------------------------------ recipes
def _recipe_objects(recipes) -> list:
    if isinstance(recipes, (str, os.PathLike)):
        return read_recipe_file(recipes)
    out = []
    for r in recipes:
        if isinstance(r, dict):
            r = recipe_query(r.get("title") or "", r.get("ingredients") or (), r.get("instructions") or ())
        out.append(r)
    if not out:
        raise ValueError("no recipe given")
    return out


def encode_queries(index: Index, recipes: Sequence) -> dict[str, np.ndarray]:
    """Recipe objects (title, ingredients, instructions) -> the cache's token arrays, tokenised
    with the run's vocabulary and caps, as the cache encodes its recipes."""
    from malm.data import text as T

    pre = index.meta["preprocess"]
    return T.encode_recipes(index.tokenizer(), recipes, pre["max_ingrs"], pre["max_instrs"],
                            pre["max_tokens"])


def search_images(index: Index | str | os.PathLike, recipes, k: int = 5, rerank: int = 0, *,
                  batch_size: int = 64, device: Any = None, workers: int | None = None) -> SearchResult:
    """The ``k`` best images of the index's image part for each recipe: a JSON file
    (:func:`malm.search.index.read_recipe_file`), or a list of dicts / :func:`recipe_query` objects
    (title, ingredients, instructions), tokenised with the run's vocabulary. ``rerank=K`` re-orders
    each recipe's top K images with the matching module (the K image files are read again, as
    :func:`search` reads a photo)."""
    import torch

    from malm.search.model import embed_images, match_scores, recipe_tokens

    _check(k, rerank)
    index = index if isinstance(index, Index) else load_index(index)
    index._need_images()
    recipes = _recipe_objects(recipes)
    model = index.model(device)
    if rerank and model.matching is None:
        raise ValueError(f"{index.meta['run_dir']} ({index.meta['variant']}) has no matching module "
                         "(lambda_gc = lambda_lc = lambda_itm = 0): --rerank needs one; search without it")
    dev = next(model.parameters()).device
    cfg = index.config
    amp = bool(cfg.train.amp) and dev.type == "cuda"
    gallery = index.gallery("image", dev)
    workers = workers or min(8, os.cpu_count() or 1)
    arr = encode_queries(index, recipes)
    results, embs = [], []
    for s in range(0, len(recipes), batch_size):
        chunk = recipes[s:s + batch_size]
        emb, rtok, rpad = recipe_tokens(model, arr["title"][s:s + batch_size],
                                        arr["ingrs"][s:s + batch_size],
                                        arr["instrs"][s:s + batch_size], amp=amp)
        embs.append(emb)
        cos, rows = top_k(emb.to(dev), gallery, max(k, rerank))
        match = None
        if rerank:
            K = min(rerank, rows.shape[1])
            cand = rows[:, :K]
            uniq, inv = torch.unique(cand, return_inverse=True)
            files = [index.image_path(int(r)) for r in uniq]
            loaded = _load_all(files, cfg, workers)
            bad = [x for x in loaded if isinstance(x, PhotoError)]
            if bad:
                raise ValueError(f"re-ranking needs the indexed image files: {bad[0]}")
            _, itok = embed_images(model, torch.stack(loaded), amp=amp, tokens=True)
            q = torch.arange(cand.shape[0])[:, None].expand_as(cand).reshape(-1)
            m = match_scores(model, itok, inv.reshape(-1), rtok, rpad, q, amp=amp).view(cand.shape)
            rows, cos, match = _apply_rerank(rows, cos, m, K)
        for r, hits in zip(chunk, _hits(index, rows, cos, match, k, images=True)):
            results.append(QueryResult(r.title or "; ".join(r.ingredients), hits))
    emb = torch.cat(embs).numpy() if embs else np.zeros((0, index.embed_dim), np.float32)
    return SearchResult("recipe->image", k, rerank, results, [], emb)
