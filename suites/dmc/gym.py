"""Gymnasium registration of every dmc task.  Importing this module registers them all:

    import gymnasium
    import suites.dmc.gym  # registers b2fb/dmc-<domain>-<task>-v<N>
    env = gymnasium.make("b2fb/dmc-walker-flip-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

Ids: the registry id with its suite prefix folded in, `dmc/walker-flip-v0` -> `b2fb/dmc-walker-flip-v0`.
Spaces: observation Box(-inf, inf, (obs_dim,), float32); action Box(-1, 1, (action_dim,), float32).
Episodes: `terminated` is always False (these tasks have no terminal states); `truncated` is True on
step `episode_length` (also `spec.max_episode_steps`).  `reset(seed=s)` seeds the dm_control task's
RandomState with `s`, so the first episode equals `dm_control.suite.load(d, t, task_kwargs={"random": s})`
for the suite tasks; `reset()` without a seed continues that RandomState.
`info["physics_state"]` is the physics state after the step (for relabelling, suites.dmc.relabel).
"""
from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

from suites import registry

__all__ = ["DMCGymEnv", "gym_id", "register_all"]

NAMESPACE = "b2fb"


class DMCGymEnv(gymnasium.Env):
    """A dmc task as a gymnasium environment (a thin layer over `suites.dmc.envs.DMCEnv`)."""

    metadata = {"render_modes": []}

    def __init__(self, domain: str, task: str):
        from suites.dmc.envs import DMCEnv  # dm_control is imported when an environment is made

        self.env = DMCEnv(domain, task)
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.env.obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (self.env.action_dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs = self.env.reset(seed=seed)
        return obs, {"physics_state": self.env.get_state()}

    def step(self, action):
        obs, reward, last = self.env.step(action)
        return obs, reward, False, last, {"physics_state": self.env.get_state()}


def gym_id(task_id: str) -> str:
    """`dmc/walker-flip-v0` -> `b2fb/dmc-walker-flip-v0`."""
    suite, slug = task_id.split("/", 1)
    return f"{NAMESPACE}/{suite}-{slug}"


def register_all() -> list[str]:
    """Register every dmc task with gymnasium (idempotent); returns the gymnasium ids.  The per-domain
    zero-shot benchmark entries (tag "zeroshot") are datasets + protocols, not environments."""
    ids = []
    for spec in (s for s in registry.select("dmc") if "zeroshot" not in s.tags):
        env_id = gym_id(spec.id)
        if env_id not in gymnasium.registry:
            task = spec.make()
            gymnasium.register(id=env_id, entry_point=f"{__name__}:DMCGymEnv",
                               kwargs={"domain": task.domain, "task": task.task},
                               max_episode_steps=task.episode_length)
        ids.append(env_id)
    return ids


GYM_IDS = register_all()
