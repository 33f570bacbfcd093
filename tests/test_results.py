"""Results store (benchmarks/results.py): atomic files, the RunWriter lifecycle and resume, execute_trial,
and collect's validation.  In-process, no Ray; trials are shortened to a few hundred steps on one thread."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import results
from benchmarks.config import config_hash, load_experiment
from benchmarks.results import (CHECKPOINT, MANIFEST, SAMPLES, SCALARS, SCHEMA_VERSION, RunWriter,
                                atomic_write_json, atomic_write_parquet, atomic_write_text, collect,
                                execute_trial, is_complete, read_manifest, run_dir)
from suites.errors import UserError


def tmp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in Path(directory).rglob("*.tmp"))


@pytest.fixture(scope="module")
def tiny_trials():
    return load_experiment("didactic", "tiny").trials()


@pytest.fixture
def trial(tiny_trials):
    t = tiny_trials[0]
    assert (t.algorithm, t.task_id) == ("onestep_fb", "didactic/three-state-v0")
    return t


def shortened(trial, num_steps: int, every: int, **changes):
    cfg = {**trial.algo_config, "num_steps": num_steps, "eval_every": every, "log_every": every,
           "checkpoint_every": every, **changes}
    h = config_hash(trial.suite, trial.algorithm, cfg, trial.task_id, trial.task_kwargs)
    return dataclasses.replace(trial, algo_config=cfg, config_hash=h)


def scalars_of(root: Path, trial) -> pd.DataFrame:
    return pd.read_json(run_dir(root, trial) / SCALARS, lines=True)


# ---- atomic writes ----------------------------------------------------------------------------------
WRITERS = {
    "json": (atomic_write_json, {"a": 1, "b": [1, 2]}, {"a": 2},
             lambda p: json.loads(p.read_text())),
    "text": (atomic_write_text, "first\n", "second\n", lambda p: p.read_text()),
    "parquet": (atomic_write_parquet, pd.DataFrame({"x": [1, 2]}), pd.DataFrame({"x": [3]}),
                lambda p: pd.read_parquet(p)["x"].tolist()),
}
EXPECTED_FIRST = {"json": {"a": 1, "b": [1, 2]}, "text": "first\n", "parquet": [1, 2]}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_atomic_write_creates_file_without_temporaries(tmp_path, kind):
    write, first, _, read = WRITERS[kind]
    path = tmp_path / "sub" / "dir" / f"file.{kind}"
    write(path, first)
    assert read(path) == EXPECTED_FIRST[kind]
    assert tmp_files(tmp_path) == [] and sorted(os.listdir(path.parent)) == [path.name]


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_atomic_write_failure_keeps_previous_content(tmp_path, monkeypatch, kind):
    write, first, second, read = WRITERS[kind]
    path = tmp_path / f"file.{kind}"
    write(path, first)

    def broken_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(results.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        write(path, second)
    monkeypatch.undo()
    assert read(path) == EXPECTED_FIRST[kind]
    assert tmp_files(tmp_path) == [] and os.listdir(tmp_path) == [path.name]


def test_atomic_parquet_serialisation_error_leaves_nothing(tmp_path):
    path = tmp_path / "f.parquet"
    atomic_write_parquet(path, pd.DataFrame({"x": [1]}))
    with pytest.raises(Exception):
        atomic_write_parquet(path, pd.DataFrame({"x": [object()]}))
    assert pd.read_parquet(path)["x"].tolist() == [1]
    assert os.listdir(tmp_path) == ["f.parquet"]


def test_failed_checkpoint_leaves_no_temporary(tmp_path, trial):
    writer = RunWriter(tmp_path, trial)
    writer.start(0, {})
    with pytest.raises(Exception):
        writer.save_checkpoint({"unpicklable": lambda: None}, step=1)
    assert tmp_files(tmp_path) == []


# ---- RunWriter lifecycle --------------------------------------------------------------------------
def test_run_writer_lifecycle_and_resume(tmp_path, trial):
    d = run_dir(tmp_path, trial)
    assert d == tmp_path / "didactic" / "runs" / trial.run_id
    w = RunWriter(tmp_path, trial)
    w.start(0, {"cmp:x": "abc"})
    m = read_manifest(d)
    assert m["status"] == "running" and m["reason"] is None
    assert m["schema_version"] == SCHEMA_VERSION
    assert set(m["git"]) == {"commit", "dirty"}
    assert "python" in m["versions"] and "torch" in m["versions"]
    assert m["run_id"] == trial.run_id and m["config_hash"] == trial.config_hash and m["seed"] == trial.seed
    assert m["config"] == trial.algo_config and m["data_hashes"] == {"cmp:x": "abc"}
    assert m["attempts"] == 1
    assert not is_complete(tmp_path, trial)

    for step in range(1, 6):
        w.log(step, {"loss": step * 1.0}, split="train")
    w.save_checkpoint({"weights": [1, 2, 3], "step": 5}, step=5)
    assert (d / CHECKPOINT).is_file() and read_manifest(d)["checkpoint_step"] == 5
    for step in range(6, 9):
        w.log(step, {"loss": step * 1.0}, split="train")
    w.flush_scalars()
    assert [r["step"] for r in map(json.loads, (d / SCALARS).read_text().splitlines())] == list(range(1, 9))
    assert tmp_files(tmp_path) == []

    # a crash here; a new writer resumes from the checkpoint
    w2 = RunWriter(tmp_path, trial)
    w2.start(0, {"cmp:x": "abc"})
    assert read_manifest(d)["attempts"] == 2
    assert read_manifest(d)["started_at"] == m["started_at"]
    state = w2.load_checkpoint()
    assert state == {"weights": [1, 2, 3], "step": 5}
    assert [r["step"] for r in w2._rows] == [1, 2, 3, 4, 5]
    assert all("run_id" not in r for r in w2._rows)
    for step in range(6, 9):
        w2.log(step, {"loss": step * 1.0}, split="train")
    w2.add_samples([{"reward_idx": 0, "err": 0.5}, {"reward_idx": 1, "err": 0.25}], step=8)
    w2.finish()

    rows = [json.loads(line) for line in (d / SCALARS).read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9)), "no duplicates, nothing lost"
    assert all(r["run_id"] == trial.run_id for r in rows)
    samples = pd.read_parquet(d / SAMPLES)
    assert samples["err"].tolist() == [0.5, 0.25] and samples["step"].tolist() == [8, 8]
    m = read_manifest(d)
    assert m["status"] == "done" and "finished_at" in m
    assert m["final_step"] == 8 and "checkpoint_step" not in m   # the checkpoint at step 5 is gone
    assert not (d / CHECKPOINT).exists()
    assert is_complete(tmp_path, trial)
    assert tmp_files(tmp_path) == []


def test_load_checkpoint_on_a_fresh_run_is_none(tmp_path, trial):
    w = RunWriter(tmp_path, trial)
    w.start(0, {})
    assert w.load_checkpoint() is None


def test_is_complete_needs_the_promised_files(tmp_path, trial):
    w = RunWriter(tmp_path, trial)
    w.start(0, {})
    w.log(0, {"m": 1.0}, "eval")
    w.finish()
    assert is_complete(tmp_path, trial)
    (run_dir(tmp_path, trial) / SAMPLES).unlink()
    assert not is_complete(tmp_path, trial)


def test_fail_records_the_reason(tmp_path, trial):
    w = RunWriter(tmp_path, trial)
    w.start(0, {})
    w.log(1, {"loss": 1.0}, "train")
    w.fail("RuntimeError: boom")
    m = read_manifest(run_dir(tmp_path, trial))
    assert m["status"] == "failed" and m["reason"] == "RuntimeError: boom"
    assert m["config_hash"] == trial.config_hash
    assert not is_complete(tmp_path, trial)
    assert len((run_dir(tmp_path, trial) / SCALARS).read_text().splitlines()) == 1


def test_fail_before_start(tmp_path, trial):
    RunWriter(tmp_path, trial).fail("ValueError: no task")
    m = read_manifest(run_dir(tmp_path, trial))
    assert m["status"] == "failed" and m["reason"] == "ValueError: no task"
    assert m["schema_version"] == SCHEMA_VERSION and m["run_id"] == trial.run_id


def test_failed_retry_keeps_the_checkpointed_scalars(tmp_path, trial):
    w = RunWriter(tmp_path, trial)
    w.start(0, {})
    for step in range(1, 6):
        w.log(step, {"loss": 1.0}, "train")
    w.save_checkpoint({"s": 1}, step=5)
    RunWriter(tmp_path, trial).fail("RuntimeError: CUDA out of memory")   # second attempt dies early
    w3 = RunWriter(tmp_path, trial)
    w3.start(0, {})
    assert w3.load_checkpoint() == {"s": 1}
    assert [r["step"] for r in w3._rows] == [1, 2, 3, 4, 5]


# ---- execute_trial ----------------------------------------------------------------------------------
def test_execute_trial_done(tmp_path, trial):
    t = shortened(trial, 300, 100)
    assert execute_trial(t, tmp_path, threads=1) == "done"
    d = run_dir(tmp_path, t)
    assert sorted(p.name for p in d.iterdir()) == [MANIFEST, SAMPLES, SCALARS]
    m = read_manifest(d)
    assert m["status"] == "done" and m["task_version"] == 0 and m["config"]["num_steps"] == 300
    assert list(m["data_hashes"]) == ["cmp:three-state"]
    s = scalars_of(tmp_path, t)
    assert sorted(set(s[s.split == "eval"].step)) == [0, 100, 200, 300]
    assert sorted(set(s[s.split == "train"].step)) == [100, 200, 300]
    assert {"successor_error", "q_error", "policy_kl", "greedy_match"} <= set(s[s.split == "eval"].metric)
    assert not s.duplicated(["step", "split", "metric"]).any()
    samples = pd.read_parquet(d / SAMPLES)
    assert len(samples) == 8 and set(samples.step) == {300}
    assert is_complete(tmp_path, t)


@pytest.mark.parametrize("change,expected", [
    ({"arch": "nope"}, "arch"),
    ({"archh": "tabular"}, "archh"),
])
def test_execute_trial_failure_is_recorded(tmp_path, trial, change, expected):
    t = dataclasses.replace(trial, algo_config={**shortened(trial, 10, 10).algo_config, **change})
    assert execute_trial(t, tmp_path, threads=1) == "failed"
    d = run_dir(tmp_path, t)
    m = read_manifest(d)
    assert m["status"] == "failed" and expected in m["reason"]
    assert "Traceback" in (d / "error.txt").read_text()
    assert not is_complete(tmp_path, t)


def test_execute_trial_is_deterministic_and_resumes_exactly(tmp_path, trial, monkeypatch):
    t = shortened(trial, 300, 100)
    assert execute_trial(t, tmp_path / "a", threads=1) == "done"
    assert execute_trial(t, tmp_path / "b", threads=1) == "done"
    a, b = scalars_of(tmp_path / "a", t), scalars_of(tmp_path / "b", t)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir(tmp_path / "a", t) / SAMPLES),
                                  pd.read_parquet(run_dir(tmp_path / "b", t) / SAMPLES))

    # interrupt right after the checkpoint at step 200, then resume: same numbers, no duplicated rows
    original = RunWriter.save_checkpoint

    def interrupting(self, state, step):
        original(self, state, step)
        if step == 200:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunWriter, "save_checkpoint", interrupting)
    with pytest.raises(KeyboardInterrupt):
        execute_trial(t, tmp_path / "c", threads=1)
    monkeypatch.undo()
    d = run_dir(tmp_path / "c", t)
    assert (d / CHECKPOINT).is_file() and read_manifest(d)["status"] == "running"
    assert not is_complete(tmp_path / "c", t)
    assert execute_trial(t, tmp_path / "c", threads=1) == "done"
    assert read_manifest(d)["attempts"] == 2
    pd.testing.assert_frame_equal(scalars_of(tmp_path / "c", t), a)


# ---- collect ------------------------------------------------------------------------------------------
def fake_run(root: Path, trial, status: str = "done", value: float = 1.0) -> Path:
    w = RunWriter(root, trial)
    w.start(0, {})
    w.log(0, {"q_error": value, "policy_kl": value / 2}, "eval")
    w.log(10, {"q_error": value / 10, "policy_kl": value / 20}, "eval")
    w.add_samples([{"reward_idx": i, "q_error": value} for i in range(3)], step=10)
    if status == "done":
        w.finish()
    elif status == "failed":
        w.fail("RuntimeError: diverged")
    else:
        w.flush_scalars()
    return run_dir(root, trial)


def test_collect_builds_the_index(tmp_path, tiny_trials):
    for i, t in enumerate(tiny_trials[:3]):
        fake_run(tmp_path, t, value=float(i + 1))
    summary = collect(tmp_path, "didactic", tiny_trials[:3])
    index = tmp_path / "didactic" / "index"
    assert summary["index_dir"] == index
    assert (summary["runs"], summary["done"]) == (3, 3)
    assert summary["missing"] == [] and summary["failed"] == [] and summary["incomplete"] == []
    runs = pd.read_csv(index / "runs.csv")
    assert sorted(runs.run_id) == sorted(t.run_id for t in tiny_trials[:3])
    assert set(runs.status) == {"done"}
    scalars = pd.read_parquet(index / "scalars.parquet")
    assert len(scalars) == 3 * 4
    assert {"run_id", "step", "split", "metric", "value", "algorithm", "task_id", "seed", "config_hash"} \
        <= set(scalars.columns)
    first = scalars[(scalars.run_id == tiny_trials[0].run_id) & (scalars.step == 0) & (scalars.metric == "q_error")]
    assert first.value.tolist() == [1.0] and first.algorithm.tolist() == ["onestep_fb"]
    samples = pd.read_parquet(index / "samples.parquet")
    assert len(samples) == 9 and set(samples.run_id) == {t.run_id for t in tiny_trials[:3]}
    assert tmp_files(tmp_path) == []


def test_collect_reports_missing_failed_and_incomplete(tmp_path, tiny_trials):
    done, failed, running, absent = tiny_trials
    fake_run(tmp_path, done)
    fake_run(tmp_path, failed, status="failed")
    fake_run(tmp_path, running, status="running")
    summary = collect(tmp_path, "didactic", tiny_trials)
    assert (summary["runs"], summary["done"]) == (3, 1)
    assert summary["failed"] == [{"run_id": failed.run_id, "reason": "RuntimeError: diverged"}]
    assert summary["incomplete"] == [running.run_id]
    # every expected cell without a done run is missing (the failed and the running ones too)
    assert sorted(summary["missing"]) == sorted([failed.run_id, running.run_id, absent.run_id])
    scalars = pd.read_parquet(summary["index_dir"] / "scalars.parquet")
    assert set(scalars.run_id) == {done.run_id}, "only done runs enter the index"
    assert collect(tmp_path, "didactic")["missing"] == []


def test_collect_refuses_mixed_schema_versions(tmp_path, tiny_trials):
    fake_run(tmp_path, tiny_trials[0])
    d = fake_run(tmp_path, tiny_trials[1])
    m = read_manifest(d)
    m["schema_version"] = SCHEMA_VERSION + 1
    (d / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(UserError, match="schema version"):
        collect(tmp_path, "didactic")
    assert not (tmp_path / "didactic" / "index").exists()


def test_collect_refuses_a_foreign_schema_version(tmp_path, tiny_trials):
    d = fake_run(tmp_path, tiny_trials[0])
    m = read_manifest(d)
    m["schema_version"] = SCHEMA_VERSION + 1
    (d / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(UserError, match=f"schema version {SCHEMA_VERSION + 1}"):
        collect(tmp_path, "didactic")


def test_collect_refuses_duplicated_scalar_rows(tmp_path, tiny_trials):
    fake_run(tmp_path, tiny_trials[0])
    d = fake_run(tmp_path, tiny_trials[1])
    lines = (d / SCALARS).read_text().splitlines()
    with open(d / SCALARS, "a") as f:
        f.write(lines[-1] + "\n")
    with pytest.raises(UserError) as info:
        collect(tmp_path, "didactic")
    # the row added after the run finished breaks the sha256 its manifest recorded
    assert "scalars.jsonl does not match the sha256" in str(info.value) and tiny_trials[1].run_id in str(info.value)


def test_collect_refuses_a_corrupt_manifest(tmp_path, tiny_trials):
    d = fake_run(tmp_path, tiny_trials[0])
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match="manifest.json is not valid JSON"):
        collect(tmp_path, "didactic")


def test_collect_without_runs(tmp_path):
    with pytest.raises(UserError, match="no runs under"):
        collect(tmp_path, "didactic")


def test_grid_timing_spans_the_runs_and_compares_their_results_with_a_reference(tmp_path, tiny_trials):
    from benchmarks import grid_timing

    first, second = tiny_trials[:2]
    for copy in ("bench", "reference"):
        for t in (first, second):
            w = RunWriter(tmp_path / copy, t)
            w.trial_in_process = 2 if t is second else 1
            w.start(0, {})
            w.log(1, {"loss": 1.0}, split="train")
            w.finish()
    changed = read_manifest(run_dir(tmp_path / "reference", second))
    changed["result_sha256"][SCALARS] = "0" * 64          # the reference recorded other results for this run
    atomic_write_json(run_dir(tmp_path / "reference", second) / MANIFEST, changed)
    frame, lines = grid_timing.summarize(grid_timing.read_runs(tmp_path / "bench" / "didactic" / "runs"),
                                         grid_timing.read_runs(tmp_path / "reference" / "didactic" / "runs"))
    assert sorted(frame.run_id) == sorted([first.run_id, second.run_id])
    assert frame.set_index("run_id").same_as_reference.to_dict() == {first.run_id: True, second.run_id: False}
    assert "in a reused worker: 1" in lines[1] and "1 of 2 runs found there" in lines[-1]
    assert f"sum of run wall times {frame.wall_time_s.sum():.0f} s" in lines[1]
    with pytest.raises(UserError, match="not a directory"):
        grid_timing.read_runs(tmp_path / "missing")
