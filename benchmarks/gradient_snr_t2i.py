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

B²-DiffuRL (`--b2`, t2i.md §3): the same measurement for B²'s estimator and its ablations, at the base
model, at the DDPO grid's sampler (T steps, CFG, eta) with the B² settings of the cpu sketch (issue 15:
the interval grows from L = 7 to R = T = 10 steps, K = 5 branches, thresholds +-0.5, beta = 1).  Three
samplings per prompt set, each group drawing one uniform train prompt:

  branched_first  K branches from a shared x_{T-L}: one group = K queries; trained steps: the last L
  branched_last   K branches from x_T (s = T: B²'s last stages, and every stage of b2diffurl_no_backward)
  single          independent samples (K = 1): one group = 1 query; `--single-groups` of them (default
                  2 x --groups: a single sample's gradient costs about as much as a branch group's)

z = the per-prompt z-score (unbiased std + 1e-8) pooled over every sample of the prompt in the three
samplings (all are base-model samples; a run pools a stage and 8 earlier ones the same way).  Estimators,
each u_g = grad_LoRA sum_i A_i (- sum_{t in steps} log p), ratio 1:

  b2              A = clamp(z, +-5) beta on the group's extremes that pass the thresholds (B²'s selection)
  ddpo_z          A = clamp(z, +-5) on every sample of the group (no selection), the same steps
  centred         A = z - mean of the group's z (branch-mean-centred; branched_first only)
  no_branch       single samples, the threshold filter (K = 1), the last L steps
  neither         single samples, the threshold filter, all T steps
  ddpo_all_steps  single samples, A = clamp(z, +-5), all T steps: DDPO's estimator with a per-prompt z;
                  its mean gradient is the reference of the cosines

b2 / ddpo_z / centred on the same samples test the prefix-sharing hypothesis directly: if the reward's
differences within a group come from the branched steps, centring on the group mean removes the prefix's
share of the noise.  Reported per estimator: r per group with its bootstrap 95% CI over groups, r per
reward query (r / queries per group: what equal query budgets compare), and the cosine of its mean
gradient with ddpo_all_steps' (unbiased inner products from distinct groups; bootstrap CI over the
groups of both; undefined where a squared norm's estimate is <= 0).  Selection makes B²'s mean update
something other than grad E[r]; the cosine says how far.  Groups are cached under `--cache` (resumable).

    python -m benchmarks.gradient_snr_t2i [--size cpu] [--config FILE] [--groups 24] [--images-per-group K]
                                          [--reward NAME] [--tasks ID ..] [--out DIR]
    python -m benchmarks.gradient_snr_t2i --b2 [--groups 50] [--control brightness] [--cache DIR] ...
    python -m benchmarks.gradient_snr_t2i --config benchmarks/configs/t2i.yaml --subsets --cache DIR

--subsets keeps each step's gradient of every group (issue 17's levers): r for the LoRA on all attention
projections, on the cross-attention ones only and on the self-attention ones only (at the base model LoRA's
B = 0, so each is exactly a sub-vector of the full gradient), each over all steps, the noisier first half and
the rest; and run_snr = r x the groups a run spends, with its interval.  --cache makes it resumable.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from algorithms.diffusion.ddpo import Config
from benchmarks.config import build_config, load_experiment
from benchmarks.diagnose_t2i import diagnostic_paths, write_table
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
        "in all (their summed gradient has cosine^2 ~ x / (1 + x) with the mean); run_snr / run_snr_low: r "
        "and r_low times the run's groups (queries_per_run / images_per_group), issue 17's run-level "
        "signal-to-noise.  With --subsets, `params` (all LoRA / cross-attention / self-attention) and `steps` "
        "(all / the noisier first half / the rest) restrict the same groups' gradients; oracle_binary and "
        "mixed_groups (groups with 0 < successes < k) describe the groups' images.  Regenerate: "
        "`python -m benchmarks.gradient_snr_t2i` (see results/t2i/diagnostics/cpu/README.md for each file's "
        "arguments).")


