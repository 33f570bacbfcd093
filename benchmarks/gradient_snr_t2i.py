"""How much signal does a DDPO gradient carry?  The policy-gradient signal-to-noise ratio of the t2i grid.

DDPO's gains at the cpu size are small and its losses look like drift.  This measures why, at the base
model (LoRA initialised as in a run): per shapes prompt set it draws `--groups` independent prompt
groups the way a DDPO epoch does (one train prompt, `sample_images_per_prompt` images, the grid's own
sampler), normalises the rewards within the group (the per-prompt tracker with a fresh buffer), and
computes the group's DDPO gradient at ratio 1 over all its timesteps,

    u_g = grad_LoRA  sum_i A_i * ( - sum_t log p(x_{t-1} | x_t, c) ),     i in group g.

Groups are independent draws, so with U = [u_1 .. u_G]:

    signal  |mu|^2   = (|sum u|^2 - sum |u|^2) / (G (G - 1))      (unbiased; 0 when there is no signal)
    noise   tr Sigma = (sum |u|^2 - G |mean u|^2) / (G - 1)
    r       = |mu|^2 / tr Sigma                                     (per-group signal-to-noise)

A gradient averaged over K groups points along the mean with expected cosine^2 ~ K r / (1 + K r); it is as
much signal as noise (cosine^2 = 0.5) at K* = 1 / r groups, i.e. K* x images_per_prompt reward queries
in one optimizer step.  A DDPO run spends `queries_per_step` queries per optimizer step and
`queries_per_run` in all: when K* is far above both, every step is mostly noise and the run drifts.
The 95% interval is a bootstrap over groups (duplicated groups excluded from the signal's pairs).

    python -m benchmarks.gradient_snr_t2i [--size cpu] [--config FILE] [--groups 24] [--images-per-group K]
                                          [--reward NAME] [--tasks ID ..] [--out DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from algorithms.diffusion.ddpo import Config
from benchmarks.config import build_config, load_experiment
from benchmarks.diagnose_t2i import write_table
from suites import registry
from suites.errors import UserError


NOTE = ("Per set, `groups` independent prompt groups (one train prompt, `images_per_group` images, the "
        "grid's sampler; advantages normalised within the group), each group's DDPO gradient on the "
        "LoRA parameters at ratio 1 over all timesteps.  signal = |mean gradient|^2 (unbiased), noise = "
        "trace of the groups' covariance, r = signal / noise per group (bootstrap 95% CI over groups: "
        "r_low, r_high).  queries_per_step / queries_per_run: what the grid spends.  queries_needed_low = "
        "images_per_group / r_high: the fewest reward queries one optimizer step needs before its "
        "gradient is as much signal as noise (cosine^2 = 1/2) that the CI allows; run_snr_high = "
        "queries_per_run / images_per_group x r_high: the most signal-to-noise the run's queries carry "
        "in all (their summed gradient has cosine^2 ~ x / (1 + x) with the mean).  Regenerate: "
        "`python -m benchmarks.gradient_snr_t2i` (see results/t2i/diagnostics/cpu/README.md for each file's "
        "arguments).")


def group_gradients(task, cfg, groups: int, k: int, seed: int = 0):
    """[groups, P] float64: the DDPO gradient u_g of each independent prompt group (see the module doc), at
    the base model with LoRA initialised by `seed`; and the groups' reward spread (mean within-group sd)."""
    import torch

    from algorithms.diffusion import core

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = task.load_model()
    model.unet.requires_grad_(False)
    core.add_lora(model.unet, rank=cfg.lora_rank, seed=seed)
    params = core.lora_parameters(model.unet)
    reward_fn = task.reward_fn()
    prompts = list(task.train_prompts)
    rows, spreads = [], []
    for _ in range(groups):
        prompt = prompts[int(torch.randint(len(prompts), (1,), generator=generator))]
        model.unet.eval()
        with torch.no_grad():
            traj = core.sample_trajectories(model, [prompt] * k, cfg.sample_num_steps, cfg.guidance_scale,
                                            cfg.sample_eta, generator=generator)
        rewards = np.asarray(reward_fn(traj.images, traj.prompts), np.float64)
        spreads.append(float(rewards.std()))
        # a fresh tracker with min_count <= k normalises within the group, as a run's tracker does once
        # it has seen the prompt
        advantages = core.PerPromptStatTracker(cfg.stat_buffer_size, min(k, cfg.stat_min_count)).update(
            traj.prompts, rewards)
        batch = core.make_transitions(traj, advantages)
        adv = batch.advantages.clamp(-cfg.adv_clip_max, cfg.adv_clip_max)
        model.unet.train()
        for p in params:
            p.grad = None
        for j in range(batch.num_steps):
            log_prob = core.log_prob_of_step(model, batch.latents[:, j], batch.timesteps[:, j],
                                             batch.next_latents[:, j], batch.prompt_embeds, batch.negative_embeds,
                                             cfg.guidance_scale, cfg.sample_eta, train_cfg=cfg.train_cfg,
                                             num_steps=cfg.sample_num_steps)
            (-(adv * log_prob).sum()).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in params]).double().numpy().copy())
    return np.stack(rows), float(np.mean(spreads))


