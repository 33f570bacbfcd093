"""Reward-free data collection for the dmc suite, in ExORL's format (fb.md §7, suites.dmc.dataset).

    from suites.dmc.collect import collect
    collect("walker", "rnd", steps=500_000, out_dir="data/dmc/walker-rnd", workers=2, seed=0,
            explorer_config="cpu")
    b2fb collect --domain walker --explorer rnd --steps 500k --size cpu       # main_collect

Explorers:
  random  uniform actions in [-1, 1] (float32), independent across steps.
  rnd     URLB's RND agent (suites.dmc.rnd), trained online on its own episodes; sizes tiny/cpu/paper.

Episodes: `steps` is rounded up to whole episodes of the domain's length (1000 steps; jaco 250), or of
`episode_length` (shorter episodes for tests and smoke runs; recorded in meta.json).  Episode `index`
starts from a reset with the environment seed of its own stream (below), so episode i of a random and of
an RND dataset with the same seed start from the same state.  Every task's reward is computed from the
physics after each step (suites.dmc.rewards; point_mass_maze also from the action) and stored as
`reward_<task>`.

Parallelism: `workers` processes (multiprocessing 'spawn' context), each with its own environment and
explorer, torch limited to 1 thread, and MuJoCo rendering disabled.  The main process only draws the
progress bar (tqdm, over transitions) and writes the explorer log.  A lone random worker runs in the
calling process; RND workers always get their own process (see `_worker_entry` for why).

Seeds (numpy SeedSequence; `seed` is the dataset seed):
  episode i:   SeedSequence(seed, spawn_key=(0, i)) -> children (environment reset seed, random actions)
  RND worker w: SeedSequence(seed, spawn_key=(1, w)) -> children (torch generator, numpy replay sampling)
So a random dataset depends on (domain, seed, episode length) alone: not on `workers`, nor on
interruptions.  Episodes are distributed over the workers as they are missing; for RND, worker w owns
the episodes i with i % workers == w and collects them in order.

Resuming: re-running `collect` on the same directory with the same arguments continues from the episode
files on disk.  Files are written atomically (temporary file + os.replace) and never rewritten; a file
exists only once it is complete.  A larger `steps` extends a dataset; a smaller one never deletes
episodes (episodes already begun are completed).  A different domain, explorer, explorer config, seed or
episode length is a UserError (and for RND a different number of workers).
  random:  the resumed dataset is byte-identical to an uninterrupted one (tested).
  rnd:     each worker writes a checkpoint after every episode, once the episode file is written
           (`explorer_state/worker_WW.pt`: networks, optimisers, running statistics, RNG states, step
           counter).  On resume it reloads the checkpoint and rebuilds its replay from its own episode
           files; the episode in progress is collected again from the same state and RNG (an episode
           whose file was written just before an interruption is collected again to update the agent,
           and the file on disk is kept).  On the same machine with the same library versions the
           resumed dataset therefore equals an uninterrupted one (tested at the tiny size); torch does
           not promise bit-identical results across machines or versions, so elsewhere a resumed RND
           dataset is a faithful continuation, not a copy.  Checkpoints are kept after the dataset
           completes, so a later call with more steps continues the same agents.

Deviations from ExORL / URLB (each documented where it lives):
  - RND: one agent per worker, each trained online on its own episodes only, each with its own
    `num_seed_frames` of uniform actions; URLB runs one agent over one stream of episodes (10M steps).
    With 2 workers each agent sees half the data; the dataset mixes two exploration runs.
  - file names drop ExORL's timestamp (`000012_1000.npz`, not `20210101T120000_12_1000.npz`), so that
    files are reproducible byte for byte; zip timestamps are fixed for the same reason.
  - per-task rewards are stored (`reward_<task>`), ExORL's `reward` (the pre-training task's) is not.
  - the jaco domain is the project's fixed-target version (suites/dmc/jaco.py), so its data are not
    interchangeable with ExORL's jaco downloads (55-d observations, 31-d physics).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("MUJOCO_GL", "egl")  # before dm_control is imported (no rendering happens here)

import numpy as np  # noqa: E402

from suites.dmc import dataset as ds  # noqa: E402
from suites.dmc.domains import DOMAINS, get_domain  # noqa: E402
from suites.errors import UserError  # noqa: E402
from suites.registry import did_you_mean  # noqa: E402

__all__ = ["EXPLORERS", "collect", "main_collect", "default_out_dir", "episode_seeds", "RandomExplorer"]

EXPLORERS = ("random", "rnd")
_EPISODE_STREAM, _WORKER_STREAM = 0, 1
# Fields that define a dataset: a resumed call must match them all (rnd: `workers` too).
_IDENTITY = ("format_version", "dmc_version", "domain", "explorer", "explorer_config", "seed", "episode_length")


# ---- seeds ------------------------------------------------------------------------------------------
def episode_seeds(seed: int, index: int) -> tuple[int, np.random.SeedSequence]:
    """(environment reset seed, SeedSequence for the random explorer's actions) of episode `index`."""
    env_seq, action_seq = np.random.SeedSequence(seed, spawn_key=(_EPISODE_STREAM, index)).spawn(2)
    return int(env_seq.generate_state(1)[0]), action_seq


def worker_seed(seed: int, worker: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(_WORKER_STREAM, worker))


# ---- explorers --------------------------------------------------------------------------------------
class RandomExplorer:
    """Uniform actions in [-1, 1]; the stream of episode i depends on (seed, i) only."""

    def __init__(self, action_dim: int, seed: int):
        self.action_dim, self.seed = action_dim, seed
        self._rng: np.random.Generator | None = None

    def begin_episode(self, index: int) -> None:
        self._rng = np.random.default_rng(episode_seeds(self.seed, index)[1])

    def step(self, obs: np.ndarray) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, self.action_dim).astype(np.float32)

    def end_episode(self, observation: np.ndarray, action: np.ndarray) -> dict[str, Any]:
        return {}


