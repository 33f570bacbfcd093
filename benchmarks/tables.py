"""Paper-layout tables (Markdown, LaTeX, CSV) and figures (PNG), from `results/<suite>/index/` only.

Every interval a table or figure prints says what it is, over how many seeds (benchmarks/stats.py
explains the choice, tests/test_stats.py measures the coverage): Student-t intervals over seeds for
cells and for differences (paired where the design pairs them), and the stratified bootstrap only for
the IQM aggregate, printed beside its simulated coverage.  Each table also lists the differences it
tests, with p-values and Holm's correction over the table's family, in its footer and in
`<name>_tests.csv`.  The papers' own numbers (benchmarks/paper/<suite>.yaml) appear in separate
reference columns and never enter an aggregate.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from benchmarks import stats
from benchmarks.results import atomic_write, atomic_write_csv, atomic_write_text, load_index
from suites.errors import UserError

PAPER_DIR = Path(__file__).parent / "paper"
T_CI = "Student-t 95% CI"
FIGURE_DPI = 110  # every figure's PNG: figsize (inches) x FIGURE_DPI pixels


def paper_values(suite: str) -> dict[str, Any]:
    path = PAPER_DIR / f"{suite}.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def _interval(point: float, low: float, high: float, f: Callable[[float], str]) -> str:
    """'point [low, high]', or the point alone marked '(no CI)' where the interval is undefined (1 seed)."""
    if np.isnan(low) or np.isnan(high):
        return f"{f(point)} (no CI)"
    return f"{f(point)} [{f(low)}, {f(high)}]"


def fmt_sci(point: float, low: float, high: float) -> str:
    return _interval(point, low, high, lambda v: f"{v:.1e}")


def fmt_fixed(point: float, low: float, high: float, digits: int = 3) -> str:
    return _interval(point, low, high, lambda v: f"{v:.{digits}f}")


def fmt_signed(point: float, low: float, high: float, digits: int = 3) -> str:
    """A difference: the point with its sign ('+0.0012 [-0.0019, 0.0045]')."""
    return _interval(point, low, high, lambda v: f"{v:.{digits}f}").replace(
        f"{point:.{digits}f}", f"{point:+.{digits}f}", 1
    )


def seeds_text(counts) -> str:
    """'3 seeds' or '2-3 seeds' (the seeds per cell, as run)."""
    counts = sorted({int(c) for c in counts})
    if not counts:
        return "no seeds"
    return (
        f"{counts[0]} seed{'s' if counts[0] != 1 else ''}"
        if len(counts) == 1
        else f"{counts[0]}-{counts[-1]} seeds"
    )


def fmt_p(p: float) -> str:
    return "n/a" if np.isnan(p) else f"{p:.2g}"


class Family:
    """The differences one table tests.  Each is a two-sided test at 5%; the family is adjusted together
    with Holm's step-down correction (family-wise error 5% under any dependence), and the chance count is
    the family's size x 5%: the expected number of uncorrected p < 0.05 if no difference were real."""

    def __init__(self, test: str, scope: str, note: str = ""):
        self.test, self.scope, self.note, self.rows = test, scope, note, []

    def add(self, label: str, estimate: tuple[float, float, float, float], text: str, **extra) -> None:
        point, low, high, p = estimate
        self.rows.append(
            {
                "difference": label,
                "estimate": point,
                "ci_low": low,
                "ci_high": high,
                "p": p,
                "shown": text,
                **extra,
            }
        )

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows)
        if frame.empty:
            return frame
        frame["p_holm"] = stats.holm(frame.p.to_numpy())
        frame["holds"] = frame.p_holm <= stats.ALPHA
        frame["test"] = self.test
        return frame

    def footer(self) -> str:
        frame = self.frame()
        if frame.empty:
            return ""
        tested = frame[frame.p.notna()]
        m = len(tested)
        untestable = len(frame) - m
        if m == 0:
            return (
                f" Tests: none possible ({len(frame)} differences, {self.scope}, have no spread over seeds "
                f"to test against: one seed, or identical values)."
            )

        def listed(rows: pd.DataFrame) -> str:
            return (
                "; ".join(
                    f"{r.difference} {r.shown} (p = {fmt_p(r.p)}, Holm {fmt_p(r.p_holm)})"
                    for r in rows.sort_values("p", kind="stable").itertuples()
                )
                or "none"
            )

        nominal = tested[tested.p < stats.ALPHA]
        text = (
            f" Tests: {m} differences ({self.scope}), each a two-sided {self.test}.{self.note} "
            f"{len(nominal)} {'has' if len(nominal) == 1 else 'have'} p < 0.05 before correction, where "
            f"{m * stats.ALPHA:.2g} would by chance alone if none were "
            f"real. Holding after Holm's correction over these {m} (family-wise error 5%): "
            f"{listed(tested[tested.holds])}."
        )
        below = nominal[~nominal.holds]
        if len(below):
            text += f" p < 0.05 before correction only, not claimed: {listed(below)}."
        if untestable:
            text += f" Not testable (no spread over seeds): {untestable}."
        return text


def write_table(
    frame: pd.DataFrame,
    raw: pd.DataFrame,
    out_dir: Path,
    name: str,
    title: str,
    footer: str,
    tests: pd.DataFrame | None = None,
) -> list[Path]:
    """Write <name>.md (title, table, footer), <name>.tex (booktabs + footnote), <name>.csv (raw numbers)
    and, for a table that tests differences, <name>_tests.csv (every test, p and Holm-adjusted p)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = f"### {title}\n\n{frame.to_markdown(index=False)}\n\n{footer}\n"
    latex = frame.to_latex(index=False, escape=True, caption=title, column_format="l" * len(frame.columns))
    latex += "% " + footer.replace("\n", "\n% ") + "\n"
    paths = [out_dir / f"{name}.md", out_dir / f"{name}.tex", out_dir / f"{name}.csv"]
    atomic_write_text(paths[0], md)
    atomic_write_text(paths[1], latex)
    atomic_write_csv(paths[2], raw)
    if tests is not None and not tests.empty:
        paths.append(out_dir / f"{name}_tests.csv")
        atomic_write_csv(paths[-1], tests)
    return paths


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically (its directory created), then close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=FIGURE_DPI, format="png"))
    plt.close(fig)


def final_eval(scalars: pd.DataFrame) -> pd.DataFrame:
    """The eval rows at each run's last step (the final checkpoint, not the best one)."""
    ev = scalars[scalars.split == "eval"]
    last = ev.groupby("run_id").step.transform("max")
    return ev[ev.step == last]


def method_pairs(algos: list[str], baselines: set[str], reference: str | None) -> list[tuple[str, str]]:
    """Which differences a zero-shot table tests: every learned method against the reference baseline,
    then every pair of learned methods (later in `algos` minus earlier).  Any algorithm name works."""
    learned = [a for a in algos if a not in baselines]
    pairs = [(a, reference) for a in learned if reference in algos]
    pairs += [(b, a) for i, a in enumerate(learned) for b in learned[i + 1 :]]
    return pairs


# ---- didactic ----------------------------------------------------------------------------------------
DIDACTIC_METRICS = [  # (metric, column title, paper key, formatter, log scale)
    ("successor_error", "M/rho error", "successor_error", fmt_sci, True),
    ("successor_rel_error", "M/rho rel. error", None, fmt_sci, True),
    ("q_error", "Q error", "q_error", fmt_sci, True),
    ("policy_kl", "policy KL", "policy_kl", fmt_sci, True),
    ("greedy_match", "greedy match", None, fmt_fixed, False),
]
METHOD_NAMES = {"fb": "FB", "onestep_fb": "one-step FB", "fb_zheng": "FB (Zheng)"}
DIDACTIC_ORDER = ["fb", "onestep_fb"]


def _didactic_estimate(values: np.ndarray, log: bool) -> tuple[tuple[float, float, float, float], bool]:
    """(estimate, on log scale): the geometric mean with a log-scale t interval where every value is > 0,
    otherwise the arithmetic mean with a t interval."""
    if log and len(values) and (values > 0).all():
        return stats.log_t_estimate(values), True
    return stats.t_estimate(values), False


