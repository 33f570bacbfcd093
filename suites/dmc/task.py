"""The dmc task object: the registry entry point of every `dmc/...` task.

Building it is cheap (no environment is built, dm_control is not imported): it validates the names
and carries the task's facts.  Environments, rewards and relabelling are reached through it lazily.

This is the task-definition part of the suite.  The zero-shot side of `suites.zeroshot.ZeroShotTask`
(reward-free datasets, `sample`, `evaluate`, `data_hashes`) comes with the data-collection part.
"""
from __future__ import annotations

from suites.dmc.domains import check_task, task_id

__all__ = ["DMCTask", "make_task"]


class DMCTask:
    """One dmc task: facts, environment factory, reward and relabelling."""

    discrete_actions = False

    def __init__(self, domain: str, task: str):
        spec = check_task(domain, task)
        self.domain, self.task, self.spec = domain, task, spec
        self.id = task_id(domain, task)
        self.obs_dim, self.action_dim, self.state_dim = spec.obs_dim, spec.action_dim, spec.state_dim
        self.episode_length, self.control_timestep = spec.episode_length, spec.control_timestep
        self.suite_backed = task in spec.suite_tasks
        self.reward_uses_action = spec.reward_uses_action

    def make_env(self, seed: int | None = None):
        """A `suites.dmc.envs.DMCEnv`: flat float32 observations, actions in [-1, 1]."""
        from suites.dmc.envs import DMCEnv

        return DMCEnv(self.domain, self.task, seed)

    def reward(self, physics, action=None) -> float:
        """This task's reward in a physics state (`action` is used by point_mass_maze only)."""
        from suites.dmc.rewards import task_reward

        return task_reward(self.domain, self.task)(physics, action)

    def relabel(self, states, actions=None):
        """This task's rewards [T] for stored physics states (see suites.dmc.relabel)."""
        from suites.dmc.relabel import relabel

        return relabel(self.domain, states, actions, tasks=(self.task,))[self.task]

    def __repr__(self) -> str:
        return f"DMCTask({self.id})"


def make_task(domain: str, task: str) -> DMCTask:
    """Entry point of the registry (kwargs `domain`, `task` as dm_control names, e.g. 'run_backward')."""
    return DMCTask(domain, task)