def _resolve_explorer_config(explorer: str, config: Any) -> dict[str, Any]:
    if explorer == "random":
        if config not in (None, {}, "random"):
            raise UserError(f"the random explorer takes no config, got {config!r}: drop it, or use --explorer rnd")
        return {}
    from suites.dmc.rnd import resolve_config

    return resolve_config(config).to_dict()


def _comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "device"}  # the device may change between sessions


# ---- one episode --------------------------------------------------------------------------------------
def run_episode(env, explorer, index: int, seed: int, length: int) -> dict[str, np.ndarray]:
    """One episode in ExORL's layout (rows 0..length), with every task's reward of each row's state."""
    spec = env.spec
    tasks = spec.tasks
    observation = np.empty((length + 1, spec.obs_dim), np.float32)
    action = np.zeros((length + 1, spec.action_dim), np.float32)  # row 0: ExORL's dummy action
    physics = np.empty((length + 1, spec.state_dim), np.float64)
    rewards = np.empty((length + 1, len(tasks)), np.float32)
    env_seed, _ = episode_seeds(seed, index)
    observation[0] = env.reset(seed=env_seed)
    if hasattr(explorer, "begin_episode"):
        explorer.begin_episode(index)
    physics[0] = env.physics.get_state()
    online = env.rewards(action[0])  # {task: reward}; index by name (the dict's order is not spec.tasks')
    rewards[0] = [online[task] for task in tasks]
    for t in range(1, length + 1):
        action[t] = explorer.step(observation[t - 1])
        observation[t], _, _ = env.step(action[t])
        physics[t] = env.physics.get_state()
        online = env.rewards(action[t])
        rewards[t] = [online[task] for task in tasks]
    arrays = {"observation": observation, "action": action}
    for k, task in enumerate(tasks):
        arrays[f"reward_{task}"] = rewards[:, k:k + 1].copy()
    arrays["discount"] = np.ones((length + 1, 1), np.float32)
    arrays["physics"] = physics
    return arrays


# ---- workers ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Job:
    domain: str
    explorer: str
    config: dict
    seed: int
    out_dir: str
    episode_length: int
    worker: int
    workers: int
    episodes: tuple[int, ...]   # random: the episodes to collect; rnd: all episodes this worker owns


def _write_episode(out_dir: Path, index: int, arrays: dict[str, np.ndarray]) -> str:
    from benchmarks.results import atomic_write_bytes

    name = ds.episode_name(index, arrays["observation"].shape[0] - 1)
    path = out_dir / name
    if not path.exists():  # never rewrite a file
        atomic_write_bytes(path, ds.encode_episode(arrays))
    return name


def _make_env(domain: str):
    from suites.dmc.envs import DMCEnv

    # Any task's environment has the domain's dynamics and observations; rewards come from env.rewards.
    return DMCEnv(domain, DOMAINS[domain].tasks[0], seed=0)


