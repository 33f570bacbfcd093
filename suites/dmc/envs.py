"""Per-domain dm_control environments and `DMCEnv`, the one environment interface the suite uses.

`make_dm_env(domain, task, random)` builds the dm_control environment of a task, its reward replaced by
the project's (suites.dmc.rewards), with native action units:
  walker, cheetah, quadruped: dm_control.suite's own model, initial states and observations for the
    domain (quadruped: the floor size of the suite's task; stand and jump use walk's, as URLB does);
  jaco: suites.dmc.jaco (composer);  point_mass_maze: suites.dmc.maze.
With `pixels=True` (the environments that pixel datasets and pixel evaluation render, suites/dmc/pixels.py)
the model differs only in what a camera sees, never in its dynamics, rewards or observations: quadruped's
floor is walk's for every task (the size the data were collected with: one picture for one dataset), and
jaco gets a fixed camera (ExORL's FRONT_CLOSE) and its target site is hidden (one dataset serves the four
reach tasks).
For the suite tasks the reward equals the suite's own reward (tested), so the environment is the suite's
environment.  The other tasks keep the domain's suite initial states and observations (as URLB does).

`DMCEnv` wraps it for the rest of the project:
  - observations: one flat float32 vector (dm_control's `flat_observation` order);
  - actions: float in [-1, 1]^action_dim, clipped, then mapped affinely onto the actuators' control
    range (identity where that range is already [-1, 1]); this is URLB's `action_scale` convention,
    so quadruped (ranges like [-1, 1.1]) and jaco (joint speeds) see ExORL's action space;
  - episodes end by time limit only (no terminal states): `last` is True on step `episode_length`;
  - `reset(seed)` reseeds the environment's RandomState in place; `DMCEnv(d, t, seed=s).reset()`
    starts the same episode as `dm_control.suite.load(d, t, task_kwargs={"random": s})`.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from suites.dmc import _mujoco  # noqa: F401  (before dm_control: see _mujoco.py)
from dm_control.rl import control
from dm_control.suite import cheetah, common, quadruped, walker

from suites.dmc import jaco, maze, rewards
from suites.dmc.domains import Domain, check_task

__all__ = ["make_dm_env", "DMCEnv", "make_env"]


class _ProjectReward:
    """Mixin for a dm_control.suite task class: the project's reward replaces the suite's."""

    def __init__(self, reward: Callable, **task_kwargs):
        self._project_reward = reward
        super().__init__(**task_kwargs)

    def get_reward(self, physics):
        return self._project_reward(physics)


class WalkerTask(_ProjectReward, walker.PlanarWalker):
    """Suite walker initial states (random joint angles) and observations (24-d)."""


class CheetahTask(_ProjectReward, cheetah.Cheetah):
    """Suite cheetah initial states (random joint angles, 200 settling steps) and observations (17-d)."""


class QuadrupedTask(_ProjectReward, quadruped.Move):
    """Suite quadruped initial states (random orientation, lowest non-contacting height) and observations
    (78-d)."""


def _walker(task: str, random: np.random.RandomState, pixels: bool = False) -> control.Environment:
    physics = walker.Physics.from_xml_string(*walker.get_model_and_assets())
    # move_speed only enters the suite's own reward, which the project's replaces.
    suite_task = WalkerTask(reward=rewards.REWARDS["walker"][task], move_speed=0, random=random)
    return control.Environment(physics, suite_task, time_limit=25, control_timestep=0.025,
                               flat_observation=True)


def _cheetah(task: str, random: np.random.RandomState, pixels: bool = False) -> control.Environment:
    physics = cheetah.Physics.from_xml_string(*cheetah.get_model_and_assets())
    suite_task = CheetahTask(reward=rewards.REWARDS["cheetah"][task], random=random)
    return control.Environment(physics, suite_task, time_limit=10, control_timestep=0.01,
                               flat_observation=True)


# Floor half-size = time limit x target speed, as dm_control.suite.quadruped builds walk and run.  A
# plane is infinite for collisions, so the size changes only rendering; stand and jump use walk's.
QUADRUPED_FLOOR_SIZE = {"run": 20 * 5, "walk": 20 * 0.5, "stand": 20 * 0.5, "jump": 20 * 0.5}
# Pixels: one floor for every task, data and evaluation alike: walk's, the size of the environment that
# collects the domain's data (suites.dmc.collect builds the first task's, jump, which uses walk's).
QUADRUPED_PIXEL_FLOOR_SIZE = QUADRUPED_FLOOR_SIZE["walk"]


def _quadruped(task: str, random: np.random.RandomState, pixels: bool = False) -> control.Environment:
    floor = QUADRUPED_PIXEL_FLOOR_SIZE if pixels else QUADRUPED_FLOOR_SIZE[task]
    xml = quadruped.make_model(floor_size=floor)
    physics = quadruped.Physics.from_xml_string(xml, common.ASSETS)
    suite_task = QuadrupedTask(reward=rewards.REWARDS["quadruped"][task], desired_speed=0, random=random)
    return control.Environment(physics, suite_task, time_limit=20, control_timestep=0.02,
                               flat_observation=True)


BUILDERS: dict[str, Callable[..., object]] = {
    "walker": _walker,
    "cheetah": _cheetah,
    "quadruped": _quadruped,
    "jaco": jaco.make_environment,
    "point_mass_maze": maze.make_environment,
}


def make_dm_env(domain: str, task: str, random: np.random.RandomState | int | None = None,
                pixels: bool = False):
    """The dm_control environment (dm_env interface, native action units) of one task; `pixels`: the model
    that pixel observations are rendered from (see the module docstring)."""
    check_task(domain, task)
    if not isinstance(random, np.random.RandomState):
        random = np.random.RandomState(random)
    return BUILDERS[domain](task, random, pixels=pixels) if pixels else BUILDERS[domain](task, random)


def _flatten(observation) -> np.ndarray:
    """dm_control observations -> one float32 vector, in the environment's own key order."""
    if "observations" in observation and len(observation) == 1:  # control.Environment(flat_observation=True)
        flat = observation["observations"]
    else:  # composer: a dict of arrays with a leading batch axis of 1
        flat = np.concatenate([np.asarray(v).ravel() for v in observation.values()])
    return np.asarray(flat, dtype=np.float32)


