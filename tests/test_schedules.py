import pytest

from malm.train.schedules import lr_factor


def test_warmup_then_constant():
    f = lr_factor(4, 100, "constant")
    assert [f(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert f(99) == 1.0


def test_cosine_decays_to_zero_at_the_last_step():
    f = lr_factor(10, 110, "cosine")
    assert f(9) == 1.0 and f(10) == 1.0
    assert f(60) == pytest.approx(0.5)
    assert f(110) == pytest.approx(0.0, abs=1e-12) and f(500) == pytest.approx(0.0, abs=1e-12)
    values = [f(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone after warmup


def test_no_warmup_starts_at_full_rate():
    assert lr_factor(0, 10, "cosine")(0) == 1.0
    assert lr_factor(0, 10, "constant")(0) == 1.0


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="linear"):
        lr_factor(0, 10, "linear")
