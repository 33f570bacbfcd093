"""t2i throughput, at the cpu grid's DDPO settings on the embedded shapes model (one thread, as each Ray
trial runs):

  sampling      images/s of `core.sample_trajectories` (DDIM with log-probs, CFG) against a plain
                diffusers loop on the same UNet, scheduler and batch (`DDIMScheduler.step`, eta 1, the
                same CFG); and on a tiny random Stable Diffusion folder, against `StableDiffusionPipeline`
                itself.  Target: log-prob sampling costs at most 10% more (ratio <= 1.10).
  training      trained timesteps/s (log-prob recomputation with CFG + backward, at the train batch).
  epoch         the wall time of real DDPO epochs (algorithms/diffusion/ddpo.py through a results
                writer, evaluation excluded) against the time of the same UNet passes alone (sampling
                forwards without grad, training forwards + backwards), replayed on random inputs.
                Target: epoch / UNet passes <= 1.25.
  b2_stage      B²-DiffuRL's branched sampling of one stage (`core.sample_branched_trajectories`, batches of
                8 prompts x K = 5 branches at the cpu sketch's T = 10, for the first and last intervals
                s = 7 and 10) against the same UNet passes alone ((T - s) passes over the CFG-doubled batch
                and s over K times it, no grad, random inputs), and the UNet rows it ran against the formula
                (T - s) + K s evaluations of each batch.  Target: sampling / UNet passes <= 1.10, count exact.
  bench_process what a bench trial's process gains from orchestrate's allocator settings (glibc mmap/trim
                thresholds, set before a local Ray starts): one cpu-grid DDPO sampling batch (16 images, 10
                steps, CFG) and 20 training micro-steps, each timed in child processes started with and
                without the settings, alternating, fastest of the rounds; and the cost of diffusers'
                `unet.dtype` against `core.compute_dtype` (one call per UNet pass).
                `b2fb perf --suite t2i --part bench_process` measures this part alone.
  worker_reuse  what reusing Ray workers saves (orchestrate's reuse_workers): DDPO, the control and
                B²-DiffuRL on one prompt set, shortened to 2 epochs / 1 stage, one trial at a time through
                `run_trials`, with one reused worker and with a fresh worker per trial, alternating; the
                bench's wall time, each trial's, and whether both give the same results (sha256).
                `b2fb perf --suite t2i --part worker_reuse` measures this part alone.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from algorithms.diffusion import core


def _timed(fn, repeats: int) -> float:
    fn()                                                     # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def _plain_sampling(model, prompts, steps: int, guidance: float, generator: torch.Generator) -> torch.Tensor:
    """The diffusers way, no log-probs: scheduler.step with eta=1 and the same CFG."""
    scheduler = model.scheduler
    scheduler.set_timesteps(steps)
    embeds = model.encode_prompts(prompts)
    negative = model.encode_prompts([""] * len(prompts))
    latents = torch.randn((len(prompts), *model.latent_shape), generator=generator)
    with torch.no_grad():
        for t in scheduler.timesteps:
            noise = core.predict_noise(model.unet, latents, t.repeat(len(prompts)), embeds, negative, guidance)
            latents = scheduler.step(noise, t, latents, eta=1.0, generator=generator).prev_sample
        return model.decode(latents)


def _ddpo_task():
    """The cpu grid's first DDPO trial, its config and its task: (trial, config, task)."""
    from algorithms.diffusion import ddpo
    from benchmarks.config import build_config, load_experiment
    from suites import registry

    trial = next(t for t in load_experiment("t2i", "cpu", seeds=1).trials() if t.algorithm == "ddpo")
    task = registry.get(trial.task_id).with_kwargs(**trial.task_kwargs).make()
    return trial, build_config(ddpo.Config, trial.algo_config, "perf"), task


def measure_sampling(model, cfg, repeats: int) -> dict:
    prompts = ["a red circle"] * cfg.sample_batch_size
    ours = _timed(lambda: core.sample_trajectories(model, prompts, cfg.sample_num_steps, cfg.guidance_scale,
                                                   cfg.sample_eta, generator=torch.Generator().manual_seed(0)),
                  repeats)
    plain = _timed(lambda: _plain_sampling(model, prompts, cfg.sample_num_steps, cfg.guidance_scale,
                                           torch.Generator().manual_seed(0)), repeats)
    return {"batch": len(prompts), "steps": cfg.sample_num_steps, "images_per_s_logprob": round(len(prompts) / ours, 2),
            "images_per_s_plain_diffusers_loop": round(len(prompts) / plain, 2), "cost_ratio": round(ours / plain, 3)}


