"""Reader of an unmodified Recipe1M download (``layer1.json``, ``layer2.json``, ``det_ingrs.json``,
images under ``<root>/<partition>/<c0>/<c1>/<c2>/<c3>/<image id>``) and the H-T split lists.

Every defect of the input is reported as a :class:`Recipe1MError` naming the file, the record (index
and id) and what is wrong. Images listed in ``layer2.json`` but absent on disk are counted, not fatal;
decoding the images (corrupt files) is left to the cache builder (``malm.data.cache``,
``malm.data.store``).

Split rule: without ``split_dir`` a recipe's split is its layer1 ``partition``; with it, the ids in
``train.txt``/``val.txt``/``test.txt`` define the paired set of each split (H-T), and recipes not listed
are text-only in their layer1 partition. Images are always looked up under the layer1 partition folder,
where the download keeps them. Pairs are ordered by id (the H-T lists are id-sorted).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

try:  # faster parse of the 1.3 GB layer1.json when available; never a hard dependency
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

SPLITS = ("train", "val", "test")
_PARTITIONS = {s: s for s in SPLITS}
LAYER1, LAYER2, DET_INGRS = "layer1.json", "layer2.json", "det_ingrs.json"

# H-T preprocessing.py: ingredient quantities mis-parsed in layer1 ("12 cup" is "1/2 cup").
_QUANTITY_FIXES = (("12 ", "1/2 "), ("13 ", "1/3 "), ("14 ", "1/4 "), ("18 ", "1/8 "),
                   ("23 ", "2/3 "), ("34 ", "3/4 "))


class Recipe1MError(ValueError):
    """A defect of a Recipe1M file; the message names the file, the record and the problem."""


@dataclass(slots=True)
class Recipe:
    """One layer1 recipe. Its ingredient and instruction lines are kept as one newline-joined
    string each (two objects instead of ~20 per recipe: the reader holds 1M of these at Recipe1M
    scale); ``ingredients`` / ``instructions`` give the lines."""

    id: str
    title: str
    ingr_text: str                     # ingredient lines joined by "\n" (no line holds a newline)
    instr_text: str                    # instruction lines joined by "\n"
    partition: str                     # layer1 partition: the folder holding its images
    split: str                         # split it belongs to (partition or the H-T list)
    listed: bool = True                # False: split_dir given and the id is in no list
    images: list[str] = field(default_factory=list)   # image ids listed in layer2
    found: list[str] = field(default_factory=list)    # paths of the listed images present on disk

    @property
    def ingredients(self) -> list[str]:
        return self.ingr_text.split("\n")

    @ingredients.setter
    def ingredients(self, lines: list[str]) -> None:
        self.ingr_text = _join(lines)

    @property
    def instructions(self) -> list[str]:
        return self.instr_text.split("\n")


def _join(lines: Iterable[str]) -> str:
    """Lines -> one string; a newline inside a line becomes a space (lines are stripped text)."""
    return "\n".join(" ".join(t.splitlines()) for t in lines)


@dataclass
class Recipe1M:
    """A parsed Recipe1M root. ``recipes`` keeps layer1 order; ``pairs``/``text_only`` are by split."""

    root: Path
    recipes: list[Recipe]
    dropped: dict[str, int] = field(default_factory=dict)   # reason -> records skipped (skip mode)
    checked_images: bool = True

    def pairs(self, split: str) -> list[Recipe]:
        """Recipes of ``split`` with at least one image found on disk, sorted by id."""
        out = [r for r in self.recipes if r.split == split and r.listed and r.found]
        return sorted(out, key=lambda r: r.id)

    def text_only(self, split: str) -> list[Recipe]:
        out = [r for r in self.recipes if r.split == split and not (r.listed and r.found)]
        return sorted(out, key=lambda r: r.id)

    def report(self) -> dict:
        """``{split: {recipes, images_listed, images_found, images_missing, pairs, text_only}}``."""
        rep = {s: dict.fromkeys(("recipes", "images_listed", "images_found", "images_missing",
                                 "pairs", "text_only"), 0) for s in SPLITS}
        for r in self.recipes:
            d = rep[r.split]
            d["recipes"] += 1
            n_list = len(r.images) if r.listed else 0
            n_found = len(r.found) if r.listed else 0
            d["images_listed"] += n_list
            d["images_found"] += n_found
            d["images_missing"] += n_list - n_found
            if n_found:
                d["pairs"] += 1
            else:
                d["text_only"] += 1
        return rep


# ------------------------------------------------------------------------------------ JSON files
def load_json(path: str | os.PathLike, progress: bool = False) -> Any:
    """Parse one JSON file; a broken file raises :class:`Recipe1MError` with its position.

    UTF-8 errors give the byte offset; syntax errors give line/column/char, say whether the file
    ends there (truncated) or does not look like JSON at all, and name the top-level record
    (index and id, when it can be read) where parsing stopped.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Recipe1MError(f"{path}: cannot read file: {exc}") from exc
    if progress:
        tqdm.write(f"parsing {path} ({len(data) / 2**20:.0f} MiB)")
    try:
        return _orjson.loads(data) if _orjson is not None else json.loads(data)
    except ValueError:
        pass  # diagnose below, off the fast path
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        off = exc.start
        line = data.count(b"\n", 0, off) + 1
        prefix = data[:off].decode("utf-8")
        where = _record_at(prefix, len(prefix))
        raise Recipe1MError(
            f"{path}: not valid UTF-8 at byte offset {off} (line {line}): byte "
            f"{data[off:off + 1]!r} in ...{data[max(0, off - 30):off + 10]!r}{where}") from None
    del data
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        body = text.strip()
        if not body:
            raise Recipe1MError(f"{path}: is empty, not JSON") from None
        if body[0] not in "[{\"" and exc.pos <= len(text) - len(text.lstrip()):
            raise Recipe1MError(f"{path}: is not JSON (it starts with {body[:40]!r})") from None
        pos, what = exc.pos, f"has a JSON syntax error ({exc.msg})"
        if body[0] in "[{" and body[-1] != {"[": "]", "{": "}"}[body[0]]:
            pos, what = len(text.rstrip()), "ends unexpectedly: the file looks truncated"
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        where = _record_at(text, pos)
        raise Recipe1MError(f"{path}: {what} at line {line} column {col} (char {pos})"
                            f"{where}") from None
    raise Recipe1MError(f"{path}: the JSON parser rejected the file")  # pragma: no cover


