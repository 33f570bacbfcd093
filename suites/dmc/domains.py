"""The dmc suite's domains and tasks as plain data (import-light: no dm_control, mujoco or numpy).

Facts from fb.md §5-6 (ExORL/URLB, one-step FB) and from dm_control.suite itself.  The dimensions are
those the project's environments produce with dm-control 1.0.50 / MuJoCo 3.17.0; tests check them
against real environments.
"""
from __future__ import annotations

import dataclasses

from suites.errors import UserError
from suites.registry import did_you_mean, lookup

__all__ = ["Domain", "DOMAINS", "get_domain", "check_task", "task_id", "zeroshot_task_id", "pixel_task_id"]

VERSION = 0  # the suite's base version; a domain's own `version` is bumped with anything that changes its
             # numbers (reward, model, initial state, episode length, observation)


@dataclasses.dataclass(frozen=True)
class Domain:
    """One dm_control domain and the zero-shot tasks defined on it.

    tasks:              task names, dm_control style (underscores), sorted.
    suite_tasks:        the tasks dm_control.suite defines itself: built on the suite's own model and
                        initial-state distribution, with a reward equal to the suite's (tested).
    episode_length:     control steps per episode (time limit / control_timestep).
    state_dim:          length of `physics.get_state()` (qpos, qvel, act): what relabelling reads.
    reward_uses_action: the reward also depends on the control (point_mass_maze); relabelling then
                        needs the stored actions.
    group:              "exorl" (the one-step FB paper grid) or "touati" (Touati et al. only).
    version:            the domain's version, in its task ids (`-v<version>`), its datasets' identity and
                        its default dataset directory: data or runs of another version never mix.
    """

    name: str
    tasks: tuple[str, ...]
    suite_tasks: frozenset[str]
    episode_length: int
    control_timestep: float
    obs_dim: int
    action_dim: int
    state_dim: int
    reward_uses_action: bool = False
    group: str = "exorl"
    version: int = VERSION


_REACH = ("reach_bottom_left", "reach_bottom_right", "reach_top_left", "reach_top_right")

DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("walker", ("flip", "run", "stand", "walk"), frozenset({"run", "stand", "walk"}),
           episode_length=1000, control_timestep=0.025, obs_dim=24, action_dim=6, state_dim=18),
    Domain("cheetah", ("run", "run_backward", "walk", "walk_backward"), frozenset({"run"}),
           episode_length=1000, control_timestep=0.01, obs_dim=17, action_dim=6, state_dim=18),
    Domain("quadruped", ("jump", "run", "stand", "walk"), frozenset({"run", "walk"}),
           episode_length=1000, control_timestep=0.02, obs_dim=78, action_dim=12, state_dim=57),
    # v1 (2026-12-02): the tool centre point starts in ExORL's site-workspace box, not URLB's Duplo box
    # (suites/dmc/jaco.py); v0 data and runs are not comparable.
    Domain("jaco", _REACH, frozenset(),
           episode_length=250, control_timestep=0.04, obs_dim=42, action_dim=9, state_dim=18, version=1),
    Domain("point_mass_maze", _REACH, frozenset(),
           episode_length=1000, control_timestep=0.02, obs_dim=4, action_dim=2, state_dim=4,
           reward_uses_action=True, group="touati"),
)}

# One line per task for `b2fb list`.
DESCRIPTIONS: dict[tuple[str, str], str] = {
    ("walker", "flip"): "walker: stand and spin forward, torso angular momentum >= 5 (URLB task); 1000 steps",
    ("walker", "run"): "dm_control walker/run: stand and move forward at >= 8 m/s; 1000 steps",
    ("walker", "stand"): "dm_control walker/stand: torso above 1.2 m and upright; 1000 steps",
    ("walker", "walk"): "dm_control walker/walk: stand and move forward at >= 1 m/s; 1000 steps",
    ("cheetah", "run"): "dm_control cheetah/run: forward speed >= 10 m/s; 1000 steps",
    ("cheetah", "run_backward"): "cheetah: backward speed >= 10 m/s (URLB task); 1000 steps",
    ("cheetah", "walk"): "cheetah: forward speed >= 2 m/s (URLB task); 1000 steps",
    ("cheetah", "walk_backward"): "cheetah: backward speed >= 2 m/s (URLB task); 1000 steps",
    ("quadruped", "jump"): "quadruped: upright with centre of mass above 1 m (URLB task); 1000 steps",
    ("quadruped", "run"): "dm_control quadruped/run: upright, forward speed >= 5 m/s; 1000 steps",
    ("quadruped", "stand"): "quadruped: torso upright (URLB task); 1000 steps",
    ("quadruped", "walk"): "dm_control quadruped/walk: upright, forward speed >= 0.5 m/s; 1000 steps",
}
for _t, _where in zip(_REACH, ("(-0.09, -0.09)", "(+0.09, -0.09)", "(-0.09, +0.09)", "(+0.09, +0.09)")):
    DESCRIPTIONS[("jaco", _t)] = f"jaco arm: tool centre point to the fixed target {_where} on the table; 250 steps"
for _t, _where in zip(_REACH, ("(-0.15, -0.15)", "(+0.15, -0.15)", "(-0.15, +0.15)", "(+0.15, +0.15)")):
    DESCRIPTIONS[("point_mass_maze", _t)] = (f"point mass in a 4-room maze: reach {_where} with small controls "
                                             f"(Touati et al.); 1000 steps")


def get_domain(name: str) -> Domain:
    """The domain called `name`; an unknown name is a `UserError` with close matches."""
    return lookup(DOMAINS, name, "dmc domain")


def check_task(domain: str, task: str) -> Domain:
    """The domain, after checking that it defines `task`."""
    d = get_domain(domain)
    if task not in d.tasks:
        raise UserError(f"dmc domain {domain!r} has no task {task!r}.{did_you_mean(task, d.tasks)} "
                        f"Its tasks are {', '.join(d.tasks)}.")
    return d


def task_id(domain: str, task: str) -> str:
    """Registry id: ('point_mass_maze', 'reach_top_left') -> 'dmc/point-mass-maze-reach-top-left-v0'."""
    return f"dmc/{domain.replace('_', '-')}-{task.replace('_', '-')}-v{get_domain(domain).version}"


def zeroshot_task_id(domain: str) -> str:
    """The domain's zero-shot benchmark task: 'walker' -> 'dmc/walker-zeroshot-v0'."""
    return f"dmc/{domain.replace('_', '-')}-zeroshot-v{get_domain(domain).version}"


def pixel_task_id(domain: str) -> str:
    """The domain's zero-shot task from pixels: 'walker' -> 'dmc/walker-zeroshot-pixels-v0'."""
    return f"dmc/{domain.replace('_', '-')}-zeroshot-pixels-v{get_domain(domain).version}"