def measure_sd_pipeline(repeats: int) -> dict:
    """Tiny random SD folder: our sampler against StableDiffusionPipeline.__call__ (same model, CFG 5)."""
    from diffusers import StableDiffusionPipeline

    from suites.t2i.sd import build_tiny_sd_folder, load_sd_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_sd_folder(Path(tmp) / "sd")
        model = load_sd_model(folder, hash_weights=False)
        pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False,
                                                       local_files_only=True)
        pipe.scheduler = model.scheduler
        pipe.set_progress_bar_config(disable=True)
        prompts, steps = ["a cat riding a bike"] * 8, 20
        ours = _timed(lambda: core.sample_trajectories(model, prompts, steps, 5.0, 1.0,
                                                       generator=torch.Generator().manual_seed(0)), repeats)
        plain = _timed(lambda: pipe(prompts, num_inference_steps=steps, guidance_scale=5.0, eta=1.0,
                                    generator=torch.Generator().manual_seed(0), output_type="pt"), repeats)
    return {"batch": 8, "steps": steps, "images_per_s_logprob": round(8 / ours, 2),
            "images_per_s_StableDiffusionPipeline": round(8 / plain, 2), "cost_ratio": round(ours / plain, 3)}


def measure_training(model, cfg, repeats: int) -> dict:
    prompts = ["a red circle"] * cfg.train_batch_size
    traj = core.sample_trajectories(model, prompts, cfg.sample_num_steps, cfg.guidance_scale, cfg.sample_eta,
                                    generator=torch.Generator().manual_seed(0))

    def step():
        lp = core.log_prob_of_step(model, traj.latents[:, 3], traj.timesteps[:, 3], traj.latents[:, 4],
                                   traj.prompt_embeds, traj.negative_embeds, cfg.guidance_scale, cfg.sample_eta,
                                   num_steps=cfg.sample_num_steps)
        lp.sum().backward()

    seconds = _timed(step, repeats)
    return {"train_batch": cfg.train_batch_size, "trained_timesteps_per_s": round(cfg.train_batch_size / seconds, 2)}


class _EpochClock:
    """A results writer for perf: records when each epoch ends; writes nothing that matters."""

    def __init__(self, root: Path, seed: int = 0):
        self.seed, self.root, self.ends, self.eval_seconds = seed, root, [], 0.0
        self.device = "cpu"

    def log(self, *a, **k):
        pass

    def add_samples(self, *a, **k):
        pass

    def save_artifact(self, *a, **k):
        pass

    def save_checkpoint(self, *a, **k):
        pass

    def load_checkpoint(self):
        return None

    def progress(self, iterable, total, initial=0):
        self.ends.append(time.perf_counter())
        for step in iterable:
            yield step
            self.ends.append(time.perf_counter())


