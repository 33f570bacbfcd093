"""Experiment grids: strict YAML loading into trial specs.

A grid file `benchmarks/configs/<suite>.yaml` has the keys

    suite:  the suite name
    common: settings shared by every size (merged under each size; the size wins)
    sizes:  {tiny: {...}, cpu: {...}, paper: {...}}

and each size holds

    seeds:       an int N (seeds 0..N-1) or a list of seeds
    tasks:       task ids, or {id: <task id>, kwargs: {...}} to change a task's entry-point kwargs
                 (paths inside kwargs are relative to the grid file); an entry may also carry
                 `seeds` (this task's own seed count or list, e.g. fewer seeds for a costly task) and
                 `algorithms` (the only algorithms that run on it); `--seeds` overrides every task's
    algorithms:  {<algorithm>: {<Config field>: value, ...}}; an algorithm not listed does not run
    per_task:    {<task id>: {<algorithm>: {<Config field>: value}}}: per-task values on top of
                 `algorithms` (e.g. the papers' per-domain hyperparameters); `--set` still wins
    resources:   per-trial {cpu: N, gpu: G}; the same file schedules GPU trials on a cluster
    max_concurrent: trials at once (null: as many as the resources allow)

Loading is strict: an unknown or mistyped key anywhere, or a value of the wrong type, is a
`UserError` naming the key, where it is and the file.  Command-line overrides (`--set algo.key=value`)
go through the same checks.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

from algorithms import registry as algo_registry
from suites import yaml_strict
from suites import registry as task_registry
from suites.errors import UserError
from suites.registry import did_you_mean

CONFIG_DIR = Path(__file__).parent / "configs"
SIZES = ("tiny", "cpu", "paper")
TOP_KEYS = ("suite", "description", "common", "sizes")
SIZE_KEYS = ("seeds", "tasks", "algorithms", "per_task", "resources", "max_concurrent")
RESOURCE_KEYS = ("cpu", "gpu")
PATH_KWARGS = ("path", "dataset", "data_dir", "dataset_dir", "model_dir", "reward_checkpoint", "prompt_dir")
LOCATION_KWARGS = ("data_root",)  # where data lives on this machine: not part of a run's identity
TASK_OVERRIDE = "task"   # `--set task.KEY=VALUE` sets a task kwarg of every task in the grid


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """One (algorithm, task, seed) cell of a grid, fully resolved."""

    suite: str
    size: str
    algorithm: str
    task_id: str
    task_kwargs: dict[str, Any]
    seed: int
    algo_config: dict[str, Any]
    resources: dict[str, float]
    config_hash: str

    @property
    def run_id(self) -> str:
        return f"{self.algorithm}--{self.task_id.split('/', 1)[1]}--{self.config_hash[:8]}--seed{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialSpec":
        return cls(**d)


@dataclasses.dataclass
class Experiment:
    suite: str
    size: str
    source: Path
    seeds: list[int]
    tasks: list[tuple[str, dict[str, Any]]]
    algorithms: dict[str, Any]           # name -> Config instance (before per-task values)
    resources: dict[str, float]
    max_concurrent: int | None
    data_root: Path | None = None
    task_configs: dict[tuple[str, str], Any] = dataclasses.field(default_factory=dict)  # (name, task) -> Config
    task_limits: list[tuple[list[int] | None, tuple[str,
                                                    ...] | None]] = dataclasses.field(default_factory=list)
    """Per entry of `tasks`: its own seeds and its algorithms (None: the size's seeds, every algorithm)."""

    def trials(self) -> list[TrialSpec]:
        out = []
        for name, base in self.algorithms.items():
            for i, (task_id, kwargs) in enumerate(self.tasks):
                own_seeds, only = self.task_limits[i] if i < len(self.task_limits) else (None, None)
                if only is not None and name not in only:
                    continue
                cfg = self.task_configs.get((name, task_id), base)
                cfg_dict = _jsonable(dataclasses.asdict(cfg))
                h = config_hash(self.suite, name, hashed_config(cfg), task_id, kwargs)
                if "data_root" in kwargs and kwargs["data_root"] is None and self.data_root is not None:
                    kwargs = {**kwargs, "data_root": str(self.data_root)}
                for seed in own_seeds if own_seeds is not None else self.seeds:
                    out.append(TrialSpec(self.suite, self.size, name, task_id, dict(kwargs), seed, cfg_dict,
                                         dict(self.resources), h))
        return out


def hashed_config(cfg: Any) -> dict[str, Any]:
    """The part of an algorithm Config that identifies a run: every field, except a field declared with
    `algorithms.registry.added_field` while it holds its default.  So adding a knob whose default keeps
    today's behaviour leaves every run id, committed ones included, as it was; setting it re-keys the run.
    (The manifest still records the whole config.)"""
    out = {}
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if algo_registry.ADDED in field.metadata and value == field.default:
            continue
        out[field.name] = _jsonable(value)
    return out


def config_hash(suite: str, algorithm: str, algo_config: dict, task_id: str, task_kwargs: dict) -> str:
    """sha256 of the semantic config (everything but the seed); files in task kwargs count by content."""
    kwargs = {k: (_file_digest(v) if k in PATH_KWARGS and v else v) for k, v in task_kwargs.items()
              if k not in LOCATION_KWARGS}
    payload = json.dumps({"suite": suite, "algorithm": algorithm, "config": algo_config, "task": task_id,
                          "task_kwargs": kwargs}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _file_digest(path: str) -> str:
    """A file counts by content; a directory (a dataset) by name: its content hash goes to the manifest."""
    p = Path(path)
    if p.is_file():
        return "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    return f"name:{p.name}"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj


def grid_path(suite: str) -> Path:
    return CONFIG_DIR / f"{suite}.yaml"


def load_experiment(suite: str, size: str, config_file: str | Path | None = None,
                    overrides: list[str] = (), seeds: int | None = None, algos: list[str] | None = None,
                    tasks: list[str] | None = None, data_root: str | Path | None = None) -> Experiment:
    """Read a grid file, pick a size, apply overrides and filters; every problem is a `UserError`."""
    task_registry.load_suite(suite)
    path = Path(config_file) if config_file else grid_path(suite)
    if path.is_dir():
        raise UserError(f"config file {path} is a directory; pass --config with a grid file (YAML)")
    if not path.is_file():
        raise UserError(f"config file {path} does not exist; pass --config PATH or add {grid_path(suite)}")
    path = path.resolve()
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"config file {path} is not UTF-8 text (byte {err.start}); pass a YAML grid file") from None
    except OSError as err:
        raise UserError(f"config file {path} cannot be read ({err.strerror}); check its permissions") from None
    raw = yaml_strict.loads(text, where)
    _require_mapping(raw, "the file", where)
    _check_keys(raw, TOP_KEYS, "top level", where)
    if raw.get("suite") != suite:
        raise UserError(f"{where} is the grid of suite {raw.get('suite')!r}, not {suite!r}; "
                        f"pass --suite {raw.get('suite')} or a grid file of {suite!r}")
    sizes = raw.get("sizes") or {}
    _require_mapping(sizes, "sizes", where)
    _check_keys(sizes, SIZES, "sizes", where)
    if size not in SIZES:
        raise UserError(f"unknown size {size!r}.{did_you_mean(size, SIZES)} Sizes are {', '.join(SIZES)}.")
    if size not in sizes:
        raise UserError(f"{where} defines no size {size!r}; it has {', '.join(sizes) or 'none'}")
    common = raw.get("common") or {}
    _require_mapping(common, "common", where)
    _check_keys(common, SIZE_KEYS, "common", where)
    block = sizes[size] or {}
    _require_mapping(block, f"sizes.{size}", where)
    _check_keys(block, SIZE_KEYS, f"sizes.{size}", where)
    merged = _deep_merge(common, block)

    # seeds
    seed_list = _seed_list(seeds if seeds is not None else merged.get("seeds", 1), where)

    # tasks (`--set task.KEY=VALUE` sets a kwarg of every task of the grid)
    task_overrides = {key: value for name, key, value in map(_parse_override, overrides) if name == TASK_OVERRIDE}
    task_entries = merged.get("tasks") or []
    if not isinstance(task_entries, list) or not task_entries:
        raise UserError(f"{where}: sizes.{size}.tasks must be a non-empty list of task ids")
    resolved_tasks, limits = [], []
    for entry in task_entries:
        task_id, kwargs = _task_entry(entry, where, path.parent)
        limits.append(_task_limits(entry, where, seeds is not None))
        spec = _in_file(task_registry.get, task_id, where)
        if spec.suite != suite:
            raise UserError(f"{where}: task {task_id!r} belongs to suite {spec.suite!r}, not {suite!r}")
        unknown = sorted(set(kwargs) - set(spec.kwargs))
        if unknown:
            raise UserError(f"{where}: task {task_id} has no kwarg {unknown[0]!r}."
                            f"{did_you_mean(unknown[0], spec.kwargs)} Its kwargs: {', '.join(spec.kwargs)}")
        resolved_tasks.append((task_id, {**spec.kwargs, **kwargs}))
    if tasks:
        known = {t for t, _ in resolved_tasks}
        for t in tasks:
            task_registry.get(t)  # unknown ids get "did you mean"
            if t not in known:
                raise UserError(f"task {t!r} is not in the {size} grid of {where}; it has "
                                f"{', '.join(sorted(known))}")
        kept = [i for i, (t, _) in enumerate(resolved_tasks) if t in tasks]
        resolved_tasks, limits = [resolved_tasks[i] for i in kept], [limits[i] for i in kept]
    # `--set task.KEY=VALUE` on the tasks selected (all, or those of --tasks)
    for key, value in task_overrides.items():
        for task_id, kwargs in resolved_tasks:
            if key not in kwargs:
                raise UserError(f"--set task.{key}: task {task_id} has no kwarg {key!r}.{did_you_mean(key, kwargs)} "
                                f"Its kwargs: {', '.join(kwargs)}")
            kwargs[key] = str((Path.cwd() / value).resolve()) if key in PATH_KWARGS and value else value
    if len({(t, json.dumps(k, sort_keys=True, default=str)) for t, k in resolved_tasks}) != len(resolved_tasks):
        raise UserError(f"{where}: sizes.{size}.tasks lists the same task twice; list each task once")

    # algorithms
    algo_block = merged.get("algorithms") or {}
    _require_mapping(algo_block, f"sizes.{size}.algorithms", where)
    by_name: dict[str, dict[str, Any]] = {}
    for name, values in algo_block.items():
        spec = _in_file(algo_registry.get, name, where)
        if suite not in spec.suites:
            raise UserError(f"{where}: algorithm {name!r} does not run on suite {suite!r}")
        values = values or {}
        _require_mapping(values, f"algorithms.{name}", where)
        by_name[name] = dict(values)
    cli: dict[str, dict[str, Any]] = {}
    for item in overrides:
        name, key, value = _parse_override(item)
        if name == TASK_OVERRIDE:    # applied to the tasks above
            continue
        module = algo_registry.get(name).load()
        if name not in by_name:
            raise UserError(f"--set {item}: algorithm {name!r} is not in the {size} grid of {where}")
        _check_field(module.Config, key, value, f"--set {item}")
        cli.setdefault(name, {})[key] = value
    if algos:
        for a in algos:
            algo_registry.get(a)
            if a not in by_name:
                raise UserError(f"algorithm {a!r} is not in the {size} grid of {where}; "
                                f"it has {', '.join(sorted(by_name))}")
        by_name = {a: by_name[a] for a in algos}

    def config_for(name: str, *layers: dict[str, Any], at: str) -> Any:
        values = {**dict(algo_registry.get(name).defaults), **by_name[name]}
        for layer in (*layers, cli.get(name, {})):
            values.update(layer)
        return build_config(algo_registry.get(name).load().Config, values, f"{where} ({at})")

    configs = {name: config_for(name, at=f"algorithms.{name}") for name in by_name}
    per_task = merged.get("per_task") or {}
    _require_mapping(per_task, f"sizes.{size}.per_task", where)
    task_configs = {}
    listed = {t for t, _ in resolved_tasks}
    for task_id, block in per_task.items():
        _in_file(task_registry.get, task_id, where)
        _require_mapping(block, f"per_task.{task_id}", where)
        for name, values in block.items():
            if name not in algo_block:
                raise UserError(f"{where}: per_task.{task_id} sets algorithm {name!r}, which "
                                f"sizes.{size}.algorithms does not list")
            _require_mapping(values, f"per_task.{task_id}.{name}", where)
            if name in by_name and task_id in listed:
                task_configs[(name, task_id)] = config_for(name, values, at=f"per_task.{task_id}.{name}")
    if not configs:
        raise UserError(f"{where}: sizes.{size}.algorithms lists no algorithm")

    # resources
    resources = merged.get("resources") or {"cpu": 1, "gpu": 0}
    _require_mapping(resources, "resources", where)
    _check_keys(resources, RESOURCE_KEYS, "resources", where)
    res = {"cpu": resources.get("cpu", 1), "gpu": resources.get("gpu", 0)}
    for k, v in res.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise UserError(f"{where}: resources.{k} must be a non-negative number, got {v!r}")
    max_conc = merged.get("max_concurrent")
    if max_conc is not None and (isinstance(max_conc, bool) or not isinstance(max_conc, int) or max_conc < 1):
        raise UserError(f"{where}: max_concurrent must be a positive int or null, got {max_conc!r}")
    for (task_id, _), (_, only) in zip(resolved_tasks, limits):
        unknown = [a for a in only or () if a not in algo_block]
        if unknown:
            raise UserError(f"{where}: the entry of task {task_id} lists algorithm {unknown[0]!r}, which "
                            f"sizes.{size}.algorithms does not list")
    return Experiment(suite, size, path, seed_list, resolved_tasks, configs, res, max_conc,
                      Path(data_root).resolve() if data_root is not None else None, task_configs, limits)


def _seed_list(seed_value: Any, where: str) -> list[int]:
    if isinstance(seed_value, bool) or not isinstance(seed_value, (int, list)):
        raise UserError(f"{where}: seeds must be an int or a list of ints, got {seed_value!r}")
    seed_list = list(range(seed_value)) if isinstance(seed_value, int) else seed_value
    if not seed_list or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seed_list):
        raise UserError(f"{where}: seeds must be a positive count or a list of non-negative ints")
    if len(set(seed_list)) != len(seed_list):
        raise UserError(f"{where}: seeds {seed_list} repeat a seed; list each seed once")
    return seed_list


