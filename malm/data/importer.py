"""``malm data import``: a user's own recipes (CSV or JSONL) into Recipe1M's file format.

The output root holds exactly what :mod:`malm.data.recipe1m` reads (and ``check_root`` validates),
laid out as the real download and :mod:`malm.synth.write`::

    layer1.json        [{id, title, ingredients: [{text}], instructions: [{text}], partition, url}]
    layer2.json        [{id, images: [{id, url}]}]        recipes with at least one image
    det_ingrs.json     [{id, ingredients: [{text}], valid: [bool]}]   HEURISTIC, see below
    <split>/<c0>/<c1>/<c2>/<c3>/<image id>                the images (copied, or linked)
    import_report.json the report :func:`import_recipes` returns (counts, bad rows)

Input (chosen by the extension: ``.csv``, a header row then one record a row, quoted cells may
span lines; ``.jsonl`` / ``.ndjson``: one JSON object a line). Field names (CSV: the header row,
case-insensitive; JSONL: the keys as written here; other columns / keys are ignored):

* ``title``: text, required.
* ``ingredients``, ``instructions``: required, at least one non-blank line each. A JSON list of
  strings (in CSV: a cell starting with ``[`` that parses as one), or newline-separated text (one
  line per ingredient / step; blank lines dropped). Whitespace inside a line is collapsed.
* ``image`` or ``images`` (both may be given): optional, paths relative to ``--images``. In CSV,
  several paths in one cell are separated by ``|`` or ``;`` (or the cell is a JSON list, for file
  names that contain those characters); in JSONL a list of strings (a string is split like a CSV
  cell). A row without images is imported as a text-only recipe (layer1 only, as in Recipe1M).
* ``id``: optional. Absent: the first 10 hex characters of the sha1 of the normalised title,
  ingredient and instruction lines (Recipe1M's ids are 10 hex characters), so importing the same
  recipes again gives the same ids. 40 bits collide by chance (about 0.45 expected collisions
  among 1M recipes): a generated id already taken by a *different* recipe is re-hashed
  (sha1 of the content + ``#1``, ``#2``...) and counted as ``ids.rehashed``; only those few depend
  on row order. A row with the same content as an earlier one is a duplicate.
* ``split``: optional, ``train`` / ``val`` / ``test`` (``validation`` is read as ``val``). Absent:
  drawn from ``split_ratios`` by a hash of (seed, id), so each recipe's split depends on its id
  alone: adding rows never moves the recipes imported before.
* ``url``: optional, copied into layer1.

Image ids are Recipe1M-style too: 10 hex characters of the sha1 of (recipe id, image path) plus
an extension from the decoded format (``.jpg`` for JPEG), stable across re-imports and re-hashed
on a (rare) collision like recipe ids. The bytes are copied unchanged (``link=True``: hard-linked,
or symlinked where a hard link is impossible, e.g. across file systems).

Bad rows are counted per reason and reported with their row number (the record's 1-based number,
header and blank lines not counted) and the file line where the record starts; the other rows are
imported. ``strict=True`` raises :class:`ImportRowError` at the first one instead. Reasons:
``missing title``, ``no ingredients``, ``no instructions``, ``image not found`` (absent, or not a
file), ``image not decodable`` (Pillow's ``verify()`` then a full ``load()``, with the
decompression-bomb limit on and truncated images refused), ``path escapes --images`` (absolute,
or with a ``..`` component; symlinks inside ``--images`` are followed), ``duplicate id``,
``not UTF-8`` (each line is decoded strictly on its own, so one bad byte costs one row),
``malformed row`` (CSV quoting, field count, invalid JSON, a field of the wrong type),
``unknown split`` and ``bad id`` (blank inside, control characters or over 128 characters).

det_ingrs.json is a heuristic extraction (:func:`ingredient_name`), not Recipe1M's detector: per
ingredient line, lower-cased, parentheticals removed, cut at the first comma (preparation notes:
"1 onion, finely chopped" -> "onion"), trailing "to taste" / "for garnish" / "optional" removed,
then leading quantities (anything starting with a digit, fractions, number words), units, sizes,
preparation words and "of" dropped. ``valid`` is True when what is left has a letter and at most
4 words / 40 characters (Recipe1M's ``valid`` marks names of its ingredient vocabulary). The
report says so (``det_ingrs: heuristic extraction``); only ``data.ingredients=det`` reads it.

Streaming: rows are read one at a time and layer1/layer2/det_ingrs are written as they come, to
temporary files renamed into place at the end (:func:`malm.io.atomic_path`); the per-row state
kept is the set of ids taken (a sorted uint64 array plus a small dict) and the first bad rows.

The output folder must be empty, absent, or a previous import (its ``import_report.json`` or
``.import_incomplete`` marker), which is replaced (its layer files and split folders removed). A
failed import (a ``strict`` stop, an interrupt, an I/O error) removes what it wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Iterator, Sequence

import numpy as np

from malm.data.recipe1m import DET_INGRS, LAYER1, LAYER2, SPLITS
from malm.io import atomic_path, atomic_write_json

REPORT = "import_report.json"
INCOMPLETE = ".import_incomplete"
BAD_ROWS_KEPT = 100          # bad rows listed in the report (all are counted)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
DET_INGRS_NOTE = "heuristic extraction"

# reasons a row is bad (the report's keys)
R_TITLE, R_INGRS, R_INSTRS = "missing title", "no ingredients", "no instructions"
R_NOT_FOUND, R_DECODE, R_ESCAPE = "image not found", "image not decodable", "path escapes --images"
R_DUP, R_UTF8, R_FORMAT = "duplicate id", "not UTF-8", "malformed row"
R_SPLIT, R_ID = "unknown split", "bad id"

_SPLIT_ALIASES = {"train": "train", "val": "val", "test": "test", "validation": "val"}
_ID_RE = re.compile(r"[^\s\x00-\x1f\x7f]{1,128}")
_HEX10 = re.compile(r"[0-9a-f]{10}")
_IMAGE_SEP = re.compile(r"[|;]")
_EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
               "BMP": ".bmp", "TIFF": ".tif"}
_PILLOW_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)   # Pillow's default bomb limit


class ImportRowError(ValueError):
    """A bad row under ``strict=True``: the message names the file, row, line and reason."""

    def __init__(self, source: Path, row: int, line: int, reason: str, detail: str):
        self.row, self.line, self.reason, self.detail = row, line, reason, detail
        super().__init__(f"{source}: row {row} (line {line}): {reason}"
                         + (f": {detail}" if detail else ""))


class _Bad(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


# ------------------------------------------------------------------------ det_ingrs heuristic
_NUMBER_WORDS = set("a an one two three four five six seven eight nine ten eleven twelve half "
                    "quarter third dozen few couple several some".split())
_UNITS = set("""cup cups c tablespoon tablespoons tbsp tbsps tbs tbl tblsp teaspoon teaspoons tsp tsps
    ounce ounces oz fl fluid pound pounds lb lbs gram grams g gr kilogram kilograms kg milligram mg
    milliliter milliliters millilitre millilitres ml liter liters litre litres l quart quarts qt pint
    pints pt gallon gallons gal pinch pinches dash dashes drop drops handful handfuls can cans jar
    jars package packages pkg packet packets box boxes bag bags bottle bottles container containers
    carton cartons envelope envelopes stick sticks slice slices piece pieces clove cloves head heads
    bunch bunches sprig sprigs stalk stalks leaf leaves sheet sheets cube cubes inch inches cm
    scoop scoops splash dollop knob block""".split())
_SIZES = set("large small medium big heaping heaped level scant generous jumbo".split())
_PREP = set("""chopped minced diced sliced grated shredded crushed melted softened beaten peeled
    cubed halved quartered trimmed rinsed drained divided sifted packed firmly lightly loosely finely
    coarsely roughly thinly freshly cut optional about approximately approx""".split())
_DROP = _NUMBER_WORDS | _UNITS | _SIZES | _PREP | {"of", "to", "or", "and", "x", "-", "+", "&"}
_PAREN = re.compile(r"\([^)]*\)|\[[^\]]*\]")
_TAIL = re.compile(r"\b(?:to taste|for (?:garnish|garnishing|serving|decoration|dusting|greasing)|"
                   r"as (?:needed|required)|if desired|or more|optional)\b.*$")
_NUMERIC = re.compile(r"[\d½⅓⅔¼¾⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞]")


def ingredient_name(line: str) -> tuple[str, bool]:
    """The heuristic det_ingrs entry of one ingredient line: ``(name, valid)`` (module docstring).

    >>> ingredient_name("2 cups (500 ml) chopped fresh tomatoes, peeled")
    ('fresh tomatoes', True)
    """
    s = _PAREN.sub(" ", line.lower())
    s = s.split(",", 1)[0].split(";", 1)[0]
    s = _TAIL.sub("", s)
    words = s.split()
    i = 0
    while i < len(words):
        w = words[i].strip(".:*")
        if not w or _NUMERIC.match(w) or w in _DROP:
            i += 1
            continue
        break
    name = " ".join(words[i:]).strip(" .:;-*")
    valid = bool(name) and any(c.isalpha() for c in name) and len(name) <= 40 \
        and len(name.split()) <= 4
    return (name or " ".join(line.lower().split())), valid


# --------------------------------------------------------------------------------- id sets
class _KeySet:
    """Compact set of uint64 keys, each with an optional (row, tag): a sorted numpy array (8 bytes
    a key, 20 with values) plus a dict of the latest keys, merged into it every ``flush`` keys
    (1M recipe ids: ~20 MB, against ~100 MB for a Python set of id strings)."""

    def __init__(self, values: bool = True, flush: int = 1 << 14):
        self.keys = np.empty(0, np.uint64)
        self.rows = np.empty(0, np.uint32) if values else None
        self.tags = np.empty(0, np.uint64) if values else None
        self.pending: dict[int, tuple[int, int]] = {}
        self.flush = flush

    def get(self, key: int) -> tuple[int, int] | None:
        """(row, tag) of ``key`` ((0, 0) without values), or None when absent."""
        hit = self.pending.get(key)
        if hit is not None or not len(self.keys):
            return hit
        k = np.uint64(key)
        i = int(np.searchsorted(self.keys, k))
        if i < len(self.keys) and self.keys[i] == k:
            return (int(self.rows[i]), int(self.tags[i])) if self.rows is not None else (0, 0)
        return None

    def add(self, key: int, row: int = 0, tag: int = 0) -> None:
        self.pending[key] = (row, tag)
        if len(self.pending) >= self.flush:
            self._merge()

    def _merge(self) -> None:
        n = len(self.pending)
        new = np.fromiter(self.pending, np.uint64, n)
        order = np.argsort(new)
        at = np.searchsorted(self.keys, new[order])
        self.keys = np.insert(self.keys, at, new[order])   # one O(size) copy, no full sort
        if self.rows is not None:
            vals = list(self.pending.values())
            rows = np.fromiter((v[0] for v in vals), np.uint32, n)
            tags = np.fromiter((v[1] for v in vals), np.uint64, n)
            self.rows = np.insert(self.rows, at, rows[order])
            self.tags = np.insert(self.tags, at, tags[order])
        self.pending = {}

    def __len__(self) -> int:
        return len(self.keys) + len(self.pending)


def _id_key(rid: str) -> int:
    """10 lowercase hex characters: their value (exact); any other id: a 63-bit blake2b hash with
    the top bit set (a false 'duplicate' needs a 64-bit collision: ~3e-8 among 1M ids)."""
    if _HEX10.fullmatch(rid):
        return int(rid, 16)
    h = int.from_bytes(hashlib.blake2b(rid.encode("utf-8"), digest_size=8).digest(), "big")
    return (1 << 63) | (h & ((1 << 63) - 1))


def split_of(rid: str, seed: int, ratios: Sequence[float]) -> str:
    """The split drawn for a recipe without one: a hash of (seed, id) against the cumulative
    ``ratios`` (normalised): stable per id whatever the other rows."""
    u = int.from_bytes(hashlib.sha1(f"{seed}:{rid}".encode("utf-8")).digest()[:8], "big") / 2.0**64
    total, acc = float(sum(ratios)), 0.0
    for split, r in zip(SPLITS, ratios):
        acc += r / total
        if u < acc:
            return split
    return next(s for s, r in zip(reversed(SPLITS), reversed(ratios)) if r > 0)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    vals = tuple(float(r) for r in ratios)
    if len(vals) != 3 or any(not (r >= 0) for r in vals) or sum(vals) <= 0:
        raise ValueError(f"split_ratios must be 3 non-negative numbers (train, val, test) with a "
                         f"positive sum, got {ratios!r}")
    return vals  # type: ignore[return-value]


# --------------------------------------------------------------------------------- reading
def _decode(raw: bytes, n: int) -> str:
    return raw.decode("utf-8-sig" if n == 1 else "utf-8")


def _utf8_detail(raw: bytes, n: int, exc: UnicodeDecodeError) -> str:
    return f"byte {raw[exc.start:exc.start + 1]!r} at line {n}, byte {exc.start + 1} of the line"


def _csv_rows(path: Path, nbytes: list[int]) -> tuple[list[str], Iterator[tuple[int, int, Any]]]:
    """The header (lower-cased names) and an iterator of (row, start line, {column: value} or
    _Bad) per CSV record.

    Each physical line is decoded strictly on its own; a bad one is passed to the csv parser with
    surrogate escapes (so quoting and line counts stay right) and marks its record bad.
    """
    bad_lines: dict[int, str] = {}

    def lines() -> Iterator[str]:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                nbytes[0] += len(raw)
                try:
                    yield _decode(raw, n)
                except UnicodeDecodeError as exc:
                    bad_lines[n] = _utf8_detail(raw, n, exc)
                    yield raw.decode("utf-8", "surrogateescape")

    source = lines()
    reader = csv.reader(source, strict=True)
    try:
        head = next(reader)
    except StopIteration:
        raise ValueError(f"{path}: empty file (a CSV needs a header row)") from None
    except csv.Error as exc:
        source.close()
        raise ValueError(f"{path}: header row: {exc}") from None
    if bad_lines:
        source.close()
        raise ValueError(f"{path}: header row: not UTF-8 ({bad_lines[min(bad_lines)]})")
    header = [h.strip().lower() for h in head]
    dup = [h for h, c in Counter(header).items() if c > 1 and h]
    missing = [c for c in ("title", "ingredients", "instructions") if c not in header]
    if dup or missing:
        source.close()
        raise ValueError(f"{path}: header row: " + (f"column {dup[0]!r} appears twice" if dup else
                         f"no column {', '.join(map(repr, missing))} (columns: {', '.join(header)})"))

    def records() -> Iterator[tuple[int, int, Any]]:
        ncols, prev, row = len(header), reader.line_num, 0
        while True:
            try:
                fields = next(reader)
                err = None
            except StopIteration:
                return
            except csv.Error as exc:
                fields, err = None, exc
            start, prev = prev + 1, reader.line_num
            bad = None
            if bad_lines:
                hits = sorted(n for n in bad_lines if n <= prev)
                bad = bad_lines[hits[0]] if hits else None
                for n in hits:
                    del bad_lines[n]
            if fields is not None and all(not f.strip() for f in fields):
                continue  # a blank line
            row += 1
            if bad is not None:
                yield row, start, _Bad(R_UTF8, bad)
            elif err is not None:
                yield row, start, _Bad(R_FORMAT, f"CSV: {err} (lines {start}-{prev})")
            elif len(fields) != ncols:
                yield row, start, _Bad(R_FORMAT, f"CSV: {len(fields)} fields, the header has {ncols}")
            else:
                yield row, start, dict(zip(header, fields))

    return header, records()


def _jsonl_rows(path: Path, nbytes: list[int]) -> Iterator[tuple[int, int, Any]]:
    """(row, line, object or _Bad) per non-blank line of a JSON Lines file."""
    row = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            nbytes[0] += len(raw)
            if not raw.strip():
                continue
            row += 1
            try:
                text = _decode(raw, n)
            except UnicodeDecodeError as exc:
                yield row, n, _Bad(R_UTF8, _utf8_detail(raw, n, exc))
                continue
            try:
                obj = json.loads(text)
            except ValueError as exc:
                yield row, n, _Bad(R_FORMAT, f"not valid JSON: {exc}")
                continue
            if not isinstance(obj, dict):
                yield row, n, _Bad(R_FORMAT, f"a line must be a JSON object, got {type(obj).__name__}")
                continue
            yield row, n, obj


# ------------------------------------------------------------------------------ one record
@dataclass(slots=True)
class _Record:
    title: str
    ingredients: list[str]
    instructions: list[str]
    images: list[str]
    rid: str | None
    split: str | None
    url: str


def _norm(text: str) -> str:
    return " ".join(text.split())


def _json_list(value: str) -> list | None:
    s = value.strip()
    if not s.startswith("["):
        return None
    try:
        parsed = json.loads(s)
    except ValueError:
        return None
    return parsed if isinstance(parsed, list) else None


def _lines(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        parsed = _json_list(value)
        if parsed is None:
            return [t for t in (_norm(x) for x in value.splitlines()) if t]
        value = parsed
    if not isinstance(value, list):
        raise _Bad(R_FORMAT, f"'{name}' must be a list or text, got {type(value).__name__}")
    out = []
    for j, item in enumerate(value):
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            item = item["text"]
        if not isinstance(item, str):
            raise _Bad(R_FORMAT, f"'{name}' item {j} must be a string, got {type(item).__name__}")
        t = _norm(item)
        if t:
            out.append(t)
    return out


def _image_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        parsed = _json_list(value)
        value = parsed if parsed is not None else _IMAGE_SEP.split(value)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(R_FORMAT, f"'{name}' must be a path or a list of paths")
    return [v.strip() for v in value if v.strip()]


def _record(fields: dict) -> _Record:
    title = fields.get("title")
    if title is not None and not isinstance(title, str):
        raise _Bad(R_FORMAT, f"'title' must be text, got {type(title).__name__}")
    title = _norm(title or "")
    if not title:
        raise _Bad(R_TITLE)
    ingrs = _lines(fields.get("ingredients"), "ingredients")
    if not ingrs:
        raise _Bad(R_INGRS)
    instrs = _lines(fields.get("instructions"), "instructions")
    if not instrs:
        raise _Bad(R_INSTRS)
    images: list[str] = []
    for key in ("image", "images"):
        for p in _image_list(fields.get(key), key):
            if p not in images:
                images.append(p)
    rid = fields.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    if rid is not None and not isinstance(rid, str):
        raise _Bad(R_ID, f"'id' must be text or an integer, got {type(rid).__name__}")
    rid = (rid or "").strip() or None
    if rid is not None and not _ID_RE.fullmatch(rid):
        raise _Bad(R_ID, f"{rid[:40]!r}: ids are 1-128 characters without blanks or control "
                         "characters")
    split = fields.get("split")
    if split is not None and not isinstance(split, str):
        raise _Bad(R_SPLIT, f"'split' must be text, got {type(split).__name__}")
    split = (split or "").strip().lower() or None
    if split is not None:
        if split not in _SPLIT_ALIASES:
            raise _Bad(R_SPLIT, f"{split[:40]!r} (expected train, val or test)")
        split = _SPLIT_ALIASES[split]
    url = fields.get("url")
    url = url.strip() if isinstance(url, str) else ""
    return _Record(title, ingrs, instrs, images, rid, split, url)


# ---------------------------------------------------------------------------------- images
def _resolve(images_root: str, rel: str) -> str:
    """The file of ``rel`` under ``images_root``; refuses paths that leave it."""
    if rel.startswith(("/", "\\")) or os.path.isabs(rel) or PureWindowsPath(rel).drive:
        raise _Bad(R_ESCAPE, f"{rel!r} is an absolute path")
    if ".." in re.split(r"[/\\]", rel):
        raise _Bad(R_ESCAPE, f"{rel!r} leaves --images ('..')")
    full = os.path.join(images_root, rel)
    try:
        st = os.stat(full)
    except (OSError, ValueError):
        raise _Bad(R_NOT_FOUND, rel) from None
    if not stat.S_ISREG(st.st_mode):
        raise _Bad(R_NOT_FOUND, f"{rel} (not a file)")
    return full


def _decode_image(full: str, rel: str) -> str:
    """Verify and fully decode one image; return its extension (``.jpg``...)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(full) as im:
                im.verify()
            with Image.open(full) as im:
                im.load()
                fmt = im.format
    except Exception as exc:  # Pillow raises many types on bad input; all mean "not decodable"
        raise _Bad(R_DECODE, f"{rel}: {type(exc).__name__}: {exc}") from None
    ext = _EXTENSIONS.get(fmt or "")
    if ext is None:
        suffix = os.path.splitext(rel)[1].lower()
        ext = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".img"
    return ext


