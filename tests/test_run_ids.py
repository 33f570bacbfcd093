"""Run ids stay put when an algorithm's Config grows (benchmarks/config.py `hashed_config`,
algorithms/registry.py `added_field`): every committed run under results/ keeps its id with today's code,
and with a new knob left at its default, while setting the knob re-keys the run."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from algorithms import registry
from benchmarks.config import build_config, config_hash, hashed_config

RESULTS = Path(__file__).resolve().parents[1] / "results"
MANIFESTS = sorted(RESULTS.rglob("runs/*/manifest.json"))


def _run_id(manifest: dict, cls: type) -> str:
    cfg = build_config(cls, manifest["config"], manifest["run_id"])
    h = config_hash(manifest["suite"], manifest["algorithm"], hashed_config(cfg), manifest["task_id"],
                    manifest["task_kwargs"])
    return f"{manifest['algorithm']}--{manifest['task_id'].split('/', 1)[1]}--{h[:8]}--seed{manifest['seed']}"


def _with_field(cls: type, field) -> type:
    """`cls` with one more field (a subclass, as if the field had been written into the Config)."""
    return dataclasses.make_dataclass(cls.__name__, [("new_knob", float, field)], bases=(cls,), frozen=True)


def test_there_are_committed_runs_of_every_suite():
    assert len(MANIFESTS) >= 100
    assert {json.loads(p.read_text())["suite"] for p in MANIFESTS} == {"didactic", "dmc", "t2i"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(RESULTS).parent))
def test_committed_run_ids_survive_today_code_and_a_new_default_valued_knob(path):
    manifest = json.loads(path.read_text())
    cls = registry.get(manifest["algorithm"]).load().Config
    assert _run_id(manifest, cls) == manifest["run_id"] == path.parent.name
    assert manifest["config_hash"].startswith(manifest["run_id"].split("--")[2])
    knob = _with_field(cls, registry.added_field(0.5, added="a test knob"))
    assert _run_id(manifest, knob) == manifest["run_id"]
    assert _run_id({**manifest, "config": {**manifest["config"], "new_knob": 0.7}}, knob) != manifest["run_id"]


def test_a_knob_added_without_added_field_would_re_key_the_runs():
    """The guard above can fail: a plain new field enters the hash even at its default."""
    manifest = json.loads(next(p for p in MANIFESTS if "/t2i/runs/" in str(p)).read_text())
    cls = registry.get(manifest["algorithm"]).load().Config
    plain = _with_field(cls, dataclasses.field(default=0.5))
    assert _run_id(manifest, plain) != manifest["run_id"]