def group_gradients(task, cfg, groups: int, k: int, seed: int = 0, cache: Path | None = None,
                    per_step: bool = False):
    """[groups, P] float64 (or [groups, T, P] float32 per step with `per_step`): the DDPO gradient u_g of each
    independent prompt group (see the module doc), at the base model with LoRA initialised by `seed`; the
    groups' reward spread (mean within-group sd); and per-group extras: {"oracle_binary": [groups, k]} in the
    shapes world (else empty).  With `cache` (a directory), every 10 groups are written there with the
    sampler's generator state, and a rerun resumes after the last part written."""
    import torch

    from algorithms.diffusion import core

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = task.load_model()
    model.unet.requires_grad_(False)
    core.add_lora(model.unet, rank=cfg.lora_rank, seed=seed)
    params = core.lora_parameters(model.unet)
    reward_fn = task.reward_fn()
    oracle = task._reward("oracle_binary") if task.shapes_world else None
    prompts = list(task.train_prompts)
    rows, spreads, successes = [], [], []
    parts = sorted(cache.glob("part_*.npz")) if cache is not None and cache.is_dir() else []
    for part in parts:                                      # resume: the groups measured before
        stored = np.load(part)
        rows += list(stored["grads"])
        spreads += list(stored["spreads"])
        successes += list(stored["oracle_binary"]) if "oracle_binary" in stored.files else []
        generator.set_state(torch.from_numpy(stored["generator"]))
    if len(rows) > groups:
        rows, spreads, successes = rows[:groups], spreads[:groups], successes[:groups]
    written = len(rows)
    while len(rows) < groups:
        prompt = prompts[int(torch.randint(len(prompts), (1,), generator=generator))]
        model.unet.eval()
        with torch.no_grad():
            traj = core.sample_trajectories(model, [prompt] * k, cfg.sample_num_steps, cfg.guidance_scale,
                                            cfg.sample_eta, generator=generator)
        rewards = np.asarray(reward_fn(traj.images, traj.prompts), np.float64)
        spreads.append(float(rewards.std()))
        if oracle is not None:
            successes.append(np.asarray(oracle(traj.images, traj.prompts), np.float32))
        # a fresh tracker with min_count <= k normalises within the group, as a run's tracker does once
        # it has seen the prompt
        advantages = core.PerPromptStatTracker(cfg.stat_buffer_size, min(k, cfg.stat_min_count)).update(
            traj.prompts, rewards)
        batch = core.make_transitions(traj, advantages)
        adv = batch.advantages.clamp(-cfg.adv_clip_max, cfg.adv_clip_max)
        model.unet.train()
        steps = []
        for p in params:
            p.grad = None
        for j in range(batch.num_steps):
            log_prob = core.log_prob_of_step(model, batch.latents[:, j], batch.timesteps[:, j],
                                             batch.next_latents[:, j], batch.prompt_embeds, batch.negative_embeds,
                                             cfg.guidance_scale, cfg.sample_eta, train_cfg=cfg.train_cfg,
                                             num_steps=cfg.sample_num_steps)
            (-(adv * log_prob).sum()).backward()
            if per_step:
                steps.append(torch.cat([p.grad.reshape(-1) for p in params]).numpy().copy())
                for p in params:
                    p.grad = None
        rows.append(np.stack(steps) if per_step else torch.cat([p.grad.reshape(-1) for p in params]).double().numpy())
        if cache is not None and (len(rows) % 10 == 0 or len(rows) == groups):
            cache.mkdir(parents=True, exist_ok=True)
            extra = {"oracle_binary": np.stack(successes[written:])} if successes else {}
            tmp = cache / f".part_{len(rows):05d}.npz"
            with open(tmp, "wb") as handle:
                np.savez(handle, grads=np.stack(rows[written:]), spreads=np.asarray(spreads[written:]),
                         generator=generator.get_state().numpy(), **extra)
            tmp.replace(cache / f"part_{len(rows):05d}.npz")
            written = len(rows)
            print(f"  {len(rows)}/{groups} groups", flush=True)
    extras = {"oracle_binary": np.stack(successes)} if successes else {}
    return np.stack(rows), float(np.mean(spreads)), extras