@contextlib.contextmanager
def _pillow_limits() -> Iterator[None]:
    """The decompression-bomb limit on (Pillow's default if someone turned it off) and truncated
    images refused, for the duration of the import."""
    from PIL import Image, ImageFile

    old = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    if Image.MAX_IMAGE_PIXELS is None:
        Image.MAX_IMAGE_PIXELS = _PILLOW_MAX_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old


_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES,
                  getattr(errno, "ENOTSUP", errno.EPERM), getattr(errno, "EOPNOTSUPP", errno.EPERM)}


def _place(src: str, dst: str, mode: str) -> str:
    """Copy / hard-link / symlink ``src`` to ``dst`` (folders made on demand); return the mode
    used (a hard link that the file system refuses becomes a symlink)."""
    for _ in range(4):
        try:
            if mode == "copy":
                shutil.copyfile(src, dst)
            elif mode == "hardlink":
                os.link(src, dst)
            else:
                os.symlink(os.path.abspath(src), dst)
            return mode
        except FileNotFoundError:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
        except FileExistsError:
            os.unlink(dst)
        except OSError as exc:
            if mode == "hardlink" and exc.errno in _LINK_FALLBACK:
                mode = "symlink"
            else:
                raise
    raise OSError(f"cannot write {dst}")


# ------------------------------------------------------------------------------ the output
class _ListWriter:
    """One top-level JSON list, one element at a time."""

    def __init__(self, fh):
        self.fh, self.n = fh, 0

    def add(self, obj: Any) -> None:
        self.fh.write(("[\n" if self.n == 0 else ",\n") + json.dumps(obj, ensure_ascii=False))
        self.n += 1


