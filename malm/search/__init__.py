"""Use a trained model on your own photos: ``malm index`` and ``malm search``.

* :func:`build_index` (``malm index``): a run's embeddings of a recipe collection -- the pairs of a
  split of its data cache, or the recipes of a Recipe1M-format root -- with ids, titles, ingredient
  lines, token ids, the run's config and vocabulary and which checkpoint made them; optionally the
  image embeddings (with their files) for recipe -> image search. One ``.npz`` written atomically,
  plus a JSON summary beside it (layout: :mod:`malm.search.index`).
* :func:`load_photo`: any photo -> the tensor evaluation would give it had it been cached (the
  cache's own resize and crop, evaluation's crop and normalisation; :mod:`malm.search.photo`).
* :func:`search` / :func:`search_images` (``malm search``): photos -> recipes and recipes ->
  images, batched, ranked by one matrix product, optionally re-ranked by the matching module;
  unreadable photos are reported one line each, never fatal (:mod:`malm.search.query`).
* ``malm serve`` (:mod:`malm.search.serve`): a local web page over an index -- drop a photo, see
  its top-k recipes and, with a matching module, an ingredient line's attention over the photo.
* :func:`add_index_parser` / :func:`add_search_parser` / :func:`add_serve_parser`: the argparse
  subcommands for :mod:`malm.cli` (:mod:`malm.search.cli`; ``python -m malm.search`` runs them alone).

Importing this package is light (argparse only); the rest loads on first use.
"""

from __future__ import annotations

from malm.search.cli import (  # noqa: F401
    add_index_parser, add_search_parser, add_serve_parser, cmd_index, cmd_search, cmd_serve)

_LAZY = {
    "build_index": "malm.search.index", "load_index": "malm.search.index", "Index": "malm.search.index",
    "read_recipe_file": "malm.search.index", "recipe_query": "malm.search.index",
    "load_photo": "malm.search.photo", "read_photo": "malm.search.photo",
    "eval_tensor": "malm.search.photo", "PhotoError": "malm.search.photo",
    "expand_photos": "malm.search.photo",
    "search": "malm.search.query", "search_images": "malm.search.query", "top_k": "malm.search.query",
    "SearchResult": "malm.search.query", "Hit": "malm.search.query",
    "load_model": "malm.search.model",
}
__all__ = ["add_index_parser", "add_search_parser", "add_serve_parser", "cmd_index", "cmd_search",
           "cmd_serve", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'malm.search' has no attribute {name!r}")
