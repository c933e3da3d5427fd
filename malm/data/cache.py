"""One-off preprocessing cache: everything a training epoch reads, built once from a Recipe1M root.

Layout of ``DataConfig.cache_dir`` (``S`` = ``cache_image_size``, ``T`` = ``max_tokens``)::

    manifest.json            counts, the config fields and input fingerprint it was built from
    tokenizer.json           HuggingFace WordLevel tokenizer (``Tokenizer.from_file``)
    classes.json             class names, index = class id (0 = background)
    <split>/ids.npy          [N] str        recipe ids of the pairs, sorted by id
    <split>/title.npy        [N, T]         token ids (uint16, int32 if the vocabulary needs it)
    <split>/ingrs.npy        [N, I, T]      first max_ingrs ingredient lines
    <split>/instrs.npy       [N, J, T]      first max_instrs instruction lines
    <split>/cls.npy          [N] int64      semantic class id
    <split>/image_offsets.npy [N + 1] int64 pair i owns rows offsets[i]:offsets[i+1] of images.npy
    <split>/images.npy       [M, S, S, 3] uint8  decoded, shorter side resized to S, centre-cropped
                             (data.image_store=raw), or with data.image_store=jpeg:
    <split>/images.jpg       the same M images re-encoded as JPEG (data.jpeg_quality), concatenated
    <split>/images_jpeg_offsets.npy [M + 1] int64  image m is bytes offsets[m]:offsets[m+1]
    <split>/image_names.npy  [M] str        Recipe1M image id of each row

``raw`` costs S*S*3 bytes per image (196 KB at 256 px: ~170 GB for Recipe1M) and no decode;
``jpeg`` a tenth of that or less, and one JPEG decode per sample in the loader workers
(:class:`malm.data.store.JpegRows`, Pillow's libjpeg-turbo).

Only pairs (recipes with at least one decodable image) are cached; text-only recipes are counted.
A build goes to a temporary folder renamed into place at the end, under a lock file, so a killed
build never leaves a half cache.

Staleness (the rule is in :mod:`malm.io`): this module owns it for the cache. The cache is valid
while ``manifest.json``'s ``key`` (:func:`cache_key`) equals the key computed now: CACHE_VERSION,
the DataConfig fields it depends on, the sha256 of the code that shapes it (:data:`CODE_FILES`) and
the identity of its inputs. A root written by :mod:`malm.synth` (one with a complete
``.synth_complete`` marker) is identified by the content digest its marker records: the generator
owns the staleness of its files, and a regeneration that gives the same bytes leaves the cache
valid. Any other root (Recipe1M) by size+mtime of its layer1/layer2/det_ingrs files; image files
are not fingerprinted (a million stats): pass ``force=True`` after changing images (or a synthetic
root's files) in place. The class file and split lists count by size+mtime either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from malm.config import DataConfig
from malm.data import text as T
from malm.data.recipe1m import DET_INGRS, LAYER1, LAYER2, SPLITS, Recipe1MError, load_root
from malm.data.store import STORE_FILES, SplitImages, cache_images
from malm.io import SYNTH_COMPLETE, default_mode, fingerprint_files

# Bump by hand when the cache's content changes on purpose for a reason CODE_FILES do not show
# (e.g. a tokenizers or Pillow upgrade that changes the bytes).
CACHE_VERSION = 1
MANIFEST = "manifest.json"
PACKAGE = Path(__file__).resolve().parents[1]
# the code that shapes the cache (what `prepare` runs from malm.data), fingerprinted into its key
CODE_FILES = ("data/__init__.py", "data/cache.py", "data/recipe1m.py", "data/store.py", "data/text.py")


# ---------------------------------------------------------------------------------- the key
def _abs(p: str | None) -> str | None:
    """The path with symlinks resolved: the same files reached through a link give the same key."""
    return None if p is None else os.path.realpath(os.path.expanduser(p))


def _input_files(cfg: DataConfig) -> list[Path]:
    root = Path(_abs(cfg.root))
    files = [root / LAYER1, root / LAYER2]
    if cfg.ingredients == "det":
        files.append(root / DET_INGRS)
    if cfg.class_file:
        files.append(Path(_abs(cfg.class_file)))
    if cfg.split_dir:
        files += [Path(_abs(cfg.split_dir)) / f"{s}.txt" for s in SPLITS]
    return files


def _synth_output(root: Path) -> str | None:
    """The content digest that a complete :mod:`malm.synth` dataset in ``root`` records in its
    marker (``output``); None for any other root or an older marker without it."""
    try:
        out = json.loads((root / SYNTH_COMPLETE).read_text(encoding="utf-8")).get("output")
    except (OSError, ValueError, AttributeError):
        return None
    return out if isinstance(out, str) else None


def cache_key(cfg: DataConfig) -> dict:
    """What a cache depends on: version, DataConfig fields, the code that writes it and the identity
    of its inputs (a synthetic root's content digest; else size+mtime of the input files)."""
    fields = {
        "root": _abs(cfg.root), "split_dir": _abs(cfg.split_dir), "class_file": _abs(cfg.class_file),
        "min_word_count": cfg.min_word_count, "max_ingrs": cfg.max_ingrs,
        "max_instrs": cfg.max_instrs, "max_tokens": cfg.max_tokens,
        "cache_image_size": cfg.cache_image_size,
        "max_pairs": {k: cfg.max_pairs[k] for k in sorted(cfg.max_pairs or {})},
        "num_classes": cfg.num_classes,
        "ingredients": cfg.ingredients,
        "on_bad_record": cfg.on_bad_record,
    }
    if cfg.max_images_per_recipe:  # in the key only when set: old caches stay valid
        fields["max_images_per_recipe"] = cfg.max_images_per_recipe
    if cfg.image_store != "raw":
        fields["image_store"] = cfg.image_store
        fields["jpeg_quality"] = cfg.jpeg_quality
    inputs: dict[str, Any] = {}
    root = Path(_abs(cfg.root))
    synth = _synth_output(root)
    if synth is not None:  # the generator's marker vouches for every file it wrote
        inputs[str(root / SYNTH_COMPLETE)] = {"output": synth}
    for f in _input_files(cfg):
        if synth is not None and f.parent == root and f.name in (LAYER1, LAYER2, DET_INGRS):
            continue
        try:
            st = f.stat()
            inputs[str(f)] = [st.st_size, st.st_mtime_ns]
        except OSError:
            inputs[str(f)] = None
    return {"version": CACHE_VERSION, "config": fields, "inputs": inputs,
            "code": fingerprint_files([PACKAGE / f for f in CODE_FILES], PACKAGE)}


def load_manifest(cache_dir: str | os.PathLike) -> dict:
    path = Path(cache_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no data cache here; run `prepare` (malm prepare)") from None


def is_cached(cfg: DataConfig) -> bool:
    """True when ``cfg.cache_dir`` holds a complete cache built from the same inputs and fields."""
    cache = Path(cfg.cache_dir)
    try:
        man = load_manifest(cache)
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    if man.get("key") != json.loads(json.dumps(cache_key(cfg))):
        return False
    need = [f"{n}.npy" for n in ("ids", "title", "ingrs", "instrs", "cls", "image_offsets", "image_names")]
    need += list(STORE_FILES[man.get("image_store", "raw")])
    return all((cache / s / n).is_file() for s in SPLITS for n in need) and \
        (cache / "tokenizer.json").is_file()


def require_cache(cfg: DataConfig, who: str = "this command") -> Path:
    """The cache of ``cfg`` if it is complete and was built from the same inputs and fields; else a
    clear error that says what to run. For readers of a trained run (embed, grounding): a rebuilt
    cache can renumber the vocabulary under the run's word embeddings, so they never rebuild it."""
    cache = Path(cfg.cache_dir).absolute()
    if is_cached(cfg):
        return cache
    try:
        man = load_manifest(cache)
    except (FileNotFoundError, json.JSONDecodeError):
        state = "is missing or incomplete"
    else:
        old, new = man.get("key") or {}, json.loads(json.dumps(cache_key(cfg)))
        diff = [f"data.{k}" for k in sorted(set(old.get("config", {})) | set(new["config"]))
                if old.get("config", {}).get(k) != new["config"].get(k)]
        if old.get("version") != new["version"]:
            diff.append("cache format version")
        if old.get("code") != new["code"]:
            diff.append("the code that writes the cache (malm/" + ", malm/".join(
                f for f in sorted(set(old.get("code") or {}) | set(new["code"]))
                if (old.get("code") or {}).get(f) != new["code"].get(f)) + ")")
        if old.get("inputs") != new["inputs"]:
            diff.append(f"the input files under {cfg.root} (content of a synthetic root, else size "
                        "or time)")
        state = (f"was built from other data settings ({'; '.join(diff)})" if diff
                 else "is incomplete")
    raise FileNotFoundError(f"{cache} {state}; {who} never rebuilds the cache a run was trained on. "
                            f"Build it first: `malm data prepare` with the run's config, or "
                            "`dvc repro prepare` in the pipeline")


# ---------------------------------------------------------------------------------- prepare
def prepare(cfg: DataConfig, progress: bool = True, force: bool = False,
            crop_size: int | None = None) -> Path:
    """Build the cache of ``cfg`` under ``cfg.cache_dir`` once; return its path.

    A matching manifest returns at once. Otherwise: read and validate the root, decode + resize
    every found image of the pairs (corrupt ones skipped and counted; a pair left with no image
    becomes text-only), apply ``max_pairs`` (first n pairs by id), build the vocabulary and the
    classes from the cached training pairs, encode all splits and write the manifest.
    ``crop_size`` (the model's input side, model.image.img_size): checked to fit the cached side
    before building (the loaders check it again when they open the cache).
    """
    cache = Path(cfg.cache_dir).absolute()
    if not force and is_cached(cfg):
        return cache
    _check_cfg(cfg, crop_size)
    if cache.exists() and not (cache / MANIFEST).is_file() and (
            not cache.is_dir() or any(cache.iterdir())):
        raise FileExistsError(f"{cache} exists and is not a malm data cache (no {MANIFEST}); "
                              "refusing to replace it: point data.cache_dir elsewhere")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _locked(cache.parent / f".{cache.name}.lock"):
        if not force and is_cached(cfg):  # built by another process while we waited
            return cache
        for stale in cache.parent.glob(f".{cache.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}.tmp-"))
        tmp.chmod(default_mode(directory=True))  # mkdtemp's 0700 would hide the cache from others
        try:
            _build(cfg, tmp, progress)
            _swap_in(tmp, cache)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return cache


def _check_cfg(cfg: DataConfig, crop_size: int | None = None) -> None:
    for k, v in (cfg.max_pairs or {}).items():
        if k not in SPLITS:
            raise ValueError(f"data.max_pairs: unknown split {k!r} (splits: {', '.join(SPLITS)})")
        if v is not None and (not isinstance(v, int) or v < 0):
            raise ValueError(f"data.max_pairs.{k} must be a non-negative integer or null, got {v!r}")
    for name in ("min_word_count", "max_ingrs", "max_instrs", "max_tokens", "cache_image_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"data.{name} must be >= 1, got {getattr(cfg, name)}")
    if crop_size is not None and crop_size > cfg.cache_image_size:
        raise ValueError(f"model.image.img_size ({crop_size}) exceeds data.cache_image_size "
                         f"({cfg.cache_image_size}): crops are taken from the cached images")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _swap_in(tmp: Path, cache: Path) -> None:
    old = None
    if cache.exists():
        old = cache.parent / f".{cache.name}.tmp-old-{os.getpid()}"
        os.replace(cache, old)
    os.replace(tmp, cache)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _build(cfg: DataConfig, out: Path, progress: bool) -> None:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    key = cache_key(cfg)
    data = load_root(cfg.root, cfg.split_dir, progress=progress,
                     det_ingrs=cfg.ingredients == "det",
                     on_bad_record=cfg.on_bad_record)
    report = data.report()
    timings["read"] = time.perf_counter() - t0

    t = time.perf_counter()
    workers = cfg.num_workers or os.cpu_count() or 1
    store = cfg.image_store
    quality = cfg.jpeg_quality if store == "jpeg" else None
    splits: dict[str, SplitImages] = {}
    for split in SPLITS:
        (out / split).mkdir()
        splits[split] = cache_images(data.pairs(split), out / split, cfg.cache_image_size,
                                     (cfg.max_pairs or {}).get(split), workers, progress, split,
                                     cfg.max_images_per_recipe, quality)
    timings["images"] = time.perf_counter() - t

    t = time.perf_counter()
    train = splits["train"].pairs
    if not train:
        raise Recipe1MError(f"{cfg.root}: no paired training recipe (a train recipe with a "
                            f"decodable image on disk): cannot build the vocabulary")
    tok = T.build_tokenizer(T.recipe_texts(train), cfg.min_word_count)
    T.save_tokenizer(tok, out / "tokenizer.json")
    if cfg.class_file:
        class_names, id2cls = T.classes_from_file(cfg.class_file, (r.id for r in train))
    else:
        class_names = T.derive_classes(tok, (r.title for r in train),
                                       cfg.num_classes)
        id2cls = None
    _write_json(out / "classes.json", class_names)
    timings["vocab"] = time.perf_counter() - t

    t = time.perf_counter()
    counts: dict[str, dict] = {}
    for split in SPLITS:
        si = splits[split]
        pairs = si.pairs
        arrays = T.encode_recipes(tok, pairs, cfg.max_ingrs, cfg.max_instrs, cfg.max_tokens)
        if id2cls is None:
            cls = T.assign_classes(tok, (r.title for r in pairs), class_names)
        else:
            cls = np.asarray([id2cls.get(r.id, 0) for r in pairs], dtype=np.int64)
        arrays["cls"] = cls
        arrays["ids"] = _str_array([r.id for r in pairs])
        arrays["image_offsets"] = np.asarray(si.offsets, dtype=np.int64)
        arrays["image_names"] = _str_array(si.names)
        for name, arr in arrays.items():
            np.save(out / split / f"{name}.npy", arr)
        rep = report[split]
        counts[split] = {
            "pairs": len(pairs), "images": len(si.names),
            "recipes": rep["recipes"], "text_only": rep["text_only"] + si.dropped_corrupt,
            "images_listed": rep["images_listed"], "images_found": rep["images_found"],
            "images_missing": rep["images_missing"], "images_corrupt": si.corrupt,
            "pairs_dropped_corrupt": si.dropped_corrupt, "pairs_over_max_pairs": si.over_cap,
            "classes_used": int(len(np.unique(cls[cls > 0]))),
            "background": int((cls == 0).sum()),
        }
    timings["encode"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    vocab_size = tok.get_vocab_size()
    _write_json(out / MANIFEST, {
        "key": key,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "vocab_size": vocab_size,
        "token_dtype": str(T.token_dtype(vocab_size)),
        "special_tokens": dict(zip(T.SPECIAL_TOKENS, range(len(T.SPECIAL_TOKENS)))),
        "num_classes": len(class_names),
        "class_source": cfg.class_file or "titles",
        "cache_image_size": cfg.cache_image_size,
        "image_store": store,
        **({"jpeg_quality": quality} if quality else {}),
        "image_bytes": {sp: splits[sp].bytes for sp in SPLITS},
        "shapes": {"title": [cfg.max_tokens], "ingrs": [cfg.max_ingrs, cfg.max_tokens],
                   "instrs": [cfg.max_instrs, cfg.max_tokens]},
        "splits": counts,
        "records": {"layer1_valid": len(data.recipes),
                    "dropped_bad_records": sum(data.dropped.values()),
                    "dropped_by_reason": data.dropped},
        "corrupt_images": [e for s in SPLITS for e in splits[s].examples][:50],
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    })


def _write_json(path: Path, obj: Any) -> None:
    """Plain write: the whole folder becomes visible at once by the final rename."""
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _str_array(items: Sequence[str]) -> np.ndarray:
    width = max((len(s) for s in items), default=1)
    return np.asarray(list(items), dtype=f"<U{width}")


def vocab_size(cache_dir: str | os.PathLike) -> int:
    """Size of the cache's word vocabulary (its ``tokenizer.json``): the recipe encoder's input."""
    return T.load_tokenizer(Path(cache_dir) / "tokenizer.json").get_vocab_size()


def split_array(cache_dir: str | os.PathLike, split: str, name: str) -> np.ndarray:
    """One array of a split, ``<split>/<name>.npy`` of the layout above (``ids``, ``title``,
    ``ingrs``, ``instrs``, ``cls``, ``image_offsets``, ``image_names``), memory-mapped read-only."""
    path = Path(cache_dir) / split / f"{name}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not in the cache (run `prepare` (malm prepare))")
    return np.load(path, mmap_mode="r")
