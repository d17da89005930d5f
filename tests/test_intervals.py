"""The paired bootstrap against cases with known answers."""

import numpy as np
import pytest

from studylib import intervals as I


def test_a_binomial_proportion_gets_the_normal_interval():
    """One benchmark, a teacher right on every item: AVG % = 100 p, whose 95 % interval is close to
    100 (p +- 1.96 sqrt(p (1 - p) / n)) for n = 500."""
    rng = np.random.default_rng(1)
    n, p = 500, 0.7
    model = {"b": (rng.random(n) < p).astype(float)}
    teacher = {"b": np.ones(n)}
    got = I.interval(model, teacher, n_boot=4000, seed=0)
    p_hat = model["b"].mean()
    half = 100 * 1.96 * np.sqrt(p_hat * (1 - p_hat) / n)
    assert got.value == pytest.approx(100 * p_hat)
    assert got.lo < got.value < got.hi
    assert got.half_width == pytest.approx(half, rel=0.08)
    assert (got.lo + got.hi) / 2 == pytest.approx(100 * p_hat, abs=0.5)


def test_a_model_against_itself_differs_by_exactly_zero():
    rng = np.random.default_rng(2)
    teacher = {b: (rng.random(300) < 0.8).astype(float) for b in ("x", "y", "z")}
    model = {b: (rng.random(300) < 0.6).astype(float) for b in teacher}
    same = I.difference(model, model, teacher)
    assert (same.value, same.lo, same.hi) == (0.0, 0.0, 0.0)


def test_a_paired_difference_is_narrower_than_the_unpaired_intervals_suggest():
    """Two models that agree on most items: the paired interval of their difference is much narrower than
    the sum of their own half-widths (the item noise they share cancels)."""
    rng = np.random.default_rng(3)
    teacher = {"b": np.ones(500)}
    a = (rng.random(500) < 0.75).astype(float)
    b = a.copy()
    flip = rng.choice(500, 10, replace=False)
    b[flip] = 1 - b[flip]
    d = I.difference({"b": a}, {"b": b}, teacher, n_boot=2000)
    ia, ib = I.interval({"b": a}, teacher), I.interval({"b": b}, teacher)
    assert d.half_width < 0.5 * (ia.half_width + ib.half_width)
    assert d.lo <= d.value <= d.hi


def test_draws_are_seeded_and_per_benchmark():
    one = I.draws({"a": 10, "b": 20}, n_boot=5, seed=7)
    two = I.draws({"b": 20, "c": 3}, n_boot=5, seed=7)
    assert np.array_equal(one["b"], two["b"]), "adding or removing a benchmark leaves the others' draws"
    assert not np.array_equal(I.draws({"a": 10}, 5, seed=8)["a"], one["a"])


def test_items_must_be_paired():
    with pytest.raises(ValueError, match="same items"):
        I.interval({"b": np.ones(9)}, {"b": np.ones(10)})


@pytest.mark.parametrize("lo, hi, margin, above, expected", [
    (1.0, 3.0, 0.5, True, "holds"),
    (-3.0, -1.0, 0.5, True, "does not hold"),
    (-1.0, 2.0, 0.5, True, "undecided"),          # the interval spans the margin
    (-1.0, 2.0, 0.5, False, "undecided"),
    (-3.0, -1.0, 0.0, False, "holds"),            # "below the margin" claims
    (0.2, 0.4, 0.5, False, "holds"),
])
def test_three_valued_verdicts(lo, hi, margin, above, expected):
    assert I.verdict(I.Interval((lo + hi) / 2, lo, hi), margin, holds_above=above) == expected


def test_the_study_interval_covers_the_scored_benchmarks_only():
    """`study.interval` bootstraps the benchmarks the teacher scores above 0 (those AVG % averages), with the
    teacher's seed; a scored benchmark without per-item results (a real one) makes it undefined."""
    from types import SimpleNamespace

    from studylib import study as S

    rng = np.random.default_rng(4)
    teacher_items = {"a": [1] * 50, "b": [0] * 50, "c": list((rng.random(50) < 0.9).astype(int))}
    model_items = {b: list((rng.random(50) < 0.5).astype(int)) for b in teacher_items}
    teacher = SimpleNamespace(scored=["a", "c"], items=teacher_items, seed=3)
    got = S.interval(teacher, model_items)
    want = I.interval({b: model_items[b] for b in "ac"}, {b: teacher_items[b] for b in "ac"}, seed=3)
    assert got == want
    assert np.isnan(S.interval(SimpleNamespace(scored=["a", "x"], items=teacher_items, seed=0), model_items).value)
