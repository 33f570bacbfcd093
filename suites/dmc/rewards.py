"""Every dmc task's reward as a function of the physics state (fb.md §6).

All rewards use `dm_control.utils.rewards.tolerance(x, bounds, margin, sigmoid, value_at_margin)`
(defaults: gaussian sigmoid, value_at_margin 0.1; the value is 1 inside the bounds), and read only
quantities that `physics.set_state(state)` + `mj_forward` recompute (positions, orientations,
velocity-stage sensors, subtree momenta), so relabelling stored states gives the live reward exactly.

The suite tasks (walker stand/walk/run, cheetah run, quadruped walk/run) equal dm_control.suite's own
rewards (tests/test_dmc_tasks.py checks this state by state).  The others are the ExORL/URLB custom
tasks, written from their definitions on the same models.

point_mass_maze is the exception: its reward also depends on the control, so its reward functions
take `(physics, action)`.  Use `domain_rewards` / `task_reward` to call any task uniformly.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from suites.dmc import _mujoco  # noqa: F401  (before dm_control: see _mujoco.py)
from dm_control.utils.rewards import tolerance

from suites.dmc.domains import check_task, get_domain

INF = float("inf")


# ---- walker (dm_control.suite.walker; flip from URLB custom_dmc_tasks/walker.py) -----------------
STAND_HEIGHT = 1.2
WALKER_SPEEDS = {"walk": 1.0, "run": 8.0}
SPIN_SPEED = 5.0  # flip: torso angular momentum about y


def walker_stand(physics) -> float:
    standing = tolerance(physics.named.data.xpos["torso", "z"], bounds=(STAND_HEIGHT, INF),
                         margin=STAND_HEIGHT / 2)
    upright = (1 + physics.named.data.xmat["torso", "zz"]) / 2
    return float((3 * standing + upright) / 4)


def walker_move(physics, speed: float) -> float:
    """walk (speed 1) and run (speed 8): stand, times the centre-of-mass forward speed term."""
    move = tolerance(physics.named.data.sensordata["torso_subtreelinvel"][0], bounds=(speed, INF),
                     margin=speed / 2, value_at_margin=0.5, sigmoid="linear")
    return float(walker_stand(physics) * (5 * move + 1) / 6)


def walker_flip(physics) -> float:
    """Stand, times a spin term: the torso subtree's angular momentum about y, at least 5."""
    spin = tolerance(physics.named.data.subtree_angmom["torso"][1], bounds=(SPIN_SPEED, INF),
                     margin=SPIN_SPEED, value_at_margin=0, sigmoid="linear")
    return float(walker_stand(physics) * (5 * spin + 1) / 6)


# ---- cheetah (dm_control.suite.cheetah; the others from URLB custom_dmc_tasks/cheetah.py) ---------
CHEETAH_SPEEDS = {"run": 10.0, "walk": 2.0}


def cheetah_move(physics, speed: float, direction: int) -> float:
    """Torso subtree forward velocity times `direction` (+1 forward, -1 backward), at least `speed`."""
    velocity = physics.named.data.sensordata["torso_subtreelinvel"][0]
    return float(tolerance(direction * velocity, bounds=(speed, INF), margin=speed, value_at_margin=0,
                           sigmoid="linear"))


# ---- quadruped (dm_control.suite.quadruped; stand and jump from URLB custom_dmc_tasks/quadruped.py) -
QUADRUPED_SPEEDS = {"walk": 0.5, "run": 5.0}
JUMP_HEIGHT = 1.0


def quadruped_upright(physics) -> float:
    """1 when the torso z-axis points up, falling linearly to 0 when upside down (`stand`)."""
    return float(tolerance(physics.named.data.xmat["torso", "zz"], bounds=(1.0, INF), sigmoid="linear",
                           margin=2.0, value_at_margin=0))


def quadruped_move(physics, speed: float) -> float:
    move = tolerance(physics.named.data.sensordata["velocimeter"][0], bounds=(speed, INF), margin=speed,
                     value_at_margin=0.5, sigmoid="linear")
    return float(quadruped_upright(physics) * move)


def quadruped_jump(physics) -> float:
    """Upright, times the height of the torso subtree's centre of mass, at least 1 m."""
    height = tolerance(physics.named.data.sensordata["center_of_mass"][2], bounds=(JUMP_HEIGHT, INF),
                       margin=JUMP_HEIGHT, value_at_margin=0.5, sigmoid="linear")
    return float(quadruped_upright(physics) * height)


