"""``malm index``, ``malm search`` and ``malm serve``: the argparse layer. Light to import (argparse only; the
heavy modules are imported inside the handlers, as in :mod:`malm.cli`), so ``malm --help`` stays
instant. :func:`main` is a stand-alone entry with just these commands
(``python -m malm.search``)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from typing import Any, Sequence

SEARCH_EPILOG = """\
examples:
  malm index --run-dir runs/malm/seed0 --out index.npz --images
  malm search --index index.npz dinner.jpg photos/ --k 5
  malm search --index index.npz dinner.jpg --rerank 10 --json
  malm search --index index.npz --title "tomato soup" --ingredient "2 tomatoes" --ingredient "1 onion"
  malm search --index index.npz --recipe my_recipe.json --csv hits.csv

Each photo is preprocessed exactly as evaluation preprocesses a cached image (resize to
data.cache_image_size, centre crop to model.image.img_size, CLIP normalisation). A photo that
cannot be read gets one line on stderr (file: reason); the others still get their results, and the
command exits with status 1.
"""


# ------------------------------------------------------------------------------------ parsers
def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _non_negative(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def add_index_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``index`` on ``subparsers`` (the object ``add_subparsers`` returns)."""
    p = subparsers.add_parser(
        "index", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="Embed a recipe collection with a trained run -> INDEX.npz for `malm search`.",
        description="Embed the recipes (and optionally the images) of a split of the run's data\n"
                    "cache, or of a Recipe1M-format root, with a trained run's checkpoint. Writes\n"
                    "INDEX.npz (embeddings, ids, titles, ingredient lines, token ids, the run's\n"
                    "config and vocabulary, which checkpoint and epoch) and INDEX.json (a summary).")
    p.add_argument("--run-dir", required=True, help="A trained run directory (checkpoint + config).")
    p.add_argument("--out", required=True, metavar="INDEX.npz",
                   help="Index file to write (atomically); INDEX.json is written beside it.")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="Which recipes: the split's pairs of the run's cache, or with --root the "
                        "split's recipes of that root (all = every split; --root only). Default: test.")
    p.add_argument("--root", default=None, metavar="RECIPE1M_ROOT",
                   help="Index a Recipe1M-format root (layer1.json, layer2.json, image tree) "
                        "instead of the run's cache: every recipe of --split, text-only ones "
                        "included, tokenised with the run's vocabulary.")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"],
                   help="best = the epoch with the best validation medR, then R@1 "
                        "(checkpoint_best.pt); last = the last epoch (checkpoint.pt). Default: best.")
    p.add_argument("--images", action="store_true",
                   help="Also embed the images (every cached image of each pair; with --root every "
                        "image file found), for recipe -> image search.")
    p.add_argument("--batch-size", type=_positive, default=128, metavar="N",
                   help="Items per forward pass. Default: 128.")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu or cuda. Default: auto.")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="Threads decoding image files (--root --images). Default: min(8, CPUs).")
    p.set_defaults(func=cmd_index)
    return p