PARAM_SUBSETS = {"all": None, "cross": ".attn2.", "self": ".attn1."}


def param_masks(task, cfg) -> dict[str, np.ndarray]:
    """For each of PARAM_SUBSETS, a boolean mask over the flattened LoRA gradient: all attention projections
    (the runs' LoRA), the cross-attention ones only (attn2: the text conditioning) or the self-attention ones
    (attn1).  At the base model LoRA's B = 0, so a subset's gradient is exactly the sub-vector of the full one:
    a LoRA on that subset alone would measure the same."""
    from algorithms.diffusion import core

    model = task.load_model()
    core.add_lora(model.unet, rank=cfg.lora_rank, seed=0)
    named = [(n, p.numel()) for n, p in model.unet.named_parameters() if ".lora_" in n]
    out = {}
    for subset, marker in PARAM_SUBSETS.items():
        out[subset] = np.concatenate([np.full(size, marker is None or marker in name) for name, size in named])
    return out


def step_subsets(num_steps: int) -> dict[str, slice]:
    """all steps; the noisier first half (ceil(T / 2) steps, where the layout is decided) and the rest."""
    half = (num_steps + 1) // 2
    return {"all": slice(0, num_steps), "early": slice(0, half), "late": slice(half, num_steps)}


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
    groups = frame.queries_per_run / frame.images_per_group
    return frame.assign(queries_needed_low=(frame.images_per_group / high).fillna(np.inf),
                        run_snr_high=(groups * frame.r_high).clip(lower=0),
                        run_snr=groups * frame.r, run_snr_low=groups * frame.r_low)


B2_NOTE = ("B²-DiffuRL's gradient estimators at the base model (module doc of benchmarks/gradient_snr_t2i.py).  "
           "groups: independent groups per row (branched: one prompt, K branches of one shared prefix; single: "
           "one sample); queries_per_group: images scored per group; steps: the trained last steps; "
           "selected_per_group: samples with a non-zero advantage.  r = |mean gradient|^2 / noise trace per "
           "group, 95% CI: percentile bootstrap over groups (2000 resamples, seed 0; approximate below ~50 "
           "groups, so read the `groups` column); "
           "r_per_query = r / queries_per_group (and its CI), the unit in which the estimators compare at equal "
           "reward queries.  cos_ddpo: cosine of the mean gradient with ddpo_all_steps' (single samples, "
           "per-prompt z, all T steps), the same bootstrap over both rows' groups (cos_defined: share of "
           "resamples with both squared norms > 0; the CI is over those; the point is nan where either "
           "squared norm's estimate is <= 0, i.e. where a mean gradient is not detectable).  z pools every "
           "sample of a prompt in the set's three samplings.")


def b2_settings(ddpo_cfg, left: int, branches: int):
    """B²'s Config at the DDPO grid's sampler: T, CFG, eta, LoRA rank from `ddpo_cfg`; interval L..T."""
    from algorithms.diffusion.b2diffurl import Config as B2Config

    return B2Config(sample_num_steps=ddpo_cfg.sample_num_steps, split_step_left=left,
                    split_step_right=ddpo_cfg.sample_num_steps, num_branches=branches,
                    guidance_scale=ddpo_cfg.guidance_scale, sample_eta=ddpo_cfg.sample_eta,
                    lora_rank=ddpo_cfg.lora_rank, train_cfg=ddpo_cfg.train_cfg)


