"""The search index: a trained run's embeddings of a recipe collection (and optionally of its
images), with everything needed to query it later without the data cache.

File layout (one ``.npz``, written atomically; ``np.load(path, allow_pickle=False)`` reads it)::

    meta            0-d str   JSON: format, version, run_dir, checkpoint (choice, path, file, epoch,
                              size, mtime_ns, sha256), variant, the run's resolved config, vocab
                              (the run's tokenizer.json text), vocab_size, source (cache or root,
                              split), counts, embed_dim, the preprocessing sizes, created
    recipe_emb      [N, E] float32  L2-normalised recipe embeddings (rows sorted by recipe id)
    ids             [N] str         recipe ids
    title_utf8, title_off           titles: UTF-8 bytes [B] uint8 + offsets [N + 1] int64
    ingr_utf8, ingr_off             ingredient lines of each recipe, joined by "\\n", same packing
    tok_title [N, T], tok_ingrs [N, I, T], tok_instrs [N, J, T]
                                    the token ids the embeddings were computed from (the matching
                                    module re-encodes the candidates from them for --rerank)
  with --images (an image index, for recipe -> image search):
    image_emb       [M, E] float32  L2-normalised image embeddings
    image_recipe    [M] int64       row of each image's recipe in ``ids``
    image_names     [M] str         Recipe1M image id (file name) of each image
    path_utf8, path_off             absolute path of each image file, same packing

Beside it ``<out>.json`` (``out`` with the suffix ``.json``) repeats ``meta`` without the vocabulary,
plus array shapes and the ``.npz``'s sha256, for people; readers use the ``.npz`` alone.

Sources (:func:`build_index`):

* the run's cache (default): the pairs of ``split`` exactly as evaluation sees them (token arrays
  of the cache; images from the cache's rows, every image of a pair, centre-cropped and normalised
  as evaluation does), titles and ingredient lines from the data root's ``layer1.json``;
* ``root``: a Recipe1M-format root (its ``layer1.json``, ``layer2.json`` and image tree), every
  recipe of ``split`` (``all``: of every split), text-only ones included, tokenised with the run's
  vocabulary; images decoded with :func:`malm.search.photo.load_photo` (corrupt ones skipped and
  counted).
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Sequence

import numpy as np

from malm import config as C

log = logging.getLogger(__name__)

FORMAT = "malm-search-index"
VERSION = 1
SOURCES = ("train", "val", "test", "all")
_REQUIRED = ("meta", "recipe_emb", "ids", "title_utf8", "title_off", "ingr_utf8", "ingr_off")
_TOKENS = ("tok_title", "tok_ingrs", "tok_instrs")
_IMAGE = ("image_emb", "image_recipe", "image_names", "path_utf8", "path_off")


# ------------------------------------------------------------------------------------ strings
def pack_strings(items: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings -> (UTF-8 bytes [B] uint8, offsets [N + 1] int64): no fixed-width padding."""
    enc = [s.encode("utf-8") for s in items]
    off = np.zeros(len(enc) + 1, np.int64)
    np.cumsum([len(b) for b in enc], out=off[1:])
    return np.frombuffer(b"".join(enc), np.uint8).copy(), off


def _unpack(blob: np.ndarray, off: np.ndarray, i: int) -> str:
    return blob[off[i]:off[i + 1]].tobytes().decode("utf-8")