def add_search_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``search`` on ``subparsers`` (the object ``add_subparsers`` returns)."""
    p = subparsers.add_parser(
        "search", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SEARCH_EPILOG,
        help="Find the recipes of your photos (or the images of a recipe) in an index.",
        description="Photo -> recipe search against an index from `malm index`; with --recipe or\n"
                    "--title/--ingredient, recipe -> image search against its image part (an index\n"
                    "built with --images).")
    p.add_argument("photos", nargs="*", metavar="PHOTO",
                   help="Photo files (JPEG, PNG, WebP, ... anything Pillow opens); a folder stands "
                        "for every image file under it (by suffix, recursively, sorted).")
    p.add_argument("--index", required=True, metavar="INDEX.npz", help="Index from `malm index`.")
    p.add_argument("--k", type=_positive, default=5, help="Results per query. Default: 5.")
    p.add_argument("--json", action="store_true",
                   help="Print the results (and failures) as JSON instead of a table.")
    p.add_argument("--csv", default=None, metavar="OUT",
                   help="Also write the results as CSV (query, rank, id, title, score, "
                        "match_score, image) to OUT.")
    p.add_argument("--rerank", type=_non_negative, default=0, metavar="K",
                   help="Re-rank each query's top K by the run's matching module (as `malm "
                        "evaluate --run-dir`; an error when the model has none). 0 = off (default).")
    p.add_argument("--recipe", default=None, metavar="FILE.json",
                   help="Recipe -> image search: a JSON recipe (or a list of them) with title, "
                        "ingredients and optionally instructions (strings or [{\"text\": ...}]).")
    p.add_argument("--title", default=None, help="Recipe -> image search: the recipe's title.")
    p.add_argument("--ingredient", action="append", default=[], metavar="LINE",
                   help="Recipe -> image search: one ingredient line (repeat the option).")
    p.add_argument("--instruction", action="append", default=[], metavar="LINE",
                   help="Recipe -> image search: one instruction line (repeat the option).")
    p.add_argument("--batch-size", type=_positive, default=64, metavar="N",
                   help="Queries per forward pass. Default: 64.")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu or cuda. Default: auto.")
    p.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="Threads decoding photos. Default: min(8, CPUs).")
    p.set_defaults(func=cmd_search)
    return p


SERVE_EPILOG = """\
examples:
  malm serve --index index.npz                      # http://127.0.0.1:8000/
  malm serve --index index.npz --port 0 --k 10      # any free port; the URL is printed
  malm serve --index index.npz --host 0.0.0.0       # reachable from other machines (think first)

The first line printed is `malm serve: http://HOST:PORT/` once the model is loaded and the server
listens. Upload or drop a photo on the page to see its top-k recipes; for a run with a matching
module, click an ingredient line to see where the model looks for it. Needs fastapi, uvicorn and
python-multipart (requirements.txt).
"""


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _port(text: str) -> int:
    v = _non_negative(text)
    if v > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {v}")
    return v


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on ``subparsers`` (the object ``add_subparsers`` returns)."""
    p = subparsers.add_parser(
        "serve", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SERVE_EPILOG,
        help="A local web page over an index: drop a photo, see its recipes and attention maps.",
        description="Serve a web page over an index from `malm index`: upload or drop a photo and\n"
                    "see the top-k recipes (title, ingredients, score); with a matching module, the\n"
                    "attention map of a chosen ingredient line over the photo.")
    p.add_argument("--index", required=True, metavar="INDEX.npz", help="Index from `malm index`.")
    p.add_argument("--host", default="127.0.0.1",
                   help="Address to listen on. Default: 127.0.0.1 (this machine only; then only "
                        "requests addressed to a loopback name are answered). 0.0.0.0 opens it to "
                        "the network.")
    p.add_argument("--port", type=_port, default=8000,
                   help="TCP port; 0 = any free port (the URL is printed). Default: 8000.")
    p.add_argument("--k", type=_positive, default=5, help="Recipes shown per photo. Default: 5.")
    p.add_argument("--rerank", type=_non_negative, default=0, metavar="K",
                   help="Re-rank each photo's top K by the run's matching module (as `malm search "
                        "--rerank`). 0 = off (default).")
    p.add_argument("--max-upload-mb", type=_positive_float, default=10.0, metavar="MB",
                   help="Largest photo accepted, in MiB; counted while the upload streams in, "
                        "larger ones get 413. Default: 10.")
    p.add_argument("--workers", type=_positive, default=2, metavar="N",
                   help="Photos searched at once (threads sharing the one model; the web server's "
                        "event loop never runs the model). Default: 2.")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu or cuda. Default: auto.")
    p.set_defaults(func=cmd_serve)
    return p


# ------------------------------------------------------------------------------------ handlers
def _device(name: str):
    from malm.eval.embed import resolve_device

    return resolve_device(name)