def didactic_tables(
    scalars: pd.DataFrame, out_tables: Path, out_figs: Path, missing: int, reps: int, seed: int
) -> list[Path]:
    paper = paper_values("didactic").get("final_errors", {})
    final = final_eval(scalars)
    algos = [a for a in DIDACTIC_ORDER if a in set(final.algorithm)] + sorted(
        set(final.algorithm) - set(DIDACTIC_ORDER)
    )
    family = Family(
        "Welch t-test over seeds",
        "every metric of every CMP, each pair of methods",
        " Unpaired: methods share no training seed and the ground truth is exact. On log10 for the "
        "errors, so the estimate is a ratio of geometric means.",
    )
    display_rows, raw_rows, seeds_seen, arithmetic = [], [], [], []
    per_cell: dict[tuple[str, str, str], np.ndarray] = {}
    for (task_id, algo), group in sorted(final.groupby(["task_id", "algorithm"]), key=lambda kv: kv[0]):
        cmp = task_id.split("/", 1)[1]
        n_seeds = group.seed.nunique()
        seeds_seen.append(n_seeds)
        steps = int(group.step.max())
        row = {"CMP": cmp, "method": METHOD_NAMES.get(algo, algo), "seeds": n_seeds, "steps": steps}
        for metric, title, paper_key, fmt, log in DIDACTIC_METRICS:
            values = group[group.metric == metric].sort_values("seed").value.to_numpy()
            per_cell[(task_id, algo, metric)] = values
            (point, low, high, _), on_log = _didactic_estimate(values, log)
            row[title] = fmt(point, low, high) + ("" if on_log or not log else " †")
            if log and not on_log:
                arithmetic.append(f"{cmp} {METHOD_NAMES.get(algo, algo)} {title}")
            raw_rows.append(
                {
                    "task_id": task_id,
                    "algorithm": algo,
                    "metric": metric,
                    "seeds": n_seeds,
                    "step": steps,
                    "estimator": "geometric mean" if on_log else "mean",
                    "point": point,
                    "ci_low": low,
                    "ci_high": high,
                    "paper_approx": paper.get(cmp, {}).get(algo, {}).get(paper_key) if paper_key else None,
                }
            )
            if paper_key:
                ref = paper.get(cmp, {}).get(algo, {}).get(paper_key)
                row[f"{title} (paper, approx.)"] = "–" if ref is None else f"≈{ref:.0e}"
        display_rows.append(row)
    for task_id in sorted(final.task_id.unique()):
        for a, b in method_pairs(algos, set(), None):
            for metric, title, _, fmt, log in DIDACTIC_METRICS:
                x, y = per_cell.get((task_id, a, metric)), per_cell.get((task_id, b, metric))
                if x is None or y is None or not len(x) or not len(y):
                    continue
                cmp = task_id.split("/", 1)[1]
                label = f"{METHOD_NAMES.get(a, a)} vs {METHOD_NAMES.get(b, b)}, {cmp} {title}"
                if log and (x > 0).all() and (y > 0).all():
                    d, lo, hi, p = stats.welch_estimate(np.log10(x), np.log10(y))
                    family.add(label, (10**d, 10**lo, 10**hi, p), "ratio " + fmt_sci(10**d, 10**lo, 10**hi))
                else:
                    est = stats.welch_estimate(x, y)
                    family.add(label, est, "difference " + fmt_signed(*est[:3]))
    frame = pd.DataFrame(display_rows)
    tests = family.frame()
    footer = (
        f"Cells: for the errors, the geometric mean over seeds with a {T_CI} computed on log10 "
        f"(errors span orders of magnitude; exact if the log-errors are normal); greedy match: the "
        f"mean with a {T_CI}"
        + (
            f"; † = arithmetic mean with a {T_CI} (a seed's value is not > 0): {', '.join(arithmetic)}"
            if arithmetic
            else ""
        )
        + f". {seeds_text(seeds_seen)} per cell. Final checkpoint, not the best."
        + family.footer()
        + " Paper columns: approximate final errors read off the one-step FB paper's website figure "
        "(fb.md §4.1), for reference only; the paper's protocol (parameterisation, lr, latents) is unknown, "
        "ours is in benchmarks/configs/didactic.yaml."
        + (
            f" INCOMPLETE: {missing} runs of this grid are missing or failed (see `b2fb collect`)."
            if missing
            else ""
        )
    )
    paths = write_table(
        frame,
        pd.DataFrame(raw_rows),
        out_tables,
        "didactic_errors",
        "Didactic CMPs: final errors against exact ground truth",
        footer,
        tests,
    )
    paths.append(didactic_error_figure(scalars, out_figs / "didactic_error_vs_steps.png"))
    return paths


