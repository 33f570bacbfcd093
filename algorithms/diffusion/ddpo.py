"""DDPO (Black et al., "Training Diffusion Models with Reinforcement Learning", ICLR 2024), DDPO_IS as
ddpo-pytorch implements it (t2i.md §2): PPO-clip on per-step DDIM likelihoods, no value function, no
KL term; the advantage of a trajectory is its normalised terminal reward, shared by all its steps.

Read top to bottom: Config -> run() = [evaluate base] -> epochs of (sample -> reward -> advantages ->
inner epochs of PPO over timesteps) -> [evaluate fine-tuned].  The shared math (DDIM step with
log-prob, trajectory sampling, the PPO-clip loss, the per-prompt stat tracker, LoRA) lives in
algorithms/diffusion/core.py, which B²-DiffuRL uses too.

Budget: every epoch logs the cumulative reward queries (images scored), UNet evaluations (sampling and
training apart, and their sum) and optimizer steps, so methods are compared at an equal budget.  The
fine-tuned LoRA is saved as `lora.safetensors` in diffusers format (`load_lora_weights` reads it).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from algorithms.diffusion import core
from suites.errors import UserError


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults are ddpo-pytorch's `config/base.py` (t2i.md §2.3); the suites' YAML grids override them."""

    num_epochs: int = 100
    """Epochs; each samples `sample_batch_size * sample_num_batches_per_epoch` trajectories and trains on them."""
    sample_num_steps: int = 50
    """DDIM steps T (SD: 50; the shapes model uses fewer, see the grid)."""
    sample_eta: float = 1.0
    """DDIM eta; 1.0 makes the sampler stochastic, which the likelihood needs."""
    guidance_scale: float = 5.0
    """Classifier-free guidance w (negative prompt: the empty string)."""
    sample_batch_size: int = 1
    """Prompts per sampling batch."""
    sample_num_batches_per_epoch: int = 2
    """Sampling batches per epoch."""
    sample_images_per_prompt: int = 1
    """Images per drawn prompt in a sampling batch: each batch draws sample_batch_size / this many prompts
    and samples each this many times (1: every image its own random prompt, as ddpo-pytorch).  More than
    one gives the per-prompt stat tracker several fresh rewards of the same prompt in every epoch."""
    train_batch_size: int = 1
    """Trajectories per training micro-batch."""
    learning_rate: float = 3e-4
    """AdamW learning rate of the LoRA parameters."""
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-4
    adam_epsilon: float = 1e-8
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step; gradients also accumulate over the trained timesteps, so one
    optimizer step happens per `gradient_accumulation_steps * num_train_timesteps` micro-steps (ddpo L61-79)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clip at each optimizer step."""
    num_inner_epochs: int = 1
    """Passes over each epoch's samples (1: on-policy)."""
    train_cfg: bool = True
    """Recompute log-probs with guidance, as sampling did."""
    adv_clip_max: float = 5.0
    """Advantages are clipped to [-adv_clip_max, adv_clip_max]."""
    clip_range: float = 1e-4
    """PPO ratio clip epsilon."""
    timestep_fraction: float = 1.0
    """Share of each trajectory's timesteps trained (a random subset per sample when < 1)."""
    per_prompt_stat_tracking: bool = True
    """Normalise rewards per prompt (buffer below); False: over the whole epoch's batch."""
    stat_buffer_size: int = 16
    stat_min_count: int = 16
    lora_rank: int = 4
    """LoRA rank on to_q/to_k/to_v/to_out.0 of every attention block (initialised so the start equals the base)."""
    eval_every: int = 0
    """Also evaluate every this many epochs (0: only the base model before training and the final model)."""
    checkpoint_every: int = 1
    """Write a resumable checkpoint every this many epochs."""

    def validate(self) -> None:
        positive = ("num_epochs", "sample_num_steps", "sample_batch_size", "sample_num_batches_per_epoch",
                    "train_batch_size", "gradient_accumulation_steps", "num_inner_epochs", "lora_rank",
                    "checkpoint_every", "stat_buffer_size", "sample_images_per_prompt")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"ddpo: {name} must be >= 1 (got {getattr(self, name)})")
        if not 0 < self.timestep_fraction <= 1:
            raise UserError(f"ddpo: timestep_fraction must be in (0, 1] (got {self.timestep_fraction})")
        if self.sample_batch_size % self.sample_images_per_prompt:
            raise UserError(f"ddpo: sample_batch_size ({self.sample_batch_size}) must be a multiple of "
                            f"sample_images_per_prompt ({self.sample_images_per_prompt})")
        per_epoch = self.sample_batch_size * self.sample_num_batches_per_epoch
        group = self.train_batch_size * self.gradient_accumulation_steps
        # ddpo-pytorch asserts the same (train.py L56-60): every epoch ends on an optimizer step
        if per_epoch % group:
            raise UserError(f"ddpo: samples per epoch ({self.sample_batch_size} x {self.sample_num_batches_per_epoch}"
                            f" = {per_epoch}) must be a multiple of train_batch_size x gradient_accumulation_steps"
                            f" ({group})")

    @property
    def num_train_timesteps(self) -> int:
        return max(1, int(self.sample_num_steps * self.timestep_fraction))