def snr_from_gram(gram: np.ndarray, counts: np.ndarray | None = None) -> tuple[float, float]:
    """(|mu|^2, tr Sigma) from the Gram matrix of G group gradients; `counts` (how often each group is drawn,
    a bootstrap resample) weights them, and pairs of a group with itself never count as signal."""
    g = gram.shape[0]
    c = np.ones(g) if counts is None else np.asarray(counts, np.float64)
    n = c.sum()
    total = c @ gram @ c                                   # |sum u|^2
    self_pairs = np.sum(c ** 2 * np.diag(gram))            # pairs of one group with itself
    signal = (total - self_pairs) / (n ** 2 - np.sum(c ** 2))
    noise = (np.sum(c * np.diag(gram)) - total / n) / (n - 1)
    return float(signal), float(noise)


def snr_summary(grads: np.ndarray, reps: int = 2000, seed: int = 0) -> dict[str, float]:
    """r = |mu|^2 / tr Sigma per group, with a bootstrap 95% interval over groups."""
    gram = grads @ grads.T
    signal, noise = snr_from_gram(gram)
    rng = np.random.default_rng(seed)
    g = len(grads)
    boot = []
    for _ in range(reps):
        counts = np.bincount(rng.integers(g, size=g), minlength=g)
        if np.count_nonzero(counts) < 2:                   # one distinct group: no pairs to measure signal
            continue
        s, v = snr_from_gram(gram, counts)
        if v > 0:
            boot.append(s / v)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"signal": signal, "noise": noise, "r": signal / noise, "r_low": float(low), "r_high": float(high)}


def with_budget_bounds(frame: pd.DataFrame) -> pd.DataFrame:
    """Adds what r's upper bound allows: queries_needed_low (queries one step needs for a half-signal
    gradient, at least) and run_snr_high (the whole run's signal-to-noise, at most)."""
    high = frame.r_high.where(frame.r_high > 0)
    return frame.assign(queries_needed_low=(frame.images_per_group / high).fillna(np.inf),
                        run_snr_high=(frame.queries_per_run / frame.images_per_group * frame.r_high).clip(lower=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="cpu", help="the grid size whose DDPO settings are used (default: cpu)")
    parser.add_argument("--config", type=Path, default=None,
                        help="grid file (default: benchmarks/configs/t2i.yaml)")
    parser.add_argument("--groups", type=int, default=24, help="independent prompt groups per set (default 24)")
    parser.add_argument("--images-per-group", type=int, default=None,
                        help="images of each group's prompt (default: the grid's sample_images_per_prompt)")
    parser.add_argument("--reward", default=None,
                        help="score with this reward instead of the grid's (e.g. brightness: the positive control "
                             "for the measurement)")
    parser.add_argument("--tasks", nargs="*", default=None, help="task ids (default: the grid's shapes sets)")
    parser.add_argument("--out", default="results/t2i/diagnostics/cpu",
                        help="where gradient_snr_<reward>.md / .csv go (default: results/t2i/diagnostics/cpu)")
    args = parser.parse_args(argv)
    try:
        if args.groups < 3:
            raise UserError(f"--groups must be >= 3 to separate signal from noise (got {args.groups})")
        exp = load_experiment("t2i", args.size, args.config)
        trials = [t for t in exp.trials() if t.algorithm == "ddpo" and "shapes-" in t.task_id]
        if not trials:
            raise UserError(f"the t2i {args.size} grid has no ddpo trial on a shapes set")
        known = sorted({t.task_id for t in trials})
        unknown = sorted(set(args.tasks or []) - set(known))
        if unknown:
            raise UserError(f"unknown task(s) {', '.join(unknown)}; the grid's shapes sets are {', '.join(known)}")
        if args.reward:
            from suites.t2i.rewards import check_reward
            check_reward(args.reward)
        configs = {t.task_id: build_config(Config, t.algo_config, f"trial {t.run_id}") for t in trials}
        if min(args.images_per_group or c.sample_images_per_prompt for c in configs.values()) < 2:
            raise UserError("one image per prompt has no within-prompt advantage; pass --images-per-group 2 or more")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    for task_id in args.tasks or known:
        trial, cfg = next(t for t in trials if t.task_id == task_id), configs[task_id]
        k = args.images_per_group or cfg.sample_images_per_prompt
        per_step = cfg.train_batch_size * cfg.gradient_accumulation_steps
        per_run = cfg.sample_batch_size * cfg.sample_num_batches_per_epoch * cfg.num_epochs
        kwargs = dict(trial.task_kwargs) | ({"reward": args.reward} if args.reward else {})
        task = registry.get(task_id).with_kwargs(**kwargs).make()
        grads, spread = group_gradients(task, cfg, args.groups, k)
        summary = snr_summary(grads)
        rows.append({"prompt set": task_id.split("/")[1], "reward": kwargs["reward"], "groups": args.groups,
                     "images_per_group": k,
                     "reward_sd_in_group": spread, **summary, "queries_per_step": per_step,
                     "queries_per_run": per_run})
        print(f"{task_id}: r = {summary['r']:.4f} [{summary['r_low']:.4f}, {summary['r_high']:.4f}]", flush=True)
    rewards = "_".join(sorted({row["reward"] for row in rows}))
    write_table(Path(args.out), f"gradient_snr_{rewards}", f"DDPO gradient signal-to-noise at the base model, "
                f"reward {rewards}, t2i {args.size} grid", with_budget_bounds(pd.DataFrame(rows)),
                NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
