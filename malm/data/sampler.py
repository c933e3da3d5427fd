"""T-Food's class-balanced batch sampler (``data.batch_sampler: triplet_classif``).

What T-Food does (``recipe1m/datasets/batch_sampler.py``, ``BatchSamplerTripletClassif``): dataset
indices are grouped by semantic class, class 0 being background. Every batch is a *classif* part of
``round((1 - pc_noclassif) * batch_size)`` items followed by a *background* part of the rest. The
classif part is built from chunks of ``nb_indices_same_class`` (2) indices of one class: each class's
indices are shuffled and cut into chunks (an incomplete last chunk is dropped), and for each chunk
slot of a batch a class is drawn by a multinomial over the number of chunks each class still has
left, without replacement. The background part is a shuffled list of the background indices cut into
chunks of the background size. An epoch lasts min(#full classif batches, #full background batches).
The point: every non-background item of a batch has a same-class partner, so the semantic triplet
terms (SIRR/SRII) always have positives, which a uniformly shuffled batch rarely gives.

What this does: the same distribution, drawn in one vectorised pass. Drawing a class with probability
proportional to its remaining chunks and taking its next (randomly ordered) chunk picks every
remaining chunk with equal probability, so the chunk sequence is simply a uniform permutation of all
chunks; that is what is drawn here (``rng.permutation`` over the chunk rows).

Determinism and DDP contract: the plan for an epoch is a pure function of ``(seed, epoch)``, drawn
with a private ``numpy.random.Generator`` seeded from both (never the global RNG), so every rank
computes the same *global* plan and iterating twice after the same :meth:`set_epoch` gives identical
batches (exact resume). A global step holds ``world_size`` per-rank batches; rank ``r`` takes its own
slice of the step's classif chunks and of its background chunk, so each rank's batch is itself
balanced (``classif_size`` items in whole same-class chunks, then ``background_size`` background
items), no index appears twice in an epoch across all ranks, and ``len()`` is the same everywhere.
Call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

__all__ = ["TripletClassifBatchSampler"]

_SWITCH = "or use data.batch_sampler=random"


class TripletClassifBatchSampler:
    """Yields this rank's batches (lists of dataset indices) for ``DataLoader(batch_sampler=...)``.

    Args:
        classes: [N] integer class id of each dataset index (0 = background).
        batch_size: per-rank batch size (the trainer passes ``train.batch_size // world_size``).
        background_frac: fraction of each batch from background (T-Food ``pc_noclassif``), in [0, 1).
            0 means no background part: the whole batch is same-class chunks.
        same_class: indices drawn together from one class (T-Food ``nb_indices_same_class``).
        seed, rank, world_size: the plan depends on (seed, epoch) only; ``rank`` picks the slice.
    """

    def __init__(self, classes: np.ndarray, batch_size: int, *, background_frac: float = 0.5,
                 same_class: int = 2, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        classes = np.asarray(classes)
        if classes.ndim != 1 or (classes.size and not np.issubdtype(classes.dtype, np.integer)):
            raise ValueError(f"triplet_classif: classes must be a 1-D integer array, got shape "
                             f"{classes.shape} dtype {classes.dtype}")
        if classes.size and classes.min() < 0:
            raise ValueError("triplet_classif: class ids must be >= 0 (0 = background)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"triplet_classif: need 0 <= rank < world_size, got rank={rank}, "
                             f"world_size={world_size}")
        per_rank = " (per rank: train.batch_size // world size)" if world_size > 1 else ""
        if batch_size < 1:
            raise ValueError(f"triplet_classif: batch size{per_rank} must be >= 1, got {batch_size}; "
                             f"raise train.batch_size")
        if same_class < 1:
            raise ValueError(f"triplet_classif: data.sampler_same_class must be >= 1, got {same_class}")
        if not 0.0 <= background_frac < 1.0:
            raise ValueError(f"triplet_classif: data.sampler_background_frac must be in [0, 1), got "
                             f"{background_frac}")
        if seed < 0:
            raise ValueError(f"triplet_classif: seed must be >= 0, got {seed}; change train.seed")

        # T-Food's split of the batch (Python's round, as in T-Food).
        self.classif_size = int(round((1.0 - background_frac) * batch_size))
        self.background_size = batch_size - self.classif_size
        if self.classif_size < same_class or self.classif_size % same_class:
            raise ValueError(
                f"triplet_classif: the classif part of each batch, round((1 - "
                f"data.sampler_background_frac) * batch size{per_rank}) = round((1 - {background_frac})"
                f" * {batch_size}) = {self.classif_size}, must be a positive multiple of "
                f"data.sampler_same_class={same_class}; change data.sampler_same_class, "
                f"data.sampler_background_frac or train.batch_size")

        self.batch_size = batch_size
        self.background_frac = float(background_frac)
        self.same_class = same_class
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0
        self.chunks_per_batch = self.classif_size // same_class  # per rank

        # Non-background indices sorted by class, with each class's chunk count.
        idx = np.arange(classes.size, dtype=np.int64)
        fg = classes != 0
        self._background = idx[~fg]
        order = np.argsort(classes[fg], kind="stable")
        self._fg_idx = idx[fg][order]
        self._fg_cls = classes[fg][order]
        _, self._class_counts = np.unique(self._fg_cls, return_counts=True)
        self.num_chunks = int((self._class_counts // same_class).sum())

        n_classif = self.num_chunks // (world_size * self.chunks_per_batch)
        if self.background_size:
            n_background = self._background.size // (world_size * self.background_size)
            self._len = min(n_classif, n_background)
        else:
            n_background = None
            self._len = n_classif
        if self._len == 0:
            lack = []
            if n_classif == 0:
                lack.append(
                    f"{world_size * self.classif_size} class items in whole chunks of "
                    f"data.sampler_same_class={same_class} (have {self._fg_idx.size} non-background "
                    f"items in {self._class_counts.size} classes, giving {self.num_chunks} chunks = "
                    f"{self.num_chunks * same_class} usable items)")
            if n_background == 0:
                lack.append(f"{world_size * self.background_size} background (class 0) items "
                            f"(have {self._background.size})")
            fix = ("" if len(lack) == 2 else "lower data.sampler_background_frac, "
                   if n_background == 0 else "raise data.sampler_background_frac, ")
            raise ValueError(
                f"triplet_classif: too few items for one batch of {world_size} x {batch_size}: need "
                f"{' and '.join(lack)}; {fix}lower train.batch_size {_SWITCH}")

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._len

    def plan(self) -> np.ndarray:
        """The epoch's global plan: [len, world_size, batch_size] dataset indices (rank axis 1)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        n, w, s = self._len, self.world_size, self.same_class

        # Shuffle within each class (random keys, stable sort by class), drop incomplete chunks.
        within = np.lexsort((rng.random(self._fg_idx.size), self._fg_cls))
        fg_idx = self._fg_idx[within]
        starts = np.repeat(np.cumsum(self._class_counts) - self._class_counts, self._class_counts)
        usable = np.repeat(self._class_counts - self._class_counts % s, self._class_counts)
        chunks = fg_idx[np.arange(fg_idx.size) - starts < usable].reshape(-1, s)
        # Uniform chunk order == T-Food's multinomial over remaining chunks per class.
        chunks = chunks[rng.permutation(len(chunks))[: n * w * self.chunks_per_batch]]
        plan = chunks.reshape(n, w, self.classif_size)

        if self.background_size:
            bg = rng.permutation(self._background)[: n * w * self.background_size]
            plan = np.concatenate([plan, bg.reshape(n, w, self.background_size)], axis=2)
        return plan

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.plan()[:, self.rank]:
            yield batch.tolist()