# ------------------------------------------------------------------------------------ reading
class Index:
    """A loaded search index (:func:`load_index`). Arrays: ``recipe_emb``, ``ids`` and, with
    ``has_images``, ``image_emb``, ``image_recipe``, ``image_names``; strings by row
    (:meth:`title`, :meth:`ingredients`, :meth:`image_path`); the run's ``config``, ``tokenizer``
    and model (:meth:`model`, loaded once, after checking the checkpoint still holds the same
    weights)."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray], meta: dict):
        self.path, self.meta = path, meta
        self.recipe_emb: np.ndarray = arrays["recipe_emb"]
        self.ids: np.ndarray = arrays["ids"]
        self._title = (arrays["title_utf8"], arrays["title_off"])
        self._ingr = (arrays["ingr_utf8"], arrays["ingr_off"])
        self.has_images = "image_emb" in arrays
        if self.has_images:
            self.image_emb: np.ndarray = arrays["image_emb"]
            self.image_recipe: np.ndarray = arrays["image_recipe"]
            self.image_names: np.ndarray = arrays["image_names"]
            self._path = (arrays["path_utf8"], arrays["path_off"])
        self.config: C.Config = C.from_dict(meta["config"])
        self._tokens: tuple[np.ndarray, ...] | None = None
        self._models: dict[str, Any] = {}
        self._gallery: dict[tuple[str, str], Any] = {}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def embed_dim(self) -> int:
        return int(self.recipe_emb.shape[1])

    def title(self, row: int) -> str:
        return _unpack(*self._title, int(row))

    def ingredients(self, row: int) -> list[str]:
        text = _unpack(*self._ingr, int(row))
        return text.split("\n") if text else []

    def image_path(self, row: int) -> str:
        self._need_images()
        return _unpack(*self._path, int(row))

    def _need_images(self) -> None:
        if not self.has_images:
            raise ValueError(f"{self.path} has no image index: rebuild it with images "
                             "(malm index --images) for recipe -> image search")

    def tokens(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(title [N, T], ingrs [N, I, T], instrs [N, J, T]) token ids, read on first use."""
        if self._tokens is None:
            with np.load(self.path, allow_pickle=False) as z:
                self._tokens = tuple(z[k] for k in _TOKENS)
        return self._tokens  # type: ignore[return-value]

    def tokenizer(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.meta["vocab"])

    def model(self, device: Any = None):
        """The run's model (eval mode) on ``device`` (default: auto), loaded once per device from
        the checkpoint the index was built from; a checkpoint that changed since is an error."""
        import torch

        from malm.eval.embed import resolve_device
        from malm.search.model import check_checkpoint, load_model

        device = resolve_device("auto") if device is None else torch.device(device)
        key = str(device)
        if key not in self._models:
            ck = self.meta["checkpoint"]
            check_checkpoint(ck, f"the index {self.path}")
            model, cfg, epoch = load_model(ck["path"], device)
            n_vocab = model.recipe_encoder.embedding.num_embeddings
            if n_vocab != self.meta["vocab_size"]:
                raise ValueError(f"{ck['path']} has a vocabulary of {n_vocab} words, the index "
                                 f"{self.path} {self.meta['vocab_size']}: rebuild the index")
            self._models[key] = model
        return self._models[key]

    def gallery(self, kind: str, device: Any):
        """``recipe_emb`` or ``image_emb`` as a torch tensor on ``device`` (kept for later calls)."""
        import torch

        if kind == "image":
            self._need_images()
        key = (kind, str(device))
        if key not in self._gallery:
            arr = self.recipe_emb if kind == "recipe" else self.image_emb
            self._gallery[key] = torch.from_numpy(arr).to(device)
        return self._gallery[key]


def load_index(path: str | os.PathLike) -> Index:
    """Read an index written by :func:`build_index`; every error names the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            missing = [k for k in _REQUIRED + _TOKENS if k not in files]
            if missing:
                raise ValueError(f"{path}: not a malm search index (missing {', '.join(missing)}); "
                                 "build one with `malm index`")
            arrays = {k: z[k] for k in z.files if k not in _TOKENS}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such index file (build one with `malm index`)") from None
    except (OSError, ValueError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: cannot read the index ({exc})") from None
    meta = json.loads(str(arrays["meta"]))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path}: index format {meta.get('format')!r} version {meta.get('version')!r}, "
                         f"this code reads {FORMAT!r} version {VERSION}: rebuild it (malm index)")
    emb, ids = arrays["recipe_emb"], arrays["ids"]
    if emb.ndim != 2 or emb.dtype != np.float32 or len(ids) != emb.shape[0]:
        raise ValueError(f"{path}: recipe_emb {emb.shape} {emb.dtype} does not fit {len(ids)} ids")
    if "image_emb" in arrays and arrays["image_emb"].shape[1:] != emb.shape[1:]:
        raise ValueError(f"{path}: image_emb {arrays['image_emb'].shape} and recipe_emb {emb.shape} "
                         "differ in width")
    return Index(path, arrays, meta)


# ------------------------------------------------------------------------------------ building
def _cache_images(cache_dir: Path, split: str):
    """The rows of a split's image store (raw memmap or jpeg rows), indexable as ``rows[m]``."""
    from malm.data.cache import load_manifest
    from malm.data.store import JpegRows

    if load_manifest(cache_dir).get("image_store", "raw") == "jpeg":
        return JpegRows(cache_dir / split)
    return np.load(cache_dir / split / "images.npy", mmap_mode="r")


