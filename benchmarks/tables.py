"""Paper-layout tables (Markdown, LaTeX, CSV) and figures (PNG), from `results/<suite>/index/` only.

Every table cell is an aggregate over seeds with a stratified-bootstrap 95% CI (benchmarks/stats.py);
the footer states the number of seeds, the bootstrap reps and seed.  The papers' own numbers
(benchmarks/paper/<suite>.yaml) appear in separate reference columns and never enter an aggregate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from benchmarks import stats
from benchmarks.results import atomic_write, atomic_write_csv, atomic_write_text, load_index
from suites.errors import UserError

PAPER_DIR = Path(__file__).parent / "paper"


def paper_values(suite: str) -> dict[str, Any]:
    path = PAPER_DIR / f"{suite}.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else {}


def fmt_sci(point: float, low: float, high: float) -> str:
    return f"{point:.1e} [{low:.1e}, {high:.1e}]"


def fmt_fixed(point: float, low: float, high: float, digits: int = 3) -> str:
    return f"{point:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def write_table(frame: pd.DataFrame, raw: pd.DataFrame, out_dir: Path, name: str, title: str, footer: str) -> list[Path]:
    """Write <name>.md (title, table, footer), <name>.tex (booktabs + footnote) and <name>.csv (raw numbers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = f"### {title}\n\n{frame.to_markdown(index=False)}\n\n{footer}\n"
    latex = frame.to_latex(index=False, escape=True, caption=title, column_format="l" * len(frame.columns))
    latex += "% " + footer.replace("\n", "\n% ") + "\n"
    paths = [out_dir / f"{name}.md", out_dir / f"{name}.tex", out_dir / f"{name}.csv"]
    atomic_write_text(paths[0], md)
    atomic_write_text(paths[1], latex)
    atomic_write_csv(paths[2], raw)
    return paths


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically (its directory created), then close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def final_eval(scalars: pd.DataFrame) -> pd.DataFrame:
    """The eval rows at each run's last step (the final checkpoint, not the best one)."""
    ev = scalars[scalars.split == "eval"]
    last = ev.groupby("run_id").step.transform("max")
    return ev[ev.step == last]


# ---- didactic ----------------------------------------------------------------------------------------
DIDACTIC_METRICS = [  # (metric, column title, paper key, formatter)
    ("successor_error", "M/rho error", "successor_error", fmt_sci),
    ("successor_rel_error", "M/rho rel. error", None, fmt_sci),
    ("q_error", "Q error", "q_error", fmt_sci),
    ("policy_kl", "policy KL", "policy_kl", fmt_sci),
    ("greedy_match", "greedy match", None, fmt_fixed),
]
METHOD_NAMES = {"fb": "FB", "onestep_fb": "one-step FB", "fb_zheng": "FB (Zheng)"}


def didactic_tables(scalars: pd.DataFrame, out_tables: Path, out_figs: Path, missing: int, reps: int, seed: int
                    ) -> list[Path]:
    paper = paper_values("didactic").get("final_errors", {})
    final = final_eval(scalars)
    display_rows, raw_rows = [], []
    seeds_seen = set()
    for (task_id, algo), group in sorted(final.groupby(["task_id", "algorithm"]), key=lambda kv: kv[0]):
        cmp = task_id.split("/", 1)[1]
        n_seeds = group.seed.nunique()
        seeds_seen.add(n_seeds)
        steps = int(group.step.max())
        row = {"CMP": cmp, "method": METHOD_NAMES.get(algo, algo), "seeds": n_seeds, "steps": steps}
        for metric, title, paper_key, fmt in DIDACTIC_METRICS:
            values = group[group.metric == metric].sort_values("seed").value.to_numpy()
            point, low, high = stats.interval_estimate(values, stats.iqm, reps=reps, seed=seed)
            row[title] = fmt(point, low, high)
            raw_rows.append({"task_id": task_id, "algorithm": algo, "metric": metric, "seeds": n_seeds, "step": steps,
                             "iqm": point, "ci_low": low, "ci_high": high,
                             "paper_approx": paper.get(cmp, {}).get(algo, {}).get(paper_key) if paper_key else None})
            if paper_key:
                ref = paper.get(cmp, {}).get(algo, {}).get(paper_key)
                row[f"{title} (paper, approx.)"] = "–" if ref is None else f"≈{ref:.0e}"
        display_rows.append(row)
    frame = pd.DataFrame(display_rows)
    footer = (f"Cells: IQM over seeds with a stratified-bootstrap 95% CI (reps={reps}, bootstrap seed={seed}); "
              f"seeds per cell: {', '.join(str(s) for s in sorted(seeds_seen))}. Final checkpoint, not the best. "
              f"Paper columns: approximate final errors read off the one-step FB paper's website figure "
              f"(fb.md §4.1), for reference only; the paper's protocol (parameterisation, lr, latents) is unknown, "
              f"ours is in benchmarks/configs/didactic.yaml."
              + (f" INCOMPLETE: {missing} runs of this grid are missing or failed (see `b2fb collect`)."
                 if missing else ""))
    paths = write_table(frame, pd.DataFrame(raw_rows), out_tables, "didactic_errors",
                        "Didactic CMPs: final errors against exact ground truth", footer)
    paths.append(didactic_error_figure(scalars, out_figs / "didactic_error_vs_steps.png", reps, seed))
    return paths


def didactic_error_figure(scalars: pd.DataFrame, path: Path, reps: int, seed: int) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [(m, t) for m, t, _, _ in DIDACTIC_METRICS if m != "greedy_match"]
    ev = scalars[scalars.split == "eval"]
    tasks = sorted(ev.task_id.unique())
    fig, axes = plt.subplots(len(tasks), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(tasks)),
                             squeeze=False, constrained_layout=True)
    colors = {"fb": "tab:blue", "onestep_fb": "tab:orange", "fb_zheng": "tab:green"}
    for i, task_id in enumerate(tasks):
        for j, (metric, title) in enumerate(metrics):
            ax = axes[i][j]
            sub = ev[(ev.task_id == task_id) & (ev.metric == metric)]
            for algo, g in sorted(sub.groupby("algorithm")):
                table = g.pivot_table(index="step", columns="seed", values="value")
                steps = table.index.to_numpy()
                est = np.array([stats.interval_estimate(row.dropna().to_numpy(), stats.iqm, reps=min(reps, 500), seed=seed)
                                for _, row in table.iterrows()])
                floor = 1e-16
                ax.plot(steps, np.maximum(est[:, 0], floor), label=METHOD_NAMES.get(algo, algo),
                        color=colors.get(algo))
                ax.fill_between(steps, np.maximum(est[:, 1], floor), np.maximum(est[:, 2], floor), alpha=0.25,
                                color=colors.get(algo))
            ax.set_yscale("log")
            ax.set_title(f"{task_id.split('/', 1)[1]}: {title}", fontsize=10)
            ax.set_xlabel("gradient steps")
            ax.grid(True, which="major", alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.suptitle("Error against exact ground truth (IQM over seeds, 95% bootstrap CI)", fontsize=11)
    save_figure(fig, path)
    return path


# ---- dmc ---------------------------------------------------------------------------------------------------
DMC_ORDER = ["fb", "onestep_fb", "uniform_random", "zero_action"]
DMC_NAMES = {"fb": "FB", "onestep_fb": "one-step FB", "uniform_random": "uniform random",
             "zero_action": "zero action"}


def dmc_tables(scalars: pd.DataFrame, out_tables: Path, out_figs: Path, missing: int, reps: int, seed: int
               ) -> list[Path]:
    """Domains x tasks, mean return with a bootstrap 95% CI over seeds, per-domain overall; the paper's
    FB and one-step FB numbers in separate columns; IQM of normalised scores and performance profiles."""
    from suites.dmc.domains import DOMAINS

    paper = paper_values("dmc")
    final = final_eval(scalars)
    final = final[final.metric.str.endswith("/return")].copy()
    final["domain"] = final.task_id.str.split("/").str[1].str.replace(r"-zeroshot-v\d+$", "", regex=True).str.replace(
        "-", "_")
    final["task"] = final.metric.str[: -len("/return")]
    algos = [a for a in DMC_ORDER if a in set(final.algorithm)] + sorted(set(final.algorithm) - set(DMC_ORDER))
    rows, raw = [], []
    seeds_seen = set()

    def cell(values: np.ndarray) -> tuple[str, tuple[float, float, float]]:
        point, low, high = stats.interval_estimate(values, stats.mean, reps=reps, seed=seed)
        return f"{point:.0f} [{low:.0f}, {high:.0f}]", (point, low, high)

    for domain in [d for d in DOMAINS if d in set(final.domain)]:
        sub = final[final.domain == domain]
        for task in sorted(sub.task.unique()) + ["overall"]:
            row = {"domain": domain, "task": task}
            for algo in algos:
                g = sub[sub.algorithm == algo]
                if task == "overall":  # per seed: mean over the domain's tasks, then across seeds
                    values = g.groupby("seed").value.mean().to_numpy()
                else:
                    values = g[g.task == task].sort_values("seed").value.to_numpy()
                if len(values) == 0:
                    row[DMC_NAMES.get(algo, algo)] = "–"
                    continue
                seeds_seen.add(len(values))
                text, (point, low, high) = cell(values)
                row[DMC_NAMES.get(algo, algo)] = text
                raw.append({"domain": domain, "task": task, "algorithm": algo, "seeds": len(values),
                            "mean": point, "ci_low": low, "ci_high": high})
            for algo in ("fb", "onestep_fb"):
                ref = (paper.get("overall", {}).get(domain, {}) if task == "overall"
                       else paper.get("returns", {}).get(domain, {}).get(task, {})).get(algo)
                row[f"{DMC_NAMES[algo]} (paper)"] = "–" if ref is None else f"{ref[0]} ± {ref[1]}"
            rows.append(row)
    frame = pd.DataFrame(rows)
    # Honest comparisons, computed, not written by hand: tasks where each method beats uniform random.
    per_task = final[final.task != "overall"].groupby(["algorithm", "domain", "task"]).value.mean()
    cis = pd.DataFrame(raw)
    cis = cis[cis.task != "overall"].set_index(["algorithm", "domain", "task"]) if len(cis) else cis
    lines = []

    def beats(a: str, b: str) -> str:  # over the tasks where both have results; also the stricter count
        diff = (per_task[a] - per_task[b]).dropna()
        apart = (cis.loc[a].ci_low - cis.loc[b].ci_high).dropna()   # a's 95% CI entirely above b's
        return (f"{DMC_NAMES[a]} beats {DMC_NAMES[b]} on {int((diff > 0).sum())}/{len(diff)} tasks "
                f"({int((apart > 0).sum())} with CIs apart)")

    if "uniform_random" in algos:
        lines += [beats(algo, "uniform_random") for algo in ("fb", "onestep_fb") if algo in algos]
    if {"fb", "onestep_fb"} <= set(algos):
        lines.append(beats("onestep_fb", "fb"))
    lines[-1:] = [f"{lines[-1]} (means over seeds; 'CIs apart': the lower 95% bound above the other's upper)"] \
        if lines else []
    footer = (f"Cells: mean undiscounted return over seeds with a bootstrap 95% CI (reps={reps}, bootstrap seed="
              f"{seed}); seeds per cell: {', '.join(str(s) for s in sorted(seeds_seen))}; final checkpoint. "
              f"'overall' = mean over the domain's tasks per seed. {'; '.join(lines)}. Paper columns: the one-step "
              f"FB paper's reported numbers (RND 5M data, 1M steps, full-size nets; fb.md §5.3), for reference "
              f"only, never aggregated with ours."
              + (f" INCOMPLETE: {missing} runs of this grid are missing or failed." if missing else ""))
    paths = write_table(frame, pd.DataFrame(raw), out_tables, "dmc_returns",
                        "Zero-shot returns on DMC (ExORL tasks)", footer)
    paths += dmc_aggregate(final, algos, out_tables, out_figs, reps, seed)
    return paths


def dmc_aggregate(final: pd.DataFrame, algos: list[str], out_tables: Path, out_figs: Path, reps: int, seed: int
                  ) -> list[Path]:
    """IQM of normalised returns (return / episode length, i.e. / max return) over (seed x task), with a
    stratified bootstrap CI, and performance profiles (fraction of runs x tasks above a threshold)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from suites.dmc.domains import DOMAINS

    final = final.assign(score=final.value / final.domain.map(lambda d: DOMAINS[d].episode_length))
    rows, matrices = [], {}
    for algo in algos:
        m = final[final.algorithm == algo].pivot_table(index="seed", columns=["domain", "task"], values="score")
        m = m.dropna(axis=0)
        matrices[algo] = m.to_numpy()
        point, low, high = stats.interval_estimate(matrices[algo], stats.iqm, reps=reps, seed=seed)
        rows.append({"method": DMC_NAMES.get(algo, algo), "runs": m.shape[0], "tasks": m.shape[1],
                     "IQM normalised return": fmt_fixed(point, low, high),
                     "mean normalised return": fmt_fixed(*stats.interval_estimate(matrices[algo], stats.mean,
                                                                                   reps=reps, seed=seed))})
    frame = pd.DataFrame(rows)
    footer = (f"Normalised return = return / maximum return (episode length). IQM and mean over seeds x tasks "
              f"with a stratified bootstrap 95% CI (reps={reps}, bootstrap seed={seed}).")
    paths = write_table(frame, frame, out_tables, "dmc_aggregate", "Zero-shot DMC: aggregate scores", footer)
    fig, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    taus = np.linspace(0, 1, 101)
    for algo in algos:
        x = matrices[algo].ravel()
        ax.plot(taus, [(x > t).mean() for t in taus], label=DMC_NAMES.get(algo, algo))
    ax.set_xlabel("normalised return threshold τ")
    ax.set_ylabel("fraction of runs × tasks > τ")
    ax.set_title("Performance profiles (DMC)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
T2I_NAMES = {"ddpo": "DDPO", "ddpo_shuffled": "DDPO, shuffled advantages", "b2diffurl": "B²-DiffuRL"}
# method -> its no-signal control (ddpo_shuffled.py: the same loop with each epoch's advantages permuted).
# Where both ran, the table adds '<method> − control', paired by seed: what the reward's signal bought at
# equal movement of the policy.
T2I_CONTROLS = {"ddpo": "ddpo_shuffled"}
VERDICT_METRICS = ("clipscore", "oracle_binary", "jpeg_compressibility", "jpeg_incompressibility")


def _t2i_evaluations(scalars: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows, with a metric 'train/clipscore' split into split_name 'train' and name 'clipscore'."""
    ev = scalars[scalars.split == "eval"]
    parts = ev.metric.str.split("/", n=1)
    return ev.assign(split_name=parts.str[0], name=parts.str[1])


def _t2i_label(task: str, algo: str) -> str:
    """Legend label of one (task, method) line: 'DDPO: shapes-counting'."""
    return f"{T2I_NAMES.get(algo, algo)}: {task.split('/')[1].removesuffix('-v0')}"


def _t2i_difference(raw: list[dict], task: str, split: str, metric: str, algo: str, against: str,
                    final: pd.Series | pd.DataFrame, reference: pd.Series | pd.DataFrame, reps: int, seed: int
                    ) -> tuple[float, float, float] | None:
    """Paired difference final - reference (indexed by seed; columns = prompt sets for the pooled row), its
    mean with a (stratified) bootstrap CI, appended to `raw`; None when no seed is paired."""
    diff = (final - reference).dropna()
    if diff.empty:
        return None
    point, low, high = stats.interval_estimate(diff.to_numpy(), stats.mean, reps=reps, seed=seed)
    raw.append({"task": task, "split": split, "metric": metric, "algorithm": algo, "against": against,
                "seeds": int(diff.shape[0]), "final": float(final.to_numpy().mean()),
                "reference": float(reference.to_numpy().mean()), "delta": point, "delta_ci_low": low,
                "delta_ci_high": high})
    return point, low, high


def t2i_tables(scalars: pd.DataFrame, out_tables: Path, out_figs: Path, missing: int, reps: int, seed: int
               ) -> list[Path]:
    """Prompt sets x split x metric: the base model (each run's step-0 evaluation, on the same noise as
    its final one) beside each fine-tuned method, mean with a bootstrap 95% CI over seeds; plus the
    reward against reward queries (figure) and base-vs-fine-tuned sample grids."""
    ev = _t2i_evaluations(scalars)
    last = ev.groupby("run_id").step.transform("max")
    base, final = ev[ev.step == 0], ev[ev.step == last]
    algos = sorted(set(final.algorithm))
    rows, raw, seeds_seen, lines = [], [], set(), []

    def cell(values: np.ndarray, digits: int) -> str:
        point, low, high = stats.interval_estimate(values, stats.mean, reps=reps, seed=seed)
        raw_cell.append((point, low, high))
        return fmt_fixed(point, low, high, digits)

    for task in sorted(final.task_id.unique()):
        for split in ("train", "test"):
            for metric, title, digits in T2I_METRICS:
                sel = (final.task_id == task) & (final.split_name == split) & (final.name == metric)
                if not sel.any():
                    continue
                row = {"prompt set": task.split("/")[1].removesuffix("-v0"), "split": split, "metric": title}
                b = base[(base.task_id == task) & (base.split_name == split) & (base.name == metric)]
                raw_cell: list = []
                # the base model: one value per seed (each seed evaluates on its own noise)
                values = b.groupby("seed").value.mean().to_numpy()
                row["base"] = cell(values, digits) if len(values) else "–"
                finals = {}
                for algo in algos:
                    g = final[sel & (final.algorithm == algo)].sort_values("seed")
                    seeds_seen.add(len(g))
                    row[T2I_NAMES.get(algo, algo)] = cell(g.value.to_numpy(), digits) if len(g) else "–"
                    finals[algo] = g.set_index("seed").value
                    if len(g) and len(values):
                        gb = b[b.algorithm == algo].set_index("seed").value
                        d = _t2i_difference(raw, task, split, metric, algo, "base", finals[algo], gb, reps, seed)
                        if d is not None:
                            row[f"{T2I_NAMES.get(algo, algo)} − base"] = fmt_fixed(*d, digits)
                for algo, control in T2I_CONTROLS.items():
                    if algo in finals and control in finals:
                        d = _t2i_difference(raw, task, split, metric, algo, control, finals[algo], finals[control],
                                            reps, seed)
                        if d is not None:
                            row[f"{T2I_NAMES.get(algo, algo)} − control"] = fmt_fixed(*d, digits)
                rows.append(row)
    rows += _t2i_pooled_rows(base, final, algos, raw, reps, seed)
    frame = pd.DataFrame(rows).fillna("–")
    tested = [r for r in raw if r["metric"] in VERDICT_METRICS and r["seeds"] >= 2]  # one seed has no CI
    for r in tested:
        sign = "raises" if r["delta_ci_low"] > 0 else "lowers" if r["delta_ci_high"] < 0 else None
        if sign:
            versus = "" if r["against"] == "base" else f" against {T2I_NAMES.get(r['against'], r['against'])}"
            lines.append(f"{T2I_NAMES.get(r['algorithm'], r['algorithm'])} {sign} {r['metric']}{versus} on "
                         f"{r['task'].split('/')[1]} {r['split']}")
    verdicts = ""
    if tested:
        verdicts = (f" Differences whose 95% CI excludes 0 ({', '.join(VERDICT_METRICS)}): "
                    f"{'; '.join(lines) if lines else 'none'}; every other difference in these metrics is "
                    f"not significant (of {len(tested)} differences tested, about {len(tested) / 20:.1f} would "
                    f"exclude 0 by chance alone).")
    control_note = (" '− control' pairs a method with its no-signal control (same settings and seeds, advantages "
                    "shuffled) by seed." if any(r["against"] != "base" for r in raw) else "")
    footer = (f"Cells: mean over seeds with a bootstrap 95% CI (reps={reps}, bootstrap seed={seed}); seeds per "
              f"cell: {', '.join(str(s) for s in sorted(seeds_seen))}. 'base' = each run's evaluation before "
              f"fine-tuning (LoRA at zero), on the same evaluation noise as its final evaluation, so "
              f"'− base' is a paired difference;{control_note} clipscore = cosine similarity in the "
              f"reward model's embedding (the training reward unless a JPEG row names another); oracle = the "
              f"exact pixel judge that training never sees (graded: share of prompt parts that hold; all "
              f"parts: binary); diversity = mean pairwise distance of one prompt's images.{verdicts}"
              + (f" INCOMPLETE: {missing} runs of this grid are missing or failed." if missing else ""))
    paths = write_table(frame, pd.DataFrame(raw), out_tables, "t2i_alignment",
                        "Text-to-image alignment: base vs fine-tuned", footer)
    paths += t2i_reward_curve(scalars, out_figs)
    paths += t2i_eval_curve(scalars, out_tables, out_figs, reps, seed)
    paths += t2i_sample_grids(final, out_tables.parent.parent / "runs", out_figs)
    return paths


def _t2i_pooled_rows(base: pd.DataFrame, final: pd.DataFrame, algos: list[str], raw: list[dict], reps: int,
                     seed: int) -> list[dict]:
    """'all sets' rows: the mean over prompt sets and seeds, with a stratified bootstrap CI (seeds resampled
    within each set, as the dmc aggregate does over tasks).  Only where every set has the same seeds.  The
    pooled differences (against base, and against a method's control where both ran) are also appended to
    `raw` (the table's CSV rows and the footer's verdicts)."""
    tasks = sorted(final.task_id.unique())
    if len(tasks) < 2:
        return []
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
                    row[column] = fmt_fixed(*stats.interval_estimate(values.to_numpy(), stats.mean, reps=reps,
                                                                     seed=seed), digits)
                d = _t2i_difference(raw, "t2i/all-sets", split, metric, algo, "base", f, b, reps, seed)
                row[f"{name} − base"] = fmt_fixed(*d, digits)
            for algo, control in T2I_CONTROLS.items():
                if algo in finals and control in finals and finals[algo].index.equals(finals[control].index):
                    d = _t2i_difference(raw, "t2i/all-sets", split, metric, algo, control, finals[algo],
                                        finals[control], reps, seed)
                    row[f"{T2I_NAMES.get(algo, algo)} − control"] = fmt_fixed(*d, digits)
            if len(row) > 3:
                rows.append(row)
    return rows


def t2i_reward_curve(scalars: pd.DataFrame, out_figs: Path) -> list[Path]:
    """Mean training reward per epoch against cumulative reward queries, one line per (task, method),
    with the spread over seeds shaded (min..max)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = scalars[scalars.split == "train"]
    wide = tr.pivot_table(index=["run_id", "task_id", "algorithm", "seed", "step"], columns="metric",
                          values="value").reset_index()
    if wide.empty or "budget/reward_queries" not in wide:
        return []
    fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
    for (task, algo), g in wide.groupby(["task_id", "algorithm"]):
        curve = g.groupby("budget/reward_queries").reward_mean.agg(["mean", "min", "max"])
        line, = ax.plot(curve.index, curve["mean"], label=_t2i_label(task, algo))
        ax.fill_between(curve.index, curve["min"], curve["max"], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("reward queries (images scored)")
    ax.set_ylabel("mean training reward per epoch")
    ax.set_title("Reward against reward queries (shaded: min..max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = out_figs / "t2i_reward_vs_queries.png"
    save_figure(fig, path)
    return [path]


def t2i_eval_curve(scalars: pd.DataFrame, out_tables: Path, out_figs: Path, reps: int = stats.DEFAULT_REPS,
                   seed: int = stats.DEFAULT_SEED) -> list[Path]:
    """For runs evaluated during training (`eval_every`): each evaluation's change from the base model
    (the step-0 evaluation, same noise) against the reward queries spent by then, mean over seeds with a
    bootstrap 95% CI per (prompt set, method, split), for clipscore and the oracle (all parts).  A CSV of
    the values and a figure (rows: train / test split, columns: metric); nothing when no run has an
    evaluation between its first and last."""
    ev = _t2i_evaluations(scalars)
    metrics = [("clipscore", "clipscore − base"), ("oracle_binary", "oracle (all parts) − base")]
    ev = ev[ev.name.isin([m for m, _ in metrics])]
    if ev.empty or ev.groupby("run_id").step.nunique().max() < 3:
        return []
    base = ev[ev.step == 0].set_index(["run_id", "metric"]).value
    ev = ev.assign(delta=ev.value.to_numpy() - base.reindex(pd.MultiIndex.from_frame(ev[["run_id", "metric"]])).to_numpy())
    queries = scalars[(scalars.split == "train") & (scalars.metric == "budget/reward_queries")]
    queries = queries.set_index(["run_id", "step"]).value
    ev["reward_queries"] = queries.reindex(pd.MultiIndex.from_frame(ev[["run_id", "step"]])).to_numpy()
    ev.loc[ev.step == 0, "reward_queries"] = 0
    keys = ["task_id", "algorithm", "split_name", "name", "step", "reward_queries"]
    rows = []
    for key, g in ev.dropna(subset=["delta", "reward_queries"]).groupby(keys):
        point, low, high = stats.interval_estimate(g.delta.to_numpy(), stats.mean, reps=reps, seed=seed)
        rows.append({**dict(zip(keys, key)), "delta_mean": point, "delta_ci_low": low, "delta_ci_high": high,
                     "seeds": len(g)})
    curve = pd.DataFrame(rows)
    csv = out_tables / "t2i_eval_curve.csv"
    atomic_write_csv(csv, curve)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = ("train", "test")
    fig, axes = plt.subplots(len(splits), len(metrics), figsize=(11, 7), sharex=True, squeeze=False,
                             constrained_layout=True)
    for r, split in enumerate(splits):
        for c, (metric, title) in enumerate(metrics):
            ax = axes[r, c]
            lines = curve[(curve.name == metric) & (curve.split_name == split)]
            for i, ((task, algo), g) in enumerate(lines.groupby(["task_id", "algorithm"])):
                color = f"C{i}"
                ax.plot(g.reward_queries, g.delta_mean, marker="o", ms=3, color=color, label=_t2i_label(task, algo))
                if (g.seeds > 1).any():
                    ax.fill_between(g.reward_queries, g.delta_ci_low, g.delta_ci_high, color=color, alpha=0.15)
            ax.axhline(0, color="k", lw=0.8)
            ax.set_title(f"{title} ({split} split)")
            ax.grid(alpha=0.3)
            if r == len(splits) - 1:
                ax.set_xlabel("reward queries (images scored)")
        axes[r, 0].set_ylabel("change from the base model")
    if axes[0, 0].get_legend_handles_labels()[1]:
        axes[0, 0].legend(fontsize=7)
    fig.suptitle("Evaluations during training: mean over seeds, band = bootstrap 95% CI over seeds")
    path = out_figs / "t2i_eval_vs_queries.png"
    save_figure(fig, path)
    return [csv, path]


def t2i_sample_grids(final: pd.DataFrame, runs_dir: Path, out_figs: Path) -> list[Path]:
    """Per task: the first seed's sample grid before fine-tuning beside the one after (same noise)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    paths = []
    for (task, algo), g in final.groupby(["task_id", "algorithm"]):
        first = g.sort_values("seed").iloc[0]
        pngs = sorted((runs_dir / first.run_id).glob("samples_step*.png"))
        if len(pngs) < 2:
            continue
        before, after = (np.asarray(Image.open(p).convert("RGB")) for p in (pngs[0], pngs[-1]))
        fig, axes = plt.subplots(1, 2, figsize=(7, 7 * before.shape[0] / before.shape[1] / 2 + 0.6),
                                 constrained_layout=True)
        for ax, image, title in zip(axes, (before, after), ("base", f"{T2I_NAMES.get(algo, algo)} (final)")):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        name = task.split("/")[1].removesuffix("-v0")
        fig.suptitle(f"{name}: train prompts (top block), test prompts (bottom block); seed {first.seed}",
                     fontsize=8)
        path = out_figs / f"t2i_samples_{name}_{algo}.png"
        save_figure(fig, path)
        paths.append(path)
    return paths


TABLE_BUILDERS = {"didactic": didactic_tables, "dmc": dmc_tables, "t2i": t2i_tables}


def build_tables(suite: str, results_root: Path, run_ids: set[str], label: str, reps: int = stats.DEFAULT_REPS,
                 seed: int = stats.DEFAULT_SEED) -> list[Path]:
    """Tables and figures of ONE experiment grid (its run ids), under tables/<label>/ and figures/<label>/.

    Runs of other sizes or other configs in the same index never enter these cells.
    """
    if suite not in TABLE_BUILDERS:
        raise UserError(f"no tables are defined for suite {suite!r} yet; suites with tables: "
                        f"{', '.join(TABLE_BUILDERS)}")
    _, scalars, _ = load_index(results_root, suite)
    scalars = scalars[scalars.run_id.isin(run_ids)]
    if scalars.empty:
        raise UserError(f"no finished runs of the {label} grid of suite {suite!r} in {results_root}; "
                        f"run `b2fb run --suite {suite} --size {label}` first")
    missing = len(set(run_ids) - set(scalars.run_id))
    root = Path(results_root) / suite
    return TABLE_BUILDERS[suite](scalars, root / "tables" / label, root / "figures" / label, missing, reps, seed)
