"""The shared math of DDPO and B²-DiffuRL, in one place (research/t2i.md §1-§3).

Read top to bottom:
  0. Budget                 what a run has spent (sampling and training UNet evaluations apart, reward
                            queries, optimizer steps)
  1. ddim_step_with_logprob the DDIM step x_t -> x_{t-1} with log p(x_{t-1} | x_t, c)   (t2i.md §1)
  2. predict_noise          one UNet pass with classifier-free guidance (ddpo-pytorch convention)
  3. sampling               denoise_steps -> sample_trajectories / sample_branched_trajectories (§3.4)
  4. training data          Transitions: stored (x_t, t, x_{t-1}, old log p), sub-intervals, the
                            per-sample timestep permutations of DDPO's inner epochs (§2.2 item 6)
  5. log_prob_of_step       the training-time recomputation of log p, with gradients (§1, last bullet)
  6. ppo_clip_loss          DDPO's PPO-clip objective and its logged statistics (§2.2 item 7)
  7. advantages             PerPromptStatTracker (§2.2 item 5), the plain batch normaliser, B²'s
                            HistoryZScore (§3.5), rewards scored in chunks
  8. gradient accumulation  one optimizer step per group of micro-steps (§2.2 items 1 and 7, §3.6), and
                            PPOTrainer: PPO-clip over Transitions with it (the training of both methods)
  9. LoRA                   PEFT LoRA on the UNet's attention projections, zero at init (§1, LoRA), and
                            its export in diffusers format
 10. a run's plumbing       load_policy, adamw, embed_prompts_once, evaluate_and_save, training_state /
                            restore_training_state

Conventions
- A model is seen only through `suites.t2i.model.T2IModel` (unet, scheduler, encode_prompts, decode,
  latent_shape).  Latents, embeddings and log-probs are float32; a UNet in another dtype gets its
  inputs cast and its output cast back to float32 (the reference runs the DDIM math in the UNet's
  fp16; on CPU everything is fp32 and this makes no difference).
- Trajectories store `latents[:, j]` = the sample BEFORE step j and `latents[:, j + 1]` = after it,
  for j = 0..T-1 (ddpo-pytorch's `all_latents`); `timesteps[:, j]` and `log_probs[:, j]` belong to
  step j.  Step 0 is the noisiest (t = 951 for SD with 20 steps).
- Branch order (B²-DiffuRL `run_sample.py`, t2i.md §3.4): sampling B prompts with K branches gives
  K*B rows, row `k*B + j` = branch k of prompt j; concatenating batches b = 0, 1, ... in order gives
  the reference's flattened index `(b*K + k)*B + j`.  `branch_group_indices` lists the rows of each
  group (the K continuations of one shared prefix).
- Budget units.  `Trajectories.unet_evals` counts UNet evaluations *of the prompt batch*: one is
  one guided noise prediction for all B prompts at one step, whether CFG runs it as one UNet pass over
  the doubled batch [uncond, text] (guidance > 1) or as a plain pass (guidance <= 1).  So one batch
  costs T plainly and (T - s) + K*s with branches, the count in t2i.md §3.4.  The K branches are run
  as one UNet pass over K*B rows, which still counts K evaluations.  `Budget.sampling_unet_evals`
  counts the same thing per latent (batch size x evaluations), the unit in which algorithms with
  different batch sizes and branch counts are compared; `Budget.training_unet_evals` counts the
  per-sample log-prob recomputations with gradients (one more UNet noise prediction each, plus a
  backward); `Budget.unet_evals` is their sum.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "Budget",
    "previous_timestep", "ddim_step_with_logprob",
    "predict_noise",
    "Trajectories", "denoise_steps", "sample_trajectories", "sample_branched_trajectories",
    "branch_group_indices",
    "Transitions", "make_transitions", "timestep_permutations", "permute_timesteps", "shuffle_for_inner_epoch",
    "log_prob_of_step",
    "ppo_clip_loss",
    "PerPromptStatTracker", "normalize_batch", "HistoryZScore", "score_in_chunks",
    "GradAccumulation", "accumulation_schedule", "PPOTrainer",
    "LORA_TARGET_MODULES", "add_lora", "lora_parameters", "lora_state_dict", "load_lora_state_dict",
    "lora_safetensors_bytes", "lora_diffusers_bytes",
    "load_policy", "adamw", "embed_prompts_once", "evaluate_and_save", "training_state", "restore_training_state",
]

_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))


# ----------------------------------------------------------------------------------------------------
# 0. Budget: what a run has spent, so that algorithms are compared at equal cost
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Budget:
    """Counters that sampling (`sample_*`, via `budget=`) and training (`log_prob_of_step`) increment.

    sampling_unet_evals: noise predictions of single latents while sampling, without gradients (a CFG
                         pair counts as one; batch size x `Trajectories.unet_evals`).
    training_unet_evals: (trajectory, timestep) log-probs recomputed with gradients during training: one
                         noise prediction plus its backward each, about 2.7x a sampling evaluation on CPU
                         (results/perf/t2i.json), so the two are counted apart.
    reward_queries:      images scored by the reward model (incremented by the algorithm).
    optimizer_steps:     optimizer updates (incremented by the algorithm).
    `unet_evals` (both kinds) and `trained_timesteps` (= training_unet_evals, DDPO's name) are derived.
    """
    sampling_unet_evals: int = 0
    training_unet_evals: int = 0
    reward_queries: int = 0
    optimizer_steps: int = 0

    @property
    def unet_evals(self) -> int:
        return self.sampling_unet_evals + self.training_unet_evals

    @property
    def trained_timesteps(self) -> int:
        return self.training_unet_evals

    def state_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def as_metrics(self) -> dict[str, float]:
        """The counters as scalars to log, named budget/<name> (the derived totals included)."""
        names = ("unet_evals", "reward_queries", "trained_timesteps", "optimizer_steps", "sampling_unet_evals",
                 "training_unet_evals")
        return {f"budget/{name}": float(getattr(self, name)) for name in names}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "sampling_unet_evals" not in state:      # a checkpoint written before the two kinds were apart
            state = {"sampling_unet_evals": state["unet_evals"] - state["trained_timesteps"],
                     "training_unet_evals": state["trained_timesteps"], "reward_queries": state["reward_queries"],
                     "optimizer_steps": state["optimizer_steps"]}
        for field in dataclasses.fields(self):
            setattr(self, field.name, int(state[field.name]))


# ----------------------------------------------------------------------------------------------------
# 1. The DDIM step with log-prob (t2i.md §1; ddpo-pytorch ddim_with_logprob.py L39-192)
# ----------------------------------------------------------------------------------------------------

def previous_timestep(scheduler, timestep: torch.Tensor) -> torch.Tensor:
    """prev_t = clamp(t - num_train_timesteps // num_inference_steps, 0, num_train_timesteps - 1).

    The clamp makes the last step use alphas_cumprod[0] (0.99915 for SD), never `final_alpha_cumprod`
    (the reference's `>= 0 else final_alpha_cumprod` branch is dead after it)."""
    n_train = scheduler.config.num_train_timesteps
    return (timestep - n_train // scheduler.num_inference_steps).clamp(0, n_train - 1)


def _per_sample(values: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[index] (gathered on CPU, as the reference), shaped [B, 1, 1, ...] to broadcast with `like`."""
    out = values.gather(0, index).to(like.device)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def ddim_step_with_logprob(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor,
                           eta: float = 1.0, prev_sample: torch.Tensor | None = None,
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step x_t -> x_{t-1} and log p(x_{t-1} | x_t) per sample (t2i.md §1).

    model_output: the UNet output after CFG ([B, C, H, W]), read per `scheduler.config.prediction_type`
    ("epsilon", "v_prediction" or "sample").  timestep: an int or a [B] / [] integer tensor.
    prev_sample: None while sampling (x_{t-1} is drawn with `generator`); the stored x_{t-1} while
    training, which is then only scored.  Returns (x_{t-1}, log_prob [B]), log_prob being the Gaussian
    log density *averaged* (not summed) over all non-batch dimensions; `prev_sample.detach()` enters
    it, so gradients flow only through the mean.  eta must be > 0 for a finite log-prob (std = eta*σ_t).
    `scheduler.set_timesteps(T)` must have been called (prev_t depends on T).
    """
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(num_steps) before ddim_step_with_logprob")
    config = scheduler.config
    t = torch.as_tensor(timestep).reshape(-1).to("cpu", torch.long)
    if t.numel() == 1:
        t = t.expand(sample.shape[0])
    prev_t = previous_timestep(scheduler, t)

    alpha_t = _per_sample(scheduler.alphas_cumprod, t, sample)             # ᾱ_t
    alpha_prev = _per_sample(scheduler.alphas_cumprod, prev_t, sample)     # ᾱ_prev
    beta_t = 1 - alpha_t

    # x̂0 and ε̂ from the model output (DDIM eq. 12).  The v branch divides by nothing, so it also works
    # at ᾱ_t = 0 (the first step of a zero-terminal-SNR schedule with trailing spacing).
    kind = config.prediction_type
    if kind == "epsilon":
        pred_x0 = (sample - beta_t.sqrt() * model_output) / alpha_t.sqrt()
        pred_eps = model_output
    elif kind == "v_prediction":
        pred_x0 = alpha_t.sqrt() * sample - beta_t.sqrt() * model_output
        pred_eps = alpha_t.sqrt() * model_output + beta_t.sqrt() * sample
    elif kind == "sample":
        pred_x0 = model_output
        pred_eps = (sample - alpha_t.sqrt() * pred_x0) / beta_t.sqrt()
    else:
        raise ValueError(f"prediction_type {kind!r} is not one of 'epsilon', 'v_prediction', 'sample'")

    # clip / threshold x̂0 only where the scheduler config asks (SD: clip_sample=False, no thresholding)
    if config.thresholding:
        pred_x0 = scheduler._threshold_sample(pred_x0)
    elif config.clip_sample:
        pred_x0 = pred_x0.clamp(-config.clip_sample_range, config.clip_sample_range)

    # σ_t² = (1-ᾱ_prev)/(1-ᾱ_t) (1 - ᾱ_t/ᾱ_prev)   (DDIM eq. 16);  std = eta σ_t
    variance = (1 - alpha_prev) / beta_t * (1 - alpha_t / alpha_prev)
    std = eta * variance.sqrt()
    # 1 - ᾱ_prev - std² is >= 0 in exact arithmetic and exactly 0 at ᾱ_t = 0 with eta = 1.  std² is
    # taken as eta² σ_t² (not (eta σ_t)², which rounds to ~6e-8 there in fp32 and so adds ~2.4e-4 ε̂ to
    # the mean); the clamp turns any rounding-negative value into 0 instead of NaN.
    direction = (1 - alpha_prev - eta ** 2 * variance).clamp(min=0).sqrt() * pred_eps
    mean = alpha_prev.sqrt() * pred_x0 + direction

    if prev_sample is None:
        from diffusers.utils.torch_utils import randn_tensor      # the pipeline's own noise helper
        noise = randn_tensor(model_output.shape, generator=generator, device=model_output.device,
                             dtype=model_output.dtype)
        prev_sample = mean + std * noise

    log_prob = -((prev_sample.detach() - mean) ** 2) / (2 * std ** 2) - torch.log(std) - _LOG_SQRT_2PI
    log_prob = log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
    return prev_sample.type(sample.dtype), log_prob


# ----------------------------------------------------------------------------------------------------
# 2. One noise prediction with classifier-free guidance (ddpo-pytorch pipeline_with_logprob.py)
# ----------------------------------------------------------------------------------------------------

def compute_dtype(unet) -> torch.dtype:
    """The dtype of the UNet's first floating parameter, which is what diffusers' `unet.dtype` returns when
    no layerwise-casting hook is attached (none ever is here).  `unet.dtype` first walks all ~900 modules
    looking for such hooks: 2.3-4.9 ms a call on the 16 x 16 shapes UNet (AVX2 core), 3-6% of a cpu-grid run
    at one call per UNet pass; this takes microseconds (`make perf SUITE=t2i`, bench_process).  A module
    without floating parameters (a test's exact denoiser) gives its own `dtype` attribute."""
    first = next((p for p in unet.parameters() if p.is_floating_point()), None)
    return first.dtype if first is not None else unet.dtype


def _unet(unet, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, max_rows: int | None) -> torch.Tensor:
    """unet(x, t, cond).sample in the UNet's dtype, returned as x.dtype; optionally in row chunks
    (chunking changes nothing mathematically, but float results can depend on the batch size)."""
    dtype = compute_dtype(unet)
    rows = x.shape[0] if not max_rows else max_rows
    outs = [unet(x[i:i + rows].to(dtype), t[i:i + rows], encoder_hidden_states=cond[i:i + rows].to(dtype)).sample
            for i in range(0, x.shape[0], rows)]
    return torch.cat(outs).to(x.dtype)


def predict_noise(unet, latents: torch.Tensor, timesteps, prompt_embeds: torch.Tensor,
                  negative_embeds: torch.Tensor, guidance_scale: float, max_rows: int | None = None) -> torch.Tensor:
    """The guided model output for a batch of latents [B, C, H, W] at per-sample timesteps ([B] or scalar).

    guidance_scale > 1: one UNet pass over the doubled batch [uncond; text] (negative embeddings first),
    ε̂ = ε_u + w (ε_c - ε_u).  guidance_scale <= 1: a single pass with the prompt embeddings (the
    pipeline's `do_classifier_free_guidance = guidance_scale > 1`).  The timestep is always passed to
    the UNet as a [rows] vector, at sampling and at training alike.
    """
    batch = latents.shape[0]
    t = torch.as_tensor(timesteps, device=latents.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if guidance_scale <= 1.0:
        return _unet(unet, latents, t, prompt_embeds, max_rows)
    negative_embeds = negative_embeds.expand(batch, -1, -1) if negative_embeds.shape[0] == 1 else negative_embeds
    out = _unet(unet, torch.cat([latents, latents]), torch.cat([t, t]),
                torch.cat([negative_embeds, prompt_embeds]), max_rows)
    uncond, text = out.chunk(2)
    return uncond + guidance_scale * (text - uncond)


# ----------------------------------------------------------------------------------------------------
# 3. Sampling trajectories, plainly (DDPO) and with branches (B²-DiffuRL §3.4)
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Trajectories:
    """Sampled denoising trajectories; N rows (N = B plainly, K*B with K branches; order: module doc).

    prompts:         the N prompts.
    prompt_embeds:   [N, L, D] text embeddings.
    negative_embeds: [N, L, D] the negative (empty-prompt) embeddings used by CFG.
    timesteps:       [N, T] long, scheduler timesteps of steps 0..T-1 (noisiest first).
    latents:         [N, T+1, C, H, W]; index j = sample before step j, j+1 = after it.
    log_probs:       [N, T] log p of each sampled step (under the sampling policy).
    images:          [N, 3, H, W] in [0, 1] (`model.decode` of the final latents), or None.
    unet_evals:      UNet evaluations of the prompt batch(es) (module doc): T per plain batch,
                     (T - s) + K*s per branched batch; summed over concatenated batches.
    latent_evals:    the same per latent (sum over batches of B x unet_evals); Budget's unit.
    branch_start:    step index T - s at which the K branches split (latents 0..T-s are shared).
    num_branches:    K (1 for plain sampling).
    """
    prompts: list[str]
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor
    timesteps: torch.Tensor
    latents: torch.Tensor
    log_probs: torch.Tensor
    images: torch.Tensor | None
    unet_evals: int
    latent_evals: int
    branch_start: int = 0
    num_branches: int = 1

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[1]

    @property
    def next_latents(self) -> torch.Tensor:
        """[N, T, C, H, W]: the sample after each step (ddpo's `next_latents`)."""
        return self.latents[:, 1:]

    def index(self, rows) -> "Trajectories":
        """The trajectories `rows` (a slice, or a long tensor); counters are kept as they are."""
        picked = torch.arange(len(self))[rows].tolist()
        return dataclasses.replace(
            self, prompts=[self.prompts[i] for i in picked],
            **{name: getattr(self, name)[rows] for name in
               ("prompt_embeds", "negative_embeds", "timesteps", "latents", "log_probs")},
            images=None if self.images is None else self.images[rows])

    @classmethod
    def cat(cls, parts: Sequence["Trajectories"]) -> "Trajectories":
        """Concatenate batches in order (batch b's rows follow batch b-1's)."""
        first = parts[0]
        if any((p.branch_start, p.num_branches) != (first.branch_start, first.num_branches) for p in parts):
            raise ValueError("cannot concatenate trajectories with different branch settings")
        images = None if any(p.images is None for p in parts) else torch.cat([p.images for p in parts])
        return cls(
            prompts=[q for p in parts for q in p.prompts],
            prompt_embeds=torch.cat([p.prompt_embeds for p in parts]),
            negative_embeds=torch.cat([p.negative_embeds for p in parts]),
            timesteps=torch.cat([p.timesteps for p in parts]),
            latents=torch.cat([p.latents for p in parts]),
            log_probs=torch.cat([p.log_probs for p in parts]),
            images=images,
            unet_evals=sum(p.unet_evals for p in parts),
            latent_evals=sum(p.latent_evals for p in parts),
            branch_start=first.branch_start,
            num_branches=first.num_branches,
        )


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """A seed becomes a fresh CPU generator; a generator is used as is; None means torch's global RNG."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(int(generator))


@torch.no_grad()
def denoise_steps(model, latents: torch.Tensor, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor,
                  timesteps: torch.Tensor, guidance_scale: float, eta: float = 1.0,
                  generator: torch.Generator | None = None,
                  max_rows: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run the DDIM steps `timesteps` (a contiguous slice of `scheduler.timesteps`, already set with
    `set_timesteps(T)`) from `latents` [B, C, H, W].

    Returns (all_latents, log_probs): len(timesteps) + 1 latents (all_latents[0] is the input, each
    next one the sample after a step) and len(timesteps) log-probs [B].  Noise is drawn once per step
    for the whole batch, from `generator`.
    """
    all_latents, log_probs = [latents], []
    for t in timesteps:
        t_rows = torch.full((latents.shape[0],), int(t), dtype=torch.long, device=latents.device)
        noise_pred = predict_noise(model.unet, latents, t_rows, prompt_embeds, negative_embeds,
                                   guidance_scale, max_rows)
        latents, log_prob = ddim_step_with_logprob(model.scheduler, noise_pred, t_rows, latents, eta=eta,
                                                   generator=generator)
        all_latents.append(latents)
        log_probs.append(log_prob)
    return all_latents, log_probs


def _stack_steps(values: list[torch.Tensor], batch: int, like: torch.Tensor) -> torch.Tensor:
    """Stack per-step tensors along dim 1 ([B, n, ...]); an empty list gives [B, 0, ...]."""
    if values:
        return torch.stack(values, dim=1)
    return like.new_zeros((batch, 0, *like.shape[1:]))


@torch.no_grad()
def sample_branched_trajectories(model, prompts: Sequence[str], num_steps: int, branch_steps: int,
                                 num_branches: int, guidance_scale: float = 5.0, eta: float = 1.0,
                                 generator: torch.Generator | int | None = None, *, negative_prompt: str = "",
                                 budget: Budget | None = None, max_rows: int | None = None,
                                 decode: bool = True) -> Trajectories:
    """B²-DiffuRL's branch-based sampling of one batch of B prompts (t2i.md §3.4).

    Runs the first T - s steps once for the batch (s = branch_steps), replicates the shared latent
    x_{T-s} into K = num_branches branches and runs the last s steps of each branch with its own
    noise (the K branches as one UNet pass over K*B rows).  Returns K*B trajectories, row k*B + j =
    branch k of prompt j; rows of one group are bit-identical in latents 0..T-s (and in the first
    T - s log-probs) and differ afterwards.  Costs (T - s) + K*s UNet evaluations of the batch.

    Randomness, all from `generator` (a seed, a torch.Generator, or None for torch's global RNG), in
    this order: x_T [B], then one noise draw [B] per shared step, then one [K*B] per branched step.
    """
    if not 1 <= branch_steps <= num_steps:
        raise ValueError(f"branch_steps must be in [1, num_steps={num_steps}], got {branch_steps}")
    if num_branches < 1:
        raise ValueError(f"num_branches must be >= 1, got {num_branches}")
    prompts = list(prompts)
    batch, k = len(prompts), num_branches
    unet, scheduler = model.unet, model.scheduler
    device = unet.device
    generator = _as_generator(generator)

    embeds = model.encode_prompts(prompts).to(device, torch.float32)
    negative = model.encode_prompts([negative_prompt]).to(device, torch.float32).repeat(batch, 1, 1)

    scheduler.set_timesteps(num_steps)
    timesteps = scheduler.timesteps.to("cpu", torch.long)
    split = num_steps - branch_steps

    from diffusers.utils.torch_utils import randn_tensor
    x_T = randn_tensor((batch, *model.latent_shape), generator=generator, device=device,
                       dtype=torch.float32) * scheduler.init_noise_sigma

    # shared prefix: steps 0 .. T-s-1, once per batch
    prefix_latents, prefix_log_probs = denoise_steps(model, x_T, embeds, negative, timesteps[:split],
                                                     guidance_scale, eta, generator, max_rows)
    # branches: K copies of x_{T-s}, row k*B + j, each continued with its own noise for steps T-s .. T-1
    branch_latents, branch_log_probs = denoise_steps(
        model, prefix_latents[-1].repeat(k, 1, 1, 1), embeds.repeat(k, 1, 1), negative.repeat(k, 1, 1),
        timesteps[split:], guidance_scale, eta, generator, max_rows)

    latents = torch.cat([torch.stack(prefix_latents, dim=1).repeat(k, 1, 1, 1, 1),
                         torch.stack(branch_latents[1:], dim=1)], dim=1)
    log_probs = torch.cat([_stack_steps(prefix_log_probs, batch, x_T[:, 0, 0, 0]).repeat(k, 1),
                           torch.stack(branch_log_probs, dim=1)], dim=1)

    images = None
    if decode:
        final = latents[:, -1]
        rows = final.shape[0] if not max_rows else max_rows
        images = torch.cat([model.decode(final[i:i + rows]) for i in range(0, final.shape[0], rows)]).float()

    unet_evals = split + k * branch_steps
    if budget is not None:
        budget.sampling_unet_evals += batch * unet_evals
    return Trajectories(
        prompts=prompts * k,
        prompt_embeds=embeds.repeat(k, 1, 1),
        negative_embeds=negative.repeat(k, 1, 1),
        timesteps=timesteps.to(device).repeat(k * batch, 1),
        latents=latents,
        log_probs=log_probs,
        images=images,
        unet_evals=unet_evals,
        latent_evals=batch * unet_evals,
        branch_start=split,
        num_branches=k,
    )


def sample_trajectories(model, prompts: Sequence[str], num_steps: int, guidance_scale: float = 5.0,
                        eta: float = 1.0, generator: torch.Generator | int | None = None, *,
                        negative_prompt: str = "", budget: Budget | None = None, max_rows: int | None = None,
                        decode: bool = True) -> Trajectories:
    """DDPO's sampling (ddpo-pytorch `pipeline_with_logprob`): T DDIM steps with CFG for B prompts,
    storing every latent and log-prob.  The same as one branch that splits at step 0
    (`sample_branched_trajectories(..., branch_steps=T, num_branches=1)`, same random draws)."""
    return sample_branched_trajectories(model, prompts, num_steps, num_steps, 1, guidance_scale, eta, generator,
                                        negative_prompt=negative_prompt, budget=budget, max_rows=max_rows,
                                        decode=decode)


def branch_group_indices(num_batches: int, num_branches: int, batch_size: int) -> torch.Tensor:
    """[num_batches * batch_size, K] row indices of each branch group in concatenated branched batches:
    group (b, j) = rows (b*K + k)*B + j for k = 0..K-1 (groups ordered by batch, then prompt slot)."""
    b = torch.arange(num_batches).repeat_interleave(batch_size)
    j = torch.arange(batch_size).repeat(num_batches)
    k = torch.arange(num_branches)
    return (b[:, None] * num_branches + k[None, :]) * batch_size + j[:, None]


# ----------------------------------------------------------------------------------------------------
# 4. Training data: stored transitions, sub-intervals, per-sample timestep permutations
# ----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Transitions:
    """What training reads: per trajectory, S stored steps (x_t, t, x_{t-1}, old log p) and one advantage.

    prompt_embeds, negative_embeds: [N, L, D];  timesteps: [N, S] long;  latents, next_latents:
    [N, S, C, H, W] (before / after each step);  log_probs: [N, S] (old, from sampling);
    advantages: [N] float32 (shared by all steps of a trajectory);  weights: None, or [N] float32
    multiplying the clipped advantage (B²-DiffuRL's β₊ / β₋, `ppo_clip_loss`).
    """
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor
    timesteps: torch.Tensor
    latents: torch.Tensor
    next_latents: torch.Tensor
    log_probs: torch.Tensor
    advantages: torch.Tensor
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.timesteps.shape[0]

    @property
    def num_steps(self) -> int:
        return self.timesteps.shape[1]

    def take(self, index) -> "Transitions":
        """The trajectories `index` (a slice, or a long tensor of rows)."""
        return Transitions(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                              for f in dataclasses.fields(self)})

    def permute_steps(self, perms: torch.Tensor) -> "Transitions":
        """Reorder the steps of each trajectory: row i gets steps perms[i] ([N, S] long)."""
        rows = torch.arange(len(self))[:, None]
        per_step = {name: getattr(self, name)[rows, perms] for name in
                    ("timesteps", "latents", "next_latents", "log_probs")}
        return dataclasses.replace(self, **per_step)

    def minibatches(self, batch_size: int, drop_last: bool = False) -> Iterator["Transitions"]:
        """Consecutive minibatches of `batch_size` trajectories (B²-DiffuRL drops an incomplete last one)."""
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        for start in range(0, stop, batch_size):
            yield self.take(slice(start, start + batch_size))


def make_transitions(traj: Trajectories, advantages, start: int = 0, stop: int | None = None,
                     weights=None) -> Transitions:
    """The transitions of steps [start, stop) of every trajectory (default: all T steps, DDPO).
    B²-DiffuRL trains only the branched interval: start = T - s, stop = T (t2i.md §3.5, §3.6), with
    per-trajectory `weights` (β₊ / β₋) on the clipped advantages."""
    stop = traj.num_steps if stop is None else stop
    if not 0 <= start < stop <= traj.num_steps:
        raise ValueError(f"need 0 <= start < stop <= {traj.num_steps}, got [{start}, {stop})")
    adv = torch.as_tensor(np.asarray(advantages, dtype=np.float32)).to(traj.latents.device).reshape(-1)
    if adv.shape[0] != len(traj):
        raise ValueError(f"{adv.shape[0]} advantages for {len(traj)} trajectories")
    return Transitions(
        prompt_embeds=traj.prompt_embeds,
        negative_embeds=traj.negative_embeds,
        timesteps=traj.timesteps[:, start:stop],
        latents=traj.latents[:, start:stop],
        next_latents=traj.latents[:, start + 1:stop + 1],
        log_probs=traj.log_probs[:, start:stop],
        advantages=adv,
        weights=None if weights is None else torch.as_tensor(np.asarray(weights, dtype=np.float32)).to(adv.device),
    )


def timestep_permutations(num_samples: int, num_steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """[num_samples, num_steps] long: one independent torch.randperm(num_steps) per sample (ddpo L463-470)."""
    if num_samples == 0:
        return torch.zeros((0, num_steps), dtype=torch.long)
    return torch.stack([torch.randperm(num_steps, generator=generator) for _ in range(num_samples)])


def permute_timesteps(transitions: Transitions, generator: torch.Generator | None) -> Transitions:
    """Each trajectory's steps in its own random order (timesteps, latents, next_latents, log_probs
    permuted together by one torch.randperm(S) per trajectory)."""
    return transitions.permute_steps(timestep_permutations(len(transitions), transitions.num_steps, generator))


def shuffle_for_inner_epoch(transitions: Transitions, generator: torch.Generator | None) -> Transitions:
    """DDPO's start of an inner epoch (§2.2 item 6): shuffle the trajectories, then permute the step
    order of each one independently.  Training then visits the first `int(S * timestep_fraction)`
    steps of each permuted order (a random subset when the fraction is < 1)."""
    order = torch.randperm(len(transitions), generator=generator)
    return permute_timesteps(transitions.take(order), generator)


# ----------------------------------------------------------------------------------------------------
# 5. Training-time recomputation of log p (ddpo train.py L493-536; B² run_train.py L284-325)
# ----------------------------------------------------------------------------------------------------

def log_prob_of_step(model, latents: torch.Tensor, timesteps: torch.Tensor, next_latents: torch.Tensor,
                     prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor, guidance_scale: float,
                     eta: float = 1.0, train_cfg: bool = True, *, num_steps: int | None = None,
                     budget: Budget | None = None, max_rows: int | None = None) -> torch.Tensor:
    """log p_θ(x_{t-1} | x_t, c) [B] of stored transitions (one step column j of a minibatch), with gradients.

    With train_cfg (ddpo's `train.cfg`, default True) the UNet runs once on the doubled batch
    [negative; prompt] and guides with `guidance_scale`, as at sampling; without it, the prompt-only
    prediction is scored.  Deviation, named: CFG is applied only when guidance_scale > 1, the same rule
    as sampling, so that the recomputed log-prob of an untrained model equals the sampled one exactly
    (ddpo applies the CFG formula whenever train.cfg, which at w <= 1 differs from its sampler; every
    reference config uses w = 5).  num_steps: the T the trajectories were sampled with (resets the
    scheduler if it was set to another T; prev_t depends on it).
    """
    scheduler = model.scheduler
    if num_steps is not None and scheduler.num_inference_steps != num_steps:
        scheduler.set_timesteps(num_steps)
    guidance = guidance_scale if train_cfg else 1.0
    noise_pred = predict_noise(model.unet, latents, timesteps, prompt_embeds, negative_embeds, guidance, max_rows)
    _, log_prob = ddim_step_with_logprob(scheduler, noise_pred, timesteps, latents, eta=eta,
                                         prev_sample=next_latents)
    if budget is not None:
        budget.training_unet_evals += latents.shape[0]
    return log_prob


# ----------------------------------------------------------------------------------------------------
# 6. PPO-clip (DDPO_IS as implemented; ddpo train.py L537-577)
# ----------------------------------------------------------------------------------------------------

def ppo_clip_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                  clip_range: float, adv_clip_max: float,
                  weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """loss = mean( max(-A ρ, -A clip(ρ, 1 - ε, 1 + ε)) ),  ρ = exp(log p - old log p),  A = clamp(adv, ±max).

    weights (optional, [B]): multiplies A after the clamp - B²-DiffuRL's β₊ / β₋ (A = clamp(z, ±5) β).
    Returns (loss, info) with detached scalars: approx_kl = ½ mean((log p - old)²),
    clipfrac = mean(|ρ - 1| > ε), ratio = mean(ρ), abs_ratio_minus_1 = mean |ρ - 1| (t2i.md §3.7 expects
    it far below B²'s ε = 0.1).  No KL term and no value function (§2.1).
    """
    adv = advantages.clamp(-adv_clip_max, adv_clip_max)
    if weights is not None:
        adv = adv * weights
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        info = {
            "approx_kl": 0.5 * ((log_prob - old_log_prob) ** 2).mean(),
            "clipfrac": ((ratio - 1.0).abs() > clip_range).float().mean(),
            "ratio": ratio.mean(),
            "abs_ratio_minus_1": (ratio - 1.0).abs().mean(),
        }
    return loss, info


# ----------------------------------------------------------------------------------------------------
# 7. Advantages (ddpo_pytorch/stat_tracking.py L5-30; train.py L413-442)
# ----------------------------------------------------------------------------------------------------

class PerPromptStatTracker:
    """Per-prompt reward normalisation with a rolling buffer (DDPO's `PerPromptStatTracker`).

    update(prompts, rewards): for each prompt of the batch, its rewards are appended to its buffer
    (a deque of `buffer_size`) FIRST; then, if the buffer holds fewer than `min_count` values, the
    mean / std of the whole current batch (all prompts) are used, else those of the buffer;
    std = np.std (ddof=0) + 1e-6; advantage = (r - mean) / std.
    """

    def __init__(self, buffer_size: int, min_count: int):
        self.buffer_size = int(buffer_size)
        self.min_count = int(min_count)
        self.stats: dict[str, collections.deque] = {}

    def update(self, prompts: Sequence[str], rewards) -> np.ndarray:
        prompts = np.asarray(list(prompts))
        rewards = np.asarray(rewards, dtype=np.float64)
        advantages = np.empty_like(rewards)
        for prompt in np.unique(prompts):
            mask = prompts == prompt
            buffer = self.stats.setdefault(str(prompt), collections.deque(maxlen=self.buffer_size))
            buffer.extend(rewards[mask].tolist())
            if len(buffer) < self.min_count:
                mean, std = np.mean(rewards), np.std(rewards) + 1e-6
            else:
                mean, std = np.mean(buffer), np.std(buffer) + 1e-6
            advantages[mask] = (rewards[mask] - mean) / std
        return advantages

    def get_stats(self) -> dict[str, dict[str, float]]:
        return {p: {"mean": float(np.mean(b)), "std": float(np.std(b)), "count": len(b)}
                for p, b in self.stats.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"buffer_size": self.buffer_size, "min_count": self.min_count,
                "stats": {p: [float(v) for v in b] for p, b in self.stats.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer_size, self.min_count = int(state["buffer_size"]), int(state["min_count"])
        self.stats = {p: collections.deque(v, maxlen=self.buffer_size) for p, v in state["stats"].items()}


def normalize_batch(rewards) -> np.ndarray:
    """DDPO without per-prompt tracking: (r - mean) / (std + 1e-8) over the batch (np.std, ddof=0)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    return (rewards - rewards.mean()) / (rewards.std() + 1e-8)


class HistoryZScore:
    """B²-DiffuRL's per-prompt z-score over the current stage and the last H stages (run_select.py L55-95).

    update(prompts, rewards) for one stage: per prompt, its scores of this stage and of the up-to-H stored
    stages in which it appeared are pooled; z = (r - mean) / (std + 1e-8) with the UNBIASED std (torch's
    default); then this stage's scores are stored and only the last H stages kept.  H = 0: this stage only.
    Unlike DDPO's tracker there is no min_count fallback.  A prompt with a single pooled score (possible
    only without branches and history) has no std: its z is 0, where torch would give NaN.
    """

    def __init__(self, history_stages: int):
        self.history_stages = int(history_stages)
        self.history: list[dict[str, list[float]]] = []        # oldest first, one dict per stage

    def update(self, prompts: Sequence[str], rewards) -> np.ndarray:
        prompts = list(prompts)
        rewards = np.asarray(rewards, dtype=np.float64)
        current: dict[str, list[float]] = {}
        for prompt, reward in zip(prompts, rewards.tolist()):
            current.setdefault(prompt, []).append(reward)
        past = self.history[-self.history_stages:] if self.history_stages > 0 else []
        stats = {}
        for prompt, values in current.items():
            pooled = np.array([v for stage in past for v in stage.get(prompt, [])] + values)
            std = pooled.std(ddof=1) if len(pooled) > 1 else 0.0
            stats[prompt] = (pooled.mean(), std + 1e-8)
        self.history = (past + [current])[-self.history_stages:] if self.history_stages > 0 else []
        return np.array([(r - stats[p][0]) / stats[p][1] for p, r in zip(prompts, rewards.tolist())])

    def state_dict(self) -> dict[str, Any]:
        return {"history_stages": self.history_stages, "history": [dict(stage) for stage in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history_stages = int(state["history_stages"])
        self.history = [{p: [float(v) for v in values] for p, values in stage.items()} for stage in state["history"]]


def score_in_chunks(reward_fn, images: torch.Tensor, prompts: Sequence[str], chunk_size: int) -> np.ndarray:
    """reward_fn over consecutive chunks of `chunk_size` images, the last one possibly smaller (B²'s
    run_select.py scores in chunks of 8 and assumes a multiple of 8; a remainder is scored here)."""
    prompts = list(prompts)
    if len(prompts) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images for {len(prompts)} prompts")
    parts = [np.asarray(reward_fn(images[i:i + chunk_size], prompts[i:i + chunk_size]), np.float64).reshape(-1)
             for i in range(0, len(prompts), chunk_size)]
    return np.concatenate(parts) if parts else np.zeros(0)


# ----------------------------------------------------------------------------------------------------
# 8. Gradient accumulation: one optimizer step per `group` micro-steps (accelerate semantics)
# ----------------------------------------------------------------------------------------------------

class GradAccumulation:
    """Counts micro-steps (one backward each) and says when to step the optimizer.

    group = DDPO's `grad_accum * num_train_timesteps` or B²-DiffuRL's `AccStep * s`.  The counter
    runs across epochs, like accelerate's: `micro_step()` is True after micro-steps group, 2*group, ...;
    a remainder at the end of training never triggers a step (it is dropped, as in the references).
    """

    def __init__(self, group: int):
        if group < 1:
            raise ValueError(f"accumulation group must be >= 1, got {group}")
        self.group = int(group)
        self.count = 0

    def micro_step(self) -> bool:
        self.count += 1
        return self.count % self.group == 0

    def state_dict(self) -> dict[str, int]:
        return {"group": self.group, "count": self.count}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.group, self.count = int(state["group"]), int(state["count"])


def accumulation_schedule(n_micro_steps: int, group: int) -> list[bool]:
    """For micro-steps 0..n-1 of a fresh accumulator: whether an optimizer step follows each one."""
    acc = GradAccumulation(group)
    return [acc.micro_step() for _ in range(n_micro_steps)]


class PPOTrainer:
    """PPO-clip over stored `Transitions` with gradient accumulation: the training half of a DDPO epoch
    (ddpo train.py L455-593) and of a B²-DiffuRL stage (run_train.py L255-351).

    epoch(): shuffle the trajectories, permute each one's steps (`shuffle_for_inner_epoch`), then per
    minibatch and per step column j < `steps`, one micro-step: log p with gradients, the PPO-clip loss,
    backward of loss / group (accelerate divides by the accumulation count).  After every
    `accumulation.group` micro-steps (the counter runs across epochs, as accelerate's): clip the gradient
    norm, one optimizer step, zero the gradients.  `updates` gets one row per optimizer step: its
    micro-steps' mean clipfrac and |ratio - 1|, the largest |ratio - 1| and the gradient norm before
    clipping; `largest` gets every micro-step's largest |ratio - 1|.  `end_round(drop)` handles a partial
    group (B²'s stage end).
    """

    def __init__(self, model, params: list[torch.nn.Parameter], optimizer, accumulation: GradAccumulation,
                 budget: Budget, *, num_steps: int, guidance_scale: float, eta: float, train_cfg: bool,
                 clip_range: float, adv_clip_max: float, max_grad_norm: float):
        self.model, self.params, self.optimizer = model, params, optimizer
        self.accumulation, self.budget = accumulation, budget
        self.num_steps, self.guidance_scale, self.eta, self.train_cfg = num_steps, guidance_scale, eta, train_cfg
        self.clip_range, self.adv_clip_max, self.max_grad_norm = clip_range, adv_clip_max, max_grad_norm
        self.pending: list[dict[str, float]] = []       # micro-steps since the last optimizer step
        self.updates: list[dict[str, float]] = []
        self.largest: list[float] = []

    @classmethod
    def for_config(cls, model, params, optimizer, accumulation: GradAccumulation, budget: Budget, cfg) -> "PPOTrainer":
        """The trainer of an algorithm Config with the fields sample_num_steps, guidance_scale, sample_eta,
        train_cfg, clip_range, adv_clip_max and max_grad_norm (DDPO's and B²-DiffuRL's)."""
        return cls(model, params, optimizer, accumulation, budget, num_steps=cfg.sample_num_steps,
                   guidance_scale=cfg.guidance_scale, eta=cfg.sample_eta, train_cfg=cfg.train_cfg,
                   clip_range=cfg.clip_range, adv_clip_max=cfg.adv_clip_max, max_grad_norm=cfg.max_grad_norm)

    def epoch(self, transitions: Transitions, generator: torch.Generator | None, steps: int, batch_size: int,
              drop_last: bool = False) -> list[dict[str, float]]:
        """One pass over `transitions`, training the first `steps` steps of each permuted order; returns
        one row of loss and PPO statistics per micro-step."""
        self.model.unet.train()
        rows = []
        shuffled = shuffle_for_inner_epoch(transitions, generator)
        for batch in shuffled.minibatches(batch_size, drop_last=drop_last):
            for j in range(steps):
                log_prob = log_prob_of_step(
                    self.model, batch.latents[:, j], batch.timesteps[:, j], batch.next_latents[:, j],
                    batch.prompt_embeds, batch.negative_embeds, self.guidance_scale, self.eta,
                    train_cfg=self.train_cfg, num_steps=self.num_steps, budget=self.budget)
                loss, info = ppo_clip_loss(log_prob, batch.log_probs[:, j], batch.advantages, self.clip_range,
                                           self.adv_clip_max, weights=batch.weights)
                (loss / self.accumulation.group).backward()
                rows.append({"loss": loss.item(), **{k: float(v) for k, v in info.items()}})
                with torch.no_grad():
                    self.largest.append(float((log_prob - batch.log_probs[:, j]).exp().sub(1).abs().max()))
                self.pending.append({**rows[-1], "abs_ratio_minus_1_max": self.largest[-1]})
                if self.accumulation.micro_step():
                    self._optimizer_step()
        return rows

    def _optimizer_step(self) -> None:
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.budget.optimizer_steps += 1
        self.updates.append({
            "clipfrac": float(np.mean([r["clipfrac"] for r in self.pending])),
            "abs_ratio_minus_1": float(np.mean([r["abs_ratio_minus_1"] for r in self.pending])),
            "abs_ratio_minus_1_max": max(r["abs_ratio_minus_1_max"] for r in self.pending),
            "grad_norm": float(norm), "micro_steps": float(len(self.pending))})
        self.pending = []

    def end_round(self, drop: bool) -> int:
        """A training round's end with a partial accumulation group: drop its gradient (B²-DiffuRL's
        release, whose training process exits) or take an optimizer step on it.  Either way the next
        round starts a fresh group.  Returns how many micro-steps the partial group held."""
        leftover = len(self.pending)
        if leftover and not drop:
            self._optimizer_step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pending = []
        self.accumulation.count = 0
        return leftover


# ----------------------------------------------------------------------------------------------------
# 9. LoRA through PEFT (TRL's modern equivalent of ddpo's LoRAAttnProcessor, t2i.md §1 "LoRA")
# ----------------------------------------------------------------------------------------------------

LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


def add_lora(unet, rank: int = 4, alpha: float | None = None,
             target_modules: Sequence[str] = LORA_TARGET_MODULES, seed: int | None = None):
    """Freeze the UNet and add a PEFT LoRA adapter ("default") to every attention projection.

    LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian"): A ~ N(0, 1/rank),
    B = 0, scale alpha/rank = 1 - the network at init equals the base model exactly (ddpo's rank 4,
    network_alpha None).  Trainable parameters are fp32.  seed: makes the A init reproducible without
    touching torch's global RNG state.  Returns the same UNet.
    """
    from peft import LoraConfig

    unet.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, init_lora_weights="gaussian",
                        target_modules=list(target_modules))
    if seed is None:
        unet.add_adapter(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet.add_adapter(config)
    for param in lora_parameters(unet):
        param.data = param.data.float()
        param.requires_grad_(True)
    return unet


def lora_parameters(unet) -> list[torch.nn.Parameter]:
    """The LoRA parameters (the only trainable ones after `add_lora`), in a fixed order."""
    return [p for name, p in unet.named_parameters() if ".lora_" in name]


def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """PEFT-format LoRA weights (keys without the adapter name), as contiguous CPU tensors
    (safetensors-compatible)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().to("cpu").contiguous().clone() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora_state_dict(unet, state: dict[str, torch.Tensor]) -> None:
    """Load weights saved by `lora_state_dict` into a UNet that `add_lora` prepared the same way."""
    from peft.utils import set_peft_model_state_dict

    expected = set(lora_state_dict(unet))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"LoRA state mismatch: missing {missing[:3]}..., unexpected {extra[:3]}...")
    result = set_peft_model_state_dict(unet, state)
    if result.unexpected_keys:
        raise ValueError(f"LoRA state has unexpected keys: {result.unexpected_keys[:3]}...")


def lora_safetensors_bytes(unet) -> bytes:
    """`lora_state_dict(unet)` serialised as a safetensors file (for run artifacts)."""
    from safetensors.torch import save

    return save(lora_state_dict(unet))


def lora_diffusers_bytes(unet) -> bytes:
    """The UNet's LoRA as a diffusers LoRA file (keys `unet.<diffusers name>`, the adapter config in the
    metadata), written by diffusers' own `save_lora_weights`:
    `StableDiffusionPipeline.from_pretrained(base).load_lora_weights(folder, weight_name=...)` on the file
    reproduces the fine-tuned UNet (a PEFT-format file, `lora_safetensors_bytes`, is silently ignored
    there)."""
    import tempfile
    from pathlib import Path

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = {k: v.detach().to("cpu").contiguous()
              for k, v in convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)).items()}
    with tempfile.TemporaryDirectory() as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, safe_serialization=True,
                                                  weight_name="lora.safetensors",
                                                  unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())
        return (Path(tmp) / "lora.safetensors").read_bytes()


# ----------------------------------------------------------------------------------------------------
# 10. A fine-tuning run's plumbing, shared by DDPO and B²-DiffuRL: the policy, evaluation, checkpoints
# ----------------------------------------------------------------------------------------------------

def load_policy(task, lora_rank: int, seed: int, device: str):
    """The task's base model with a zero-effect LoRA (initialised on the CPU from `seed`, so the same on
    every device), moved to `device` with the task's reward models.  Returns (model, LoRA parameters)."""
    model = task.load_model()
    model.unet.requires_grad_(False)
    add_lora(model.unet, rank=lora_rank, seed=seed)
    model.to(device)
    task.use_device(device)
    return model, lora_parameters(model.unet)


def adamw(params: list[torch.nn.Parameter], cfg) -> torch.optim.AdamW:
    """AdamW over the LoRA parameters from a Config's learning_rate, adam_beta1/2, adam_weight_decay and
    adam_epsilon (both references: torch.optim.AdamW on the LoRA layers)."""
    return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                             weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)


def embed_prompts_once(task) -> None:
    """Embed every train and test prompt once, in a fixed order, with the task's reward models that cache
    text embeddings (clipscore: `embed_texts`).  Those embeddings depend in their last bits on which
    prompts share an encoder batch, and a resumed run skips the base evaluation that would otherwise
    embed first; called at a run's start, it makes a resumed run score exactly as an uninterrupted one."""
    prompts = list(dict.fromkeys([*task.train_prompts, *task.test_prompts]))
    rewards = [task.reward_fn()] + ([task._reward("clipscore")] if hasattr(task, "_reward") else [])
    for reward in {id(r): r for r in rewards}.values():
        if hasattr(reward, "embed_texts"):
            reward.embed_texts(prompts)


def evaluate_and_save(task, model, run, step: int, num_steps: int, guidance_scale: float, eta: float) -> None:
    """The task's evaluation of the current policy (plain DDIM sampling with CFG, the training sampler)
    at `step`: metrics as 'eval' scalars, one row per image, and the PNG grid samples_step<step>.png."""
    model.unet.eval()

    @torch.no_grad()
    def generate(prompts, generator):
        return sample_trajectories(model, list(prompts), num_steps, guidance_scale, eta, generator=generator).images

    result = task.evaluate(generate, step, seed=run.seed)
    run.log(step, result.metrics, "eval")
    run.add_samples(result.samples, step)
    run.save_artifact(f"samples_step{step:05d}.png", result.grid_png)


def training_state(model, optimizer, budget: Budget, accumulation: GradAccumulation,
                   generator: torch.Generator) -> dict[str, Any]:
    """What a checkpoint needs of any run: LoRA, optimizer moments, counters and random states."""
    return {"lora": lora_state_dict(model.unet), "optimizer": optimizer.state_dict(), "budget": budget.state_dict(),
            "accumulation": accumulation.state_dict(), "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state()}


def restore_training_state(state: dict[str, Any], model, optimizer, budget: Budget, accumulation: GradAccumulation,
                           generator: torch.Generator) -> None:
    """The inverse of `training_state`."""
    load_lora_state_dict(model.unet, state["lora"])
    optimizer.load_state_dict(state["optimizer"])
    budget.load_state_dict(state["budget"])
    accumulation.load_state_dict(state["accumulation"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
