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


def run_perf(suite: str, out_dir: Path, seconds: float) -> Path:
    if suite not in SUITE_MODULES:
        raise UserError(f"no perf benchmarks for suite {suite!r} yet; available: {', '.join(SUITE_MODULES)}")
    if seconds <= 0:
        raise UserError(f"--seconds must be positive, got {seconds}")
    module = importlib.import_module(SUITE_MODULES[suite])
    result = {"suite": suite, "measured_at": now(), "git": git_state(), "versions": library_versions(),
              "machine": {"processor": platform.processor() or platform.machine(), "cpus": _cpus()},
              "results": module.measure(seconds)}
    path = Path(out_dir) / f"{suite}.json"
    atomic_write_json(path, result)
    return path


def _cpus() -> int:
    import os
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
