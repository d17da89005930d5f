"""Uncertainty of the study's figures: a paired bootstrap over benchmark items.

Every model is evaluated on the same items as the teacher, so the uncertainty of a score relative to the
teacher comes from which items the benchmarks happen to hold. One bootstrap replicate r draws, for every
benchmark b, n_b items with replacement (the same draw for every model), and recomputes

    AVG %_r(m) = mean_b 100 * mean_{i in draw_r(b)} c_i(m) / mean_{i in draw_r(b)} c_i(teacher),

with c_i(m) the per-item score (1 or 0 for a correct or wrong answer). The 95 % interval is the 2.5 and 97.5
percentiles over replicates (the percentile bootstrap); a difference between two models on the same items,
AVG %_r(a) - AVG %_r(b), gets its interval the same way (paired: one draw for both), so the item noise they
share cancels. A model compared with itself has a difference of exactly 0 and an interval of width 0.

Written here with numpy because it is a few lines of indexing that scipy.stats.bootstrap does not do for a
ratio of means over several paired groups; the draws are seeded, so the intervals are reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ItemScores = dict[str, np.ndarray]  # benchmark -> per-item scores (1-D, the benchmark's item order)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95 % percentile-bootstrap interval."""

    value: float
    lo: float
    hi: float

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def draws(sizes: dict[str, int], n_boot: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """For every benchmark, an (n_boot, n_b) array of item indices drawn with replacement (seeded per name,
    so adding a benchmark does not change the draws of the others)."""
    out = {}
    for name, n in sizes.items():
        rng = np.random.default_rng([seed, *name.encode()])
        out[name] = rng.integers(0, n, size=(n_boot, n))
    return out


def replicates(items: ItemScores, teacher: ItemScores, idx: dict[str, np.ndarray]) -> np.ndarray:
    """AVG % of `items` relative to `teacher` on every replicate of `idx` (a 1-D array, one per replicate).
    A replicate where the teacher scores 0 on a benchmark leaves that benchmark out of its mean."""
    per_benchmark = []
    for name, ix in idx.items():
        model_mean = np.asarray(items[name], dtype=float)[ix].mean(axis=1)
        teacher_mean = np.asarray(teacher[name], dtype=float)[ix].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_benchmark.append(np.where(teacher_mean > 0, 100 * model_mean / teacher_mean, np.nan))
    return np.nanmean(np.vstack(per_benchmark), axis=0)


def avg_percent(items: ItemScores, teacher: ItemScores) -> float:
    """AVG % on the items themselves: mean_b 100 * mean_i c_i(m) / mean_i c_i(teacher)."""
    return float(np.mean([100 * np.mean(items[b]) / np.mean(teacher[b]) for b in teacher if np.mean(teacher[b]) > 0]))


def _check(items: ItemScores, teacher: ItemScores) -> None:
    for name, t in teacher.items():
        if name not in items or len(items[name]) != len(t):
            got = len(items[name]) if name in items else "none"
            raise ValueError(f"benchmark {name!r}: {got} item scores for {len(t)} teacher items; a paired "
                             "bootstrap needs both evaluated on the same items")


def interval(items: ItemScores, teacher: ItemScores, n_boot: int = 2000, seed: int = 0) -> Interval:
    """AVG % of a model relative to the teacher, with its 95 % paired-bootstrap interval."""
    _check(items, teacher)
    reps = replicates(items, teacher, draws({b: len(t) for b, t in teacher.items()}, n_boot, seed))
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Interval(avg_percent(items, teacher), float(lo), float(hi))


def difference(a: ItemScores, b: ItemScores, teacher: ItemScores, n_boot: int = 2000, seed: int = 0) -> Interval:
    """AVG %(a) - AVG %(b) on the same items, with its 95 % paired-bootstrap interval (one draw for both)."""
    _check(a, teacher)
    _check(b, teacher)
    idx = draws({name: len(t) for name, t in teacher.items()}, n_boot, seed)
    reps = replicates(a, teacher, idx) - replicates(b, teacher, idx)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Interval(avg_percent(a, teacher) - avg_percent(b, teacher), float(lo), float(hi))


def verdict(deciding: Interval, margin: float, holds_above: bool = True) -> str:
    """Three-valued: "holds" when the whole interval lies beyond the margin on the claim's side (above it,
    or below it with holds_above=False), "does not hold" when it lies wholly on the other side, and
    "undecided" when it overlaps the margin (the data cannot tell)."""
    above, below = deciding.lo > margin, deciding.hi < margin
    if above or below:
        return "holds" if above == holds_above else "does not hold"
    return "undecided"


def mean_items(runs: list[ItemScores]) -> ItemScores:
    """Per item, the mean score over several runs of one model (its seeds) on the same items. AVG % is linear in
    the model's scores, so AVG % of this mean is the mean of the runs' AVG %."""
    return {b: np.mean([np.asarray(r[b], dtype=float) for r in runs], axis=0) for b in runs[0]}


def seed_half_width(values: list[float]) -> float:
    """Half-width of the 95 % t-interval of a mean over seeds: t_{0.975, n-1} * sd / sqrt(n) (0 for one seed)."""
    from scipy import stats

    n = len(values)
    return 0.0 if n < 2 else float(stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / np.sqrt(n))


def with_seeds(items_part: Interval, seed_half: float) -> Interval:
    """A mean over seeds evaluated on the same items, with both sources of noise: the bootstrap interval of the
    mean's item noise and the seeds' t half-width added in quadrature on each side,
    lo = v - sqrt((v - lo_items)^2 + h_seeds^2), hi = v + sqrt((hi_items - v)^2 + h_seeds^2)."""
    v = items_part.value
    return Interval(v, float(v - np.hypot(v - items_part.lo, seed_half)), float(v + np.hypot(items_part.hi - v, seed_half)))


def across(values: list[float]) -> Interval:
    """The mean of independent replicates (teachers of different seeds, each on its own benchmark items) with
    its 95 % t-interval: their spread already holds every source of noise."""
    m, h = float(np.mean(values)), seed_half_width(values)
    return Interval(m, m - h, m + h) if len(values) > 1 else Interval(m, float("nan"), float("nan"))