def didactic_error_figure(scalars: pd.DataFrame, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(m, t) for m, t, _, _, log in DIDACTIC_METRICS if log]
    ev = scalars[scalars.split == "eval"]
    tasks = sorted(ev.task_id.unique())
    fig, axes = plt.subplots(
        len(tasks),
        len(metrics),
        figsize=(4.2 * len(metrics), 3.2 * len(tasks) + 0.3),
        squeeze=False,
        constrained_layout=True,
    )
    colors = {"fb": "tab:blue", "onestep_fb": "tab:orange", "fb_zheng": "tab:green"}
    seeds = set()
    floor = 1e-16
    for i, task_id in enumerate(tasks):
        for j, (metric, title) in enumerate(metrics):
            ax = axes[i][j]
            sub = ev[(ev.task_id == task_id) & (ev.metric == metric)]
            for algo, g in sorted(sub.groupby("algorithm")):
                table = g.pivot_table(index="step", columns="seed", values="value")
                seeds.add(table.shape[1])
                steps = table.index.to_numpy()
                est = np.array(
                    [_didactic_estimate(row.dropna().to_numpy(), True)[0][:3] for _, row in table.iterrows()]
                )
                ax.plot(
                    steps,
                    np.maximum(est[:, 0], floor),
                    label=f"{METHOD_NAMES.get(algo, algo)} (n = {table.shape[1]})",
                    color=colors.get(algo),
                )
                if table.shape[1] > 1:
                    ax.fill_between(
                        steps,
                        np.maximum(est[:, 1], floor),
                        np.maximum(est[:, 2], floor),
                        alpha=0.25,
                        color=colors.get(algo),
                    )
            ax.set_yscale("log")
            ax.set_title(f"{task_id.split('/', 1)[1]}: {title}", fontsize=10)
            ax.set_xlabel("gradient steps")
            ax.grid(True, which="major", alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.suptitle(
        f"Error against exact ground truth: geometric mean over {seeds_text(seeds)}; band = "
        f"{T_CI} on log10 over the seeds",
        fontsize=11,
    )
    save_figure(fig, path)
    return path


# ---- dmc ---------------------------------------------------------------------------------------------------
DMC_ORDER = ["fb", "onestep_fb", "uniform_random", "zero_action"]
DMC_NAMES = {
    "fb": "FB",
    "onestep_fb": "one-step FB",
    "uniform_random": "uniform random",
    "zero_action": "zero action",
}
DMC_BASELINES = {"uniform_random", "zero_action"}  # reference policies: compared against, not with each other
DMC_REFERENCE = "uniform_random"
DMC_PAIRING = (
    " Unpaired: every run is evaluated on the same 10 start states (environment seeds eval_seed to "
    "eval_seed + 9), a fixed part of the benchmark that seed k of one method shares with every seed "
    "of another, and methods share no training seed, so there is nothing to pair by."
)


PIXELS = "@pixels"  # suffix of a learned method's name in the aggregate table when it saw pixels
DMC_TASK_ID = r"^dmc/(?P<domain>[a-z][a-z-]*?)-zeroshot(?P<pixels>-pixels)?-v\d+$"


def _dmc_name(algo: str) -> str:
    if algo.endswith(PIXELS):
        return f"{DMC_NAMES.get(algo[: -len(PIXELS)], algo[: -len(PIXELS)])} (pixels)"
    return DMC_NAMES.get(algo, algo)


def dmc_task_kinds(task_ids: pd.Series) -> pd.DataFrame:
    """domain (dm_control name) and observations ("state" or "pixels") of zero-shot task ids
    (dmc/<domain>-zeroshot[-pixels]-v<N>); any other id is a UserError, never a silently dropped row."""
    from suites.dmc.domains import DOMAINS

    parts = task_ids.str.extract(DMC_TASK_ID)
    unknown = task_ids[parts.domain.isna() | ~parts.domain.fillna("").str.replace("-",
                                                                                  "_").isin(list(DOMAINS))]
    if len(unknown):
        raise UserError(
            f"the dmc table does not know task {unknown.iloc[0]!r} (it shows dmc/<domain>-zeroshot-v<N> and "
            f"dmc/<domain>-zeroshot-pixels-v<N> of the domains {', '.join(DOMAINS)}): remove its runs from "
            f"the "
            f"grid, or teach benchmarks/tables.py its rows"
        )
    return pd.DataFrame(
        {"domain": parts.domain.str.replace("-", "_"), "obs": np.where(parts.pixels.notna(), "pixels",
                                                                       "state")},
        index=task_ids.index,
    )


def dmc_tables(
    scalars: pd.DataFrame, out_tables: Path, out_figs: Path, missing: int, reps: int, seed: int
) -> list[Path]:
    """Domains x tasks, mean return over seeds with a Student-t 95% CI, per-domain overall; the paper's
    FB and one-step FB numbers in separate columns; the methods' differences tested (Welch, Holm); IQM of
    normalised scores and performance profiles.  Tasks learned from pixels get their own row under the
    state row of the same task, with each learned method's pixels − state difference (Welch) beside it; the
    fixed-policy baselines, which ignore observations, show their state runs in both rows."""
    from suites.dmc.domains import DOMAINS

    paper = paper_values("dmc")
    final = final_eval(scalars)
    final = final[final.metric.str.endswith("/return")].copy()
    kinds = dmc_task_kinds(final.task_id)
    final["domain"], final["obs"] = kinds.domain, kinds.obs
    final["task"] = final.metric.str[: -len("/return")]
    # the baselines' rows: their state runs (a fixed policy's returns do not depend on what it could see)
    final = final[~((final.obs == "pixels") & final.algorithm.isin(DMC_BASELINES))]
    algos = [a for a in DMC_ORDER if a in set(final.algorithm)] + sorted(
        set(final.algorithm) - set(DMC_ORDER)
    )
    learned = [a for a in algos if a not in DMC_BASELINES]
    has_pixels = bool((final.obs == "pixels").any())
    family = Family(
        "Welch t-test over seeds",
        "every task and domain-overall row, each learned method against uniform random and "
        "against each other learned method"
        + ("; on pixel rows also each learned method's pixels − state" if has_pixels else ""),
        DMC_PAIRING,
    )
    rows, raw, seeds_seen = [], [], []
    for domain in [d for d in DOMAINS if d in set(final.domain)]:
        sub_domain = final[final.domain == domain]
        for task in sorted(sub_domain.task.unique()) + ["overall"]:
            state_values: dict[str, np.ndarray] = {}
            for obs in ("state", "pixels"):
                sub = sub_domain[(sub_domain.obs == obs) | sub_domain.algorithm.isin(DMC_BASELINES)]
                seen = sub[sub.obs == "pixels"]
                if obs == "pixels" and (seen.empty or not (task == "overall" or (seen.task == task).any())):
                    continue  # no learned method saw this task from pixels
                row = {"domain": domain, "task": task}
                if has_pixels:
                    row["observations"] = obs
                values_of = {}
                for algo in algos:
                    g = sub[sub.algorithm == algo]
                    if task == "overall":  # per seed: mean over the domain's tasks, then across seeds
                        values = g.groupby("seed").value.mean().to_numpy()
                    else:
                        values = g[g.task == task].sort_values("seed").value.to_numpy()
                    if len(values) == 0:
                        row[_dmc_name(algo)] = "–"
                        continue
                    values_of[algo] = values
                    seeds_seen.append(len(values))
                    point, low, high, _ = stats.t_estimate(values)
                    row[_dmc_name(algo)] = _interval(point, low, high, lambda v: f"{v:.0f}")
                    raw.append(
                        {
                            "domain": domain,
                            "task": task,
                            **({"observations": obs} if has_pixels else {}),
                            "algorithm": algo,
                            "seeds": len(values),
                            "mean": point,
                            "ci_low": low,
                            "ci_high": high,
                        }
                    )
                if obs == "state":
                    state_values = values_of
                for algo in learned if has_pixels else ():
                    column = f"{_dmc_name(algo)}: pixels − state"
                    row[column] = "–"
                    if obs == "pixels" and algo in values_of and algo in state_values:
                        est = stats.welch_estimate(values_of[algo], state_values[algo])
                        row[column] = _interval(*est[:3], lambda v: f"{v:+.0f}")
                        family.add(f"{_dmc_name(algo)} pixels − state on {domain} {task}", est, row[column])
                for algo in ("fb", "onestep_fb"):
                    ref = (
                        paper.get("overall", {}).get(domain, {})
                        if task == "overall"
                        else paper.get("returns", {}).get(domain, {}).get(task, {})
                    ).get(algo)
                    shown = ref is not None and obs == "state"  # the paper reports states only
                    row[f"{DMC_NAMES[algo]} (paper)"] = f"{ref[0]} ± {ref[1]}" if shown else "–"
                rows.append(row)
                where = f"{domain} {task}" + (" (pixels)" if obs == "pixels" else "")
                for a, b in method_pairs(algos, DMC_BASELINES, DMC_REFERENCE):
                    if a in values_of and b in values_of:
                        est = stats.welch_estimate(values_of[a], values_of[b])
                        family.add(
                            f"{_dmc_name(a)} − {_dmc_name(b)} on {where}",
                            est,
                            _interval(*est[:3], lambda v: f"{v:+.0f}"),
                        )
    frame = pd.DataFrame(rows)
    tests = family.frame()
    footer = (
        f"Cells: mean undiscounted return over seeds with a {T_CI}; {seeds_text(seeds_seen)} per cell; "
        f"final checkpoint. 'overall' = mean over the domain's tasks per seed. Each run is evaluated on "
        f"the same 10 episodes' start states, so the intervals are over training seeds (and action "
        f"noise) at those start states."
        + (
            " Rows 'pixels': the same data, split and evaluation seen as stacked rendered frames "
            "(suites/dmc/pixels.py); the fixed-policy baselines ignore observations, so their state runs "
            "fill both rows (and are what pixel methods are tested against); 'pixels − state' is each "
            "learned method's difference to its own state row (Welch)."
            if has_pixels
            else ""
        )
        + family.footer()
        + " Paper columns: the one-step FB paper's reported numbers (RND 5M data, 1M steps, full-size "
        "nets; fb.md §5.3), for reference only, never aggregated with ours."
        + (f" INCOMPLETE: {missing} runs of this grid are missing or failed." if missing else "")
    )
    paths = write_table(
        frame,
        pd.DataFrame(raw),
        out_tables,
        "dmc_returns",
        "Zero-shot returns on DMC (ExORL tasks)",
        footer,
        tests,
    )
    final = final.assign(algorithm=np.where(final.obs == "pixels", final.algorithm + PIXELS, final.algorithm))
    # only methods with runs in this selection (e.g. `--tasks` of pixel trials alone has no state runs)
    present = set(final.algorithm)
    algos = [a for a in algos if a in present] + [f"{a}{PIXELS}" for a in learned if f"{a}{PIXELS}" in present]
    paths += dmc_aggregate(final, algos, out_tables, out_figs, reps, seed)
    return paths


def dmc_aggregate(
    final: pd.DataFrame, algos: list[str], out_tables: Path, out_figs: Path, reps: int, seed: int
) -> list[Path]:
    """Normalised returns (return / episode length, i.e. / max return) aggregated over seeds x tasks: the
    mean with a stratified Student-t CI over domains, the IQM with the stratified bootstrap and that
    bootstrap's simulated coverage; the methods' mean differences tested; performance profiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from suites.dmc.domains import DOMAINS

    final = final.assign(score=final.value / final.domain.map(lambda d: DOMAINS[d].episode_length))
    rows, matrices, domain_means, weights = [], {}, {}, {}
    for algo in algos:
        m = final[final.algorithm == algo].pivot_table(
            index="seed", columns=["domain", "task"], values="score"
        )
        m = m.dropna(axis=0)
        matrices[algo] = m
        domains = m.columns.get_level_values("domain")
        # one trial trains once per (domain, seed) and evaluates all its tasks: domains are the independent
        # strata, a domain's tasks are resampled together
        groups = {d: m.loc[:, domains == d].mean(axis=1).to_numpy() for d in dict.fromkeys(domains)}
        domain_means[algo] = groups
        weights[algo] = {d: float((domains == d).sum()) / m.shape[1] for d in groups}
        point, low, high = stats.interval_estimate(
            m.to_numpy(), stats.iqm, reps=reps, seed=seed, strata=list(domains)
        )
        coverage = stats.bootstrap_coverage(m.to_numpy(), strata=list(domains), seed=seed)
        mean_est = stats.stratified_estimate(list(groups.values()), list(weights[algo].values()))
        rows.append(
            {
                "method": _dmc_name(algo),
                "seeds": m.shape[0],
                "tasks": m.shape[1],
                "mean normalised return": fmt_fixed(*mean_est[:3]),
                "IQM normalised return": fmt_fixed(point, low, high),
                "IQM interval's simulated coverage": "–" if np.isnan(coverage) else f"{100 * coverage:.0f}%",
            }
        )
    family = Family(
        "stratified Welch t-test over seeds within domains",
        "mean normalised return, each learned method against uniform random and against each other "
        "learned method",
        DMC_PAIRING,
    )
    for a, b in method_pairs(algos, DMC_BASELINES, DMC_REFERENCE):
        if list(domain_means[a]) != list(domain_means[b]):
            continue
        groups = list(domain_means[a].values()) + list(domain_means[b].values())
        w = list(weights[a].values()) + [-v for v in weights[b].values()]
        est = stats.stratified_estimate(groups, w)
        family.add(f"{_dmc_name(a)} − {_dmc_name(b)}", est, fmt_signed(*est[:3]))
    frame = pd.DataFrame(rows)
    tests = family.frame()
    footer = (
        f"Normalised return = return / maximum return (episode length), over seeds x tasks. Mean: "
        f"{T_CI} stratified by domain (each domain's per-seed mean over its tasks, weighted by its tasks; "
        f"Welch-Satterthwaite degrees of freedom). IQM: the stratified bootstrap's percentile interval "
        f"(rliable's convention, {reps} resamples, bootstrap seed {seed}; seeds resampled within each "
        f"domain, a domain's tasks together since one run evaluates them all). It is NOT a calibrated 95% "
        f"CI at these seed counts: its coverage, simulated at this table's shape (normal seeds with each "
        f"domain's observed means and covariance), is in the last column." + family.footer()
    )
    paths = write_table(
        frame, frame, out_tables, "dmc_aggregate", "Zero-shot DMC: aggregate scores", footer, tests
    )
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    top = max(float(np.nanmax(m.to_numpy())) for m in matrices.values()) if matrices else 1.0
    taus = np.linspace(0, min(1.0, top * 1.05 + 1e-9), 201)
    for algo in algos:
        x = matrices[algo].to_numpy().ravel()
        ax.plot(
            taus,
            [(x > t).mean() for t in taus],
            label=f"{_dmc_name(algo)} ({matrices[algo].shape[0]} seeds × {matrices[algo].shape[1]} tasks)",
        )
    ax.set_xlim(0, taus[-1])
    ax.set_xlabel("normalised return threshold τ (axis ends past the best run × task)")
    ax.set_ylabel("fraction of runs × tasks > τ")
    ax.set_title("Performance profiles (DMC): point estimates, no interval bands", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = out_figs / "dmc_performance_profile.png"
    save_figure(fig, path)
    return paths + [path]


# ---- t2i ---------------------------------------------------------------------------------------------------
T2I_METRICS = [  # (metric suffix, column title, digits)
    ("clipscore", "clipscore", 4),
    ("oracle", "oracle (graded)", 3),
    ("oracle_binary", "oracle (all parts)", 3),
    ("diversity_clip_cosine", "diversity (CLIP cosine)", 4),
    ("diversity_pixel_rms", "diversity (pixel RMS)", 4),
    # a non-default training reward (task kwarg `reward`) is evaluated too; its rows appear when present
    ("jpeg_compressibility", "JPEG compressibility (−kB)", 4),
    ("jpeg_incompressibility", "JPEG incompressibility (kB)", 4),
]
T2I_NAMES = {"ddpo": "DDPO", "ddpo_shuffled": "DDPO, shuffled advantages", "b2diffurl": "B²-DiffuRL",
             "b2diffurl_no_backward": "B²-DiffuRL, no backward", "b2diffurl_no_branch": "B²-DiffuRL, no branch",
             "b2diffurl_neither": "B²-DiffuRL, neither", "b2diffurl_positives_only": "B²-DiffuRL, β₋ = 0"}
# The methods' order in the table's columns and in the side-by-side sample grids; any other method follows,
# sorted by name.
T2I_ORDER = ["ddpo", "b2diffurl", "b2diffurl_no_backward", "b2diffurl_no_branch", "b2diffurl_neither",
             "b2diffurl_positives_only", "ddpo_shuffled"]
# method -> its no-signal control (ddpo_shuffled.py: the same loop with each epoch's advantages permuted).
# Where both ran, the table adds '<method> − control', paired by seed: what the reward's signal bought at
# equal movement of the policy.
T2I_CONTROLS = {"ddpo": "ddpo_shuffled"}
# Every other fine-tuned method (not a control) is set beside DDPO where both ran: '<method> − DDPO', paired
# by seed.  DDPO is the RL objective B²-DiffuRL's released code builds on; which comparisons the paper's
# tables make is not known (t2i.md §4.3).
T2I_REFERENCE = "ddpo"
# ablation -> the full method it switches a part of: where both ran, '<ablation> − <method>' too, paired by
# seed (what removing the part cost at the same settings and budget: B²-DiffuRL's ablation study; the
# β₋ = 0 diagnostic is read the same way).
T2I_ABLATION_OF = {"b2diffurl_no_backward": "b2diffurl", "b2diffurl_no_branch": "b2diffurl",
                   "b2diffurl_neither": "b2diffurl", "b2diffurl_positives_only": "b2diffurl"}


def _t2i_order(algos) -> list[str]:
    present = set(algos)
    return [a for a in T2I_ORDER if a in present] + sorted(present - set(T2I_ORDER))


def _t2i_comparisons(algos) -> list[tuple[str, str]]:
    """The differences of two methods that the table prints, as (method, reference), each paired by seed:
    a method against its no-signal control, every other fine-tuned method against DDPO, then each ablation
    against its full method."""
    present = _t2i_order(algos)
    pairs = [(a, c) for a, c in T2I_CONTROLS.items() if a in present and c in present]
    if T2I_REFERENCE in present:
        controls = set(T2I_CONTROLS.values())
        pairs += [(a, T2I_REFERENCE) for a in present if a != T2I_REFERENCE and a not in controls]
    pairs += [(a, T2I_ABLATION_OF[a]) for a in present if T2I_ABLATION_OF.get(a) in present]
    return pairs


def _t2i_column(algo: str, against: str) -> str:
    """The column of a paired difference: 'DDPO − base', 'DDPO − control', 'B²-DiffuRL − DDPO'."""
    if against == "base":
        versus = "base"
    elif T2I_CONTROLS.get(algo) == against:
        versus = "control"
    else:
        versus = T2I_NAMES.get(against, against)
    return f"{T2I_NAMES.get(algo, algo)} − {versus}"


def _t2i_evaluations(scalars: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows, a metric 'train/clipscore' split into split_name 'train' and name 'clipscore'."""
    ev = scalars[scalars.split == "eval"]
    parts = ev.metric.str.split("/", n=1)
    return ev.assign(split_name=parts.str[0], name=parts.str[1])


def _t2i_label(task: str, algo: str) -> str:
    """Legend label of one (task, method) line: 'DDPO: shapes-counting'."""
    return f"{T2I_NAMES.get(algo, algo)}: {task.split('/')[1].removesuffix('-v0')}"


def _set_name(task: str) -> str:
    return task.split("/")[1].removesuffix("-v0")


_T2I_SET_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1, 1, 1)), "v")]