def _run_random(job: _Job, emit: Callable[[tuple], None]) -> None:
    out_dir = Path(job.out_dir)
    env = _make_env(job.domain)
    explorer = RandomExplorer(env.action_dim, job.seed)
    for index in job.episodes:
        start = time.perf_counter()
        arrays = run_episode(env, explorer, index, job.seed, job.episode_length)
        _write_episode(out_dir, index, arrays)
        emit(("episode", job.worker, index, job.episode_length, {}, time.perf_counter() - start))


def _checkpoint_path(out_dir: Path, worker: int) -> Path:
    return out_dir / ds.EXPLORER_STATE / f"worker_{worker:02d}.pt"


def _run_rnd(job: _Job, emit: Callable[[tuple], None]) -> None:
    import io

    import torch

    from benchmarks.results import atomic_write_bytes
    from suites.dmc.rnd import RNDExplorer, resolve_config

    out_dir = Path(job.out_dir)
    env = _make_env(job.domain)
    config = resolve_config(job.config)
    explorer = RNDExplorer(env.obs_dim, env.action_dim, job.episode_length, config, worker_seed(job.seed, job.worker))
    owned = job.episodes
    done = 0  # how many of `owned` the explorer has collected and trained through (its checkpoint)
    checkpoint = _checkpoint_path(out_dir, job.worker)
    if checkpoint.exists():
        try:
            state = torch.load(checkpoint, map_location=config.device, weights_only=False)
        except Exception as err:
            raise UserError(f"RND checkpoint {checkpoint} is unreadable ({type(err).__name__}): delete the dataset "
                            f"directory {out_dir} and collect it again") from None
        if state["worker"] != job.worker or state["workers"] != job.workers:
            raise UserError(f"RND checkpoint {checkpoint} belongs to worker {state['worker']} of {state['workers']}; "
                            f"resume with workers={state['workers']}")
        explorer.load_state_dict(state["explorer"])
        done = int(state["episodes_done"])
        # Rebuild the replay: this worker's own completed episodes, in order, at their stream positions.
        for k in range(max(0, done - explorer.replay.capacity), done):
            path = out_dir / ds.episode_name(owned[k], job.episode_length)
            if not path.exists():
                raise UserError(f"episode file {path} is missing but RND worker {job.worker} trained on it: delete "
                                f"the dataset directory {out_dir} and collect it again")
            arrays = ds.read_episode(path)
            explorer.replay.add(arrays["observation"], arrays["action"], position=k)
        if explorer.replay.count != int(state["explorer"]["replay_count"]):
            raise UserError(f"RND checkpoint {checkpoint} does not match the episode files in {out_dir}: delete the "
                            f"dataset directory and collect it again")
    for k in range(done, len(owned)):
        index = owned[k]
        path = out_dir / ds.episode_name(index, job.episode_length)
        # The file is written before the checkpoint: a crash between the two leaves episode `done` on disk
        # with the checkpoint one episode behind.  It is then collected again from the same state (to bring
        # the explorer up to date) and the file on disk is kept.
        redo = path.exists()
        if redo and k != done:
            raise UserError(f"episode file {path} exists but RND worker {job.worker}'s checkpoint is {k - done} "
                            f"episodes behind it (checkpoint deleted or from another run): delete the dataset "
                            f"directory {out_dir} and collect it again")
        start_time = time.perf_counter()
        arrays = run_episode(env, explorer, index, job.seed, job.episode_length)
        stats = explorer.end_episode(arrays["observation"], arrays["action"])
        if redo:
            stored = ds.read_episode(path)
            stats["recollected_identical"] = bool(all(np.array_equal(stored[key], arrays[key]) for key in arrays))
        else:
            _write_episode(out_dir, index, arrays)
        buffer = io.BytesIO()
        torch.save({"worker": job.worker, "workers": job.workers, "episodes_done": k + 1,
                    "explorer": explorer.state_dict()}, buffer)
        atomic_write_bytes(checkpoint, buffer.getvalue())
        emit(("episode", job.worker, index, 0 if redo else job.episode_length, stats,
              time.perf_counter() - start_time))


def _run_job(job: _Job, emit: Callable[[tuple], None]) -> None:
    (_run_random if job.explorer == "random" else _run_rnd)(job, emit)


