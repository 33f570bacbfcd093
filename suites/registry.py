"""Task registry: WHAT is measured.

A task is a frozen `TaskSpec` with a versioned id (`<suite>/<name>-v<N>`), tags that define subsets
(`tiny`, `cpu`, `paper`, ...), and a lazy entry point (`"module:attr"`) that builds the task object
only when a trial needs it.  Suites register their tasks next to their code (dm_control style); this
module stays import-light (no torch, ray or diffusers).

Bump the version of an id whenever anything that changes numbers changes (reward definition, data,
episode length, ...), so results of different definitions are never mixed.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from suites.errors import UserError

__all__ = ["TaskSpec", "UnknownName", "register", "get", "select", "all_specs", "suites", "load_suite",
           "on_new_trial", "reset_for_new_trial"]

ID_PATTERN = re.compile(r"^(?P<suite>[a-z0-9_]+)/(?P<name>[a-z0-9_\-]+)-v(?P<version>\d+)$")

# Suites known to the project: name -> module that registers its tasks on import.
SUITE_MODULES: dict[str, str] = {
    "didactic": "suites.didactic",
    "dmc": "suites.dmc",
    "t2i": "suites.t2i",
}


class UnknownName(UserError):
    """An unknown suite, task or algorithm name; the message carries 'did you mean' hints."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    """table[name], or `UnknownName` naming the close matches and every known name (suites, algorithms,
    domains: one message shape everywhere)."""
    try:
        return table[name]
    except KeyError:
        raise UnknownName(f"unknown {what} {name!r}.{did_you_mean(name, table)} "
                          f"Known: {', '.join(sorted(table))}.") from None


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One benchmark task.

    id:          `<suite>/<name>-v<N>`; the version is part of every result row.
    entry_point: `"module:attr"`, a callable `(**kwargs) -> task object`; imported lazily.
    kwargs:      keyword arguments for the entry point (read-only).
    tags:        subsets this task belongs to, e.g. {"tiny", "cpu", "paper"}.
    description: one line for `b2fb list`.
    """

    id: str
    entry_point: str
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    description: str = ""

    def __post_init__(self) -> None:
        if not ID_PATTERN.match(self.id):
            raise ValueError(f"task id {self.id!r} does not match '<suite>/<name>-v<N>'")
        if ":" not in self.entry_point:
            raise ValueError(f"entry point {self.entry_point!r} of {self.id} must be 'module:attr'")
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        object.__setattr__(self, "tags", frozenset(self.tags))

    @property
    def suite(self) -> str:
        return ID_PATTERN.match(self.id)["suite"]

    @property
    def version(self) -> int:
        return int(ID_PATTERN.match(self.id)["version"])

    @property
    def slug(self) -> str:
        """File-system friendly id: `didactic/three-state-v0` -> `three-state-v0`."""
        return self.id.split("/", 1)[1]

    def with_kwargs(self, **overrides: Any) -> "TaskSpec":
        """The same task with some entry-point kwargs replaced (e.g. a custom CMP file path)."""
        return dataclasses.replace(self, kwargs={**self.kwargs, **overrides})

    def make(self) -> Any:
        """Import the entry point and build the task object."""
        module_name, attr = self.entry_point.split(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
        return factory(**dict(self.kwargs))


_REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Add a task. Re-registering an identical spec is a no-op; a conflicting one is an error."""
    existing = _REGISTRY.get(spec.id)
    if existing is not None and existing != spec:
        raise ValueError(f"task {spec.id!r} is already registered with a different definition")
    _REGISTRY[spec.id] = spec
    return spec


def suites() -> list[str]:
    return sorted(SUITE_MODULES)


def load_suite(suite: str) -> None:
    """Import the module that registers a suite's tasks."""
    importlib.import_module(lookup(SUITE_MODULES, suite, "suite"))


def _load_all() -> None:
    for suite in SUITE_MODULES:
        load_suite(suite)


def get(task_id: str) -> TaskSpec:
    """Look up a task by id; unknown ids raise `UnknownName` with close matches."""
    suite = task_id.split("/", 1)[0]
    if suite in SUITE_MODULES:
        load_suite(suite)
    else:
        _load_all()
    try:
        return _REGISTRY[task_id]
    except KeyError:
        raise UnknownName(f"unknown task {task_id!r}.{did_you_mean(task_id, _REGISTRY)} "
                          f"See `b2fb list` for all tasks.") from None


def select(suite: str, *tags: str) -> tuple[TaskSpec, ...]:
    """All tasks of a suite that carry every given tag, sorted by id."""
    load_suite(suite)
    return tuple(sorted((s for s in _REGISTRY.values() if s.suite == suite and set(tags) <= s.tags),
                        key=lambda s: s.id))


def all_specs() -> tuple[TaskSpec, ...]:
    _load_all()
    return tuple(sorted(_REGISTRY.values(), key=lambda s: s.id))


# ---- per-trial process state ------------------------------------------------------------------------
# The orchestrator reuses a Ray worker for trial after trial (it saves each later trial its imports of torch
# and diffusers and Ray's actor start-up: 7.8-11.4 s in `make perf SUITE=t2i`'s worker_reuse).  A trial must
# still see what a fresh process would: module-level state that a trial
# fills (a cache whose entries, or size, depend on the trials before) is reset before each trial by a function
# registered here.  Pure memo caches (same input, same bits, bounded) need not be.
_TRIAL_RESETS: list[Callable[[], None]] = []


def on_new_trial(reset: Callable[[], None]) -> Callable[[], None]:
    """Decorator: run `reset` before every trial that `execute_trial` starts in this process."""
    _TRIAL_RESETS.append(reset)
    return reset


def reset_for_new_trial() -> None:
    for reset in _TRIAL_RESETS:
        reset()