def measure_epoch(task, cfg, epochs: int) -> dict:
    from algorithms.diffusion import ddpo

    import dataclasses
    cfg = dataclasses.replace(cfg, num_epochs=epochs, eval_every=0, checkpoint_every=10 ** 6)
    # evaluation is not part of an epoch: give the task a no-op evaluation for this measurement
    task = dataclasses.replace(task)
    task.evaluate = lambda generate, step, seed=0: type("E", (), {"metrics": {}, "samples": [], "grid_png": b""})()
    with tempfile.TemporaryDirectory() as tmp:
        clock = _EpochClock(Path(tmp))
        ddpo.run(task, cfg, clock)
    durations = [b - a for a, b in zip(clock.ends[:-1], clock.ends[1:])]
    epoch = min(durations[1:] or durations)                     # the first epoch warms up

    # the same UNet passes alone, on random inputs
    model = task.load_model()
    core.add_lora(model.unet, rank=cfg.lora_rank, seed=0)
    c, h, w = model.latent_shape
    emb = model.encode_prompts(["a red circle"])
    cfg_double = cfg.guidance_scale > 1
    n_sample = cfg.sample_batch_size * (2 if cfg_double else 1)
    n_train = cfg.train_batch_size * (2 if cfg.train_cfg and cfg_double else 1)
    t = torch.tensor([500])

    def sample_pass():
        with torch.no_grad():
            model.unet(torch.randn(n_sample, c, h, w), t.repeat(n_sample), emb.expand(n_sample, -1, -1)).sample

    def train_pass():
        out = model.unet(torch.randn(n_train, c, h, w), t.repeat(n_train), emb.expand(n_train, -1, -1)).sample
        out.mean().backward()

    per_epoch = cfg.sample_batch_size * cfg.sample_num_batches_per_epoch
    unet_only = (_timed(sample_pass, 5) * cfg.sample_num_steps * cfg.sample_num_batches_per_epoch
                 + _timed(train_pass, 5) * cfg.num_train_timesteps * (per_epoch // cfg.train_batch_size)
                 * cfg.num_inner_epochs)
    return {"epoch_seconds": round(epoch, 2), "unet_passes_alone_seconds": round(unet_only, 2),
            "ratio": round(epoch / unet_only, 3), "epochs_timed": len(durations)}


def measure_b2_stage(model, cfg, repeats: int, batches: int = 2, branches: int = 5) -> dict:
    """A B² stage's sampling (module doc) at the cpu grid's sampler for intervals s = 7 and s = T.  The two
    timings alternate round by round and each keeps its fastest round, so that other load on a shared
    machine (which only ever adds time) affects both alike."""
    import time

    T, B = cfg.sample_num_steps, 8
    c, h, w = model.latent_shape
    emb = model.encode_prompts(["a red circle"])
    out = {"T": T, "K": branches, "batch": B, "batches": batches, "rounds": repeats + 1}
    for s in (7, T):
        rows = []

        def stage():
            generator = torch.Generator().manual_seed(0)
            for _ in range(batches):
                core.sample_branched_trajectories(model, ["a red circle"] * B, T, s, branches, cfg.guidance_scale,
                                                  cfg.sample_eta, generator=generator)
        x = {n: torch.randn(n, c, h, w) for n in (2 * B, 2 * B * branches)}

        def bare():
            with torch.no_grad():
                for _ in range(batches):
                    for n in [2 * B] * (T - s) + [2 * B * branches] * s:
                        model.unet(x[n], torch.full((n,), 500), emb.expand(n, -1, -1)).sample

        timings = {"sampling": [], "bare": []}
        for round_ in range(repeats + 1):
            for name, fn in (("sampling", stage), ("bare", bare)):
                hook = model.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0])) \
                    if name == "sampling" and round_ == 0 else None
                t0 = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - t0)
                if hook is not None:
                    hook.remove()
        per_batch = sum(rows) // batches // (2 * B)              # CFG rows / (2 B): evaluations of a batch
        sampling, unet_only = min(timings["sampling"]), min(timings["bare"])
        out[f"s{s}"] = {"stage_sampling_seconds": round(sampling, 3), "unet_passes_alone_seconds": round(unet_only, 3),
                        "ratio": round(sampling / unet_only, 3), "unet_evals_per_batch": per_batch,
                        "formula_T_minus_s_plus_K_s": (T - s) + branches * s,
                        "count_matches": per_batch == (T - s) + branches * s}
    return out