def _weighted_gradients(model, params, traj, rows, estimators, cfg):
    """[E, P] float64: for each (weights [len(rows)], first step, stop step) of `estimators`, the gradient of
    sum_i w_i (- sum_{first <= t < stop} log p_i,t) over the trajectories `rows`; one forward per step."""
    import torch

    from algorithms.diffusion import core

    start = min(first for _, first, _ in estimators)
    batch = core.make_transitions(traj.index(torch.tensor(rows)), np.zeros(len(rows)), start=start)
    out = [torch.zeros(sum(p.numel() for p in params), dtype=torch.float64) for _ in estimators]
    active = [np.any(np.asarray(w) != 0) for w, _, _ in estimators]
    model.unet.train()
    for j in range(batch.num_steps):
        todo = [e for e, (_, first, stop) in enumerate(estimators) if active[e] and first <= start + j < stop]
        if not todo:
            continue
        log_prob = core.log_prob_of_step(model, batch.latents[:, j], batch.timesteps[:, j], batch.next_latents[:, j],
                                         batch.prompt_embeds, batch.negative_embeds, cfg.guidance_scale,
                                         cfg.sample_eta, train_cfg=cfg.train_cfg, num_steps=cfg.sample_num_steps)
        for n, e in enumerate(todo):
            weights = -torch.as_tensor(np.asarray(estimators[e][0], np.float32))
            grads = torch.autograd.grad(log_prob, params, grad_outputs=weights, retain_graph=n < len(todo) - 1)
            out[e] += torch.cat([g.reshape(-1) for g in grads]).double()
    return torch.stack(out).numpy()


def _sample_groups(model, prompts, cfg, groups: int, branch_steps: int, branches: int, seed: int):
    """`groups` branch groups (one uniform train prompt each), sampled 8 prompts at a time: the concatenated
    trajectories (no images kept), rewards are computed by the caller; returns (traj, images, rows [G, K])."""
    import torch

    from algorithms.diffusion import core

    generator = torch.Generator().manual_seed(seed)
    parts, images, rows, offset = [], [], [], 0
    model.unet.eval()
    for first in range(0, groups, 8):
        n = min(8, groups - first)
        drawn = [prompts[i] for i in torch.randint(len(prompts), (n,), generator=generator)]
        traj = core.sample_branched_trajectories(model, drawn, cfg.sample_num_steps, branch_steps, branches,
                                                 cfg.guidance_scale, cfg.sample_eta, generator=generator)
        images.append(traj.images)
        parts.append(dataclasses.replace(traj, images=None))
        rows.append(core.branch_group_indices(1, branches, n) + offset)
        offset += len(traj)
    return core.Trajectories.cat(parts), torch.cat(images), torch.cat(rows)


