"""`b2fb` / `python -m benchmarks`: list, run, collect, tables, perf.

Bad input (unknown suite, task, algorithm or size; malformed YAML; unknown config keys; bad data
files) prints one line `error: ...` and exits with code 2.  `--debug` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from suites.errors import UserError

EXIT_BAD_INPUT = 2
DEFAULT_RESULTS = Path(os.environ.get("B2FB_RESULTS", "results"))
DEFAULT_DATA = Path(os.environ.get("B2FB_DATA", "data"))


def _count(text: str) -> int:
    """argparse type: an integer of at least 1 (a count of seeds, trials, resamples)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    """argparse type: a non-negative integer seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _seconds(text: str) -> float:
    """argparse type: a finite positive number of seconds."""
    import math
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


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
    s.add_argument("--max-concurrent", type=_count, default=None, help="trials at once (default: from the grid)")
    s.add_argument("--no-tables", action="store_true", help="skip collect + tables after running")
    s.add_argument("--dry-run", action="store_true", help="print the trials and whether each is complete; run nothing")

    s = sub.add_parser("collect", help="index a suite's runs and validate them; with --domain instead: collect a "
                       "reward-free dmc dataset (see `b2fb collect --domain walker --help`)",
                       description="Read every run of a suite into results/<suite>/index/, verifying each finished "
                       "run's files against the sha256 its manifest recorded.  --record-hashes records those "
                       "hashes for runs finished before manifests carried them (idempotent).")
    _add_grid_args(s, grid_optional=True)
    s.add_argument("--record-hashes", action="store_true",
                   help="first record the sha256 of scalars.jsonl and samples.parquet in the manifest of every "
                   "finished run that has none (each file is parsed first; runs already recorded are verified)")

    s = sub.add_parser("tables", help="regenerate tables and figures from results/ alone",
                       description="Tables and figures of one experiment grid (the same grid arguments as `run`), "
                       "read from results/ only, written to results/<suite>/tables/<size>/ and figures/<size>/.")
    _add_grid_args(s)
    s.add_argument("--reps", type=_count, default=2000, help="bootstrap resamples (default 2000)")
    s.add_argument("--bootstrap-seed", type=_seed, default=0, help="seed of the bootstrap resampler (default 0)")
    s.add_argument("--no-collect", action="store_true", help="use the existing index instead of re-collecting")

    s = sub.add_parser("render", help="render a dmc state dataset's pixels (re-rendered from its physics)",
                       description="Render the frames of a reward-free dmc dataset from its stored physics "
                       "states into <dataset>/pixels-<size>-cam<camera>[-<flags>]/ (suites/dmc/pixels.py).  "
                       "Resumable per episode file; 2 worker processes by default.  `b2fb run` renders "
                       "what a pixel grid needs.")
    s.add_argument("--domain", required=True,
                   help="dmc domain with a pixel version: walker, cheetah, quadruped, jaco")
    s.add_argument("--dataset", type=Path, default=None,
                   help="the state dataset directory (default: where `b2fb collect` puts it, --data-dir)")
    s.add_argument("--explorer", default="rnd", help="explorer of the default dataset (default rnd)")
    s.add_argument("--collect-size", default="cpu", help="RND size of the default dataset (default cpu)")
    s.add_argument("--image-size", type=_count, default=64,
                   help="frame width and height in pixels (default 64)")
    s.add_argument("--camera", default=None,
                   help="camera index or name (default: the domain's; DrQ's / ExORL's)")
    s.add_argument("--flag", action="append", default=[], metavar="NAME=true|false",
                   help="dm_control render flag override, e.g. --flag shadow=false --flag reflection=false")
    s.add_argument("--workers", type=_count, default=2, help="render processes (default 2)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    s = sub.add_parser("perf", help="measure throughput; writes results/perf/<suite>.json")
    s.add_argument("--suite", required=True)
    s.add_argument("--seconds", type=_seconds, default=5.0, help="time budget per measurement")
    s.add_argument("--part", default=None,
                   help="measure one part only and update its entry (dmc: pixels; t2i: bench_process)")
    return p


def _add_grid_args(s: argparse.ArgumentParser, grid_optional: bool = False) -> None:
    s.add_argument("--suite", required=True, help="suite name (see `b2fb list`)")
    s.add_argument("--size", default=None if grid_optional else "cpu",
                   help="grid size: tiny, cpu (default) or paper")
    s.add_argument("--config", type=Path, default=None, help="grid file (default: benchmarks/configs/<suite>.yaml)")
    if not grid_optional:
        s.add_argument("--seeds", type=_count, default=None, help="number of seeds (overrides the grid)")
        s.add_argument("--algos", nargs="+", default=None, help="only these algorithms")
        s.add_argument("--tasks", nargs="+", default=None, help="only these task ids")
        s.add_argument("--set", dest="overrides", action="append", default=[], metavar="ALGO.KEY=VALUE | task.KEY=VALUE",
                       help="override an algorithm config field, e.g. --set onestep_fb.lr=3e-4 (repeatable)")


def cmd_list(args) -> int:
    from algorithms import registry as algos
    from suites import registry
    from suites.registry import did_you_mean

    if args.suite:
        registry.load_suite(args.suite)
    known = {tag for spec in registry.all_specs() for tag in spec.tags}
    for tag in args.tags:
        if tag not in known:
            raise UserError(f"no task has the tag {tag!r}.{did_you_mean(tag, known)} Tags: {', '.join(sorted(known))}")
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
    from benchmarks.results import BenchLock, check_checkpoints, is_complete

    exp = load_experiment(args.suite, args.size, args.config, args.overrides, args.seeds, args.algos, args.tasks,
                          data_root=args.data_dir)
    trials = exp.trials()
    results_root = args.results_dir.resolve()
    todo = [t for t in trials if not is_complete(results_root, t)]
    # every check before the first line of output and before Ray starts
    tasks = _build_tasks(trials, validate=[] if args.dry_run else todo)
    if not args.dry_run and todo:
        check_writable_dir(results_root, "--results-dir")
        check_writable_dir(args.data_dir.resolve(), "--data-dir")
    header = (f"{args.suite} / {args.size}: {len(trials)} trials ({len(trials) - len(todo)} complete, "
              f"{len(todo)} to run) -> {results_root / args.suite / 'runs'}")
    if args.dry_run:
        print(header)
        for t in trials:
            print(f"  {'done ' if t not in todo else 'todo '} {t.run_id}")
        return 0
    with BenchLock(results_root, args.suite):
        todo = [t for t in trials if not is_complete(results_root, t)]  # another bench may have finished some
        print(header, flush=True)
        for line in check_checkpoints(results_root, todo):
            print(f"warning: {line}", file=sys.stderr, flush=True)
        failed = []
        if todo:
            _prepare_tasks(tasks, todo)
            from benchmarks.orchestrate import run_trials

            statuses = run_trials(todo, results_root, args.data_dir / "ray",
                                  args.max_concurrent or exp.max_concurrent,
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


def check_writable_dir(path: Path, option: str) -> None:
    """`path` must be a directory this user can write, or creatable as one; a UserError otherwise."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is" if probe == path else f"is inside {probe}, which is"
        raise UserError(f"{option} {path} {where} a file, not a directory; pass a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path} is not writable ({probe} does not let this user write); "
                        f"pass a directory you can write")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise UserError(f"{option} {path} is not writable ({err.strerror}); pass a directory you can write") from None