def _embed_tensors(model, tensors: Iterable, n: int, batch_size: int, amp: bool,
                   progress: bool, desc: str) -> np.ndarray:
    import torch
    from tqdm.auto import tqdm

    from malm.search.model import embed_images

    out, buf = [], []
    with tqdm(total=n, desc=desc, disable=not progress, leave=False) as bar:
        for t in tensors:
            buf.append(t)
            if len(buf) == batch_size:
                out.append(embed_images(model, torch.stack(buf), amp=amp))
                bar.update(len(buf))
                buf = []
        if buf:
            out.append(embed_images(model, torch.stack(buf), amp=amp))
            bar.update(len(buf))
    if not out:
        return np.zeros((0, model.image_head.fc.out_features), np.float32)
    return torch.cat(out).numpy().astype(np.float32)


def _photo_tensors(paths: Sequence[str], cfg: C.Config, workers: int, failed: list):
    """Evaluation tensors of image files in order; a file that fails is skipped (None) and
    recorded in ``failed``."""
    from malm.search.photo import PhotoError, load_photo

    def one(p: str):
        try:
            return load_photo(p, cfg)
        except PhotoError as exc:
            failed.append(exc)
            return None

    chunk = 256  # decoded tensors alive at once: bounded whatever the number of files
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for s in range(0, len(paths), chunk):
            yield from pool.map(one, paths[s:s + chunk])


