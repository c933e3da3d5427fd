"""The names every retrieval result carries, defined once: retrieval directions, metric names,
bag protocols, their re-ranked readings (``tfood+rerank10``) and the label of a bag size. Pure (no
torch): the report reads them too."""

from __future__ import annotations

DIRECTIONS: tuple[str, str] = ("img2rec", "rec2img")
RECALL_KS: tuple[int, ...] = (1, 5, 10)
METRIC_NAMES: tuple[str, ...] = ("medR",) + tuple(f"R@{k}" for k in RECALL_KS)
LOWER_IS_BETTER = frozenset({"medR"})
PROTOCOLS: tuple[str, str] = ("tfood", "ht")


def bag_label(bag_size: int) -> str:
    """'1k', '10k' for multiples of 1000, else the number ('100'): the one bag label of the suite."""
    return f"{bag_size // 1000}k" if bag_size % 1000 == 0 else str(bag_size)


# ------------------------------------------------------------------ re-ranked readings
RERANK_TAG = "+rerank"


def rerank_protocol(base: str, k: int) -> str:
    """The protocol name of ``base``'s bags re-ranked by the matching module over each query's top
    ``k``: ``rerank_protocol("tfood", 10) == "tfood+rerank10"`` (T-Food's ``k_test`` = 10).

    The dual-encoder reading keeps the plain name (``tfood``); both are written, each under its own
    name: the MALM paper does not say which reading its Table 1 is (README, "Which reading are the
    paper's numbers?")."""
    if base not in PROTOCOLS:
        raise ValueError(f"unknown base protocol {base!r} (known: {', '.join(PROTOCOLS)})")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"a re-ranked protocol needs k >= 1, got {k!r}")
    return f"{base}{RERANK_TAG}{k}"


def parse_protocol(name: str) -> tuple[str, int]:
    """``"tfood"`` -> ``("tfood", 0)`` (the dual encoder), ``"tfood+rerank10"`` -> ``("tfood", 10)``.

    Raises ValueError for any other name, so a typo never reads as a protocol of its own."""
    base, tag, k = str(name).partition(RERANK_TAG)
    if base not in PROTOCOLS or (tag and not (k.isdigit() and k == str(int(k)) and int(k) >= 1)):
        raise ValueError(f"unknown protocol {name!r} (known: {', '.join(PROTOCOLS)}, or one of them "
                         f"+ '{RERANK_TAG}<k>', e.g. {rerank_protocol(PROTOCOLS[0], 10)!r})")
    return base, int(k) if tag else 0


def is_rerank(name: str) -> bool:
    """True for a re-ranked reading (``tfood+rerank10``), False for a dual-encoder one (``tfood``)."""
    return parse_protocol(name)[1] > 0


def protocol_reading(name: str) -> str:
    """A short description of a protocol's reading, for notes and captions:
    ``tfood`` -> 'dual encoder (cosine)', ``tfood+rerank10`` -> 'top 10 re-ranked by the matching
    module'."""
    k = parse_protocol(name)[1]
    return f"top {k} re-ranked by the matching module" if k else "dual encoder (cosine)"
