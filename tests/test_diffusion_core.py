"""Tests of algorithms/diffusion/core.py (the DDIM step with log-prob, CFG sampling with and without
branches, PPO-clip, per-prompt statistics, LoRA, accumulation) against the invariants of
research/t2i.md §6.5, and of the paper-size model path suites/t2i/sd.py on a tiny random SD folder.

Models are tiny diffusers networks built from configs (no downloads, no mocks)."""
from __future__ import annotations

import copy
import math
import os
import zlib

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import DDIMScheduler, UNet2DConditionModel  # noqa: E402

from algorithms.diffusion import core  # noqa: E402
from suites.errors import UserError  # noqa: E402
from suites.t2i import sd  # noqa: E402
from suites.t2i.model import T2IModel  # noqa: E402

SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                    set_alpha_to_one=False, steps_offset=1)
ZERO_SNR_V_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                            set_alpha_to_one=False, rescale_betas_zero_snr=True, timestep_spacing="trailing",
                            prediction_type="v_prediction")
EMBED_LEN, EMBED_DIM = 4, 16


# ----------------------------------------------------------------------------------------------------
# a tiny T2IModel: a random UNet from its config and a fixed random-embedding prompt encoder
# ----------------------------------------------------------------------------------------------------

def _tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=EMBED_DIM, attention_head_dim=8, norm_num_groups=8).eval()


def _encode(prompts):
    """Each prompt's embedding is fixed noise seeded by its text ("" included)."""
    rows = [torch.randn(EMBED_LEN, EMBED_DIM, generator=torch.Generator().manual_seed(zlib.crc32(p.encode())))
            for p in prompts]
    return torch.stack(rows)


def _tiny_model(unet=None, scheduler_config=SD_SCHEDULER) -> T2IModel:
    return T2IModel(name="tiny", unet=unet if unet is not None else _tiny_unet(),
                    scheduler=DDIMScheduler(**scheduler_config), encode_prompts=_encode,
                    decode=lambda x: (x[:, :3] / 2 + 0.5).clamp(0, 1), latent_shape=(4, 8, 8))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_unet():
    return _tiny_unet()


@pytest.fixture
def model(base_unet):
    return _tiny_model(copy.deepcopy(base_unet))