_ID_RE = re.compile(r'"id"\s*:\s*"([^"]{0,64})"')


def _record_at(text: str, pos: int) -> str:
    """'; in record #i (id X)' for the top-level list element containing char ``pos`` (or '')."""
    dec = json.JSONDecoder()
    i = len(text) - len(text.lstrip())
    if i >= len(text) or text[i] != "[":
        return ""
    i += 1
    index = 0
    ws = re.compile(r"[\s,]*")
    while True:
        i = ws.match(text, i).end()
        if i >= len(text) or i >= pos or text[i] == "]":
            break
        try:
            _, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            break
        if end > pos:
            break
        i, index = end, index + 1
    if i >= len(text) or not text[i:pos + 1].strip():
        return f"; after {index} complete record(s)"
    m = _ID_RE.search(text, i, min(len(text), i + 4096))
    return f"; in record #{index}" + (f" (id {m.group(1)})" if m else "")


def iter_records(path: str | os.PathLike, progress: bool = False, desc: str | None = None,
                 what: str = "a list of records") -> Iterator[tuple[int, Any]]:
    """Stream the elements of a top-level JSON list: ``(index, record)``, one at a time.

    ijson's C backend (yajl2_c) parses the file incrementally, so memory holds one record, not the
    file (layer1.json is 1.5 GB: parsed whole it took 10 GB). A file that is not a list, or any
    parse error (truncated file, syntax error, bad UTF-8), is diagnosed by :func:`load_json`, whose
    message names the file, the line/column or byte offset and the record (index and id) where
    parsing stopped; that path reads the whole file, which only a broken file pays for.
    """
    import ijson

    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise Recipe1MError(f"{path}: cannot read file: {exc}") from exc
    with f:
        head = f.read(64).lstrip()
        if not head.startswith(b"["):
            data = load_json(path)  # raises on anything that is not JSON
            raise Recipe1MError(f"{path}: the top level must be {what}, got {type(data).__name__}")
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        bar = tqdm(total=size, unit="B", unit_scale=True, desc=desc or path.name, disable=not progress,
                   mininterval=1.0)
        index = 0
        try:
            for index, rec in enumerate(ijson.items(f, "item", use_float=True)):
                if progress and index % 4096 == 0:
                    bar.update(f.tell() - bar.n)
                yield index, rec
        except (ijson.JSONError, UnicodeDecodeError) as exc:
            bar.close()
            load_json(path)  # the exact diagnosis; raises Recipe1MError
            raise Recipe1MError(f"{path}: the JSON parser stopped after record #{index} "
                                f"({exc})") from None
        bar.update(size - bar.n)
        bar.close()


