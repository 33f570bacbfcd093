"""Results store: one directory per run, atomic files, and `collect` into a validated index.

    results/<suite>/runs/<run_id>/
        manifest.json     schema version, trial (suite, task id + version, algorithm, size, seed),
                          resolved config + hash, status running|done|failed (+ reason), git commit +
                          dirty flag, library versions, data hashes, wall time
        scalars.jsonl     one row per (step, split, metric): learning curves and final metrics
        samples.parquet   one row per evaluation unit, so every aggregate can be recomputed
        checkpoint.pt     only while a run is incomplete (deleted when it is done; never committed)

Every file is written to a temporary file and moved into place with `os.replace`.  Scalars are kept
in memory and rewritten at each checkpoint, in the order scalars -> checkpoint, so that on resume the
rows after the checkpoint's step are dropped: nothing is lost and nothing is duplicated.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd

from benchmarks.config import LOCATION_KWARGS, PATH_KWARGS, TrialSpec
from suites.errors import UserError

SCHEMA_VERSION = 1
MANIFEST, SCALARS, SAMPLES, CHECKPOINT = "manifest.json", "scalars.jsonl", "samples.parquet", "checkpoint.pt"
REPO_ROOT = Path(__file__).resolve().parent.parent


# ---- atomic writes ------------------------------------------------------------------------------
def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then move it into place with os.replace.
    Readers see the old file or the new one, never half of one; a failure leaves no temporary behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, write)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def atomic_write_csv(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


# ---- provenance ---------------------------------------------------------------------------------
def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD") or None
        # Code provenance: results/ itself changes during every bench, and Markdown docs are not code, so
        # neither makes the tree dirty.
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results",
                         ":(exclude)*.md"))
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"commit": commit, "dirty": dirty}


def library_versions() -> dict[str, str]:
    from importlib import metadata
    out = {"python": platform.python_version()}
    for name in ("torch", "numpy", "pandas", "ray", "scipy", "diffusers", "open_clip_torch", "dm-control", "mujoco"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---- one run -------------------------------------------------------------------------------------
def run_dir(results_root: Path, trial: TrialSpec) -> Path:
    return Path(results_root) / trial.suite / "runs" / trial.run_id


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_complete(results_root: Path, trial: TrialSpec) -> bool:
    """Done = the manifest says so and the files it promises exist (HELM's rule)."""
    d = run_dir(results_root, trial)
    m = read_manifest(d)
    return bool(m) and m.get("status") == "done" and (d / SCALARS).is_file() and (d / SAMPLES).is_file()


class RunWriter:
    """The results writer of one trial; the adapter's only view of where results go.

    `report` (optional) forwards progress and metrics to the orchestrator (Ray Tune) for live display.
    `device` is where the adapter computes: "cuda" when the grid gives the trial a GPU, else "cpu"
    (`trial_device`); it is an execution detail like the thread count, so it is not in the config hash.
    """

    def __init__(self, results_root: Path, trial: TrialSpec, report: Callable[[dict], None] | None = None):
        self.trial, self.dir, self.report = trial, run_dir(results_root, trial), report
        self.seed = trial.seed
        self.device = "cpu"
        self._rows: list[dict[str, Any]] = []
        self._samples: list[dict[str, Any]] = []
        self._manifest: dict[str, Any] = {}
        self._t0 = time.time()
        self._last_report = 0.0
        self._step = 0
        self._rows_synced = False  # True once the in-memory rows continue what is on disk

    # lifecycle
    def start(self, task_version: int, data_hashes: dict[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        previous = read_manifest(self.dir) or {}
        self._manifest = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.trial.run_id,
            "suite": self.trial.suite,
            "size": self.trial.size,
            "task_id": self.trial.task_id,
            "task_version": task_version,
            # file and directory kwargs by name only: manifests are committed and must not carry this
            # machine's paths (a file's content is in data_hashes)
            "task_kwargs": {k: (Path(v).name if k in PATH_KWARGS + LOCATION_KWARGS and v else v)
                            for k, v in self.trial.task_kwargs.items()},
            "algorithm": self.trial.algorithm,
            "seed": self.trial.seed,
            "config": self.trial.algo_config,
            "config_hash": self.trial.config_hash,
            "resources": self.trial.resources,
            "status": "running",
            "reason": None,
            "checkpoint_rule": "final",
            "git": git_state(),
            "versions": library_versions(),
            "data_hashes": data_hashes,
            "platform": {"machine": platform.machine(), "system": platform.system(),
                         "threads": _threads(), "device": _device_name(self.device)},
            "started_at": previous.get("started_at") or now(),
            "attempts": int(previous.get("attempts", 0)) + 1,
            "wall_time_s": float(previous.get("wall_time_s", 0.0)),
        }
        self._wall_before = self._manifest["wall_time_s"]
        self._rows_synced = not (self.dir / CHECKPOINT).is_file()  # fresh: nothing on disk to continue
        atomic_write_json(self.dir / MANIFEST, self._manifest)

    def _write_manifest(self, **updates: Any) -> None:
        self._manifest.update(updates, wall_time_s=round(self._wall_before + time.time() - self._t0, 3))
        atomic_write_json(self.dir / MANIFEST, self._manifest)

    def finish(self) -> None:
        self.flush_scalars()
        atomic_write_parquet(self.dir / SAMPLES, pd.DataFrame(self._samples))
        # the resumable checkpoint is deleted below; final_step is the last step logged: the model reported
        self._manifest.pop("checkpoint_step", None)
        self._write_manifest(status="done", finished_at=now(),
                             final_step=max((r["step"] for r in self._rows), default=None))
        (self.dir / CHECKPOINT).unlink(missing_ok=True)

    def fail(self, reason: str) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._rows_synced:  # rows in memory extend what is on disk; otherwise leave the file alone
            self.flush_scalars()
        if not self._manifest:  # failed before start(): keep what an earlier attempt recorded
            self._manifest = read_manifest(self.dir) or {
                "schema_version": SCHEMA_VERSION, "run_id": self.trial.run_id, "suite": self.trial.suite,
                "size": self.trial.size, "task_id": self.trial.task_id, "algorithm": self.trial.algorithm,
                "seed": self.trial.seed, "config": self.trial.algo_config, "config_hash": self.trial.config_hash}
            self._wall_before = float(self._manifest.get("wall_time_s", 0.0))
        self._write_manifest(status="failed", reason=reason, finished_at=now())

    def interrupt(self) -> None:
        if self._manifest and self._manifest.get("status") == "running":
            self._write_manifest(status="running", reason=f"interrupted after step {self._step}")

    # what adapters call
    def log(self, step: int, metrics: dict[str, float], split: str) -> None:
        for metric, value in metrics.items():
            self._rows.append({"step": int(step), "split": split, "metric": metric, "value": float(value)})
        if self.report is not None and split == "eval":
            self.report({"step": int(step), **{f"{split}/{k}": float(v) for k, v in metrics.items()}})

    def add_samples(self, rows: list[dict[str, Any]], step: int) -> None:
        self._samples.extend({"step": int(step), **r} for r in rows)

    def save_artifact(self, name: str, data: bytes) -> None:
        """A file beside the run's results (e.g. a PNG grid of samples), written atomically."""
        atomic_write_bytes(self.dir / name, data)

    def progress(self, iterable: Iterable[int], total: int, initial: int = 0) -> Iterator[int]:
        """Wrap the training loop; forwards progress to the orchestrator about once a second."""
        for step in iterable:
            yield step
            self._step = step
            t = time.time()
            if self.report is not None and (t - self._last_report > 1.0 or step == total):
                self._last_report = t
                self.report({"step": int(step), "total": int(total)})

    def flush_scalars(self) -> None:
        text = "".join(json.dumps({"run_id": self.trial.run_id, **r}) + "\n" for r in self._rows)
        atomic_write_text(self.dir / SCALARS, text)

    # checkpoints
    def save_checkpoint(self, state: dict[str, Any], step: int) -> None:
        import torch

        self.flush_scalars()          # scalars first: a crash in between only loses rows after `step`
        # evaluation rows so far travel with the checkpoint, so a resumed run keeps e.g. its step-0 evaluation
        blob = {"step": int(step), "state": state, "samples": self._samples}
        atomic_write(self.dir / CHECKPOINT, lambda tmp: torch.save(blob, tmp))
        self._write_manifest(checkpoint_step=int(step))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint's state, with the scalar rows logged after it dropped; None if fresh."""
        import torch

        path = self.dir / CHECKPOINT
        self._rows_synced = True
        if not path.is_file():
            self._rows = []
            return None
        blob = torch.load(path, weights_only=False, map_location="cpu")  # the agent moves it to its device
        step = int(blob["step"])
        self._samples = [r for r in blob.get("samples", []) if r["step"] <= step]
        self._rows = [r for r in _read_jsonl(self.dir / SCALARS) if r["step"] <= step]
        for r in self._rows:
            r.pop("run_id", None)
        return blob["state"]


def _threads() -> int | None:
    try:
        import torch
        return torch.get_num_threads()
    except ImportError:
        return None


def trial_device(trial: TrialSpec) -> str:
    """"cuda" when the grid's resources give the trial a GPU (Ray then exposes it to the trial's
    process through CUDA_VISIBLE_DEVICES), else "cpu"."""
    if float(trial.resources.get("gpu", 0) or 0) <= 0:
        return "cpu"
    import torch
    if not torch.cuda.is_available():
        raise UserError(f"trial {trial.run_id} asks for a GPU (resources.gpu={trial.resources['gpu']}) but torch "
                        f"sees none here; run it on a GPU machine or set `resources: {{gpu: 0}}` in the grid")
    return "cuda"


def _device_name(device: str) -> str:
    if device == "cpu":
        return "cpu"
    import torch
    return f"{device} ({torch.cuda.get_device_name()})"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


# ---- running one trial (no Ray here) -------------------------------------------------------------
def execute_trial(trial: TrialSpec, results_root: Path, report: Callable[[dict], None] | None = None,
                  threads: int | None = None) -> str:
    """Build the task and the algorithm, run it, and record done or failed.  Returns the status."""
    import traceback

    from algorithms import registry as algo_registry
    from benchmarks.config import build_config
    from suites import registry as task_registry

    writer = RunWriter(results_root, trial, report)
    try:
        if threads:
            import torch
            torch.set_num_threads(max(1, int(threads)))
        spec = task_registry.get(trial.task_id).with_kwargs(**trial.task_kwargs)
        task = spec.make()
        module = algo_registry.get(trial.algorithm).load()
        cfg = build_config(module.Config, trial.algo_config, f"trial {trial.run_id}")
        writer.device = trial_device(trial)
        writer.start(spec.version, task.data_hashes())
        module.run(task, cfg, writer)
        writer.finish()
        return "done"
    except (KeyboardInterrupt, SystemExit):
        # Interrupted (Ctrl-C, or Ray stopping the trial): the run stays "running" and resumes from its
        # last checkpoint next time.  Rows after that checkpoint are dropped on resume.
        writer.interrupt()
        raise
    except Exception as err:  # a failing trial is recorded; the other trials go on
        writer.fail(f"{type(err).__name__}: {err}")
        atomic_write_text(writer.dir / "error.txt", traceback.format_exc())
        return "failed"


# ---- collect ---------------------------------------------------------------------------------------
def collect(results_root: Path, suite: str, expected: list[TrialSpec] | None = None) -> dict[str, Any]:
    """Read every run of a suite into `results/<suite>/index/` and validate it.

    Refuses mixed schema versions and duplicated rows; reports (does not drop) missing grid cells.
    Returns a summary with the paths written and the missing / failed / incomplete runs.
    """
    root = Path(results_root) / suite
    runs_dir = root / "runs"
    manifests, scalar_frames, sample_frames = [], [], []
    for d in sorted(p for p in runs_dir.glob("*") if p.is_dir()) if runs_dir.is_dir() else []:
        m = read_manifest(d)
        if m is None:
            raise UserError(f"{d / MANIFEST} is missing or corrupt; delete {d} and re-run the bench")
        manifests.append(m)
        if m.get("status") != "done":
            continue
        rows = _read_jsonl(d / SCALARS)
        if rows:
            scalar_frames.append(pd.DataFrame(rows))
        if (d / SAMPLES).is_file():
            s = pd.read_parquet(d / SAMPLES)
            s.insert(0, "run_id", m["run_id"])
            sample_frames.append(s)
    if not manifests:
        raise UserError(f"no runs under {runs_dir}; run `b2fb run --suite {suite}` (or `make bench SUITE={suite}`) first")
    versions = sorted({m.get("schema_version") for m in manifests}, key=str)
    if len(versions) > 1:
        raise UserError(f"{runs_dir} mixes results schema versions {versions}; re-run or move the old runs away")
    if versions[0] != SCHEMA_VERSION:
        raise UserError(f"{runs_dir} holds schema version {versions[0]}, this code writes {SCHEMA_VERSION}; "
                        f"re-run the bench or check out the matching code")
    run_cols = ["run_id", "suite", "size", "task_id", "task_version", "algorithm", "seed", "config_hash",
                "status", "reason", "wall_time_s"]
    runs = pd.DataFrame([{k: m.get(k) for k in run_cols} for m in manifests])
    done = runs[runs.status == "done"]
    scalars = pd.concat(scalar_frames, ignore_index=True) if scalar_frames else pd.DataFrame(
        columns=["run_id", "step", "split", "metric", "value"])
    dup = scalars.duplicated(["run_id", "step", "split", "metric"])
    if dup.any():
        r = scalars[dup].iloc[0]
        raise UserError(f"duplicated scalar row in run {r.run_id} (step {r.step}, {r.split}/{r.metric}); "
                        f"delete that run directory and re-run the bench")
    scalars = scalars.merge(done[["run_id", "task_id", "task_version", "algorithm", "seed", "config_hash", "size"]],
                            on="run_id", how="inner")
    samples = pd.concat(sample_frames, ignore_index=True) if sample_frames else pd.DataFrame()
    if not samples.empty:
        samples = samples.merge(done[["run_id", "task_id", "algorithm", "seed", "size"]], on="run_id", how="inner")
    index_dir = root / "index"
    atomic_write_csv(index_dir / "runs.csv", runs)
    atomic_write_parquet(index_dir / "scalars.parquet", scalars)
    atomic_write_parquet(index_dir / "samples.parquet", samples)
    missing = []
    if expected is not None:
        have = set(done.run_id)
        missing = [t.run_id for t in expected if t.run_id not in have]
    return {"index_dir": index_dir, "runs": len(runs), "done": len(done),
            "failed": runs[runs.status == "failed"][["run_id", "reason"]].to_dict("records"),
            "incomplete": runs[runs.status == "running"].run_id.tolist(), "missing": missing}


def load_index(results_root: Path, suite: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    index_dir = Path(results_root) / suite / "index"
    if not (index_dir / "scalars.parquet").is_file():
        raise UserError(f"no index under {index_dir}; run `b2fb collect --suite {suite}` first")
    return (pd.read_csv(index_dir / "runs.csv"), pd.read_parquet(index_dir / "scalars.parquet"),
            pd.read_parquet(index_dir / "samples.parquet"))

