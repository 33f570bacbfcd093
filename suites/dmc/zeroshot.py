"""The dmc suite's zero-shot benchmark tasks: one per domain (`dmc/walker-zeroshot-v0`, ...).

Zero-shot RL trains ONCE per domain on reward-free data and then reads off a policy for every task of
the domain, so the unit of a trial is the domain; its evaluation covers all the domain's tasks (the
per-task ids such as `dmc/walker-flip-v0` name those evaluation tasks).

Protocol (fb.md §5.2, §7.1; the one-step FB reference unless said otherwise):
  data        an ExORL-format dataset of the domain (suites/dmc/dataset.py): train = the first
              `train_size` transitions, validation = the next `val_size`; transitions follow the
              reference's index shift (s_t, a_t, r(s_{t+1}), s_{t+1}, a_{t+1}).
  inference   per task, z from the first `inference_samples` validation transitions with that task's
              reward r(s_{t+1}) (rewards are stored per task at collection, equal to relabelling).
  evaluation  per task, `eval_episodes` episodes with the agent's deterministic action, environment seeds
              eval_seed, eval_seed + 1, ...; the undiscounted return of each episode is one sample row.
  metrics     `<task>/return` (mean over the episodes) and `return` (mean over the domain's tasks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from suites.dmc.dataset import default_dataset_dir
from suites.dmc.domains import get_domain
from suites.errors import UserError
from suites.zeroshot import EvalResult, TransitionBatch

__all__ = ["DMCZeroShotTask", "make_zeroshot_task"]

EXPLORERS = ("random", "rnd")  # suites.dmc.collect.EXPLORERS (not imported here: collection is heavy)


def make_zeroshot_task(domain: str, dataset: str | None = None, data_root: str | None = None,
                       explorer: str = "rnd", collect_size: str = "cpu", collect_steps: int = 0,
                       collect_episode_length: int | None = None,
                       train_size: int = 100_000, val_size: int = 10_000, inference_samples: int = 10_000,
                       eval_episodes: int = 10, eval_seed: int = 1, gamma: float = 0.98,
                       tasks: tuple[str, ...] | list[str] | None = None) -> "DMCZeroShotTask":
    """Registry entry point.  `dataset` is a directory; without it the dataset lives under
    `<data_root>/dmc/<domain>-<explorer>-<collect_size>` and, when `collect_steps` > 0, `prepare()`
    collects it on first use."""
    spec = get_domain(domain)
    if dataset is None and data_root is None:
        raise UserError(f"dmc/{domain}: no dataset given; set the task kwarg 'dataset' to an ExORL-format "
                        f"directory, or run through `b2fb run`, which places datasets under --data-dir")
    for name, value in (("train_size", train_size), ("val_size", val_size), ("inference_samples", inference_samples),
                        ("eval_episodes", eval_episodes)):
        if int(value) < 1:
            raise UserError(f"dmc/{domain}: task kwarg {name} must be at least 1, got {value}")
    for name, value, low in (("collect_steps", collect_steps, 0), ("eval_seed", eval_seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserError(f"dmc/{domain}: task kwarg {name} must be an integer >= {low}, got {value!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma < 1.0:
        raise UserError(f"dmc/{domain}: task kwarg gamma must be a number in [0, 1), got {gamma!r}")
    if explorer not in EXPLORERS:
        raise UserError(f"dmc/{domain}: task kwarg explorer={explorer!r} is not one of {', '.join(EXPLORERS)}")
    if inference_samples > val_size:
        raise UserError(f"dmc/{domain}: inference_samples ({inference_samples}) exceeds val_size ({val_size})")
    chosen = tuple(tasks) if tasks else spec.tasks
    unknown = [t for t in chosen if t not in spec.tasks]
    if unknown:
        raise UserError(f"dmc/{domain}: unknown task {unknown[0]!r}; the domain's tasks are {', '.join(spec.tasks)}")
    path = (Path(dataset) if dataset else
            default_dataset_dir(data_root, domain, explorer, collect_size, collect_episode_length))
    task = DMCZeroShotTask(domain, path, explorer, collect_size, int(collect_steps), int(train_size), int(val_size),
                           int(inference_samples), int(eval_episodes), int(eval_seed), float(gamma), chosen)
    task.collect_episode_length = collect_episode_length
    return task


class DMCZeroShotTask:
    discrete_actions = False
    n_actions = None

    def __init__(self, domain: str, path: Path, explorer: str, collect_size: str, collect_steps: int,
                 train_size: int, val_size: int, inference_samples: int, eval_episodes: int, eval_seed: int,
                 gamma: float, tasks: tuple[str, ...]):
        self.domain, self.path, self.tasks, self.gamma = domain, Path(path), tasks, gamma
        spec = get_domain(domain)
        self.obs_dim, self.action_dim = spec.obs_dim, spec.action_dim
        self.episode_length = spec.episode_length
        self.explorer, self.collect_size, self.collect_steps = explorer, collect_size, collect_steps
        self.train_size, self.val_size = train_size, val_size
        self.inference_samples, self.eval_episodes, self.eval_seed = inference_samples, eval_episodes, eval_seed
        self._train = self._val = None

    # ---- data ----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Make sure the dataset exists: when the grid asks for collection (`collect_steps` > 0), collect
        what is missing with both cores (resumable; a complete dataset is reused as it is)."""
        import os

        from suites.dmc.collect import collect
        from suites.dmc.dataset import check_present

        if self.collect_steps > 0:
            print(f"dmc/{self.domain}: dataset {self.path} ({self.collect_steps} transitions, {self.explorer})",
                  flush=True)
            collect(self.domain, self.explorer, self.collect_steps, self.path, workers=min(2, os.cpu_count() or 1),
                    explorer_config=self.collect_size if self.explorer == "rnd" else None,
                    episode_length=self.collect_episode_length)
        else:  # a given dataset (e.g. an ExORL download): fail here, in one line, not inside every trial
            check_present(self.path, self.domain)

    def validate(self) -> None:
        """Before any trial starts: a given dataset (`collect_steps` 0, e.g. an ExORL download) is read once
        and checked (presence, layout, dimensions, meta.json hashes; nothing is relabelled), so a bad one is
        one line here, not a failure inside every trial.  A dataset still to be collected is checked by
        `prepare`."""
        if self.collect_steps == 0:
            from suites.dmc.dataset import check_present, load_dataset

            check_present(self.path, self.domain)
            load_dataset(self.path, self.domain, size=self.train_size + self.val_size, check_only=True)

    def _load(self) -> None:
        if self._train is None:
            from suites.dmc.dataset import load_dataset, split_dataset

            data = load_dataset(self.path, self.domain, size=self.train_size + self.val_size)
            self._train, self._val = split_dataset(data, self.train_size, self.val_size)
            self._sha256 = data.sha256
            t = self._train
            self._tensors = tuple(torch.from_numpy(np.ascontiguousarray(a))
                                  for a in (t.obs, t.action, t.next_obs, t.next_action))

    def sample(self, batch_size: int, generator: torch.Generator) -> TransitionBatch:
        self._load()
        idx = torch.randint(0, len(self._train), (batch_size,), generator=generator)
        obs, action, next_obs, next_action = (t[idx] for t in self._tensors)
        return TransitionBatch(obs, action, next_obs, next_action)

    def data_hashes(self) -> dict[str, str]:
        self._load()
        return {f"dataset:{self.domain}": self._sha256}

    # ---- evaluation ----------------------------------------------------------------------------------
    def inference_batch(self, task: str) -> tuple[TransitionBatch, torch.Tensor]:
        self._load()
        v, n = self._val, self.inference_samples
        batch = TransitionBatch(*(torch.from_numpy(np.ascontiguousarray(a[:n]))
                                  for a in (v.obs, v.action, v.next_obs, v.next_action)))
        return batch, torch.from_numpy(np.ascontiguousarray(v.rewards[task][:n]))

    @torch.no_grad()
    def evaluate(self, agent: Any) -> EvalResult:
        rows, metrics = [], {}
        for task in self.tasks:
            batch, reward = self.inference_batch(task)
            z = agent.infer_task_vector(batch, reward)
            returns = self.rollout(task, lambda obs: agent.act(torch.from_numpy(obs), z).numpy())
            metrics[f"{task}/return"] = float(np.mean(returns))
            rows += [{"task": task, "episode": i, "return": float(r)} for i, r in enumerate(returns)]
        metrics["return"] = float(np.mean([metrics[f"{t}/return"] for t in self.tasks]))
        return EvalResult(metrics, rows)

    def rollout(self, task: str, policy, episodes: int | None = None) -> list[float]:
        """Undiscounted returns of `episodes` episodes run in lockstep (one batched policy call per step)."""
        from suites.dmc.envs import DMCEnv

        episodes = episodes or self.eval_episodes
        envs = [DMCEnv(self.domain, task) for _ in range(episodes)]
        obs = np.stack([env.reset(seed=self.eval_seed + i) for i, env in enumerate(envs)])
        returns = np.zeros(episodes)
        for _ in range(self.episode_length):
            actions = np.asarray(policy(obs), dtype=np.float64).reshape(episodes, self.action_dim)
            steps = [env.step(a) for env, a in zip(envs, actions)]
            obs = np.stack([s[0] for s in steps])
            returns += [s[1] for s in steps]
        return returns.tolist()
