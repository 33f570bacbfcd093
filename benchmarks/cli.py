"""`b2fb` / `python -m benchmarks`: list, run, collect, tables, perf.

Bad input (unknown suite, task, algorithm or size; malformed YAML; unknown config keys; bad data
files) prints one line `error: ...` and exits with code 2.  `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from suites.errors import UserError

EXIT_BAD_INPUT = 2
DEFAULT_RESULTS = Path(os.environ.get("B2FB_RESULTS", "results"))
DEFAULT_DATA = Path(os.environ.get("B2FB_DATA", "data"))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + message otherwise)
        raise UserError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="b2fb", description="b2fb-bench: FB / one-step FB (zero-shot RL) and DDPO / B2-DiffuRL "
                "(text-to-image RL) under one protocol.  Typical use: `b2fb run --suite didactic --size cpu`.")
    p.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS,
                   help="where runs, indexes, tables and figures live (default: ./results or $B2FB_RESULTS)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA,
                   help="datasets, caches and Ray's scratch space; never committed (default: ./data or $B2FB_DATA)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("list", help="print the registered tasks and algorithms")
    s.add_argument("--suite", help="only this suite")
    s.add_argument("--tags", nargs="*", default=[], help="only tasks carrying all these tags (e.g. cpu)")

    s = sub.add_parser("run", help="run a suite's grid on Ray Tune, then collect and build tables",
                       description="Expand the grid of benchmarks/configs/<suite>.yaml at one size into "
                       "(algorithm, task, seed) trials and run the incomplete ones on Ray Tune.  Complete runs are "
                       "skipped; interrupted ones resume from their last checkpoint.")
    _add_grid_args(s)
    s.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: from the grid)")
    s.add_argument("--no-tables", action="store_true", help="skip collect + tables after running")
    s.add_argument("--dry-run", action="store_true", help="print the trials and whether each is complete; run nothing")

    s = sub.add_parser("collect", help="index a suite's runs and validate them; with --domain instead: collect a "
                       "reward-free dmc dataset (see `b2fb collect --domain walker --help`)")
    _add_grid_args(s, grid_optional=True)

    s = sub.add_parser("tables", help="regenerate tables and figures from results/ alone",
                       description="Tables and figures of one experiment grid (the same grid arguments as `run`), "
                       "read from results/ only, written to results/<suite>/tables/<size>/ and figures/<size>/.")
    _add_grid_args(s)
    s.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    s.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resampler (default 0)")
    s.add_argument("--no-collect", action="store_true", help="use the existing index instead of re-collecting")

    s = sub.add_parser("perf", help="measure throughput; writes results/perf/<suite>.json")
    s.add_argument("--suite", required=True)
    s.add_argument("--seconds", type=float, default=5.0, help="time budget per measurement")
    return p


def _add_grid_args(s: argparse.ArgumentParser, grid_optional: bool = False) -> None:
    s.add_argument("--suite", required=True, help="suite name (see `b2fb list`)")
    s.add_argument("--size", default=None if grid_optional else "cpu",
                   help="grid size: tiny, cpu (default) or paper")
    s.add_argument("--config", type=Path, default=None, help="grid file (default: benchmarks/configs/<suite>.yaml)")
    if not grid_optional:
        s.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides the grid)")
        s.add_argument("--algos", nargs="+", default=None, help="only these algorithms")
        s.add_argument("--tasks", nargs="+", default=None, help="only these task ids")
        s.add_argument("--set", dest="overrides", action="append", default=[], metavar="ALGO.KEY=VALUE | task.KEY=VALUE",
                       help="override an algorithm config field, e.g. --set onestep_fb.lr=3e-4 (repeatable)")


def cmd_list(args) -> int:
    from algorithms import registry as algos
    from suites import registry

    specs = registry.select(args.suite, *args.tags) if args.suite else registry.all_specs()
    if not args.suite and args.tags:
        specs = tuple(s for s in specs if set(args.tags) <= s.tags)
    print("Tasks:")
    width = max((len(s.id) for s in specs), default=0)
    for s in specs:
        print(f"  {s.id:<{width}}  [{', '.join(sorted(s.tags))}]  {s.description}")
    print("Algorithms:")
    for a in algos.all_algorithms():
        if args.suite and args.suite not in a.suites:
            continue
        print(f"  {a.name:<14} suites: {', '.join(sorted(a.suites)):<12} {a.description}")
    return 0


def cmd_run(args) -> int:
    from benchmarks.config import load_experiment
    from benchmarks.results import is_complete

    exp = load_experiment(args.suite, args.size, args.config, args.overrides, args.seeds, args.algos, args.tasks,
                          data_root=args.data_dir)
    trials = exp.trials()
    results_root = args.results_dir.resolve()
    todo = [t for t in trials if not is_complete(results_root, t)]
    _check_tasks_build(trials, prepare=[] if args.dry_run else todo)
    print(f"{args.suite} / {args.size}: {len(trials)} trials ({len(trials) - len(todo)} complete, "
          f"{len(todo)} to run) -> {results_root / args.suite / 'runs'}", flush=True)
    if args.dry_run:
        for t in trials:
            print(f"  {'done ' if t not in todo else 'todo '} {t.run_id}")
        return 0
    failed = []
    if todo:
        from benchmarks.orchestrate import run_trials

        statuses = run_trials(todo, results_root, args.data_dir / "ray", args.max_concurrent or exp.max_concurrent,
                              experiment_name=f"{args.suite}-{args.size}")
        interrupted = [k for k, v in statuses.items() if v in ("running", "not started")]
        if interrupted:
            print(f"interrupted: {len(interrupted)} runs incomplete; re-run the same command to resume them "
                  f"(complete runs are skipped)", file=sys.stderr)
            return 130
        failed = [k for k, v in statuses.items() if v != "done"]
        for run_id in failed:
            from benchmarks.results import read_manifest
            m = read_manifest(results_root / args.suite / "runs" / run_id) or {}
            print(f"failed: {run_id}: {m.get('reason') or m.get('status', 'did not start')}", file=sys.stderr)
    if not args.no_tables:
        _collect_and_tables(args.suite, results_root, trials, args.size, reps=2000, seed=0)
    return 1 if failed else 0


def _check_tasks_build(trials: list, prepare: list) -> None:
    """Build each distinct task once in the driver, so a bad input file (e.g. a custom CMP) is one clear
    error before any trial starts.  Task construction is cheap by contract: heavy data loads lazily.
    Tasks of the trials in `prepare` (those still to run) that need data make it now, once, with the whole
    machine (e.g. dmc collection); a grid whose runs are all complete collects nothing."""
    from suites import registry

    def key(t):
        return t.task_id, tuple(sorted((k, str(v)) for k, v in t.task_kwargs.items()))

    needed = {key(t) for t in prepare}
    seen = set()
    for t in trials:
        k = key(t)
        if k not in seen:
            seen.add(k)
            task = registry.get(t.task_id).with_kwargs(**t.task_kwargs).make()
            if k in needed and hasattr(task, "prepare"):
                task.prepare()


def _collect_and_tables(suite: str, results_root: Path, expected, size: str, reps: int, seed: int,
                        collect_first: bool = True) -> None:
    from benchmarks.results import collect
    from benchmarks.tables import build_tables

    if collect_first:
        _print_collect(collect(results_root, suite, expected))
    paths = build_tables(suite, results_root, {t.run_id for t in expected}, size, reps=reps, seed=seed)
    print("Tables and figures:")
    for p in paths:
        print(f"  {p}")


def _print_collect(summary) -> None:
    print(f"collected {summary['done']} done of {summary['runs']} runs -> {summary['index_dir']}")
    for f in summary["failed"]:
        print(f"  failed run: {f['run_id']}: {f['reason']}")
    for r in summary["incomplete"]:
        print(f"  incomplete run (re-run the bench to finish it): {r}")
    if summary["missing"]:
        print(f"  missing grid cells ({len(summary['missing'])}): {', '.join(summary['missing'][:8])}"
              f"{' ...' if len(summary['missing']) > 8 else ''}")


def cmd_collect(args) -> int:
    from benchmarks.config import load_experiment
    from benchmarks.results import collect
    from suites import registry

    registry.load_suite(args.suite)
    expected = load_experiment(args.suite, args.size, args.config).trials() if args.size else None
    _print_collect(collect(args.results_dir.resolve(), args.suite, expected))
    return 0


def cmd_tables(args) -> int:
    from benchmarks.config import load_experiment

    if args.reps < 1:
        raise UserError(f"--reps must be at least 1, got {args.reps}")
    exp = load_experiment(args.suite, args.size, args.config, args.overrides, args.seeds, args.algos, args.tasks,
                          data_root=args.data_dir)
    _collect_and_tables(args.suite, args.results_dir.resolve(), exp.trials(), args.size, reps=args.reps,
                        seed=args.bootstrap_seed, collect_first=not args.no_collect)
    return 0


def cmd_perf(args) -> int:
    from benchmarks.perf import run_perf
    from suites import registry

    registry.load_suite(args.suite)
    path = run_perf(args.suite, args.results_dir.resolve() / "perf", args.seconds)
    print(path)
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "collect": cmd_collect, "tables": cmd_tables, "perf": cmd_perf}


def _collect_data(argv: list[str]) -> int:
    """`b2fb [--data-dir D] collect --domain ...`: reward-free dmc data collection (suites/dmc/collect.py).
    `b2fb collect --suite ...` indexes results instead."""
    from suites.dmc.collect import main_collect

    rest = list(argv[argv.index("collect") + 1:])
    top = argv[:argv.index("collect")]
    if "--data-dir" in top and "--data-dir" not in rest:
        i = top.index("--data-dir")
        rest += top[i:i + 2]
    return main_collect([a for a in rest if a != "--debug"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        if "collect" in argv and "--domain" in argv[argv.index("collect"):]:
            return _collect_data(argv)
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to resume (complete runs are skipped)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `b2fb ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
