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


# ---- pixels -----------------------------------------------------------------------------------------------
def make_pixel_zeroshot_task(domain: str, image_size: int = 64, frame_stack: int = 3,
                             camera: int | str | None = None,
                             render_flags: dict | None = None, eval_episode_length: int | None = None,
                             **state_kwargs) -> "DMCPixelZeroShotTask":
    """Registry entry point of `dmc/<domain>-zeroshot-pixels-v<version>`: the state task's data, split and
    protocol (every kwarg of `make_zeroshot_task`), observed through a camera (suites/dmc/pixels.py).

    image_size, camera, render_flags: what a frame is (dm_control `render_flag_overrides`, e.g.
        {shadow: false, reflection: false}); frame_stack: frames per observation (channels [3k, size, size]);
    eval_episode_length: shorter evaluation episodes, for smoke runs only (None: the domain's length)."""
    from suites.dmc.pixels import RenderSettings

    state = make_zeroshot_task(domain, **state_kwargs)
    settings = RenderSettings.make(domain, image_size, camera, render_flags)
    if isinstance(frame_stack, bool) or not isinstance(frame_stack, int) or not 1 <= frame_stack <= 16:
        raise UserError(f"dmc/{domain}: task kwarg frame_stack must be an integer in [1, 16], got "
                        f"{frame_stack!r}")
    spec = get_domain(domain)
    if eval_episode_length is not None and (isinstance(eval_episode_length, bool) or not isinstance(
            eval_episode_length, int) or not 1 <= eval_episode_length <= spec.episode_length):
        raise UserError(f"dmc/{domain}: task kwarg eval_episode_length must be an integer in [1, "
                        f"{spec.episode_length}] or null, got {eval_episode_length!r}")
    task = DMCPixelZeroShotTask.__new__(DMCPixelZeroShotTask)
    task.__dict__.update(state.__dict__)
    task.settings, task.frame_stack = settings, frame_stack
    task.obs_dim = (3 * frame_stack, settings.size, settings.size)
    if eval_episode_length is not None:
        task.episode_length = eval_episode_length
    task._renderer = None
    return task