# ------------------------------------------------------------------------------- record checks
class _Problems:
    """Raise on the first bad record (``on_bad_record='error'``) or count and skip it ('skip')."""

    def __init__(self, mode: str):
        if mode not in ("error", "skip"):
            raise ValueError(f"on_bad_record must be 'error' or 'skip', not {mode!r}")
        self.mode = mode
        self.counts: Counter = Counter()
        self.dropped_ids: set[str] = set()   # layer1 ids skipped (layer2 may still name them)

    def __call__(self, file: Path, index: int, rid: Any, msg: str) -> None:
        text = f"{file}: record #{index} (id {rid!r}): {msg}"
        if self.mode == "error":
            raise Recipe1MError(text)
        self.counts[f"{file.name}: {msg.split(':')[0]}"] += 1

    def record_id(self, file: Path, index: int, rec: Any, seen: dict[str, int],
                  strip: bool = False) -> str | None:
        """The id of record ``index`` of ``file``, or None after reporting a record that is not an
        object, has no non-empty string id (``strip``: blank counts as empty) or repeats one."""
        if not isinstance(rec, dict):
            self(file, index, None, f"must be an object, got {type(rec).__name__}")
            return None
        rid = rec.get("id")
        if not isinstance(rid, str) or not (rid.strip() if strip else rid):
            self(file, index, rid, "missing field 'id'" if "id" not in rec
                 else "field 'id' must be a non-empty string")
            return None
        if rid in seen:
            self(file, index, rid, f"duplicate id: also record #{seen[rid]}")
            return None
        seen[rid] = index
        return rid


def _lines(rec: dict, key: str) -> list[str] | str:
    """The texts of a ``[{text}]`` field, or an error message."""
    if key not in rec:
        return f"missing field '{key}'"
    val = rec[key]
    if not isinstance(val, list):
        return f"field '{key}' must be a list of {{text}}, got {type(val).__name__}"
    out = []
    for j, item in enumerate(val):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            return f"field '{key}' item {j} must be an object with a string 'text'"
        t = item["text"].strip()
        if t:
            out.append(t)
    if not out:
        return f"empty {key}: no non-blank line"
    return out


def _progress(it: Iterable, progress: bool, desc: str, total: int | None = None) -> Iterable:
    return tqdm(it, desc=desc, total=total, disable=not progress, unit="rec", mininterval=1.0)


def read_layer1(path: str | os.PathLike, on_bad_record: str = "error", progress: bool = False,
                problems: _Problems | None = None) -> list[Recipe]:
    """Validate and read ``layer1.json`` (layer1 order; split = partition)."""
    path = Path(path)
    problems = problems or _Problems(on_bad_record)
    out: list[Recipe] = []
    seen: dict[str, int] = {}
    for i, rec in iter_records(path, progress, "layer1", "a list of recipes"):
        rid = problems.record_id(path, i, rec, seen, strip=True)
        if rid is None:
            continue
        problems.dropped_ids.add(rid)  # until the record passes every check
        missing = [k for k in ("title", "ingredients", "instructions", "partition") if k not in rec]
        if missing:
            problems(path, i, rid, f"missing field '{missing[0]}'")
            continue
        part = rec["partition"]
        if part not in SPLITS:
            problems(path, i, rid, f"unknown partition {part!r} (expected one of {SPLITS})")
            continue
        title = rec["title"]
        if not isinstance(title, str) or not title.strip():
            problems(path, i, rid, "empty title" if isinstance(title, str)
                     else f"field 'title' must be a string, got {type(title).__name__}")
            continue
        ingrs, instrs = _lines(rec, "ingredients"), _lines(rec, "instructions")
        if isinstance(ingrs, str) or isinstance(instrs, str):
            problems(path, i, rid, ingrs if isinstance(ingrs, str) else instrs)
            continue
        problems.dropped_ids.discard(rid)
        part = _PARTITIONS[part]  # one shared str per split, not one per record
        out.append(Recipe(rid, title.strip(), _join(_fix_quantities(t) for t in ingrs), _join(instrs),
                          part, part))
    return out