def _bench_workload() -> None:
    """Child of `measure_bench_process`: times one cpu-grid DDPO sampling batch and 20 training micro-steps
    (fastest of 3 after a warm-up) on the 16 x 16 shapes model with LoRA; prints them as JSON."""
    import json

    torch.set_num_threads(1)
    _, cfg, task = _ddpo_task()
    model, _ = core.load_policy(task, cfg.lora_rank, 0, "cpu")
    prompts = list(task.train_prompts)[:cfg.sample_batch_size // cfg.sample_images_per_prompt]
    prompts = [p for p in prompts for _ in range(cfg.sample_images_per_prompt)]

    def sample():
        model.unet.eval()
        return core.sample_trajectories(model, prompts, cfg.sample_num_steps, cfg.guidance_scale, cfg.sample_eta,
                                        generator=torch.Generator().manual_seed(0))

    traj = sample()
    n = cfg.train_batch_size

    def train():
        model.unet.train()
        for i in range(20):
            j = i % cfg.sample_num_steps
            core.log_prob_of_step(model, traj.latents[:n, j], traj.timesteps[:n, j], traj.latents[:n, j + 1],
                                  traj.prompt_embeds[:n], traj.negative_embeds[:n], cfg.guidance_scale,
                                  cfg.sample_eta, num_steps=cfg.sample_num_steps).sum().backward()

    out = {}
    for name, fn in (("sampling_batch_seconds", sample), ("train_20_micro_steps_seconds", train)):
        fn()
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = min(times)
    print(json.dumps(out))


def measure_bench_process(seconds: float) -> dict:
    """The `bench_process` part (module doc)."""
    import json
    import os
    import subprocess
    import sys

    from benchmarks.orchestrate import ALLOCATOR_SETTINGS

    base = {k: v for k, v in os.environ.items() if k not in dict(ALLOCATOR_SETTINGS)}
    variants = {"glibc_default": base, "bench_settings": {**base, **dict(ALLOCATOR_SETTINGS)}}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(max(2, int(seconds // 30))):
        for name, env in variants.items():
            child = subprocess.run([sys.executable, "-c", "from benchmarks.perf.t2i import _bench_workload; "
                                    "_bench_workload()"], env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(child.stdout.strip().splitlines()[-1]))
    out: dict = {"threads": 1, "allocator_settings": dict(ALLOCATOR_SETTINGS), "rounds": len(runs["bench_settings"])}
    for key in runs["glibc_default"][0]:
        fastest = {name: min(r[key] for r in rows) for name, rows in runs.items()}
        out[key] = {**{name: round(v, 3) for name, v in fastest.items()},
                    "ratio_bench_over_default": round(fastest["bench_settings"] / fastest["glibc_default"], 3)}

    torch.set_num_threads(1)
    _, cfg, task = _ddpo_task()
    model, _ = core.load_policy(task, cfg.lora_rank, 0, "cpu")
    calls = {}
    for name, fn in (("diffusers_unet_dtype", lambda: model.unet.dtype),
                     ("core_compute_dtype", lambda: core.compute_dtype(model.unet))):
        calls[name] = round(_timed(fn, 200) * 1e3, 4)
    out["dtype_ms_per_call"] = calls
    return out


def measure_worker_reuse(seconds: float) -> dict:
    """The `worker_reuse` part (module doc)."""
    from benchmarks.config import load_experiment
    from benchmarks.orchestrate import run_trials
    from benchmarks.results import read_manifest, run_dir

    shorter = [f"{a}.{k}={v}" for a in ("ddpo", "ddpo_shuffled") for k, v in (("num_epochs", 2), ("eval_every", 2))]
    shorter += ["b2diffurl.num_stages=1", "b2diffurl.eval_every=1"]
    trials = load_experiment("t2i", "cpu", overrides=shorter, seeds=1, tasks=["t2i/shapes-spatial-v0"]).trials()
    runs: dict[str, list[dict]] = {"reused_worker": [], "fresh_workers": []}
    for _ in range(max(2, int(seconds // 120))):
        for name, reuse in (("reused_worker", True), ("fresh_workers", False)):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                run_trials(trials, Path(tmp) / "results", Path(tmp) / "ray", max_concurrent=1,
                           experiment_name="perf-worker-reuse", show_progress=False, reuse_workers=reuse)
                wall = time.perf_counter() - t0
                manifests = [read_manifest(run_dir(Path(tmp) / "results", t)) for t in trials]
            runs[name].append({"bench_seconds": wall, "trials": {m["algorithm"]: m["wall_time_s"] for m in manifests},
                               "sha256": [m["result_sha256"] for m in manifests]})
    fastest = {name: min(rows, key=lambda r: r["bench_seconds"]) for name, rows in runs.items()}
    reused, fresh = fastest["reused_worker"], fastest["fresh_workers"]
    return {"threads": 1, "trials_in_sequence": [t.algorithm for t in trials], "rounds": len(runs["reused_worker"]),
            "bench_seconds_all_rounds": {name: [round(r["bench_seconds"], 1) for r in rows]
                                         for name, rows in runs.items()},
            "fastest_bench_seconds": {"reused_worker": round(reused["bench_seconds"], 1),
                                      "fresh_workers": round(fresh["bench_seconds"], 1),
                                      "ratio_reused_over_fresh": round(reused["bench_seconds"] / fresh["bench_seconds"], 3)},
            "saved_seconds_per_later_trial": round((fresh["bench_seconds"] - reused["bench_seconds"])
                                                   / (len(trials) - 1), 1),
            "trial_wall_seconds_in_fastest": {"reused_worker": reused["trials"], "fresh_workers": fresh["trials"]},
            "same_results": all(r["sha256"] == runs["reused_worker"][0]["sha256"]
                                for rows in runs.values() for r in rows)}


PARTS = {"bench_process": measure_bench_process, "worker_reuse": measure_worker_reuse}


def measure(seconds: float) -> dict:
    torch.set_num_threads(1)
    trial, cfg, task = _ddpo_task()
    model = task.load_model()
    repeats = max(1, int(seconds // 5))
    out = {"threads": 1, "task": trial.task_id, "ddpo": {k: getattr(cfg, k) for k in (
        "sample_num_steps", "guidance_scale", "sample_batch_size", "sample_num_batches_per_epoch",
        "train_batch_size")}}
    out["sampling_shapes"] = measure_sampling(model, cfg, repeats)
    out["sampling_tiny_sd"] = measure_sd_pipeline(repeats)
    core.add_lora(model.unet, rank=cfg.lora_rank, seed=0)
    out["training"] = measure_training(model, cfg, repeats * 4)
    out["epoch"] = measure_epoch(task, cfg, epochs=3)
    out["b2_stage"] = measure_b2_stage(model, cfg, repeats)
    out["bench_process"] = measure_bench_process(seconds)
    out["worker_reuse"] = measure_worker_reuse(seconds)
    out["targets"] = {"logprob_sampling_cost_ratio_max": 1.10, "epoch_over_unet_max": 1.25,
                      "b2_stage_sampling_over_unet_max": 1.10}
    return out
