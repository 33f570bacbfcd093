"""Aggregate statistics in rliable's conventions, with a seeded resampler.

Scores are a (runs x tasks) matrix per algorithm (rliable's data contract).  The interquartile mean
(IQM) is `scipy.stats.trim_mean(scores, 0.25)` over all entries, exactly as `rliable.metrics.
aggregate_iqm`.  Confidence intervals come from the stratified bootstrap: runs are resampled with
replacement independently within each task (rliable's `StratifiedBootstrap`, `task_bootstrap=False`),
and the 95% interval is the percentile interval of the aggregate over `reps` resamples.

Unlike rliable 1.2.0, whose resampler ignores `random_state` and draws from NumPy's global RNG
(anchors.md §2), the resamples here come from `numpy.random.default_rng(seed)`: the same scores and
seed give the same interval.  tests/test_stats.py checks IQM against scipy, and the bootstrap
against an explicit per-task resampling loop.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats as _scipy_stats

DEFAULT_REPS = 2000
DEFAULT_SEED = 0


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean over all entries (rliable.metrics.aggregate_iqm)."""
    return float(_scipy_stats.trim_mean(np.asarray(scores, dtype=float), proportiontocut=0.25, axis=None))


def mean(scores: np.ndarray) -> float:
    return float(np.mean(scores))


# Vectorised forms over a leading resample axis ([reps, ...] -> [reps]), used by the bootstrap so that
# thousands of resamples cost one call.  They must agree with the scalar forms above.
_BATCHED = {
    iqm: lambda r: _scipy_stats.trim_mean(r.reshape(r.shape[0], -1), proportiontocut=0.25, axis=1),
    mean: lambda r: r.reshape(r.shape[0], -1).mean(axis=1),
}


def stratified_bootstrap_indices(n_runs: int, n_tasks: int, reps: int, seed: int) -> np.ndarray:
    """[reps, n_runs, n_tasks] run indices, resampled independently per task."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_runs, size=(reps, n_runs, n_tasks))


def interval_estimate(scores: np.ndarray, aggregate: Callable[[np.ndarray], float] = iqm, reps: int = DEFAULT_REPS,
                      seed: int = DEFAULT_SEED, confidence: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high): the aggregate and its stratified-bootstrap percentile CI.

    scores: [n_runs] or [n_runs, n_tasks].  With a single run the CI collapses onto the point.
    """
    x = np.asarray(scores, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    point = aggregate(x)
    n_runs, n_tasks = x.shape
    if n_runs < 2:
        return point, point, point
    idx = stratified_bootstrap_indices(n_runs, n_tasks, reps, seed)
    resampled = np.take_along_axis(x[None], idx, axis=1)          # [reps, n_runs, n_tasks]
    batched = _BATCHED.get(aggregate)
    values = batched(resampled) if batched else np.array([aggregate(r) for r in resampled])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return point, float(low), float(high)