class DMCEnv:
    """One task's environment: flat float32 observations, actions in [-1, 1], the project's reward.

        env = DMCEnv("walker", "flip", seed=0)
        obs = env.reset()                     # or env.reset(seed=3)
        obs, reward, last = env.step(action)  # last: the episode reached `episode_length` steps
        state = env.get_state()               # physics state (qpos, qvel, act) for relabelling
    """

    def __init__(self, domain: str, task: str, seed: int | None = None, pixels: bool = False):
        self.spec: Domain = check_task(domain, task)
        self.domain, self.task, self.pixels = domain, task, pixels
        self.episode_length = self.spec.episode_length
        self.obs_dim, self.action_dim = self.spec.obs_dim, self.spec.action_dim
        self._random = np.random.RandomState(seed)
        self.dm_env = make_dm_env(domain, task, self._random, pixels=pixels)
        action_spec = self.dm_env.action_spec()
        low = np.broadcast_to(np.asarray(action_spec.minimum, np.float64), action_spec.shape)
        high = np.broadcast_to(np.asarray(action_spec.maximum, np.float64), action_spec.shape)
        self._native_dtype = action_spec.dtype
        self._identity_actions = bool(np.all(low == -1.0) and np.all(high == 1.0))
        # URLB's action_scale: native = low + (high - low) / 2 * (a + 1)
        self._action_low, self._action_scale = low, (high - low) / 2.0
        self.steps = 0
        self._needs_reset = True

    @property
    def physics(self):
        return self.dm_env.physics

    def native_action(self, action) -> np.ndarray:
        """An action in [-1, 1] (clipped) -> the actuators' control units."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_dim), -1.0, 1.0)
        if self._identity_actions:
            return a.astype(self._native_dtype, copy=False)
        return (self._action_low + self._action_scale * (a + 1.0)).astype(self._native_dtype, copy=False)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start an episode; `seed` reseeds the environment's random state first (else it continues)."""
        if seed is not None:
            self._random.seed(seed)
        time_step = self.dm_env.reset()
        self.steps = 0
        self._needs_reset = False
        return _flatten(time_step.observation)

    def step(self, action) -> tuple[np.ndarray, float, bool]:
        if self._needs_reset:
            raise RuntimeError(f"{self.domain}/{self.task}: call reset() before step() "
                               f"(the episode {'ended' if self.steps else 'has not started'})")
        time_step = self.dm_env.step(self.native_action(action))
        self.steps += 1
        last = self.steps >= self.episode_length
        if time_step.last() != last:
            raise RuntimeError(f"{self.domain}/{self.task}: dm_control ended the episode at step {self.steps}, "
                               f"expected {self.episode_length}")
        self._needs_reset = last
        return _flatten(time_step.observation), float(time_step.reward), last

    def get_state(self) -> np.ndarray:
        return self.physics.get_state().copy()

    def rewards(self, action=None) -> dict[str, float]:
        """Every task's reward of this domain in the current state, e.g. to store them during collection.

        `action`: the action just passed to `step` (clipped here as there); needed for point_mass_maze.
        """
        if action is not None:
            action = np.clip(np.asarray(action, dtype=np.float64).reshape(self.action_dim), -1.0, 1.0)
        return rewards.domain_rewards(self.domain, self.physics, action)

    def __repr__(self) -> str:
        return f"DMCEnv({self.domain!r}, {self.task!r})"


def make_env(domain: str, task: str, seed: int | None = None) -> DMCEnv:
    return DMCEnv(domain, task, seed)
