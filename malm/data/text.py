"""Recipe text: a word-level tokenizer (HuggingFace ``tokenizers``) and semantic classes.

Tokenizer: NFKC + lowercase normaliser, BERT pre-tokenizer (splits on whitespace and punctuation),
WordLevel model whose vocabulary is every word seen at least ``min_count`` times in the paired
training recipes (title, every ingredient and instruction line, uncapped: H-T ``preprocessing.py``).
Ids: ``[PAD]=0, [UNK]=1, [MASK]=2, [CLS]=3``, then words by decreasing count.

Semantic classes (T-Food's semantic triplet terms; class 0 = background, ignored there):

* from a class file (``DataConfig.class_file``): JSON ``{recipe_id: name}``, CSV ``id,class`` (a
  header row is allowed) or im2recipe's ``classes1M.pkl`` (two pickles: ``{id: int}``, ``[name]``),
  read with a restricted unpickler that only builds plain containers, strings and numbers. Names are ranked by how many paired training recipes carry them
  (ties by name); ``classes1M.pkl`` keeps its own integer ids.
* derived from titles (:func:`derive_classes`, :func:`assign_classes`): the class vocabulary is the
  ``num_classes`` most frequent title words of the paired training recipes (document frequency,
  ties by word; alphabetic words of >= 3 letters that are not stop words or generic recipe
  adjectives; at least ``min_titles`` titles). A recipe's class is the LAST class word of the title's
  head -- the words before the first of "with/in/on/over/for/from/served/topped/using/without" --
  since English dish names end in the head noun ("Spicy Tomato Soup with Basil" -> soup); if the
  head has none, the last class word of the whole title; else 0. im2recipe's classes1M.pkl (1,047
  classes, H-T/T-Food) was built from frequent title n-grams in the same spirit.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[MASK]", "[CLS]")
PAD_ID, UNK_ID, MASK_ID, CLS_ID = 0, 1, 2, 3
BACKGROUND = "background"
DEFAULT_NUM_CLASSES = 1047   # size of im2recipe's classes1M.pkl (H-T / T-Food)
DEFAULT_MIN_TITLES = 2       # a class needs positives: at least this many titles
_ENCODE_CHUNK = 65536        # lines per encode_batch call (bounds the Encoding objects alive)

# Words that do not name a dish: function words and generic recipe adjectives.
STOP_WORDS = frozenset("""
a an the and or of with without in on over for from to into by at as n' n is it its my our your
their his her mom mom's moms grandma grandma's grandmas aunt aunties nana mama papa
recipe recipes easy easiest best quick quicker simple simply healthy healthier homemade home made
style classic classics delicious perfect perfectly super ever favorite favourite famous special
ultimate amazing awesome yummy tasty good great better old fashioned fashion new world version
way i ii iii one two three four five six minute minutes hour hours day days night nights
low fat free non lite light skinny no sugar gluten dairy less reduced calorie calories
copycat inspired like kind own fabulous fantastic wonderful incredible really very more
""".split())
_HEAD_CUTS = frozenset("with in on over for from served topped using without".split())


# ---------------------------------------------------------------------------------- tokenizer
def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])


def new_tokenizer() -> Tokenizer:
    """An untrained WordLevel tokenizer with the normaliser and pre-tokenizer described above."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def _normalised(texts: Iterable[str], norm: normalizers.Normalizer) -> Iterator[str]:
    """The tokenizer's normaliser applied in bulk: for ASCII text NFKC is the identity and
    ``str.lower`` equals it, so only the (rare) non-ASCII lines go through ``normalize_str``.
    Feeding these to a copy of the tokenizer without normaliser gives the same ids about twice
    as fast (the normaliser's offset tracking is half of the tokenizer's time)."""
    for t in texts:
        yield t.lower() if t.isascii() else norm.normalize_str(t)


def _without_normalizer(tok: Tokenizer) -> Tokenizer:
    bare = Tokenizer.from_str(tok.to_str())
    bare.normalizer = None
    return bare


def recipe_texts(recipes: Iterable) -> Iterator[str]:
    """Title, every ingredient line and every instruction line of each recipe (vocabulary input)."""
    for r in recipes:
        yield r.title
        yield from r.ingredients
        yield from r.instructions


