"""Integrity of what a bench leaves on disk: checksummed checkpoints (a corrupt or cut one falls back to the
previous good one or to scratch, in one line), the sha256 of a finished run's files in its manifest
(verified by `collect` and `tables`; damaged results are one line naming the run, exit 2), the backfill of
those hashes for runs finished before (`collect --record-hashes`), one bench per results directory and
suite, and the removal of an interrupted atomic write's temporary file."""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import fixtures
from benchmarks.config import load_experiment
from benchmarks.results import (CHECKPOINT, MANIFEST, PREVIOUS_CHECKPOINT, SAMPLES, SCALARS, BenchLock,
                                RunWriter, check_checkpoints, collect, execute_trial, read_manifest,
                                record_result_hashes, run_dir)
from suites.errors import UserError
from suites.files import CorruptFile, checked_bytes, read_checked

b2fb = functools.partial(fixtures.b2fb, timeout=300)


@pytest.fixture(scope="module")
def tiny_trials():
    return load_experiment("didactic", "tiny").trials()


def one_line_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


# ---- checked files -------------------------------------------------------------------------------------
def test_checked_bytes_round_trip_and_every_damage_is_detected(tmp_path):
    path = tmp_path / "f"
    payload = bytes(range(256)) * 10
    path.write_bytes(checked_bytes(payload, {"step": 7}))
    assert read_checked(path) == (payload, {"step": 7})
    data = path.read_bytes()
    damaged = {
        "flipped byte": data[:-100] + bytes([data[-100] ^ 1]) + data[-99:],
        "cut in half": data[: len(data) // 2],
        "cut in the header": data[:20],
        "no header": payload,
        "empty": b"",
        "byte added": data + b"\0",
    }
    for why, content in damaged.items():
        path.write_bytes(content)
        with pytest.raises(CorruptFile) as info:
            read_checked(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), why


# ---- checkpoints ----------------------------------------------------------------------------------------
def checkpointed_writer(root: Path, trial, steps=(5, 10)) -> RunWriter:
    w = RunWriter(root, trial)
    w.start(0, {})
    for step in range(1, steps[-1] + 1):
        w.log(step, {"loss": float(step)}, "train")
        if step in steps:
            w.save_checkpoint({"weights": [step]}, step=step)
    return w


def flip_byte(path: Path, offset: int = -50) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_trials, damage, capfd):
    trial = tiny_trials[0]
    checkpointed_writer(tmp_path, trial)
    d = run_dir(tmp_path, trial)
    assert (d / CHECKPOINT).is_file() and (d / PREVIOUS_CHECKPOINT).is_file()
    if damage == "flip":
        flip_byte(d / CHECKPOINT)
    else:
        (d / CHECKPOINT).write_bytes((d / CHECKPOINT).read_bytes()[:200])
    w = RunWriter(tmp_path, trial)
    w.start(0, {})
    assert w.load_checkpoint() == {"weights": [5]}
    assert [r["step"] for r in w._rows] == [1, 2, 3, 4, 5]       # the rows after step 5 are dropped
    line = capfd.readouterr().err.strip()
    assert line.count("\n") == 0 and str(d / CHECKPOINT) in line
    assert f"run {trial.run_id} restarts from its previous checkpoint" in line
    assert read_manifest(d)["recovered"] == line.removeprefix("warning: ")


def test_both_checkpoints_corrupt_restart_from_scratch(tmp_path, tiny_trials, capfd):
    trial = tiny_trials[0]
    checkpointed_writer(tmp_path, trial)
    d = run_dir(tmp_path, trial)
    flip_byte(d / CHECKPOINT)
    flip_byte(d / PREVIOUS_CHECKPOINT, offset=-10)
    w = RunWriter(tmp_path, trial)
    w.start(0, {})
    assert w.load_checkpoint() is None and w._rows == []
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "restarts from scratch" in lines[1] and str(d / PREVIOUS_CHECKPOINT) in lines[1]
    w.log(1, {"loss": 1.0}, "train")
    w.finish()                                                       # no stale rows survive
    assert [json.loads(x)["step"] for x in (d / SCALARS).read_text().splitlines()] == [1]
    assert not (d / CHECKPOINT).exists() and not (d / PREVIOUS_CHECKPOINT).exists()


