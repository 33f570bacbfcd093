"""dmc throughput: updates/s of FB and one-step FB at cpu-like and paper network sizes, the GFLOP/s an
update achieves against this process's own fp32 GEMM rate (measured right before and after, since these
machines are shared and noisy), and reward-free collection env-steps/s with 1 and 2 workers."""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from algorithms.fb import fb, onestep_fb
from suites.dmc.domains import get_domain
from suites.zeroshot import TransitionBatch

DOMAIN = "walker"
# (name, constructor, config): "cpu" = widths 256 and batch 256 (the scale a 2-core budget affords);
# "paper" = the references' ExORL sizes (fb.md §2.1, §3.1).
SIZES = {
    "cpu": {
        "fb": fb.Config(latent_dim=50, batch_size=256, forward_hidden=(256, 256), backward_hidden=(256, 256),
                        actor_hidden=(256, 256), discount=0.98),
        "onestep_fb": onestep_fb.Config(latent_dim=50, batch_size=256, forward_hidden=(256,) * 3,
                                        backward_hidden=(256,) * 3, actor_hidden=(256,) * 3, activation="relu",
                                        alpha=0.0, tanh_squash=False, discount=0.98),
    },
    "paper": {
        "fb": fb.Config(latent_dim=50, batch_size=1024, forward_hidden=(1024, 512), backward_hidden=(256, 256),
                        actor_hidden=(1024, 512), discount=0.98, tau=0.01),
        "onestep_fb": onestep_fb.Config(latent_dim=50, batch_size=1024, forward_hidden=(1024,) * 3,
                                        backward_hidden=(256,) * 3, actor_hidden=(1024,) * 3, activation="relu",
                                        alpha=0.0, tanh_squash=False, discount=0.98, tau=0.01),
    },
}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def gemm_gflops(seconds: float = 1.0, n: int = 1024, device: str = "cpu") -> float:
    """fp32 GEMM rate on `device` (on CUDA an 8192 product, synchronised: the card's fp32 peak)."""
    n = 8192 if device == "cuda" else n
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    _sync(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        _sync(device)
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - t0) / 1e9


def _agent(algo: str, cfg):
    spec = get_domain(DOMAIN)
    cls = fb.FB if algo == "fb" else onestep_fb.OneStepFB
    torch.manual_seed(0)
    return cls(cfg, spec.obs_dim, spec.action_dim, 0, 0.98), spec


