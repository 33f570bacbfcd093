"""Ray Tune orchestration: one Tune trial per (algorithm, task, seed).  The only module that imports ray.

- Complete runs (manifest status "done") are skipped before Ray even starts, so a re-run of a
  finished bench trains nothing and returns in seconds.
- Incomplete runs are started again; their adapter resumes from the run's last checkpoint.
- Per-trial resources come from the grid ({cpu, gpu}); Ray packs trials onto what the machine or
  cluster has.  A local Ray is started unless RAY_ADDRESS points at a running cluster.
- Trials write results under `results/` through `benchmarks.results.RunWriter`; Ray's own
  experiment directory (under the data directory) only serves live progress and is never read for
  tables.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

# Before importing ray.  Security: a local cluster (no RAY_ADDRESS) runs on the loopback interface only:
# Ray's single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, its default on macOS and Windows) gives
# the node the IP 127.0.0.1, and Ray then binds every server (GCS, raylet, workers, agents) to 127.0.0.1.
# Token authentication is on as well (RAY_AUTH_MODE=token; `_use_local_token` makes a token file readable
# by the user alone), so other users of the same machine cannot submit work either.  A cluster
# (RAY_ADDRESS) keeps Ray's multi-node mode and needs the cluster's token (see the README, "On a cluster").
# No TensorBoard/CSV loggers: results/ is the record.
LOCAL_CLUSTER = not os.environ.get("RAY_ADDRESS")
for _key, _value in (("RAY_AUTH_MODE", "token"), ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"),
                     ("RAY_AIR_NEW_OUTPUT", "0"), ("RAY_DEDUP_LOGS", "0"),
                     ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000"),
                     *((("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),) if LOCAL_CLUSTER else ())):
    os.environ.setdefault(_key, _value)
# glibc's allocator, for the trial processes that a local Ray starts (they inherit this environment; glibc
# reads it at process start).  By default glibc serves a block above its mmap threshold (128 KiB, raised
# dynamically) with a fresh mmap and gives it back on free, so each large activation costs page faults that
# zero its pages again; a 16-row 16 x 16 UNet pass has many such blocks.  Fixed thresholds keep blocks up to
# 256 MiB in the heap and return heap memory to the system only above 1 GiB free.  Only where and when
# memory is allocated changes, never an arithmetic result (torch aligns every tensor to 64 bytes itself):
# short t2i runs give byte-identical scalars and samples with and without it.  Measured (AVX2 core, two
# processes at once): a 16-image 10-step DDIM sampling batch 1.56 -> 1.36 s, a 3-epoch DDPO run with its
# evaluations 63.6 -> 56.8 s (mean of 3 pairs).  A value the user set is kept.
ALLOCATOR_SETTINGS = (("MALLOC_MMAP_THRESHOLD_", "268435456"), ("MALLOC_TRIM_THRESHOLD_", "1073741824"))
if LOCAL_CLUSTER:
    for _key, _value in ALLOCATOR_SETTINGS:
        os.environ.setdefault(_key, _value)

import ray  # noqa: E402
from ray import tune  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.config import TrialSpec  # noqa: E402
from benchmarks.results import execute_trial, is_complete, read_manifest, run_dir  # noqa: E402
from suites.errors import UserError  # noqa: E402


def pending_trials(trials: list[TrialSpec], results_root: Path) -> list[TrialSpec]:
    return [t for t in trials if not is_complete(results_root, t)]


def _trainable(config: dict[str, Any]) -> None:
    """Runs inside a Ray worker: execute one trial and forward its reports to Tune."""
    trial = TrialSpec.from_dict(config["trial"])
    status = execute_trial(trial, Path(config["results_root"]), report=lambda m: tune.report(m),
                           threads=trial.resources.get("cpu", 1))
    tune.report({"status_done": status == "done", "step": -1})


def run_trials(trials: list[TrialSpec], results_root: Path, ray_dir: Path, max_concurrent: int | None = None,
               experiment_name: str = "bench", show_progress: bool = True,
               reuse_workers: bool = True) -> dict[str, str]:
    """Run every trial that is not complete; returns {run_id: status} for the trials that ran.
    reuse_workers=False starts a fresh Ray worker process for every trial (slower; `b2fb perf --suite t2i
    --part worker_reuse` measures the difference)."""
    results_root, ray_dir = Path(results_root).resolve(), Path(ray_dir).resolve()
    # Cheap trials first (e.g. baselines that train nothing), so an interrupted bench has filled as many
    # table cells as it could; the order is stable otherwise.
    todo = sorted(pending_trials(trials, results_root), key=lambda t: t.algo_config.get("num_steps", 0))
    if not todo:
        return {}
    started_here = False
    if not ray.is_initialized():
        start_ray(ray_dir)
        started_here = True
    try:
        _check_capacity(todo)
    except UserError:
        if started_here:
            ray.shutdown()
            _stop_watchdog()
        raise
    # `kill` (SIGTERM) stops a bench as gracefully as Ctrl-C: Tune stops the trials, which keep their
    # checkpoints.  Installed after ray.init, whose own handlers would otherwise take SIGTERM.
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        def resources(config: dict[str, Any]) -> dict[str, float]:
            r = config["trial"]["resources"]
            return {"cpu": float(r.get("cpu", 1)), "gpu": float(r.get("gpu", 0))}

        callback = TrialProgress(todo) if show_progress else None
        tuner = tune.Tuner(
            tune.with_resources(_trainable, resources),
            param_space={"trial": tune.grid_search([t.to_dict() for t in todo]),
                         "results_root": str(results_root)},
            # A worker runs trial after trial, saving each its imports and Ray's actor start-up;
            # execute_trial resets the process state a trial could inherit (suites.registry.on_new_trial),
            # and test_t2i_e2e checks that a reused worker's runs match fresh processes' byte for byte.
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or 0, reuse_actors=reuse_workers),
            run_config=tune.RunConfig(name=f"{experiment_name}-{int(time.time())}", storage_path=str(ray_dir),
                                      verbose=0, callbacks=[callback] if callback else [],
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        tuner.fit()
        if callback:
            callback.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if started_here:
            ray.shutdown()
            _stop_watchdog()
    out = {}
    for t in todo:
        m = read_manifest(run_dir(results_root, t)) or {}
        out[t.run_id] = m.get("status", "not started")
    return out


def start_ray(ray_dir: Path) -> None:
    """Start a local Ray on loopback with token authentication, or connect to RAY_ADDRESS's cluster."""
    address = os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                                  configure_logging=True)
    if address:
        if _auth_mode() == "token" and not _token_given() and not DEFAULT_TOKEN_FILE.is_file():
            raise UserError(f"RAY_ADDRESS={address}: token authentication is on (RAY_AUTH_MODE=token) but no "
                            f"token is set; set RAY_AUTH_TOKEN_PATH to the cluster's token file (the one its "
                            f"`ray start` nodes were given), see the README's 'On a cluster'")
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.AuthenticationError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot connect to the Ray cluster at RAY_ADDRESS={address}: {first[:300]}; "
                            f"check the address and the token (RAY_AUTH_TOKEN_PATH)") from None
        return
    if not LOCAL_CLUSTER or ray._private.ray_constants.ENABLE_RAY_CLUSTER:
        # RAY_ADDRESS was unset after this module was imported, or the user forced multi-node mode
        raise UserError("a local Ray would listen on every network interface here "
                        "(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is not 0 or RAY_ADDRESS changed after start-up); "
                        "unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, or set RAY_ADDRESS to use a cluster")
    _use_local_token(ray_dir)
    ray.init(num_cpus=os.cpu_count(), _node_ip_address="127.0.0.1", **kwargs)
    _start_watchdog()