def _t2i_styles(pairs) -> dict[tuple[str, str], dict]:
    """Line style of each (task, method) on a t2i curve: the colour names the method, the dash pattern and
    marker the prompt set, so up to 10 methods x 5 sets never share a look (matplotlib's cycle repeats after ten)."""
    pairs = sorted(set(pairs))
    algos = _t2i_order(a for _, a in pairs)
    tasks = sorted({t for t, _ in pairs})
    styles = {}
    for task, algo in pairs:
        i, j = algos.index(algo), tasks.index(task)
        dash, marker = _T2I_SET_STYLES[j % len(_T2I_SET_STYLES)]
        styles[task, algo] = {"color": f"C{i % 10}", "linestyle": dash, "marker": marker}
    return styles


def _t2i_estimate(values: pd.Series | pd.DataFrame) -> tuple[float, float, float, float]:
    """Mean over seeds with a t interval; for a frame (seeds x prompt sets, the pooled rows) the mean over
    sets of each set's mean over seeds, stratified by set (each set's runs are trained independently)."""
    if isinstance(values, pd.DataFrame):
        return stats.stratified_estimate([values[c].dropna().to_numpy() for c in values.columns])
    return stats.t_estimate(values.dropna().to_numpy())


def _t2i_difference(
    raw: list[dict],
    family: Family,
    task: str,
    split: str,
    metric: str,
    algo: str,
    against: str,
    final: pd.Series | pd.DataFrame,
    reference: pd.Series | pd.DataFrame,
    digits: int,
) -> str | None:
    """Paired difference final - reference (indexed by seed; columns = prompt sets for the pooled row): its
    mean with a paired t interval (stratified over sets when pooled), appended to `raw` and tested in
    `family`; returns the cell text, None when no seed is paired."""
    diff = (final - reference).dropna()
    if diff.empty:
        return None
    point, low, high, p = _t2i_estimate(diff)
    raw.append(
        {
            "task": task,
            "split": split,
            "metric": metric,
            "algorithm": algo,
            "against": against,
            "seeds": int(diff.shape[0]),
            "final": float(final.to_numpy().mean()),
            "reference": float(reference.to_numpy().mean()),
            "delta": point,
            "delta_ci_low": low,
            "delta_ci_high": high,
            "p": p,
        }
    )
    text = fmt_signed(point, low, high, digits)
    title = dict((m, t) for m, t, _ in T2I_METRICS).get(metric, metric)
    label = f"{_t2i_column(algo, against)}, {_set_name(task)} {split} {title}"
    family.add(label, (point, low, high, p), text)
    return text