def test_the_driver_checks_checkpoints_before_any_trial(tmp_path, tiny_trials):
    a, b, c = tiny_trials[:3]
    checkpointed_writer(tmp_path, a)
    checkpointed_writer(tmp_path, b, steps=(5,))
    checkpointed_writer(tmp_path, c)
    flip_byte(run_dir(tmp_path, a) / CHECKPOINT)
    (run_dir(tmp_path, b) / CHECKPOINT).write_bytes(b"")
    lines = check_checkpoints(tmp_path, [a, b, c])
    assert len(lines) == 2
    assert str(run_dir(tmp_path, a) / CHECKPOINT) in lines[0] and "previous checkpoint" in lines[0]
    assert "step 5" in lines[0]
    assert str(run_dir(tmp_path, b) / CHECKPOINT) in lines[1] and "restarts from scratch" in lines[1]
    assert not (run_dir(tmp_path, a) / CHECKPOINT).exists()          # the bad ones are gone
    assert (run_dir(tmp_path, c) / CHECKPOINT).is_file()             # the good one stays
    assert check_checkpoints(tmp_path, [a, b, c]) == []


RESUME_SETTINGS = ["onestep_fb.num_steps=2000", "onestep_fb.eval_every=250", "onestep_fb.checkpoint_every=250"]
RESUME_ARGS = ["run", "--suite", "didactic", "--size", "tiny", "--algos", "onestep_fb", "--tasks",
               "didactic/three-state-v0", *[x for s in RESUME_SETTINGS for x in ("--set", s)], "--no-tables"]


