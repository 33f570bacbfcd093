"""Fixed reference policies for zero-shot tables: uniform-random actions and the zero action.

Neither trains; each is evaluated once, with the task's own protocol, so every table shows what a
policy that ignores the reward scores (fb.md §11: on walker stand a zero action already scores ~128).
Registered twice: `uniform_random` (policy "random") and `zero_action` (policy "zero").
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from algorithms.fb.common import check_choices

POLICIES = ("random", "zero")


@dataclasses.dataclass(frozen=True)
class Config:
    policy: str = "random"
    """'random': actions uniform in [-1, 1] at every step; 'zero': the zero action."""

    def __post_init__(self):
        check_choices(self, policy=POLICIES)


class FixedPolicy:
    """A zero-shot 'agent' whose action does not depend on the reward."""

    uses_observations = False
    """Nor on what it sees: a pixel task evaluates it without rendering (suites/dmc/zeroshot.py)."""

    def __init__(self, policy: str, action_dim: int, seed: int):
        self.policy, self.action_dim = policy, action_dim
        self.generator = torch.Generator().manual_seed(seed)

    def infer_task_vector(self, batch: Any, reward: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1)

    def act(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        shape = (obs.shape[0], self.action_dim)
        if self.policy == "zero":
            return torch.zeros(shape)
        return torch.rand(shape, generator=self.generator) * 2 - 1


def run(task: Any, cfg: Config, run: Any) -> None:
    """Evaluate the fixed policy once with the task's protocol (step 0: nothing is trained)."""
    result = task.evaluate(FixedPolicy(cfg.policy, task.action_dim, run.seed))
    run.log(0, result.metrics, split="eval")
    run.add_samples(result.samples, step=0)
