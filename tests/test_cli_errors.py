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


# ---- every class of bad input, across every command: one line, exit 2, nothing printed before -------------
# In-process through `benchmarks.cli.main` (fast); `benchmarks.orchestrate` is made unimportable, so a case
# that would reach Ray fails at once instead of starting it.  {tmp}: the test's directory; {file}: a regular
# file there; {ro}: a directory nobody can create (inside /proc, read-only even for root).
def _setup_grid(tmp, text):
    return write(tmp / "grid.yaml", text)


def _grid(**size_block) -> str:
    import yaml
    block = {"seeds": 1, "tasks": ["didactic/three-state-v0"],
             "algorithms": {"onestep_fb": {"arch": "tabular", "num_steps": 10}}, **size_block}
    return yaml.safe_dump({"suite": "didactic", "sizes": {"tiny": block}})


def _damaged_run(tmp, damage):
    from benchmarks.config import load_experiment
    from benchmarks.results import RunWriter, run_dir

    trial = load_experiment("didactic", "tiny").trials()[0]
    w = RunWriter(tmp / "results", trial)
    w.start(0, {})
    w.log(0, {"q_error": 1.0}, "eval")
    w.log(10, {"q_error": 0.5}, "eval")
    w.add_samples([{"reward_idx": 0, "q_error": 0.5}], step=10)
    w.finish()
    damage(run_dir(tmp / "results", trial))