def test_a_corrupt_checkpoint_is_one_line_and_the_rerun_matches_an_uninterrupted_one(tmp_path):
    """Through the CLI: a bench killed with SIGKILL after its second checkpoint, its latest checkpoint
    corrupted; the rerun says so in one line, resumes from the previous checkpoint, and its results equal
    those of an uninterrupted run bit for bit."""
    proc = subprocess.Popen(fixtures.b2fb_command(tmp_path, *RESUME_ARGS), cwd=fixtures.REPO,
                            env=fixtures.cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    runs = tmp_path / "results" / "didactic" / "runs"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            m = [read_manifest(d) for d in runs.glob("*")] if runs.is_dir() else []
            if m and m[0] and m[0].get("checkpoint_step", 0) >= 500:
                break
            assert proc.poll() is None, "the bench ended before it could be killed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)                      # the bench and its Ray, at once
        proc.wait()
    (run,) = runs.iterdir()
    assert (run / PREVIOUS_CHECKPOINT).is_file()
    flip_byte(run / CHECKPOINT)
    resumed = b2fb(tmp_path, *RESUME_ARGS)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    warnings = [x for x in resumed.stderr.splitlines() if x.startswith("warning: ")]
    assert len(warnings) == 1 and str(run / CHECKPOINT) in warnings[0]
    assert "restarts from its previous checkpoint" in warnings[0]
    # an uninterrupted run of the same trial (a bench's trial is exactly this call, inside a Ray worker)
    (trial,) = load_experiment("didactic", "tiny", overrides=RESUME_SETTINGS, algos=["onestep_fb"],
                               tasks=["didactic/three-state-v0"]).trials()
    assert trial.run_id == run.name and execute_trial(trial, tmp_path / "ref", threads=1) == "done"
    ref = tmp_path / "ref" / "didactic" / "runs" / run.name
    assert (run / SCALARS).read_bytes() == (ref / SCALARS).read_bytes()
    assert (run / SAMPLES).read_bytes() == (ref / SAMPLES).read_bytes()


# ---- finished results -----------------------------------------------------------------------------------
def finished_bench(tmp: Path, tiny_trials) -> list[Path]:
    dirs = []
    for i, t in enumerate(tiny_trials):
        w = RunWriter(tmp / "results", t)
        w.start(0, {})
        for step in (0, 10, 20):
            w.log(step, {"q_error": 1.0 / (i + step + 1), "policy_kl": 0.5}, "eval")
        w.add_samples([{"reward_idx": k, "q_error": 0.1 * k} for k in range(4)], step=20)
        w.finish()
        dirs.append(run_dir(tmp / "results", t))
    return dirs


def _cut_mid_line(d):
    text = (d / SCALARS).read_text()
    (d / SCALARS).write_text(text[: len(text) - 7])


def _truncate_parquet(d):
    (d / SAMPLES).write_bytes((d / SAMPLES).read_bytes()[:300])


def _drop_row(d):
    lines = (d / SCALARS).read_text().splitlines(keepends=True)
    (d / SCALARS).write_text("".join(lines[:-1]))


def _empty_scalars(d):
    (d / SCALARS).write_text("")


def _alter_value(d):
    (d / SCALARS).write_text((d / SCALARS).read_text().replace('"value": 0.5', '"value": 0.25', 1))


def _junk_row(d):
    with open(d / SCALARS, "a") as f:
        f.write('{"hello": "world"}\n')


def _alter_sample(d):
    frame = pd.read_parquet(d / SAMPLES)
    frame.loc[0, "q_error"] = 42.0
    frame.to_parquet(d / SAMPLES, index=False)


def _drop_sample(d):
    pd.read_parquet(d / SAMPLES).iloc[1:].to_parquet(d / SAMPLES, index=False)


def _delete_samples(d):
    (d / SAMPLES).unlink()


def _manifest_list(d):
    (d / MANIFEST).write_text("[1, 2, 3]\n")


def _manifest_not_json(d):
    (d / MANIFEST).write_text('{"status": "done"')


def _manifest_without_hashes(d):
    m = json.loads((d / MANIFEST).read_text())
    del m["result_sha256"]
    (d / MANIFEST).write_text(json.dumps(m))


def _manifest_binary(d):
    (d / MANIFEST).write_bytes(b"\xff\xfe\x00garbage")


DAMAGE = {
    "scalars cut mid-line": (_cut_mid_line, "scalars.jsonl does not match the sha256"),
    "parquet truncated": (_truncate_parquet, "samples.parquet does not match the sha256"),
    "a row lost": (_drop_row, "scalars.jsonl does not match the sha256"),
    "scalars emptied": (_empty_scalars, "scalars.jsonl does not match the sha256"),
    "a value altered": (_alter_value, "scalars.jsonl does not match the sha256"),
    "a junk row added": (_junk_row, "scalars.jsonl does not match the sha256"),
    "a sample altered": (_alter_sample, "samples.parquet does not match the sha256"),
    "a sample lost": (_drop_sample, "samples.parquet does not match the sha256"),
    "samples deleted": (_delete_samples, "samples.parquet is missing"),
    "manifest a JSON list": (_manifest_list, "manifest.json holds a JSON list, not an object"),
    "manifest not JSON": (_manifest_not_json, "manifest.json is not valid JSON"),
    "manifest not text": (_manifest_binary, "manifest.json is not valid JSON"),
    "no recorded hashes": (_manifest_without_hashes, "--record-hashes"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_results_are_refused_in_one_line_naming_the_run(tmp_path, tiny_trials, case):
    damage, expected = DAMAGE[case]
    dirs = finished_bench(tmp_path, tiny_trials)
    damage(dirs[2])
    with pytest.raises(UserError) as info:
        collect(tmp_path / "results", "didactic")
    assert f"run {dirs[2].name}:" in str(info.value) and expected in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "results" / "didactic" / "index").exists()   # nothing half-written


@pytest.mark.parametrize("command", ["collect", "tables"])
def test_damaged_results_through_the_cli(tmp_path, tiny_trials, command):
    dirs = finished_bench(tmp_path, tiny_trials)
    _cut_mid_line(dirs[1])
    args = [command, "--suite", "didactic"] + (["--size", "tiny"] if command == "tables" else [])
    one_line_error(b2fb(tmp_path, *args), f"run {dirs[1].name}:", "scalars.jsonl")


# ---- recording the hashes of runs finished before manifests carried them -------------------------------
def test_record_hashes_backfills_once_and_refuses_damaged_runs(tmp_path, tiny_trials):
    dirs = finished_bench(tmp_path, tiny_trials)
    before = {d: (d / MANIFEST).read_text() for d in dirs}
    for d in dirs:                                         # as finished by older code
        _manifest_without_hashes(d)
        m = json.loads((d / MANIFEST).read_text())
        (d / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    with pytest.raises(UserError, match="--record-hashes"):
        collect(tmp_path / "results", "didactic")
    out = b2fb(tmp_path, "collect", "--suite", "didactic", "--record-hashes")
    assert out.returncode == 0, out.stderr
    assert "result hashes: 4 recorded, 0 already recorded and verified" in out.stdout
    assert {d: (d / MANIFEST).read_text() for d in dirs} == before   # only the hashes were added back
    again = b2fb(tmp_path, "collect", "--suite", "didactic", "--record-hashes")
    assert "result hashes: 0 recorded, 4 already recorded and verified" in again.stdout
    assert {d: (d / MANIFEST).read_text() for d in dirs} == before   # idempotent
    # a run damaged before its hashes were recorded is refused, not sealed
    _manifest_without_hashes(dirs[0])
    _junk_row(dirs[0])
    with pytest.raises(UserError, match="line 7 is not a row of this run"):
        record_result_hashes(dirs[0])
    one_line_error(b2fb(tmp_path, "collect", "--suite", "didactic", "--record-hashes"), dirs[0].name)
    assert "result_sha256" not in read_manifest(dirs[0])


# ---- one bench per results directory and suite ----------------------------------------------------------
def test_a_second_bench_is_refused_naming_the_holder(tmp_path):
    with BenchLock(tmp_path / "results", "didactic"):
        proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--no-tables")
        one_line_error(proc, f"another bench (pid {os.getpid()}) is running on", str(tmp_path / "results"))
        assert not (tmp_path / "results" / "didactic" / "runs").exists()
        dry = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--dry-run")
        assert dry.returncode == 0                   # a dry run writes nothing and takes no lock
    with BenchLock(tmp_path / "results", "didactic"):       # released: taken again
        pass


def test_a_lock_left_by_kill_9_is_taken_over_and_temporaries_are_removed(tmp_path):
    holder = subprocess.Popen(
        [fixtures.sys.executable, "-c", "import sys, time; from benchmarks.results import BenchLock; "
         f"lock = BenchLock({str(tmp_path / 'results')!r}, 'didactic').__enter__(); print('held', flush=True); "
         "time.sleep(600)"], cwd=fixtures.REPO, env=fixtures.cli_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        BenchLock(tmp_path / "results", "didactic").__enter__()
    holder.kill()
    holder.wait()
    run = tmp_path / "results" / "didactic" / "runs" / "some-run"
    run.mkdir(parents=True)
    leftovers = [run / ".scalars.jsonl.abc123.tmp", tmp_path / "results" / "didactic" / ".x.tmp"]
    for p in leftovers:
        p.write_text("half written")
    keep = run / "scalars.jsonl"
    keep.write_text("{}\n")
    with BenchLock(tmp_path / "results", "didactic") as lock:    # the stale lock is taken over
        assert (tmp_path / "results" / "didactic" / ".bench.lock").read_text().strip() == str(os.getpid())
        assert sorted(lock.removed_temp_files) == sorted(leftovers)
    assert not any(p.exists() for p in leftovers) and keep.is_file()


def test_record_hashes_waits_for_no_bench(tmp_path, tiny_trials):
    finished_bench(tmp_path, tiny_trials)
    with BenchLock(tmp_path / "results", "didactic"):
        one_line_error(b2fb(tmp_path, "collect", "--suite", "didactic", "--record-hashes"), "another bench")


def test_record_hashes_script_walks_every_results_root(tmp_path, tiny_trials):
    """`python -m benchmarks.record_hashes results`: every <root>/<suite>/runs/ below, nested roots (the
    committed diagnostics) included; a second pass records nothing and changes nothing."""
    main_runs = finished_bench(tmp_path, tiny_trials[:2])
    nested_runs = finished_bench(tmp_path / "results" / "didactic" / "diagnostics" / "cpu" / "probe", tiny_trials[2:])
    for d in main_runs + nested_runs:
        _manifest_without_hashes(d)
    command = [fixtures.sys.executable, "-m", "benchmarks.record_hashes", str(tmp_path / "results")]
    first = subprocess.run(command, cwd=fixtures.REPO, env=fixtures.cli_env(), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(": 2 recorded, 0 verified, 0 not done") == 2
    manifests = {d: (d / MANIFEST).read_text() for d in main_runs + nested_runs}
    assert all("result_sha256" in m for m in manifests.values())
    collect(tmp_path / "results", "didactic")
    collect(tmp_path / "results" / "didactic" / "diagnostics" / "cpu" / "probe" / "results", "didactic")
    second = subprocess.run(command, cwd=fixtures.REPO, env=fixtures.cli_env(), capture_output=True, text=True)
    assert second.stdout.count(": 0 recorded, 2 verified, 0 not done") == 2
    assert {d: (d / MANIFEST).read_text() for d in manifests} == manifests