def draw_prompts(train_prompts: list[str], cfg: Config, generator: torch.Generator) -> list[str]:
    """One sampling batch's prompts: sample_batch_size / k uniform draws, each repeated k times in a row
    (k = sample_images_per_prompt; k = 1 is ddpo-pytorch's one independent prompt per image)."""
    k = cfg.sample_images_per_prompt
    idx = torch.randint(len(train_prompts), (cfg.sample_batch_size // k,), generator=generator)
    return [train_prompts[i] for i in idx.repeat_interleave(k).tolist()]


def run(task, cfg: Config, run, shuffle_advantages: bool = False) -> None:
    """Fine-tune `task`'s model with DDPO.  shuffle_advantages: the no-signal control of ddpo_shuffled.py
    (each epoch's advantages randomly permuted across its trajectories before training)."""
    cfg.validate()
    torch.manual_seed(run.seed)
    generator = torch.Generator().manual_seed(run.seed)       # all sampling noise, prompts and shuffles
    model, params = core.load_policy(task, cfg.lora_rank, run.seed, run.device)
    optimizer = core.adamw(params, cfg)
    tracker = core.PerPromptStatTracker(cfg.stat_buffer_size, cfg.stat_min_count)
    budget = core.Budget()
    # one optimizer step per gradient_accumulation_steps x num_train_timesteps micro-steps (ddpo L61-79)
    accumulation = core.GradAccumulation(cfg.gradient_accumulation_steps * cfg.num_train_timesteps)
    trainer = core.PPOTrainer.for_config(model, params, optimizer, accumulation, budget, cfg)
    reward_fn = task.reward_fn()
    train_prompts = list(task.train_prompts)

    def evaluate(step: int) -> None:
        core.evaluate_and_save(task, model, run, step, cfg.sample_num_steps, cfg.guidance_scale, cfg.sample_eta)

    start = 0
    state = run.load_checkpoint()
    if state is None:
        evaluate(0)                                            # the base model (LoRA is zero)
    else:
        core.restore_training_state(state, model, optimizer, budget, accumulation, generator)
        tracker.load_state_dict(state["tracker"])
        start = state["epoch"]

    for epoch in run.progress(range(start, cfg.num_epochs), total=cfg.num_epochs, initial=start):
        # ---- 1. sample trajectories with the current policy (no grad) ----------------------------------
        model.unet.eval()
        batches = []
        with torch.no_grad():
            for _ in range(cfg.sample_num_batches_per_epoch):
                prompts = draw_prompts(train_prompts, cfg, generator)
                batches.append(core.sample_trajectories(model, prompts, cfg.sample_num_steps, cfg.guidance_scale,
                                                        cfg.sample_eta, generator=generator, budget=budget))
        traj = core.Trajectories.cat(batches)

        # ---- 2. terminal rewards -> advantages (ddpo L413-442) -----------------------------------------
        rewards = np.asarray(reward_fn(traj.images, traj.prompts), np.float64)
        budget.reward_queries += len(rewards)
        if cfg.per_prompt_stat_tracking:
            advantages = tracker.update(traj.prompts, rewards)
        else:
            advantages = core.normalize_batch(rewards)
        advantages = torch.as_tensor(advantages, dtype=torch.float32)
        if shuffle_advantages:
            advantages = advantages[torch.randperm(len(advantages), generator=generator)]

        # ---- 3. PPO over the stored transitions (ddpo L455-593) ----------------------------------------
        # each inner epoch shuffles the trajectories and gives each its own timestep order; only the first
        # num_train_timesteps of each order are trained.  Every epoch ends on an optimizer step (validate).
        transitions = core.make_transitions(traj, advantages)
        info_rows: list[dict[str, float]] = []
        for _ in range(cfg.num_inner_epochs):
            info_rows += trainer.epoch(transitions, generator, cfg.num_train_timesteps, cfg.train_batch_size)

        # ---- 4. log, checkpoint ---------------------------------------------------------------------------
        done = epoch + 1
        metrics = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
                   **{k: float(np.mean([r[k] for r in info_rows])) for k in info_rows[0]},
                   **budget.as_metrics()}
        run.log(done, metrics, "train")
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.num_epochs:
            evaluate(done)
        if done % cfg.checkpoint_every == 0 or done == cfg.num_epochs:
            run.save_checkpoint({**core.training_state(model, optimizer, budget, accumulation, generator),
                                 "tracker": tracker.state_dict(), "epoch": done}, done)
    evaluate(cfg.num_epochs)                                   # the final model, never the best one
    run.save_artifact("lora.safetensors", core.lora_diffusers_bytes(model.unet))