def _worker_entry(job: _Job, queue) -> None:
    """Entry point of a spawned worker: no rendering, one thread for torch / BLAS, then the job."""
    # Collection never renders.  With MUJOCO_GL=egl, Mesa's EGL stack loads an LLVM that clashes with the
    # one in triton's libtriton, which torch's optimisers import (via torch._dynamo) on first use: the
    # process segfaults.  So: no GL in workers, and torch._dynamo (triton) loaded before dm_control.
    os.environ["MUJOCO_GL"] = "disabled"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    parent = _die_with_parent()

    def emit(message: tuple) -> None:
        if parent is not None and not parent.is_alive():  # never outlive the collection (non-Linux fallback)
            os._exit(1)
        queue.put(message)

    try:
        if job.explorer == "rnd":
            import torch
            import torch._dynamo  # noqa: F401  (see above)

            torch.set_num_threads(1)
        _run_job(job, emit)
        queue.put(("done", job.worker))
    except UserError as err:
        queue.put(("user_error", job.worker, str(err)))
    except BaseException:  # noqa: BLE001 - report everything to the parent, which raises it
        queue.put(("error", job.worker, traceback.format_exc()))


def _die_with_parent():
    """A worker must not outlive the process that started it (a killed `collect` would leave workers
    writing into a directory that a re-run collects into): on Linux the kernel kills it with its parent
    (PR_SET_PDEATHSIG); elsewhere it exits at its next episode.  Returns the parent process handle."""
    import multiprocessing
    import signal

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    parent = multiprocessing.parent_process()
    if parent is not None and not parent.is_alive():
        os._exit(1)
    return parent


def _run_workers(jobs: list[_Job], emit: Callable[[tuple], None]) -> None:
    """Run the jobs, one process each ('spawn').  A single random job runs in this process instead; RND
    jobs always get their own process (one torch thread, no GL; see _worker_entry)."""
    if len(jobs) == 1 and jobs[0].explorer == "random":
        _run_job(jobs[0], emit)
        return
    import multiprocessing as mp
    import queue as queue_module

    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    procs = {job.worker: ctx.Process(target=_worker_entry, args=(job, messages), daemon=True,
                                     name=f"b2fb-collect-{job.worker}") for job in jobs}
    for p in procs.values():
        p.start()
    finished: set[int] = set()
    try:
        while len(finished) < len(procs):
            try:
                message = messages.get(timeout=0.5)
            except queue_module.Empty:
                for worker, p in procs.items():
                    if worker not in finished and not p.is_alive() and p.exitcode not in (0, None):
                        raise RuntimeError(f"collection worker {worker} died (exit code {p.exitcode}); re-run the "
                                           f"same command to resume")
                continue
            kind = message[0]
            if kind == "episode":
                emit(message)
            elif kind == "done":
                finished.add(message[1])
            elif kind == "user_error":
                raise UserError(message[2])
            else:
                raise RuntimeError(f"collection worker {message[1]} failed:\n{message[2]}")
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
        for p in procs.values():
            p.join(timeout=10)
        messages.close()


# ---- the dataset directory ------------------------------------------------------------------------------
def _scan(out_dir: Path, length: int) -> dict[int, str]:
    """{index: name} of the episode files present; stale temporary files of a crash are removed."""
    for stale in list(out_dir.glob(".*.tmp")) + list((out_dir / ds.EXPLORER_STATE).glob(".*.tmp")):
        stale.unlink(missing_ok=True)
    files, naming = ds.list_episode_files(out_dir)
    if naming != "b2fb":
        raise UserError(f"{out_dir} holds ExORL-named episode files ({files[0].name}): collect into another directory")
    found = {}
    for path in files:
        index, n = (int(x) for x in path.stem.split("_"))
        if n != length:
            raise UserError(f"{path} has {n} transitions, but this dataset's episodes have {length}: it does not "
                            f"belong here; remove it")
        found[index] = path.name
    return found


