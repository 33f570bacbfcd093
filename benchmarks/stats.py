"""Intervals and tests over seeds, chosen by their coverage at the seed counts actually run (3 to 10).

What the tables use, and why (tests/test_stats.py simulates each at n = 3, 5 and 10 seeds):

* `linear_t`: a Student-t interval and two-sided t-test for a weighted sum of group means,
  sum_k w_k mean(x_k), with the Welch-Satterthwaite degrees of freedom.  Its special cases are the
  one-sample t interval of a mean over seeds (`t_estimate`), the paired t-test (`t_estimate` of
  per-seed differences), Welch's unpaired two-sample test (`welch_estimate`) and the stratified
  t interval of a mean over independently trained strata, e.g. prompt sets or DMC domains
  (`stratified_estimate`).  With normal seeds it covers its nominal level within about 1.5 points at
  n = 3 (Welch and the stratified form are slightly conservative there).
* The percentile bootstrap does NOT: over 3 seeds its "95%" interval is the seeds' [min, max] and
  covers about 75% of the time, 84% at 5 seeds, 90% at 10.  `interval_estimate` (the stratified
  bootstrap, rliable's convention) is kept only for the IQM aggregate over many tasks, where no
  t interval applies, and every table that prints it also prints its simulated coverage
  (`bootstrap_coverage`) instead of calling it a 95% CI.
* `holm`: Holm's step-down adjustment, which controls the family-wise error rate under any
  dependence between the tests (a table's tests share seeds and models).

The IQM is `scipy.stats.trim_mean(scores, 0.25)` over all entries, exactly as `rliable.metrics.
aggregate_iqm`.  Unlike rliable 1.2.0, whose resampler ignores `random_state` (anchors.md §2), the
resamples here come from `numpy.random.default_rng(seed)`: the same scores and seed give the same
interval.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats as _scipy_stats

DEFAULT_REPS = 2000
DEFAULT_SEED = 0
CONFIDENCE = 0.95
ALPHA = 0.05  # the level of every test, and the family-wise level after Holm


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean over all entries (rliable.metrics.aggregate_iqm)."""
    return float(_scipy_stats.trim_mean(np.asarray(scores, dtype=float), proportiontocut=0.25, axis=None))


def mean(scores: np.ndarray) -> float:
    return float(np.mean(scores))


# ---- Student-t family ----------------------------------------------------------------------------------


