"""Devices.  A trial computes where the grid's resources put it: `resources: {gpu: 1}` (the `paper`
sizes) means CUDA, anything else the CPU.  The device is an execution detail like the thread count: it
is recorded in the manifest, not hashed, and the random streams are drawn on the CPU so a run sees the
same noise on every device.

On the project's CPU machines (and CI) only the CPU-side rules run here; the CUDA tests compare a GPU
run with the same run on the CPU and run on a GPU machine (`pytest tests/test_device.py`)."""
import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

from fixtures import MemoryWriter

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def no_tf32():
    """Full fp32 convolutions on the GPU (cuDNN allows TF32 by default), so GPU and CPU runs compare
    at float error."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def _didactic_trial(algorithm: str, resources: dict):
    from benchmarks.config import load_experiment
    trial = next(t for t in load_experiment("didactic", "tiny").trials() if t.algorithm == algorithm)
    return dataclasses.replace(trial, resources=resources)


def test_cpu_trials_run_on_the_cpu():
    from benchmarks.results import trial_device
    assert trial_device(_didactic_trial("onestep_fb", {"cpu": 1, "gpu": 0})) == "cpu"
    assert trial_device(_didactic_trial("onestep_fb", {"cpu": 1})) == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_trial_on_a_machine_without_one_fails_with_one_line(tmp_path):
    """The trial is recorded as failed with the reason (Ray would not even place it without a GPU;
    this is the in-process path)."""
    from benchmarks.results import execute_trial, read_manifest, run_dir, trial_device
    from suites.errors import UserError

    trial = _didactic_trial("onestep_fb", {"cpu": 1, "gpu": 1})
    with pytest.raises(UserError, match="asks for a GPU"):
        trial_device(trial)
    assert execute_trial(trial, tmp_path) == "failed"
    manifest = read_manifest(run_dir(tmp_path, trial))
    assert "asks for a GPU" in manifest["reason"] and "\n" not in manifest["reason"]


# ---- CUDA: the same run on the GPU and on the CPU ---------------------------------------------------

def _continuous_batch(n: int, obs_dim: int, action_dim: int, seed: int):
    from suites.zeroshot import TransitionBatch
    g = torch.Generator().manual_seed(seed)
    obs, next_obs = torch.randn(n, obs_dim, generator=g), torch.randn(n, obs_dim, generator=g)
    action, next_action = (torch.rand(n, action_dim, generator=g) * 2 - 1 for _ in range(2))
    return TransitionBatch(obs, action, next_obs, next_action, None)


@cuda
@pytest.mark.parametrize("algorithm", ["fb", "onestep_fb"])
def test_fb_family_updates_on_cuda_follow_the_cpu_run(algorithm):
    """Continuous actions (actor, latent sampling, Polyak targets): 5 float64 updates from the same
    initialisation and the same CPU generator give the same losses and policy on both devices."""
    from algorithms.fb import fb, onestep_fb
    module = {"fb": fb, "onestep_fb": onestep_fb}[algorithm]
    cls = module.FB if algorithm == "fb" else module.OneStepFB
    cfg = module.Config(latent_dim=8, batch_size=32, forward_hidden=(32, 32), backward_hidden=(32, 32),
                        actor_hidden=(32, 32), dtype="float64", lr=1e-3)
    torch.manual_seed(0)
    cpu_agent = cls(cfg, 5, 2, 0, 0.9)
    gpu_agent = copy.deepcopy(cpu_agent).to("cuda")
    assert gpu_agent.device.type == "cuda"
    for agent in (cpu_agent, gpu_agent):
        generator = torch.Generator().manual_seed(1)
        agent.losses = [{k: float(v) for k, v in agent.update(_continuous_batch(32, 5, 2, s), generator).items()}
                        for s in range(5)]
    for cpu_logs, gpu_logs in zip(cpu_agent.losses, gpu_agent.losses):
        for key in cpu_logs:
            assert gpu_logs[key] == pytest.approx(cpu_logs[key], rel=1e-6, abs=1e-9), key
    batch = _continuous_batch(64, 5, 2, 99)
    reward = batch.obs[:, 0]
    z_cpu, z_gpu = cpu_agent.infer_task_vector(batch, reward), gpu_agent.infer_task_vector(batch, reward)
    assert z_gpu.device.type == "cpu" and torch.allclose(z_gpu, z_cpu, atol=1e-8)
    a_cpu, a_gpu = cpu_agent.act(batch.obs, z_cpu), gpu_agent.act(batch.obs, z_cpu)
    assert a_gpu.device.type == "cpu" and torch.allclose(a_gpu, a_cpu, atol=1e-8)
    q_cpu, q_gpu = (agent.predict_q(batch.obs, batch.action, z_cpu) for agent in (cpu_agent, gpu_agent))
    assert q_gpu.device.type == "cpu" and torch.allclose(q_gpu, q_cpu, atol=1e-8)


@cuda
def test_a_gpu_trial_runs_on_cuda_and_records_it(tmp_path):
    """The in-process trial path (what each Ray worker runs) with `resources: {gpu: 1}`: the didactic
    tiny one-step FB run reaches the same exact ground truth on CUDA, and the manifest names the GPU."""
    from benchmarks.results import execute_trial, read_manifest, run_dir
    trial = _didactic_trial("onestep_fb", {"cpu": 1, "gpu": 1})
    assert execute_trial(trial, tmp_path) == "done"
    manifest = read_manifest(run_dir(tmp_path, trial))
    assert manifest["platform"]["device"].startswith("cuda")
    rows = [json.loads(line) for line in (run_dir(tmp_path, trial) / "scalars.jsonl").read_text().splitlines()]
    final = {r["metric"]: r["value"] for r in rows if r["split"] == "eval" and r["step"] == trial.algo_config["num_steps"]}
    assert final["successor_error"] <= 1e-6


@cuda
def test_ddpo_on_cuda_follows_the_cpu_run(no_tf32):
    """One tiny DDPO epoch on the committed shapes model on both devices: the same prompts and noise
    (drawn on the CPU), so the base evaluation and the epoch's rewards agree up to float error, and the
    budget counts are equal."""
    from algorithms.diffusion import ddpo
    from suites import registry

    cfg = ddpo.Config(num_epochs=1, sample_num_steps=4, sample_batch_size=4, sample_num_batches_per_epoch=1,
                      train_batch_size=2, stat_buffer_size=16, stat_min_count=2, checkpoint_every=1)
    runs = {}
    for device in ("cpu", "cuda"):
        task = registry.get("t2i/shapes-composition-v0").with_kwargs(
            eval_images_per_prompt=2, eval_max_prompts=2).make()
        runs[device] = MemoryWriter(device=device)
        ddpo.run(task, cfg, runs[device])
    cpu, gpu = runs["cpu"], runs["cuda"]
    base_cpu, base_gpu = cpu.eval[0], gpu.eval[0]
    assert base_gpu["train/clipscore"] == pytest.approx(base_cpu["train/clipscore"], abs=1e-3)
    assert base_gpu["test/oracle"] == pytest.approx(base_cpu["test/oracle"], abs=0.13)  # a pixel may flip
    train = {d: {r["metric"]: r["value"] for r in w.rows if r["split"] == "train"} for d, w in runs.items()}
    assert train["cuda"]["reward_mean"] == pytest.approx(train["cpu"]["reward_mean"], abs=1e-3)
    for key in ("budget/unet_evals", "budget/reward_queries", "budget/trained_timesteps", "budget/optimizer_steps"):
        assert train["cuda"][key] == train["cpu"][key]
    assert np.isfinite(train["cuda"]["loss"]) and "lora.safetensors" in gpu.artifacts


@cuda
def test_stable_diffusion_path_samples_on_cuda_like_on_the_cpu(tmp_path, no_tf32):
    """The paper-size path on a tiny random SD: after `model.to("cuda")` (UNet, VAE and text encoder),
    trajectory sampling with log-probs gives the CPU run's images and log-probs from the same CPU
    generator, and branched sampling (B²-DiffuRL) runs on the device."""
    from algorithms.diffusion import core
    from suites.t2i import sd

    folder = sd.build_tiny_sd_folder(tmp_path / "sd", seed=0)
    out = {}
    for device in ("cpu", "cuda"):
        model = sd.load_sd_model(folder, hash_weights=False).to(device)
        out[device] = core.sample_trajectories(model, ["a red circle", "two blue squares"], 4, 5.0, 1.0,
                                               generator=torch.Generator().manual_seed(0))
    assert out["cuda"].images.device.type == "cuda"
    torch.testing.assert_close(out["cuda"].images.cpu(), out["cpu"].images, atol=1e-3, rtol=0)
    torch.testing.assert_close(out["cuda"].log_probs.cpu(), out["cpu"].log_probs, atol=1e-3, rtol=1e-3)
    branched = core.sample_branched_trajectories(model, ["a red circle"], 4, 2, 3, 5.0, 1.0,
                                                 torch.Generator().manual_seed(0))
    assert torch.isfinite(branched.log_probs).all()