# ---- jaco (URLB custom_dmc_tasks/jaco.py, with fixed targets; see suites/dmc/jaco.py) ---------------
JACO_TCP_SITE = "jaco_arm/jaco_hand/pinchsite"  # the hand's tool centre point
JACO_TARGET_RADIUS = 0.05
JACO_TARGETS = {  # world frame; the arm's base is at (0, 0.4, 0)
    "reach_top_left": (-0.09, 0.09, 0.001),
    "reach_top_right": (0.09, 0.09, 0.001),
    "reach_bottom_left": (-0.09, -0.09, 0.001),
    "reach_bottom_right": (0.09, -0.09, 0.001),
}


def jaco_reach(physics, target: tuple[float, float, float]) -> float:
    distance = np.linalg.norm(physics.named.data.site_xpos[JACO_TCP_SITE] - np.asarray(target))
    return float(tolerance(distance, bounds=(0, JACO_TARGET_RADIUS), margin=JACO_TARGET_RADIUS))


# ---- point_mass_maze (Touati et al.'s url_benchmark/custom_dmc_tasks/point_mass_maze.py) -----------
MAZE_TARGET_SIZE = 0.015
MAZE_TARGETS = {
    "reach_top_left": (-0.15, 0.15),
    "reach_top_right": (0.15, 0.15),
    "reach_bottom_left": (-0.15, -0.15),
    "reach_bottom_right": (0.15, -0.15),
}


def maze_reach(physics, action, target: tuple[float, float]) -> float:
    """Near the target (planar distance), times a small-control term in [0.8, 1].

    `action` is the control in [-1, 1]^2 applied on the step that produced this state.  The control
    term uses value_at_margin=0 (a plain 1 - u^2 per coordinate), as the reference code and
    dm_control's point_mass do; fb.md §6 leaves this argument out.
    """
    distance = np.linalg.norm(np.asarray(target) - physics.named.data.geom_xpos["pointmass"][:2])
    near_target = tolerance(distance, bounds=(0, MAZE_TARGET_SIZE), margin=MAZE_TARGET_SIZE)
    control = tolerance(np.asarray(action, dtype=np.float64), margin=1, value_at_margin=0,
                        sigmoid="quadratic").mean()
    small_control = (control + 4) / 5
    return float(near_target * small_control)


# ---- the table ----------------------------------------------------------------------------------
# REWARDS[domain][task]: f(physics) or, for point_mass_maze, f(physics, action).
REWARDS: dict[str, dict[str, Callable[..., float]]] = {
    "walker": {
        "flip": walker_flip,
        "run": functools.partial(walker_move, speed=WALKER_SPEEDS["run"]),
        "stand": walker_stand,
        "walk": functools.partial(walker_move, speed=WALKER_SPEEDS["walk"]),
    },
    "cheetah": {
        "run": functools.partial(cheetah_move, speed=CHEETAH_SPEEDS["run"], direction=1),
        "run_backward": functools.partial(cheetah_move, speed=CHEETAH_SPEEDS["run"], direction=-1),
        "walk": functools.partial(cheetah_move, speed=CHEETAH_SPEEDS["walk"], direction=1),
        "walk_backward": functools.partial(cheetah_move, speed=CHEETAH_SPEEDS["walk"], direction=-1),
    },
    "quadruped": {
        "jump": quadruped_jump,
        "run": functools.partial(quadruped_move, speed=QUADRUPED_SPEEDS["run"]),
        "stand": quadruped_upright,
        "walk": functools.partial(quadruped_move, speed=QUADRUPED_SPEEDS["walk"]),
    },
    "jaco": {task: functools.partial(jaco_reach, target=target) for task, target in JACO_TARGETS.items()},
    "point_mass_maze": {task: functools.partial(maze_reach, target=target)
                        for task, target in MAZE_TARGETS.items()},
}


def task_reward(domain: str, task: str) -> Callable[[object, object], float]:
    """The reward of one task as `f(physics, action)`; `action` is ignored unless the domain uses it."""
    d = check_task(domain, task)
    fn = REWARDS[domain][task]
    if d.reward_uses_action:
        return fn
    return lambda physics, action=None: fn(physics)


def domain_rewards(domain: str, physics, action=None) -> dict[str, float]:
    """The reward of every task of `domain` in the current physics state (e.g. online, during collection).

    `action` (in [-1, 1]) is required for point_mass_maze and ignored elsewhere.
    """
    d = get_domain(domain)
    if d.reward_uses_action:
        if action is None:
            raise ValueError(f"the {domain} rewards depend on the control: pass the action")
        return {task: fn(physics, action) for task, fn in REWARDS[domain].items()}
    return {task: fn(physics) for task, fn in REWARDS[domain].items()}
