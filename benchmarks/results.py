"""Results store: one directory per run, atomic files, and `collect` into a validated index.

    results/<suite>/runs/<run_id>/
        manifest.json     schema version, trial (suite, task id + version, algorithm, size, seed),
                          resolved config + hash, status running|done|failed (+ reason), git commit +
                          dirty flag, library versions, data hashes, wall time
        scalars.jsonl     one row per (step, split, metric): learning curves and final metrics
        samples.parquet   one row per evaluation unit, so every aggregate can be recomputed
        checkpoint.pt     only while a run is incomplete (deleted when it is done; never committed), with its
                          sha256 in a header; checkpoint.prev.pt, the one before, is the fallback of a
                          corrupt latest one

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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd

from benchmarks.config import LOCATION_KWARGS, PATH_KWARGS, TrialSpec
from suites.errors import UserError
from suites.files import CorruptFile, checked_bytes, read_checked

SCHEMA_VERSION = 1
MANIFEST, SCALARS, SAMPLES, CHECKPOINT = "manifest.json", "scalars.jsonl", "samples.parquet", "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"
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


# ---- one bench at a time per results directory and suite -----------------------------------------
LOCK = ".bench.lock"


class BenchLock:
    """`results/<suite>/.bench.lock`, held (fcntl.flock) for a bench's lifetime.

    A second bench on the same results directory and suite gets a UserError naming the holder's pid.  The
    kernel drops the lock when its holder dies, so a lock left by `kill -9` is simply taken over.  Taking the
    lock also removes the `.*.tmp` files an interrupted atomic write left under results/<suite>/ (nothing
    else writes there while the lock is held)."""

    def __init__(self, results_root: Path, suite: str):
        self.dir = Path(results_root) / suite
        self.path = self.dir / LOCK
        self._fd: int | None = None

    def __enter__(self) -> "BenchLock":
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"another bench (pid {holder}) is running on {self.dir}; wait for it to finish or "
                            f"stop it (kill {holder}), or use another --results-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        self.removed_temp_files = remove_temp_files(self.dir)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def remove_temp_files(directory: Path) -> list[Path]:
    """Delete the temporaries of interrupted atomic writes (`.<name>.<random>.tmp`) under `directory`."""
    removed = []
    for path in sorted(Path(directory).rglob(".*.tmp")):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
        self.trial_in_process: int | None = None   # 1: a fresh process; 2, 3, ...: a reused one
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
                         "threads": _threads(), "device": _device_name(self.device),
                         **({"trial_in_process": self.trial_in_process} if self.trial_in_process else {})},
            "started_at": previous.get("started_at") or now(),
            "attempts": int(previous.get("attempts", 0)) + 1,
            "wall_time_s": float(previous.get("wall_time_s", 0.0)),
        }
        self._wall_before = self._manifest["wall_time_s"]
        # fresh: nothing on disk to continue
        self._rows_synced = not any((self.dir / f).is_file() for f in (CHECKPOINT, PREVIOUS_CHECKPOINT))
        atomic_write_json(self.dir / MANIFEST, self._manifest)

    def _write_manifest(self, **updates: Any) -> None:
        self._manifest.update(updates, wall_time_s=round(self._wall_before + time.time() - self._t0, 3))
        atomic_write_json(self.dir / MANIFEST, self._manifest)

    def finish(self) -> None:
        self.flush_scalars()
        atomic_write_parquet(self.dir / SAMPLES, pd.DataFrame(self._samples))
        # the resumable checkpoint is deleted below; final_step is the last step logged: the model reported
        self._manifest.pop("checkpoint_step", None)
        self._write_manifest(status="done", finished_at=now(), result_sha256=result_hashes(self.dir),
                             final_step=max((r["step"] for r in self._rows), default=None))
        (self.dir / CHECKPOINT).unlink(missing_ok=True)
        (self.dir / PREVIOUS_CHECKPOINT).unlink(missing_ok=True)

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
        import io

        import torch

        self.flush_scalars()          # scalars first: a crash in between only loses rows after `step`
        # evaluation rows so far travel with the checkpoint, so a resumed run keeps e.g. its step-0 evaluation
        buffer = io.BytesIO()
        torch.save({"step": int(step), "state": state, "samples": self._samples}, buffer)
        data = checked_bytes(buffer.getvalue(), {"step": int(step), "run_id": self.trial.run_id})
        if (self.dir / CHECKPOINT).is_file():  # the previous one stays as the fallback of a corrupt latest
            os.replace(self.dir / CHECKPOINT, self.dir / PREVIOUS_CHECKPOINT)
        atomic_write_bytes(self.dir / CHECKPOINT, data)
        self._write_manifest(checkpoint_step=int(step))

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last good checkpoint's state, with the scalar rows logged after it dropped; None if fresh.

        Each checkpoint carries its sha256 (`suites.files.checked_bytes`).  A corrupt or cut latest checkpoint
        falls back to the previous one, else to a fresh start; the manifest records which (`recovered`)."""
        import io

        import torch

        self._rows_synced = True
        loaded = None
        for path in (self.dir / CHECKPOINT, self.dir / PREVIOUS_CHECKPOINT):
            if not path.is_file():
                continue
            try:
                payload, _ = read_checked(path)
                loaded = torch.load(io.BytesIO(payload), weights_only=False, map_location="cpu")
                break
            except CorruptFile as err:
                note = f"{err}; {self._fallback_after(path)}"
            except Exception as err:  # noqa: BLE001 - verified bytes that torch cannot read: same handling
                note = f"{path} is unreadable ({type(err).__name__}); {self._fallback_after(path)}"
            print(f"warning: {note}", file=sys.stderr, flush=True)
            self._write_manifest(recovered=note)
            path.unlink(missing_ok=True)
        if loaded is None:
            self._rows = []
            return None
        step = int(loaded["step"])
        self._samples = [r for r in loaded.get("samples", []) if r["step"] <= step]
        self._rows = [r for r in _read_jsonl(self.dir / SCALARS) if r["step"] <= step]
        for r in self._rows:
            r.pop("run_id", None)
        return loaded["state"]

    def _fallback_after(self, path: Path) -> str:
        previous = self.dir / PREVIOUS_CHECKPOINT
        if path.name == CHECKPOINT and previous.is_file():
            return f"run {self.trial.run_id} restarts from its previous checkpoint {previous.name}"
        return f"run {self.trial.run_id} restarts from scratch"


