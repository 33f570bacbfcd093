"""dmc throughput: updates/s of FB and one-step FB at cpu-like and paper network sizes, the GFLOP/s an
update achieves against this process's own fp32 GEMM rate (measured right before and after, since these
machines are shared and noisy), and reward-free collection env-steps/s with 1 and 2 workers."""
from __future__ import annotations

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
    out["targets"] = {"paper_fraction_of_gemm_min": 0.85, "cpu_fraction_of_gemm_min": 0.65,
                      "collection_speedup_2_vs_1_min": 1.6}
    return out
