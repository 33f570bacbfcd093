"""How long a bench's runs took, read from their manifests, and whether they reproduce another copy's runs.

    python -m benchmarks.grid_timing RUNS [--reference RUNS] [--out CSV]

RUNS is one suite's runs directory (e.g. results/t2i/runs).  Prints the finished runs, the span from the
first run's start to the last run's finish, the sum of the runs' wall times with each algorithm's range,
how many ran in a reused worker process (manifest platform.trial_in_process > 1), and, with --reference,
how many have the result sha256 of the run with the same id there (byte-identical scalars and samples).
The bench's own wall time (start-up and tables included) is the caller's to measure; the span is a lower
bound of it.  --out writes one row per run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from benchmarks.results import strict_manifest
from suites.errors import UserError, run_script


def read_runs(runs: Path) -> pd.DataFrame:
    """One row per finished run under `runs`: id, algorithm, start, finish, wall time, trial_in_process."""
    runs = Path(runs)
    if not runs.is_dir():
        raise UserError(f"{runs} is not a directory; pass a suite's runs directory, e.g. results/t2i/runs")
    rows = []
    for path in sorted(runs.glob("*/manifest.json")):
        m = strict_manifest(path.parent)
        if m.get("status") != "done":
            continue
        rows.append({"run_id": m["run_id"], "algorithm": m["algorithm"],
                     "started_at": pd.Timestamp(m["started_at"]), "finished_at": pd.Timestamp(m["finished_at"]),
                     "wall_time_s": float(m["wall_time_s"]), "attempts": int(m.get("attempts", 1)),
                     "trial_in_process": m.get("platform", {}).get("trial_in_process"),
                     "result_sha256": json.dumps(m.get("result_sha256"), sort_keys=True)})
    if not rows:
        raise UserError(f"no finished runs under {runs}")
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, reference: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(the per-run table, the summary lines)."""
    frame = frame.sort_values("started_at").reset_index(drop=True)
    span = (frame.finished_at.max() - frame.started_at.min()).total_seconds()
    lines = [f"{len(frame)} finished runs; first start {frame.started_at.min().isoformat()}, last finish "
             f"{frame.finished_at.max().isoformat()}: span {span:.0f} s ({span / 3600:.2f} h)",
             f"sum of run wall times {frame.wall_time_s.sum():.0f} s; runs resumed (attempts > 1): "
             f"{int((frame.attempts > 1).sum())}; in a reused worker: {int((frame.trial_in_process.fillna(1) > 1).sum())}"]
    for algo, g in frame.groupby("algorithm", sort=False):
        lines.append(f"  {algo}: {len(g)} runs, {g.wall_time_s.min():.0f}-{g.wall_time_s.max():.0f} s "
                     f"(mean {g.wall_time_s.mean():.0f})")
    if reference is not None:
        ref = dict(zip(reference.run_id, reference.result_sha256))
        frame["same_as_reference"] = [ref.get(r) == h if r in ref else None
                                      for r, h in zip(frame.run_id, frame.result_sha256)]
        known = frame.same_as_reference.dropna()
        lines.append(f"reproduce the reference byte for byte: {int(known.sum())} of {len(known)} runs found there"
                     f" ({len(frame) - len(known)} not found)")
    return frame.drop(columns="result_sha256"), lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grid_timing", description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, help="a suite's runs directory, e.g. results/t2i/runs")
    parser.add_argument("--reference", type=Path, help="another runs directory to compare result sha256 with")
    parser.add_argument("--out", type=Path, help="write the per-run table here (CSV)")
    args = parser.parse_args(argv)
    frame, lines = summarize(read_runs(args.runs), read_runs(args.reference) if args.reference else None)
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    run_script(main)