def build_index(run_dir: str | os.PathLike, out: str | os.PathLike, split: str = "test", *,
                root: str | os.PathLike | None = None, checkpoint: str = "best", images: bool = False,
                batch_size: int = 128, device: Any = None, workers: int | None = None,
                progress: bool = False) -> Path:
    """Embed a recipe collection with the trained run ``run_dir``'s ``checkpoint`` (best|last) and
    write the index to ``out`` (the layout above) and ``<out>.json``; returns ``out``.

    Without ``root``: the pairs of ``split`` of the run's data cache (which must match the run's
    config: the vocabulary comes from it); with ``root``: every recipe of ``split`` of a
    Recipe1M-format root (``all``: every split). ``images``: also embed the images (every cached
    image of each pair, or every image file found under ``root``), for recipe -> image search.
    """
    import torch

    from malm.data import text as T
    from malm.data.cache import require_cache, split_array
    from malm.data.recipe1m import LAYER1, image_path, load_root, read_layer1
    from malm.eval.embed import resolve_device
    from malm.io import CHECKPOINT_CHOICES, atomic_path, atomic_write_json, load_checkpoint, sha256_file
    from malm.search.model import checkpoint_identity, embed_recipes, model_from_state
    from malm.search.photo import eval_tensor

    if split not in SOURCES or (root is None and split == "all"):
        raise ValueError(f"split must be one of {', '.join(SOURCES[:3])}"
                         f"{' or all' if root is not None else ' (all needs --root)'}, got {split!r}")
    if checkpoint not in CHECKPOINT_CHOICES:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_CHOICES)}, got {checkpoint!r}")
    t0 = time.perf_counter()
    run_dir = Path(run_dir).absolute()
    ck_path = run_dir / CHECKPOINT_CHOICES[checkpoint]
    if not ck_path.is_file():
        raise FileNotFoundError(f"{ck_path} does not exist (train the run first; runs made before "
                                "best checkpoints were kept need --checkpoint last)")
    identity = checkpoint_identity(ck_path)
    state = load_checkpoint(ck_path)
    cfg = C.from_dict(state["config"])
    cache = require_cache(cfg.data, who="malm index")  # the run's vocabulary lives there
    tok = T.load_tokenizer(cache / "tokenizer.json")
    device = resolve_device("auto") if device is None else torch.device(device)
    model = model_from_state(state, cfg, device)
    amp = bool(cfg.train.amp) and device.type == "cuda"
    workers = workers or min(8, os.cpu_count() or 1)
    d = cfg.data
    failed: list = []

    if root is None:
        source = {"kind": "cache", "cache_dir": str(cache), "root": os.path.abspath(d.root), "split": split}
        ids = [str(x) for x in split_array(cache, split, "ids")]
        toks = [np.asarray(split_array(cache, split, k)) for k in ("title", "ingrs", "instrs")]
        text = {r.id: r for r in read_layer1(Path(d.root) / LAYER1, on_bad_record=d.on_bad_record,
                                              progress=progress)}
        lost = [i for i in ids if i not in text]
        if lost:
            raise ValueError(f"{Path(d.root) / LAYER1} lacks {len(lost)} recipe(s) of the cache "
                             f"(first {lost[0]}): the root changed since the cache was built")
        recipes = [text[i] for i in ids]
        del text
    else:
        root = Path(root).absolute()
        source = {"kind": "root", "root": str(root), "split": split}
        data = load_root(root, check_images=images, det_ingrs=d.ingredients == "det",
                         on_bad_record=d.on_bad_record, progress=progress)
        recipes = sorted((r for r in data.recipes if split == "all" or r.split == split),
                         key=lambda r: r.id)
        if not recipes:
            raise ValueError(f"{root}: no recipe in split {split!r}")
        ids = [r.id for r in recipes]
        arr = T.encode_recipes(tok, recipes, d.max_ingrs, d.max_instrs, d.max_tokens)
        toks = [arr["title"], arr["ingrs"], arr["instrs"]]
    recipe_emb = embed_recipes(model, *toks, batch_size=batch_size, amp=amp, progress=progress)

    arrays: dict[str, np.ndarray] = {"recipe_emb": recipe_emb, "ids": np.asarray(ids, dtype=str)}
    arrays["title_utf8"], arrays["title_off"] = pack_strings([r.title for r in recipes])
    arrays["ingr_utf8"], arrays["ingr_off"] = pack_strings([r.ingr_text for r in recipes])
    arrays.update(zip(_TOKENS, toks))
    if images:
        s = cfg.model.image.img_size
        if root is None:
            off = np.asarray(split_array(cache, split, "image_offsets"))
            names = [str(x) for x in split_array(cache, split, "image_names")]
            owner = np.repeat(np.arange(len(ids)), np.diff(off))
            paths = [str(image_path(d.root, recipes[o].partition, n).absolute())
                     for o, n in zip(owner, names)]
            rows = _cache_images(cache, split)
            tensors = (eval_tensor(np.asarray(rows[m]), s) for m in range(len(names)))
            image_emb = _embed_tensors(model, tensors, len(names), batch_size, amp, progress,
                                       "embed images")
        else:
            owner_l, paths = [], []
            for i, r in enumerate(recipes):
                for p in r.found:
                    owner_l.append(i)
                    paths.append(str(Path(p).absolute()))
            tensors = _photo_tensors(paths, cfg, workers, failed)
            emb = _embed_tensors(model, (t for t in tensors if t is not None), len(paths),
                                 batch_size, amp, progress, "embed images")
            bad = {e.path for e in failed}
            keep = [j for j, p in enumerate(paths) if p not in bad]
            owner, paths = np.asarray(owner_l, np.int64)[keep], [paths[j] for j in keep]
            names = [os.path.basename(p) for p in paths]
            image_emb = emb
            for e in failed[:20]:
                log.warning("skipped image %s", e)
        arrays["image_emb"] = image_emb
        arrays["image_recipe"] = np.asarray(owner, np.int64)
        arrays["image_names"] = np.asarray(names, dtype=str) if names else np.zeros(0, "<U1")
        arrays["path_utf8"], arrays["path_off"] = pack_strings(paths)

    meta = {
        "format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run_dir": str(run_dir),
        "checkpoint": {"choice": checkpoint, "epoch": int(state["epoch"]), **identity},
        "variant": cfg.variant, "source": source,
        "n_recipes": len(ids), "n_images": int(len(arrays.get("image_emb", ()))),
        "images_skipped": [str(e) for e in failed][:50], "n_images_skipped": len(failed),
        "embed_dim": int(recipe_emb.shape[1]),
        "preprocess": {"cache_image_size": d.cache_image_size, "image_size": cfg.model.image.img_size,
                       "max_tokens": d.max_tokens, "max_ingrs": d.max_ingrs,
                       "max_instrs": d.max_instrs, "ingredients": d.ingredients},
        "vocab_size": tok.get_vocab_size(),
        "seconds": None,
        "config": C.to_dict(cfg),
        "vocab": tok.to_str(),
    }
    meta["seconds"] = round(time.perf_counter() - t0, 3)
    arrays["meta"] = np.asarray(json.dumps(meta))
    out = Path(out)
    with atomic_path(out, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    side = {k: v for k, v in meta.items() if k != "vocab"}
    side.update({"index_file": out.name, "index_sha256": sha256_file(out),
                 "arrays": {k: list(v.shape) for k, v in arrays.items() if k != "meta"}})
    atomic_write_json(sidecar_path(out), side)
    log.info("wrote %s: %d recipes%s, dim %d, from %s (%s checkpoint, epoch %d) in %.1f s", out,
             len(ids), f", {meta['n_images']} images" if images else "", meta["embed_dim"],
             run_dir, checkpoint, meta["checkpoint"]["epoch"], meta["seconds"])
    return out


def sidecar_path(out: str | os.PathLike) -> Path:
    """``<out>.json``: the index's human-readable summary."""
    return Path(out).with_suffix(".json")


def recipe_query(title: str = "", ingredients: Sequence[str] = (), instructions: Sequence[str] = ()
                 ) -> SimpleNamespace:
    """A recipe to search images with (the object :func:`malm.data.text.encode_recipes` reads)."""
    ingredients = [str(x).strip() for x in ingredients if str(x).strip()]
    instructions = [str(x).strip() for x in instructions if str(x).strip()]
    if not str(title).strip() and not ingredients:
        raise ValueError("a recipe query needs a title or at least one ingredient line")
    return SimpleNamespace(title=str(title).strip(), ingredients=ingredients, instructions=instructions)


def _lines(value: Any, what: str, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError(f"{where}: '{what}' must be a list of strings or of {{\"text\": ...}}")
    out = []
    for j, item in enumerate(value):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise ValueError(f"{where}: '{what}' item {j} must be a string or {{\"text\": string}}")
        out.append(text)
    return out


def read_recipe_file(path: str | os.PathLike) -> list[SimpleNamespace]:
    """Recipes of a JSON file: one object or a list of them, each with ``title`` and
    ``ingredients`` (and optionally ``instructions``); lines as strings or Recipe1M's
    ``[{"text": ...}]``. A layer1 record is used as it stands (no quantity fix-ups)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such recipe file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a JSON recipe file ({exc})") from None
    items = data if isinstance(data, list) else [data]
    out = []
    for i, rec in enumerate(items):
        where = f"{path} recipe #{i}"
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected an object with title and ingredients")
        try:
            out.append(recipe_query(rec.get("title") or "", _lines(rec.get("ingredients"), "ingredients", where),
                                    _lines(rec.get("instructions"), "instructions", where)))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    if not out:
        raise ValueError(f"{path}: no recipe in the file")
    return out