def b2_group_gradients(task, ddpo_cfg, groups: int, left: int = 7, branches: int = 5, seed: int = 0,
                       singles: int | None = None, cache: Path | None = None) -> dict[str, dict]:
    """The estimators of the module doc for one prompt set: {estimator: {"grads": [G, P], "setting", "steps",
    "queries_per_group", "selected_per_group"}}; `groups` branch groups per branched sampling and `singles`
    single samples (default groups x K).  Each sampling's gradients are cached in `cache` (npz)."""
    import torch

    from algorithms.diffusion import core
    from algorithms.diffusion.b2diffurl import select_extremes

    cfg = b2_settings(ddpo_cfg, left, branches)
    T = cfg.sample_num_steps
    done = None if cache is None else cache / "estimators.npz"
    if done is not None and done.is_file():                     # the whole set, measured before
        stored = np.load(done, allow_pickle=False)
        meta = json.loads(str(stored["meta"]))
        return {name: {**info, "grads": stored[f"grads/{name}"]} for name, info in meta.items()}
    torch.manual_seed(seed)
    model, params = core.load_policy(task, cfg.lora_rank, seed, "cpu")
    reward_fn = task.reward_fn()
    prompts = list(task.train_prompts)
    settings = {"branched_first": (left, branches, groups), "branched_last": (T, branches, groups),
                "single": (T, 1, singles or groups * branches)}
    # pass 1: every sampling, its rewards; z pooled per prompt over all of them
    sampled = {}
    for index, (name, (steps, k, n)) in enumerate(settings.items()):
        traj, images, rows = _sample_groups(model, prompts, cfg, n, steps, k, seed * 100 + index)
        rewards = core.score_in_chunks(reward_fn, torch.floor(images.clamp(0, 1) * 255) / 255, traj.prompts,
                                       cfg.reward_batch_size)
        sampled[name] = (traj, rows, rewards)
    all_prompts = [p for traj, _, _ in sampled.values() for p in traj.prompts]
    z_all = core.HistoryZScore(0).update(all_prompts, np.concatenate([r for _, _, r in sampled.values()]))
    out, at = {}, 0
    for name, (traj, rows, rewards) in sampled.items():
        z, at = z_all[at:at + len(traj)], at + len(traj)
        steps, k, n = settings[name]
        path = None if cache is None else cache / f"{name}.npz"
        if path is not None and path.is_file():
            stored = np.load(path)
            grads = {key: stored[key] for key in stored.files}
        else:
            grads = _setting_gradients(model, params, traj, rows, z, cfg, name, steps, left)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, **grads)
        selected = select_extremes(z, rows, rows.shape[0], cfg.pos_threshold, cfg.neg_threshold)[0]
        for estimator, u in grads.items():
            trained = left if estimator == "no_branch" or (name == "branched_first") else T
            chosen = len(selected) if estimator in ("b2", "no_branch", "neither") else len(traj)
            out[estimator if name == "single" else f"{estimator} ({name})"] = {
                "grads": u, "setting": name, "steps": trained, "queries_per_group": k, "groups": n,
                "selected_per_group": chosen / n, "reward_sd_in_group": float(np.mean(
                    [rewards[r].std() for r in rows.tolist()])) if k > 1 else float("nan")}
    if done is not None:
        meta = {name: {k: v for k, v in info.items() if k != "grads"} for name, info in out.items()}
        np.savez(done, meta=json.dumps(meta), **{f"grads/{name}": info["grads"] for name, info in out.items()})
    return out


def _setting_gradients(model, params, traj, rows, z, cfg, name: str, steps: int, left: int) -> dict[str, np.ndarray]:
    """Per group of one sampling, the gradient of each of its estimators: {estimator: [G, P] float32}."""
    from algorithms.diffusion.b2diffurl import select_extremes

    T = cfg.sample_num_steps
    adv = np.clip(z, -cfg.adv_clip_max, cfg.adv_clip_max)
    beta = np.where(z > 0, cfg.pos_weight, cfg.neg_weight)
    picked = np.zeros(len(z))
    kept, _ = select_extremes(z, rows, rows.shape[0], cfg.pos_threshold, cfg.neg_threshold)
    picked[kept] = 1.0
    b2 = adv * beta * picked
    grads: dict[str, list] = {}
    for g, members in enumerate(rows.tolist()):
        if name == "single":
            # one sample: every estimator is a multiple of its early and late steps' gradients
            early, late = _weighted_gradients(model, params, traj, members,
                                              [([1.0], 0, T - left), ([1.0], T - left, T)], cfg)
            i = members[0]
            rows_out = {"ddpo_all_steps": adv[i] * (early + late), "neither": b2[i] * (early + late),
                        "no_branch": b2[i] * late}
        else:
            estimators = {"b2": b2[members], "ddpo_z": adv[members]}
            if name == "branched_first":
                estimators["centred"] = z[members] - z[members].mean()
            u = _weighted_gradients(model, params, traj, members, [(w, T - steps, T) for w in estimators.values()],
                                    cfg)
            rows_out = dict(zip(estimators, u))
        for key, value in rows_out.items():
            grads.setdefault(key, []).append(value.astype(np.float32))
        if (g + 1) % 10 == 0:
            print(f"  {name}: {g + 1}/{len(rows)} groups", flush=True)
    return {key: np.stack(v) for key, v in grads.items()}