def _task_limits(entry: Any, where: str, seeds_given: bool) -> tuple[list[int] | None, tuple[str,
                                                                                             ...] | None]:
    """A task entry's own `seeds` (ignored when --seeds is given) and `algorithms`."""
    if not isinstance(entry, dict):
        return None, None
    own = None if seeds_given or "seeds" not in entry else _seed_list(entry["seeds"],
                                                                      f"{where} ({entry.get('id')})")
    only = entry.get("algorithms")
    if only is not None and (not isinstance(only, list) or not only
                             or not all(isinstance(a, str) for a in only)):
        raise UserError(f"{where}: the entry of task {entry.get('id')} has algorithms {only!r}; give a "
                        f"non-empty list of algorithm names")
    return own, None if only is None else tuple(only)


def _in_file(lookup, name: str, where: str):
    """A registry lookup whose error also names the grid file."""
    try:
        return lookup(name)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def _check_field(cls: type, key: str, value: Any, where: str) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}
    if key not in fields:
        raise UserError(f"{where}: unknown key {key!r}.{did_you_mean(key, fields)} "
                        f"Valid keys are the fields of {cls.__module__}.Config")
    _coerce(value, typing.get_type_hints(cls)[key], f"{where}: {key}")


def build_config(cls: type, values: dict[str, Any], where: str) -> Any:
    """Strictly build a Config dataclass: unknown keys and wrong types are `UserError`s."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise UserError(f"{where}: unknown key {key!r}.{did_you_mean(key, fields)} "
                            f"Valid keys are the fields of {cls.__module__}.Config")
        kwargs[key] = _coerce(value, hints[key], f"{where}: {key}")
    try:
        return cls(**kwargs)
    except UserError as err:  # a value outside its allowed set (Config.__post_init__)
        raise UserError(f"{where}: {err}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(value, opt, where)
            except UserError as err:
                errors.append(err)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(v, item, where) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {hint!r}")


def _parse_override(item: str) -> tuple[str, str, Any]:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise UserError(f"--set {item!r}: expected ALGORITHM.KEY=VALUE or task.KEY=VALUE, e.g. --set "
                        f"onestep_fb.lr=3e-4")
    lhs, rhs = item.split("=", 1)
    name, key = lhs.split(".", 1)
    value = yaml_strict.loads(rhs, f"the value of --set {item!r}")
    return name, key, value


def _task_entry(entry: Any, where: str, base: Path) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict):
        _check_keys(entry, ("id", "kwargs", "seeds", "algorithms"), "a task entry", where)
        if "id" not in entry:
            raise UserError(f"{where}: a task entry needs an 'id'")
        kwargs = dict(entry.get("kwargs") or {})
        for k in PATH_KWARGS:
            if kwargs.get(k):
                kwargs[k] = str((base / kwargs[k]).resolve())
        return entry["id"], kwargs
    raise UserError(f"{where}: a task entry must be a task id or {{id: ..., kwargs: {{...}}}}, got {entry!r}")


def _require_mapping(value: Any, what: str, where: str) -> None:
    if not isinstance(value, dict):
        raise UserError(f"{where}: {what} must be a mapping, got {type(value).__name__}")


def _check_keys(mapping: dict, allowed: tuple[str, ...], what: str, where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r} in {what}.{did_you_mean(str(key), allowed)} "
                            f"Allowed: {', '.join(allowed)}")


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