class DMCPixelZeroShotTask(DMCZeroShotTask):
    """The zero-shot task of a domain from pixels.  Transitions, rewards, split and inference rows are the
    state task's, one for one; observations are stacks of rendered frames, uint8 [3k, size, size].

    Data: `prepare` collects the state dataset as the state task does, then renders the frames of the
    episodes a trial loads (resumable; 2 workers).  Evaluation: the lockstep rollout renders every
    environment after each step and keeps its last k frames (the reset frame repeated at the start, as the
    data's stacks are clamped).  Agents that do not look at observations (the fixed-policy baselines,
    `uses_observations = False`) are evaluated without rendering: their returns are those of the state task.
    The manifest's data hashes record the frames' sha256 and the GL renderer of the data and of the
    evaluation."""

    # ---- data ----------------------------------------------------------------------------------------
    def _state_files(self) -> tuple[Path, list[str], dict[str, str]]:
        """The state dataset directory, the episode files a trial loads, and every state file's sha256."""
        from suites.dmc import dataset as ds
        from suites.dmc.pixels import _state_meta

        directory = ds._resolve_directory(self.path.expanduser().resolve(), self.domain)
        files, _ = ds.list_episode_files(directory)
        lengths = [ds._episode_length_of(p.name) for p in files]
        start, stop = ds._select_episodes(lengths, 0, self.train_size + self.val_size)
        hashes = _state_meta(directory, self.domain).get("files") or {}
        return directory, [p.name for p in files[start:stop]], hashes

    def validate(self) -> None:
        """Before any trial: frames already rendered were rendered from today's state files, the state dataset
        is sound when it is given, and rendering works here (camera, GL backend: one frame in a fresh
        process)."""
        from suites.dmc import dataset as ds
        from suites.dmc.pixels import check_not_stale, probe

        if self.path.exists() and any(self.path.glob("*.npz")) and (
                (ds.read_meta(self.path) or {}).get("status", "complete") == "complete"):
            directory, _, hashes = self._state_files()
            check_not_stale(directory, self.settings, hashes)
        super().validate()
        self._renderer = probe(self.settings)

    def prepare(self) -> None:
        """The state dataset (collected when the grid asks), then the frames of the episodes trials load."""
        import os

        from suites.dmc.pixels import render_dataset

        super().prepare()
        directory, names, _ = self._state_files()
        print(f"dmc/{self.domain}: pixels {directory / self.settings.dirname} ({len(names)} episodes)",
              flush=True)
        render_dataset(directory, self.settings, workers=min(2, os.cpu_count() or 1), names=names)

    def _load(self) -> None:
        if self._train is None:
            from suites.dmc.dataset import load_dataset, split_dataset
            from suites.dmc.pixels import FrameStacks, load_frames, transition_rows

            data = load_dataset(self.path, self.domain, size=self.train_size + self.val_size)
            self._train, self._val = split_dataset(data, self.train_size, self.val_size)
            from suites.dmc.dataset import _resolve_directory

            directory = _resolve_directory(self.path.expanduser().resolve(), self.domain)
            frames, _, meta = load_frames(directory, self.settings, data.files, data.file_hashes)
            row, start = transition_rows(data.episode_rows, data.episode_lengths)
            stacks = FrameStacks(frames, row, start, self.frame_stack)
            n_train = len(self._train)
            if self._val.files[0] != data.files[len(self._train.files)]:
                raise RuntimeError("the validation split does not follow the training split")
            self._stacks = stacks.subset(0, n_train)
            self._val_stacks = stacks.subset(n_train, n_train + len(self._val))
            self._sha256, self._pixel_sha256 = data.sha256, meta["sha256"]
            self._data_renderer = meta.get("gl_renderer")
            t = self._train
            self._tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (t.action,
                                                                                      t.next_action))

    def sample(self, batch_size: int, generator: torch.Generator) -> TransitionBatch:
        self._load()
        idx = torch.randint(0, len(self._train), (batch_size,), generator=generator)
        rows = idx.numpy()
        action, next_action = (t[idx] for t in self._tensors)
        return TransitionBatch(torch.from_numpy(self._stacks.obs(rows)), action,
                               torch.from_numpy(self._stacks.next_obs(rows)), next_action)

    def data_hashes(self) -> dict[str, str]:
        """The state dataset's sha256, the frames' sha256 (the loaded episodes), and the GL renderer that
        rendered the frames and the one this process evaluates with (frames may differ between renderers)."""
        self._load()
        if self._renderer is None:
            from suites.dmc.pixels import gl_renderer

            env = self._make_env(self.tasks[0])
            env.reset(seed=0)
            self._renderer = gl_renderer(env.physics)
        return {f"dataset:{self.domain}": self._sha256, f"pixels:{self.domain}": self._pixel_sha256,
                "render:data": str(self._data_renderer), "render:eval": self._renderer}

    # ---- evaluation ----------------------------------------------------------------------------------
    def inference_batch(self, task: str) -> tuple[TransitionBatch, torch.Tensor]:
        self._load()
        v, n = self._val, self.inference_samples
        rows = np.arange(n)
        batch = TransitionBatch(torch.from_numpy(self._val_stacks.obs(rows)),
                                torch.from_numpy(np.ascontiguousarray(v.action[:n])),
                                torch.from_numpy(self._val_stacks.next_obs(rows)),
                                torch.from_numpy(np.ascontiguousarray(v.next_action[:n])))
        return batch, torch.from_numpy(np.ascontiguousarray(v.rewards[task][:n]))

    @torch.no_grad()
    def evaluate(self, agent: Any) -> EvalResult:
        if getattr(agent, "uses_observations", True):
            return super().evaluate(agent)
        # a fixed policy: the state task's rollout (same dynamics, start states, returns)
        rows, metrics = [], {}
        for task in self.tasks:
            returns = DMCZeroShotTask.rollout(self, task, lambda obs: agent.act(torch.from_numpy(obs),
                                                                                None).numpy())
            metrics[f"{task}/return"] = float(np.mean(returns))
            rows += [{"task": task, "episode": i, "return": float(r)} for i, r in enumerate(returns)]
        metrics["return"] = float(np.mean([metrics[f"{t}/return"] for t in self.tasks]))
        return EvalResult(metrics, rows)

    def _make_env(self, task: str):
        from suites.dmc.envs import DMCEnv

        return DMCEnv(self.domain, task, pixels=True)

    def rollout(self, task: str, policy, episodes: int | None = None) -> list[float]:
        """Like the state rollout, with observations = the last k rendered frames of each environment."""
        episodes = episodes or self.eval_episodes
        envs = [self._make_env(task) for _ in range(episodes)]
        k = self.frame_stack
        stacks = np.empty((episodes, k, 3, self.settings.size, self.settings.size), np.uint8)
        draws = []
        for i, env in enumerate(envs):
            env.reset(seed=self.eval_seed + i)
            draws.append(self.settings.renderer(env.physics))
            stacks[i, :] = draws[i]().transpose(2, 0, 1)
        returns = np.zeros(episodes)
        for _ in range(self.episode_length):
            obs = stacks.reshape(episodes, 3 * k, self.settings.size, self.settings.size)
            actions = np.asarray(policy(obs), dtype=np.float64).reshape(episodes, self.action_dim)
            stacks[:, :-1] = stacks[:, 1:].copy()
            for i, (env, a) in enumerate(zip(envs, actions)):
                _, reward, _ = env.step(a)
                returns[i] += reward
                stacks[i, -1] = draws[i]().transpose(2, 0, 1)
        return returns.tolist()