def build_tokenizer(texts: Iterable[str], min_count: int) -> Tokenizer:
    """Train the WordLevel vocabulary: words with count >= ``min_count``, by decreasing count."""
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    tok = new_tokenizer()
    norm, tok.normalizer = tok.normalizer, None
    trainer = trainers.WordLevelTrainer(vocab_size=2**31 - 1, min_frequency=min_count,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(_normalised(texts, norm), trainer=trainer)
    tok.normalizer = norm
    vocab = tok.get_vocab()
    for i, s in enumerate(SPECIAL_TOKENS):  # the ids the rest of the suite relies on
        assert vocab[s] == i, (s, vocab[s])
    return tok


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> None:
    tok.no_padding()
    tok.no_truncation()
    tok.save(os.fspath(path))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    return Tokenizer.from_file(os.fspath(path))


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.int32)


def encode_lines(tok: Tokenizer, lines: Sequence[str], max_tokens: int,
                 dtype: np.dtype | None = None) -> np.ndarray:
    """``[L, max_tokens]`` token ids, truncated and right-padded with ``PAD_ID`` (``encode_batch``).

    Each distinct line is encoded once (Recipe1M repeats many ingredient lines)."""
    dtype = dtype or token_dtype(tok.get_vocab_size())
    index: dict[str, int] = {}
    rows = np.fromiter((index.setdefault(line, len(index)) for line in lines), dtype=np.int64,
                       count=len(lines))
    uniq = list(index)
    del index
    enc_u = np.zeros((len(uniq), max_tokens), dtype=dtype)
    norm = tok.normalizer
    bare = _without_normalizer(tok)
    bare.enable_truncation(max_tokens)
    bare.enable_padding(length=max_tokens, pad_id=PAD_ID, pad_token="[PAD]")
    for s in range(0, len(uniq), _ENCODE_CHUNK):
        chunk = uniq[s:s + _ENCODE_CHUNK]
        chunk = [_head(line, 2 * max_tokens) for line in
                 (_normalised(chunk, norm) if norm is not None else chunk)]
        enc = bare.encode_batch(chunk, add_special_tokens=False)
        enc_u[s:s + len(chunk)] = np.asarray([e.ids for e in enc], dtype=dtype).reshape(-1, max_tokens)
    return enc_u[rows]


def _head(line: str, n_words: int) -> str:
    """The first ``n_words`` whitespace-separated words: every such word gives >= 1 token, so the
    first ``n_words`` tokens are unchanged while the tokenizer skips the (unused) rest of the line."""
    parts = line.split(None, n_words)
    return line if len(parts) <= n_words else " ".join(parts[:n_words])


def encode_field(tok: Tokenizer, fields: Sequence[Sequence[str]], max_lines: int, max_tokens: int,
                 dtype: np.dtype | None = None) -> np.ndarray:
    """Lists of lines per recipe -> ``[N, max_lines, max_tokens]`` (first ``max_lines`` lines)."""
    dtype = dtype or token_dtype(tok.get_vocab_size())
    counts = np.fromiter((min(len(f), max_lines) for f in fields), dtype=np.int64, count=len(fields))
    flat = [line for f in fields for line in f[:max_lines]]
    enc = encode_lines(tok, flat, max_tokens, dtype)
    out = np.zeros((len(fields), max_lines, max_tokens), dtype=dtype)
    rows = np.repeat(np.arange(len(fields)), counts)
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, cols] = enc
    return out


def encode_recipes(tok: Tokenizer, recipes: Sequence, max_ingrs: int, max_instrs: int,
                   max_tokens: int) -> dict[str, np.ndarray]:
    """``title [N, T]``, ``ingrs [N, I, T]``, ``instrs [N, J, T]`` token arrays (H-T caps)."""
    dtype = token_dtype(tok.get_vocab_size())
    return {
        "title": encode_lines(tok, [r.title for r in recipes], max_tokens, dtype),
        "ingrs": encode_field(tok, [r.ingredients for r in recipes], max_ingrs, max_tokens, dtype),
        "instrs": encode_field(tok, [r.instructions for r in recipes], max_instrs, max_tokens, dtype),
    }


