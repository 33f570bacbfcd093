"""Experiment grids (benchmarks/config.py): the shipped grid, strict loading, overrides, custom CMP tasks."""
from __future__ import annotations

import dataclasses
import shutil
import textwrap
from pathlib import Path

import pytest

from algorithms.fb import onestep_fb
from benchmarks.config import SIZES, build_config, config_hash, grid_path, load_experiment
from suites.errors import UserError
from fixtures import TWO_STATE_CMP

# A minimal valid grid; tests patch one thing at a time into it.
BASE = """\
suite: didactic
sizes:
  tiny:
    seeds: 2
    tasks: [didactic/three-state-v0, didactic/five-state-v0]
    algorithms:
      onestep_fb: {arch: tabular, latent_dim: 10, num_steps: 10}
      fb: {arch: tabular, latent_dim: 10, num_steps: 10, normalize_backward: true}
"""

CMP_TEXT = TWO_STATE_CMP


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_error(grid: Path, size: str = "tiny", **kwargs) -> str:
    with pytest.raises(UserError) as info:
        load_experiment("didactic", size, grid, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, f"user errors are one line: {msg!r}"
    return msg


def assert_names(msg: str, *parts: str) -> None:
    for part in parts:
        assert part in msg, f"{part!r} not in error message {msg!r}"


# ---- the shipped grid ---------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
def test_shipped_grid_loads_every_size(size):
    exp = load_experiment("didactic", size)
    assert exp.source == grid_path("didactic").resolve()
    assert set(exp.algorithms) == {"onestep_fb", "fb"}
    assert [t for t, _ in exp.tasks] == ["didactic/three-state-v0", "didactic/five-state-v0"]
    trials = exp.trials()
    assert len(trials) == len(exp.algorithms) * len(exp.tasks) * len(exp.seeds)
    assert len({t.run_id for t in trials}) == len(trials)
    cells = {(t.algorithm, t.task_id, t.seed) for t in trials}
    assert len(cells) == len(trials)
    for t in trials:
        assert t.size == size and t.suite == "didactic"
        assert t.run_id.endswith(f"--seed{t.seed}") and t.config_hash[:8] in t.run_id
        # the resolved config is the full Config, so it rebuilds strictly
        assert build_config(type(exp.algorithms[t.algorithm]), t.algo_config, "x") == exp.algorithms[t.algorithm]


def test_shipped_sizes_differ_in_seeds_and_steps():
    tiny, cpu, paper = (load_experiment("didactic", s) for s in SIZES)
    assert (len(tiny.seeds), len(cpu.seeds), len(paper.seeds)) == (1, 10, 10)
    assert list(cpu.seeds) == list(range(10))  # seeds 0-2 (the committed 3-seed grid's) come first
    assert (tiny.algorithms["onestep_fb"].num_steps < cpu.algorithms["onestep_fb"].num_steps
            < paper.algorithms["onestep_fb"].num_steps == 100_000)
    # common settings are merged under every size
    for exp in (tiny, cpu, paper):
        assert exp.algorithms["onestep_fb"].arch == "tabular"
        assert exp.algorithms["onestep_fb"].lr == pytest.approx(2e-3)
        assert exp.resources == {"cpu": 1, "gpu": 0}


def test_config_hash_ignores_seed_and_separates_cells():
    trials = load_experiment("didactic", "cpu").trials()
    by_cell: dict[tuple[str, str], set[str]] = {}
    for t in trials:
        by_cell.setdefault((t.algorithm, t.task_id), set()).add(t.config_hash)
    assert len(by_cell) == 4
    assert all(len(hashes) == 1 for hashes in by_cell.values()), "the hash must not depend on the seed"
    all_hashes = [next(iter(h)) for h in by_cell.values()]
    assert len(set(all_hashes)) == len(all_hashes), "different (algorithm, task) cells must hash differently"


def test_changing_an_algorithm_value_changes_the_hash():
    base = {(t.algorithm, t.task_id): t.config_hash for t in load_experiment("didactic", "tiny").trials()}
    changed = {(t.algorithm, t.task_id): t.config_hash
               for t in load_experiment("didactic", "tiny", overrides=["onestep_fb.tau=0.01"]).trials()}
    assert base.keys() == changed.keys()
    for key in base:
        if key[0] == "onestep_fb":
            assert changed[key] != base[key]
        else:
            assert changed[key] == base[key]


def test_config_hash_function_is_stable_and_sensitive():
    cfg = {"lr": 0.1, "num_steps": 3}
    h = config_hash("didactic", "onestep_fb", cfg, "didactic/three-state-v0", {"cmp": "three-state"})
    assert h == config_hash("didactic", "onestep_fb", dict(reversed(cfg.items())), "didactic/three-state-v0",
                            {"cmp": "three-state"})
    assert h != config_hash("didactic", "onestep_fb", {**cfg, "lr": 0.2}, "didactic/three-state-v0",
                            {"cmp": "three-state"})
    assert h != config_hash("didactic", "onestep_fb", cfg, "didactic/three-state-v0", {"cmp": "five-state"})


def test_seeds_argument_overrides_the_grid():
    exp = load_experiment("didactic", "tiny", seeds=3)
    assert exp.seeds == [0, 1, 2]
    assert len(exp.trials()) == 2 * 2 * 3


# ---- strictness ---------------------------------------------------------------------------------
def test_minimal_grid_loads(tmp_path):
    exp = load_experiment("didactic", "tiny", write(tmp_path / "g.yaml", BASE))
    assert exp.seeds == [0, 1]
    assert exp.algorithms["onestep_fb"].num_steps == 10
    assert exp.algorithms["fb"].normalize_backward is True
    assert len(exp.trials()) == 8


def test_unknown_top_level_key(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE + "sizez: {}\n")
    assert_names(load_error(grid), "'sizez'", str(grid.resolve()), "top level")


def test_unknown_key_in_size_block(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace("    seeds: 2", "    seed: 2"))
    msg = load_error(grid)
    assert_names(msg, "'seed'", "sizes.tiny", str(grid.resolve()), "'seeds'")


def test_unknown_key_in_common_block(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE + "common: {resource: {cpu: 1}}\n")
    assert_names(load_error(grid), "'resource'", "common", str(grid.resolve()))


def test_unknown_size_block_in_file(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE + "  huge: {seeds: 1}\n")
    assert_names(load_error(grid), "'huge'", str(grid.resolve()))


def test_mistyped_algorithm_key_suggests_the_field(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace("num_steps: 10}", "num_steps: 10, lrr: 0.1}", 1))
    msg = load_error(grid)
    assert_names(msg, "'lrr'", "Did you mean 'lr'", str(grid.resolve()), "onestep_fb")


@pytest.mark.parametrize("old,new,key", [
    ("num_steps: 10}", 'num_steps: "ten"}', "num_steps"),
    ("num_steps: 10}", "num_steps: 10.5}", "num_steps"),
    ("num_steps: 10}", "num_steps: true}", "num_steps"),
    ("latent_dim: 10, num_steps: 10}", "latent_dim: 10, num_steps: 10, lr: fast}", "lr"),
    ("normalize_backward: true", 'normalize_backward: "true"', "normalize_backward"),
    ("normalize_backward: true", "normalize_backward: 1", "normalize_backward"),
    ("arch: tabular, latent_dim: 10, num_steps: 10}", "arch: 3, latent_dim: 10, num_steps: 10}", "arch"),
])
def test_wrong_type_names_key_and_file(tmp_path, old, new, key):
    text = BASE.replace(old, new, 1)
    assert text != BASE
    grid = write(tmp_path / "g.yaml", text)
    assert_names(load_error(grid), key, str(grid.resolve()))


def test_wrong_type_for_tuple_field(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace("num_steps: 10}", "num_steps: 10, forward_hidden: 64}", 1))
    assert_names(load_error(grid), "forward_hidden", "list", str(grid.resolve()))


def test_tuple_and_optional_fields_are_coerced(tmp_path):
    grid = write(tmp_path / "g.yaml",
                 BASE.replace("num_steps: 10}", "num_steps: 10, forward_hidden: [8, 8], discount: 0.5, lr: 1}", 1))
    cfg = load_experiment("didactic", "tiny", grid).algorithms["onestep_fb"]
    assert cfg.forward_hidden == (8, 8)
    assert cfg.discount == 0.5
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_unknown_algorithm_name_suggests(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace("      onestep_fb:", "      onestepfb:"))
    assert_names(load_error(grid), "'onestepfb'", "'onestep_fb'")


def test_unknown_task_id_suggests(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace("didactic/three-state-v0,", "didactic/three-stat-v0,"))
    assert_names(load_error(grid), "'didactic/three-stat-v0'", "Did you mean 'didactic/three-state-v0'")


@pytest.mark.parametrize("old,new", [("      onestep_fb:", "      onestepfb:"),
                                     ("didactic/three-state-v0,", "didactic/three-stat-v0,")])
def test_unknown_names_in_grid_name_the_file(tmp_path, old, new):
    grid = write(tmp_path / "g.yaml", BASE.replace(old, new))
    assert str(grid.resolve()) in load_error(grid)


def test_unknown_task_kwarg(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace(
        "tasks: [didactic/three-state-v0, didactic/five-state-v0]",
        "tasks: [{id: didactic/three-state-v0, kwargs: {cmpp: five-state}}]"))
    assert_names(load_error(grid), "'cmpp'", "'cmp'", "didactic/three-state-v0", str(grid.resolve()))


def test_task_kwarg_override_reaches_the_trial(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace(
        "tasks: [didactic/three-state-v0, didactic/five-state-v0]",
        "tasks: [didactic/three-state-v0, {id: didactic/three-state-v0, kwargs: {cmp: five-state}}]"))
    trials = load_experiment("didactic", "tiny", grid).trials()
    kinds = {(t.algorithm, t.task_kwargs["cmp"]): t.config_hash for t in trials}
    assert len(kinds) == 4
    assert kinds[("fb", "three-state")] != kinds[("fb", "five-state")]


@pytest.mark.parametrize("kwargs", ["{batch: sampled}", "{n_eval_rewards: 4}", "{reward_seed: 1}", "{gamma: 0.5}"])
def test_documented_task_kwargs_are_accepted(tmp_path, kwargs):
    grid = write(tmp_path / "g.yaml", BASE.replace(
        "tasks: [didactic/three-state-v0, didactic/five-state-v0]",
        f"tasks: [{{id: didactic/three-state-v0, kwargs: {kwargs}}}]"))
    assert len(load_experiment("didactic", "tiny", grid).trials()) == 4


def test_duplicated_yaml_key_is_rejected(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace("seeds: 2", "seeds: 2\n    seeds: 5"))
    load_error(grid)


def test_task_entry_with_unknown_key(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace(
        "tasks: [didactic/three-state-v0, didactic/five-state-v0]",
        "tasks: [{id: didactic/three-state-v0, kwarg: {batch: sampled}}]"))
    assert_names(load_error(grid), "'kwarg'", str(grid.resolve()))


def test_grid_of_another_suite(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace("suite: didactic", "suite: dmc"))
    assert_names(load_error(grid), "'dmc'", "'didactic'", str(grid.resolve()))


@pytest.mark.parametrize("size", ["huge", "tin", ""])
def test_unknown_size_argument(size):
    msg = str(pytest.raises(UserError, load_experiment, "didactic", size).value)
    assert_names(msg, f"unknown size {size!r}", "tiny, cpu, paper")


def test_size_missing_from_grid(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE)
    assert_names(load_error(grid, size="paper"), "'paper'", str(grid.resolve()), "tiny")


@pytest.mark.parametrize("seeds", ["0", "-2", "[]", "[-1]", "[0, x]", '"3"', "2.5", "true", "[true]", "{a: 1}"])
def test_invalid_seeds(tmp_path, seeds):
    grid = write(tmp_path / "g.yaml", BASE.replace("seeds: 2", f"seeds: {seeds}"))
    assert_names(load_error(grid), "seeds", str(grid.resolve()))


def test_seeds_list_is_used_verbatim(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace("seeds: 2", "seeds: [3, 7]"))
    exp = load_experiment("didactic", "tiny", grid)
    assert exp.seeds == [3, 7]
    assert sorted({t.seed for t in exp.trials()}) == [3, 7]


@pytest.mark.parametrize("old,new,named", [
    ("seeds: 2", "seeds: [0, 0]", "seed"),
    ("tasks: [didactic/three-state-v0, didactic/five-state-v0]",
     "tasks: [didactic/three-state-v0, didactic/three-state-v0]", "task"),
])
def test_duplicated_grid_cells_are_rejected(tmp_path, old, new, named):
    """A grid that lists a cell twice is an error (one line naming the file and what repeats), not a grid
    whose duplicate is silently dropped: silently de-duplicating would run fewer seeds than the user asked for."""
    grid = write(tmp_path / "g.yaml", BASE.replace(old, new))
    assert BASE.replace(old, new) != BASE
    assert_names(load_error(grid), str(grid.resolve()), named, "once")


@pytest.mark.parametrize("text", [
    "[1, 2]\n",
    "suite: didactic\nsizes: [tiny]\n",
    BASE.replace("    algorithms:\n", "    algorithms: 3\n    x:\n"),
    BASE.replace("seeds: 2", "seeds: 2\n    resources: {cpu: -1}"),
    BASE.replace("seeds: 2", "seeds: 2\n    resources: {cpus: 1}"),
    BASE.replace("seeds: 2", "seeds: 2\n    max_concurrent: 0"),
    BASE.replace("[didactic/three-state-v0, didactic/five-state-v0]", "[]"),
    BASE.replace("[didactic/three-state-v0, didactic/five-state-v0]", "[[didactic/three-state-v0]]"),
    BASE.replace("[didactic/three-state-v0, didactic/five-state-v0]", "[{kwargs: {}}]"),
])
def test_other_malformed_grids(tmp_path, text):
    grid = write(tmp_path / "g.yaml", text)
    assert str(grid.resolve()) in load_error(grid)


def test_malformed_yaml_gives_the_line(tmp_path):
    grid = write(tmp_path / "g.yaml", "suite: didactic\nsizes:\n  tiny:\n    seeds: 1\n   tasks: [a]\n")
    msg = load_error(grid)
    assert_names(msg, "not valid YAML", "line 5", str(grid.resolve()))


def test_missing_grid_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert_names(load_error(missing), str(missing), "--config")


def test_unknown_suite():
    with pytest.raises(UserError) as info:
        load_experiment("didatic", "tiny")
    assert_names(str(info.value), "'didatic'", "'didactic'")


# ---- overrides and filters -------------------------------------------------------------------------
def test_override_changes_the_config():
    exp = load_experiment("didactic", "tiny", overrides=["onestep_fb.lr=0.5", "fb.num_steps=7"])
    assert exp.algorithms["onestep_fb"].lr == 0.5
    assert exp.algorithms["fb"].num_steps == 7
    assert all(t.algo_config["lr"] == 0.5 for t in exp.trials() if t.algorithm == "onestep_fb")


def test_override_can_add_a_field_absent_from_the_grid():
    exp = load_experiment("didactic", "tiny", overrides=["onestep_fb.forward_hidden=[4, 4]"])
    assert exp.algorithms["onestep_fb"].forward_hidden == (4, 4)


def test_override_accepts_exponent_notation():
    exp = load_experiment("didactic", "tiny", overrides=["onestep_fb.lr=3e-4"])
    assert exp.algorithms["onestep_fb"].lr == pytest.approx(3e-4)


@pytest.mark.parametrize("item,names", [
    ("onestep_fb.lrr=1", ["'lrr'", "'lr'"]),
    ("onestep_fb.num_steps=ten", ["num_steps", "'ten'"]),
    ("nodot=1", ["nodot=1", "ALGORITHM.KEY=VALUE"]),
    ("onestep_fb.lr", ["onestep_fb.lr", "ALGORITHM.KEY=VALUE"]),
    ("onestepfb.lr=1", ["'onestepfb'", "'onestep_fb'"]),
    ("onestep_fb.lr=[1", ["onestep_fb.lr=[1", "not valid YAML"]),
])
def test_bad_overrides(item, names):
    with pytest.raises(UserError) as info:
        load_experiment("didactic", "tiny", overrides=[item])
    assert "\n" not in str(info.value)
    assert_names(str(info.value), *names)


def test_override_of_algorithm_not_in_grid(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace(
        "      fb: {arch: tabular, latent_dim: 10, num_steps: 10, normalize_backward: true}\n", ""))
    assert set(load_experiment("didactic", "tiny", grid).algorithms) == {"onestep_fb"}
    assert_names(load_error(grid, overrides=["fb.lr=0.1"]), "'fb'", str(grid.resolve()))


def test_filters_select_algorithms_and_tasks():
    exp = load_experiment("didactic", "tiny", algos=["fb"], tasks=["didactic/five-state-v0"])
    trials = exp.trials()
    assert [(t.algorithm, t.task_id) for t in trials] == [("fb", "didactic/five-state-v0")]
    full = {t.run_id for t in load_experiment("didactic", "tiny").trials()}
    assert trials[0].run_id in full, "filtering must not change run ids"


@pytest.mark.parametrize("kwargs,names", [
    ({"algos": ["fbb"]}, ["'fbb'", "'fb'"]),
    ({"tasks": ["didactic/fivestate-v0"]}, ["'didactic/fivestate-v0'", "'didactic/five-state-v0'"]),
    ({"tasks": ["didactic/custom-v0"]}, ["'didactic/custom-v0'", "not in the tiny grid"]),
])
def test_unknown_filters_raise(kwargs, names):
    with pytest.raises(UserError) as info:
        load_experiment("didactic", "tiny", **kwargs)
    assert_names(str(info.value), *names)


def test_algorithm_filter_for_algorithm_not_in_grid(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE.replace(
        "      fb: {arch: tabular, latent_dim: 10, num_steps: 10, normalize_backward: true}\n", ""))
    assert_names(load_error(grid, algos=["fb"]), "'fb'", "onestep_fb")


# ---- build_config directly -------------------------------------------------------------------------
def test_build_config_strict():
    cfg = build_config(onestep_fb.Config, {"lr": 1, "arch": "tabular"}, "here")
    assert cfg == dataclasses.replace(onestep_fb.Config(), lr=1.0, arch="tabular")
    with pytest.raises(UserError, match=r"^here: unknown key 'lrr'\. Did you mean 'lr'"):
        build_config(onestep_fb.Config, {"lrr": 1}, "here")
    with pytest.raises(UserError, match=r"here: num_steps must be an integer"):
        build_config(onestep_fb.Config, {"num_steps": "10"}, "here")
    with pytest.raises(UserError, match=r"here: discount must be a number"):
        build_config(onestep_fb.Config, {"discount": "x"}, "here")
    assert build_config(onestep_fb.Config, {"discount": None}, "here").discount is None


# ---- custom CMP tasks --------------------------------------------------------------------------------
CUSTOM_GRID = """\
suite: didactic
sizes:
  tiny:
    seeds: 2
    tasks: [{id: didactic/custom-v0, kwargs: {path: cmp.yaml}}, didactic/three-state-v0]
    algorithms:
      onestep_fb: {arch: tabular, num_steps: 10}
"""


def custom_trials(grid: Path):
    return [t for t in load_experiment("didactic", "tiny", grid).trials() if t.task_id == "didactic/custom-v0"]


def test_custom_cmp_path_is_relative_to_the_grid_file(tmp_path, monkeypatch):
    grid = write(tmp_path / "grids" / "g.yaml", CUSTOM_GRID)
    cmp = write(tmp_path / "grids" / "cmp.yaml", CMP_TEXT)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    trials = custom_trials(grid)
    assert len(trials) == 2
    for t in trials:
        assert t.task_kwargs["path"] == str(cmp.resolve())
        assert t.task_kwargs["cmp"] == "file"  # registry defaults are merged in
    # the same grid loaded through a relative path resolves the same way
    monkeypatch.chdir(tmp_path)
    assert custom_trials(Path("grids/g.yaml"))[0].task_kwargs["path"] == str(cmp.resolve())


def test_config_hash_follows_the_cmp_file_contents(tmp_path):
    grid = write(tmp_path / "g.yaml", CUSTOM_GRID)
    cmp = write(tmp_path / "cmp.yaml", CMP_TEXT)
    first = custom_trials(grid)
    assert first[0].config_hash == first[1].config_hash
    others = {t.config_hash for t in load_experiment("didactic", "tiny", grid).trials()
              if t.task_id != "didactic/custom-v0"}
    assert first[0].config_hash not in others

    cmp.write_text(CMP_TEXT.replace("gamma: 0.9", "gamma: 0.8"))
    second = custom_trials(grid)
    assert second[0].config_hash != first[0].config_hash
    assert second[0].run_id != first[0].run_id

    cmp.write_text(CMP_TEXT)
    assert custom_trials(grid)[0].config_hash == first[0].config_hash


def test_config_hash_ignores_where_the_cmp_file_lives(tmp_path):
    write(tmp_path / "a" / "cmp.yaml", CMP_TEXT)
    write(tmp_path / "a" / "g.yaml", CUSTOM_GRID)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ha = custom_trials(tmp_path / "a" / "g.yaml")[0]
    hb = custom_trials(tmp_path / "b" / "g.yaml")[0]
    assert ha.task_kwargs["path"] != hb.task_kwargs["path"]
    assert ha.config_hash == hb.config_hash


def test_per_task_values_apply_to_their_task_only(tmp_path):
    grid = write(tmp_path / "g.yaml", BASE + """    per_task:
      didactic/five-state-v0: {onestep_fb: {lr: 0.25}}
""")
    exp = load_experiment("didactic", "tiny", grid, overrides=["fb.lr=0.5"])
    by_cell = {(t.algorithm, t.task_id): t.algo_config for t in exp.trials()}
    assert by_cell[("onestep_fb", "didactic/five-state-v0")]["lr"] == 0.25
    assert by_cell[("onestep_fb", "didactic/three-state-v0")]["lr"] != 0.25
    assert by_cell[("fb", "didactic/five-state-v0")]["lr"] == 0.5
    # --set still wins over per-task values
    exp = load_experiment("didactic", "tiny", grid, overrides=["onestep_fb.lr=0.125"])
    assert {t.algo_config["lr"] for t in exp.trials() if t.algorithm == "onestep_fb"} == {0.125}


@pytest.mark.parametrize("block, match", [
    ("didactic/five-stat-v0: {onestep_fb: {lr: 0.1}}", "Did you mean 'didactic/five-state-v0'"),
    ("didactic/five-state-v0: {zero_action: {}}", "does not list"),
    ("didactic/five-state-v0: {onestep_fb: {lrr: 0.1}}", "unknown key 'lrr'"),
])
def test_bad_per_task_values_are_named(tmp_path, block, match):
    grid = write(tmp_path / "g.yaml", BASE + f"    per_task:\n      {block}\n")
    with pytest.raises(UserError, match=match) as err:
        load_experiment("didactic", "tiny", grid)
    assert str(grid) in str(err.value)
