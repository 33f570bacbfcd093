"""The CLI's contract for bad input: one `error: ...` line on stderr, exit code 2, no traceback.

Commands run in a subprocess (`python -m benchmarks`) with results and data directories under
tmp_path; nothing here starts Ray (`run` is always `--dry-run`).  Every variant of a bad custom CMP
file is tested in-process through `load_cmp`; two go through `run`, which builds each task first.
"""
from __future__ import annotations

import functools
import subprocess
import textwrap
from pathlib import Path

import pytest

from suites.didactic.cmp import load_cmp
from suites.didactic.task import make_task
from suites.errors import UserError
from fixtures import TWO_STATE_CMP

import fixtures

REPO = fixtures.REPO


b2fb = functools.partial(fixtures.b2fb, timeout=120)


def assert_user_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got {proc.stderr!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    return line


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


GRID = """\
suite: didactic
sizes:
  tiny:
    seeds: 1
    tasks: [didactic/three-state-v0]
    algorithms:
      onestep_fb: {arch: tabular, num_steps: 10}
"""


# ---- bad input through the CLI -----------------------------------------------------------------
def test_unknown_suite(tmp_path):
    assert_user_error(b2fb(tmp_path, "run", "--suite", "didatic", "--dry-run"), "'didatic'", "'didactic'")


def test_unknown_task(tmp_path):
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--tasks", "didactic/three-stat-v0",
                "--dry-run")
    assert_user_error(proc, "'didactic/three-stat-v0'", "'didactic/three-state-v0'")


def test_unknown_algorithm(tmp_path):
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--algos", "fbb", "--dry-run")
    assert_user_error(proc, "'fbb'", "'fb'")


def test_unknown_size(tmp_path):
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tinyy", "--dry-run")
    assert_user_error(proc, "'tinyy'", "'tiny'")


def test_malformed_yaml_grid(tmp_path):
    bad = write(tmp_path / "bad.yaml", "suite: didactic\nsizes:\n  tiny:\n    seeds: 1\n   tasks: [a]\n")
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--config", str(bad), "--dry-run")
    assert_user_error(proc, str(bad.resolve()), "not valid YAML", "line 5")


def test_missing_grid_file(tmp_path):
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--config", str(tmp_path / "nope.yaml"), "--dry-run")
    assert_user_error(proc, "nope.yaml", "does not exist")


def test_unknown_config_key_from_set(tmp_path):
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--set", "onestep_fb.lrr=1", "--dry-run")
    assert_user_error(proc, "'lrr'", "'lr'")


def test_unknown_config_key_in_grid_file(tmp_path):
    grid = write(tmp_path / "grid.yaml", GRID.replace("num_steps: 10}", "num_steps: 10, lrr: 0.1}"))
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--config", str(grid), "--dry-run")
    assert_user_error(proc, "'lrr'", "'lr'", str(grid.resolve()))


@pytest.mark.parametrize("args,names", [
    (["run", "--size", "tiny"], ["--suite"]),
    (["run", "--suite", "didactic", "--seeds", "abc"], ["--seeds", "'abc'"]),
])
def test_argparse_errors_are_one_line(tmp_path, args, names):
    assert_user_error(b2fb(tmp_path, *args), *names)


def test_collect_without_runs(tmp_path):
    assert_user_error(b2fb(tmp_path, "collect", "--suite", "didactic"), "no runs under",
                      str(tmp_path / "results"))


def test_debug_shows_the_traceback(tmp_path):
    proc = b2fb(tmp_path, "--debug", "run", "--suite", "didatic", "--dry-run")
    assert proc.returncode not in (0, 2)
    assert "Traceback" in proc.stderr and "UnknownName" in proc.stderr