def _fix_quantities(line: str) -> str:
    for bad, good in _QUANTITY_FIXES:
        if bad in line:
            line = line.replace(bad, good)
    return line


def read_layer2(path: str | os.PathLike, recipes: dict[str, Recipe], dropped_ids: set[str] = frozenset(),
                on_bad_record: str = "error", progress: bool = False,
                problems: _Problems | None = None) -> None:
    """Validate ``layer2.json`` and fill ``Recipe.images`` (image ids) in place."""
    path = Path(path)
    problems = problems or _Problems(on_bad_record)
    seen: dict[str, int] = {}
    for i, rec in iter_records(path, progress, "layer2", "a list"):
        rid = problems.record_id(path, i, rec, seen)
        if rid is None:
            continue
        if "images" not in rec:
            problems(path, i, rid, "missing field 'images'")
            continue
        ims = rec["images"]
        if not isinstance(ims, list):
            problems(path, i, rid, f"field 'images' must be a list, got {type(ims).__name__}")
            continue
        names, bad = [], None
        for j, im in enumerate(ims):
            name = im.get("id") if isinstance(im, dict) else None
            if not isinstance(name, str) or len(name) < 5 or "/" in name or "\\" in name:
                bad = f"images[{j}] must be an object with an 'id' like '<hex>.jpg', got {im!r:.80}"
                break
            names.append(name)
        if bad:
            problems(path, i, rid, bad)
            continue
        r = recipes.get(rid)
        if r is None:
            if rid not in dropped_ids:  # a record skipped in layer1 is not a second error
                problems(path, i, rid, f"id not in {LAYER1}")
            continue
        r.images = names


def read_det_ingrs(path: str | os.PathLike, recipes: dict[str, Recipe],
                   dropped_ids: set[str] = frozenset(), on_bad_record: str = "error",
                   progress: bool = False, problems: _Problems | None = None,
                   keep: bool = True) -> dict[str, list[str]]:
    """Validate ``det_ingrs.json``; return ``{id: [valid detected ingredient names]}`` (empty with
    ``keep=False``: validation only, nothing held)."""
    path = Path(path)
    problems = problems or _Problems(on_bad_record)
    out: dict[str, list[str]] = {}
    seen: set[str] = set()
    for i, rec in iter_records(path, progress, "det_ingrs", "a list"):
        rid = rec.get("id") if isinstance(rec, dict) else None
        if not isinstance(rid, str):
            problems(path, i, rid, "missing field 'id'")
            continue
        if rid in seen:
            problems(path, i, rid, "duplicate id")
            continue
        seen.add(rid)
        ingrs, valid = rec.get("ingredients"), rec.get("valid")
        if not isinstance(ingrs, list) or not isinstance(valid, list):
            problems(path, i, rid, "missing field 'ingredients'" if not isinstance(ingrs, list)
                     else "missing field 'valid'")
            continue
        if len(ingrs) != len(valid):
            problems(path, i, rid, f"{len(ingrs)} ingredients but {len(valid)} 'valid' flags")
            continue
        if rid not in recipes:
            if rid not in dropped_ids:
                problems(path, i, rid, f"id not in {LAYER1}")
            continue
        if keep:
            out[rid] = [d["text"].strip() for d, ok in zip(ingrs, valid)
                        if ok and isinstance(d, dict) and isinstance(d.get("text"), str)
                        and d["text"].strip()]
    return out


def read_split_lists(split_dir: str | os.PathLike) -> dict[str, str]:
    """H-T split lists -> ``{recipe id: split}``; an id in two lists (or twice) is an error."""
    split_dir = Path(split_dir)
    out: dict[str, str] = {}
    where: dict[str, str] = {}
    for split in SPLITS:
        f = split_dir / f"{split}.txt"
        if not f.is_file():
            raise Recipe1MError(f"{f}: split list not found (split_dir needs train.txt, val.txt, "
                                "test.txt)")
        try:
            lines = f.read_bytes().decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise Recipe1MError(f"{f}: not valid UTF-8 at byte offset {exc.start}") from None
        for n, line in enumerate(lines, 1):
            rid = line.strip()
            if not rid:
                continue
            if rid in out:
                raise Recipe1MError(f"{f}: line {n} (id {rid!r}): duplicate id, already listed at "
                                    f"{where[rid]}")
            out[rid], where[rid] = split, f"{f.name}:{n}"
    return out


