"""Jaco reach: dm_control's composer Jaco arm and hand must bring the tool centre point to a fixed target.

dm_control.suite has no Jaco; this task is built from the same parts as dm_control.manipulation's
`reach_site_features` (standard arena, Jaco arm with its 3-finger hand at the arm offset, perfect
features), with the ExORL/URLB reach tasks' facts (fb.md §6):
  - four fixed targets on the table, (+-0.09, +-0.09, 0.001) (suites.dmc.rewards.JACO_TARGETS);
  - reward tolerance(|tcp - target|, bounds=(0, 0.05), margin=0.05), gaussian;
  - episodes of 10 s at 0.04 s per step = 250 steps (20 physics steps of 0.002 s each);
  - initial state: a random grasp closure, then the tool centre point placed by inverse kinematics,
    pointing down, uniform in the box (-0.2, -0.2, 0.02)..(0.2, 0.2, 0.4): the site workspace's
    `tcp_bbox` of ExORL's `custom_dmc_tasks/jaco.py` (`_SITE_WORKSPACE`, used with `use_site=True`,
    which is how ExORL and the one-step FB code build these fixed-target reach tasks).
    Domain version 1.  Version 0 (until 2026-12-02) used (-0.1, -0.1, 0.2)..(0.1, 0.1, 0.4), the
    `_DUPLO_WORKSPACE` box of URLB's movable-brick task: over 48 resets the tip always started 0.2 m or
    more from every target, which fixed-target reach data never had in the references.
Observation (42 = 12 + 6 + 6 + 3 + 3 + 3 + 9, in this order): arm joint angles as (sin, cos) pairs,
arm joint torques, arm joint velocities, finger angles, finger velocities, tool-centre-point
position, its rotation matrix.  The target is not observed: it is fixed per task, so all four tasks
share one observation space and one dataset.
Action: 9 joint-velocity commands (6 arm joints, 3 fingers), rescaled by suites.dmc.envs from [-1, 1].

Deviation from the reference (URLB `custom_dmc_tasks/jaco.py`), on purpose: there the target is a free
Duplo brick placed at the target position (`use_site=False`), so the arm can push it away, the
reward follows the brick, and the brick's pose and velocities are observed (55-d observation,
31-d physics state with dm-control 1.0.50).  Here the target is a fixed point (shown by a
non-colliding site), so every task's reward is a function of the arm's state alone and the data of
one collection run serve all four tasks.  fb.md's 42-d observation matches this site version.
"""
from __future__ import annotations

import numpy as np
from suites.dmc import _mujoco  # noqa: F401  (before dm_control: see _mujoco.py)
from dm_control import composer
from dm_control.composer import initializers
from dm_control.composer.variation import distributions
from dm_control.manipulation.shared import arenas, cameras, constants, observations, robots, workspaces

from suites.dmc import rewards

TIME_LIMIT = 10.0  # seconds: 250 control steps of 0.04 s
TCP_SPAWN_BOX = ((-0.2, -0.2, 0.02), (0.2, 0.2, 0.4))  # ExORL `_SITE_WORKSPACE.tcp_bbox` (see above)
# Pixel observations (suites/dmc/pixels.py): dm_control.manipulation's FRONT_CLOSE camera, the one ExORL's
# jaco pixel tasks observe through (`cameras.add_camera_observables(arena, ..., cameras.FRONT_CLOSE)`).
PIXEL_CAMERA = cameras.FRONT_CLOSE


class JacoReach(composer.Task):
    """Bring the Jaco hand's tool centre point to a fixed target."""

    def __init__(self, target: tuple[float, float, float], pixels: bool = False):
        self._target = tuple(target)
        self._arena = arenas.Standard()
        if pixels:  # a fixed camera to render from: ExORL's jaco pixels use this one (84 px there)
            self._arena.mjcf_model.worldbody.add("camera", **PIXEL_CAMERA._asdict())
        self._arm = robots.make_arm(obs_settings=observations.PERFECT_FEATURES)
        self._hand = robots.make_hand(obs_settings=observations.PERFECT_FEATURES)
        self._arm.attach(self._hand)
        self._arena.attach_offset(self._arm, offset=robots.ARM_OFFSET)
        self.control_timestep = constants.CONTROL_TIMESTEP
        self._tcp_initializer = initializers.ToolCenterPointInitializer(
            self._hand, self._arm, position=distributions.Uniform(*TCP_SPAWN_BOX),
            quaternion=workspaces.DOWN_QUATERNION)
        # Visual only (sites never collide); the reward uses the constant target.
        # Pixels: hidden (a site group that is not rendered), so the four tasks share one picture and one
        # pixel dataset; as the target is not observed in the state version either, the task stays a
        # zero-shot one (the reward alone names the target).
        workspaces.add_target_site(body=self._arena.mjcf_model.worldbody, radius=rewards.JACO_TARGET_RADIUS,
                                   visible=not pixels, rgba=constants.RED, name="target_site",
                                   pos=self._target)
        if self._hand.tool_center_point.full_identifier != rewards.JACO_TCP_SITE:
            raise RuntimeError(f"the Jaco tool centre point is {self._hand.tool_center_point.full_identifier!r}, "
                               f"not {rewards.JACO_TCP_SITE!r}: dm_control changed its model")

    @property
    def root_entity(self):
        return self._arena

    @property
    def arm(self):
        return self._arm

    @property
    def hand(self):
        return self._hand

    def initialize_episode(self, physics, random_state):
        self._hand.set_grasp(physics, close_factors=random_state.uniform())
        self._tcp_initializer(physics, random_state)

    def get_reward(self, physics):
        return rewards.jaco_reach(physics, self._target)


def make_environment(task: str, random: np.random.RandomState, pixels: bool = False) -> composer.Environment:
    """`pixels`: with the camera FRONT_CLOSE (named "front_close") and the target site hidden; dynamics,
    rewards and observations are the same."""
    return composer.Environment(JacoReach(rewards.JACO_TARGETS[task], pixels), time_limit=TIME_LIMIT,
                                random_state=random)