def cosine_summary(u: np.ndarray, v: np.ndarray, same_groups: bool, reps: int = 2000, seed: int = 0) -> dict:
    """Cosine of the mean gradients of u [G, P] and v [H, P] (unbiased squared norms and inner product from
    distinct groups; `same_groups`: u and v are estimators on the same samples, resampled together)."""
    u, v = u.astype(np.float64), v.astype(np.float64)
    guu, gvv, guv = u @ u.T, v @ v.T, u @ v.T

    def cosine(c: np.ndarray, d: np.ndarray) -> float:
        su, _ = snr_from_gram(guu, c)
        sv, _ = snr_from_gram(gvv, d)
        if same_groups:
            cross = (c @ guv @ c - np.sum(c ** 2 * np.diag(guv))) / (c.sum() ** 2 - np.sum(c ** 2))
        else:
            cross = (c @ guv @ d) / (c.sum() * d.sum())
        return float(cross / np.sqrt(su * sv)) if su > 0 and sv > 0 else float("nan")

    point = cosine(np.ones(len(u)), np.ones(len(v)))
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(reps):
        c = np.bincount(rng.integers(len(u), size=len(u)), minlength=len(u)).astype(np.float64)
        d = c if same_groups else np.bincount(rng.integers(len(v), size=len(v)), minlength=len(v)).astype(np.float64)
        if np.count_nonzero(c) < 2 or np.count_nonzero(d) < 2:
            continue
        boot.append(cosine(c, d))
    boot = np.asarray(boot)
    defined = boot[np.isfinite(boot)]
    low, high = np.percentile(defined, [2.5, 97.5]) if len(defined) else (np.nan, np.nan)
    return {"cos_ddpo": point, "cos_low": float(low), "cos_high": float(high),
            "cos_defined": float(len(defined) / max(1, len(boot)))}


def b2_rows(task_id: str, reward: str, estimators: dict[str, dict]) -> list[dict]:
    """Table rows of one prompt set: per estimator r and r per query with CIs, and the cosine with DDPO's."""
    reference = estimators["ddpo_all_steps"]
    rows = []
    for name, e in estimators.items():
        summary = snr_summary(e["grads"].astype(np.float64))
        q = e["queries_per_group"]
        same = e["setting"] == reference["setting"]
        cos = {"cos_ddpo": 1.0, "cos_low": 1.0, "cos_high": 1.0, "cos_defined": 1.0} if name == "ddpo_all_steps" \
            else cosine_summary(e["grads"], reference["grads"], same)
        rows.append({"prompt set": task_id.split("/")[1], "reward": reward, "estimator": name, "groups": e["groups"],
                     "queries_per_group": q, "steps": e["steps"], "selected_per_group": e["selected_per_group"],
                     "reward_sd_in_group": e["reward_sd_in_group"], **summary,
                     "r_per_query": summary["r"] / q, "r_per_query_low": summary["r_low"] / q,
                     "r_per_query_high": summary["r_high"] / q, **cos})
    return rows