# ---------------------------------------------------------------------------------- image files
def image_path(root: str | os.PathLike, partition: str, image_id: str) -> Path:
    """``<root>/<partition>/<c0>/<c1>/<c2>/<c3>/<image id>`` (Recipe1M's layout)."""
    return Path(root, partition, *image_id[:4], image_id)


def find_images(root: Path, recipes: Iterable[Recipe], progress: bool = False) -> None:
    """Fill ``Recipe.found`` with the listed images present on disk (one listdir per leaf folder)."""
    recipes = [r for r in recipes if r.images]
    leaves: dict[str, frozenset[str]] = {}
    root_s = os.fspath(root)
    for r in _progress(recipes, progress, "images on disk"):
        found = []
        for name in r.images:
            leaf = os.path.join(root_s, r.partition, *name[:4])
            names = leaves.get(leaf)
            if names is None:
                try:
                    names = frozenset(os.listdir(leaf))
                except (FileNotFoundError, NotADirectoryError):
                    names = frozenset()
                leaves[leaf] = names
            if name in names:
                found.append(os.path.join(leaf, name))
        r.found = found


# ----------------------------------------------------------------------------------- the root
def load_root(root: str | os.PathLike, split_dir: str | os.PathLike | None = None, *,
              check_images: bool = True, det_ingrs: bool = False, on_bad_record: str = "error",
              progress: bool = False) -> Recipe1M:
    """Read and validate a Recipe1M root.

    ``det_ingrs=True`` replaces each recipe's ingredient lines by the valid detected ingredient names
    of ``det_ingrs.json`` (the file is required then); the default keeps layer1's raw lines (H-T).
    ``on_bad_record='skip'`` drops bad records with a count in ``Recipe1M.dropped`` instead of
    raising (file-level defects always raise).
    """
    root = Path(root)
    l1, l2, det = root / LAYER1, root / LAYER2, root / DET_INGRS
    for f in (l1, l2):
        if not f.is_file():
            raise Recipe1MError(f"{f}: file not found (is {root} a Recipe1M root?)")
    problems = _Problems(on_bad_record)
    recipes = read_layer1(l1, progress=progress, problems=problems)
    by_id = {r.id: r for r in recipes}
    dropped_ids = problems.dropped_ids
    read_layer2(l2, by_id, dropped_ids, progress=progress, problems=problems)
    if det_ingrs or det.is_file():
        if not det.is_file():
            raise Recipe1MError(f"{det}: file not found (det_ingrs=True needs it)")
        dets = read_det_ingrs(det, by_id, dropped_ids, progress=progress, problems=problems,
                              keep=det_ingrs)
        if det_ingrs:
            for r in recipes:
                if r.id in dets and dets[r.id]:
                    r.ingredients = dets[r.id]
    if split_dir is not None:
        lists = read_split_lists(split_dir)
        unknown = [rid for rid in lists if rid not in by_id and rid not in dropped_ids]
        if unknown:
            raise Recipe1MError(f"{Path(split_dir) / (lists[unknown[0]] + '.txt')}: id "
                                f"{unknown[0]!r} is not in {LAYER1} ({len(unknown)} such ids)")
        for r in recipes:
            s = lists.get(r.id)
            r.split, r.listed = (s, True) if s is not None else (r.partition, False)
    if check_images:
        find_images(root, (r for r in recipes if r.listed), progress)
    return Recipe1M(root, recipes, dict(problems.counts), check_images)


def check_root(root: str | os.PathLike, split_dir: str | os.PathLike | None = None,
               progress: bool = False, on_bad_record: str = "error") -> dict:
    """Validate a root and count per split: ``{split: {recipes, images_listed, images_found,
    images_missing, pairs, text_only}}`` (images are checked for presence, not decoded)."""
    return load_root(root, split_dir, progress=progress, on_bad_record=on_bad_record).report()


def format_check(report: dict) -> str:
    """A plain-text table of a :func:`check_root` report, with a total row."""
    cols = ("recipes", "images_listed", "images_found", "images_missing", "pairs", "text_only")
    rows = [(s, *(report[s][c] for c in cols)) for s in report]
    rows.append(("total", *(sum(report[s][c] for s in report) for c in cols)))
    head = ("split", *cols)
    width = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt: Callable[[tuple], str] = lambda r: "  ".join(
        str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, width)))
    lines = [fmt(head), "  ".join("-" * w for w in width)] + [fmt(r) for r in rows]
    return "\n".join(lines)