@contextlib.contextmanager
def _json_list_file(path: Path) -> Iterator[_ListWriter]:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", buffering=1 << 20) as fh:
        w = _ListWriter(fh)
        yield w
        fh.write("\n]\n" if w.n else "[]\n")


def _prepare_out(out: Path, images_dir: Path) -> bool:
    """Make ``out`` ready; True when a previous import there was replaced."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    img = images_dir.resolve()
    for split in SPLITS:
        d = (out / split).resolve()
        if img == d or d in img.parents:
            raise ValueError(f"--images ({images_dir}) is inside the output's {split}/ folder")
    previous = (out / REPORT).is_file() or (out / INCOMPLETE).is_file()
    if not previous:
        if any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty and holds no previous import (no {REPORT}): "
                                  "refusing to write into it; use a new or empty folder")
        return False
    for name in (LAYER1, LAYER2, DET_INGRS, REPORT):
        (out / name).unlink(missing_ok=True)
    for split in SPLITS:
        if (out / split).is_dir() and not (out / split).is_symlink():
            shutil.rmtree(out / split)
    return True


def _discard(out: Path) -> None:
    """After a failed import (a --strict stop, an interrupt, a full disk): remove what it wrote
    (the layer files' temporaries are removed by :func:`malm.io.atomic_path`), leaving ``out``
    empty as it was, or without the previous import it replaced."""
    for split in SPLITS:
        if (out / split).is_dir() and not (out / split).is_symlink():
            shutil.rmtree(out / split, ignore_errors=True)
    (out / INCOMPLETE).unlink(missing_ok=True)


# ------------------------------------------------------------------------------ the import
def _content_digest(rec: _Record) -> bytes:
    return hashlib.sha1(json.dumps([rec.title, rec.ingredients, rec.instructions],
                                   ensure_ascii=False, separators=(",", ":")).encode("utf-8")).digest()


def _recipe_id(given: str | None, digest: bytes, tag: int, ids: _KeySet) -> tuple[str, int, str]:
    """(id, its key, given | generated | rehashed) of a row, or _Bad for a duplicate. A generated
    id taken by a different recipe (another content ``tag``) is re-hashed until free."""
    if given is not None:
        hit = ids.get(_id_key(given))
        if hit is not None:
            raise _Bad(R_DUP, f"id {given!r} (also row {hit[0]})")
        return given, _id_key(given), "given"
    k = 0
    while True:
        h = digest.hex() if k == 0 else hashlib.sha1(digest + b"#%d" % k).hexdigest()
        rid, key = h[:10], int(h[:10], 16)
        hit = ids.get(key)
        if hit is None:
            return rid, key, "rehashed" if k else "generated"
        if hit[1] == tag:
            raise _Bad(R_DUP, f"id {rid} (the same title, ingredients and instructions as row "
                              f"{hit[0]})")
        k += 1


def _image_id(rid: str, rel: str, image_ids: _KeySet) -> str:
    """10 hex characters of sha1(recipe id, path), re-hashed (a counter added) while taken."""
    k = 0
    while True:
        salt = f"{rid}\0{rel}" + (f"\0{k}" if k else "")
        h = hashlib.sha1(salt.encode("utf-8")).hexdigest()[:10]
        if image_ids.get(int(h, 16)) is None:
            return h
        k += 1


def import_recipes(source: str | os.PathLike, images_dir: str | os.PathLike, out: str | os.PathLike,
                   *, strict: bool = False, seed: int = 0,
                   split_ratios: Sequence[float] = (0.8, 0.1, 0.1), link: bool = False,
                   progress: bool = True) -> dict:
    """Import ``source`` (CSV or JSONL; image paths relative to ``images_dir``) into a Recipe1M
    root at ``out``; return the report, also written to ``<out>/import_report.json``.

    Bad rows are counted and skipped (``strict=True``: :class:`ImportRowError` at the first one);
    ``link=True`` hard-links (else symlinks) the images instead of copying them. The format, the
    id and split rules and the det_ingrs heuristic are in the module docstring.
    """
    t0 = time.perf_counter()
    source, images_dir, out = Path(source), Path(images_dir), Path(out)
    fmt = FORMATS.get(source.suffix.lower())
    if fmt is None:
        raise ValueError(f"{source}: unknown input format {source.suffix!r} (expected "
                         f"{', '.join(FORMATS)})")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: input file not found")
    if not images_dir.is_dir():
        raise FileNotFoundError(f"{images_dir}: images folder not found")
    ratios = _check_ratios(split_ratios)
    nbytes = [0]
    header: list[str] = []
    if fmt == "csv":  # a bad header is an error before anything is written
        header, rows_iter = _csv_rows(source, nbytes)
    else:
        rows_iter = _jsonl_rows(source, nbytes)
    replaced = _prepare_out(out, images_dir)
    (out / INCOMPLETE).write_text(json.dumps({"source": str(source)}) + "\n")

    images_root = os.fspath(images_dir)
    out_s = os.fspath(out)
    ids, image_ids = _KeySet(), _KeySet(values=False)
    by_reason: Counter = Counter()
    bad_rows: list[dict] = []
    per_split = {s: dict.fromkeys(("recipes", "with_images", "text_only", "images"), 0)
                 for s in SPLITS}
    n_ids = Counter()          # given / generated / rehashed (generated after a collision)
    n_splits = Counter()       # given / drawn
    placed = Counter()         # copy / hardlink / symlink
    det_lines = det_valid = 0
    rows = imported = 0

    from tqdm import tqdm

    bar = tqdm(total=source.stat().st_size, unit="B", unit_scale=True, desc="import",
               disable=not progress, mininterval=1.0)
    with _pillow_limits(), contextlib.ExitStack() as stack:
        stack.push(lambda *exc: _discard(out) if exc[0] is not None else None)
        l1 = stack.enter_context(_json_list_file(out / LAYER1))
        l2 = stack.enter_context(_json_list_file(out / LAYER2))
        det = stack.enter_context(_json_list_file(out / DET_INGRS))
        stack.callback(bar.close)
        for row, line, fields in rows_iter:
            rows += 1
            if rows % 1024 == 0:
                bar.update(nbytes[0] - bar.n)
            try:
                if isinstance(fields, _Bad):
                    raise fields
                rec = _record(fields)
                try:
                    digest = _content_digest(rec)
                    "".join([rec.rid or "", rec.url, *rec.images]).encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise _Bad(R_UTF8, f"a lone surrogate escape ({exc.reason})") from None
                tag = int.from_bytes(digest[:8], "big")
                rid, key, kind = _recipe_id(rec.rid, digest, tag, ids)
                # the images: every one must be there and decode before anything is written
                found = []
                for rel in rec.images:
                    full = _resolve(images_root, rel)
                    found.append((rel, full, _decode_image(full, rel)))
            except _Bad as bad:
                if strict:
                    raise ImportRowError(source, row, line, bad.reason, bad.detail) from None
                by_reason[bad.reason] += 1
                if len(bad_rows) < BAD_ROWS_KEPT:
                    bad_rows.append({"row": row, "line": line, "reason": bad.reason,
                                     "detail": bad.detail})
                continue

            ids.add(key, row, tag)
            n_ids[kind] += 1
            if rec.split is not None:
                split = rec.split
                n_splits["given"] += 1
            else:
                split = split_of(rid, seed, ratios)
                n_splits["drawn"] += 1
            names = []
            for rel, full, ext in found:
                h = _image_id(rid, rel, image_ids)
                image_ids.add(int(h, 16))
                name = h + ext
                dst = os.path.join(out_s, split, h[0], h[1], h[2], h[3], name)
                placed[_place(full, dst, "hardlink" if link else "copy")] += 1
                names.append(name)
            dets = [ingredient_name(t) for t in rec.ingredients]
            det_lines += len(dets)
            det_valid += sum(v for _, v in dets)
            l1.add({"id": rid, "title": rec.title,
                    "ingredients": [{"text": t} for t in rec.ingredients],
                    "instructions": [{"text": t} for t in rec.instructions],
                    "partition": split, "url": rec.url})
            if names:
                l2.add({"id": rid, "images": [{"id": n, "url": ""} for n in names]})
            det.add({"id": rid, "ingredients": [{"text": n} for n, _ in dets],
                     "valid": [v for _, v in dets]})
            d = per_split[split]
            d["recipes"] += 1
            d["with_images" if names else "text_only"] += 1
            d["images"] += len(names)
            imported += 1
        bar.update(nbytes[0] - bar.n)

    extra = [c for c in header if c and c not in
             ("title", "ingredients", "instructions", "image", "images", "id", "split", "url")]
    report = {
        "source": str(source), "format": fmt, "images_dir": str(images_dir), "out": str(out),
        "rows": rows, "imported": imported, "bad": rows - imported,
        "splits": per_split,
        "bad_by_reason": dict(by_reason.most_common()),
        "bad_rows": bad_rows, "bad_rows_kept": BAD_ROWS_KEPT,
        "ids": {"given": n_ids["given"], "generated": n_ids["generated"] + n_ids["rehashed"],
                "rehashed": n_ids["rehashed"]},
        "split_source": {"given": n_splits["given"], "drawn": n_splits["drawn"]},
        "seed": seed, "split_ratios": list(ratios),
        "images": {"copied": placed["copy"], "hardlinked": placed["hardlink"],
                   "symlinked": placed["symlink"]},
        "det_ingrs": DET_INGRS_NOTE,
        "det_ingrs_valid": round(det_valid / det_lines, 4) if det_lines else None,
        "ignored_columns": extra,
        "replaced_previous_import": replaced,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    atomic_write_json(out / REPORT, report)
    (out / INCOMPLETE).unlink(missing_ok=True)
    return report


# ------------------------------------------------------------------------------------ the CLI
def format_report(report: dict) -> str:
    """The report as readable text: counts per split, ids/splits/images, bad rows by reason and
    the first bad rows with their row and line numbers."""
    lines = [f"imported {report['imported']} of {report['rows']} rows from {report['source']} "
             f"into {report['out']} ({report['bad']} bad)"]
    cols = ("recipes", "with_images", "text_only", "images")
    table = [(s, *(report["splits"][s][c] for c in cols)) for s in SPLITS]
    table.append(("total", *(sum(report["splits"][s][c] for s in SPLITS) for c in cols)))
    head = ("split", *cols)
    width = [max(len(str(x)) for x in col) for col in zip(head, *table)]
    for r in (head, tuple("-" * w for w in width), *table):
        lines.append("  " + "  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)
                                      for i, (x, w) in enumerate(zip(r, width))))
    ids, sp, im = report["ids"], report["split_source"], report["images"]
    lines.append(f"ids: {ids['given']} given, {ids['generated']} generated"
                 + (f" ({ids['rehashed']} re-hashed after a collision)" if ids["rehashed"] else ""))
    lines.append(f"splits: {sp['given']} given, {sp['drawn']} drawn (seed {report['seed']}, ratios "
                 + "/".join(f"{r:g}" for r in report["split_ratios"]) + ")")
    lines.append(f"images: {im['copied']} copied, {im['hardlinked']} hard-linked, "
                 f"{im['symlinked']} symlinked")
    valid = report.get("det_ingrs_valid")
    lines.append(f"det_ingrs: {report['det_ingrs']} (ingredient names parsed from the lines, not "
                 "Recipe1M's detector" + (f"; {valid:.0%} valid" if valid is not None else "") + ")")
    if report.get("ignored_columns"):
        lines.append(f"ignored columns: {', '.join(report['ignored_columns'])}")
    if report["bad"]:
        lines.append("bad rows by reason:")
        w = max(len(r) for r in report["bad_by_reason"])
        lines += [f"  {r.ljust(w)}  {n}" for r, n in report["bad_by_reason"].items()]
        shown = report["bad_rows"]
        more = report["bad"] - len(shown)
        lines.append(f"bad rows{f' (first {len(shown)})' if more else ''}:")
        for b in shown:
            lines.append(f"  row {b['row']} (line {b['line']}): {b['reason']}"
                         + (f": {b['detail']}" if b["detail"] else ""))
        if more:
            lines.append(f"  ... and {more} more (counted above)")
    lines.append(f"report: {Path(report['out']) / REPORT}")
    return "\n".join(lines)


def _ratios(text: str) -> tuple[float, float, float]:
    try:
        return _check_ratios([float(x) for x in text.split(",")])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST like 0.8,0.1,0.1: {exc}") from None


USAGE_EPILOG = """\
Input columns (CSV header, case-insensitive) or JSONL keys:
  title                     required
  ingredients, instructions required: a JSON list of strings, or newline-separated text
  image / images            optional: paths relative to --images; in CSV several separated by
                            '|' or ';' (or a JSON list); in JSONL a list of strings
  id                        optional: default a stable hash (10 hex characters)
  split                     optional: train/val/test; default drawn from --split-ratios by a
                            hash of (seed, id)
  url                       optional
Bad rows (missing title, no ingredients/instructions, missing or undecodable image, a path
leaving --images, duplicate id, non-UTF-8 text, malformed row) are reported with their row
number and skipped; --strict stops at the first. det_ingrs.json is a heuristic extraction.
Exit status: 0, or 1 when no row was imported, 2 on a --strict failure.
"""


def add_import_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``import`` on ``subparsers`` (the ``malm data`` sub-commands)."""
    p = subparsers.add_parser(
        "import", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="Import your own recipes (CSV/JSONL + images) as a Recipe1M-format root.",
        description="Convert your own recipes (CSV or JSON Lines, with image files) into a\n"
                    "Recipe1M-format root (layer1.json, layer2.json, det_ingrs.json,\n"
                    "<split>/<c0>/<c1>/<c2>/<c3>/<image id>, import_report.json) that\n"
                    "`malm data check` and `malm data prepare` read.",
        epilog=USAGE_EPILOG)
    p.add_argument("--from", dest="source", required=True, metavar="FILE",
                   help="The recipes: a .csv (header row) or .jsonl/.ndjson file (one JSON object a "
                        "line).")
    p.add_argument("--images", required=True, metavar="DIR",
                   help="Folder the image paths of the input are relative to (paths may not leave "
                        "it).")
    p.add_argument("--out", required=True, metavar="ROOT",
                   help="Output Recipe1M root: a new or empty folder, or a previous import (replaced).")
    p.add_argument("--strict", action="store_true",
                   help="Stop at the first bad row (row number and reason) instead of skipping it.")
    p.add_argument("--seed", type=int, default=0, metavar="N",
                   help="Seed of the split drawn for rows without a split column (default: 0).")
    p.add_argument("--split-ratios", type=_ratios, default=(0.8, 0.1, 0.1), metavar="TRAIN,VAL,TEST",
                   help="Fractions of rows without a split that go to train, val, test (default: "
                        "0.8,0.1,0.1; normalised).")
    p.add_argument("--link", action="store_true",
                   help="Hard-link the images into the root instead of copying them (a symlink "
                        "where a hard link is impossible, e.g. across file systems).")
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    p.set_defaults(func=cmd_import)
    return p


def cmd_import(args: argparse.Namespace) -> int:
    try:
        report = import_recipes(args.source, args.images, args.out, strict=args.strict,
                                seed=args.seed, split_ratios=args.split_ratios, link=args.link,
                                progress=not args.quiet)
    except ImportRowError as exc:
        print(f"malm data import: error: {exc} (--strict: nothing imported)", file=sys.stderr)
        return 2
    print(format_report(report))
    if not report["imported"]:
        print("malm data import: no row was imported", file=sys.stderr)
        return 1
    return 0
