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
import signal
import sys
import time
from pathlib import Path
from typing import Any

# Before importing ray: quiet, token-free local clusters; no TensorBoard/CSV loggers (results/ is the record).
for _key, _value in (("RAY_AUTH_MODE", "disabled"), ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"),
                     ("RAY_AIR_NEW_OUTPUT", "0"), ("RAY_DEDUP_LOGS", "0"),
                     ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")):
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
               experiment_name: str = "bench", show_progress: bool = True) -> dict[str, str]:
    """Run every trial that is not complete; returns {run_id: status} for the trials that ran."""
    results_root, ray_dir = Path(results_root).resolve(), Path(ray_dir).resolve()
    # Cheap trials first (e.g. baselines that train nothing), so an interrupted bench has filled as many
    # table cells as it could; the order is stable otherwise.
    todo = sorted(pending_trials(trials, results_root), key=lambda t: t.algo_config.get("num_steps", 0))
    if not todo:
        return {}
    started_here = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                                      configure_logging=True)
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count(), **kwargs)
        started_here = True
    _check_capacity(todo)
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
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or 0, reuse_actors=False),
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
    out = {}
    for t in todo:
        m = read_manifest(run_dir(results_root, t)) or {}
        out[t.run_id] = m.get("status", "not started")
    return out


def _check_capacity(todo: list[TrialSpec]) -> None:
    """A trial that asks for more than the whole cluster has would wait forever: say so instead."""
    have = ray.cluster_resources()
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        need = max(float(t.resources.get(key, 0)) for t in todo)
        if need > have.get(ray_key, 0.0):
            ray.shutdown()
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