# How far two runs' base evaluations may differ and still count as the same noise.  The same noise gives the
# same images up to float rounding, and rounding differs between processes whose earlier work differed (the
# β₋ = 0 and ablation runs against B²-DiffuRL's, same sampler and seeds: pixel RMS 1e-7 apart, clipscore and
# CLIP diversity up to 1.3e-5 apart, oracle equal).  Different noise moves some metric of a (set, seed) by at
# least 0.015 (each of the 228 pairs of committed 16 x 16 and 32 x 32 runs of one set with another seed or
# grid).  1e-3 lies between the two, 77x above the one and 15x below the other.
T2I_SAME_NOISE_ATOL = 1e-3
_UNIT_SCALE_METRICS = ("clipscore", "oracle", "oracle_binary", "diversity_clip_cosine", "diversity_pixel_rms")


def _t2i_same_noise(base: pd.DataFrame, algo: str, reference: str) -> bool | None:
    """Whether seed k of two methods was evaluated on the same noise, read off their base evaluations: the
    base model (LoRA at zero) is the same network in every run, so the same noise gives the same images and
    the same step-0 metrics, up to float rounding (`T2I_SAME_NOISE_ATOL`; read on the metrics of unit scale,
    not on a JPEG size in kB).  None when they share no (prompt set, seed)."""
    keys = ["task_id", "seed", "metric"]
    base = base[base.metric.str.rsplit("/", n=1).str[-1].isin(_UNIT_SCALE_METRICS)]
    a = base[base.algorithm == algo].groupby(keys).value.mean()
    b = base[base.algorithm == reference].groupby(keys).value.mean()
    shared = a.index.intersection(b.index)
    if shared.empty:
        return None
    return bool(np.allclose(a[shared], b[shared], rtol=0.0, atol=T2I_SAME_NOISE_ATOL, equal_nan=True))


def _t2i_pairing_note(base: pd.DataFrame, comparisons: list[tuple[str, str]]) -> str:
    """The footer's account of the differences of two methods: what they pair, and whether on the same noise
    (checked per comparison on the runs' base evaluations, `_t2i_same_noise`)."""
    verdicts = {_t2i_column(a, r): _t2i_same_noise(base, a, r) for a, r in comparisons}
    verdicts = {column: same for column, same in verdicts.items() if same is not None}
    if not verdicts:
        return ""
    same = [f"'{column}'" for column, v in verdicts.items() if v]
    other = [f"'{column}'" for column, v in verdicts.items() if not v]
    ablation = ("; '<ablation> − B²-DiffuRL': an ablation against the full method, the same settings and budget "
                "but one part switched off" if any(T2I_ABLATION_OF.get(a) == r for a, r in comparisons) else "")
    text = (
        " A difference of two methods pairs seed k of one with seed k of the other on the same prompts "
        "('− control': a method against its no-signal control, the same settings and seeds with each epoch's "
        "advantages shuffled; '− DDPO': a fine-tuned method against DDPO, each with its own settings and "
        f"budget{ablation}). A run draws its evaluation noise from the task's eval_seed, its seed and the split "
        "alone, so such a pair is judged on the same noise when both sample with the same DDIM steps, eta and "
        "guidance"
    )
    if same:
        text += (
            f"; here {', '.join(same)}: the same noise (their runs' base evaluations agree to within "
            f"{T2I_SAME_NOISE_ATOL:g}: float rounding)"
        )
    if other:
        text += (
            f"; {', '.join(other)}: NOT the same noise (their runs' base evaluations differ by more than "
            f"{T2I_SAME_NOISE_ATOL:g}: other noise or sampler settings), so paired by seed only, a valid paired t "
            f"over independent seeds without shared noise"
        )
    return text + "."


def _t2i_budget_note(scalars: pd.DataFrame, algos: list[str]) -> str:
    """Each method's training budget per run, at its last train row (core.Budget's scalars): reward queries
    and UNet evaluations (sampling and training passes; evaluation is not counted), a range where runs
    differ."""
    names = ("budget/reward_queries", "budget/unet_evals")
    train = scalars[(scalars.split == "train") & scalars.metric.isin(names)]
    last = train[train.step == train.groupby("run_id").step.transform("max")]

    def span(values: pd.Series) -> str:
        if values.empty:
            return "?"
        low, high = values.min(), values.max()
        return f"{low:.0f}" if low == high else f"{low:.0f}-{high:.0f}"

    parts = [
        f"{T2I_NAMES.get(a, a)} {span(g[g.metric == names[0]].value)} / {span(g[g.metric == names[1]].value)}"
        for a in algos
        if not (g := last[last.algorithm == a]).empty
    ]
    if not parts:
        return ""
    return (
        " Training budget per run (reward queries / UNet evaluations, sampling and training passes, "
        "evaluation not counted): " + "; ".join(parts) + "."
    )


def _t2i_paper_cells(paper: dict[str, Any], set_name: str, split: str, metric: str) -> dict[str, str]:
    """One row's reference columns '<method> (paper)' from benchmarks/paper/t2i.yaml, '–' where it has no
    value (every cell, until someone reads the paper: t2i.md §4.4)."""
    values = (((paper.get("values") or {}).get(set_name) or {}).get(split) or {}).get(metric) or {}
    return {
        f"{T2I_NAMES.get(a, a)} (paper)": "–" if values.get(a) is None else str(values[a])
        for a in paper.get("methods") or []
    }


def _t2i_paper_note(paper: dict[str, Any], shown: int) -> str:
    """The footer's sentence on the reference columns: what they hold (or that nothing is known) and the
    paper's setting."""
    if not paper.get("methods"):
        return ""
    columns = ", ".join(f"'{T2I_NAMES.get(a, a)} (paper)'" for a in paper["methods"])
    setting = paper.get("setting")
    setting = f" Its setting differs from the shapes world's: {setting}." if setting else ""
    if shown == 0:
        return (
            f" Paper columns ({columns}): the B²-DiffuRL paper's numbers are not available to this project: "
            f"{paper.get('unavailable') or 'it was not read'}. Every cell is therefore '–' and no value is "
            f"invented; they belong in benchmarks/paper/t2i.yaml, null until read from the paper.{setting}"
        )
    return (
        f" Paper columns ({columns}): the B²-DiffuRL paper's reported numbers ({paper.get('source')}), for "
        f"reference only, never aggregated with ours or tested.{setting}"
    )


def _t2i_eval_size(samples: pd.DataFrame | None) -> str:
    """What one evaluation judges, from the runs' sample rows: prompts per split and images per prompt."""
    if samples is None or samples.empty:
        return ""
    first = samples[samples.step == samples.groupby("run_id").step.transform("min")]
    per = first.groupby(["task_id", "split"]).agg(
        prompts=("prompt", "nunique"), images=("image", lambda s: int(s.max()) + 1)
    )
    sizes = "; ".join(
        f"{_set_name(t)} {int(g.loc[(t, 'train'), 'prompts']) if (t, 'train') in g.index else 0} "
        f"train / {int(g.loc[(t, 'test'), 'prompts']) if (t, 'test') in g.index else 0} test"
        for t, g in per.groupby(level=0)
    )
    images = sorted(set(per.images))
    return (
        f" Evaluation per run and split: the split's first prompts up to the grid's eval_max_prompts "
        f"({sizes} "
        f"prompts), {'/'.join(str(i) for i in images)} images each, so each cell judges at most "
        f"{int(per.prompts.max()) * max(images)} images per run; inference is about these prompts, not "
        f"the whole prompt set."
    )


