"""The point-mass maze of Touati et al. (not in the one-step FB grid): the project's own model and task.

Model: suites/dmc/point_mass_maze.xml, a ball in four rooms (layout in the XML's header).
Episodes: 1000 steps of 0.02 s.  Observation: position (2) and velocity (2).
Initial state: the ball at rest, uniform in the top-left room, x ~ U(-0.29, -0.15), y ~ U(0.15, 0.29)
(the reference's start region).
Reward (suites.dmc.rewards.maze_reach): near the task's target, times a small-control term.

Deviations from the reference (url_benchmark/custom_dmc_tasks/point_mass_maze.py), on purpose:
  - the start position comes from the task's seeded RNG; the reference draws it from numpy's global
    RNG, so its episodes are not reproducible from the task seed;
  - the ball touches only the walls: the reference also lets the ball touch the floor plane, with
    friction, at zero penetration depth; here it slides on the floor without friction;
  - the reward reads the action explicitly (`maze_reach(physics, action, target)`), so stored
    transitions relabel exactly (suites.dmc.relabel takes the stored actions).  The reference recipe,
    `task.get_reward(physics)` after `reset_context()` (fb.md §6), sees the controls zeroed by the
    reset, so its relabelled rewards lose the control term (they are up to 25% higher than live ones).
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
from suites.dmc import _mujoco  # noqa: F401  (before dm_control: see _mujoco.py)
from dm_control import mujoco
from dm_control.rl import control
from dm_control.suite import base, common

from suites.dmc import rewards

MODEL_PATH = Path(__file__).with_name("point_mass_maze.xml")
TIME_LIMIT = 20.0  # seconds; 1000 steps of 0.02 s
START_X = (-0.29, -0.15)
START_Y = (0.15, 0.29)


class MazeTask(base.Task):
    """Reach a fixed target; the reward also depends on the control just applied."""

    def __init__(self, target: tuple[float, float], random=None):
        self._target = tuple(target)
        super().__init__(random=random)

    def initialize_episode(self, physics):
        physics.named.data.qpos["root_x"] = self.random.uniform(*START_X)
        physics.named.data.qpos["root_y"] = self.random.uniform(*START_Y)
        super().initialize_episode(physics)

    def get_observation(self, physics):
        obs = collections.OrderedDict()
        obs["position"] = physics.position()
        obs["velocity"] = physics.velocity()
        return obs

    def get_reward(self, physics):
        # physics.control() is the action set by `before_step` for this step.
        return rewards.maze_reach(physics, physics.control(), self._target)


def make_physics(target: tuple[float, float] = (0.0, 0.0)) -> mujoco.Physics:
    physics = mujoco.Physics.from_xml_string(MODEL_PATH.read_text(), common.ASSETS)
    physics.named.model.geom_pos["target", :2] = target  # visual only: the reward uses the constant
    return physics


def make_environment(task: str, random: np.random.RandomState) -> control.Environment:
    target = rewards.MAZE_TARGETS[task]
    return control.Environment(make_physics(target), MazeTask(target, random=random), time_limit=TIME_LIMIT,
                               control_timestep=0.02, flat_observation=True)
