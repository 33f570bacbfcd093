"""Tests of benchmarks/stats.py: IQM against scipy, and the seeded stratified bootstrap against an
explicit per-task resampling loop, scipy.stats.bootstrap, and a coverage experiment."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from benchmarks import stats


# ----------------------------------------------------------------------------------------------------
# 1. IQM
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 3), (10, 1), (7, 4), (8, 8), (3, 2)])
def test_iqm_equals_scipy_trim_mean(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape) * 3 + rng.exponential(size=shape)
    assert stats.iqm(x) == pytest.approx(float(sps.trim_mean(x, 0.25, axis=None)), rel=1e-13, abs=1e-13)


def test_iqm_hand_computed():
    # sorted: 1 2 3 4 5 6 7 100 -> drop 2 from each end -> mean(3, 4, 5, 6) = 4.5 (the outlier is ignored)
    assert stats.iqm(np.array([1, 2, 3, 4, 100, 5, 6, 7])) == pytest.approx(4.5, abs=1e-12)
    # 2-D input is flattened (rliable aggregate_iqm over all runs x tasks)
    assert stats.iqm(np.array([[1, 2, 3, 4], [100, 5, 6, 7]])) == pytest.approx(4.5, abs=1e-12)
    # n = 10: int(0.25 * 10) = 2 cut from each end -> mean of sorted[2:8] = mean(2..7) = 4.5
    assert stats.iqm(np.arange(10.0)) == pytest.approx(4.5, abs=1e-12)
    # sorted: -1e6 1 2 3 4 5 6 7 -> mean(2, 3, 4, 5) = 3.5: the huge outlier only shifts which ranks are kept
    assert stats.iqm(np.array([1, 2, 3, 4, -1e6, 5, 6, 7])) == pytest.approx(3.5, abs=1e-12)
    assert stats.mean(np.array([[1.0, 2.0], [3.0, 6.0]])) == pytest.approx(3.0)


# ----------------------------------------------------------------------------------------------------
# 2. basic properties of interval_estimate
# ----------------------------------------------------------------------------------------------------

def _scores(seed=0, runs=10, tasks=4):
    rng = np.random.default_rng(seed)
    return rng.normal(loc=np.arange(tasks), scale=1.0, size=(runs, tasks))


@pytest.mark.parametrize("aggregate", [stats.iqm, stats.mean])
def test_interval_estimate_deterministic_and_seed_dependent(aggregate):
    x = _scores()
    a = stats.interval_estimate(x, aggregate, reps=300, seed=5)
    b = stats.interval_estimate(x, aggregate, reps=300, seed=5)
    c = stats.interval_estimate(x, aggregate, reps=300, seed=6)
    assert a == b
    assert a[0] == c[0]                             # the point does not depend on the seed
    assert (a[1], a[2]) != (c[1], c[2])             # the interval does
    point, low, high = a
    assert point == pytest.approx(aggregate(x), rel=1e-15)
    assert low <= point <= high
    assert low < high


def test_interval_estimate_default_aggregate_is_iqm_and_1d_input():
    x = _scores(1)
    assert stats.interval_estimate(x, reps=200)[0] == pytest.approx(stats.iqm(x))
    v = x[:, 0]
    p1, l1, h1 = stats.interval_estimate(v, stats.mean, reps=200, seed=3)
    p2, l2, h2 = stats.interval_estimate(v[:, None], stats.mean, reps=200, seed=3)
    assert (p1, l1, h1) == (p2, l2, h2)
    assert p1 == pytest.approx(v.mean())


def test_single_run_collapses():
    assert stats.interval_estimate(np.array([3.5]), stats.mean) == (3.5, 3.5, 3.5)
    row = np.array([[1.0, 2.0, 3.0, 10.0]])
    p, lo, hi = stats.interval_estimate(row, stats.iqm)
    assert p == lo == hi == pytest.approx(stats.iqm(row))


def test_constant_within_task_collapses_only_if_stratified():
    """Each task's runs are identical but tasks differ: resampling runs within a task never changes the
    aggregate, so the stratified CI collapses; pooled (unstratified) resampling would not."""
    x = np.tile(np.array([0.0, 10.0, 20.0, 30.0]), (6, 1))
    p, lo, hi = stats.interval_estimate(x, stats.mean, reps=500, seed=0)
    assert p == pytest.approx(15.0)
    assert lo == pytest.approx(15.0) and hi == pytest.approx(15.0)
    # contrast: a pooled bootstrap over all entries has a wide interval on the same data
    rng = np.random.default_rng(0)
    flat = x.ravel()
    pooled = [flat[rng.integers(0, flat.size, flat.size)].mean() for _ in range(500)]
    assert np.percentile(pooled, 97.5) - np.percentile(pooled, 2.5) > 1.0


def test_confidence_level_widens_interval():
    x = _scores(2)
    _, l90, h90 = stats.interval_estimate(x, stats.mean, reps=1000, seed=1, confidence=0.90)
    _, l99, h99 = stats.interval_estimate(x, stats.mean, reps=1000, seed=1, confidence=0.99)
    assert l99 < l90 and h90 < h99


# ----------------------------------------------------------------------------------------------------
# 3. the stratified bootstrap against an explicit loop
# ----------------------------------------------------------------------------------------------------

def _loop_interval(x: np.ndarray, aggregate, reps: int, seed: int, confidence: float = 0.95):
    """Independent per-task resampling with the same stream as stratified_bootstrap_indices: a
    default_rng(seed) whose integers(0, n_runs) draws are consumed in C order (rep, run, task)."""
    n_runs, n_tasks = x.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_runs, size=(reps, n_runs, n_tasks))
    values = []
    for k in range(reps):
        res = np.empty_like(x)
        for t in range(n_tasks):                    # each task column resampled on its own
            for r in range(n_runs):
                res[r, t] = x[idx[k, r, t], t]
        values.append(aggregate(res))
    alpha = (1 - confidence) / 2
    lo, hi = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return aggregate(x), float(lo), float(hi)


def test_bootstrap_stream_is_scalar_draw_sequence():
    """The bulk index array equals drawing rng.integers(0, n_runs) one at a time per (rep, run, task),
    i.e. every task column gets its own independent draws."""
    n_runs, n_tasks, reps, seed = 5, 3, 7, 11
    bulk = stats.stratified_bootstrap_indices(n_runs, n_tasks, reps, seed)
    rng = np.random.default_rng(seed)
    scalar = np.array([[[rng.integers(0, n_runs) for _ in range(n_tasks)] for _ in range(n_runs)]
                       for _ in range(reps)])
    assert bulk.shape == (reps, n_runs, n_tasks)
    assert np.array_equal(bulk, scalar)
    assert bulk.min() >= 0 and bulk.max() < n_runs
    # different task columns do not share their run indices
    assert not all(np.array_equal(bulk[:, :, 0], bulk[:, :, t]) for t in range(1, n_tasks))


@pytest.mark.parametrize("aggregate", [stats.iqm, stats.mean])
@pytest.mark.parametrize("seed", [0, 123])
def test_interval_estimate_matches_explicit_loop(aggregate, seed):
    x = _scores(seed=seed + 7, runs=6, tasks=3)
    reps = 400
    got = stats.interval_estimate(x, aggregate, reps=reps, seed=seed)
    ref = _loop_interval(x, aggregate, reps, seed)
    assert got == ref                               # exact: same resamples, same percentiles


# ----------------------------------------------------------------------------------------------------
# 4. against scipy.stats.bootstrap
# ----------------------------------------------------------------------------------------------------

def test_percentile_ci_of_mean_agrees_with_scipy_bootstrap():
    x = np.random.default_rng(42).gamma(shape=2.0, scale=1.5, size=25)
    reps = 20000
    point, lo, hi = stats.interval_estimate(x, stats.mean, reps=reps, seed=0)
    res = sps.bootstrap((x,), np.mean, method="percentile", n_resamples=reps, confidence_level=0.95,
                        rng=np.random.default_rng(1))
    slo, shi = res.confidence_interval.low, res.confidence_interval.high
    width = shi - slo
    assert point == pytest.approx(x.mean())
    assert abs(lo - slo) < 0.03 * width
    assert abs(hi - shi) < 0.03 * width


# ----------------------------------------------------------------------------------------------------
# 5. coverage
# ----------------------------------------------------------------------------------------------------

def test_coverage_of_mean_ci():
    rng = np.random.default_rng(2024)
    true_mean = 1.7
    n_trials, hits = 200, 0
    widths = []
    for k in range(n_trials):
        sample = rng.normal(true_mean, 2.0, size=10)
        _, lo, hi = stats.interval_estimate(sample, stats.mean, reps=400, seed=k)
        hits += lo <= true_mean <= hi
        widths.append(hi - lo)
    coverage = hits / n_trials
    assert 0.85 <= coverage <= 0.99
    # the mean width is close to the normal-theory width 2 * 1.96 * sigma / sqrt(n) (percentile bootstrap
    # is a bit narrower for n = 10 since it uses the plug-in variance)
    assert 0.75 * 2 * 1.96 * 2.0 / np.sqrt(10) < np.mean(widths) < 1.05 * 2 * 1.96 * 2.0 / np.sqrt(10)


def test_batched_aggregates_match_the_scalar_loop():
    """The vectorised bootstrap path gives exactly what looping the scalar aggregate gives."""
    import numpy as np

    from benchmarks import stats

    x = np.random.default_rng(7).normal(size=(6, 4))
    for agg in (stats.iqm, stats.mean):
        fast = stats.interval_estimate(x, agg, reps=500, seed=3)
        slow = stats.interval_estimate(x, lambda s, f=agg: f(s), reps=500, seed=3)  # a lambda has no batched form
        assert np.allclose(fast, slow, rtol=0, atol=1e-12)


def test_t2i_pooled_rows_average_paired_differences_over_sets_and_seeds():
    """The t2i table's 'all sets' row: mean over sets x seeds of the paired final - base differences,
    with a stratified bootstrap CI; a set with a missing seed suppresses the row."""
    import pandas as pd

    from benchmarks.tables import _t2i_pooled_rows

    rows = []
    deltas = {("t2i/a-v0", 0): 0.01, ("t2i/a-v0", 1): 0.03, ("t2i/b-v0", 0): -0.02, ("t2i/b-v0", 1): 0.02}
    for (task, seed), delta in deltas.items():
        for step, value in ((0, 0.40), (10, 0.40 + delta)):
            rows.append({"task_id": task, "seed": seed, "algorithm": "ddpo", "step": step, "split_name": "train",
                         "name": "clipscore", "value": value})
    frame = pd.DataFrame(rows)
    base, final = frame[frame.step == 0], frame[frame.step == 10]
    raw: list = []
    pooled = _t2i_pooled_rows(base, final, ["ddpo"], raw, reps=500, seed=0)
    assert len(pooled) == 1 and pooled[0]["prompt set"] == "all sets" and pooled[0]["split"] == "train"
    assert raw[0]["delta"] == pytest.approx(np.mean(list(deltas.values())))
    assert raw[0]["delta_ci_low"] <= raw[0]["delta"] <= raw[0]["delta_ci_high"]
    assert raw[0]["delta_ci_low"] < raw[0]["delta_ci_high"]
    incomplete = final[~((final.task_id == "t2i/b-v0") & (final.seed == 1))]
    assert _t2i_pooled_rows(base, incomplete, ["ddpo"], [], reps=500, seed=0) == []


def test_t2i_table_pairs_a_method_with_its_control_by_seed(tmp_path):
    """'DDPO − control': per set and pooled, the seed-paired difference of the two methods' final values
    (the base model does not enter), with the verdict in the footer."""
    import pandas as pd

    from benchmarks.tables import t2i_tables

    finals = {("ddpo", "t2i/a-v0"): [0.45, 0.47], ("ddpo_shuffled", "t2i/a-v0"): [0.44, 0.45],
              ("ddpo", "t2i/b-v0"): [0.50, 0.52], ("ddpo_shuffled", "t2i/b-v0"): [0.50, 0.49]}
    rows = []
    for (algo, task), values in finals.items():
        for seed, value in enumerate(values):
            run = f"{algo}--{task}--seed{seed}"
            for step, v in ((0, 0.40 + 0.01 * seed), (10, value)):
                rows.append({"run_id": run, "task_id": task, "seed": seed, "algorithm": algo, "step": step,
                             "split": "eval", "metric": "train/clipscore", "value": v})
    t2i_tables(pd.DataFrame(rows), tmp_path / "tables", tmp_path / "figures", missing=0, reps=500, seed=0)
    raw = pd.read_csv(tmp_path / "tables" / "t2i_alignment.csv")
    control = raw[raw.against == "ddpo_shuffled"].set_index("task")
    assert control.loc["t2i/a-v0", "delta"] == pytest.approx(np.mean([0.01, 0.02]))
    assert control.loc["t2i/b-v0", "delta"] == pytest.approx(np.mean([0.00, 0.03]))
    assert control.loc["t2i/all-sets", "delta"] == pytest.approx(np.mean([0.01, 0.02, 0.00, 0.03]))
    assert control.loc["t2i/a-v0", "reference"] == pytest.approx(0.445)
    versus_base = raw[(raw.against == "base") & (raw.algorithm == "ddpo")].set_index("task")
    assert versus_base.loc["t2i/a-v0", "delta"] == pytest.approx(np.mean([0.05, 0.06]))
    table = (tmp_path / "tables" / "t2i_alignment.md").read_text()
    assert "DDPO − control" in table and "DDPO raises clipscore against DDPO, shuffled advantages on a-v0 train" in table


def test_dmc_footer_counts_wins_by_means_and_by_separated_cis(tmp_path):
    """'beats uniform random on k/n tasks (m with CIs apart)': a win by the mean counts in k; only a win
    whose 95% CI lies entirely above the baseline's counts in m."""
    import pandas as pd

    from benchmarks.tables import dmc_tables

    returns = {"fb": {"flip": [100, 110, 120], "run": [30, 31, 29], "stand": [200, 100, 330], "walk": [10, 11, 12]},
               "uniform_random": {"flip": [50, 51, 49], "run": [20, 21, 19], "stand": [180, 181, 179],
                                  "walk": [30, 31, 29]}}
    rows = []
    for algo, tasks in returns.items():
        for seed in range(3):
            for task, values in tasks.items():
                rows.append({"run_id": f"{algo}-{seed}", "task_id": "dmc/walker-zeroshot-v0", "algorithm": algo,
                             "seed": seed, "step": 8000, "split": "eval", "metric": f"{task}/return",
                             "value": float(values[seed])})
    dmc_tables(pd.DataFrame(rows), tmp_path / "tables", tmp_path / "figures", missing=0, reps=500, seed=0)
    table = (tmp_path / "tables" / "dmc_returns.md").read_text()
    # flip, run and stand win by the mean (stand: 210 vs 180, but its spread straddles random); walk loses
    assert "FB beats uniform random on 3/4 tasks (2 with CIs apart)" in table