def _dmc_dataset(tmp, kind):
    d = tmp / "dataset"
    if kind in ("state only", "stale pixels"):  # a real state dataset (and frames from another one)
        import json

        from suites.dmc.collect import collect

        collect("walker", "random", 10, d, workers=1, episode_length=10, progress=False)
        if kind == "state only":
            return d
        pixels = d / "pixels-32-cam0-reflection0-shadow0"
        pixels.mkdir()
        (pixels / "meta.json").write_text(json.dumps({"state_files": {"000000_10.npz": "0" * 64}}))
        return d
    d.mkdir()
    if kind == "corrupt":
        (d / "0_200.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return d


RUN = ["run", "--suite", "didactic", "--size", "tiny"]
DMC = ["run", "--suite", "dmc", "--size", "tiny", "--algos", "onestep_fb"]
T2I = ["run", "--suite", "t2i", "--size", "tiny"]
PIXELS = ["run", "--suite", "dmc", "--size", "tiny", "--tasks", "dmc/walker-zeroshot-pixels-v0"]
RENDER = ["render", "--domain", "walker", "--dataset", "{dataset}"]
TINY_FRAMES = ["--image-size", "32", "--flag", "shadow=false", "--flag", "reflection=false"]
NO_GL = {"MUJOCO_GL": "disabled"}  # a machine where no GL backend starts
BAD_INPUTS = {
    # list
    "list unknown suite": (["list", "--suite", "didatic"], ["'didatic'", "'didactic'"]),
    "list unknown tag": (["list", "--tags", "nosuchtag"], ["'nosuchtag'"]),
    "list unknown option": (["list", "--colour"], ["--colour"]),
    "list stray argument": (["list", "extra"], ["extra"]),
    # run: names
    "run unknown suite": (["run", "--suite", "dcm"], ["'dcm'", "'dmc'"]),
    "run unknown size": (RUN[:3] + ["--size", "huge"], ["'huge'"]),
    "run unknown algorithm": (RUN + ["--algos", "fbb"], ["'fbb'"]),
    "run unknown task": (RUN + ["--tasks", "didactic/two-state-v0"], ["'didactic/two-state-v0'"]),
    "run no suite": (["run"], ["--suite"]),
    # run: counts, seeds, concurrency
    "run zero seeds": (RUN + ["--seeds", "0"], ["--seeds", "at least 1"]),
    "run negative seeds": (RUN + ["--seeds", "-2"], ["--seeds", "at least 1"]),
    "run seeds not a number": (RUN + ["--seeds", "three"], ["--seeds", "'three'"]),
    "run zero concurrency": (RUN + ["--max-concurrent", "0"], ["--max-concurrent", "at least 1"]),
    "run negative concurrency": (RUN + ["--max-concurrent", "-1"], ["--max-concurrent", "at least 1"]),
    "grid zero seeds": (RUN + ["--config", "{grid}"], ["seeds"], _grid(seeds=0)),
    "grid negative seed": (RUN + ["--config", "{grid}"], ["seeds"], _grid(seeds=[-1])),
    "grid seeds a string": (RUN + ["--config", "{grid}"], ["seeds", "'abc'"], _grid(seeds="abc")),
    "grid zero concurrency": (RUN + ["--config", "{grid}"], ["max_concurrent", "0"], _grid(max_concurrent=0)),
    "grid negative cpus": (RUN + ["--config", "{grid}"], ["resources.cpu", "-1"], _grid(resources={"cpu": -1})),
    "grid empty task list": (RUN + ["--config", "{grid}"], ["tasks"], _grid(tasks=[])),
    "algo zero steps": (RUN + ["--set", "onestep_fb.num_steps=0"], ["num_steps"]),
    "algo negative steps": (RUN + ["--set", "onestep_fb.num_steps=-5"], ["num_steps"]),
    "algo zero batch": (RUN + ["--set", "fb.batch_size=0"], ["batch_size"]),
    "algo negative lr": (RUN + ["--set", "onestep_fb.lr=-0.1"], ["lr"]),
    "algo zero eval_every": (RUN + ["--set", "fb.eval_every=0"], ["eval_every"]),
    "algo steps a string": (RUN + ["--set", "onestep_fb.num_steps=many"], ["num_steps", "'many'"]),
    "algo unknown key": (RUN + ["--set", "onestep_fb.steps=5"], ["'steps'"]),
    "set without =": (RUN + ["--set", "onestep_fb.lr"], ["onestep_fb.lr"]),
    "set unknown algorithm": (RUN + ["--set", "ddpo.learning_rate=1"], ["'ddpo'"]),
    # run: task kwargs outside their domain
    "didactic gamma 1.5": (RUN + ["--set", "task.gamma=1.5"], ["gamma", "1.5", "[0, 1)"]),
    "didactic gamma 1": (RUN + ["--set", "task.gamma=1.0"], ["gamma", "[0, 1)"]),
    "didactic gamma negative": (RUN + ["--set", "task.gamma=-0.1"], ["gamma", "-0.1"]),
    "didactic gamma a string": (RUN + ["--set", "task.gamma=high"], ["gamma", "'high'"]),
    "didactic zero eval rewards": (RUN + ["--set", "task.n_eval_rewards=0"], ["n_eval_rewards", "0"]),
    "didactic negative reward seed": (RUN + ["--set", "task.reward_seed=-1"], ["reward_seed", "-1"]),
    "didactic unknown batch mode": (RUN + ["--set", "task.batch=some"], ["batch", "'some'"]),
    "didactic unknown kwarg": (RUN + ["--set", "task.discount=0.9"], ["'discount'"]),
    "dmc gamma 1.5": (DMC + ["--set", "task.gamma=1.5"], ["gamma", "1.5"]),
    "dmc zero eval episodes": (DMC + ["--set", "task.eval_episodes=0"], ["eval_episodes"]),
    "dmc negative collect steps": (DMC + ["--set", "task.collect_steps=-5"], ["collect_steps", "-5"]),
    "dmc zero train size": (DMC + ["--set", "task.train_size=0"], ["train_size"]),
    "dmc negative eval seed": (DMC + ["--set", "task.eval_seed=-1"], ["eval_seed", "-1"]),
    "dmc unknown explorer": (DMC + ["--set", "task.explorer=curious"], ["explorer", "'curious'"]),
    "dmc empty dataset, no collection": (DMC + ["--set", "task.collect_steps=0", "--set", "task.dataset={dataset}"],
                                         ["no episode files"], "empty"),
    "dmc corrupt dataset, no collection": (DMC + ["--set", "task.collect_steps=0", "--set",
                                                  "task.dataset={dataset}"], ["0_200.npz"], "corrupt"),
    "dmc dataset a file, no collection": (DMC + ["--set", "task.collect_steps=0", "--set", "task.dataset={file}"],
                                          ["is a file"]),
    "dmc pixels unknown camera": (PIXELS + ["--set", "task.camera=9"], ["no camera 9", "0 (side)"]),
    "dmc pixels camera of another model": (PIXELS + ["--set", "task.camera=front_close"],
                                           ["no camera 'front_close'"]),
    "dmc pixels bad image size": (PIXELS + ["--set", "task.image_size=4"], ["image_size", "4"]),
    "dmc pixels zero frame stack": (PIXELS + ["--set", "task.frame_stack=0"], ["frame_stack", "0"]),
    "dmc pixels no GL backend": (PIXELS, ["no working GL backend", "MUJOCO_GL=disabled"], NO_GL),
    "dmc pixels state sha256 changed": (PIXELS + ["--set", "task.collect_steps=0",
                                                  "--set", "task.dataset={dataset}"],
                                        ["rendered from another state dataset", "b2fb render"],
                                        "stale pixels"),
    "t2i zero images per prompt": (T2I + ["--set", "task.eval_images_per_prompt=0"], ["eval_images_per_prompt"]),
    "t2i negative eval batch": (T2I + ["--set", "task.eval_batch_size=-1"], ["eval_batch_size"]),
    "t2i zero eval prompts": (T2I + ["--set", "task.eval_max_prompts=0"], ["eval_max_prompts", "0"]),
    "t2i negative eval seed": (T2I + ["--set", "task.eval_seed=-1"], ["eval_seed", "-1"]),
    "t2i unknown model": (T2I + ["--set", "task.model=dalle"], ["'dalle'"]),
    # run: grid files that cannot be read
    "grid file missing": (RUN + ["--config", "{tmp}/nope.yaml"], ["nope.yaml", "does not exist"]),
    "grid file a directory": (RUN + ["--config", "{tmp}"], ["is a directory"]),
    "grid file not text": (RUN + ["--config", "{binary}"], ["binary.yaml", "UTF-8"]),
    "grid file empty": (RUN + ["--config", "{grid}"], ["grid.yaml"], ""),
    "grid file not yaml": (RUN + ["--config", "{grid}"], ["not valid YAML"], "suite: [didactic\n"),
    "grid file of another suite": (RUN + ["--config", "{grid}"], ["'didactic'"],
                                   _grid().replace("suite: didactic", "suite: dmc")),
    # run: results and data directories
    "results dir a file": (["--results-dir", "{file}", *RUN], ["--results-dir", "is a file"]),
    "results dir inside a file": (["--results-dir", "{file}/results", *RUN], ["--results-dir", "a file"]),
    "results dir not writable": (["--results-dir", "{ro}", *RUN], ["--results-dir", "not writable"]),
    "data dir a file": (["--data-dir", "{file}", *RUN], ["--data-dir", "is a file"]),
    "data dir not writable": (["--data-dir", "{ro}", *RUN], ["--data-dir", "not writable"]),
    # collect
    "collect unknown suite": (["collect", "--suite", "didatic"], ["'didatic'"]),
    "collect unknown size": (["collect", "--suite", "didactic", "--size", "tinyy"], ["'tinyy'"]),
    "collect without runs": (["collect", "--suite", "didactic"], ["no runs under"]),
    "collect results dir a file": (["--results-dir", "{file}", "collect", "--suite", "didactic"], ["is a file"]),
    "collect grid file missing": (["collect", "--suite", "didactic", "--size", "tiny", "--config", "{tmp}/no.yaml"],
                                  ["no.yaml"]),
    "collect scalars cut mid-line": (["collect", "--suite", "didactic"], ["scalars.jsonl"],
                                     lambda d: (d / "scalars.jsonl").write_text((d / "scalars.jsonl").read_text()[:-9])),
    "collect parquet truncated": (["collect", "--suite", "didactic"], ["samples.parquet"],
                                  lambda d: (d / "samples.parquet").write_bytes(b"PAR1")),
    "collect manifest a list": (["collect", "--suite", "didactic"], ["manifest.json", "list"],
                                lambda d: (d / "manifest.json").write_text("[]")),
    "collect record hashes without runs": (["collect", "--suite", "didactic", "--record-hashes"], ["no runs"]),
    # render
    "render unknown domain": (["render", "--domain", "walkr"], ["'walkr'", "'walker'"]),
    "render domain without pixels": (["render", "--domain", "point_mass_maze"], ["point_mass_maze",
                                                                                 "no pixel"]),
    "render unknown camera": (RENDER + ["--camera", "9"], ["no camera 9"]),
    "render bad flag": (RENDER + ["--flag", "shadow=maybe"], ["--flag", "shadow=maybe"]),
    "render no GL backend": (RENDER + TINY_FRAMES, ["no working GL backend"], "state only", NO_GL),
    "render state sha256 changed": (RENDER + TINY_FRAMES, ["rendered from another state dataset"],
                                    "stale pixels"),
    "render no state dataset": (RENDER, ["no state dataset at"]),
    # tables
    "tables zero reps": (["tables", "--suite", "didactic", "--reps", "0"], ["--reps", "at least 1"]),
    "tables negative reps": (["tables", "--suite", "didactic", "--reps", "-5"], ["--reps"]),
    "tables negative bootstrap seed": (["tables", "--suite", "didactic", "--bootstrap-seed", "-1"],
                                       ["--bootstrap-seed"]),
    "tables zero seeds": (["tables", "--suite", "didactic", "--seeds", "0"], ["--seeds"]),
    "tables without runs": (["tables", "--suite", "didactic", "--size", "tiny"], ["no runs under"]),
    "tables without an index": (["tables", "--suite", "didactic", "--size", "tiny", "--no-collect"], ["no index"]),
    "tables results dir a file": (["--results-dir", "{file}", "tables", "--suite", "didactic"], ["is a file"]),
    "tables damaged run": (["tables", "--suite", "didactic", "--size", "tiny"], ["samples.parquet"],
                           lambda d: (d / "samples.parquet").write_bytes(b"")),
    "tables unknown suite": (["tables", "--suite", "dmcc"], ["'dmcc'"]),
    # perf
    "perf no suite": (["perf"], ["--suite"]),
    "perf unknown suite": (["perf", "--suite", "didatic"], ["'didatic'"]),
    "perf zero seconds": (["perf", "--suite", "didactic", "--seconds", "0"], ["--seconds"]),
    "perf negative seconds": (["perf", "--suite", "didactic", "--seconds", "-1"], ["--seconds"]),
    "perf nan seconds": (["perf", "--suite", "didactic", "--seconds", "nan"], ["--seconds"]),
    "perf seconds a word": (["perf", "--suite", "didactic", "--seconds", "long"], ["--seconds", "'long'"]),
    "perf results dir a file": (["--results-dir", "{file}", "perf", "--suite", "didactic"], ["is a file"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(tmp_path, case, capfd, monkeypatch):
    import sys

    from benchmarks import cli

    argv, names, *setup = BAD_INPUTS[case]
    for extra in [x for x in setup if isinstance(x, dict)]:  # environment variables, e.g. no GL backend
        for key, value in extra.items():
            monkeypatch.setenv(key, value)
    setup = [x for x in setup if not isinstance(x, dict)]
    monkeypatch.setitem(sys.modules, "benchmarks.orchestrate", None)    # reaching Ray fails at once
    monkeypatch.chdir(tmp_path)
    values = {"tmp": str(tmp_path), "file": str(write(tmp_path / "a_file", "x")), "ro": "/proc/b2fb-results",
              "grid": str(tmp_path / "grid.yaml"), "dataset": str(tmp_path / "dataset"),
              "binary": str(tmp_path / "binary.yaml")}
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00\x81suite")
    if setup and isinstance(setup[0], str) and "{grid}" in argv:
        _setup_grid(tmp_path, setup[0])
    elif setup and isinstance(setup[0], str):
        _dmc_dataset(tmp_path, setup[0])
    elif setup:
        _damaged_run(tmp_path, setup[0])
    argv = [a.format(**values) for a in argv]
    if "--results-dir" not in argv:
        argv = ["--results-dir", str(tmp_path / "results"), *argv]
    if "--data-dir" not in argv:
        argv = ["--data-dir", str(tmp_path / "data"), *argv]
    code = cli.main(argv)
    out, err = capfd.readouterr()
    assert code == 2, (code, out[-1500:], err[-1500:])
    assert out == "", f"printed before the error: {out[-1500:]!r}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"


def test_the_bad_input_table_is_large_and_covers_every_command():
    commands = {next(a for a in argv if a in ("list", "run", "collect", "tables", "render", "perf"))
                for argv, *_ in BAD_INPUTS.values()}
    assert len(BAD_INPUTS) >= 60 and commands == {"list", "run", "collect", "tables", "render", "perf"}