def measure_update(algo: str, cfg, seconds: float, bf16: bool = False, device: str = "cpu") -> dict:
    agent, spec = _agent(algo, cfg)
    agent.to(device)
    g = torch.Generator().manual_seed(0)
    n = cfg.batch_size
    batch = TransitionBatch(torch.randn(n, spec.obs_dim, generator=g), torch.rand(n, spec.action_dim, generator=g) * 2 - 1,
                            torch.randn(n, spec.obs_dim, generator=g), torch.rand(n, spec.action_dim, generator=g) * 2 - 1)
    batch = TransitionBatch(*(t.to(device) for t in (batch.obs, batch.action, batch.next_obs, batch.next_action)))

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            agent.update(batch, g)
        _sync(device)

    for _ in range(3):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    gemm_before = gemm_gflops(device=device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        count += 1
    rate = count / (time.perf_counter() - t0)
    gemm = (gemm_before + gemm_gflops(device=device)) / 2
    return {"updates_per_s": round(rate, 2), "ms_per_update": round(1e3 / rate, 1), "gflop_per_update": round(flops / 1e9, 3),
            "gflops": round(flops * rate / 1e9, 1), "gemm_gflops_fp32": round(gemm, 1),
            "fraction_of_gemm": round(flops * rate / 1e9 / gemm, 3), "updates_timed": count}


def measure_collection(seconds: float) -> dict:
    """Env steps/s of the grid's collection (RND explorer at the cpu size) with 1 and 2 workers.  Two rates:
    over the whole call (process start-up included) and steady state (from the end of each worker's first
    episode to the last completed episode, what a long collection sees).  At least 12 episodes, so start-up
    does not dominate.  Each worker runs its own explorer with its own seed frames (cheap random steps, no
    updates), so the seed frames are cut to one episode: with the default 4000 per worker, 2 workers would
    do twice as many cheap steps as 1 and the speedup would flatter them."""
    from suites.dmc.collect import collect

    out = {"explorer": "rnd/cpu, num_seed_frames 1000"}
    steps = max(12_000, int(1000 * seconds))
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            summary = collect(DOMAIN, "rnd", steps, os.path.join(tmp, "d"), workers=workers, progress=False,
                              explorer_config={"size": "cpu", "num_seed_frames": 1000})
        (t0, n0), (t1, n1) = summary["timeline"][workers - 1], summary["timeline"][-1]
        out[f"rnd_{workers}_workers_steps_per_s"] = round(summary["steps_per_second"], 1)
        out[f"rnd_{workers}_workers_steady_steps_per_s"] = round((n1 - n0) / (t1 - t0), 1) if t1 > t0 else None
    out["steps"] = steps
    out["speedup_2_vs_1"] = round(out["rnd_2_workers_steps_per_s"] / out["rnd_1_workers_steps_per_s"], 2)
    if out["rnd_1_workers_steady_steps_per_s"] and out["rnd_2_workers_steady_steps_per_s"]:
        out["steady_speedup_2_vs_1"] = round(out["rnd_2_workers_steady_steps_per_s"]
                                             / out["rnd_1_workers_steady_steps_per_s"], 2)
    return out


def measure(seconds: float) -> dict:
    """Updates at 1 thread (how each Ray trial of the cpu grid runs) and at all cores; collection."""
    cores = os.cpu_count() or 1
    out = {"domain": DOMAIN, "threads": sorted({1, cores}), "updates": {}}
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        for size, configs in SIZES.items():
            for algo, cfg in configs.items():
                out["updates"][f"{algo}/{size}/fp32/{threads}t"] = measure_update(algo, cfg, seconds)
                out["updates"][f"{algo}/{size}/bf16/{threads}t"] = measure_update(algo, cfg, seconds, bf16=True)
    torch.set_num_threads(cores)
    if torch.cuda.is_available():  # the paper size is meant for GPUs: time it there too (fp32 GEMM, no TF32)
        out["cuda_device"] = torch.cuda.get_device_name()
        for algo, cfg in SIZES["paper"].items():
            for bf16 in (False, True):
                key = f"{algo}/paper/{'bf16' if bf16 else 'fp32'}/cuda"
                out["updates"][key] = measure_update(algo, cfg, seconds, bf16=bf16, device="cuda")
                out["updates"][key]["hours_per_1M_updates"] = round(1e6 / out["updates"][key]["updates_per_s"] / 3600, 2)
    out["collection"] = measure_collection(seconds)
    out["pixels"] = measure_pixels(seconds)
    torch.set_num_threads(cores)
    out["targets"] = {"paper_fraction_of_gemm_min": 0.85, "cpu_fraction_of_gemm_min": 0.65,
                      "collection_speedup_2_vs_1_min": 1.6}
    return out


# ---- pixels (issue 18) ------------------------------------------------------------------------------------
PIXEL_SETTINGS = {"image_size": 64, "frame_stack": 3, "render_flags": {"shadow": False, "reflection": False}}
# The cpu grid's pixel networks (benchmarks/configs/dmc.yaml, size cpu): state widths, one shared encoder of
# 3 stride-2 convolutions with 16 channels, batch 64; and, for comparison, DrQ's width (32 channels) at 128.
PIXEL_CPU = {"encoder": "shared", "encoder_arch": "conv_stride2", "encoder_features": 50,
             "encoder_channels": 16, "batch_size": 64}
PIXEL_WIDER = {**PIXEL_CPU, "encoder_channels": 32, "batch_size": 128}


def measure_rendering(episodes: int = 8, length: int = 1000) -> dict:
    """Frames/s of `b2fb render` (walker, camera 0, 64 px, shadows and reflections off) with 1 and 2
    workers on the same random dataset (`episodes` x `length` steps: the datasets' 1000-step episodes; 250-step
    ones gave speedups of 1.51-1.86 from run to run), each from scratch.  Three rates:
    over the call (GL probe and worker start-up included: what a short render costs), at steady state
    (frames per second of the workers' time inside their episodes, times the workers: what a dataset-size
    render approaches) and per CPU second of the workers (what the cores cost)."""
    from suites.dmc.collect import collect
    from suites.dmc.pixels import RenderSettings, render_dataset

    settings = RenderSettings.make(DOMAIN, 64, 0, PIXEL_SETTINGS["render_flags"])
    out = {"domain": DOMAIN, "settings": settings.dirname, "frames": episodes * (length + 1)}
    with tempfile.TemporaryDirectory() as tmp:
        collect(DOMAIN, "random", episodes * length, os.path.join(tmp, "d"), workers=1, episode_length=length,
                progress=False)
        for workers in (1, 2):
            summary = render_dataset(os.path.join(tmp, "d"), settings, workers=workers, progress=False)
            out[f"{workers}_workers_frames_per_s"] = round(summary["frames_per_second"], 1)
            out[f"{workers}_workers_steady_frames_per_s"] = round(
                workers * summary["frames"] / summary["episode_seconds"], 1)
            out[f"{workers}_workers_cpu_ms_per_frame"] = round(1e3 * summary["cpu_seconds_per_frame"], 2)
            out["renderer"] = summary["renderer"]
            import shutil

            shutil.rmtree(summary["out_dir"])
    out["speedup_2_vs_1"] = round(out["2_workers_frames_per_s"] / out["1_workers_frames_per_s"], 2)
    out["steady_speedup_2_vs_1"] = round(
        out["2_workers_steady_frames_per_s"] / out["1_workers_steady_frames_per_s"], 2)
    return out


def measure_pixel_update(algo: str, seconds: float, pixel_config: dict | None = None) -> dict:
    """A pixel update at the cpu grid's size against the same update on the encoder's 50 features (encoder
    none, obs_dim 50): the difference is the encoder's share (forward on s and s', backward, shift).  CPU
    time of this process (robust to other processes on the machine), and FLOPs."""
    pixel_config = pixel_config or PIXEL_CPU
    batch = pixel_config["batch_size"]
    base = dataclasses.asdict(SIZES["cpu"][algo])
    cls = fb.FB if algo == "fb" else onestep_fb.OneStepFB
    spec = get_domain(DOMAIN)
    g = torch.Generator().manual_seed(0)
    shape = (3 * PIXEL_SETTINGS["frame_stack"], 64, 64)
    out = {}
    for name, cfg, obs in (
            ("pixels", {**base, **pixel_config},
             lambda n: torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)),
            ("features", {**base, "batch_size": batch}, lambda n: torch.randn(n, 50, generator=g))):
        config = type(SIZES["cpu"][algo])(**{**cfg, "batch_size": batch})
        torch.manual_seed(0)
        agent = cls(config, shape if name == "pixels" else 50, spec.action_dim, 0, 0.98)
        b = TransitionBatch(obs(batch), torch.rand(batch, spec.action_dim, generator=g) * 2 - 1, obs(batch),
                            torch.rand(batch, spec.action_dim, generator=g) * 2 - 1)
        for _ in range(2):
            agent.update(b, g)
        with FlopCounterMode(display=False) as counter:
            agent.update(b, g)
        count, w0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - w0 < seconds or count < 3:
            agent.update(b, g)
            count += 1
        cpu, wall = (time.process_time() - c0) / count, (time.perf_counter() - w0) / count
        out[name] = {"cpu_ms_per_update": round(1e3 * cpu, 1), "wall_ms_per_update": round(1e3 * wall, 1),
                     "gflop_per_update": round(counter.get_total_flops() / 1e9, 3), "updates_timed": count}
    out["encoder_share_of_cpu_time"] = round(1 - out["features"]["cpu_ms_per_update"]
                                             / out["pixels"]["cpu_ms_per_update"], 3)
    out["encoder_share_of_flops"] = round(1 - out["features"]["gflop_per_update"]
                                          / out["pixels"]["gflop_per_update"], 3)
    return out


def measure_pixels(seconds: float) -> dict:
    """`b2fb perf --suite dmc --part pixels`: rendering with 1 and 2 workers, and a cpu-size pixel update of
    each algorithm (1 thread, as a Ray trial) with the encoder's share, beside the fp32 GEMM rate."""
    torch.set_num_threads(1)
    out = {"threads": 1, "gemm_gflops_fp32_before": round(gemm_gflops(), 1), "updates": {}}
    for algo in ("fb", "onestep_fb"):
        out["updates"][f"{algo}/cpu-pixels/16ch-b64"] = measure_pixel_update(algo, seconds, PIXEL_CPU)
        out["updates"][f"{algo}/cpu-pixels/32ch-b128"] = measure_pixel_update(algo, seconds, PIXEL_WIDER)
    out["gemm_gflops_fp32_after"] = round(gemm_gflops(), 1)
    out["rendering"] = measure_rendering()
    out["targets"] = {"render_speedup_2_vs_1_min": 1.8}
    out["note"] = ("16ch-b64 is the cpu grid's pixel setting; measured with 1 thread, CPU time per update "
                   "(process time) beside wall time: on a shared machine CPU time is the steadier number")
    return out


PARTS = {"pixels": measure_pixels}
