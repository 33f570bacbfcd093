"""Throughput benchmarks (not tests): `b2fb perf --suite S` writes results/perf/<suite>.json.

Timings live here, never in tests.  Each suite module exposes `measure(seconds) -> dict`.
"""
from __future__ import annotations

import importlib
import platform
from pathlib import Path

from benchmarks.results import atomic_write_json, git_state, library_versions, now
from suites.errors import UserError

SUITE_MODULES = {"didactic": "benchmarks.perf.didactic", "dmc": "benchmarks.perf.dmc", "t2i": "benchmarks.perf.t2i"}


def run_perf(suite: str, out_dir: Path, seconds: float, part: str | None = None) -> Path:
    """Measure a suite and write results/perf/<suite>.json.  `part` (a suite module's PARTS, e.g. dmc's
    "pixels") measures that part alone and replaces only its entry in the existing file, under
    results[part], with its own time, commit and machine."""
    if suite not in SUITE_MODULES:
        raise UserError(f"no perf benchmarks for suite {suite!r} yet; available: {', '.join(SUITE_MODULES)}")
    if seconds <= 0:
        raise UserError(f"--seconds must be positive, got {seconds}")
    module = importlib.import_module(SUITE_MODULES[suite])
    parts = getattr(module, "PARTS", {})
    if part is not None and part not in parts:
        raise UserError(f"suite {suite!r} has no perf part {part!r}; its parts: {', '.join(parts) or 'none'} "
                        f"(or none: everything)")
    stamp = {"measured_at": now(), "git": git_state(), "versions": library_versions(),
             "machine": {"processor": platform.processor() or platform.machine(), "cpus": _cpus()}}
    path = Path(out_dir) / f"{suite}.json"
    if part is None:
        result = {"suite": suite, **stamp, "results": module.measure(seconds)}
    else:
        import json

        result = json.loads(path.read_text()) if path.is_file() else {"suite": suite, "results": {}}
        result["results"][part] = {**stamp, **parts[part](seconds)}
    atomic_write_json(path, result)
    return path


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
