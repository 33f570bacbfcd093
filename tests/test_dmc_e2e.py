"""The dmc suite end to end at the tiny size, through the real CLI and Ray Tune: data collection on
first use, training both FB algorithms, zero-shot evaluation on every walker task, baselines, tables; and
from pixels (rendering on first use, both encoder modes, pixel rows in the table)."""
import functools
import json
import shutil

import pandas as pd
import pytest

from suites.dmc.dataset import load_dataset

import fixtures


b2fb = functools.partial(fixtures.b2fb, timeout=900)


STATE = ("--tasks", "dmc/walker-zeroshot-v0")


def test_tiny_dmc_bench_collects_trains_evaluates_and_tabulates(tmp_path):
    first = b2fb(tmp_path, "run", "--suite", "dmc", "--size", "tiny", *STATE)
    assert first.returncode == 0, first.stderr[-3000:]
    dataset = tmp_path / "data" / "dmc" / "walker-random-len200"
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["domain"] == "walker" and meta["transitions"] >= 2000
    trained_on = load_dataset(dataset, "walker", size=1400 + 400).sha256  # train + validation episodes
    runs = sorted((tmp_path / "results" / "dmc" / "runs").iterdir())
    assert {r.name.split("--")[0] for r in runs} == {"fb", "onestep_fb", "uniform_random", "zero_action"}
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "done"
        assert manifest["data_hashes"]["dataset:walker"] == trained_on  # the data each run used
        samples = pd.read_parquet(run / "samples.parquet")
        assert set(samples.task) == {"flip", "run", "stand", "walk"}  # every task, one row per episode
        assert samples["return"].between(0, 1000).all()
    table = (tmp_path / "results" / "dmc" / "tables" / "tiny" / "dmc_returns.md").read_text()
    for name in ("FB", "one-step FB", "uniform random", "zero action", "(paper)", "overall"):
        assert name in table
    assert (tmp_path / "results" / "dmc" / "figures" / "tiny" / "dmc_performance_profile.png").is_file()
    # a second run reuses the data (no new episode file) for the one run that is missing ...
    episodes = sorted(p.name for p in dataset.iterdir())
    zero_run = next(r for r in runs if r.name.startswith("zero_action"))
    shutil.rmtree(zero_run)
    again = b2fb(tmp_path, "run", "--suite", "dmc", "--size", "tiny", *STATE)
    assert again.returncode == 0 and "(3 complete, 1 to run)" in again.stdout, again.stderr[-3000:]
    assert sorted(p.name for p in dataset.iterdir()) == episodes
    assert json.loads((zero_run / "manifest.json").read_text())["status"] == "done"
    # ... and a grid whose runs are all complete skips them and collects nothing, even without its data
    shutil.rmtree(dataset)
    done = b2fb(tmp_path, "run", "--suite", "dmc", "--size", "tiny", *STATE)
    assert done.returncode == 0 and "(4 complete, 0 to run)" in done.stdout, done.stderr[-3000:]
    assert not dataset.exists() and "dataset" not in done.stdout


def test_missing_dataset_is_one_line_before_any_trial(tmp_path):
    """The paper grid expects ExORL-size data the user provides: without it, one line naming what to
    download and where to put it, exit 2, and nothing written under results/."""
    out = b2fb(tmp_path, "run", "--suite", "dmc", "--size", "paper", "--algos", "onestep_fb", "--seeds", "1")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no dataset at ")
    assert "https://dl.fbaipublicfiles.com/exorl/walker/rnd.zip" in lines[0]
    assert not (tmp_path / "results").exists()


@pytest.mark.render
def test_tiny_pixel_runs_of_each_algorithm_go_through_the_orchestrator(tmp_path):
    """The whole tiny grid: the state cells and, from pixels, FB (one shared encoder) and one-step FB
    (impala_small per network) on frames rendered on first use; the table shows the pixel row beside the
    state row of the task they saw."""
    from test_dmc_pixels import _gl_problem

    if _gl_problem():
        pytest.skip(f"no GL backend: {_gl_problem().split(': set MUJOCO_GL')[0]}")
    out = b2fb(tmp_path, "run", "--suite", "dmc", "--size", "tiny")
    assert out.returncode == 0, out.stderr[-3000:]
    dataset = tmp_path / "data" / "dmc" / "walker-random-len200"
    pixels = dataset / "pixels-32-cam0-reflection0-shadow0"
    meta = json.loads((pixels / "meta.json").read_text())
    assert meta["status"] == "complete" and len(meta["files"]) == 9  # the 9 episodes of train + validation
    runs = sorted((tmp_path / "results" / "dmc" / "runs").glob("*pixels*"))
    assert sorted(r.name.split("--")[0] for r in runs) == ["fb", "onestep_fb"]
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "done"
        assert manifest["data_hashes"]["pixels:walker"] == meta["sha256"]
        hashes = manifest["data_hashes"]
        assert hashes["render:data"] == meta["gl_renderer"] == hashes["render:eval"]
        assert manifest["task_kwargs"]["camera"] == 0 and manifest["task_kwargs"]["frame_stack"] == 2
        samples = pd.read_parquet(run / "samples.parquet")
        assert set(samples.task) == {"stand"} and samples["return"].between(0, 50).all()  # 50-step episodes
    encoders = {json.loads((r / "manifest.json").read_text())["config"]["encoder"] for r in runs}
    assert encoders == {"shared", "per_network"}
    table = (tmp_path / "results" / "dmc" / "tables" / "tiny" / "dmc_returns.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| walker   | stand")]
    assert [r.split("|")[3].strip() for r in rows] == ["state", "pixels"]
    assert "FB: pixels − state" in table and "their state runs fill both rows" in table
    # Without the untrained evaluation (eval_at_start false, the cpu pixel grid's setting) the run has no
    # step-0 evaluation, and its final evaluation is the default run's to the bit: evaluation draws nothing
    # from the training generator, so dropping the step-0 one changes no trained number.
    late = tmp_path / "late"
    late.mkdir()
    (late / "data").symlink_to(tmp_path / "data")
    skip = b2fb(late, "run", "--suite", "dmc", "--size", "tiny", "--tasks", "dmc/walker-zeroshot-pixels-v0",
                "--algos", "fb", "--set", "fb.eval_at_start=false")
    assert skip.returncode == 0, skip.stderr[-3000:]

    def evals(run):
        rows = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
        return {(r["step"], r["metric"]): r["value"] for r in rows if r["split"] == "eval"}

    (default,) = [r for r in runs if r.name.startswith("fb--")]
    (skipped,) = sorted((late / "results" / "dmc" / "runs").glob("fb--*pixels*"))
    assert skipped.name != default.name  # a changed added_field re-keys the run
    assert {s for s, _ in evals(default)} == {0, 20} and {s for s, _ in evals(skipped)} == {20}
    assert evals(skipped) == {k: v for k, v in evals(default).items() if k[0] == 20}
