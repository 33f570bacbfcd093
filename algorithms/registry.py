"""Algorithm registry: name -> adapter.  Import-light (the algorithm module loads on first use).

An adapter is a module with
  Config:   a frozen dataclass of hyperparameters, each field documented (defaults follow the
            reference code; the suites' YAML grids override them);
  run(task, cfg, run):  trains on `task` and writes through `run` (the results writer of one trial);
            it never knows about Ray, and the orchestrator never knows about losses.

A field added to a Config after runs of its algorithm were committed is declared with `added_field`:
it enters the run id (benchmarks/config.py) only when set to another value than its default, so a new
knob that reproduces today's behaviour at its default re-keys, and re-runs, nothing.
"""
from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from suites.registry import lookup

__all__ = ["AlgorithmSpec", "get", "all_algorithms", "for_suite", "added_field", "ADDED"]

ADDED = "added"
"""The dataclass-field metadata key that `added_field` sets (its value: when / why the field came)."""


def added_field(default, *, added: str):
    """A Config field that left at `default` keeps every run id as it was before the field existed.
    `added` says when and why it came (e.g. "issue 15: ..."); its default must reproduce the behaviour
    of the runs committed before it."""
    return dataclasses.field(default=default, metadata={ADDED: added})


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    module: str
    suites: frozenset[str]
    description: str
    defaults: tuple[tuple[str, object], ...] = ()
    """Config values this name fixes before the grid's (one module can serve several names)."""

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


_ALGORITHMS = {
    spec.name: spec
    for spec in (
        AlgorithmSpec("fb", "algorithms.fb.fb", frozenset({"didactic", "dmc"}),
                      "FB, Touati et al. (controllable_agent semantics)"),
        AlgorithmSpec("onestep_fb", "algorithms.fb.onestep_fb", frozenset({"didactic", "dmc"}),
                      "one-step FB, Zheng et al. (onestep-fb semantics)"),
        AlgorithmSpec("ddpo", "algorithms.diffusion.ddpo", frozenset({"t2i"}),
                      "DDPO, Black et al. (ddpo-pytorch semantics: PPO-clip on DDIM log-probs, LoRA)"),
        AlgorithmSpec("ddpo_shuffled", "algorithms.diffusion.ddpo_shuffled", frozenset({"t2i"}),
                      "control: DDPO with each epoch's advantages permuted (equal movement, no reward signal)"),
        AlgorithmSpec("b2diffurl", "algorithms.diffusion.b2diffurl", frozenset({"t2i"}),
                      "B²-DiffuRL, Hu et al. (released-code semantics: backward progressive intervals, branch "
                      "groups, extremes selected by history z-score, PPO-clip, LoRA)"),
        AlgorithmSpec("b2diffurl_no_backward", "algorithms.diffusion.b2diffurl", frozenset({"t2i"}),
                      "ablation: B²-DiffuRL training all T steps in every stage (branching at step 0)",
                      (("backward", False),)),
        AlgorithmSpec("b2diffurl_no_branch", "algorithms.diffusion.b2diffurl", frozenset({"t2i"}),
                      "ablation: B²-DiffuRL with independent samples (K = 1, K x the batches: equal queries)",
                      (("branch", False),)),
        AlgorithmSpec("b2diffurl_neither", "algorithms.diffusion.b2diffurl", frozenset({"t2i"}),
                      "ablation: B²-DiffuRL with neither the backward schedule nor branches",
                      (("backward", False), ("branch", False))),
        AlgorithmSpec("b2diffurl_positives_only", "algorithms.diffusion.b2diffurl", frozenset({"t2i"}),
                      "diagnostic: B²-DiffuRL with β₋ = 0 (selected negatives are trained with zero advantage)",
                      (("neg_weight", 0.0),)),
        AlgorithmSpec("uniform_random", "algorithms.baselines.fixed_policy", frozenset({"dmc"}),
                      "baseline: uniform-random actions (trains nothing)", (("policy", "random"),)),
        AlgorithmSpec("zero_action", "algorithms.baselines.fixed_policy", frozenset({"dmc"}),
                      "baseline: the zero action (trains nothing)", (("policy", "zero"),)),
    )
}


def get(name: str) -> AlgorithmSpec:
    return lookup(_ALGORITHMS, name, "algorithm")


def all_algorithms() -> tuple[AlgorithmSpec, ...]:
    return tuple(_ALGORITHMS[k] for k in sorted(_ALGORITHMS))


def for_suite(suite: str) -> tuple[AlgorithmSpec, ...]:
    return tuple(a for a in all_algorithms() if suite in a.suites)