def main_b2(args, trials, configs) -> int:
    """--b2: the estimators of the module doc on each set (the grid's reward), plus the positive control."""
    tasks = args.tasks or sorted(configs)
    # composition first, with the positive control right after it: is anything detectable at all?  (DDPO's
    # brightness control was measured on composition too)
    tasks = sorted(tasks, key=lambda t: "composition" not in t)
    jobs = [(task_id, args.reward) for task_id in tasks]
    if args.control != "none":
        jobs.insert(1, (tasks[0], args.control))
    rows = []
    for task_id, reward in jobs:
        trial = next(t for t in trials if t.task_id == task_id)
        kwargs = dict(trial.task_kwargs) | ({"reward": reward} if reward else {})
        task = registry.get(task_id).with_kwargs(**kwargs).make()
        name = f"{task_id.split('/')[1]}_{kwargs['reward']}_g{args.groups}"
        print(f"{task_id} ({kwargs['reward']}): {args.groups} groups", flush=True)
        estimators = b2_group_gradients(task, configs[task_id], args.groups, left=args.left,
                                        singles=args.single_groups or 2 * args.groups,
                                        cache=Path(args.cache) / f"{name}_s{args.single_groups or 2 * args.groups}")
        rows += b2_rows(task_id, kwargs["reward"], estimators)
        for row in rows[-len(estimators):]:
            print(f"  {row['estimator']}: r/query = {row['r_per_query']:.5f} [{row['r_per_query_low']:.5f}, "
                  f"{row['r_per_query_high']:.5f}], cos = {row['cos_ddpo']:.3f}", flush=True)
    write_table(Path(args.out), "gradient_snr_b2", f"B²-DiffuRL gradient signal-to-noise at the base model, t2i "
                f"{args.size} grid's sampler, L = {args.left}, K = 5", pd.DataFrame(rows), B2_NOTE)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="cpu", help="the grid size whose DDPO settings are used (default: cpu)")
    parser.add_argument("--config", type=Path, default=None,
                        help="grid file (default at --size cpu: benchmarks/configs/t2i_shapes32.yaml, the 32 x 32 "
                             "grid that the committed files in results/t2i/diagnostics/cpu/ describe; the 16 x 16 "
                             "default is benchmarks/configs/t2i.yaml; other sizes: t2i.yaml)")
    parser.add_argument("--groups", type=int, default=24, help="independent prompt groups per set (default 24)")
    parser.add_argument("--images-per-group", type=int, default=None,
                        help="images of each group's prompt (default: the grid's sample_images_per_prompt)")
    parser.add_argument("--reward", default=None,
                        help="score with this reward instead of the grid's (e.g. brightness: the positive control "
                             "for the measurement)")
    parser.add_argument("--tasks", nargs="*", default=None, help="task ids (default: the grid's shapes sets)")
    parser.add_argument("--b2", action="store_true",
                        help="measure B²-DiffuRL's estimators and ablations instead (writes gradient_snr_b2.md)")
    parser.add_argument("--left", type=int, default=7, help="--b2: the first interval L (default 7; R = T)")
    parser.add_argument("--single-groups", type=int, default=None,
                        help="--b2: independent single samples (default 2 x --groups)")
    parser.add_argument("--control", default="brightness",
                        help="--b2: also measure this reward on composition (or the first set) as a positive "
                             "control ('none': skip)")
    parser.add_argument("--cache", default=None,
                        help="where group gradients are cached, so an interrupted run resumes (--b2: default "
                             "data/gradient_snr_b2; DDPO: none unless given)")
    parser.add_argument("--subsets", action="store_true",
                        help="DDPO: keep each step's gradient and report r for parameter subsets (all LoRA, cross-"
                             "attention only, self-attention only) x step subsets (all, early half, late half)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; --b2: 1)")
    parser.add_argument("--out", default=None,
                        help="where gradient_snr_<reward>.md / .csv go (default: results/t2i/diagnostics/<size>; "
                             "required with --config)")
    args = parser.parse_args(argv)
    try:
        grid, _, args.out = diagnostic_paths(args.size, args.config, None, args.out)
        if args.groups < 3:
            raise UserError(f"--groups must be >= 3 to separate signal from noise (got {args.groups})")
        if args.threads is not None and args.threads < 1:
            raise UserError(f"--threads must be >= 1 (got {args.threads})")
        if args.subsets and args.b2:
            raise UserError("--subsets measures DDPO's estimator; drop --b2 or --subsets")
        exp = load_experiment("t2i", args.size, grid)
        trials = [t for t in exp.trials() if t.algorithm == "ddpo" and "shapes-" in t.task_id]
        if not trials:
            raise UserError(f"the t2i {args.size} grid has no ddpo trial on a shapes set")
        known = sorted({t.task_id for t in trials})
        unknown = sorted(set(args.tasks or []) - set(known))
        if unknown:
            raise UserError(f"unknown task(s) {', '.join(unknown)}; the grid's shapes sets are {', '.join(known)}")
        from suites.t2i.rewards import check_reward
        for reward in (args.reward, None if args.control == "none" else args.control):
            if reward:
                check_reward(reward)
        if args.b2 and not 1 <= args.left <= 10 ** 6:
            raise UserError(f"--left must be >= 1 (got {args.left})")
        configs = {t.task_id: build_config(Config, t.algo_config, f"trial {t.run_id}") for t in trials}
        if not args.b2 and min(args.images_per_group or c.sample_images_per_prompt for c in configs.values()) < 2:
            raise UserError("one image per prompt has no within-prompt advantage; pass --images-per-group 2 or more")
        if args.b2:
            for cfg in configs.values():
                b2_settings(cfg, args.left, 5)                 # L > T is a one-line error here
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.b2:
        import torch
        torch.set_num_threads(1)                                 # one core, as each trial of a bench
        args.cache = args.cache or "data/gradient_snr_b2"
        return main_b2(args, trials, configs)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    rows = []
    for task_id in args.tasks or known:
        trial, cfg = next(t for t in trials if t.task_id == task_id), configs[task_id]
        k = args.images_per_group or cfg.sample_images_per_prompt
        per_step = cfg.train_batch_size * cfg.gradient_accumulation_steps
        per_run = cfg.sample_batch_size * cfg.sample_num_batches_per_epoch * cfg.num_epochs
        kwargs = dict(trial.task_kwargs) | ({"reward": args.reward} if args.reward else {})
        task = registry.get(task_id).with_kwargs(**kwargs).make()
        cache = None
        if args.cache:
            key = json.dumps([task_id, kwargs, dataclasses.asdict(cfg), k, args.subsets, task.load_model_hashes()],
                             sort_keys=True, default=str)
            cache = Path(args.cache) / f"{task_id.split('/')[1]}_{kwargs['reward']}_k{k}_" \
                                       f"{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        grads, spread, extras = group_gradients(task, cfg, args.groups, k, cache=cache, per_step=args.subsets)
        common = {"prompt set": task_id.split("/")[1], "reward": kwargs["reward"], "groups": args.groups,
                  "images_per_group": k, "reward_sd_in_group": spread}
        if "oracle_binary" in extras:
            wins = extras["oracle_binary"].sum(1)
            common |= {"oracle_binary": float(extras["oracle_binary"].mean()),
                       "mixed_groups": float(np.mean((wins > 0) & (wins < k)))}
        budget = {"queries_per_step": per_step, "queries_per_run": per_run}
        if not args.subsets:
            summary = snr_summary(grads)
            rows.append({**common, **summary, **budget})
            print(f"{task_id}: r = {summary['r']:.4f} [{summary['r_low']:.4f}, {summary['r_high']:.4f}]", flush=True)
            continue
        masks = param_masks(task, cfg)
        for subset, mask in masks.items():
            for steps, chosen in step_subsets(grads.shape[1]).items():
                summary = snr_summary(grads[:, chosen][:, :, mask].sum(1, dtype=np.float64))
                rows.append({**common, "params": subset, "steps": steps, **summary, **budget})
                print(f"{task_id} params {subset} steps {steps}: r = {summary['r']:.4f} [{summary['r_low']:.4f}, "
                      f"{summary['r_high']:.4f}], run snr {summary['r'] * per_run / k:.2f}", flush=True)
    rewards = "_".join(sorted({row["reward"] for row in rows}))
    write_table(Path(args.out), f"gradient_snr_{rewards}", f"DDPO gradient signal-to-noise at the base model, "
                f"reward {rewards}, t2i {args.size} grid", with_budget_bounds(pd.DataFrame(rows)),
                NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