def check_checkpoints(results_root: Path, trials: list[TrialSpec]) -> list[str]:
    """Verify the checkpoints of incomplete runs before any trial starts (in the driver, before Ray).

    A corrupt or cut checkpoint is deleted, so its run resumes from its previous good checkpoint or from
    scratch; returns one line per deleted file saying which."""
    lines = []
    for trial in trials:
        d = run_dir(results_root, trial)
        latest, previous = d / CHECKPOINT, d / PREVIOUS_CHECKPOINT
        bad = []
        for path in (latest, previous):
            if path.is_file():
                try:
                    read_checked(path)
                except CorruptFile as err:
                    bad.append((path, str(err)))
                    path.unlink()
        for path, why in bad:
            if path == latest and previous.is_file():
                step = read_checked(previous)[1].get("step")
                then = f"restarts from its previous checkpoint ({previous.name}, step {step})"
            else:
                then = "restarts from scratch"
            lines.append(f"{why}; run {trial.run_id} {then}")
    return lines


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
_trials_in_process = 0   # trials execute_trial has started in this process (a reused Ray worker runs several)


def _free_the_previous_trial() -> None:
    """In a reused worker, release what the previous trial left (reference cycles, CUDA's cached blocks)
    before this one allocates."""
    import gc
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def execute_trial(trial: TrialSpec, results_root: Path, report: Callable[[dict], None] | None = None,
                  threads: int | None = None) -> str:
    """Build the task and the algorithm, run it, and record done or failed.  Returns the status."""
    import traceback

    from algorithms import registry as algo_registry
    from benchmarks.config import build_config
    from suites import registry as task_registry

    global _trials_in_process
    _trials_in_process += 1
    writer = RunWriter(results_root, trial, report)
    writer.trial_in_process = _trials_in_process
    try:
        if _trials_in_process > 1:
            _free_the_previous_trial()
        task_registry.reset_for_new_trial()
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
        m = strict_manifest(d)
        manifests.append(m)
        if m.get("status") != "done":
            continue
        verify_results(d, m)
        rows = read_scalars(d)
        if rows:
            scalar_frames.append(pd.DataFrame(rows))
        s = read_samples(d)
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


# ---- result integrity: the sha256 of a finished run's files, recorded in its manifest --------------------
RESULT_FILES = (SCALARS, SAMPLES)
MANIFEST_KEYS = ("schema_version", "run_id", "suite", "task_id", "algorithm", "seed", "config_hash", "status")


def result_hashes(directory: Path) -> dict[str, str]:
    from suites.files import file_sha256
    return {name: file_sha256(Path(directory) / name) for name in RESULT_FILES}


