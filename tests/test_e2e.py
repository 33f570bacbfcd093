"""End to end through the real CLI and Ray Tune orchestrator, on the tiny didactic grid (shortened)."""
import functools
import json
import signal
import subprocess
import time

import pandas as pd
import pytest

from benchmarks.config import load_experiment
from benchmarks.results import execute_trial, read_manifest

import fixtures

REPO = fixtures.REPO
SHORT = ["--set", "onestep_fb.num_steps=600", "--set", "onestep_fb.eval_every=200",
         "--set", "fb.num_steps=200", "--set", "fb.eval_every=100"]


b2fb = functools.partial(fixtures.b2fb, timeout=600)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    first = b2fb(tmp, "run", "--suite", "didactic", "--size", "tiny", *SHORT)
    return tmp, first


def test_tiny_bench_runs_every_trial_and_builds_tables(bench):
    tmp, first = bench
    assert first.returncode == 0, first.stderr[-3000:]
    runs = sorted((tmp / "results" / "didactic" / "runs").iterdir())
    assert len(runs) == 4  # 2 algorithms x 2 CMPs x 1 seed
    for run in runs:
        manifest = json.loads((run / "manifest.json").read_text())
        assert manifest["status"] == "done" and manifest["schema_version"] == 1
        assert manifest["data_hashes"] and manifest["config_hash"][:8] in run.name
        assert not (run / "checkpoint.pt").exists()
        rows = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
        keys = [(r["step"], r["split"], r["metric"]) for r in rows]
        assert len(keys) == len(set(keys))
        assert len(pd.read_parquet(run / "samples.parquet")) == 8  # one row per evaluation reward
    table = tmp / "results" / "didactic" / "tables" / "tiny" / "didactic_errors.md"
    assert str(table) in first.stdout  # the run ends by printing where the tables are
    text = table.read_text()
    assert "one-step FB" in text and "| FB " in text and "Student-t 95% CI" in text and "paper, approx." in text
    for ext in ("tex", "csv"):
        assert (table.with_suffix(f".{ext}")).is_file()
    assert (tmp / "results" / "didactic" / "figures" / "tiny" / "didactic_error_vs_steps.png").stat().st_size > 10_000


def test_rerun_skips_complete_runs_and_trains_nothing(bench):
    tmp, _ = bench
    runs_dir = tmp / "results" / "didactic" / "runs"
    before = {p.name: p.joinpath("manifest.json").read_text() for p in runs_dir.iterdir()}
    again = b2fb(tmp, "run", "--suite", "didactic", "--size", "tiny", *SHORT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "(4 complete, 0 to run)" in again.stdout
    after = {p.name: p.joinpath("manifest.json").read_text() for p in runs_dir.iterdir()}
    assert before == after  # no run was touched


def test_tables_regenerate_identically_from_results(bench):
    tmp, _ = bench
    table = tmp / "results" / "didactic" / "tables" / "tiny" / "didactic_errors.md"
    before = table.read_text()
    out = b2fb(tmp, "tables", "--suite", "didactic", "--size", "tiny", *SHORT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert table.read_text() == before


def test_tables_of_one_grid_ignore_runs_of_another(bench):
    """Runs of another size or config in the same results/ never enter a grid's table cells."""
    tmp, _ = bench
    other = b2fb(tmp, "run", "--suite", "didactic", "--size", "tiny", "--algos", "onestep_fb", "--tasks",
                 "didactic/three-state-v0", "--set", "onestep_fb.num_steps=300", "--no-tables")
    assert other.returncode == 0, other.stderr[-2000:]
    out = b2fb(tmp, "tables", "--suite", "didactic", "--size", "tiny", *SHORT)
    assert out.returncode == 0, out.stderr[-2000:]
    raw = pd.read_csv(tmp / "results" / "didactic" / "tables" / "tiny" / "didactic_errors.csv")
    assert set(raw.seeds) == {1} and set(raw.step) <= {600, 200}  # only the SHORT grid's runs
    missing = b2fb(tmp, "tables", "--suite", "didactic", "--size", "tiny", "--seeds", "2", *SHORT)
    assert missing.returncode == 0
    text = (tmp / "results" / "didactic" / "tables" / "tiny" / "didactic_errors.md").read_text()
    assert "INCOMPLETE: 4 runs of this grid are missing" in text


def test_interrupted_bench_resumes_without_lost_or_duplicated_rows(tmp_path):
    args = ["run", "--suite", "didactic", "--size", "tiny", "--algos", "onestep_fb", "--tasks",
            "didactic/three-state-v0", "--set", "onestep_fb.num_steps=6000", "--set", "onestep_fb.eval_every=250",
            "--set", "onestep_fb.checkpoint_every=500", "--no-tables"]
    proc = subprocess.Popen(fixtures.b2fb_command(tmp_path, *args), cwd=fixtures.REPO, env=fixtures.cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs_dir = tmp_path / "results" / "didactic" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline:
        manifests = [read_manifest(d) for d in runs_dir.glob("*")] if runs_dir.is_dir() else []
        if manifests and manifests[0] and manifests[0].get("checkpoint_step", 0) >= 1000:
            break
        if proc.poll() is not None:
            pytest.fail(f"bench ended before it could be interrupted: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # `kill`: as graceful as Ctrl-C
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    (run,) = list(runs_dir.iterdir())
    interrupted = read_manifest(run)
    assert interrupted["status"] == "running" and (run / "checkpoint.pt").is_file()
    assert interrupted["checkpoint_step"] < 6000

    resumed = b2fb(tmp_path, *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = read_manifest(run)
    assert manifest["status"] == "done" and manifest["attempts"] == 2

    rows = pd.read_json(run / "scalars.jsonl", lines=True)
    assert not rows.duplicated(["step", "split", "metric"]).any()
    eval_steps = sorted(rows[rows.split == "eval"].step.unique())
    assert eval_steps == list(range(0, 6001, 250))  # nothing lost
    # and the resumed run is bit-identical to an uninterrupted one (same seed, same machine)
    trial = next(t for t in load_experiment("didactic", "tiny", overrides=[
        "onestep_fb.num_steps=6000", "onestep_fb.eval_every=250", "onestep_fb.checkpoint_every=500"],
        algos=["onestep_fb"], tasks=["didactic/three-state-v0"]).trials())
    assert trial.run_id == run.name
    assert execute_trial(trial, tmp_path / "reference", threads=1) == "done"
    reference = pd.read_json(tmp_path / "reference" / "didactic" / "runs" / run.name / "scalars.jsonl", lines=True)
    key = ["step", "split", "metric"]
    merged = rows.merge(reference, on=key, suffixes=("", "_ref"))
    assert len(merged) == len(reference) == len(rows)
    assert (merged.value == merged.value_ref).all()


def test_trials_asking_for_more_than_the_cluster_has_fail_clearly(tmp_path):
    grid = tmp_path / "gpu_grid.yaml"
    grid.write_text("suite: didactic\nsizes:\n  tiny:\n    resources: {cpu: 1, gpu: 1}\n"
                    "    tasks: [didactic/three-state-v0]\n    algorithms: {onestep_fb: {arch: tabular, num_steps: 10}}\n")
    out = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--config", str(grid))
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: each trial asks for 1 GPU(s) but the Ray cluster has 0")
    assert "Traceback" not in out.stderr
    assert not list((tmp_path / "results").rglob("manifest.json"))  # nothing half-written