# ----------------------------------------------------------------------------------------------------
# §6.5 item 1: the DDIM step with log-prob
# ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_steps, expected", [(20, list(range(951, 0, -50))), (50, list(range(981, 0, -20)))])
def test_sd_timesteps_and_previous_timestep_with_clamp(num_steps, expected):
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    scheduler.set_timesteps(num_steps)
    assert scheduler.timesteps.tolist() == expected
    prev = core.previous_timestep(scheduler, scheduler.timesteps)
    assert prev.tolist() == [max(t - 1000 // num_steps, 0) for t in expected]
    assert prev[-1].item() == 0 and expected[-1] == 1          # the last step clamps to 0: ᾱ_prev = ᾱ[0]


def _independent_step(scheduler, model_output, t, sample, eta, x_prev):
    """mean, std and Normal(mean, std).log_prob(x_prev).mean over C,H,W, in float64 from the formulas."""
    steps = scheduler.num_inference_steps
    acp = scheduler.alphas_cumprod.double()
    a_t = acp[t]
    a_prev = acp[max(t - 1000 // steps, 0)]
    out, x = model_output.double(), sample.double()
    if scheduler.config.prediction_type == "epsilon":
        x0, eps = (x - (1 - a_t).sqrt() * out) / a_t.sqrt(), out
    else:                                                                  # v_prediction
        x0, eps = a_t.sqrt() * x - (1 - a_t).sqrt() * out, a_t.sqrt() * out + (1 - a_t).sqrt() * x
    std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std ** 2).clamp(min=0).sqrt() * eps       # float64: no NaN
    log_prob = torch.distributions.Normal(mean, std).log_prob(x_prev.double()).mean((1, 2, 3))
    return mean, std, log_prob


@pytest.mark.parametrize("config, num_steps", [(SD_SCHEDULER, 20), (SD_SCHEDULER, 50), (ZERO_SNR_V_SCHEDULER, 20)],
                         ids=["sd-20", "sd-50", "zero-snr-v-trailing-20"])
def test_step_log_prob_is_the_gaussian_density_averaged_over_dims(config, num_steps):
    scheduler = DDIMScheduler(**config)
    scheduler.set_timesteps(num_steps)
    g = torch.Generator().manual_seed(0)
    for index in (0, 1, num_steps // 2, num_steps - 1):
        t = int(scheduler.timesteps[index])
        sample = torch.randn(3, 4, 8, 8, generator=g)
        model_output = torch.randn(3, 4, 8, 8, generator=g)
        x_prev, log_prob = core.ddim_step_with_logprob(scheduler, model_output, torch.full((3,), t), sample,
                                                       eta=1.0, generator=torch.Generator().manual_seed(index))
        assert log_prob.shape == (3,) and torch.isfinite(x_prev).all() and torch.isfinite(log_prob).all()
        mean, std, expected = _independent_step(scheduler, model_output, t, sample, 1.0, x_prev)
        assert std > 0
        noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(index)).double()
        torch.testing.assert_close(x_prev.double(), mean + std * noise, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(log_prob.double(), expected, rtol=1e-5, atol=1e-4)
        # scoring the same x_prev again (training) gives the very same value; a scalar t works too
        _, again = core.ddim_step_with_logprob(scheduler, model_output, t, sample, eta=1.0, prev_sample=x_prev)
        assert torch.equal(again, log_prob)
        # the sampled x_prev is the diffusers DDIM step with the same noise (same generator seed)
        if not (config is ZERO_SNR_V_SCHEDULER and index == 0):   # diffusers' sqrt of a rounding-negative there
            ref = scheduler.step(model_output, t, sample, eta=1.0,
                                 generator=torch.Generator().manual_seed(index)).prev_sample
            torch.testing.assert_close(x_prev, ref, rtol=1e-5, atol=1e-5)
    if config is ZERO_SNR_V_SCHEDULER:
        assert scheduler.alphas_cumprod[int(scheduler.timesteps[0])] == 0      # ᾱ_t = 0 at the first step


def test_step_gradient_flows_through_the_mean_only():
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    scheduler.set_timesteps(20)
    g = torch.Generator().manual_seed(1)
    sample, output = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g).requires_grad_()
    prev = torch.randn(2, 4, 8, 8, generator=g).requires_grad_()
    _, log_prob = core.ddim_step_with_logprob(scheduler, output, torch.tensor([501, 51]), sample, prev_sample=prev)
    log_prob.sum().backward()
    assert prev.grad is None and output.grad is not None and output.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------
# CFG, determinism, the latents chain, budget
# ----------------------------------------------------------------------------------------------------

def test_cfg_is_one_pass_over_the_doubled_batch(model):
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([901, 901])
    text, neg = _encode(["a red circle", "a blue square"]), _encode([""]).repeat(2, 1, 1)
    with torch.no_grad():
        cond = model.unet(x, t, encoder_hidden_states=text).sample
        uncond = model.unet(x, t, encoder_hidden_states=neg).sample
        assert torch.equal(core.predict_noise(model.unet, x, t, text, neg, 1.0), cond)
        torch.testing.assert_close(core.predict_noise(model.unet, x, t, text, neg, 5.0),
                                   uncond + 5.0 * (cond - uncond), rtol=1e-5, atol=1e-5)


def test_sampling_is_deterministic_and_stores_a_consistent_chain(model):
    prompts, steps = ["a red circle", "a blue square"], 4
    budget = core.Budget()
    a = core.sample_trajectories(model, prompts, steps, 5.0, 1.0, generator=7, budget=budget)
    b = core.sample_trajectories(model, prompts, steps, 5.0, 1.0, generator=torch.Generator().manual_seed(7))
    c = core.sample_trajectories(model, prompts, steps, 5.0, 1.0, generator=8)
    for name in ("prompt_embeds", "negative_embeds", "timesteps", "latents", "log_probs", "images"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.latents, c.latents)
    assert a.latents.shape == (2, steps + 1, 4, 8, 8) and a.log_probs.shape == (2, steps)
    assert a.images.shape == (2, 3, 8, 8) and a.images.min() >= 0 and a.images.max() <= 1
    assert a.timesteps.dtype == torch.long and a.timesteps.tolist() == [[751, 501, 251, 1]] * 2
    assert torch.equal(a.negative_embeds, _encode([""]).repeat(2, 1, 1))
    assert a.unet_evals == steps and a.latent_evals == 2 * steps and budget.unet_evals == 2 * steps
    # the chain: replaying step j from the stored latent with the same noise gives the stored next latent
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 8, 8, generator=g)
    assert torch.equal(x, a.latents[:, 0])
    for j in range(steps):
        latents, log_probs = core.denoise_steps(model, a.latents[:, j], a.prompt_embeds, a.negative_embeds,
                                                a.timesteps[0, j:j + 1], 5.0, 1.0, g)
        assert torch.equal(latents[1], a.latents[:, j + 1]) and torch.equal(log_probs[0], a.log_probs[:, j])
    tr = core.make_transitions(a, [1.0, -1.0])
    assert torch.equal(tr.next_latents[:, :-1], tr.latents[:, 1:])
    # guidance 1 skips the unconditional pass: same x_T, different trajectory
    d = core.sample_trajectories(model, prompts, steps, 1.0, 1.0, generator=7)
    assert torch.equal(d.latents[:, 0], a.latents[:, 0]) and not torch.equal(d.latents[:, -1], a.latents[:, -1])
    # plain sampling is branched sampling with one branch splitting at step 0
    e = core.sample_branched_trajectories(model, prompts, steps, steps, 1, 5.0, 1.0, generator=7)
    assert torch.equal(e.latents, a.latents) and torch.equal(e.log_probs, a.log_probs)


# ----------------------------------------------------------------------------------------------------
# §6.5 item 2: zero-init LoRA is the base model; ratio exactly 1 at the first micro-step
# ----------------------------------------------------------------------------------------------------

def test_zero_init_lora_equals_base_and_gives_ratio_one(model, base_unet):
    prompts, steps = ["a red circle", "a blue square"], 3
    traj = core.sample_trajectories(model, prompts, steps, 5.0, 1.0, generator=3)     # base UNet
    g = torch.Generator().manual_seed(4)
    x, t, c = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([651, 51]), _encode(prompts)
    with torch.no_grad():
        before = model.unet(x, t, encoder_hidden_states=c).sample
    core.add_lora(model.unet, rank=4, seed=0)
    with torch.no_grad():
        assert torch.equal(model.unet(x, t, encoder_hidden_states=c).sample, before)
    params = core.lora_parameters(model.unet)
    trainable = [p for p in model.unet.parameters() if p.requires_grad]
    assert params and len(params) == len(trainable) and all(p.dtype == torch.float32 for p in params)
    assert all(p.data_ptr() in {q.data_ptr() for q in params} for p in trainable)
    names = [n for n, _ in model.unet.named_parameters() if ".lora_A." in n]
    assert {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in names} == {"to_q", "to_k", "to_v", "0"}

    budget = core.Budget()
    tr = core.make_transitions(traj, [1.5, -0.5])
    for j in range(steps):
        log_prob = core.log_prob_of_step(model, tr.latents[:, j], tr.timesteps[:, j], tr.next_latents[:, j],
                                         tr.prompt_embeds, tr.negative_embeds, 5.0, 1.0, num_steps=steps,
                                         budget=budget)
        assert torch.equal(log_prob, tr.log_probs[:, j])
        loss, info = core.ppo_clip_loss(log_prob, tr.log_probs[:, j], tr.advantages, 1e-4, 5.0)
        assert info["ratio"].item() == 1.0 and info["approx_kl"].item() == 0.0 and info["clipfrac"].item() == 0.0
        loss.backward()
    assert budget.trained_timesteps == 2 * steps
    assert sum(p.grad.abs().sum() for p in params if ".lora_B." in _name_of(model.unet, p)) > 0


def _name_of(module, param):
    return next(n for n, p in module.named_parameters() if p is param)


def test_a_ppo_step_moves_log_probs_toward_positive_advantages(model):
    """The direction of learning, end to end through LoRA, CFG, the DDIM log-prob and PPO-clip: after a
    few small optimizer steps on trajectories with advantages +1 / -1, the positive ones' summed
    log-probs rose relative to the negative ones' (a sign error anywhere would lower the reward)."""
    prompts, steps = ["a red circle", "a blue square"] * 2, 3
    traj = core.sample_trajectories(model, prompts, steps, 5.0, 1.0, generator=5)
    core.add_lora(model.unet, rank=4, seed=0)
    params = core.lora_parameters(model.unet)
    optimizer = torch.optim.SGD(params, lr=1e-3)
    advantages = torch.tensor([1.0, -1.0, -1.0, 1.0])
    tr = core.make_transitions(traj, advantages)

    def summed_log_probs() -> torch.Tensor:
        return sum(core.log_prob_of_step(model, tr.latents[:, j], tr.timesteps[:, j], tr.next_latents[:, j],
                                         tr.prompt_embeds, tr.negative_embeds, 5.0, 1.0, num_steps=steps)
                   for j in range(steps))

    for _ in range(3):
        optimizer.zero_grad()
        for j in range(steps):   # the clip range is wide open: a plain policy-gradient step on -A * ratio
            log_prob = core.log_prob_of_step(model, tr.latents[:, j], tr.timesteps[:, j], tr.next_latents[:, j],
                                             tr.prompt_embeds, tr.negative_embeds, 5.0, 1.0, num_steps=steps)
            core.ppo_clip_loss(log_prob, tr.log_probs[:, j], tr.advantages, 1e9, 5.0)[0].backward()
        optimizer.step()
    with torch.no_grad():
        moved = summed_log_probs() - tr.log_probs.sum(1)
    assert moved[advantages > 0].min() > moved[advantages < 0].max()


def test_compute_dtype_is_diffusers_unet_dtype(base_unet):
    """`core.compute_dtype` (the fast path of `_unet`) agrees with diffusers' `unet.dtype`, in fp32 and
    after a cast, with LoRA layers present."""
    unet = core.add_lora(copy.deepcopy(base_unet), seed=0)
    assert core.compute_dtype(unet) == unet.dtype == torch.float32
    unet.to(torch.bfloat16)
    assert core.compute_dtype(unet) == unet.dtype == torch.bfloat16

    class Parameterless(torch.nn.Module):                     # e.g. an exact denoiser in a test
        dtype = torch.float64

    assert core.compute_dtype(Parameterless()) == torch.float64


def test_lora_state_dict_round_trip(base_unet):
    trained = core.add_lora(copy.deepcopy(base_unet), seed=0)
    with torch.no_grad():
        for p in core.lora_parameters(trained):
            p.add_(0.05 * torch.randn_like(p))
    state = core.lora_state_dict(trained)
    from safetensors.torch import load
    assert {k: torch.equal(v, state[k]) for k, v in load(core.lora_safetensors_bytes(trained)).items()} == \
        dict.fromkeys(state, True)
    assert all(v.is_contiguous() and v.device.type == "cpu" for v in state.values())
    fresh = core.add_lora(copy.deepcopy(base_unet), seed=1)
    core.load_lora_state_dict(fresh, state)
    x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([301]), _encode(["a"])
    with torch.no_grad():
        out = trained(x, t, encoder_hidden_states=c).sample
        assert torch.equal(fresh(x, t, encoder_hidden_states=c).sample, out)
        assert not torch.allclose(base_unet(x, t, encoder_hidden_states=c).sample, out)
    with pytest.raises(ValueError):
        core.load_lora_state_dict(fresh, dict(list(state.items())[1:]))


# ----------------------------------------------------------------------------------------------------
# §6.5 item 3: the PPO-clip loss
# ----------------------------------------------------------------------------------------------------

def _ppo(adv, ratio, clip, adv_max=5.0, weights=None):
    log_prob = torch.tensor([math.log(ratio)], dtype=torch.float64, requires_grad=True)
    loss, info = core.ppo_clip_loss(log_prob, torch.zeros(1, dtype=torch.float64),
                                    torch.tensor([adv], dtype=torch.float64), clip, adv_max,
                                    None if weights is None else torch.tensor([weights], dtype=torch.float64))
    loss.backward()
    return loss.item(), log_prob.grad.item(), info


def test_ppo_clip_loss_branches_and_advantage_clipping():
    assert _ppo(-1.0, 1.0, 1e-4)[0] == 1.0                                  # TRL's test
    eps = 0.1
    # (A, ratio) -> which term the max picks: clipped terms have zero gradient
    cases = [(+2.0, 1.5, "clipped", -2.0 * 1.1), (+2.0, 0.5, "unclipped", -2.0 * 0.5),
             (-2.0, 1.5, "unclipped", 2.0 * 1.5), (-2.0, 0.5, "clipped", 2.0 * 0.9),
             (+2.0, 1.05, "unclipped", -2.0 * 1.05), (-2.0, 0.95, "unclipped", 2.0 * 0.95)]
    for adv, ratio, branch, expected in cases:
        loss, grad, info = _ppo(adv, ratio, eps)
        assert loss == pytest.approx(expected, rel=1e-12)
        assert (grad == 0.0) == (branch == "clipped"), (adv, ratio)
        assert info["clipfrac"].item() == float(abs(ratio - 1) > eps)
        assert info["approx_kl"].item() == pytest.approx(0.5 * math.log(ratio) ** 2)
    assert _ppo(10.0, 1.0, eps, adv_max=5.0)[0] == pytest.approx(-5.0)     # A clipped to ±adv_clip_max
    assert _ppo(-10.0, 1.0, eps, adv_max=5.0)[0] == pytest.approx(5.0)
    assert _ppo(10.0, 1.0, eps, adv_max=5.0, weights=0.5)[0] == pytest.approx(-2.5)  # β after the clamp
    # batched: the mean of the per-sample terms, ratio = mean ratio
    lp = torch.log(torch.tensor([1.5, 0.5, 1.0]))
    loss, info = core.ppo_clip_loss(lp, torch.zeros(3), torch.tensor([2.0, 2.0, -1.0]), eps, 5.0)
    assert loss.item() == pytest.approx((-2.2 - 1.0 + 1.0) / 3, rel=1e-6)
    assert info["ratio"].item() == pytest.approx(1.0) and info["clipfrac"].item() == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------------
# §6.5 item 4: the per-prompt stat tracker
# ----------------------------------------------------------------------------------------------------

def test_per_prompt_stat_tracker_semantics_and_state():
    tracker = core.PerPromptStatTracker(buffer_size=4, min_count=3)
    batch1 = np.array([1.0, 2.0, 10.0])
    adv = tracker.update(["a", "a", "b"], batch1)
    whole = (batch1 - batch1.mean()) / (np.std(batch1) + 1e-6)               # fewer than min_count: batch stats
    np.testing.assert_allclose(adv, whole, rtol=1e-12)
    # the current reward is appended first: "a" then holds [1, 2, 3] = min_count -> its own stats
    batch2 = np.array([3.0, 11.0])
    adv = tracker.update(["a", "b"], batch2)
    assert adv[0] == pytest.approx((3 - 2) / (np.std([1, 2, 3]) + 1e-6), rel=1e-12)
    assert adv[1] == pytest.approx((11 - batch2.mean()) / (np.std(batch2) + 1e-6), rel=1e-12)
    restored = core.PerPromptStatTracker(1, 1)
    restored.load_state_dict(tracker.state_dict())
    # the buffer keeps the last buffer_size rewards: [2, 3, 4, 5]
    for t in (tracker, restored):
        adv = t.update(["a", "a"], [4.0, 5.0])
        np.testing.assert_allclose(adv, (np.array([4.0, 5.0]) - 3.5) / (np.std([2, 3, 4, 5]) + 1e-6), rtol=1e-12)
    assert tracker.get_stats()["a"]["count"] == 4
    r = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(core.normalize_batch(r), (r - r.mean()) / (r.std() + 1e-8))


# ----------------------------------------------------------------------------------------------------
# §6.5 item 6: branch-based sampling
# ----------------------------------------------------------------------------------------------------

def test_branch_sampling_shared_prefix_order_and_unet_count(model):
    prompts, steps, s, k = ["a red circle", "a blue square"], 5, 3, 3
    batch, split = len(prompts), steps - s
    rows_seen = []
    hook = model.unet.register_forward_pre_hook(lambda m, args: rows_seen.append(args[0].shape[0]))
    budget = core.Budget()
    try:
        parts = [core.sample_branched_trajectories(model, prompts, steps, s, k, 5.0, 1.0, generator=seed,
                                                   budget=budget) for seed in (11, 12)]
    finally:
        hook.remove()
    traj = parts[0]
    assert len(traj) == k * batch and traj.branch_start == split and traj.num_branches == k
    assert traj.unet_evals == split + k * s == 11 and budget.unet_evals == 2 * batch * 11
    # every UNet row is one CFG half of one latent: rows / (2B) = evaluations of the prompt batch
    assert sum(rows_seen) == 2 * 2 * batch * traj.unet_evals
    assert rows_seen[:split] == [2 * batch] * split and rows_seen[split:steps] == [2 * k * batch] * s
    # order: row k*B + j is branch k of prompt j
    assert traj.prompts == prompts * k
    assert torch.equal(traj.prompt_embeds, _encode(prompts).repeat(k, 1, 1))
    both = core.Trajectories.cat(parts)
    groups = core.branch_group_indices(2, k, batch)
    assert groups.tolist() == [[(b * k + kk) * batch + j for kk in range(k)] for b in range(2) for j in range(batch)]
    for rows in groups:
        first = both.latents[rows[0]]
        for r in rows[1:]:
            assert torch.equal(both.latents[r, :split + 1], first[:split + 1])          # shared: latents 0..T-s
            assert torch.equal(both.log_probs[r, :split], both.log_probs[rows[0], :split])
            assert all(not torch.equal(both.latents[r, i], first[i]) for i in range(split + 1, steps + 1))
            assert both.prompts[r] == both.prompts[rows[0]]
    assert not torch.equal(both.latents[groups[0, 0], 0], both.latents[groups[2, 0], 0])   # batches differ
    assert both.unet_evals == 22 and both.latent_evals == 2 * batch * 11
    # B²-DiffuRL trains only the branched interval [T-s, T)
    tr = core.make_transitions(both, np.arange(len(both), dtype=float), start=split)
    assert tr.num_steps == s and torch.equal(tr.timesteps, both.timesteps[:, split:])
    assert torch.equal(tr.latents, both.latents[:, split:steps]) and torch.equal(tr.next_latents, both.latents[:, split + 1:])
    assert torch.equal(tr.log_probs, both.log_probs[:, split:])
    # s = T: the branches share only x_T
    full = core.sample_branched_trajectories(model, prompts, 2, 2, 2, 5.0, 1.0, generator=5, decode=False)
    assert torch.equal(full.latents[0, 0], full.latents[2, 0]) and not torch.equal(full.latents[0, 1], full.latents[2, 1])
    assert full.unet_evals == 4 and full.images is None


# ----------------------------------------------------------------------------------------------------
# DDPO's inner-epoch permutation (§2.2 item 6) and §6.5 item 8's accumulation
# ----------------------------------------------------------------------------------------------------

def _fake_trajectories(n=6, steps=5) -> core.Trajectories:
    g = torch.Generator().manual_seed(0)
    return core.Trajectories(
        prompts=[f"p{i}" for i in range(n)], prompt_embeds=torch.randn(n, 2, 3, generator=g),
        negative_embeds=torch.zeros(n, 2, 3), timesteps=torch.arange(steps).flip(0).repeat(n, 1) * 100 + 1,
        latents=torch.randn(n, steps + 1, 1, 2, 2, generator=g), log_probs=torch.randn(n, steps, generator=g),
        images=None, unet_evals=steps, latent_evals=n * steps)


def test_inner_epoch_shuffle_permutes_each_sample_consistently():
    traj = _fake_trajectories()
    tr = core.make_transitions(traj, torch.arange(6.0))
    out = core.shuffle_for_inner_epoch(tr, torch.Generator().manual_seed(0))
    again = core.shuffle_for_inner_epoch(tr, torch.Generator().manual_seed(0))
    assert torch.equal(out.timesteps, again.timesteps) and torch.equal(out.latents, again.latents)
    perms = set()
    for i in range(len(out)):
        src = int(out.advantages[i])                                         # advantage = original row
        assert torch.equal(out.prompt_embeds[i], tr.prompt_embeds[src])
        order = [(tr.timesteps[src] == t).nonzero().item() for t in out.timesteps[i]]
        assert sorted(order) == list(range(5))
        perms.add(tuple(order))
        for pos, j in enumerate(order):
            assert torch.equal(out.latents[i, pos], traj.latents[src, j])
            assert torch.equal(out.next_latents[i, pos], traj.latents[src, j + 1])
            assert out.log_probs[i, pos] == traj.log_probs[src, j]
    assert len(perms) > 1                                                    # independent per sample
    p = core.timestep_permutations(4, 7, torch.Generator().manual_seed(1))
    assert p.shape == (4, 7) and all(sorted(row.tolist()) == list(range(7)) for row in p)
    sub = traj.index(torch.tensor([4, 1]))
    assert sub.prompts == ["p4", "p1"] and torch.equal(sub.latents, traj.latents[[4, 1]])
    assert torch.equal(core.permute_timesteps(tr, torch.Generator().manual_seed(3)).timesteps.sort(1).values,
                       tr.timesteps.sort(1).values)
    assert [len(b) for b in tr.minibatches(4)] == [4, 2] and [len(b) for b in tr.minibatches(4, drop_last=True)] == [4]


def test_accumulation_one_optimizer_step_per_group():
    assert core.accumulation_schedule(8, 4) == [False, False, False, True] * 2
    assert [i for i, s in enumerate(core.accumulation_schedule(10, 4)) if s] == [3, 7]     # remainder dropped
    assert all(core.accumulation_schedule(3, 1))
    # DDPO: 8 samples, train batch 2, grad_accum 2, T = 3 -> group 2*3; steps only at the end of a group
    acc, steps_at = core.GradAccumulation(2 * 3), []
    for i in range(8 // 2):
        for j in range(3):
            if acc.micro_step():
                steps_at.append((i, j))
    assert steps_at == [(1, 2), (3, 2)]
    # the counter runs on across epochs (accelerate): 5 + 5 micro-steps with group 4 -> steps after 4 and 8
    acc = core.GradAccumulation(4)
    flags = [acc.micro_step() for _ in range(5)]
    resumed = core.GradAccumulation(1)
    resumed.load_state_dict(acc.state_dict())
    assert flags + [resumed.micro_step() for _ in range(5)] == [False] * 3 + [True] + [False] * 3 + [True] + [False] * 2
    b = core.Budget(sampling_unet_evals=1, training_unet_evals=2, reward_queries=3, optimizer_steps=4)
    c = core.Budget()
    c.load_state_dict(b.state_dict())
    assert c == b and b.as_metrics()["budget/trained_timesteps"] == 2.0 and b.as_metrics()["budget/unet_evals"] == 3.0
    # a checkpoint from before sampling and training evaluations were counted apart
    old = core.Budget()
    old.load_state_dict({"unet_evals": 10, "reward_queries": 3, "trained_timesteps": 4, "optimizer_steps": 1})
    assert (old.sampling_unet_evals, old.training_unet_evals, old.unet_evals) == (6, 4, 10)


# ----------------------------------------------------------------------------------------------------
# suites/t2i/sd.py: the paper-size path on a tiny random SD folder
# ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return sd.build_tiny_sd_folder(tmp_path_factory.mktemp("tiny-sd") / "sd", seed=0)


def test_sd_missing_or_incomplete_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as missing:
        sd.load_sd_model(tmp_path / "sdv1.4")
    message = str(missing.value)
    assert "\n" not in message and "CompVis/stable-diffusion-v1-4" in message and str(tmp_path / "sdv1.4") in message
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "model_index.json").write_text("{}")
    with pytest.raises(UserError, match=r"not a diffusers Stable Diffusion folder \(missing unet/config.json"):
        sd.load_sd_model(tmp_path / "partial")


def test_sd_model_samples_like_the_diffusers_pipeline(sd_folder):
    model = sd.load_sd_model(sd_folder)
    assert isinstance(model.scheduler, DDIMScheduler) and model.scheduler.config.clip_sample is False
    assert model.latent_shape == (4, 8, 8) and set(model.hashes) >= {"unet/diffusion_pytorch_model.safetensors"}
    embeds = model.encode_prompts(["a cat", ""])
    assert embeds.shape == (2, 77, 32) and embeds.dtype == torch.float32
    prompts = ["a cat riding a bike", "a dog"]
    traj = core.sample_trajectories(model, prompts, 4, 5.0, 1.0, generator=0)
    assert traj.images.shape == (2, 3, 16, 16) and traj.images.min() >= 0 and traj.images.max() <= 1
    pipe = model.extras["pipeline"]
    ref = pipe(prompts, num_inference_steps=4, guidance_scale=5.0, eta=1.0,
               generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(traj.images, ref, rtol=1e-5, atol=1e-5)


def test_sd_lora_saved_in_diffusers_format_reloads_into_a_fresh_pipeline(sd_folder, tmp_path):
    from diffusers import StableDiffusionPipeline

    model = sd.load_sd_model(sd_folder, hash_weights=False)
    core.add_lora(model.unet, seed=0)
    with torch.no_grad():                                       # as if trained
        for p in core.lora_parameters(model.unet):
            p.add_(0.1 * torch.randn_like(p))
    sd.save_lora_diffusers(model, tmp_path / "lora")
    fresh = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None, requires_safety_checker=False,
                                                    local_files_only=True)
    base_unet = copy.deepcopy(fresh.unet)
    fresh.load_lora_weights(tmp_path / "lora")
    g = torch.Generator().manual_seed(5)
    x, t, c = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([951, 1]), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        tuned = model.unet(x, t, encoder_hidden_states=c).sample
        torch.testing.assert_close(fresh.unet(x, t, encoder_hidden_states=c).sample, tuned, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(base_unet(x, t, encoder_hidden_states=c).sample, tuned, atol=1e-3)
    reloaded = sd.model_from_pipeline(fresh)
    a = core.sample_trajectories(model, ["a cat"], 3, 5.0, 1.0, generator=1)
    b = core.sample_trajectories(reloaded, ["a cat"], 3, 5.0, 1.0, generator=1)
    torch.testing.assert_close(b.images, a.images, rtol=1e-5, atol=1e-5)