# ------------------------------------------------------------------------------------ classes
def title_words(tok: Tokenizer, title: str) -> list[str]:
    """Normalised words of a title (the tokenizer's normaliser + pre-tokenizer; no vocabulary)."""
    return [w for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(title))]


def _candidates(words: list[str]) -> list[str]:
    return [w for w in words if len(w) >= 3 and w.isalpha() and w not in STOP_WORDS]


def derive_classes(tok: Tokenizer, train_titles: Iterable[str],
                   num_classes: int = DEFAULT_NUM_CLASSES,
                   min_titles: int = DEFAULT_MIN_TITLES) -> list[str]:
    """Class names ``[background, c1, ..., cK]`` (K <= num_classes) from training titles."""
    df: Counter = Counter()
    for t in train_titles:
        df.update(set(_candidates(title_words(tok, t))))
    ranked = sorted((w for w, c in df.items() if c >= min_titles), key=lambda w: (-df[w], w))
    return [BACKGROUND] + ranked[:num_classes]


def class_of_title(words: list[str], class_ids: dict[str, int]) -> int:
    """The title rule: last class word of the head (before a cut word), else of the title, else 0."""
    head = words
    for i, w in enumerate(words):
        if w in _HEAD_CUTS and i > 0:
            head = words[:i]
            break
    for part in (head, words):
        for w in reversed(part):
            c = class_ids.get(w)
            if c:
                return c
    return 0


def assign_classes(tok: Tokenizer, titles: Iterable[str], class_names: Sequence[str]) -> np.ndarray:
    """``[N]`` int64 class ids of titles under :func:`class_of_title`."""
    ids = {n: i for i, n in enumerate(class_names) if i > 0}
    return np.asarray([class_of_title(title_words(tok, t), ids) for t in titles], dtype=np.int64)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any global (a class or function reference, the way a pickle runs
    code) other than a few harmless containers is refused."""

    ALLOWED = {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "int",
                                         "float", "bytes")} | \
              {("__builtin__", n) for n in ("set", "frozenset", "unicode", "long")} | \
              {("collections", "OrderedDict"), ("collections", "defaultdict")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a class file holds plain data")


def read_class_file(path: str | os.PathLike) -> tuple[dict[str, str | int], list[str] | None]:
    """``({recipe id: class name}, None)`` for JSON/CSV, ``({id: int}, names)`` for classes1M.pkl."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: class file not found")
    if path.suffix == ".pkl":
        try:
            with open(path, "rb") as fh:
                id2int = _PlainUnpickler(fh, encoding="latin1").load()  # latin1: Python 2 pickles
                names = list(_PlainUnpickler(fh, encoding="latin1").load())
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a classes1M.pkl of two plain pickles ({exc})") from None
        if not isinstance(id2int, dict):
            raise ValueError(f"{path}: expected classes1M.pkl's {{id: class}} dict first")
        return {str(k): int(v) for k, v in id2int.items()}, [str(n) for n in names]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 at byte offset {exc.start}") from None
    if path.suffix == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                             f"{exc.msg}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{recipe_id: class name}}")
        return {str(k): str(v) for k, v in data.items()}, None
    out: dict[str, str | int] = {}
    for n, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not row[0].strip():
            continue
        if len(row) < 2:
            raise ValueError(f"{path}: line {n}: expected 'id,class', got {row!r}")
        if n == 1 and row[0].strip().lower() in ("id", "recipe_id"):
            continue
        out[row[0].strip()] = row[1].strip()
    return out, None


def classes_from_file(path: str | os.PathLike, train_ids: Iterable[str]
                      ) -> tuple[list[str], dict[str, int]]:
    """Class names (index 0 = background) and ``{recipe id: class id}`` from a class file."""
    mapping, names = read_class_file(path)
    if names is not None:  # classes1M.pkl: keep its integer ids
        return names, {k: int(v) for k, v in mapping.items()}
    bg = {"", BACKGROUND, "none"}
    counts = Counter(mapping[i] for i in train_ids if i in mapping and mapping[i] not in bg)
    others = sorted({v for v in mapping.values() if v not in bg and v not in counts})
    names = [BACKGROUND] + sorted(counts, key=lambda n: (-counts[n], n)) + others
    index = {n: i for i, n in enumerate(names)}
    return names, {k: (0 if v in bg else index[v]) for k, v in mapping.items()}