def _t2i_samples(out_tables: Path, run_ids: set[str]) -> pd.DataFrame | None:
    path = out_tables.parent.parent / "index" / "samples.parquet"
    if not path.is_file():
        return None
    samples = pd.read_parquet(path, columns=["run_id", "task_id", "step", "split", "prompt", "image"])
    return samples[samples.run_id.isin(run_ids)]


def t2i_tables(
    scalars: pd.DataFrame, out_tables: Path, out_figs: Path, missing: int, reps: int, seed: int
) -> list[Path]:
    """Prompt sets x split x metric: the base model (each run's step-0 evaluation, on the same noise as
    its final one) beside each fine-tuned method, mean over seeds with a Student-t 95% CI, the paired
    differences (each method − base, DDPO − control, every other method − DDPO), tested with Holm's
    correction, and the B²-DiffuRL paper's reference columns (benchmarks/paper/t2i.yaml); plus the reward
    against reward queries and against UNet evaluations (figures) and labelled sample grids."""
    ev = _t2i_evaluations(scalars)
    last = ev.groupby("run_id").step.transform("max")
    base, final = ev[ev.step == 0], ev[ev.step == last]
    algos = _t2i_order(final.algorithm)
    comparisons = _t2i_comparisons(algos)
    paper = paper_values("t2i")
    samples = _t2i_samples(out_tables, set(scalars.run_id))
    family = Family(
        "paired t-test over seeds",
        "every difference the table prints, all metrics, sets, splits and the pooled rows",
        " Paired: '− base' compares a run's final model with its own base model on the same evaluation "
        "noise, a difference of two methods seed k with seed k (on the same noise or not: above); the "
        "'all sets' rows are stratified over prompt sets (Welch-Satterthwaite df).",
    )
    rows, raw, seeds_seen = [], [], []

    def cell(values: pd.Series | pd.DataFrame, digits: int) -> str:
        return fmt_fixed(*_t2i_estimate(values)[:3], digits)

    for task in sorted(final.task_id.unique()):
        for split in ("train", "test"):
            for metric, title, digits in T2I_METRICS:
                sel = (final.task_id == task) & (final.split_name == split) & (final.name == metric)
                if not sel.any():
                    continue
                row = {"prompt set": _set_name(task), "split": split, "metric": title}
                b = base[(base.task_id == task) & (base.split_name == split) & (base.name == metric)]
                # the base model: one value per seed (each seed evaluates on its own noise)
                values = b.groupby("seed").value.mean()
                row["base"] = cell(values, digits) if len(values) else "–"
                finals = {}
                for algo in algos:
                    g = final[sel & (final.algorithm == algo)].sort_values("seed")
                    seeds_seen.append(len(g))
                    row[T2I_NAMES.get(algo, algo)] = (
                        cell(g.set_index("seed").value, digits) if len(g) else "–"
                    )
                    finals[algo] = g.set_index("seed").value
                    if len(g) and len(values):
                        gb = b[b.algorithm == algo].set_index("seed").value
                        d = _t2i_difference(
                            raw, family, task, split, metric, algo, "base", finals[algo], gb, digits
                        )
                        if d is not None:
                            row[_t2i_column(algo, "base")] = d
                for algo, reference in comparisons:
                    d = _t2i_difference(
                        raw, family, task, split, metric, algo, reference, finals[algo], finals[reference],
                        digits,
                    )
                    if d is not None:
                        row[_t2i_column(algo, reference)] = d
                rows.append({**row, **_t2i_paper_cells(paper, _set_name(task), split, metric)})
    rows += _t2i_pooled_rows(base, final, algos, raw, family, comparisons, paper)
    frame = pd.DataFrame(rows).fillna("–")
    tests = family.frame()
    shown = int(sum(v != "–" for r in rows for k, v in r.items() if k.endswith("(paper)")))
    footer = (
        f"Cells: mean over seeds with a {T_CI} ({seeds_text(seeds_seen)} per cell); 'all sets': the mean "
        f"over prompt sets of each set's mean over seeds, {T_CI} stratified by set. 'base' = each run's "
        f"evaluation before fine-tuning (LoRA at zero), on the same evaluation noise as its final "
        f"evaluation, so '− base' is a paired difference (paired t)."
        + _t2i_pairing_note(base, comparisons)
        + _t2i_budget_note(scalars, algos)
        + _t2i_eval_size(samples)
        + " clipscore = cosine similarity in the reward model's embedding (the training reward unless a "
        "JPEG row names another); oracle = the exact pixel judge that training never sees (graded: share "
        "of prompt parts that hold; all parts: binary); diversity = mean pairwise distance of one prompt's "
        "images."
        + family.footer()
        + _t2i_paper_note(paper, shown)
        + (f" INCOMPLETE: {missing} runs of this grid are missing or failed." if missing else "")
    )
    paths = write_table(
        frame,
        pd.DataFrame(raw),
        out_tables,
        "t2i_alignment",
        "Text-to-image alignment: base vs fine-tuned",
        footer,
        tests,
    )
    paths += t2i_reward_curve(scalars, out_figs)
    paths += t2i_eval_curve(scalars, out_tables, out_figs)
    paths += t2i_sample_grids(final, samples, out_tables.parent.parent / "runs", out_figs)
    return paths


def _t2i_pooled_rows(
    base: pd.DataFrame,
    final: pd.DataFrame,
    algos: list[str],
    raw: list[dict],
    family: Family,
    comparisons: list[tuple[str, str]] | None = None,
    paper: dict[str, Any] | None = None,
) -> list[dict]:
    """'all sets' rows: the mean over prompt sets of each set's mean over seeds, with a t interval
    stratified by set.  Only where every set has the same seeds.  The pooled differences (against base, and
    the `comparisons` of two methods, by default `_t2i_comparisons(algos)`) are also appended to `raw` and
    tested in `family`; the paper's columns (`paper`, the parsed benchmarks/paper/t2i.yaml) are '–' unless
    it has an 'all sets' value."""
    tasks = sorted(final.task_id.unique())
    if len(tasks) < 2:
        return []
    comparisons = _t2i_comparisons(algos) if comparisons is None else comparisons
    rows = []

    def complete(frame: pd.DataFrame, metric: str, split: str, algo: str) -> pd.DataFrame | None:
        sel = frame[(frame.split_name == split) & (frame.name == metric) & (frame.algorithm == algo)]
        m = sel.pivot_table(index="seed", columns="task_id", values="value")
        return m if list(m.columns) == tasks and not m.isna().any().any() else None

    for split in ("train", "test"):
        for metric, title, digits in T2I_METRICS:
            row = {"prompt set": "all sets", "split": split, "metric": title}
            finals = {}
            for algo in algos:
                f, b = complete(final, metric, split, algo), complete(base, metric, split, algo)
                if f is None or b is None or not f.index.equals(b.index):
                    continue
                finals[algo] = f
                name = T2I_NAMES.get(algo, algo)
                for column, values in {"base": b, name: f}.items():
                    row[column] = fmt_fixed(*_t2i_estimate(values)[:3], digits)
                row[_t2i_column(algo, "base")] = _t2i_difference(
                    raw, family, "t2i/all-sets", split, metric, algo, "base", f, b, digits
                )
            for algo, reference in comparisons:
                paired = algo in finals and reference in finals
                if paired and finals[algo].index.equals(finals[reference].index):
                    row[_t2i_column(algo, reference)] = _t2i_difference(
                        raw, family, "t2i/all-sets", split, metric, algo, reference,
                        finals[algo], finals[reference], digits,
                    )
            if len(row) > 3:
                rows.append({**row, **_t2i_paper_cells(paper or {}, "all sets", split, metric)})
    return rows


# the budgets a curve is drawn against: (train scalar of core.Budget, column in t2i_eval_curve.csv, axis
# label, file name suffix).  A point's x is the mean over seeds of the budget spent by then: reward queries
# are the same for every seed, but B²-DiffuRL trains only the branches it selects, so its training passes
# (and UNet evaluations) can differ between seeds.  core.Budget counts the UNet evaluations of training's
# sampling and of its gradient passes, never those of the evaluations.
T2I_BUDGETS = [
    ("budget/reward_queries", "reward_queries", "reward queries (images scored)", "queries"),
    (
        "budget/unet_evals",
        "unet_evals",
        "UNet evaluations (sampling + training passes, mean over seeds)",
        "unet_evals",
    ),
]