def _prepare(out_dir: Path, identity: dict[str, Any], workers: int) -> dict[str, Any] | None:
    """Check an existing directory against this call; the existing meta.json, if any."""
    meta = ds.read_meta(out_dir)
    if meta is None:
        if out_dir.exists() and any(p for p in out_dir.iterdir() if not p.name.startswith(".")):
            raise UserError(f"{out_dir} is not empty and holds no {ds.META} (not a dataset collected here): choose a "
                            f"new or empty output directory")
        return None
    for key in _IDENTITY:
        old, new = meta.get(key), identity[key]
        if key == "explorer_config" and isinstance(old, dict):
            old, new = _comparable_config(old), _comparable_config(new)
        if old != new:
            what = {"domain": "a dataset of another domain",
                    "explorer": "a dataset of another explorer"}.get(key, "a dataset")
            if isinstance(old, dict) and isinstance(new, dict):  # name the differing fields only
                differ = (k for k in set(old) | set(new) if old.get(k) != new.get(k))
                keys = sorted(differ, key=lambda k: (k != "size", k))[:3]
                had = ", ".join(f"{key}.{k}={old.get(k)!r}" for k in keys)
                asks = ", ".join(f"{key}.{k}={new.get(k)!r}" for k in keys)
            else:
                had, asks = f"{key}={old!r}", f"{key}={new!r}"
            raise UserError(f"{out_dir} holds {what} ({meta.get('domain')}/{meta.get('explorer')}, {had}); this call "
                            f"asks for {asks}: re-run with the dataset's own arguments to resume it, or choose "
                            f"another output directory")
    if identity["explorer"] == "rnd" and meta.get("workers") != workers:
        raise UserError(f"{out_dir} was collected by {meta.get('workers')} RND workers (each trains its own agent "
                        f"on its own episodes); resume it with workers={meta.get('workers')}")
    return meta


def _write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    from benchmarks.results import atomic_write_json

    atomic_write_json(out_dir / ds.META, meta)


def _read_log(path: Path, present: set[int]) -> dict[int, dict]:
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if isinstance(row, dict) and row.get("episode") in present:
                rows.setdefault(row["episode"], row)
    return rows


def default_out_dir(domain: str, explorer: str, data_dir: Path | str | None = None, size: str | None = None,
                    episode_length: int | None = None) -> Path:
    """`<data dir>/dmc/<domain>-<explorer>[-<size>][-len<L>]` (suites.dmc.dataset.default_dataset_dir); the
    data directory is $B2FB_DATA or ./data."""
    root = Path(data_dir) if data_dir is not None else Path(os.environ.get("B2FB_DATA", "data"))
    return ds.default_dataset_dir(root, domain, explorer, size, episode_length)


