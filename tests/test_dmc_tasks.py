"""The dmc suite's task definitions, generated over the registry (dm_control suite_test style).

Every task builds with the declared dimensions, is deterministic given a seed, keeps rewards in [0, 1],
and relabelling stored physics states gives exactly the live rewards.  Suite-backed tasks equal
dm_control.suite's own environments; the custom tasks' rewards are checked against fb.md §6's formulas.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports dm_control

import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from suites import registry  # noqa: E402
from suites.dmc import domains, rewards  # noqa: E402
from suites.errors import UserError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPECS = tuple(s for s in registry.select("dmc") if "zeroshot" not in s.tags)  # the per-task definitions
TASK_IDS = [s.id for s in SPECS]
SUITE_TASK_IDS = [s.id for s in SPECS if s.kwargs["task"] in domains.DOMAINS[s.kwargs["domain"]].suite_tasks]
ONE_PER_DOMAIN = [next(s.id for s in SPECS if s.kwargs["domain"] == d) for d in domains.DOMAINS]
PAPER_TASKS = {
    "walker": {"flip", "run", "stand", "walk"},
    "cheetah": {"run", "run_backward", "walk", "walk_backward"},
    "quadruped": {"jump", "run", "stand", "walk"},
    "jaco": {"reach_top_left", "reach_top_right", "reach_bottom_left", "reach_bottom_right"},
}


def _task(task_id):
    return registry.get(task_id).make()


def _rollout(task, seed, steps, action_seed=0):
    """Random actions from a seeded reset; returns observations, actions, states, live rewards and the
    online rewards of every task of the domain.  In the maze the ball starts on the task's target, so
    its (action-dependent) reward is not just zero."""
    env = task.make_env()
    obs = [env.reset(seed=seed)]
    if task.domain == "point_mass_maze":
        with env.physics.reset_context():
            env.physics.data.qpos[:] = rewards.MAZE_TARGETS[task.task]
    rng = np.random.default_rng(action_seed)
    actions, states, live, online = [], [], [], []
    for _ in range(steps):
        action = rng.uniform(-1.0, 1.0, task.action_dim)
        o, r, last = env.step(action)
        assert not last
        obs.append(o)
        actions.append(action)
        states.append(env.get_state())
        live.append(r)
        online.append(env.rewards(action))
    return SimpleNamespace(obs=np.array(obs), actions=np.array(actions), states=np.array(states),
                           rewards=np.array(live), online=online, env=env)


# ---- registry ------------------------------------------------------------------------------------
def test_registry_lists_the_paper_grid_and_the_maze():
    paper = registry.select("dmc", "paper")
    assert {(s.kwargs["domain"], s.kwargs["task"]) for s in paper} == {
        (d, t) for d, tasks in PAPER_TASKS.items() for t in tasks}
    for s in paper:
        assert s.tags == {"exorl", "paper", "cpu", "state", s.kwargs["domain"]}
    maze = registry.select("dmc", "touati")
    assert len(maze) == 4 and len(SPECS) == 20
    for s in maze:
        assert s.tags == {"touati", "state", "point_mass_maze"} and s.kwargs["domain"] == "point_mass_maze"
    for s in SPECS:
        assert s.entry_point == "suites.dmc.task:make_task" and s.description
        assert s.version == domains.DOMAINS[s.kwargs["domain"]].version
        assert s.id == domains.task_id(s.kwargs["domain"], s.kwargs["task"])
    for task_id in ("dmc/walker-flip-v0", "dmc/cheetah-run-backward-v0", "dmc/quadruped-jump-v0",
                    "dmc/jaco-reach-top-left-v1", "dmc/point-mass-maze-reach-top-left-v0"):
        assert task_id in TASK_IDS


def test_suite_package_is_import_light():
    code = ("import sys, suites.dmc, suites.dmc.task; from suites import registry; registry.select('dmc');"
            "registry.get('dmc/walker-flip-v0').make();"
            "heavy = [m for m in ('dm_control', 'mujoco', 'numpy', 'torch', 'gymnasium') if m in sys.modules];"
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bad_names_are_user_errors_with_suggestions():
    from suites.dmc.task import make_task

    with pytest.raises(UserError, match="Did you mean 'walker'"):
        make_task("walkr", "flip")
    with pytest.raises(UserError, match="Did you mean 'run_backward'"):
        make_task("cheetah", "run_backwards")
    with pytest.raises(UserError, match="Did you mean 'dmc/walker-flip-v0'"):
        registry.get("dmc/walker-flipp-v0")


# ---- every task ----------------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", TASK_IDS)
def test_task_builds_with_declared_dimensions(task_id):
    task = _task(task_id)
    env = task.make_env(seed=0)
    obs = env.reset()
    assert obs.shape == (task.obs_dim,) and obs.dtype == np.float32 and np.all(np.isfinite(obs))
    assert env.get_state().shape == (task.state_dim,)
    spec = env.dm_env.action_spec()
    assert spec.shape == (task.action_dim,)
    assert task.episode_length * task.control_timestep == pytest.approx(
        {"walker": 25, "cheetah": 10, "quadruped": 20, "jaco": 10, "point_mass_maze": 20}[task.domain])
    # [-1, 1] maps onto the actuators' whole control range
    assert np.allclose(env.native_action(-np.ones(task.action_dim)), spec.minimum)
    assert np.allclose(env.native_action(np.ones(task.action_dim)), spec.maximum)


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_rollout_is_finite_bounded_and_relabels_exactly(task_id):
    task = _task(task_id)
    run = _rollout(task, seed=1, steps=100)
    assert run.obs.shape == (101, task.obs_dim) and np.all(np.isfinite(run.obs))
    assert np.all((run.rewards >= 0) & (run.rewards <= 1))
    assert np.any(run.rewards > 0), "the check below would be vacuous"
    relabelled = task.relabel(run.states, run.actions)
    np.testing.assert_array_equal(relabelled, run.rewards)
    # every task of the domain: relabelled == computed online from the live physics
    from suites.dmc.relabel import relabel

    every = relabel(task.domain, run.states, run.actions)
    assert set(every) == set(domains.DOMAINS[task.domain].tasks)
    for name, values in every.items():
        np.testing.assert_array_equal(values, [row[name] for row in run.online], err_msg=name)
        assert np.all((values >= 0) & (values <= 1))


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_same_seed_and_actions_give_identical_trajectories(task_id):
    task = _task(task_id)
    a, b = _rollout(task, seed=7, steps=30), _rollout(task, seed=7, steps=30)
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.states, b.states)
    np.testing.assert_array_equal(a.rewards, b.rewards)
    # reseeding the same environment reproduces it too; another seed starts elsewhere
    env = a.env
    np.testing.assert_array_equal(env.reset(seed=7), a.obs[0])
    assert not np.array_equal(env.reset(seed=8), a.obs[0])


# ---- the suite's own tasks -----------------------------------------------------------------------
@pytest.mark.parametrize("task_id", SUITE_TASK_IDS)
def test_suite_tasks_equal_dm_control_suite(task_id):
    from dm_control import suite

    task = _task(task_id)
    ours = task.make_env()
    theirs = suite.load(task.domain, task.task, task_kwargs={"random": 5})

    def flat(time_step):
        return np.concatenate([np.asarray(v).ravel() for v in time_step.observation.values()]).astype(np.float32)

    np.testing.assert_array_equal(ours.reset(seed=5), flat(theirs.reset()))
    rng = np.random.default_rng(2)
    states, suite_rewards = [], []
    for _ in range(60):
        action = rng.uniform(-1.0, 1.0, task.action_dim)
        obs, reward, _ = ours.step(action)
        time_step = theirs.step(ours.native_action(action))
        np.testing.assert_array_equal(obs, flat(time_step))
        assert reward == time_step.reward
        states.append(theirs.physics.get_state())
        suite_rewards.append(time_step.reward)
    # relabelling the suite's own states reproduces the suite's own rewards
    np.testing.assert_array_equal(task.relabel(np.array(states)), suite_rewards)
    assert np.any(np.array(suite_rewards) > 0)


# ---- the reward definitions (fb.md §6), on hand-made physics quantities ---------------------------
def _physics(**data):
    return SimpleNamespace(named=SimpleNamespace(data=SimpleNamespace(**data)))


def _walker(height, zz, vx=0.0, angmom_y=0.0):
    return _physics(xpos={("torso", "z"): height}, xmat={("torso", "zz"): zz},
                    sensordata={"torso_subtreelinvel": np.array([vx, 0.0, 0.0])},
                    subtree_angmom={"torso": np.array([0.0, angmom_y, 0.0])})


def _quadruped(zz, vx=0.0, com_z=0.0):
    return _physics(xmat={("torso", "zz"): zz}, sensordata={
        "velocimeter": np.array([vx, 0.0, 0.0]), "center_of_mass": np.array([0.0, 0.0, com_z])})


R = rewards.REWARDS
CASES = [
    # walker: stand = (3 standing + upright) / 4; move tasks multiply by (5 move + 1) / 6
    (R["walker"]["stand"], _walker(1.2, 1.0), 1.0),
    (R["walker"]["stand"], _walker(0.6, 0.0), (3 * 0.1 + 0.5) / 4),  # gaussian margin 0.6 -> 0.1
    (R["walker"]["walk"], _walker(1.3, 1.0, vx=0.5), (5 * 0.5 + 1) / 6),  # linear, 0.5 at margin 0.5
    (R["walker"]["run"], _walker(1.3, 1.0, vx=8.0), 1.0),
    (R["walker"]["flip"], _walker(1.3, 1.0, angmom_y=5.0), 1.0),
    (R["walker"]["flip"], _walker(1.3, 1.0, angmom_y=2.5), (5 * 0.5 + 1) / 6),  # linear, 0 at margin 5
    (R["walker"]["flip"], _walker(1.3, 1.0, angmom_y=-5.0), 1 / 6),
    # cheetah: tolerance(+-speed, (v, inf), margin v, value_at_margin 0, linear)
    (R["cheetah"]["run"], _walker(0, 0, vx=10.0), 1.0),
    (R["cheetah"]["run_backward"], _walker(0, 0, vx=-5.0), 0.5),
    (R["cheetah"]["run_backward"], _walker(0, 0, vx=10.0), 0.0),
    (R["cheetah"]["walk"], _walker(0, 0, vx=1.0), 0.5),
    (R["cheetah"]["walk_backward"], _walker(0, 0, vx=-2.0), 1.0),
    # quadruped: upright = tolerance(zz, (1, inf), margin 2, value_at_margin 0, linear)
    (R["quadruped"]["stand"], _quadruped(1.0), 1.0),
    (R["quadruped"]["stand"], _quadruped(0.0), 0.5),
    (R["quadruped"]["stand"], _quadruped(-1.0), 0.0),
    (R["quadruped"]["walk"], _quadruped(1.0, vx=0.25), 0.75),  # linear, 0.5 at margin 0.5
    (R["quadruped"]["run"], _quadruped(0.0, vx=5.0), 0.5),
    (R["quadruped"]["jump"], _quadruped(1.0, com_z=0.5), 0.75),  # linear, 0.5 at margin 1
    (R["quadruped"]["jump"], _quadruped(0.0, com_z=1.0), 0.5),
]


@pytest.mark.parametrize("fn, physics, expected", CASES)
def test_reward_definitions(fn, physics, expected):
    assert fn(physics) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("task", sorted(rewards.JACO_TARGETS))
def test_jaco_reach_reward_and_target(task):
    target = np.array(rewards.JACO_TARGETS[task])
    assert np.allclose(np.abs(target), (0.09, 0.09, 0.001))
    at = _physics(site_xpos={rewards.JACO_TCP_SITE: target.copy()})
    near = _physics(site_xpos={rewards.JACO_TCP_SITE: target + (0.0, 0.03, 0.04)})  # 0.05: in bounds
    margin = _physics(site_xpos={rewards.JACO_TCP_SITE: target + (0.1, 0.0, 0.0)})  # bound + margin
    assert R["jaco"][task](at) == 1.0 and R["jaco"][task](near) == 1.0
    assert R["jaco"][task](margin) == pytest.approx(0.1)
    row, side = task.split("_")[1:]  # reach_<top|bottom>_<left|right>
    assert np.sign(target[0]) == {"left": -1, "right": 1}[side]
    assert np.sign(target[1]) == {"bottom": -1, "top": 1}[row]


# ExORL custom_dmc_tasks/jaco.py, `_SITE_WORKSPACE.tcp_bbox` (the fixed-target reach tasks, use_site=True)
EXORL_TCP_BOX = ((-0.2, -0.2, 0.02), (0.2, 0.2, 0.4))
URLB_DUPLO_TCP_BOX = ((-0.1, -0.1, 0.2), (0.1, 0.1, 0.4))  # jaco v0's box, URLB's movable-brick workspace


def test_jaco_starts_in_exorls_site_workspace():
    """The tool centre point starts uniformly in ExORL's box (domain v1), not in URLB's Duplo box (v0):
    every reset lands in the ExORL box, and the starts cover the parts of it the Duplo box lacks."""
    from suites.dmc import jaco
    from suites.dmc.envs import DMCEnv

    assert jaco.TCP_SPAWN_BOX == EXORL_TCP_BOX and domains.DOMAINS["jaco"].version == 1
    env = DMCEnv("jaco", "reach_top_left")
    starts = []
    for seed in range(48):
        env.reset(seed=seed)
        starts.append(np.array(env.physics.named.data.site_xpos[rewards.JACO_TCP_SITE]))
    starts = np.array(starts)
    low, high = np.array(EXORL_TCP_BOX)
    assert np.all(starts >= low - 1e-3) and np.all(starts <= high + 1e-3), starts
    old_low, old_high = np.array(URLB_DUPLO_TCP_BOX)
    outside_old = np.any((starts < old_low - 1e-3) | (starts > old_high + 1e-3), axis=1)
    assert outside_old.mean() > 0.5  # uniform on the ExORL box: ~88% of its volume lies outside the old box
    assert starts[:, 2].min() < 0.1  # low starts, near the table's targets, exist now
    targets = np.array(list(rewards.JACO_TARGETS.values()))
    nearest = np.linalg.norm(starts[:, None, :] - targets[None], axis=-1).min(axis=1)
    assert nearest.min() < 0.2  # v0: always 0.2 m or more from every target


@pytest.mark.parametrize("task", sorted(rewards.MAZE_TARGETS))
def test_maze_reward_depends_on_target_and_control(task):
    target = np.array(rewards.MAZE_TARGETS[task])
    assert np.allclose(np.abs(target), 0.15)
    at = _physics(geom_xpos={"pointmass": np.array([*target, 0.01])})
    fn = R["point_mass_maze"][task]
    assert fn(at, np.zeros(2)) == 1.0
    assert fn(at, np.ones(2)) == pytest.approx(0.8)  # control term 1 - u^2, mean, then (c + 4) / 5
    assert fn(at, np.array([0.5, 0.0])) == pytest.approx((0.875 + 4) / 5)
    off = _physics(geom_xpos={"pointmass": np.array([*(target + (0.03, 0.0)), 0.01])})
    assert fn(off, np.zeros(2)) == pytest.approx(0.1)  # gaussian margin 0.015 beyond the 0.015 bound


def test_maze_relabelling_uses_the_stored_actions():
    task = _task("dmc/point-mass-maze-reach-top-right-v0")
    run = _rollout(task, seed=0, steps=50)
    with_actions = task.relabel(run.states, run.actions)
    np.testing.assert_array_equal(with_actions, run.rewards)
    without_control = task.relabel(run.states, np.zeros_like(run.actions))
    assert np.all(without_control >= with_actions) and np.any(without_control > with_actions)
    from suites.dmc.relabel import relabel

    with pytest.raises(UserError, match="pass the stored actions"):
        relabel("point_mass_maze", run.states)
    with pytest.raises(UserError, match=r"expected \(50, 2\)"):
        relabel("point_mass_maze", run.states, run.actions[:-1])


def test_maze_walls_split_the_floor_into_rooms():
    env = _task("dmc/point-mass-maze-reach-top-right-v0").make_env(seed=0)
    for y, blocked in ((0.1, True), (0.25, False)):  # the cross spans |y| <= 0.18
        env.reset()
        with env.physics.reset_context():
            env.physics.data.qpos[:] = (-0.15, y)
        for _ in range(300):
            obs, _, _ = env.step([1.0, 0.0])
        assert (obs[0] < -0.02) == blocked, obs
    start = np.array([env.reset(seed=s)[:2] for s in range(20)])  # the top-left room
    assert np.all((start[:, 0] >= -0.29) & (start[:, 0] <= -0.15) & (start[:, 1] >= 0.15) & (start[:, 1] <= 0.29))


def test_relabel_rejects_malformed_states():
    from suites.dmc.relabel import relabel

    with pytest.raises(UserError, match=r"expected \(T, 18\)"):
        relabel("walker", np.zeros((5, 17)))
    with pytest.raises(UserError, match="unknown dmc domain 'walkr'"):
        relabel("walkr", np.zeros((5, 18)))


# ---- episodes and gymnasium ----------------------------------------------------------------------
@pytest.mark.parametrize("task_id", ONE_PER_DOMAIN)
def test_gymnasium_make_and_full_episode(task_id):
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    import suites.dmc.gym as dmc_gym

    task = _task(task_id)
    gym_id = dmc_gym.gym_id(task_id)
    assert gym_id.startswith("b2fb/dmc-") and gym_id in dmc_gym.GYM_IDS and len(dmc_gym.GYM_IDS) == 20
    env = gymnasium.make(gym_id)
    assert env.spec.max_episode_steps == task.episode_length
    assert env.observation_space.shape == (task.obs_dim,) and env.action_space.shape == (task.action_dim,)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value is")
        check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs, again)
    env.action_space.seed(0)
    for step in range(1, task.episode_length + 1):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert not terminated and truncated == (step == task.episode_length)
        assert 0.0 <= reward <= 1.0
    assert info["physics_state"].shape == (task.state_dim,)
    inner = env.unwrapped.env
    with pytest.raises(RuntimeError, match="call reset"):
        inner.step(np.zeros(task.action_dim))
