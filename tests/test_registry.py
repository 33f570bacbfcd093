"""Registries: ids, lookups with hints, tags, and checks generated over every registered task."""
import dataclasses

import numpy as np
import pytest
import torch

from algorithms import registry as algo_registry
from suites import registry
from suites.didactic import EXAMPLE_CMP
from suites.errors import UserError

ALL_TASKS = [s.id for s in registry.all_specs()]


def test_ids_are_versioned_and_unique():
    assert len(ALL_TASKS) == len(set(ALL_TASKS))
    for task_id in ALL_TASKS:
        assert registry.ID_PATTERN.match(task_id), task_id
    assert {"didactic/three-state-v0", "didactic/five-state-v0"} <= set(ALL_TASKS)


def test_unknown_task_suggests_close_ids():
    with pytest.raises(UserError, match="Did you mean 'didactic/three-state-v0'"):
        registry.get("didactic/three-stat-v0")
    with pytest.raises(UserError, match="unknown suite 'didatic'.*'didactic'"):
        registry.load_suite("didatic")


def test_unknown_algorithm_suggests():
    with pytest.raises(UserError, match="Did you mean 'fb'"):
        algo_registry.get("fbb")
    assert algo_registry.get("onestep_fb").load().Config is not None


def test_select_by_tags():
    cpu = registry.select("didactic", "cpu")
    assert [s.id for s in cpu] == ["didactic/five-state-v0", "didactic/three-state-v0"]
    assert registry.select("didactic", "custom")[0].id == "didactic/custom-v0"
    assert registry.select("didactic", "cpu", "custom") == ()


def test_specs_are_frozen_and_conflicting_duplicates_rejected():
    spec = registry.get("didactic/three-state-v0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.id = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.kwargs["cmp"] = "five-state"  # type: ignore[index]
    registry.register(spec)  # identical re-registration is fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register(dataclasses.replace(spec, description="something else"))
    with pytest.raises(ValueError, match="does not match"):
        registry.TaskSpec("no-version", "m:a")


def _build(task_id):
    spec = registry.get(task_id)
    if spec.kwargs.get("cmp") == "file":
        spec = spec.with_kwargs(path=EXAMPLE_CMP)
    return spec.make()


@pytest.mark.parametrize("task_id", [t for t in ALL_TASKS if t.startswith("didactic/")])
def test_every_didactic_task_builds_with_a_proper_data_distribution(task_id):
    task = _build(task_id)
    batch = task.sample(16, torch.Generator().manual_seed(0))
    # the exact support: probabilities sum to one and rows are one-hot
    assert torch.isclose(batch.weight.sum(), torch.tensor(1.0))
    for t in (batch.obs, batch.action, batch.next_obs, batch.next_action):
        assert torch.all(t.sum(1) == 1) and set(t.unique().tolist()) <= {0.0, 1.0}
    # every transition in the support is possible under P and beta
    s, a = batch.obs.argmax(1), batch.action.argmax(1)
    s2, a2 = batch.next_obs.argmax(1), batch.next_action.argmax(1)
    P = torch.as_tensor(task.cmp.P)
    assert torch.all(P[s, a, s2] > 0)
    assert np.all(task.cmp.beta[s2.numpy(), a2.numpy()] > 0)
    assert task.data_hashes() and all(len(v) == 64 for v in task.data_hashes().values())


@pytest.mark.parametrize("task_id", [t for t in ALL_TASKS if t.startswith("didactic/")])
def test_every_didactic_task_samples_deterministically(task_id):
    spec = registry.get(task_id)
    if spec.kwargs.get("cmp") == "file":
        spec = spec.with_kwargs(path=EXAMPLE_CMP)
    task = spec.with_kwargs(batch="sampled").make()
    a = task.sample(64, torch.Generator().manual_seed(3))
    b = task.sample(64, torch.Generator().manual_seed(3))
    assert a.weight is None and len(a) == 64
    assert torch.equal(a.obs, b.obs) and torch.equal(a.next_action, b.next_action)