# ---- collect ------------------------------------------------------------------------------------------
def collect(domain: str, explorer: str, steps: int, out_dir, workers: int = 2, seed: int = 0,
            explorer_config: Any = None, *, episode_length: int | None = None,
            progress: bool = True) -> dict[str, Any]:
    """Collect at least `steps` transitions (whole episodes) of `domain` with `explorer` into `out_dir`.

    explorer_config: random: None.  rnd: None (= "cpu"), a size name ("tiny", "cpu", "paper"), a dict of
                     overrides on a size ({"size": "tiny", "num_seed_frames": 100}) or an RNDConfig.
    episode_length:  shorter episodes than the domain's (tests, smoke runs); default: the domain's.
    Returns a summary: out_dir, episodes, transitions, new_episodes, new_transitions, seconds,
    steps_per_second (new transitions / wall time of this call, process start-up included), timeline
    ((seconds since start, new transitions so far) at each completed episode), sha256.  Resumable; see
    the module docstring.
    """
    spec = get_domain(domain)
    if explorer not in EXPLORERS:
        raise UserError(f"unknown explorer {explorer!r}.{did_you_mean(str(explorer), EXPLORERS)} "
                        f"Explorers are {', '.join(EXPLORERS)}.")
    for name, value, low in (("steps", steps, 1), ("workers", workers, 1), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise UserError(f"{name} must be an integer >= {low}, got {value!r}")
    length = spec.episode_length if episode_length is None else episode_length
    if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or not 1 <= length <= spec.episode_length:
        raise UserError(f"episode_length must be an integer in [1, {spec.episode_length}] for {domain}, "
                        f"got {episode_length!r}")
    steps, workers, seed, length = int(steps), int(workers), int(seed), int(length)
    config = _resolve_explorer_config(explorer, explorer_config)
    if explorer == "rnd" and config["nstep"] > length:
        raise UserError(f"RND nstep {config['nstep']} is longer than the episodes ({length} steps)")
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output path {out_dir} is a file: pass a directory")
    identity = {"format_version": ds.FORMAT_VERSION, "dmc_version": spec.version, "domain": domain,
                "explorer": explorer, "explorer_config": config, "seed": seed, "episode_length": length}
    out_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(out_dir):
        return _collect_locked(spec, explorer, config, steps, out_dir, workers, seed, length, identity, progress)


def _exclusive(out_dir: Path):
    """Hold `<out_dir>/.collect.lock` (flock) for the call: two collections into one directory would
    delete each other's temporary files."""
    import contextlib

    @contextlib.contextmanager
    def hold():
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        with open(out_dir / ".collect.lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another collection is writing into {out_dir}: wait for it to finish, or "
                                f"choose another output directory") from None
            yield
    return hold()


def _collect_locked(spec, explorer, config, steps, out_dir, workers, seed, length, identity, progress):
    domain = spec.name
    old_meta = _prepare(out_dir, identity, workers)
    existing = _scan(out_dir, length)
    target = max(math.ceil(steps / length), max(existing, default=-1) + 1)
    missing = [i for i in range(target) if i not in existing]
    old_complete = (old_meta or {}).get("status") == "complete"

    from benchmarks.results import atomic_write_text, git_state, library_versions, now

    run = {"started": now(), "finished": None, "steps_requested": steps, "workers": workers,
           "episodes_before": len(existing), "git": git_state(), "versions": library_versions()}
    meta = {**identity, "format": "exorl", "workers": workers,
            "obs_dim": spec.obs_dim, "action_dim": spec.action_dim, "state_dim": spec.state_dim,
            "tasks": list(spec.tasks), "reward_keys": [f"reward_{t}" for t in spec.tasks],
            "seeds": {"seed": seed,
                      "episode": f"SeedSequence({seed}, spawn_key=(0, index)).spawn(2) -> (env reset seed, actions)",
                      "rnd_worker": f"SeedSequence({seed}, spawn_key=(1, worker)).spawn(2) -> (torch, numpy)"},
            "status": "collecting", "episodes_target": target, "transitions_target": target * length,
            "runs": list((old_meta or {}).get("runs", [])) + [run]}
    if missing or not old_complete:
        _write_meta(out_dir, meta)

    log_path = out_dir / ds.EXPLORER_LOG
    log_rows = _read_log(log_path, set(existing))
    started = time.perf_counter()
    timeline: list[tuple[float, int]] = []  # (seconds since start, new transitions so far), per episode
    if missing:
        jobs = _plan_jobs(domain, explorer, config, seed, out_dir, length, workers, target, missing)
        from tqdm import tqdm

        bar = tqdm(total=target * length, initial=len(existing) * length, unit="step", unit_scale=True,
                   desc=f"{domain}/{explorer}", disable=not progress, dynamic_ncols=True)
        log_file = open(log_path, "a")

        def on_episode(message: tuple) -> None:
            _, worker, index, n, stats, seconds = message
            if n == 0:  # an episode on disk collected again to bring an RND agent up to date
                if index in log_rows:
                    log_rows[index]["recollected_identical"] = stats.get("recollected_identical")
                return
            row = {"episode": index, "worker": worker, "transitions": n, "seconds": round(seconds, 4), **stats}
            log_rows.setdefault(index, row)
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()
            timeline.append((time.perf_counter() - started, (timeline[-1][1] if timeline else 0) + n))
            bar.update(n)
            if stats.get("intrinsic_reward") is not None:
                bar.set_postfix(intr=f"{stats['intrinsic_reward']:.3g}", refresh=False)

        try:
            _run_workers(jobs, on_episode)
        finally:
            bar.close()
            log_file.close()
    seconds = time.perf_counter() - started

    present = _scan(out_dir, length)
    absent = [i for i in range(target) if i not in present]
    if absent:
        raise RuntimeError(f"collection finished but episode {absent[0]} is missing in {out_dir}; re-run to resume")
    hashes = {name: ds.file_sha256(out_dir / name) for name in sorted(present.values())}
    if not missing and old_complete:  # nothing collected: check the files against meta.json, change nothing
        listed = old_meta.get("files", {})
        for name, digest in hashes.items():
            if listed.get(name) != digest:
                raise UserError(f"episode file {out_dir / name} does not match its sha256 in {ds.META} (modified or "
                                f"corrupt): delete it and re-run the same command to regenerate it")
        meta = old_meta
    else:
        atomic_write_text(log_path, "".join(json.dumps(log_rows[i]) + "\n" for i in sorted(log_rows)))
        run.update(finished=now(), new_episodes=len(missing), seconds=round(seconds, 3))
        meta.update(status="complete", code={"git": run["git"], "versions": run["versions"]},
                    episodes=len(present), transitions=len(present) * length, files=hashes,
                    sha256=ds.dataset_sha256(hashes),
                    sha256_definition="sha256 of the lines '<file sha256>  <name>\\n' of the episode files sorted "
                                      "by name (= `LC_ALL=C sha256sum *.npz | sha256sum` in this directory)")
        _write_meta(out_dir, meta)
    new_transitions = len(missing) * length
    return {"out_dir": str(out_dir), "episodes": len(present), "transitions": len(present) * length,
            "new_episodes": len(missing), "new_transitions": new_transitions, "seconds": seconds,
            "steps_per_second": new_transitions / seconds if missing and seconds > 0 else None,
            "timeline": timeline, "sha256": meta["sha256"]}


def _plan_jobs(domain, explorer, config, seed, out_dir, length, workers, target, missing) -> list[_Job]:
    common = dict(domain=domain, explorer=explorer, config=config, seed=seed, out_dir=str(out_dir),
                  episode_length=length, workers=workers)
    if explorer == "random":  # any split works: an episode's content depends on its index only
        shares = [tuple(missing[w::workers]) for w in range(workers)]
        return [_Job(worker=w, episodes=share, **common) for w, share in enumerate(shares) if share]
    jobs = []
    missing_set = set(missing)
    for w in range(workers):
        owned = tuple(range(w, target, workers))
        if any(i in missing_set for i in owned):
            jobs.append(_Job(worker=w, episodes=owned, **common))
    return jobs


# ---- command line ---------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _count(text: str) -> int:
    """'500000', '500k', '1M', '1e6' -> int."""
    t = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if scale > 1 else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of steps: {text!r} (e.g. 100000, 500k, 1M)") from None
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number of steps: {text!r}")
    return int(value)


def build_collect_parser(prog: str = "b2fb collect") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Collect a reward-free dmc dataset in ExORL's format (one .npz per episode, "
                "every task's reward stored).  Re-running the same command resumes an interrupted collection; "
                "a larger --steps extends it.")
    p.add_argument("--domain", required=True, help=f"dmc domain: {', '.join(DOMAINS)}")
    p.add_argument("--explorer", required=True, choices=EXPLORERS,
                   help="random: uniform actions; rnd: URLB's RND agent")
    p.add_argument("--steps", required=True, type=_count,
                   help="transitions to collect (rounded up to whole episodes), e.g. 100000, 500k, 1M")
    p.add_argument("--out", type=Path, default=None,
                   help="dataset directory (default: <data dir>/dmc/<domain>-<explorer>[-<size>][-len<L>], "
                        "where `b2fb run` looks for it)")
    p.add_argument("--data-dir", type=Path, default=None, help="data directory (default: $B2FB_DATA or ./data)")
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes (default 2)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--size", choices=("tiny", "cpu", "paper"), default=None,
                   help="RND network size: tiny, cpu (default; hidden 256) or paper (URLB: hidden 1024)")
    p.add_argument("--episode-length", type=int, default=None, help="shorter episodes than the domain's (smoke runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main_collect(argv: list[str] | None = None) -> int:
    """`b2fb collect --domain D --explorer E --steps N ...`: collect, then print where the data went."""
    args = build_collect_parser().parse_args(sys.argv[1:] if argv is None else argv)
    get_domain(args.domain)
    if args.size is not None and args.explorer != "rnd":
        raise UserError("--size sets the RND network size; it does not apply to --explorer random")
    out = (args.out if args.out is not None else
           default_out_dir(args.domain, args.explorer, args.data_dir, args.size, args.episode_length))
    config = (args.size or "cpu") if args.explorer == "rnd" else None
    summary = collect(args.domain, args.explorer, args.steps, out, workers=args.workers, seed=args.seed,
                      explorer_config=config, episode_length=args.episode_length, progress=not args.no_progress)
    added = (f"{summary['new_episodes']} new episodes at {summary['steps_per_second']:,.0f} steps/s"
             if summary["new_episodes"] else "nothing new to collect")
    print(f"{args.domain}/{args.explorer}: {summary['episodes']} episodes, {summary['transitions']:,} transitions "
          f"({added}) in {summary['out_dir']}")
    print(f"  sha256 {summary['sha256']}; load with suites.dmc.dataset.load_dataset({summary['out_dir']!r}, "
          f"{args.domain!r})")
    return 0


if __name__ == "__main__":
    from suites.errors import run_script
    run_script(main_collect)
