"""Paired bootstrap statistics over seeds x test bags (vectorised numpy, no other dependency).

One metric of one run set is an array ``[seeds, bags]``: row ``s`` is training seed ``s``, column
``t`` is test bag ``t`` of ``malm.eval.protocol.evaluate`` (its ``per_bag`` lists). A variant and its
reference are *paired* when row ``s`` of both is the same training seed and column ``t`` the same
test bag (the same test pairs: ``tfood`` bags are fixed slices of the test split, ``ht`` bags are
drawn from a fixed ``random.Random(1234)`` stream, so equal ``n_bags`` means equal bags).

Resampling scheme (two-level, "hierarchical" bootstrap). One bootstrap replicate draws ``S`` seeds
with replacement, then, for each drawn seed independently, ``B`` bags with replacement, and takes the
mean of the drawn cells. For a comparison the draw is applied to the differences ``a - b`` (the same
seeds and bags for both, which is what makes it paired). The confidence interval is the percentile
interval of the replicates.

This is not exactly rliable's ``StratifiedBootstrap`` (google-research/rliable): that one keeps its
strata (tasks) fixed and resamples runs independently within each task. Here the seeds are the
runs and the bags are nested inside them, so both levels are resampled: the seed level carries the
training randomness, the bag level the test-sample randomness. Degenerate shapes:

* one seed (``S = 1``): only bags are resampled (the seed draw can only pick that seed); the
  interval then reflects test-bag variation only, not training variation;
* one bag (``B = 1``, e.g. a 10k bag on a 10k test split): only seeds are resampled;
* one seed and one bag: there is nothing to resample; the interval and ``p_better`` are NaN.

With few seeds (3 is typical) the bootstrap is coarse (3 seeds have 10 distinct resamples) and the
percentile interval tends to be too narrow, by roughly a factor ``sqrt((S - 1) / S)`` in width for the
seed component. Read the intervals as a minimum of the uncertainty, not as exact 95 % coverage.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

N_BOOT = 10_000
CI = 0.95
_CHUNK_ELEMS = 1 << 22  # gathered values per block (32 MB of float64)


class Interval(NamedTuple):
    """Bootstrap summary of a mean (``bootstrap_mean``) or a mean difference (``paired_bootstrap``).

    Every field is a float (NaN where undefined) or, for inputs with trailing dimensions, an array
    of that trailing shape."""

    mean: float | np.ndarray
    ci_low: float | np.ndarray
    ci_high: float | np.ndarray
    p_better: float | np.ndarray
    n_seeds: int
    n_bags: int


def resampling(n_seeds: int, n_bags: int) -> str:
    """What a bootstrap over an ``[n_seeds, n_bags]`` array resamples, in words."""
    if n_seeds > 1 and n_bags > 1:
        return "seeds x bags"
    if n_seeds > 1:
        return "seeds (1 bag)"
    if n_bags > 1:
        return "bags (1 seed)"
    return "none (1 seed, 1 bag)"


def bootstrap_means(x: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Replicate means of ``x [S, B, *rest]`` under the two-level resampling: ``[n_boot, *rest]``.

    Replicate ``r`` draws seeds ``s_1..s_S`` uniformly with replacement and, for each ``i``, bags
    ``t_i1..t_iB`` uniformly with replacement; its value is ``mean_{i,j} x[s_i, t_ij]``. Trailing
    dimensions (e.g. several metrics) share the same draws.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"need an array [seeds, bags, ...] with at least one of each, got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("values contain NaN/inf")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    s, b = x.shape[:2]
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot,) + x.shape[2:])
    cells = s * b * max(1, int(np.prod(x.shape[2:])))
    step = max(1, _CHUNK_ELEMS // cells)  # bounds the gathered [step, s, b, *rest] block
    for start in range(0, n_boot, step):
        n = min(step, n_boot - start)
        seeds = rng.integers(0, s, size=(n, s, 1))
        bags = rng.integers(0, b, size=(n, s, b))
        out[start:start + n] = x[seeds, bags].mean(axis=(1, 2))  # [n, s, b, *rest] -> [n, *rest]
    return out


def _summary(x: np.ndarray, higher_is_better, n_boot: int, seed: int, ci: float) -> Interval:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    x = np.asarray(x, dtype=np.float64)
    boot = bootstrap_means(x, n_boot, seed)
    mean = x.mean(axis=(0, 1))
    s, b = x.shape[:2]
    if s == 1 and b == 1:  # nothing to resample
        nan = np.full_like(mean, np.nan)
        lo = hi = p = nan
    else:
        lo, hi = np.quantile(boot, [(1 - ci) / 2, 1 - (1 - ci) / 2], axis=0)
        hib = np.broadcast_to(np.asarray(higher_is_better, dtype=bool), mean.shape)
        better = np.where(hib, boot > 0, boot < 0)
        p = better.mean(axis=0) + 0.5 * (boot == 0).mean(axis=0)

    def out(v):
        return float(v) if np.ndim(v) == 0 else np.asarray(v)

    return Interval(out(mean), out(lo), out(hi), out(p), int(s), int(b))


def paired_bootstrap(a, b, n_boot: int = N_BOOT, seed: int = 0, ci: float = CI,
                     higher_is_better: bool | np.ndarray = True) -> Interval:
    """Mean difference ``a - b`` of a variant ``a`` and its reference ``b``, paired by seed and bag.

    a, b: ``[seeds, bags]`` (or ``[seeds, bags, *rest]``, the trailing dimensions bootstrapped with
    the same draws), row ``s`` / column ``t`` the same training seed / test bag in both.
    higher_is_better: True for R@k, False for medR (broadcast over the trailing dimensions).

    Returns ``Interval(mean, ci_low, ci_high, p_better, n_seeds, n_bags)``:

    * ``mean``: ``mean(a - b)`` over all seeds and bags (exact, not a bootstrap estimate);
    * ``ci_low``, ``ci_high``: the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` quantiles of the
      bootstrap replicates of that mean (two-level resampling, module docstring);
    * ``p_better``: the share of bootstrap replicates whose mean difference favours the variant,
      ``(#{d* > 0} + #{d* = 0} / 2) / n_boot`` for higher-is-better metrics (``d* < 0`` for medR).
      It is a bootstrap probability that the variant's *mean* is better than the reference's
      (0.5 = no evidence either way; near 1 = the variant is better in almost every resample).
      It is NOT rliable's "probability of improvement" ``P(X > Y)``, which compares single runs
      pairwise (a Mann-Whitney statistic averaged over tasks) and needs no pairing.

    One seed: bags only are resampled; one bag: seeds only; one of each: NaN interval and p_better.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays must have the same shape [seeds, bags], got {a.shape} "
                         f"and {b.shape}")
    return _summary(a - b, higher_is_better, n_boot, seed, ci)


def bootstrap_mean(x, n_boot: int = N_BOOT, seed: int = 0, ci: float = CI) -> Interval:
    """Mean of ``x [seeds, bags, ...]`` with its percentile interval (same resampling as
    ``paired_bootstrap``); ``p_better`` is the share of replicates above 0 (rarely useful)."""
    return _summary(x, True, n_boot, seed, ci)
