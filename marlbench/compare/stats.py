"""The statistics `compare` reports, on plain arrays (scipy.stats and statsmodels do the maths).

Per task, each run contributes one score: its mean evaluation return. Aggregates follow the
rliable protocol (Agarwal et al., 2021; library `rliable`, `metrics.py` and `library.py`),
computed on normalised scores: IQM over all (task, run) scores, mean and median of the per-task
means, optimality gap, probability of improvement from the Mann-Whitney U statistic, and
performance profiles; 95% intervals from a stratified bootstrap (runs resampled within each
task, percentile method, 50,000 resamples, as rliable's `get_interval_estimates`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05  # significance level of the per-task tests, after Holm correction
CONFIDENCE = 0.95  # interval level (rliable `confidence_interval_size=0.95`)
BOOTSTRAP_REPS = 50_000  # rliable `get_interval_estimates(reps=50000)`
IQM_TRIM = 0.25  # interquartile mean: drop the lowest and highest 25% (rliable `aggregate_iqm`)
OPTIMALITY_TARGET = 1.0  # gamma of the optimality gap: the expert reference (rliable default 1)

Scores = Sequence[np.ndarray]  # one 1-d array of run scores per task


@dataclass(frozen=True)
class Interval:
    point: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"point": self.point, "low": self.low, "high": self.high}


# ------------------------------------------------------------------------------------------------
# Per task
# ------------------------------------------------------------------------------------------------


def sample_std(x: np.ndarray) -> float:
    """Standard deviation over seeds with Bessel's correction (nan for a single seed)."""
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def welch_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Welch's t-test p-value (nan when either side has fewer than 2 runs)."""
    if len(x) < 2 or len(y) < 2:
        return math.nan
    with warnings.catch_warnings():  # zero variance on both sides: nan for equal means, 0 for
        # different ones (scipy's limits), without its divide-by-zero warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy.stats.ttest_ind(x, y, equal_var=False).pvalue)


def paired_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided paired t-test p-value on runs matched one to one (nan below 2 pairs)."""
    if len(x) < 2 or len(x) != len(y):
        return math.nan
    with warnings.catch_warnings():  # identical differences: as `welch_p`
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy.stats.ttest_rel(x, y).pvalue)


def mann_whitney_p(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (exact for small samples without ties)."""
    return float(scipy.stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)


def mean_interval(x: np.ndarray) -> tuple[float, float]:
    """95% t-interval of the mean over seeds (nan for a single seed)."""
    if len(x) < 2:
        return math.nan, math.nan
    if np.ptp(x) == 0:  # identical runs: the interval is the value itself
        return float(x[0]), float(x[0])
    ci = scipy.stats.ttest_1samp(x, 0.0).confidence_interval(CONFIDENCE)
    return float(ci.low), float(ci.high)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values of one family; nan entries are left out and stay nan."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, math.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], method="holm")[1]
    return out


def normalise(returns: np.ndarray, random: float, expert: float) -> np.ndarray:
    """0 = the random behaviour's return, 1 = the expert behaviour's (fixed dataset anchors)."""
    return (np.asarray(returns, dtype=float) - random) / (expert - random)


# ------------------------------------------------------------------------------------------------
# Aggregates over tasks (each takes one array per task; `axis` is the runs axis, so scipy's
# bootstrap can evaluate them on a batch of resamples at once)
# ------------------------------------------------------------------------------------------------


def iqm(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean over all (task, run) scores."""
    return scipy.stats.trim_mean(np.concatenate(tasks, axis=axis), IQM_TRIM, axis=axis)


def mean(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over tasks of the per-task mean (each task weighs the same)."""
    return np.mean([np.mean(t, axis=axis) for t in tasks], axis=0)


def median(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
    """Median over tasks of the per-task mean."""
    return np.median([np.mean(t, axis=axis) for t in tasks], axis=0)


def optimality_gap(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
    """How far scores fall short of the target, on average: mean of max(gamma - score, 0)."""
    return np.mean([np.mean(np.maximum(OPTIMALITY_TARGET - t, 0.0), axis=axis) for t in tasks],
                   axis=0)


AGGREGATES: dict[str, Callable[..., np.ndarray]] = {
    "IQM": iqm, "mean": mean, "median": median, "optimality gap": optimality_gap}


def bootstrap_interval(statistic: Callable[..., np.ndarray], tasks: Scores,
                       reps: int = BOOTSTRAP_REPS, seed: int = 0) -> Interval:
    """Point estimate and stratified-bootstrap percentile interval of `statistic`.

    Every task is a separate sample resampled independently (scipy's `paired=False`), which is
    exactly the stratified bootstrap. Needs at least two runs per task; otherwise the interval
    is nan.
    """
    tasks = [np.asarray(t, dtype=float) for t in tasks]
    point = float(statistic(*tasks))
    if reps <= 0 or min(len(t) for t in tasks) < 2:
        return Interval(point, math.nan, math.nan)
    low, high = _bootstrap(statistic, tasks, reps, seed)
    return Interval(point, float(low), float(high))


def _bootstrap(statistic, samples, reps: int, seed: int):
    with warnings.catch_warnings():  # constant scores give a zero-width interval, as they should
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        res = scipy.stats.bootstrap(samples, statistic, n_resamples=reps, paired=False,
                                    vectorized=True, method="percentile",
                                    confidence_level=CONFIDENCE, batch=min(reps, 5000),
                                    rng=np.random.default_rng(seed))
    return res.confidence_interval.low, res.confidence_interval.high


def probability_of_improvement(x: Scores, y: Scores, reps: int = BOOTSTRAP_REPS,
                               seed: int = 0) -> Interval:
    """P(X > Y): per task the chance that a run of X beats a run of Y (ties count half, i.e.
    the Mann-Whitney U statistic over n_x * n_y), averaged over tasks."""
    k = len(x)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        per_task = [scipy.stats.mannwhitneyu(a, b, axis=axis, method="asymptotic").statistic
                    / (a.shape[axis] * b.shape[axis])
                    for a, b in zip(samples[:k], samples[k:])]
        return np.mean(per_task, axis=0)

    return bootstrap_interval(statistic, [*x, *y], reps, seed)


def performance_profile(tasks: Scores, taus: np.ndarray, reps: int = BOOTSTRAP_REPS,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction of runs scoring above each tau (per task, then averaged over tasks), with a
    stratified-bootstrap band. Returns (point, low, high), each shaped like `taus`."""
    taus = np.asarray(taus, dtype=float)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        per_task = [np.mean(np.moveaxis(s, axis, -1)[..., None, :] > taus[:, None], axis=-1)
                    for s in samples]
        return np.moveaxis(np.mean(per_task, axis=0), -1, 0)  # taus first, as scipy expects

    tasks = [np.asarray(t, dtype=float) for t in tasks]
    point = statistic(*tasks)
    if reps <= 0 or min(len(t) for t in tasks) < 2:
        nan = np.full_like(point, math.nan)
        return point, nan, nan
    low, high = _bootstrap(statistic, tasks, reps, seed)
    return point, np.asarray(low), np.asarray(high)