def test_t2i_eval_curve_tracks_each_evaluation_against_reward_queries(tmp_path):
    """Runs evaluated during training get a curve: each evaluation minus the run's step-0 one, mean over
    seeds, placed at the reward queries spent by then; runs evaluated only at the start and end get none."""
    import pandas as pd

    from benchmarks.tables import t2i_eval_curve

    rows = []
    for seed in (0, 1):
        run = f"ddpo--t2i/a-v0--seed{seed}"
        common = {"run_id": run, "task_id": "t2i/a-v0", "seed": seed, "algorithm": "ddpo"}
        for step, value in ((0, 0.40 + seed), (5, 0.41 + seed), (10, 0.43 + seed + 0.01 * seed)):
            rows.append({**common, "step": step, "split": "eval", "metric": "train/clipscore", "value": value})
        for step in range(1, 11):
            rows.append({**common, "step": step, "split": "train", "metric": "budget/reward_queries",
                         "value": 32.0 * step})
    scalars = pd.DataFrame(rows)
    (tmp_path / "t").mkdir(), (tmp_path / "f").mkdir()
    paths = t2i_eval_curve(scalars, tmp_path / "t", tmp_path / "f")
    assert [p.name for p in paths] == ["t2i_eval_curve.csv", "t2i_eval_vs_queries.png"]
    curve = pd.read_csv(paths[0]).set_index("step")
    assert list(curve.reward_queries) == [0, 160, 320]
    assert curve.delta_mean.to_list() == pytest.approx([0.0, 0.01, np.mean([0.03, 0.04])])
    assert set(curve.seeds) == {2}
    # the CI is the bootstrap over seeds: the two seeds' deltas at step 10 bound it, and both agree at step 5
    assert curve.delta_ci_low[10] == pytest.approx(0.03) and curve.delta_ci_high[10] == pytest.approx(0.04)
    assert curve.delta_ci_low[5] == pytest.approx(0.01) == curve.delta_ci_high[5]
    only_ends = scalars[~((scalars.split == "eval") & (scalars.step == 5))]
    assert t2i_eval_curve(only_ends, tmp_path / "t", tmp_path / "f") == []