def _task_key(t) -> tuple:
    return t.task_id, tuple(sorted((k, str(v)) for k, v in t.task_kwargs.items()))


def _build_tasks(trials: list, validate: list) -> dict:
    """Build each distinct task once in the driver, so a bad input file (e.g. a custom CMP) is one clear
    error before any trial starts.  Task construction is cheap by contract: heavy data loads lazily.  Tasks
    of the trials in `validate` (those still to run) that can check their data (`validate()`, e.g. a given
    dmc dataset) do so now."""
    from suites import registry

    needed = {_task_key(t) for t in validate}
    tasks = {}
    for t in trials:
        k = _task_key(t)
        if k not in tasks:
            tasks[k] = registry.get(t.task_id).with_kwargs(**t.task_kwargs).make()
            if k in needed and hasattr(tasks[k], "validate"):
                tasks[k].validate()
    return tasks


def _prepare_tasks(tasks: dict, todo: list) -> None:
    """Tasks of the trials still to run that need data make it now, once, with the whole machine (e.g. dmc
    collection); a grid whose runs are all complete collects nothing."""
    for k in dict.fromkeys(_task_key(t) for t in todo):
        if hasattr(tasks[k], "prepare"):
            tasks[k].prepare()


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
    results_root = args.results_dir.resolve()
    _check_results_dir(results_root)
    if args.record_hashes:
        _record_hashes(results_root, args.suite)
    _print_collect(collect(results_root, args.suite, expected))
    return 0