# A local Ray's GCS and raylet die with the driver, but after `kill -9` of the driver Ray's dashboard and
# runtime-env agents spend about 60 s trying to report the raylet's death to the dead GCS.  This small
# process outlives the driver: it remembers the driver's descendants (polled every second) and, when the
# driver is gone (its stdin pipe closes), kills those still running.  After a normal shutdown none are.
_WATCHDOG = """
import os, select, sys, psutil
driver = psutil.Process(int(sys.argv[1]))
known = {}
while True:
    try:
        for p in driver.children(recursive=True):
            if p.pid != os.getpid():
                known.setdefault(p.pid, p)
    except psutil.Error:
        pass
    if select.select([sys.stdin], [], [], 1.0)[0] and not sys.stdin.buffer.read1(1):
        break
left = [p for p in known.values() if p.is_running()]
for p in left:
    try:
        p.kill()
    except psutil.Error:
        pass
psutil.wait_procs(left, timeout=10)
"""
_watchdog = None


def _start_watchdog() -> None:
    import subprocess

    global _watchdog
    _watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid())], stdin=subprocess.PIPE,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop_watchdog() -> None:
    """After ray.shutdown(): let the watchdog sweep what is left and exit."""
    global _watchdog
    if _watchdog is not None:
        _watchdog.stdin.close()
        _watchdog.wait(timeout=30)
        _watchdog = None


