"""Every seed the suite derives from another, in one place (pure Python: any layer may import it).

* :func:`mix_seed` -- the general mixer: a 63-bit seed from a tuple of integers (a splitmix64
  chain), so distinct tuples give unrelated streams. Used for everything seeded per item or per
  step: a sample's crop (``(seed, epoch, index)``), a batch's masks, a training step's hard
  negatives (``(seed, epoch, step)``).
* :func:`epoch_seed` -- the seed of the global RNGs (torch, numpy, ``random``) at the start of
  epoch ``e`` of rank ``r`` (data order, dropout), so a resumed epoch replays exactly. It is the
  older linear formula, kept as it is: the global RNG state it gives is part of every trained
  number, and replacing it by :func:`mix_seed` would change them all.
"""

from __future__ import annotations

_M64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 chain): distinct tuples give unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _M64)) * 0xBF58476D1CE4E5B9 & _M64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _M64
        h ^= h >> 31
    return h >> 1


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The global RNGs' seed for epoch ``epoch`` of rank ``rank`` of a run seeded ``seed``."""
    return (seed * 1_000_003 + epoch * 9_973 + rank * 101) % (2**31)
