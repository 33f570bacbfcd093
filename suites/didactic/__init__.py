"""Didactic suite: the one-step FB paper's tabular CMPs with exact ground truth (fb.md §4).

Tasks (registered here, built lazily by `suites.didactic.task:make_task`):
  didactic/three-state-v0  the 3-state CMP (a_i: s0 -> s_i; s1, s2 absorbing)
  didactic/five-state-v0   the 5-state circular CMP (a0: +1; a1: -1 w.p. 0.7, stay w.p. 0.3)
  didactic/custom-v0       a CMP from a YAML file: give the task kwarg `path`
                           (example: suites/didactic/cmps/four-state-chain.yaml)
"""
from pathlib import Path

from suites.registry import TaskSpec, register

ENTRY = "suites.didactic.task:make_task"
EXAMPLE_CMP = str(Path(__file__).parent / "cmps" / "four-state-chain.yaml")
# Every entry-point kwarg with its default, so a grid may override any of them (see task.make_task).
DEFAULTS = {"batch": "exact", "n_eval_rewards": 8, "reward_seed": 0, "gamma": None}

register(TaskSpec("didactic/three-state-v0", ENTRY, {"cmp": "three-state", **DEFAULTS}, frozenset({"tiny", "cpu", "paper"}),
                  "3-state CMP: a_i moves s0 to s_i; s1, s2 absorbing; uniform beta and rho; gamma 0.9"))
register(TaskSpec("didactic/five-state-v0", ENTRY, {"cmp": "five-state", **DEFAULTS}, frozenset({"tiny", "cpu", "paper"}),
                  "5-state circular CMP: a0 +1; a1 -1 w.p. 0.7 else stay; uniform beta and rho; gamma 0.9"))
register(TaskSpec("didactic/custom-v0", ENTRY, {"cmp": "file", "path": None, **DEFAULTS}, frozenset({"custom"}),
                  "a CMP read from a YAML file (task kwarg 'path'); validated on load"))