DEFAULT_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def _auth_mode() -> str:
    return os.environ.get("RAY_AUTH_MODE", "").lower()


def _token_given() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"))


_token_set_here: tuple[str, str] | None = None   # (RAY_AUTH_TOKEN_PATH, token) that _use_local_token set, if any


def _use_local_token(ray_dir: Path) -> None:
    """With token authentication and no token of the user's, point Ray at `<ray_dir>/auth_token`.  A user's
    RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH is kept.

    A second local Ray in one process (`b2fb perf`'s worker_reuse runs one per round) gets its own
    directory's file, since the earlier directory may be deleted, but that file holds the token this process
    used first: Ray's driver caches the first token it reads for the life of the process (its
    AuthenticationTokenLoader), so a new Ray started with another token fails with InvalidAuthToken."""
    global _token_set_here
    ours = _token_set_here is not None and os.environ.get("RAY_AUTH_TOKEN_PATH") == _token_set_here[0]
    if _auth_mode() != "token" or (_token_given() and not ours):
        return
    path = local_token_file(ray_dir, token=_token_set_here[1] if ours else None)
    _token_set_here = (str(path), path.read_text())
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)


def local_token_file(ray_dir: Path, token: str | None = None) -> Path:
    """`<ray_dir>/auth_token`: the local cluster's token, readable by the user alone (a file that others can
    read is made private again).  It holds `token` when one is given; otherwise an existing token is kept and
    a new one is made on first use."""
    ray_dir = Path(ray_dir)
    ray_dir.mkdir(parents=True, exist_ok=True)
    path = ray_dir / "auth_token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        if path.stat().st_size and (token is None or path.read_text() == token):
            return path
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) if token is None else token)
    return path


def _check_capacity(todo: list[TrialSpec]) -> None:
    """A trial that asks for more than the whole cluster has would wait forever: say so instead."""
    have = ray.cluster_resources()
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        need = max(float(t.resources.get(key, 0)) for t in todo)
        if need > have.get(ray_key, 0.0):
            raise UserError(f"each trial asks for {need:g} {ray_key}(s) but the Ray cluster has "
                            f"{have.get(ray_key, 0.0):g}; use a smaller size (e.g. --size cpu), change "
                            f"`resources` in the grid, or point RAY_ADDRESS at a cluster that has them")


# The config field that counts a trial's units of progress (what `RunWriter.progress` steps through): gradient
# steps (FB family), epochs (DDPO), stages (B²-DiffuRL); the first one a config has is used.
PROGRESS_FIELDS = ("num_steps", "num_epochs", "num_stages")


def progress_total(algo_config: dict[str, Any]) -> int:
    """How many units of progress a trial has (1 when its config has none of PROGRESS_FIELDS)."""
    return int(next((algo_config[k] for k in PROGRESS_FIELDS if k in algo_config), 1))


class TrialProgress(tune.Callback):
    """One progress bar over all units of progress of the bench (steps, epochs or stages), in the driver."""

    def __init__(self, todo: list[TrialSpec]):
        self.totals = {t.run_id: progress_total(t.algo_config) for t in todo}
        self.steps = {k: 0 for k in self.totals}
        self.done, self.n = 0, len(todo)
        self.bar = tqdm(total=sum(self.totals.values()), unit="step", dynamic_ncols=True, file=sys.stderr,
                        desc=f"trials 0/{self.n}", mininterval=0.5)

    def _advance(self, run_id: str, step: int) -> None:
        delta = max(min(step, self.totals[run_id]) - self.steps[run_id], 0)
        self.steps[run_id] += delta
        self.bar.update(delta)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = TrialSpec.from_dict(trial.config["trial"]).run_id
        if int(result.get("step", -1)) >= 0:
            self._advance(run_id, int(result["step"]))
        key = next((k for k in result if isinstance(k, str) and k.startswith("eval/")), None)
        if key is not None:  # the first metric the task reports
            self.bar.set_postfix_str(f"{run_id.split('--')[0]} {key}={result[key]:.3g}", refresh=False)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._advance(TrialSpec.from_dict(trial.config["trial"]).run_id, 1 << 62)
        self.done += 1
        self.bar.set_description(f"trials {self.done}/{self.n}")

    on_trial_error = on_trial_complete

    def close(self) -> None:
        self.bar.close()