def cmd_index(args: argparse.Namespace) -> int:
    from malm.search.index import build_index, load_index

    out = build_index(args.run_dir, args.out, args.split, root=args.root, checkpoint=args.checkpoint,
                      images=args.images, batch_size=args.batch_size, device=_device(args.device),
                      workers=args.workers, progress=sys.stderr.isatty())
    meta = load_index(out).meta
    print(json.dumps({"index": str(out), "recipes": meta["n_recipes"], "images": meta["n_images"],
                      "images_skipped": meta["n_images_skipped"], "embed_dim": meta["embed_dim"],
                      "checkpoint": meta["checkpoint"]["path"],
                      "checkpoint_epoch": meta["checkpoint"]["epoch"], "source": meta["source"],
                      "seconds": meta["seconds"]}, indent=2))
    return 0


def format_table(result) -> str:
    """The human-readable listing of a :class:`malm.search.query.SearchResult`."""
    lines = []
    for r in result.results:
        lines.append(r.query)
        for h in r.hits:
            score = f"{h.score:7.4f}"
            if result.rerank:
                score = f"cos {h.score:7.4f}  match " + (f"{h.match_score:7.4f}" if h.match_score
                                                         is not None else "      -")
            what = f"{h.title}  [{h.id}]"
            if h.image is not None:
                what = f"{h.image}  ({what})"
            lines.append(f"  {h.rank:3d}  {score}  {what}")
    return "\n".join(lines)


CSV_COLUMNS = ("query", "rank", "id", "title", "score", "match_score", "image")


def format_csv(result) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in result.results:
        for h in r.hits:
            w.writerow([r.query, h.rank, h.id, h.title, f"{h.score:.6f}",
                        "" if h.match_score is None else f"{h.match_score:.6f}", h.image or ""])
    return buf.getvalue()


def cmd_search(args: argparse.Namespace) -> int:
    from malm.io import atomic_write_text
    from malm.search.index import read_recipe_file, recipe_query
    from malm.search.query import search, search_images

    recipe_mode = args.recipe is not None or args.title is not None or args.ingredient or args.instruction
    if recipe_mode and args.photos:
        raise ValueError("give photos (photo -> recipe) or a recipe (--recipe / --title / "
                         "--ingredient: recipe -> image), not both")
    if args.recipe is not None and (args.title is not None or args.ingredient or args.instruction):
        raise ValueError("--recipe FILE.json or --title/--ingredient/--instruction, not both")
    opts = dict(k=args.k, rerank=args.rerank, batch_size=args.batch_size,
                device=_device(args.device), workers=args.workers)
    if recipe_mode:
        recipes = (read_recipe_file(args.recipe) if args.recipe is not None
                   else [recipe_query(args.title or "", args.ingredient, args.instruction)])
        result = search_images(args.index, recipes, **opts)
    elif args.photos:
        result = search(args.index, args.photos, **opts)
    else:
        raise ValueError("nothing to search for: give PHOTO files or folders, or a recipe "
                         "(--recipe FILE.json, or --title/--ingredient)")
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    elif result.results:
        print(format_table(result))
    if args.csv:
        atomic_write_text(args.csv, format_csv(result))
    for line in result.failure_lines():
        print(f"malm search: {line}", file=sys.stderr)
    if result.failures:
        n = len(result.results) + len(result.failures)
        print(f"malm search: {len(result.failures)} of {n} photo(s) could not be read",
              file=sys.stderr)
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from malm.search.serve import serve

    serve(args.index, host=args.host, port=args.port, k=args.k, rerank=args.rerank,
          max_upload_mb=args.max_upload_mb, device=_device(args.device), workers=args.workers,
          log_level="info" if getattr(args, "verbose", False) else "warning")
    return 0


# ------------------------------------------------------------------------------------ entry
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="malm", description="Index, search and serve with a trained run.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_index_parser(sub)
    add_search_parser(sub)
    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``index`` / ``search`` / ``serve`` alone, with :func:`malm.cli.main`'s error handling."""
    from malm.config import ConfigError

    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("malm: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, OSError, ValueError, RuntimeError) as exc:
        if args.verbose:
            raise
        print(f"malm: error: {exc}", file=sys.stderr)
        return 2
