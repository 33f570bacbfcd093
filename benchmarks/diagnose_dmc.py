"""Why does a zero-shot agent fail on a dmc domain?  Train one agent as the cpu grid does, then check it
against what the data itself says (the dmc analogue of the didactic ground-truth check):

  q_corr        per task, Pearson correlation between the agent's Q(s, a) = F(s, a)^T z (one-step FB: the
                behaviour policy's Q) and the Monte-Carlo discounted return of the data's own continuation
                (validation episodes, gamma of the task); near 1 means the representation and the
                inference of z are right for that reward, whatever the policy does
  q_scale       slope of predicted against Monte-Carlo Q (1 = calibrated)
  action_abs    mean |a| of the agent's deterministic action on validation states, and the share of
                components at the bound (|a| > 0.99), against the data's own actions
  return        zero-shot return per task (the grid's evaluation protocol), beside uniform random

    python -m benchmarks.diagnose_dmc --domain quadruped --algorithm onestep_fb --steps 8000 --out d.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.config import build_config, load_experiment
from suites import registry
from suites.dmc.domains import zeroshot_task_id
from suites.errors import UserError


def monte_carlo_returns(rewards: np.ndarray, last: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Discounted return of each row's continuation within its episode, and a mask of rows whose
    continuation is long enough (>= 4 / (1 - gamma) steps before the episode ends) to be trusted."""
    out = np.zeros_like(rewards, dtype=np.float64)
    to_end = np.zeros(len(rewards), dtype=np.int64)
    running, steps = 0.0, 0
    for i in range(len(rewards) - 1, -1, -1):
        if last[i]:
            running, steps = 0.0, 0
        running = rewards[i] + gamma * running
        steps += 1
        out[i], to_end[i] = running, steps
    return out, to_end >= int(4 / (1 - gamma))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--algorithm", default="onestep_fb", choices=("onestep_fb", "fb"))
    parser.add_argument("--steps", type=int, default=8000, help="gradient steps (the cpu grid: 8000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="ALGO.KEY=VALUE",
                        help="override a config field of the cpu grid, e.g. --set onestep_fb.tanh_squash=true")
    parser.add_argument("--out", default=None, help="write the report here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        exp = load_experiment("dmc", "cpu", seeds=1, overrides=args.overrides)
        trial = next((t for t in exp.trials() if t.algorithm == args.algorithm
                      and t.task_id == zeroshot_task_id(args.domain)), None)
        if trial is None:
            raise UserError(f"no cpu-grid trial for {args.algorithm} on {args.domain}")
        from algorithms import registry as algo_registry
        module = algo_registry.get(args.algorithm).load()
        cfg = build_config(module.Config, {**trial.algo_config, "num_steps": args.steps}, "diagnose")
        kwargs = dict(trial.task_kwargs)
        kwargs["data_root"] = kwargs.get("data_root") or str(Path("data").resolve())
        task = registry.get(trial.task_id).with_kwargs(**kwargs).make()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    task.prepare()
    torch.manual_seed(args.seed)
    gamma = task.gamma if cfg.discount is None else cfg.discount
    agent_cls = module.OneStepFB if args.algorithm == "onestep_fb" else module.FB
    agent = agent_cls(cfg, task.obs_dim, task.action_dim, 0, gamma)
    generator = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(1, cfg.num_steps + 1):
        agent.update(task.sample(cfg.batch_size, generator), generator)
        if step % 1000 == 0:
            print(f"step {step} ({time.time() - t0:.0f} s)", flush=True)
    val = task._val
    obs, action = torch.from_numpy(np.ascontiguousarray(val.obs)), torch.from_numpy(np.ascontiguousarray(val.action))
    report = {"domain": args.domain, "algorithm": args.algorithm, "steps": args.steps, "seed": args.seed,
              "overrides": args.overrides,
              "train_seconds": round(time.time() - t0, 1), "tasks": {}}
    with torch.no_grad():
        for name in task.tasks:
            batch, reward = task.inference_batch(name)
            z = agent.infer_task_vector(batch, reward)
            mc, ok = monte_carlo_returns(np.asarray(val.rewards[name], np.float64).ravel(), np.asarray(val.last), gamma)
            q = agent.predict_q(obs, action, z).double().numpy().ravel()
            a = agent.act(obs, z).numpy()
            slope = float(np.polyfit(mc[ok], q[ok], 1)[0]) if mc[ok].std() > 0 else float("nan")
            returns = task.rollout(name, lambda o: agent.act(torch.from_numpy(o), z).numpy(), episodes=5)
            rng = np.random.default_rng(0)   # one stream for the whole rollout: uniform random actions
            rand = task.rollout(name, lambda o: rng.uniform(-1, 1, (len(o), task.action_dim)), episodes=5)
            report["tasks"][name] = {
                "q_corr": round(float(np.corrcoef(q[ok], mc[ok])[0, 1]), 3) if mc[ok].std() > 0 else None,
                "q_scale": round(slope, 3), "mc_mean": round(float(mc[ok].mean()), 3),
                "q_mean": round(float(q[ok].mean()), 3),
                "action_abs": round(float(np.abs(a).mean()), 3), "action_at_bound": round(float((np.abs(a) > 0.99).mean()), 3),
                "data_action_abs": round(float(np.abs(val.action).mean()), 3),
                "return": round(float(np.mean(returns)), 1), "random_return": round(float(np.mean(rand)), 1)}
            print(name, report["tasks"][name], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
