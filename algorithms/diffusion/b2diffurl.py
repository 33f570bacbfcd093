"""B²-DiffuRL (Hu et al., "Towards Better Alignment: Training Diffusion Models with Reinforcement Learning
Against Sparse Rewards", CVPR 2025; arXiv 2503.11240) as its released code runs it
(hu-zijing/B2-DiffuRL@e3a9129; research/t2i.md §3, quirks included).

The release is a bash loop over stages, each three processes (sample, select, train).  Here one trial
runs every stage in one process, with a checkpoint after each; a stage reads top to bottom:

  0. its interval    s(i) = L + floor(i (R - L + 1) / S): train only the last s of the T denoising steps
                     (backward progressive training, §3.3; `stage_schedule`)
  1. sample          B prompts per batch; steps 0..T-s-1 once, then K branches from the shared x_{T-s},
                     each with its own noise (§3.4; core.sample_branched_trajectories)
  2. score           reward of every image, in chunks (§3.5)
  3. normalise       per-prompt z-score over this stage and the last H stages (core.HistoryZScore)
  4. select          per branch group: its best sample if z_max >= +0.5, its worst if z_min < -0.5
                     (`select_extremes`); only the branched interval's steps are kept
  5. train           PPO-clip on the selected samples, A = clamp(z, ±5) β±, all s steps of each in a
                     per-sample random order, one optimizer step per AccStep · s micro-steps, 2 epochs
                     (§3.6; core.PPOTrainer); the leftover partial group is dropped at the stage's end
  6. log, checkpoint LoRA and AdamW moments carry over to the next stage (§3.6, §6.5 item 9)

The ablations are registered as their own algorithms (algorithms/registry.py): `b2diffurl_no_backward`
(backward=False: s = T in every stage, branching at step 0), `b2diffurl_no_branch` (branch=False:
K = 1 and K times the batches, so a stage spends the same reward queries; the same threshold rule
selects single samples) and `b2diffurl_neither` (both).

Named deviations from the release (each a Config field or a consequence of one process):
- fp32 everywhere (the release samples and trains with an fp16 UNet and fp32 LoRA): the first ratio of a
  stage is then exactly 1 on CPU (t2i.md §3.8 item 2).
- Randomness: stage i's sampling (prompts, x_T, branch noise) is seeded by `stage_seed + i` (and the
  run's seed); the training shuffles draw from one generator carried from stage to stage in the
  checkpoint, as the release's training restores its RNG state from the previous stage's checkpoint.
  The streams are torch's, not the release's python `random` + CUDA ones.
- Rewards are computed right after each sampling batch (images are not kept); the scores are the same.
- An incomplete last training minibatch is dropped (the release's `range(0, N//2*2, 2)` at its batch 2).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from algorithms.diffusion import core
from suites.errors import UserError


@dataclasses.dataclass(frozen=True)
class Config:
    """Defaults are the released `run_process.sh` values over `config/stage_process.py` (t2i.md §3.2)."""

    num_stages: int = 100
    """Stages S (StageCnt); each samples, scores, selects and trains once."""
    split_step_left: int = 14
    """L (SplitStepLeft): the first stage trains the last L denoising steps."""
    split_step_right: int = 20
    """R (SplitStepRight): the last stages train the last R steps; s(i) = L + floor(i (R - L + 1) / S)."""
    sample_num_steps: int = 20
    """DDIM steps T (NumStep)."""
    sample_eta: float = 1.0
    """DDIM eta; 1 makes the sampler stochastic, as the likelihood needs."""
    guidance_scale: float = 5.0
    """Classifier-free guidance w (negative prompt: the empty string)."""
    num_branches: int = 5
    """Branches K per group (SplitTime): K continuations of one shared x_{T-s}."""
    sample_batch_size: int = 8
    """Prompts per sampling batch (drawn uniformly with replacement from the train split)."""
    sample_num_batches_per_stage: int = 32
    """Sampling batches per stage (BatchCnt): B x BatchCnt branch groups, K x that many images."""
    history_stages: int = 8
    """H (history_cnt): per-prompt z-scores pool this stage's rewards with the last H stages'."""
    pos_threshold: float = 0.5
    """A group's best sample is trained as a positive iff its z >= this."""
    neg_threshold: float = -0.5
    """A group's worst sample is trained as a negative iff its z < this."""
    pos_weight: float = 1.0
    """β₊ (beta1): multiplies the clipped advantage of samples with z > 0."""
    neg_weight: float = 1.0
    """β₋ (beta2): multiplies the clipped advantage of samples with z <= 0."""
    train_batch_size: int = 2
    """Selected trajectories per training micro-batch."""
    gradient_accumulation_steps: int = 64
    """AccStep: one optimizer step per AccStep x s micro-steps (a micro-step = one step column of one
    micro-batch), i.e. per 128 selected trajectories at the defaults."""
    num_epochs_per_stage: int = 2
    """Passes over each stage's selected samples (TrainEpoch); the old log-probs stay the sampled ones."""
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-4
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    """Gradient-norm clip at each optimizer step."""
    clip_range: float = 0.1
    """PPO ratio clip ε (train.eps)."""
    adv_clip_max: float = 5.0
    """z is clipped to [-adv_clip_max, adv_clip_max] before β± (A = clamp(z, ±5) β±)."""
    train_cfg: bool = True
    """Recompute log-probs with guidance, as sampling did."""
    lora_rank: int = 4
    """LoRA rank on to_q/to_k/to_v/to_out.0 of every attention block (zero effect at the start)."""
    stage_seed: int = 300
    """Stage i's sampling seed is stage_seed + i (+ 1,000,000 x the run's seed), as the release's 300 + i."""
    reward_batch_size: int = 8
    """Images per reward call (the release scores in chunks of 8; a remainder chunk is scored too)."""
    reward_on_saved_pngs: bool = True
    """Score floor(255 x)/255, the 8-bit PNGs the release saves and re-reads, rather than the float images."""
    drop_leftover_accumulation: bool = True
    """A stage's partial last accumulation group is dropped (the release's training process exits with it);
    False: an optimizer step on it at the stage's end, so no selected sample's gradient is lost."""
    backward: bool = True
    """The backward progressive schedule; False (ablation b2diffurl_no_backward): s = T in every stage."""
    branch: bool = True
    """Branch groups of K; False (ablation b2diffurl_no_branch): K = 1 and K x the sampling batches."""
    eval_every: int = 0
    """Also evaluate every this many stages (0: only the base model before training and the final model)."""
    checkpoint_every: int = 1
    """Write a resumable checkpoint every this many stages (and after the last)."""

    def __post_init__(self) -> None:
        positive = ("num_stages", "split_step_left", "sample_num_steps", "num_branches", "sample_batch_size",
                    "sample_num_batches_per_stage", "train_batch_size", "gradient_accumulation_steps",
                    "num_epochs_per_stage", "lora_rank", "reward_batch_size", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"b2diffurl: {name} must be >= 1 (got {getattr(self, name)})")
        for name in ("history_stages", "eval_every", "stage_seed"):
            if getattr(self, name) < 0:
                raise UserError(f"b2diffurl: {name} must be >= 0 (got {getattr(self, name)})")
        if self.split_step_left > self.split_step_right:
            raise UserError(f"b2diffurl: split_step_left (L = {self.split_step_left}) must be <= split_step_right "
                            f"(R = {self.split_step_right}); the interval grows from L to R steps")
        if self.split_step_right > self.sample_num_steps:
            raise UserError(f"b2diffurl: split_step_right (R = {self.split_step_right}) must be <= sample_num_steps "
                            f"(T = {self.sample_num_steps}): no interval is longer than the trajectory")
        if self.pos_threshold < self.neg_threshold:
            raise UserError(f"b2diffurl: pos_threshold ({self.pos_threshold}) is below neg_threshold "
                            f"({self.neg_threshold}); a positive threshold must be >= the negative one")
        if self.sample_eta <= 0:
            raise UserError(f"b2diffurl: sample_eta must be > 0 for a finite log-prob (got {self.sample_eta})")

    @property
    def branches(self) -> int:
        """K as sampled: num_branches, or 1 without branches."""
        return self.num_branches if self.branch else 1

    @property
    def batches_per_stage(self) -> int:
        """Sampling batches per stage; without branches K times as many, so the reward queries are equal."""
        return self.sample_num_batches_per_stage * (1 if self.branch else self.num_branches)

    @property
    def queries_per_stage(self) -> int:
        return self.batches_per_stage * self.sample_batch_size * self.branches


