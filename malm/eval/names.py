"""The names every retrieval result carries, defined once: retrieval directions, metric names,
bag protocols and the label of a bag size. Pure (no torch): the report reads them too."""

from __future__ import annotations

DIRECTIONS: tuple[str, str] = ("img2rec", "rec2img")
RECALL_KS: tuple[int, ...] = (1, 5, 10)
METRIC_NAMES: tuple[str, ...] = ("medR",) + tuple(f"R@{k}" for k in RECALL_KS)
LOWER_IS_BETTER = frozenset({"medR"})
PROTOCOLS: tuple[str, str] = ("tfood", "ht")


def bag_label(bag_size: int) -> str:
    """'1k', '10k' for multiples of 1000, else the number ('100'): the one bag label of the suite."""
    return f"{bag_size // 1000}k" if bag_size % 1000 == 0 else str(bag_size)
