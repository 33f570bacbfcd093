"""DMC from pixels (suites/dmc/pixels.py, algorithms/fb/encoders.py): frames re-rendered from stored physics
are the frames of those states, bit for bit; rendering resumes per episode file and refuses stale or stray
files; frame stacks clamp at an episode's start; pixel environments keep the state dynamics; both encoder
modes train and act.  Tests that render carry the `render` marker and skip, with one line, where no GL
backend works."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from suites.errors import UserError

# ---- GL: one probe per session -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _gl_problem() -> str | None:
    from suites.dmc.pixels import RenderSettings, probe

    try:
        probe(RenderSettings.make("walker", 16, 0, {}))
    except UserError as err:
        return str(err)
    return None


@pytest.fixture
def gl():
    problem = _gl_problem()
    if problem:
        pytest.skip(f"no GL backend: {problem.split(': set MUJOCO_GL')[0]}")


FLAGS = {"shadow": False, "reflection": False}


def _tiny_dataset(tmp_path, domain: str, episodes: int = 2, length: int = 20):
    from suites.dmc.collect import collect

    out = tmp_path / domain
    collect(domain, "random", episodes * length, out, workers=1, episode_length=length, progress=False)
    return out


# ---- rendering ---------------------------------------------------------------------------------------------
@pytest.mark.render
@pytest.mark.parametrize("domain", ["walker", "cheetah", "quadruped", "jaco"])
def test_stored_frames_are_the_frames_of_their_physics_states_bit_for_bit(tmp_path, gl, domain):
    """Render a tiny collected dataset with 2 workers, then re-render random rows here from the stored
    physics and compare byte for byte (the pixel dataset is its state dataset seen through the camera)."""
    from suites.dmc import dataset as ds
    from suites.dmc.pixels import RenderSettings, _render_env, load_frames, render_dataset, set_physics_state

    state_dir = _tiny_dataset(tmp_path, domain)
    settings = RenderSettings.make(domain, 32, None, FLAGS)
    summary = render_dataset(state_dir, settings, workers=2, progress=False)
    assert summary["rendered"] == 2 and summary["frames"] == 42
    data = ds.load_dataset(state_dir, domain)
    frames, starts, meta = load_frames(state_dir, settings, data.files, data.file_hashes)
    assert meta["gl_renderer"] == summary["renderer"] and frames.shape == (42, 3, 32, 32)
    env = _render_env(domain)
    rng = np.random.default_rng(0)
    checked = 0
    for name, start in zip(data.files, starts):
        physics = ds.read_episode(state_dir / name)["physics"]
        for t in rng.choice(len(physics), 6, replace=False):
            set_physics_state(env.physics, physics[t])
            again = settings.render(env.physics).transpose(2, 0, 1)
            assert np.array_equal(again, frames[start + t]), (name, t)
            checked += 1
    assert checked == 12
    # the frames change over an episode (a blank render would also compare equal)
    assert len({frames[i].tobytes() for i in range(21)}) > 10


@pytest.mark.render
def test_rendering_resumes_per_file_and_refuses_stale_and_stray_files(tmp_path, gl):
    from suites.dmc import dataset as ds
    from suites.dmc.pixels import RenderSettings, load_frames, pixel_dir, render_dataset

    state_dir = _tiny_dataset(tmp_path, "walker", episodes=3, length=10)
    settings = RenderSettings.make("walker", 16, 0, FLAGS)
    first = render_dataset(state_dir, settings, workers=2, progress=False)
    out = pixel_dir(state_dir, settings)
    before = {p.name: p.read_bytes() for p in out.glob("*.npz")}
    (out / "000001_10.npz").unlink()
    again = render_dataset(state_dir, settings, workers=1, progress=False)
    assert again["rendered"] == 1 and again["sha256"] == first["sha256"]
    assert {p.name: p.read_bytes() for p in out.glob("*.npz")} == before  # byte-identical re-render
    assert render_dataset(state_dir, settings, workers=2, progress=False)["rendered"] == 0
    data = ds.load_dataset(state_dir, "walker")
    (out / "stray.npz").write_bytes(b"PK")
    with pytest.raises(UserError, match="stray.npz.*not listed"):
        load_frames(state_dir, settings, data.files, data.file_hashes)
    (out / "stray.npz").unlink()
    meta = json.loads((out / "meta.json").read_text())
    meta["state_files"]["000002_10.npz"] = "0" * 64  # as if rendered from another state dataset
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="rendered from another state dataset.*b2fb render"):
        load_frames(state_dir, settings, data.files, data.file_hashes)
    with pytest.raises(UserError, match="rendered from another state dataset"):
        render_dataset(state_dir, settings, workers=1, progress=False)


# ---- no GL needed ------------------------------------------------------------------------------------------
def test_frame_stacks_are_built_by_index_and_clamped_at_the_episode_start():
    from suites.dmc.pixels import FrameStacks, transition_rows

    # two episodes of 3 transitions (4 frame rows each); frame r is filled with the value r
    frames = np.repeat(np.arange(8, dtype=np.uint8)[:, None, None, None], 3, axis=1).repeat(2, 2).repeat(2, 3)
    row, start = transition_rows(np.array([3, 3]), np.array([3, 3]))
    assert row.tolist() == [0, 1, 2, 4, 5, 6] and start.tolist() == [0, 0, 0, 4, 4, 4]
    stacks = FrameStacks(frames, row, start, stack=3)
    obs, nxt = stacks.obs(np.arange(6)), stacks.next_obs(np.arange(6))
    assert obs.shape == (6, 9, 2, 2)
    assert [obs[i, ::3, 0, 0].tolist() for i in range(6)] == [
        [0, 0, 0],
        [0, 0, 1],
        [0, 1, 2],
        [4, 4, 4],
        [4, 4, 5],
        [4, 5, 6],
    ]
    assert [nxt[i, ::3, 0, 0].tolist() for i in range(6)] == [
        [0, 0, 1],
        [0, 1, 2],
        [1, 2, 3],
        [4, 4, 5],
        [4, 5, 6],
        [5, 6, 7],
    ]


@pytest.mark.parametrize("domain", ["quadruped", "jaco"])
def test_pixel_environments_keep_the_state_dynamics(domain):
    """Quadruped's one floor and jaco's camera and hidden target change only what a camera sees."""
    from suites.dmc.envs import DMCEnv

    task = {"quadruped": "run", "jaco": "reach_top_left"}[domain]
    state, pixel = DMCEnv(domain, task, seed=3), DMCEnv(domain, task, seed=3, pixels=True)
    assert np.array_equal(state.reset(), pixel.reset())
    rng = np.random.default_rng(0)
    for _ in range(15):
        a = rng.uniform(-1, 1, state.action_dim)
        (o1, r1, _), (o2, r2, _) = state.step(a), pixel.step(a)
        assert np.array_equal(o1, o2) and r1 == r2
        assert np.array_equal(state.get_state(), pixel.get_state())
    if domain == "jaco":
        model = pixel.physics.model
        assert [model.id2name(i, "camera") for i in range(model.ncam)] == ["front_close"]
        assert state.physics.model.ncam == 0


def test_random_shift_crops_each_row_and_keeps_zero_shift_exact():
    from algorithms.fb.encoders import random_shift

    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    centred = random_shift(x, torch.tensor([[2, 2], [2, 2]]), pad=2)
    assert torch.equal(centred, x)
    shifted = random_shift(x, torch.tensor([[0, 4], [3, 1]]), pad=2)
    # row 0 moved down 2 and left 2 (edge values repeat), row 1 up 1 and right 1
    assert torch.equal(shifted[0, :, 2:, :3], x[0, :, :3, 2:])
    assert torch.equal(shifted[0, :, 0], shifted[0, :, 2]) and torch.equal(
        shifted[1, :, :4, 1:], x[1, :, 1:, :4]
    )


@pytest.mark.parametrize("algo", ["fb", "onestep_fb"])
@pytest.mark.parametrize("mode,arch", [("shared", "conv_stride2"), ("per_network", "impala_small")])
def test_both_encoder_modes_train_infer_and_act_on_images(algo, mode, arch):
    from algorithms.fb import fb, onestep_fb
    from suites.zeroshot import TransitionBatch

    module = fb if algo == "fb" else onestep_fb
    small = dict(
        latent_dim=8, batch_size=8, forward_hidden=(16, 16), backward_hidden=(16, 16), actor_hidden=(16, 16)
    )
    cfg = module.Config(
        **small, encoder=mode, encoder_arch=arch, encoder_features=12, encoder_channels=4, inference_chunk=5
    )
    cls = fb.FB if algo == "fb" else onestep_fb.OneStepFB
    torch.manual_seed(0)
    agent = cls(cfg, (6, 32, 32), 3, 0, 0.9)
    g = torch.Generator().manual_seed(0)

    def images(n):
        return torch.randint(0, 256, (n, 6, 32, 32), dtype=torch.uint8, generator=g)

    batch = TransitionBatch(
        images(8), torch.rand(8, 3, generator=g) * 2 - 1, images(8), torch.rand(8, 3, generator=g) * 2 - 1
    )
    encoder_params = [p for name, p in agent.named_parameters() if "encoder" in name and "target" not in name]
    assert encoder_params
    before = [p.detach().clone() for p in encoder_params]
    for _ in range(3):
        logs = agent.update(batch, g)
    assert all(torch.isfinite(v) for v in logs.values())
    assert any(not torch.equal(a, p) for a, p in zip(before, encoder_params))  # the encoders learn
    inference = TransitionBatch(images(12), torch.rand(12, 3) * 2 - 1, images(12), torch.rand(12, 3) * 2 - 1)
    z = agent.infer_task_vector(inference, torch.rand(12))
    assert z.shape == (8,) and torch.all(torch.isfinite(z))
    whole = cls(dataclasses.replace(cfg, inference_chunk=100), (6, 32, 32), 3, 0, 0.9)
    whole.load_state_dict(agent.state_dict())
    assert torch.allclose(
        agent.infer_task_vector(inference, torch.ones(12)),
        whole.infer_task_vector(inference, torch.ones(12)),
        atol=1e-5,
    )  # chunks = whole
    action = agent.act(images(4), z)
    assert action.shape == (4, 3) and torch.all(action.abs() <= 1)


def test_a_state_task_refuses_an_image_encoder_and_an_image_task_needs_one():
    from algorithms.fb import onestep_fb

    with pytest.raises(UserError, match="needs image observations"):
        onestep_fb.OneStepFB(onestep_fb.Config(encoder="shared", encoder_arch="conv_stride2"), 24, 6, 0, 0.9)
    with pytest.raises(UserError, match="set encoder"):
        onestep_fb.OneStepFB(onestep_fb.Config(), (9, 64, 64), 6, 0, 0.9)


def test_dmc_table_refuses_an_unknown_task_id():
    import pandas as pd

    from benchmarks.tables import dmc_task_kinds

    kinds = dmc_task_kinds(pd.Series(["dmc/walker-zeroshot-v0", "dmc/jaco-zeroshot-pixels-v1"]))
    assert kinds.domain.tolist() == ["walker", "jaco"] and kinds.obs.tolist() == ["state", "pixels"]
    with pytest.raises(UserError, match="does not know task 'dmc/walker-zeroshot-colour-v0'"):
        dmc_task_kinds(pd.Series(["dmc/walker-zeroshot-v0", "dmc/walker-zeroshot-colour-v0"]))


@pytest.mark.render
def test_render_workers_import_no_torch(tmp_path, gl):
    """The render worker (its whole code path: rendering and writing one episode file) loads no torch, whose
    triton LLVM clashes with Mesa's."""
    state_dir = _tiny_dataset(tmp_path, "walker", episodes=1, length=5)
    out_dir = tmp_path / "frames"
    out_dir.mkdir()
    code = (
        "import queue, sys; from suites.dmc import pixels; q = queue.Queue(); "
        "s = pixels.RenderSettings.make('walker', 16, 0, {}); "
        f"pixels._render_worker({str(state_dir)!r}, {str(out_dir)!r}, s, ['000000_5.npz'], q); "
        "print([q.get()[0] for _ in range(q.qsize())], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['renderer', 'episode', 'done'] False"
    assert (out_dir / "000000_5.npz").is_file()


def test_the_cpu_grid_runs_pixels_for_three_seeds_of_the_learned_methods_and_keeps_state_run_ids():
    from pathlib import Path

    from benchmarks.config import load_experiment

    trials = load_experiment("dmc", "cpu").trials()
    pixels = [t for t in trials if "-pixels-" in t.task_id]
    assert sorted({(t.algorithm, t.task_id) for t in pixels}) == [
        (a, f"dmc/{d}-zeroshot-pixels-v0") for a in ("fb", "onestep_fb") for d in ("cheetah", "walker")]
    assert sorted({t.seed for t in pixels}) == [0, 1, 2] and len(pixels) == 12
    assert {t.seed for t in trials if "-pixels-" not in t.task_id} == {0, 1, 2, 3, 4}
    assert all(t.algo_config["encoder"] == "shared" and t.algo_config["batch_size"] == 64 for t in pixels)
    committed = {p.name for p in (Path(__file__).parents[1] / "results" / "dmc" / "runs").iterdir()}
    assert committed and committed <= {t.run_id for t in trials}  # the state runs keep their ids
    # --seeds overrides every task's own seeds
    reseeded = load_experiment("dmc", "cpu", seeds=2).trials()
    assert {t.seed for t in reseeded if "-pixels-" in t.task_id} == {0, 1}


def test_a_fixed_policy_on_a_pixel_task_is_evaluated_as_on_the_state_task(tmp_path):
    """The baselines ignore observations: no frame is rendered for them, and their returns are the state
    task's (same dynamics, same start states)."""
    from algorithms.baselines.fixed_policy import FixedPolicy
    from suites import registry

    data = _tiny_dataset(tmp_path, "walker")
    kwargs = dict(dataset=str(data), train_size=20, val_size=20, inference_samples=10, eval_episodes=1,
                  tasks=["stand"])
    state = registry.get("dmc/walker-zeroshot-v0").with_kwargs(**kwargs).make()
    pixel = registry.get("dmc/walker-zeroshot-pixels-v0").with_kwargs(**kwargs, eval_episode_length=30).make()
    pixel.rollout = None  # the rendering rollout must not be reached
    state.episode_length = 30
    a, b = FixedPolicy("random", 6, seed=1), FixedPolicy("random", 6, seed=1)
    assert state.evaluate(a).metrics == pixel.evaluate(b).metrics