def t2i_reward_curve(scalars: pd.DataFrame, out_figs: Path) -> list[Path]:
    """Mean training reward per epoch (B²-DiffuRL: per stage) against the budget spent by then, one figure
    per budget: cumulative reward queries (t2i_reward_vs_queries.png) and cumulative UNet evaluations,
    sampling and training (t2i_reward_vs_unet_evals.png).  Every (task, method) is one line on one axis,
    the mean over seeds, with the spread over seeds shaded (min..max, not an interval estimate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = scalars[scalars.split == "train"]
    wide = tr.pivot_table(
        index=["run_id", "task_id", "algorithm", "seed", "step"], columns="metric", values="value"
    ).reset_index()
    paths = []
    for metric, _, label, suffix in T2I_BUDGETS:
        if wide.empty or metric not in wide or "reward_mean" not in wide:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
        seeds = set()
        groups = wide.groupby(["task_id", "algorithm"])
        styles = _t2i_styles(groups.groups)
        for (task, algo), g in groups:
            seeds.add(g.seed.nunique())
            curve = g.groupby("step").agg(
                x=(metric, "mean"), mean=("reward_mean", "mean"), low=("reward_mean", "min"),
                high=("reward_mean", "max"),
            )
            style = {**styles[task, algo], "marker": None}         # one point an epoch: a line, no markers
            ax.plot(curve.x, curve["mean"], label=_t2i_label(task, algo), lw=1.2, **style)
            ax.fill_between(curve.x, curve.low, curve.high, color=style["color"], alpha=0.12)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("mean training reward per epoch (stage)")
        ax.set_title(
            f"Reward against {label.split(' (')[0]}: mean over {seeds_text(seeds)};\nshaded: min..max over "
            f"the seeds (the spread, not a confidence interval)",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = out_figs / f"t2i_reward_vs_{suffix}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


def t2i_eval_curve(scalars: pd.DataFrame, out_tables: Path, out_figs: Path) -> list[Path]:
    """For runs evaluated during training (`eval_every`): each evaluation's change from the base model
    (the step-0 evaluation, same noise) against the budget spent by then, mean over seeds with a paired
    Student-t 95% CI per (prompt set, method, split), for clipscore and the oracle (all parts).  A CSV of the
    values (with the reward queries and the UNet evaluations, mean over seeds, of each point) and one figure
    per budget of T2I_BUDGETS that the runs logged (rows: train / test split, columns: metric); nothing when
    no run has an evaluation between its first and last."""
    ev = _t2i_evaluations(scalars)
    metrics = [("clipscore", "clipscore − base"), ("oracle_binary", "oracle (all parts) − base")]
    ev = ev[ev.name.isin([m for m, _ in metrics])]
    if ev.empty or ev.groupby("run_id").step.nunique().max() < 3:
        return []
    base = ev[ev.step == 0].set_index(["run_id", "metric"]).value
    ev = ev.assign(
        delta=ev.value.to_numpy()
        - base.reindex(pd.MultiIndex.from_frame(ev[["run_id", "metric"]])).to_numpy()
    )
    spent = scalars[(scalars.split == "train") & scalars.metric.isin([m for m, *_ in T2I_BUDGETS])]
    spent = spent.pivot_table(index=["run_id", "step"], columns="metric", values="value")
    at = pd.MultiIndex.from_frame(ev[["run_id", "step"]])
    for metric, column, *_ in T2I_BUDGETS:
        ev[column] = spent[metric].reindex(at).to_numpy() if metric in spent else np.nan
        ev.loc[ev.step == 0, column] = 0
    keys = ["task_id", "algorithm", "split_name", "name", "step", "reward_queries"]
    rows = []
    for key, g in ev.dropna(subset=["delta", "reward_queries"]).groupby(keys):
        point, low, high, p = stats.t_estimate(g.delta.to_numpy())
        rows.append(
            {
                **dict(zip(keys, key)),
                "unet_evals": float(g.unet_evals.mean()),
                "delta_mean": point,
                "delta_ci_low": low,
                "delta_ci_high": high,
                "p": p,
                "seeds": len(g),
            }
        )
    curve = pd.DataFrame(rows)
    csv = out_tables / "t2i_eval_curve.csv"
    atomic_write_csv(csv, curve)
    paths = [csv]
    for _, column, label, suffix in T2I_BUDGETS:
        if curve[column].notna().all():
            path = out_figs / f"t2i_eval_vs_{suffix}.png"
            paths.append(_t2i_eval_figure(curve, metrics, column, label, path))
    return paths


def _t2i_eval_figure(
    curve: pd.DataFrame, metrics: list[tuple[str, str]], x: str, xlabel: str, path: Path
) -> Path:
    """t2i_eval_curve's figure against one budget column `x` of its CSV."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = ("train", "test")
    styles = _t2i_styles(zip(curve.task_id, curve.algorithm))     # once, so every panel styles a line alike
    fig, axes = plt.subplots(
        len(splits), len(metrics), figsize=(11, 7), sharex=True, squeeze=False, constrained_layout=True
    )
    for r, split in enumerate(splits):
        for c, (metric, title) in enumerate(metrics):
            ax = axes[r, c]
            lines = curve[(curve.name == metric) & (curve.split_name == split)]
            for (task, algo), g in lines.groupby(["task_id", "algorithm"]):
                style = styles[task, algo]
                ax.plot(g[x], g.delta_mean, ms=4, label=_t2i_label(task, algo), **style)
                if (g.seeds > 1).any():
                    ax.fill_between(g[x], g.delta_ci_low, g.delta_ci_high, color=style["color"], alpha=0.08)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_title(f"{title} ({split} split)")
            ax.grid(alpha=0.3)
            if r == len(splits) - 1:
                ax.set_xlabel(xlabel, fontsize=9)
        axes[r, 0].set_ylabel("change from the base model")
    if axes[0, 0].get_legend_handles_labels()[1]:
        axes[0, 0].legend(fontsize=7)
    n = seeds_text(curve.seeds)
    band = (
        f"band = paired {T_CI} over the seeds, per point "
        "(not simultaneous, not corrected for the many points)"
        if curve.seeds.max() > 1
        else "one seed: no band"
    )
    fig.suptitle(f"Evaluations during training: mean change over {n}\n{band}", fontsize=10)
    save_figure(fig, path)
    return path


GUTTER = 200  # grey between images in the labelled sample grids (the shapes world's background is black)


def _grid_cells(image: np.ndarray, rows: int, cols: int) -> np.ndarray | None:
    """Cut a stored sample grid (rows x cols images, each followed by a 1-pixel gutter) into
    [rows, cols, h, w, 3]; None if the shape does not fit that layout."""
    height, width = image.shape[:2]
    if rows < 1 or cols < 1 or height % rows or width % cols:
        return None
    h, w = height // rows - 1, width // cols - 1
    cells = image.reshape(rows, h + 1, cols, w + 1, 3)[:, :h, :, :w].transpose(0, 2, 1, 3, 4)
    return cells


def _compose(cells: np.ndarray, gutter: int = 2) -> np.ndarray:
    """[rows, cols, h, w, 3] -> one image with `gutter` pixels of GUTTER grey between and around cells."""
    rows, cols, h, w, _ = cells.shape
    out = np.full((rows * (h + gutter) + gutter, cols * (w + gutter) + gutter, 3), GUTTER, np.uint8)
    for r in range(rows):
        for c in range(cols):
            out[
                gutter + r * (h + gutter) : gutter + r * (h + gutter) + h,
                gutter + c * (w + gutter) : gutter + c * (w + gutter) + w,
            ] = cells[r, c]
    return out


def _t2i_grid_blocks(samples: pd.DataFrame | None, run_id: str) -> list[tuple]:
    """The blocks of a run's stored sample grid, from its first evaluation's sample rows: (split, prompts
    shown, prompts evaluated, images shown, images per prompt) per split, train first; [] without rows."""
    from suites.t2i.task import GRID_IMAGES, GRID_PROMPTS

    if samples is None:
        return []
    rows = samples[samples.run_id == run_id]
    rows = rows[rows.step == rows.step.min()]
    blocks = []
    for split in ("train", "test"):
        s = rows[rows.split == split]
        prompts = list(pd.unique(s.prompt))
        per = int(s.image.max()) + 1 if len(s) else 0
        if prompts:
            blocks.append((split, prompts[:GRID_PROMPTS], len(prompts), min(per, GRID_IMAGES), per))
    return blocks


def _t2i_stored_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """A run's stored sample grids (samples_step<step>.png) as (step, path), by step."""
    return sorted((int(p.stem.removeprefix("samples_step")), p) for p in run_dir.glob("samples_step*.png"))


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def t2i_samples_width(columns: int) -> float:
    """Width in inches of a labelled sample figure with `columns` image columns (and the prompts' labels)."""
    return 2.0 + 3.75 * columns


