"""Record the sha256 of scalars.jsonl and samples.parquet in the manifest of every finished run under a
directory tree that has none yet: runs finished before manifests carried them (e.g. the committed
results/).  `collect` and `tables` verify these hashes and refuse a run without them.

    python -m benchmarks.record_hashes [results]      # every <root>/<suite>/runs/ below it

Each run's files are parsed first (every scalar row, the parquet), so a damaged run is refused, not sealed;
runs already recorded are verified; only the `result_sha256` key is added to a manifest.  Rerunning it is
safe (idempotent).  Each runs directory is locked like a bench (benchmarks.results.BenchLock) while it is
recorded.  `b2fb collect --suite S --record-hashes` does the same for one results directory and suite.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.results import BenchLock, record_result_hashes
from suites.errors import UserError, run_script


def record_tree(root: Path) -> dict[Path, dict[str, int]]:
    """{runs directory: {"recorded" | "verified" | "skipped": count}} for every runs/ directory under root."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; pass the results directory (default: results)")
    out = {}
    for runs in sorted(p for p in root.rglob("runs") if p.is_dir() and any(p.glob("*/manifest.json"))):
        counts: dict[str, int] = {}
        with BenchLock(runs.parent.parent, runs.parent.name):
            for d in sorted(p for p in runs.iterdir() if p.is_dir()):
                outcome = record_result_hashes(d)
                counts[outcome] = counts.get(outcome, 0) + 1
        out[runs] = counts
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.record_hashes", description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path("results"), help="default: results")
    args = parser.parse_args(argv)
    for runs, counts in record_tree(args.root).items():
        print(f"{runs}: {counts.get('recorded', 0)} recorded, {counts.get('verified', 0)} verified, "
              f"{counts.get('skipped', 0)} not done")
    return 0


if __name__ == "__main__":
    run_script(main)