# ---- what works --------------------------------------------------------------------------------
def test_list(tmp_path):
    proc = b2fb(tmp_path, "list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for name in ("didactic/three-state-v0", "didactic/five-state-v0", "didactic/custom-v0", "onestep_fb", "fb "):
        assert name in proc.stdout


def test_dry_run_lists_the_tiny_grid_and_writes_nothing(tmp_path):
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "4 trials (0 complete, 4 to run)" in proc.stdout
    assert str(tmp_path / "results") in proc.stdout
    todo = [line.split()[1] for line in proc.stdout.splitlines() if line.strip().startswith("todo")]
    assert len(todo) == 4 and len(set(todo)) == 4
    assert {r.split("--")[0] for r in todo} == {"onestep_fb", "fb"}
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()


def test_dry_run_marks_complete_runs_done(tmp_path):
    from benchmarks.config import load_experiment
    from benchmarks.results import RunWriter

    trial = load_experiment("didactic", "tiny").trials()[0]
    writer = RunWriter(tmp_path / "results", trial)
    writer.start(0, {})
    writer.log(1, {"m": 1.0}, "eval")
    writer.add_samples([{"x": 1.0}], step=1)
    writer.finish()
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "4 trials (1 complete, 3 to run)" in proc.stdout
    assert f"done  {trial.run_id}" in proc.stdout


# ---- custom CMP files (validated when the task is built) --------------------------------------
CMP = TWO_STATE_CMP

BAD_CMPS = {
    "row_sum": (CMP.replace("[0.5, 0.5]]\nbehaviour", "[0.5, 0.4]]\nbehaviour"),
                ["transitions", "sums to 0.9", "not 1"]),
    "beta_row_sum": (CMP.replace("behaviour_policy: [[0.5, 0.5]", "behaviour_policy: [[0.5, 0.6]"),
                     ["behaviour_policy", "sums to 1.1"]),
    "rho_sum": (CMP.replace("rho: [0.5, 0.5]", "rho: [0.5, 0.6]"), ["rho", "sums to 1.1"]),
    "negative": (CMP.replace("[[0.0, 1.0], [1.0, 0.0]]", "[[-0.5, 1.5], [1.0, 0.0]]"),
                 ["transitions", "negative"]),
    "nan": (CMP.replace("rho: [0.5, 0.5]", "rho: [.nan, 0.5]"), ["rho", "non-finite"]),
    "beta_shape": (CMP.replace("behaviour_policy: [[0.5, 0.5], [0.5, 0.5]]",
                               "behaviour_policy: [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]"),
                   ["behaviour_policy", "[3, 2]", "[2, 2]"]),
    "beta_ndim": (CMP.replace("behaviour_policy: [[0.5, 0.5], [0.5, 0.5]]", "behaviour_policy: [0.5, 0.5]"),
                  ["behaviour_policy", "2 dimensions"]),
    "rho_length": (CMP.replace("rho: [0.5, 0.5]", "rho: [1.0]"), ["rho", "[1]", "[2]"]),
    "P_not_square": (CMP.replace("[[0.0, 1.0], [1.0, 0.0]]", "[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]")
                        .replace("[[0.0, 1.0], [0.5, 0.5]]", "[[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]"),
                     ["transitions", "last axis"]),
    "ragged": (CMP.replace("[[0.0, 1.0], [0.5, 0.5]]", "[[0.0, 1.0], [1.0]]"), ["transitions", "rectangular"]),
    "gamma_one": (CMP.replace("gamma: 0.9", "gamma: 1.0"), ["gamma", "1.0", "[0, 1)"]),
    "gamma_negative": (CMP.replace("gamma: 0.9", "gamma: -0.1"), ["gamma", "-0.1", "[0, 1)"]),
    "gamma_string": (CMP.replace("gamma: 0.9", "gamma: high"), ["gamma", "'high'"]),
    "gamma_bool": (CMP.replace("gamma: 0.9", "gamma: true"), ["gamma", "True"]),
    "malformed_yaml": (CMP.replace("rho: [0.5, 0.5]", "rho: [0.5, 0.5\nextra: 1"), ["not valid YAML", "line"]),
    "not_mapping": ("- 1\n- 2\n", ["must be a mapping"]),
    "unknown_key": (CMP + "reward: [1, 0]\n", ["unknown key 'reward'", "gamma"]),
    "missing_key": (CMP.replace("rho: [0.5, 0.5]\n", ""), ["missing key 'rho'"]),
}


def test_valid_cmp_loads(tmp_path):
    cmp = load_cmp(write(tmp_path / "ok.yaml", CMP))
    assert (cmp.name, cmp.n_states, cmp.n_actions, cmp.gamma) == ("two-state", 2, 2, 0.9)
    assert cmp.P[1, 1].tolist() == [0.5, 0.5]
    example = load_cmp(REPO / "suites" / "didactic" / "cmps" / "four-state-chain.yaml")
    assert (example.n_states, example.n_actions) == (4, 2)


@pytest.mark.parametrize("case", sorted(BAD_CMPS))
def test_bad_cmp_file(tmp_path, case):
    text, names = BAD_CMPS[case]
    assert text != CMP
    path = write(tmp_path / f"{case}.yaml", text)
    with pytest.raises(UserError) as info:
        load_cmp(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip()
    assert f"CMP file {path}" in msg
    for name in names:
        assert name in msg, f"{name!r} not in {msg!r}"


def test_missing_cmp_file(tmp_path):
    with pytest.raises(UserError) as info:
        load_cmp(tmp_path / "nope.yaml")
    msg = str(info.value)
    assert "\n" not in msg
    assert "nope.yaml" in msg and "does not exist" in msg and "four-state-chain.yaml" in msg


def test_custom_task_builds_from_a_valid_file_and_refuses_a_bad_one(tmp_path):
    task = make_task("file", path=str(write(tmp_path / "ok.yaml", CMP)))
    assert (task.obs_dim, task.n_actions, task.gamma) == (2, 2, 0.9)
    bad = write(tmp_path / "bad.yaml", BAD_CMPS["row_sum"][0])
    with pytest.raises(UserError, match="sums to 0.9"):
        make_task("file", path=str(bad))
    with pytest.raises(UserError, match="needs the task kwarg 'path'"):
        make_task("file")


@pytest.mark.parametrize("case", ["row_sum", "missing_file"])
def test_run_validates_custom_cmp_file_before_running(tmp_path, case):
    if case != "missing_file":
        write(tmp_path / "bad_cmp.yaml", BAD_CMPS[case][0])
    grid = write(tmp_path / "grid.yaml", GRID.replace(
        "tasks: [didactic/three-state-v0]", "tasks: [{id: didactic/custom-v0, kwargs: {path: bad_cmp.yaml}}]"))
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--config", str(grid), "--dry-run")
    problem = {"row_sum": "sums to 0.9", "missing_file": "does not exist"}[case]
    assert_user_error(proc, str(tmp_path / "bad_cmp.yaml"), problem)
    assert not (tmp_path / "results").exists()


def test_run_accepts_a_valid_custom_cmp_file(tmp_path):
    write(tmp_path / "cmp.yaml", CMP)
    grid = write(tmp_path / "grid.yaml", GRID.replace(
        "tasks: [didactic/three-state-v0]", "tasks: [{id: didactic/custom-v0, kwargs: {path: cmp.yaml}}]"))
    proc = b2fb(tmp_path, "run", "--suite", "didactic", "--size", "tiny", "--config", str(grid), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "1 trials (0 complete, 1 to run)" in proc.stdout and "todo  onestep_fb--custom-v0--" in proc.stdout