def _t2i_labelled_figure(blocks: list[tuple], columns: list[tuple[np.ndarray, str]], suptitle: str):
    """One panel per (split block, column): the column's cells [prompts, images, h, w, 3] of that block
    composed with a grey gutter, each row labelled with its prompt (first column), the block's split in
    every title and as the frame's colour (train blue, test red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = sum(len(b[1]) for b in blocks)
    fig, axes = plt.subplots(
        len(blocks),
        len(columns),
        figsize=(t2i_samples_width(len(columns)), 0.62 * total + 1.2 * len(blocks) + 0.4),
        gridspec_kw={"height_ratios": [len(b[1]) for b in blocks]},
        squeeze=False,
        constrained_layout=True,
    )
    start = 0
    for i, (split, prompts, *_) in enumerate(blocks):
        for j, (grid, title) in enumerate(columns):
            ax = axes[i][j]
            block = grid[start : start + len(prompts)]
            h = block.shape[2]
            ax.imshow(_compose(block), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([2 + r * (h + 2) + h / 2 for r in range(len(prompts))])
            ax.set_yticklabels([textwrap.fill(p, 34) for p in prompts] if j == 0 else [], fontsize=7)
            ax.tick_params(length=0)
            weight = "bold" if j == 0 else "normal"
            ax.set_title(f"{split.upper()} prompts: {title}", fontsize=8, fontweight=weight)
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:blue" if split == "train" else "tab:red")
                spine.set_linewidth(2)
        start += len(prompts)
    # wrapped to the figure's width (about 5 pt a character at 8 pt), so that a long title is not cut off
    chars = int(t2i_samples_width(len(columns)) * 72 / 5)
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in suptitle.split("\n")), fontsize=8)
    return fig


def _t2i_shown(blocks: list[tuple]) -> str:
    """'the first 2 of 2 evaluated train prompts, ..., 2 of 2 images each'."""
    counts = ", ".join(f"the first {len(b[1])} of {b[2]} evaluated {b[0]} prompts" for b in blocks)
    return f"{counts}, {blocks[0][3]} of {blocks[0][4]} images each"


def t2i_sample_grids(
    final: pd.DataFrame, samples: pd.DataFrame | None, runs_dir: Path, out_figs: Path
) -> list[Path]:
    """Per (task, method): the first seed's samples before fine-tuning beside the final model's (same noise),
    rebuilt from the run's stored grids (samples_step*.png) with each row's prompt (from the run's sample
    rows), a grey gutter between images and one labelled block per split.  A run without sample rows (or
    whose grid does not match them) gets the stored grids side by side, unlabelled, as before.  Then, per
    prompt set with two or more methods, all of them side by side (`t2i_side_by_side_grids`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for (task, algo), g in final.groupby(["task_id", "algorithm"]):
        first = g.sort_values("seed").iloc[0]
        pngs = _t2i_stored_grids(runs_dir / first.run_id)
        if len(pngs) < 2:
            continue
        before, after = _rgb(pngs[0][1]), _rgb(pngs[-1][1])
        final_step = pngs[-1][0]
        name = _set_name(task)
        method = T2I_NAMES.get(algo, algo)
        blocks = _t2i_grid_blocks(samples, first.run_id)
        total = sum(len(b[1]) for b in blocks)
        cells = [_grid_cells(image, total, blocks[0][3]) if blocks else None for image in (before, after)]
        if any(c is None for c in cells):
            fig, axes = plt.subplots(
                1, 2, figsize=(7, 7 * before.shape[0] / before.shape[1] / 2 + 0.6), constrained_layout=True
            )
            for ax, image, title in zip(axes, (before, after), ("base", f"{method} (final)")):
                ax.imshow(image, interpolation="nearest")
                ax.set_title(title, fontsize=9)
                ax.axis("off")
            fig.suptitle(
                f"{name}: train prompts (top block), test prompts (bottom block); seed {first.seed}",
                fontsize=8,
            )
        else:
            fig = _t2i_labelled_figure(
                blocks,
                [
                    (cells[0], "base model (before fine-tuning)"),
                    (cells[1], f"{method}, final model (step {final_step})"),
                ],
                f"{name}, seed {first.seed}: {_t2i_shown(blocks)}; one row per prompt, same noise before and "
                f"after",
            )
        path = out_figs / f"t2i_samples_{name}_{algo}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths + t2i_side_by_side_grids(final, samples, runs_dir, out_figs)


def _same_images(a: np.ndarray, b: np.ndarray) -> bool:
    """The same 8-bit images, up to one level (a last-bit difference in a UNet's float arithmetic may round
    a pixel the other way); images from other noise differ far more."""
    return a.shape == b.shape and int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) <= 1


def t2i_side_by_side_grids(
    final: pd.DataFrame, samples: pd.DataFrame | None, runs_dir: Path, out_figs: Path
) -> list[Path]:
    """Per prompt set run by two or more methods: base | each method's final model (T2I_ORDER), the lowest
    seed every method ran, the same prompts and image indices, labelled as the per-method grids
    (t2i_samples_<set>_side_by_side.png).  The base column is the first method's step-0 grid.  A column is
    on the same noise as the others only if its run's own step-0 grid shows the same images (the base model
    is the same network in every run, so it does exactly when both runs drew the same evaluation noise); a
    method whose base images differ is left out and named in the title.  Runs whose stored grids do not
    match their sample rows are left out too."""
    paths = []
    for task, g in final.groupby("task_id"):
        runs = g.drop_duplicates("run_id")
        algos = _t2i_order(runs.algorithm)
        common = set.intersection(*(set(runs[runs.algorithm == a].seed) for a in algos))
        if len(algos) < 2 or not common:
            continue
        seed = min(common)
        run_of = {a: runs[(runs.algorithm == a) & (runs.seed == seed)].run_id.iloc[0] for a in algos}
        blocks = _t2i_grid_blocks(samples, run_of[algos[0]])
        grids = {a: _t2i_stored_grids(runs_dir / run_of[a]) for a in algos}
        if not blocks or len(grids[algos[0]]) < 2:
            continue
        total = sum(len(b[1]) for b in blocks)
        base = _grid_cells(_rgb(grids[algos[0]][0][1]), total, blocks[0][3])
        if base is None:
            continue
        columns, left_out = [(base, "base model (before fine-tuning)")], []
        for algo in algos:
            ends = [grids[algo][0], grids[algo][-1]] if len(grids[algo]) >= 2 else []  # base and final
            cells = [_grid_cells(_rgb(path), total, blocks[0][3]) for _, path in ends]
            same = (
                len(cells) == 2
                and _t2i_grid_blocks(samples, run_of[algo]) == blocks
                and all(c is not None for c in cells)
                and _same_images(cells[0], base)
            )
            if not same:
                left_out.append(T2I_NAMES.get(algo, algo))
                continue
            columns.append((cells[1], f"{T2I_NAMES.get(algo, algo)}, final (step {grids[algo][-1][0]})"))
        if len(columns) < 2:
            continue
        name = _set_name(task)
        note = (
            f" Left out, its base images differ (other evaluation noise) or its grid does not fit: "
            f"{', '.join(left_out)}."
            if left_out
            else ""
        )
        fig = _t2i_labelled_figure(
            blocks,
            columns,
            f"{name}, seed {seed}: {_t2i_shown(blocks)}; one row per prompt; every column on the same "
            f"evaluation noise (each run's own base images are the base column's).{note}",
        )
        path = out_figs / f"t2i_samples_{name}_side_by_side.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


TABLE_BUILDERS = {"didactic": didactic_tables, "dmc": dmc_tables, "t2i": t2i_tables}


def build_tables(
    suite: str,
    results_root: Path,
    run_ids: set[str],
    label: str,
    reps: int = stats.DEFAULT_REPS,
    seed: int = stats.DEFAULT_SEED,
) -> list[Path]:
    """Tables and figures of ONE experiment grid (its run ids), under tables/<label>/ and figures/<label>/.

    Runs of other sizes or other configs in the same index never enter these cells.
    """
    if suite not in TABLE_BUILDERS:
        raise UserError(
            f"no tables are defined for suite {suite!r} yet; suites with tables: {', '.join(TABLE_BUILDERS)}"
        )
    _, scalars, _ = load_index(results_root, suite)
    scalars = scalars[scalars.run_id.isin(run_ids)]
    if scalars.empty:
        raise UserError(
            f"no finished runs of the {label} grid of suite {suite!r} in {results_root}; "
            f"run `b2fb run --suite {suite} --size {label}` first"
        )
    missing = len(set(run_ids) - set(scalars.run_id))
    root = Path(results_root) / suite
    return TABLE_BUILDERS[suite](
        scalars, root / "tables" / label, root / "figures" / label, missing, reps, seed
    )
