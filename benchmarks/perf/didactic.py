"""Didactic throughput: gradient updates per second of each algorithm at the cpu grid's settings
(one thread, as each Ray trial runs), and the cost of one ground-truth evaluation."""
from __future__ import annotations

import time

import torch

from algorithms import registry as algo_registry
from benchmarks.config import build_config, load_experiment
from suites import registry


def _rate(fn, seconds: float, warmup: int = 50) -> tuple[float, int]:
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0), n


def measure(seconds: float) -> dict:
    torch.set_num_threads(1)
    out = {"threads": 1}
    for trial in load_experiment("didactic", "cpu", seeds=1).trials():
        module = algo_registry.get(trial.algorithm).load()
        cfg = build_config(module.Config, trial.algo_config, "perf")
        task = registry.get(trial.task_id).make()
        agent_cls = getattr(module, "OneStepFB", None) or getattr(module, "FB")
        torch.manual_seed(0)
        agent = agent_cls(cfg, task.obs_dim, task.action_dim, task.n_actions, task.gamma)
        gen = torch.Generator().manual_seed(0)
        updates, n = _rate(lambda: agent.update(task.sample(cfg.batch_size, gen), gen), seconds)
        evals, m = _rate(lambda: task.evaluate(agent), max(seconds / 5, 0.5), warmup=2)
        out[f"{trial.algorithm}/{trial.task_id}"] = {
            "updates_per_s": round(updates, 1), "ms_per_update": round(1e3 / updates, 3), "updates_timed": n,
            "evals_per_s": round(evals, 1), "steps_in_cpu_grid": cfg.num_steps,
            "est_trial_s": round(cfg.num_steps / updates + (cfg.num_steps / cfg.eval_every) / evals, 1)}
    return out