def _damaged(directory: Path, what: str) -> UserError:
    return UserError(f"run {Path(directory).name}: {what}; delete {directory} and re-run the bench (complete "
                     f"runs are skipped), or restore the run's files (e.g. `git checkout -- {directory}`)")


def strict_manifest(directory: Path) -> dict[str, Any]:
    """A run's manifest, which must be a JSON object with the keys every run has; UserError naming the run."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise _damaged(directory, f"{MANIFEST} is missing")
    try:
        m = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(directory, f"{MANIFEST} is not valid JSON ({err})") from None
    if not isinstance(m, dict):
        raise _damaged(directory, f"{MANIFEST} holds a JSON {type(m).__name__}, not an object")
    missing = [k for k in MANIFEST_KEYS if k not in m]
    if missing:
        raise _damaged(directory, f"{MANIFEST} lacks {', '.join(missing)}")
    if m["run_id"] != Path(directory).name:
        raise _damaged(directory, f"{MANIFEST} names run {m['run_id']!r}, not its directory's")
    return m


def verify_results(directory: Path, manifest: dict[str, Any]) -> None:
    """A done run's scalars.jsonl and samples.parquet must match the sha256 its manifest recorded when it
    finished; anything else (cut, truncated, rows lost, altered or added) is a UserError naming the run."""
    recorded = manifest.get("result_sha256")
    if not isinstance(recorded, dict):
        raise UserError(f"run {Path(directory).name}: its manifest records no sha256 of its results (finished by "
                        f"older code); check the run and record them with `b2fb collect --suite "
                        f"{manifest.get('suite')} --record-hashes`, or delete {directory} and re-run the bench")
    from suites.files import file_sha256
    for name in RESULT_FILES:
        path = Path(directory) / name
        if not path.is_file():
            raise _damaged(directory, f"{name} is missing")
        if file_sha256(path) != recorded.get(name):
            raise _damaged(directory, f"{name} does not match the sha256 recorded when the run finished (changed, "
                                      f"cut or damaged since)")


def read_scalars(directory: Path) -> list[dict[str, Any]]:
    """The rows of a run's scalars.jsonl, each checked to be a row of this run; UserError naming the run."""
    path = Path(directory) / SCALARS
    rows = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise _damaged(directory, f"{SCALARS} is unreadable ({err})") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise _damaged(directory, f"{SCALARS} line {number} is not a JSON row (cut or damaged)") from None
        if not (isinstance(row, dict) and row.get("run_id") == Path(directory).name
                and isinstance(row.get("step"), int) and isinstance(row.get("split"), str)
                and isinstance(row.get("metric"), str) and isinstance(row.get("value"), (int, float))):
            raise _damaged(directory, f"{SCALARS} line {number} is not a row of this run "
                                      f"(run_id, step, split, metric, value)")
        rows.append(row)
    if text and not text.endswith("\n"):
        raise _damaged(directory, f"{SCALARS} ends mid-line (cut short)")
    return rows


def read_samples(directory: Path) -> pd.DataFrame:
    path = Path(directory) / SAMPLES
    try:
        return pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise _damaged(directory, f"{SAMPLES} is unreadable ({first})") from None


def record_result_hashes(directory: Path) -> str:
    """Record the sha256 of a finished run's files in its manifest, once: for runs finished before the
    manifest carried them.  The files are read first (each scalar row, the parquet), so a damaged run is
    refused, not sealed.  Returns "recorded", "verified" (already recorded and matching) or "skipped"
    (not done).  Only the `result_sha256` key is added; the rest of the manifest is rewritten unchanged."""
    m = strict_manifest(directory)
    if m.get("status") != "done":
        return "skipped"
    if "result_sha256" in m:
        verify_results(directory, m)
        return "verified"
    for name in RESULT_FILES:
        if not (Path(directory) / name).is_file():
            raise _damaged(directory, f"{name} is missing")
    rows = read_scalars(directory)
    keys = [(r["step"], r["split"], r["metric"]) for r in rows]
    if len(keys) != len(set(keys)):
        raise _damaged(directory, f"{SCALARS} repeats a (step, split, metric) row")
    read_samples(directory)
    atomic_write_json(Path(directory) / MANIFEST, {**m, "result_sha256": result_hashes(directory)})
    return "recorded"


def load_index(results_root: Path, suite: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    index_dir = Path(results_root) / suite / "index"
    if not (index_dir / "scalars.parquet").is_file():
        raise UserError(f"no index under {index_dir}; run `b2fb collect --suite {suite}` first")
    return (pd.read_csv(index_dir / "runs.csv"), pd.read_parquet(index_dir / "scalars.parquet"),
            pd.read_parquet(index_dir / "samples.parquet"))

