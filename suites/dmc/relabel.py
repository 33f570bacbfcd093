"""Rewards of every task of a domain for stored physics states (fb.md §6, "Relabelling").

    from suites.dmc.relabel import relabel
    rewards = relabel("walker", states)                       # {"flip": [T], "run": [T], ...}
    rewards = relabel("point_mass_maze", states, actions)     # this domain needs the actions too

`states[t]` is `physics.get_state()` (qpos, qvel, act; float64) as ExORL stores it in `physics`.  Each
row is restored the reference way, `with physics.reset_context(): physics.set_state(state)`, and
every task's reward function (suites.dmc.rewards) reads the physics.  This gives exactly the reward
the live environment returned on the step that produced the state (tests/test_dmc_tasks.py).

point_mass_maze's reward also depends on the control, which is not part of the physics state: pass
`actions[t]`, the action (in [-1, 1]; clipped here as the environment clips it) whose step produced
`states[t]`.  In ExORL's episode files that is `action[t]` beside `physics[t]` (index 0 holds the
initial state and a dummy zero action).

One environment per domain is built on first use and reused (`Relabeller`).  Measured on one core of
the 2-core development machine, all tasks of a domain at once: walker ~13K states/s, cheetah ~20K,
quadruped ~12K, point_mass_maze ~10K, jaco ~2.6K (two mj_forward calls per state dominate:
`reset_context` runs one on the reset state and one after `set_state`).
"""
from __future__ import annotations

import numpy as np
from suites.dmc import _mujoco  # noqa: F401  (before dm_control: see _mujoco.py)
from dm_control.rl.control import PhysicsError

from suites.dmc.domains import get_domain
from suites.dmc.envs import DMCEnv
from suites.dmc.rewards import REWARDS
from suites.errors import UserError

__all__ = ["Relabeller", "relabel"]


class Relabeller:
    """Relabels states of one domain on one reusable physics."""

    def __init__(self, domain: str):
        self.spec = get_domain(domain)
        self.domain = domain
        # Any task's environment has the domain's model (quadruped: floor sizes differ, which only
        # changes rendering; see suites.dmc.envs).
        self._env = DMCEnv(domain, self.spec.tasks[0], seed=0)  # keep it: composer hands out a weak proxy
        self._physics = self._env.physics

    def __call__(self, states, actions=None, tasks=None) -> dict[str, np.ndarray]:
        """{task: rewards [T]} for every task of the domain (or only `tasks`)."""
        spec = self.spec
        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != spec.state_dim:
            raise UserError(f"{self.domain} states have shape {states.shape}; expected (T, {spec.state_dim}), "
                            f"rows of physics.get_state() (qpos, qvel, act) of the {self.domain} model")
        n = states.shape[0]
        if spec.reward_uses_action:
            if actions is None:
                raise UserError(f"the {self.domain} rewards depend on the control: pass the stored actions "
                                f"(T, {spec.action_dim}) beside the states")
            actions = np.asarray(actions, dtype=np.float64)
            if actions.shape != (n, spec.action_dim):
                raise UserError(f"{self.domain} actions have shape {actions.shape}; expected ({n}, {spec.action_dim}),"
                                f" one action per state")
            actions = np.clip(actions, -1.0, 1.0)
        names = spec.tasks if tasks is None else tuple(tasks)
        for name in names:
            if name not in REWARDS[self.domain]:
                raise UserError(f"dmc domain {self.domain!r} has no task {name!r}; its tasks are "
                                f"{', '.join(spec.tasks)}")
        functions = [REWARDS[self.domain][name] for name in names]
        out = np.empty((len(names), n), dtype=np.float64)
        physics = self._physics
        for t in range(n):
            try:
                with physics.reset_context():
                    physics.set_state(states[t])
            except PhysicsError as err:
                raise UserError(f"{self.domain} state row {t} is not a valid physics state ({err})") from None
            if spec.reward_uses_action:
                for k, fn in enumerate(functions):
                    out[k, t] = fn(physics, actions[t])
            else:
                for k, fn in enumerate(functions):
                    out[k, t] = fn(physics)
        return {name: out[k] for k, name in enumerate(names)}


_RELABELLERS: dict[str, Relabeller] = {}


def relabel(domain: str, states, actions=None, tasks=None) -> dict[str, np.ndarray]:
    """{task: rewards [T]} for stored states of `domain` (see the module docstring); one cached
    environment per domain."""
    if domain not in _RELABELLERS:
        _RELABELLERS[domain] = Relabeller(domain)
    return _RELABELLERS[domain](states, actions, tasks)