def stage_schedule(left: int, right: int, num_stages: int) -> list[int]:
    """s(i) = L + floor(i (R - L + 1) / S) for i = 0..S-1 (run_process.sh L31-35; bash integer arithmetic)."""
    return [left + (i * (right - left + 1)) // num_stages for i in range(num_stages)]


def trained_steps(cfg: Config, stage: int) -> int:
    """The interval s of `stage`: the schedule's, or T without the backward schedule."""
    if not cfg.backward:
        return cfg.sample_num_steps
    return stage_schedule(cfg.split_step_left, cfg.split_step_right, cfg.num_stages)[stage]


def select_extremes(z: np.ndarray, groups: torch.Tensor, batch_size: int, pos_threshold: float,
                    neg_threshold: float) -> tuple[list[int], list[bool]]:
    """Branch-wise selection (run_select.py L123-172).  `groups` [num_batches * B, K]: the rows of each
    branch group (`core.branch_group_indices`, ordered by batch, then prompt slot).  In each group the
    argmax is kept as a positive iff z_max >= pos_threshold and the argmin as a negative iff
    z_min < neg_threshold (the first index on ties, as torch's argmax).  Returns (rows, is_positive) in
    the release's order: prompt slot, then batch, positive before negative.  K = 1: a threshold filter."""
    z = np.asarray(z, dtype=np.float64)
    rows, positive = [], []
    for g in sorted(range(groups.shape[0]), key=lambda g: (g % batch_size, g // batch_size)):
        members = groups[g].tolist()
        scores = z[members]
        best, worst = int(np.argmax(scores)), int(np.argmin(scores))
        if scores[best] >= pos_threshold:
            rows.append(members[best])
            positive.append(True)
        if scores[worst] < neg_threshold:
            rows.append(members[worst])
            positive.append(False)
    return rows, positive


def run(task, cfg: Config, run) -> None:
    """Fine-tune `task`'s model with B²-DiffuRL: all stages, a checkpoint after each (resumes at the last)."""
    torch.manual_seed(run.seed)
    train_generator = torch.Generator().manual_seed(run.seed)   # training shuffles, carried across stages
    model, params = core.load_policy(task, cfg.lora_rank, run.seed, run.device)
    optimizer = core.adamw(params, cfg)
    normaliser = core.HistoryZScore(cfg.history_stages)
    budget = core.Budget()
    accumulation = core.GradAccumulation(cfg.gradient_accumulation_steps * cfg.split_step_left)  # set per stage
    trainer = core.PPOTrainer.for_config(model, params, optimizer, accumulation, budget, cfg)
    reward_fn = task.reward_fn()
    core.embed_prompts_once(task)            # so that a resumed run scores bit-identically (its docstring)
    train_prompts = list(task.train_prompts)
    T, K, B = cfg.sample_num_steps, cfg.branches, cfg.sample_batch_size

    def evaluate(step: int) -> None:
        core.evaluate_and_save(task, model, run, step, T, cfg.guidance_scale, cfg.sample_eta)

    def score(images: torch.Tensor, prompts: list[str]) -> np.ndarray:
        if cfg.reward_on_saved_pngs:                 # what the release scores: its saved 8-bit PNGs
            images = torch.floor(images.clamp(0, 1) * 255) / 255
        return core.score_in_chunks(reward_fn, images, prompts, cfg.reward_batch_size)

    start = 0
    state = run.load_checkpoint()
    if state is None:
        evaluate(0)                                              # the base model (LoRA is zero)
    else:
        core.restore_training_state(state, model, optimizer, budget, accumulation, train_generator)
        normaliser.load_state_dict(state["normaliser"])
        start = state["stage"]

    for stage in run.progress(range(start, cfg.num_stages), total=cfg.num_stages, initial=start):
        # ---- 0. this stage's interval: the last s of the T steps ---------------------------------------
        s = trained_steps(cfg, stage)
        generator = torch.Generator().manual_seed(cfg.stage_seed + stage + 1_000_000 * run.seed)

        # ---- 1-2. branched sampling, rewards (t2i.md §3.4, §3.5) ----------------------------------------
        model.unet.eval()
        batches, rewards = [], []
        with torch.no_grad():
            for _ in range(cfg.batches_per_stage):
                prompts = [train_prompts[i] for i in torch.randint(len(train_prompts), (B,), generator=generator)]
                traj = core.sample_branched_trajectories(model, prompts, T, s, K, cfg.guidance_scale, cfg.sample_eta,
                                                         generator=generator, budget=budget)
                rewards.append(score(traj.images, traj.prompts))
                batches.append(dataclasses.replace(traj, images=None))
        traj = core.Trajectories.cat(batches)
        rewards = np.concatenate(rewards)
        budget.reward_queries += len(rewards)

        # ---- 3-4. history z-score, extremes of each branch group (§3.5) --------------------------------
        z = normaliser.update(traj.prompts, rewards)
        groups = core.branch_group_indices(cfg.batches_per_stage, K, B)
        rows, positive = select_extremes(z, groups, B, cfg.pos_threshold, cfg.neg_threshold)
        weights = [cfg.pos_weight if z[r] > 0 else cfg.neg_weight for r in rows]

        # ---- 5. PPO-clip on the selected samples' interval (§3.6) ----------------------------------------
        accumulation.group = cfg.gradient_accumulation_steps * s
        info_rows: list[dict[str, float]] = []
        updates_before, micro_before = len(trainer.updates), len(trainer.largest)
        if rows:
            selected = core.make_transitions(traj.index(torch.tensor(rows)), z[rows], start=T - s,
                                             weights=weights)
            for _ in range(cfg.num_epochs_per_stage):
                info_rows += trainer.epoch(selected, train_generator, s, cfg.train_batch_size, drop_last=True)
        leftover = trainer.end_round(drop=cfg.drop_leftover_accumulation)
        updates, largest = trainer.updates[updates_before:], trainer.largest[micro_before:]

        # ---- 6. log, checkpoint ---------------------------------------------------------------------------
        done = stage + 1
        metrics = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std()),
                   "split_steps": float(s), "selected_positive": float(sum(positive)),
                   "selected_negative": float(len(positive) - sum(positive)),
                   "micro_steps": float(len(info_rows)), "optimizer_updates": float(len(updates)),
                   "leftover_micro_steps": float(leftover)}
        if info_rows:
            metrics.update({k: float(np.mean([r[k] for r in info_rows])) for k in info_rows[0]})
            # §3.7 predicts |ratio - 1| far below ε; the first micro-step is on-policy (exactly 1 in fp32)
            metrics.update(abs_ratio_minus_1_max=max(largest), first_abs_ratio_minus_1_max=largest[0])
        metrics.update(budget.as_metrics())
        run.log(done, metrics, "train")
        run.log(done, {f"update{i}/{k}": v for i, u in enumerate(updates) for k, v in u.items()}, "update")
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.num_stages:
            evaluate(done)
        if done % cfg.checkpoint_every == 0 or done == cfg.num_stages:
            run.save_checkpoint({**core.training_state(model, optimizer, budget, accumulation, train_generator),
                                 "normaliser": normaliser.state_dict(), "stage": done}, done)
    evaluate(cfg.num_stages)                                     # the final model, never the best one
    run.save_artifact("lora.safetensors", core.lora_diffusers_bytes(model.unet))
