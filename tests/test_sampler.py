"""T-Food's class-balanced batch sampler (malm.data.sampler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from malm.data.sampler import TripletClassifBatchSampler
from malm.losses.triplet import semantic_positive_fraction


def make_classes(seed: int = 0) -> np.ndarray:
    """300 items: 120 background, classes 1..20 with 1..16 items (odd sizes leave a partial chunk)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 17, size=20)
    cls = np.concatenate([np.zeros(300 - sizes.sum(), np.int64), np.repeat(np.arange(1, 21), sizes)])
    return rng.permutation(cls)


CLASSES = make_classes()
SETTINGS = [(8, 0.5, 2), (12, 0.25, 3), (6, 0.0, 2), (10, 0.4, 2), (7, 0.5, 4)]


def check_batch(batch: list[int], cls: np.ndarray, batch_size: int, classif: int, same: int) -> None:
    assert len(batch) == batch_size
    c = cls[batch]
    head, tail = c[:classif], c[classif:]
    assert (head != 0).all() and (tail == 0).all()
    chunks = head.reshape(-1, same)
    assert (chunks == chunks[:, :1]).all(), f"classif part not in whole same-class chunks: {head}"


def expected_len(cls: np.ndarray, batch_size: int, frac: float, same: int, world: int = 1) -> int:
    classif = round((1 - frac) * batch_size)
    _, counts = np.unique(cls[cls != 0], return_counts=True)
    n = (counts // same).sum() // (world * classif // same)
    if batch_size - classif:
        n = min(n, (cls == 0).sum() // (world * (batch_size - classif)))
    return int(n)


@pytest.mark.parametrize("batch_size,frac,same", SETTINGS)
def test_batches_are_balanced_without_repeats(batch_size: int, frac: float, same: int) -> None:
    s = TripletClassifBatchSampler(CLASSES, batch_size, background_frac=frac, same_class=same, seed=3)
    batches = list(s)
    assert len(batches) == len(s) == expected_len(CLASSES, batch_size, frac, same) > 0
    classif = round((1 - frac) * batch_size)
    assert s.classif_size == classif and s.background_size == batch_size - classif
    for b in batches:
        check_batch(b, CLASSES, batch_size, classif, same)
    flat = np.concatenate(batches)
    assert len(np.unique(flat)) == len(flat)
    if frac == 0:
        assert (CLASSES[flat] != 0).all()


def test_length_limited_by_background() -> None:
    cls = np.array([0] * 5 + [1] * 10 + [2] * 10)
    s = TripletClassifBatchSampler(cls, 4, background_frac=0.5)
    assert len(s) == 2 == len(list(s))  # 5 // 2 background batches < 20 // 2 classif batches
    # Incomplete chunks are dropped: a class of 3 gives one pair, a class of 1 none.
    cls = np.array([0] * 100 + [1] * 3 + [2] * 1 + [3] * 4)
    s = TripletClassifBatchSampler(cls, 4, background_frac=0.5)
    assert len(s) == 3
    used = np.concatenate(list(s))
    assert (cls[used] == 1).sum() == 2 and (cls[used] == 2).sum() == 0 and (cls[used] == 3).sum() == 4


def test_deterministic_per_seed_and_epoch() -> None:
    s = TripletClassifBatchSampler(CLASSES, 8, seed=5)
    s.set_epoch(2)
    first, again = list(s), list(s)
    assert first == again
    fresh = TripletClassifBatchSampler(CLASSES, 8, seed=5)
    fresh.set_epoch(2)
    assert list(fresh) == first  # exact resume from (seed, epoch) alone
    s.set_epoch(3)
    assert list(s) != first
    # Both parts are reshuffled each epoch, background included.
    assert [b[4:] for b in s] != [b[4:] for b in first]
    assert [b[:4] for b in s] != [b[:4] for b in first]
    other = TripletClassifBatchSampler(CLASSES, 8, seed=6)
    other.set_epoch(2)
    assert list(other) != first


def test_global_rng_untouched() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    ref = (torch.rand(1).item(), np.random.rand())
    torch.manual_seed(0)
    np.random.seed(0)
    list(TripletClassifBatchSampler(CLASSES, 8))
    assert (torch.rand(1).item(), np.random.rand()) == ref


@pytest.mark.parametrize("frac", [0.5, 0.0])
def test_two_rank_plan(frac: float) -> None:
    ranks = [TripletClassifBatchSampler(CLASSES, 8, background_frac=frac, seed=1, rank=r,
                                        world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(4)
    per_rank = [list(s) for s in ranks]
    assert len(ranks[0]) == len(ranks[1]) == len(per_rank[0]) == len(per_rank[1])
    assert len(ranks[0]) == expected_len(CLASSES, 8, frac, 2, world=2) > 0
    classif = round((1 - frac) * 8)
    for batches in per_rank:
        for b in batches:
            check_batch(b, CLASSES, 8, classif, 2)
    flat = np.concatenate(per_rank[0] + per_rank[1])
    assert len(np.unique(flat)) == len(flat)


def test_dataloader_integration() -> None:
    s = TripletClassifBatchSampler(CLASSES, 8, seed=2)
    loader = DataLoader(TensorDataset(torch.arange(len(CLASSES))), batch_sampler=s)
    assert [b[0].tolist() for b in loader] == list(s)


def test_class_draw_is_proportional_to_chunks() -> None:
    # Class 1 has 10 pairs, class 2 has 2, class 3 has 1: the first chunk of an epoch is drawn
    # proportionally to the chunks left (T-Food's multinomial), and within-class order is shuffled.
    cls = np.array([0] * 20 + [1] * 20 + [2] * 4 + [3] * 3)
    s = TripletClassifBatchSampler(cls, 4)
    firsts, class3 = [], set()
    for epoch in range(1300):
        s.set_epoch(epoch)
        batches = s.plan()[:, 0]
        firsts.append(cls[batches[0, 0]])
        class3.update(i for i in batches.ravel() if cls[i] == 3)
    freq = np.bincount(firsts, minlength=4)[1:] / len(firsts)
    np.testing.assert_allclose(freq, [10 / 13, 2 / 13, 1 / 13], atol=0.04)
    assert class3 == set(np.flatnonzero(cls == 3))


@pytest.mark.parametrize("kwargs,key", [
    (dict(batch_size=6, background_frac=0.5, same_class=2), "data.sampler_same_class"),  # classif 3
    (dict(batch_size=8, background_frac=0.5, same_class=3), "data.sampler_same_class"),
    (dict(batch_size=8, background_frac=0.9, same_class=2), "data.sampler_background_frac"),
    (dict(batch_size=8, background_frac=1.0), "data.sampler_background_frac"),
    (dict(batch_size=8, background_frac=-0.1), "data.sampler_background_frac"),
    (dict(batch_size=0), "train.batch_size"),
    (dict(batch_size=8, same_class=0), "data.sampler_same_class"),
])
def test_bad_settings_name_the_config_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        TripletClassifBatchSampler(CLASSES, **kwargs)


def test_too_few_items_names_counts_and_fix() -> None:
    few_bg = np.array([0] * 3 + [1] * 10)
    with pytest.raises(ValueError, match=r"have 3\).*data\.sampler_background_frac.*"
                                         r"data\.batch_sampler=random"):
        TripletClassifBatchSampler(few_bg, 8)
    few_cls = np.array([0] * 50 + [1] * 3 + [2] * 1)
    with pytest.raises(ValueError, match=r"1 chunks.*data\.sampler_background_frac.*"
                                         r"data\.batch_sampler=random"):
        TripletClassifBatchSampler(few_cls, 8)
    # Enough for one rank, not for two.
    TripletClassifBatchSampler(np.array([0] * 4 + [1] * 4), 8)
    with pytest.raises(ValueError, match="2 x 8"):
        TripletClassifBatchSampler(np.array([0] * 4 + [1] * 4), 8, world_size=2)


def test_semantic_positive_fraction_by_hand() -> None:
    f = semantic_positive_fraction
    assert f(torch.zeros(6, dtype=torch.long)) == 0.0  # all background
    assert f(torch.tensor([], dtype=torch.long)) == 0.0
    assert f(torch.tensor([1, 2, 3, 4])) == 0.0  # no partners
    assert f(torch.tensor([1, 1, 2, 2, 0, 0])) == pytest.approx(4 / 6)  # all partnered: non-bg share
    assert f(torch.tensor([1, 1, 1, 2, 0, 0, 0, 0])) == pytest.approx(3 / 8)
    assert f(torch.tensor([5, 5, 5, 5])) == 1.0


def test_sampler_classif_part_always_has_positives() -> None:
    s = TripletClassifBatchSampler(CLASSES, 12, background_frac=0.25, same_class=3, seed=9)
    for b in s:
        cls = torch.as_tensor(CLASSES[b])
        assert semantic_positive_fraction(cls[: s.classif_size]) == 1.0
        assert semantic_positive_fraction(cls) == pytest.approx(s.classif_size / 12)