def _check_results_dir(results_root: Path) -> None:
    if results_root.exists() and not results_root.is_dir():
        raise UserError(f"--results-dir {results_root} is a file, not a directory; pass the results directory")


def _record_hashes(results_root: Path, suite: str) -> None:
    from benchmarks.results import BenchLock, record_result_hashes

    runs_dir = results_root / suite / "runs"
    if not runs_dir.is_dir():
        raise UserError(f"no runs under {runs_dir}; nothing to record")
    with BenchLock(results_root, suite):
        counts: dict[str, int] = {}
        for d in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
            outcome = record_result_hashes(d)
            counts[outcome] = counts.get(outcome, 0) + 1
    print(f"result hashes: {counts.get('recorded', 0)} recorded, {counts.get('verified', 0)} already recorded "
          f"and verified, {counts.get('skipped', 0)} runs not done")


def cmd_tables(args) -> int:
    from benchmarks.config import load_experiment

    exp = load_experiment(args.suite, args.size, args.config, args.overrides, args.seeds, args.algos, args.tasks,
                          data_root=args.data_dir)
    _check_results_dir(args.results_dir.resolve())
    _collect_and_tables(args.suite, args.results_dir.resolve(), exp.trials(), args.size, reps=args.reps,
                        seed=args.bootstrap_seed, collect_first=not args.no_collect)
    return 0


def cmd_perf(args) -> int:
    from benchmarks.perf import run_perf
    from suites import registry

    registry.load_suite(args.suite)
    check_writable_dir(args.results_dir.resolve() / "perf", "--results-dir")
    path = run_perf(args.suite, args.results_dir.resolve() / "perf", args.seconds, args.part)
    print(path)
    return 0


def cmd_render(args) -> int:
    from suites.dmc.dataset import default_dataset_dir
    from suites.dmc.pixels import RenderSettings, _state_meta, check_not_stale, probe, render_dataset

    flags = {}
    for item in args.flag:
        name, _, value = item.partition("=")
        if not name or value.lower() not in ("true", "false"):
            raise UserError(f"--flag {item!r}: expected NAME=true or NAME=false, e.g. --flag shadow=false")
        flags[name] = value.lower() == "true"
    camera = int(args.camera) if args.camera is not None and args.camera.isdigit() else args.camera
    settings = RenderSettings.make(args.domain, args.image_size, camera, flags)
    dataset = args.dataset or default_dataset_dir(args.data_dir.resolve(), args.domain, args.explorer,
                                                  args.collect_size)
    # every check before anything is written: the camera (no GL needed), the state dataset, frames rendered
    # from older state files, then the GL backend (one frame in a fresh process)
    probe(settings, stages=("camera",))
    if not Path(dataset).is_dir():
        raise UserError(f"no state dataset at {dataset}: collect it with `b2fb collect --domain "
                        f"{args.domain} ...` (or pass --dataset); pixels are rendered from its physics")
    check_not_stale(Path(dataset), settings, _state_meta(Path(dataset).resolve(), args.domain).get("files",
                                                                                                   {}))
    probe(settings, stages=("render",))
    summary = render_dataset(dataset, settings, workers=args.workers, progress=not args.no_progress)
    rate = (f"{summary['rendered']} episodes rendered at {summary['frames_per_second']:,.0f} frames/s"
            if summary["rendered"] else "nothing new to render")
    print(f"{args.domain}: {summary['episodes']} episodes of frames ({rate}) in {summary['out_dir']}")
    print(f"  sha256 {summary['sha256']}; GL renderer: {summary['renderer']}")
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "collect": cmd_collect, "tables": cmd_tables,
            "render": cmd_render,
            "perf": cmd_perf}


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