def linear_t(
    groups: Sequence[np.ndarray], weights: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(point, low, high, p) for theta = sum_k w_k E[x_k], from independent samples x_k.

    Each x_k is [..., n_k] (seeds on the last axis; leading axes are batched, for simulations).
    se^2 = sum_k w_k^2 s_k^2 / n_k, and the t quantile has the Welch-Satterthwaite degrees of freedom
    se^4 / sum_k (w_k^2 s_k^2 / n_k)^2 / (n_k - 1); with one group that is n - 1 (the exact t interval).
    p is the two-sided p-value of theta = 0.  A group with fewer than 2 values gives NaN bounds and p.
    With no spread at all (se = 0) the interval is the point and p is NaN: a t-test cannot judge it."""
    groups = [np.asarray(g, dtype=float) for g in groups]
    point = sum(w * g.mean(axis=-1) for w, g in zip(weights, groups))
    if any(g.shape[-1] < 2 for g in groups):
        nan = np.full_like(np.asarray(point, dtype=float), np.nan)
        return point, nan, nan.copy(), nan.copy()
    parts = [w * w * g.var(axis=-1, ddof=1) / g.shape[-1] for w, g in zip(weights, groups)]
    se2 = sum(parts)
    denom = sum(part * part / (g.shape[-1] - 1) for part, g in zip(parts, groups))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(se2 > 0, se2 * se2 / np.where(denom > 0, denom, 1.0), np.nan)
        se = np.sqrt(se2)
        half = np.where(se2 > 0, _scipy_stats.t.ppf(0.5 + confidence / 2, df) * se, 0.0)
        p = np.where(se2 > 0, 2 * _scipy_stats.t.sf(np.abs(point) / np.where(se2 > 0, se, 1.0), df), np.nan)
    return point, point - half, point + half, p


def _scalar(result) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in result)


def t_estimate(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """Mean over seeds with its Student-t interval, and the p-value of mean = 0 (for per-seed paired
    differences this is the paired t-test)."""
    return _scalar(linear_t([np.asarray(values, float)], [1.0], confidence))


def welch_estimate(
    a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float, float]:
    """mean(a) - mean(b) for independent (unpaired) samples: Welch's t interval and test."""
    return _scalar(linear_t([np.asarray(a, float), np.asarray(b, float)], [1.0, -1.0], confidence))


def stratified_estimate(
    groups: Sequence[np.ndarray], weights: Sequence[float] | None = None, confidence: float = CONFIDENCE
) -> tuple[float, float, float, float]:
    """sum_k w_k mean(x_k) over independent strata (default: equal weights summing to 1)."""
    w = [1.0 / len(groups)] * len(groups) if weights is None else list(weights)
    return _scalar(linear_t([np.asarray(g, float) for g in groups], w, confidence))


def log_t_estimate(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """Geometric mean over seeds with the t interval of mean(log10 x), mapped back (for errors that
    span orders of magnitude; exact when log x is normal).  p is that of mean(log10 x) = 0.
    Requires every value > 0."""
    x = np.asarray(values, float)
    point, low, high, p = t_estimate(np.log10(x), confidence)
    return 10**point, 10**low, 10**high, p


# ---- multiple comparisons ------------------------------------------------------------------------------


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where adjusted <= alpha; family-wise error <= alpha under
    any dependence).  NaN p-values (untestable differences) stay NaN and do not count in the family."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


# ---- the stratified bootstrap (IQM aggregates only) ----------------------------------------------------

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


def _column_indices(idx: np.ndarray, strata: Sequence | None, n_cols: int) -> np.ndarray:
    """Run indices per column: a column takes its stratum's draws (columns of one stratum, e.g. the tasks
    one DMC run evaluates, are resampled together)."""
    if strata is None:
        return idx
    _, which = np.unique(np.asarray(strata), return_inverse=True)
    return idx[..., which.reshape(n_cols)]


def interval_estimate(
    scores: np.ndarray,
    aggregate: Callable[[np.ndarray], float] = iqm,
    reps: int = DEFAULT_REPS,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
    strata: Sequence | None = None,
) -> tuple[float, float, float]:
    """(point, low, high): the aggregate and its stratified-bootstrap percentile interval.

    scores: [n_runs] or [n_runs, n_tasks].  Runs are resampled with replacement independently within each
    stratum: each task by default (rliable), or each label of `strata` (one per task column), whose columns
    share their draws.  With a single run the interval collapses onto the point.  This is NOT a calibrated
    confidence interval at few runs (see the module docstring); `bootstrap_coverage` measures it."""
    x = np.asarray(scores, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    point = aggregate(x)
    n_runs, n_tasks = x.shape
    if n_runs < 2:
        return point, point, point
    n_strata = n_tasks if strata is None else len(np.unique(np.asarray(strata)))
    idx = _column_indices(stratified_bootstrap_indices(n_runs, n_strata, reps, seed), strata, n_tasks)
    resampled = np.take_along_axis(x[None], idx, axis=1)  # [reps, n_runs, n_tasks]
    batched = _BATCHED.get(aggregate)
    values = batched(resampled) if batched else np.array([aggregate(r) for r in resampled])
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return point, float(low), float(high)


def bootstrap_coverage(
    scores: np.ndarray,
    strata: Sequence | None = None,
    sims: int = 400,
    reps: int = 400,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
    population: int = 4000,
) -> float:
    """How often `interval_estimate(.., iqm, strata=strata)` covers the IQM it estimates, at this table's
    shape, by simulation: runs are drawn from a normal model with each stratum's observed mean vector and
    covariance over its runs (so its tasks stay correlated as observed); the target is the IQM of
    `population` such runs.  Seeded, so a table regenerates identically.  1.0 when nothing varies."""
    x = np.asarray(scores, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    n, t = x.shape
    if n < 2:
        return float("nan")
    labels = np.arange(t) if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1].ravel()
    rng = np.random.default_rng(seed)
    resid = (x - x.mean(0)) / np.sqrt(n - 1)

    def draw(
        shape: tuple[int, ...],
    ) -> np.ndarray:  # [..., runs, tasks], covariance resid.T @ resid per stratum
        z = rng.standard_normal(shape + (n, labels.max() + 1))
        out = np.empty(shape + (t,))
        for k in range(labels.max() + 1):
            cols = labels == k
            out[..., cols] = x.mean(0)[cols] + np.einsum("...r,rc->...c", z[..., k], resid[:, cols])
        return out

    target = iqm(draw((population,)))
    hits = 0
    for chunk in np.array_split(np.arange(sims), max(1, sims // 50)):
        data = draw((len(chunk), n))  # [s, n, t]
        idx = _column_indices(
            rng.integers(0, n, size=(len(chunk), reps, n, labels.max() + 1)),
            None if strata is None else labels,
            t,
        )
        res = np.take_along_axis(data[:, None], idx, axis=2)  # [s, reps, n, t]
        values = _scipy_stats.trim_mean(res.reshape(len(chunk), reps, -1), 0.25, axis=2)
        low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)], axis=1)
        hits += int(np.sum((low <= target + 1e-12) & (target - 1e-12 <= high)))
    return hits / sims
