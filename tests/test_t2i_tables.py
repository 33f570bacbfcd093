"""The t2i table's paired differences from DDPO, its paper columns, the curves against UNet evaluations and
the side-by-side sample grids, on synthetic results (no model runs; tests/test_t2i_e2e.py runs the tiny
bench)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from benchmarks import stats, tables


@pytest.fixture
def figures(monkeypatch):
    """name -> the figure save_figure was given (kept open for inspection, closed at the end)."""
    import matplotlib.pyplot as plt

    kept = {}
    monkeypatch.setattr(tables, "save_figure", lambda fig, path: kept.__setitem__(Path(path).name, fig))
    yield kept
    for fig in kept.values():
        plt.close(fig)


def _scalars(finals: dict, bases: dict | None = None) -> pd.DataFrame:
    """eval rows of train/clipscore at steps 0 and 10 per (algorithm, task) and seed; base 0.40 + 0.01 seed
    unless `bases` gives an algorithm its own (other noise)."""
    rows = []
    for (algo, task), values in finals.items():
        for seed, value in enumerate(values):
            base = (bases or {}).get(algo, 0.40 + 0.01 * seed)
            for step, v in ((0, base), (10, value)):
                rows.append({"run_id": f"{algo}--{task}--seed{seed}", "task_id": task, "seed": seed,
                             "algorithm": algo, "step": step, "split": "eval", "metric": "train/clipscore",
                             "value": v})
    return pd.DataFrame(rows)


FINALS = {
    ("ddpo", "t2i/a-v0"): [0.45, 0.47, 0.46],
    ("b2diffurl", "t2i/a-v0"): [0.48, 0.49, 0.50],
    ("ddpo_shuffled", "t2i/a-v0"): [0.44, 0.45, 0.45],
    ("ddpo", "t2i/b-v0"): [0.50, 0.52, 0.51],
    ("b2diffurl", "t2i/b-v0"): [0.50, 0.55, 0.52],
    ("ddpo_shuffled", "t2i/b-v0"): [0.50, 0.49, 0.50],
}


def test_each_method_minus_ddpo_is_paired_by_seed_per_set_and_pooled(tmp_path, figures):
    tables.t2i_tables(_scalars(FINALS), tmp_path / "t", tmp_path / "f", missing=0, reps=100, seed=0)
    raw = pd.read_csv(tmp_path / "t" / "t2i_alignment.csv")
    versus = raw[raw.against == "ddpo"].set_index("task")
    assert set(versus.algorithm) == {"b2diffurl"}                  # the control is not set beside DDPO
    a, b = np.array([0.03, 0.02, 0.04]), np.array([0.00, 0.03, 0.01])
    assert versus.loc["t2i/a-v0", "delta"] == pytest.approx(a.mean())
    assert versus.loc["t2i/a-v0", "p"] == pytest.approx(sps.ttest_1samp(a, 0).pvalue)
    pooled = stats.stratified_estimate([a, b])
    columns = ["delta", "delta_ci_low", "delta_ci_high", "p"]
    assert versus.loc["t2i/all-sets", columns].to_list() == pytest.approx(pooled)
    tests = pd.read_csv(tmp_path / "t" / "t2i_alignment_tests.csv").set_index("difference")
    # one family: 3 methods − base, DDPO − control and B²-DiffuRL − DDPO, on sets a, b and pooled
    assert len(tests) == len(raw) == 5 * 3
    row = tests.index.get_loc("B²-DiffuRL − DDPO, all-sets train clipscore")
    assert tests.p.iloc[row] == pytest.approx(pooled[3])
    assert tests.p_holm.iloc[row] == pytest.approx(stats.holm(tests.p.to_numpy())[row])  # Holm over all 15
    table = (tmp_path / "t" / "t2i_alignment.md").read_text()
    assert table.index("| DDPO ") < table.index("| B²-DiffuRL ")  # DDPO first, then B²-DiffuRL
    assert "B²-DiffuRL − DDPO" in table and "DDPO − control" in table
    assert "'DDPO − control', 'B²-DiffuRL − DDPO': the same noise" in table


def test_a_method_on_other_noise_is_said_to_pair_by_seed_only(tmp_path, figures):
    finals = {k: v for k, v in FINALS.items() if k[0] != "ddpo_shuffled"}
    tables.t2i_tables(_scalars(finals, bases={"b2diffurl": 0.30}), tmp_path / "t", tmp_path / "f", missing=0,
                      reps=100, seed=0)
    table = (tmp_path / "t" / "t2i_alignment.md").read_text()
    assert "'B²-DiffuRL − DDPO': NOT the same noise" in table and "paired by seed only" in table


@pytest.mark.parametrize("offset, same", [(1.3e-5, True), (-1.3e-5, True), (0.015, False), (-0.015, False)])
def test_float_rounding_of_the_base_evaluation_is_still_the_same_noise(tmp_path, figures, offset, same):
    """Base evaluations 1.3e-5 apart (the largest rounding difference seen between runs on the same noise)
    are the same noise; 0.015 apart (the smallest distance seen between runs on other noise) are not."""
    finals = {k: v for k, v in FINALS.items() if k[0] != "ddpo_shuffled"}
    scalars = _scalars(finals)
    scalars.loc[(scalars.algorithm == "b2diffurl") & (scalars.step == 0), "value"] += offset
    tables.t2i_tables(scalars, tmp_path / "t", tmp_path / "f", missing=0, reps=100, seed=0)
    table = (tmp_path / "t" / "t2i_alignment.md").read_text()
    verdict = "the same noise" if same else "NOT the same noise"
    assert f"'B²-DiffuRL − DDPO': {verdict}" in table


def test_the_same_noise_is_read_on_unit_scale_metrics_not_on_a_jpeg_size(tmp_path, figures):
    """A JPEG size in kB can move by a byte (0.001 kB) with float rounding; the same-noise check reads the unit-
    scale metrics (clipscore, oracle, diversity) only."""
    finals = {k: v for k, v in FINALS.items() if k[0] != "ddpo_shuffled"}
    scalars = _scalars(finals)
    jpeg = scalars[scalars.step == 0].assign(metric="train/jpeg_compressibility", value=-3.0)
    jpeg.loc[jpeg.algorithm == "b2diffurl", "value"] = -3.002
    tables.t2i_tables(pd.concat([scalars, jpeg]), tmp_path / "t", tmp_path / "f", missing=0, reps=100, seed=0)
    assert "'B²-DiffuRL − DDPO': the same noise" in (tmp_path / "t" / "t2i_alignment.md").read_text()


def test_the_committed_t2i_paper_file_invents_no_value():
    """benchmarks/paper/t2i.yaml: the B²-DiffuRL paper's table values are unknown (t2i.md §4.4), so every
    value is null and no source is claimed."""
    paper = tables.paper_values("t2i")
    assert paper["methods"] == ["ddpo", "b2diffurl"] and paper["source"] is None

    def leaves(node):
        return [v for child in node.values() for v in leaves(child)] if isinstance(node, dict) else [node]

    assert leaves(paper["values"]) and set(leaves(paper["values"])) == {None}


def test_paper_columns_show_a_filled_value_and_say_where_it_is_from(tmp_path, figures, monkeypatch):
    """The day someone reads the paper they fill the file: its value appears in its row, the others stay
    '–'."""
    paper = {**tables.paper_values("t2i"), "source": "Table 1 of the paper",
             "values": {"a": {"train": {"clipscore": {"b2diffurl": "0.35 ± 0.01"}}}}}
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "t2i.yaml").write_text(yaml.safe_dump(paper, allow_unicode=True))
    monkeypatch.setattr(tables, "PAPER_DIR", tmp_path / "paper")
    tables.t2i_tables(_scalars(FINALS), tmp_path / "t", tmp_path / "f", missing=0, reps=100, seed=0)
    table = (tmp_path / "t" / "t2i_alignment.md").read_text()
    assert table.count("0.35 ± 0.01") == 1
    assert "reported numbers (Table 1 of the paper), for reference only" in table
    assert "not available" not in table


def _train_rows(algo: str, seed: int, unet_per_epoch: float, task: str = "t2i/a-v0") -> list[dict]:
    run = f"{algo}--{task}--seed{seed}"
    rows = []
    for step in (1, 2, 3):
        for metric, value in (("reward_mean", 0.4 + 0.01 * step + 0.001 * seed),
                              ("budget/reward_queries", 8.0 * step),
                              ("budget/unet_evals", unet_per_epoch * step + seed)):
            rows.append({"run_id": run, "task_id": task, "seed": seed, "algorithm": algo, "step": step,
                         "split": "train", "metric": metric, "value": value})
    return rows


def test_reward_and_eval_curves_are_drawn_against_unet_evaluations(tmp_path, figures):
    """x = the UNet evaluations spent by each epoch, mean over seeds (they may differ by seed); one line per
    (task, method); the eval curve's csv carries them beside the reward queries."""
    rows = [r for algo, per in (("ddpo", 64.0), ("b2diffurl", 100.0)) for seed in (0, 1)
            for r in _train_rows(algo, seed, per)]
    for algo in ("ddpo", "b2diffurl"):
        for seed in (0, 1):
            for step, value in ((0, 0.40), (2, 0.41 + seed * 0.01), (3, 0.43)):
                rows.append({"run_id": f"{algo}--t2i/a-v0--seed{seed}", "task_id": "t2i/a-v0", "seed": seed,
                             "algorithm": algo, "step": step, "split": "eval", "metric": "train/clipscore",
                             "value": value})
    scalars = pd.DataFrame(rows)
    paths = tables.t2i_reward_curve(scalars, tmp_path)
    assert [p.name for p in paths] == ["t2i_reward_vs_queries.png", "t2i_reward_vs_unet_evals.png"]
    ax = figures["t2i_reward_vs_unet_evals.png"].axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"DDPO: a", "B²-DiffuRL: a"}
    assert list(lines["B²-DiffuRL: a"].get_xdata()) == [100.5, 200.5, 300.5]
    assert "UNet evaluations" in ax.get_xlabel() and "not a confidence interval" in ax.get_title()
    (tmp_path / "t").mkdir()
    paths = tables.t2i_eval_curve(scalars, tmp_path / "t", tmp_path)
    assert [p.name for p in paths] == ["t2i_eval_curve.csv", "t2i_eval_vs_queries.png",
                                       "t2i_eval_vs_unet_evals.png"]
    curve = pd.read_csv(paths[0])
    assert list(curve.columns[curve.columns.get_loc("reward_queries") + 1:][:1]) == ["unet_evals"]
    ddpo = curve[curve.algorithm == "ddpo"].set_index("step")
    assert ddpo.unet_evals.to_list() == [0.0, 128.5, 192.5] and ddpo.reward_queries.to_list() == [0, 16, 24]


def test_curve_lines_keep_one_colour_per_method_and_one_dash_per_set(tmp_path, figures):
    """The cpu grid draws 12 (set, method) lines on one axis, more than matplotlib's 10-colour cycle: each
    method keeps one colour on every set, each set one dash pattern and marker, so no two lines look alike."""
    rows = []
    for algo in ("ddpo", "ddpo_shuffled", "b2diffurl"):
        for task in (f"t2i/{s}-v0" for s in "pqrs"):
            for seed in (0, 1):
                rows += _train_rows(algo, seed, 64.0, task)
                rows += [{"run_id": f"{algo}--{task}--seed{seed}", "task_id": task, "seed": seed, "algorithm": algo,
                          "step": step, "split": "eval", "metric": "train/clipscore", "value": value}
                         for step, value in ((0, 0.40), (2, 0.41), (3, 0.42 + 0.01 * seed))]
                if task == "t2i/s-v0":                 # a panel with one set's lines styles them as the others do
                    rows += [{**r, "metric": "test/clipscore"} for r in rows[-3:]]
    scalars = pd.DataFrame(rows)
    (tmp_path / "t").mkdir()
    tables.t2i_eval_curve(scalars, tmp_path / "t", tmp_path)
    def looks(ax):
        return {line.get_label(): (line.get_color(), line.get_linestyle(), line.get_marker())
                for line in ax.get_lines() if not line.get_label().startswith("_")}

    look = looks(figures["t2i_eval_vs_queries.png"].axes[0])
    assert len(look) == 12 and len(set(look.values())) == 12
    test_panel = looks(figures["t2i_eval_vs_queries.png"].axes[2])
    assert len(test_panel) == 3 and all(look[label] == style for label, style in test_panel.items())
    for algo in ("DDPO", "B²-DiffuRL", "DDPO, shuffled advantages"):
        assert len({look[f"{algo}: {s}"][0] for s in "pqrs"}) == 1
    for s in "pqrs":
        assert len({look[f"{a}: {s}"][1:] for a in ("DDPO", "B²-DiffuRL")}) == 1
    assert len({look[f"DDPO: {s}"][1:] for s in "pqrs"}) == 4


def _stored_run(runs: Path, run_id: str, base: np.ndarray, final: np.ndarray) -> None:
    from PIL import Image

    (runs / run_id).mkdir(parents=True)
    Image.fromarray(base).save(runs / run_id / "samples_step00000.png")
    Image.fromarray(final).save(runs / run_id / "samples_step00004.png")


def test_side_by_side_grid_puts_every_method_on_the_same_noise_beside_the_base(tmp_path, figures):
    """Per set: base | DDPO | B²-DiffuRL (fixed order, not the run order); a method whose own base images
    differ (other noise) is left out and named."""
    from suites.t2i.task import _grid

    import torch

    prompts = {"train": ["p0", "p1"], "test": ["q0"]}
    per = 2

    def grid(seed: int) -> np.ndarray:
        g = torch.Generator().manual_seed(seed)
        return np.concatenate([_grid(torch.rand(len(p) * per, 3, 8, 8, generator=g), len(p), per)
                               for p in prompts.values()])

    algos = {"b2diffurl": 1, "ddpo": 2, "b2diffurl_neither": 3}     # final grids' seeds
    rows = []
    for algo, seed in algos.items():
        run = f"{algo}--t2i/a-v0--seed0"
        _stored_run(tmp_path / "runs", run, grid(99 if algo == "b2diffurl_neither" else 0), grid(seed))
        rows += [{"run_id": run, "task_id": "t2i/a-v0", "step": s, "split": split, "prompt": p, "image": i}
                 for s in (0, 4) for split, ps in prompts.items() for p in ps for i in range(per)]
    final = pd.DataFrame([{"run_id": f"{a}--t2i/a-v0--seed0", "task_id": "t2i/a-v0", "algorithm": a,
                           "seed": 0} for a in algos])
    paths = tables.t2i_side_by_side_grids(final, pd.DataFrame(rows), tmp_path / "runs", tmp_path / "f")
    assert [p.name for p in paths] == ["t2i_samples_a_side_by_side.png"]
    fig = figures["t2i_samples_a_side_by_side.png"]
    titles = [ax.get_title() for ax in fig.axes]
    columns = ("base model (before fine-tuning)", "DDPO, final (step 4)", "B²-DiffuRL, final (step 4)")
    assert titles == [f"{split} prompts: {t}" for split in ("TRAIN", "TEST") for t in columns]
    suptitle = " ".join(fig._suptitle.get_text().split())                  # wrapped to the figure's width
    assert "Left out" in suptitle and "B²-DiffuRL, neither" in suptitle
    assert fig.get_size_inches()[0] == pytest.approx(tables.t2i_samples_width(3))
    fig.canvas.draw()
    extent = fig._suptitle.get_window_extent()
    assert 0 <= extent.x0 and extent.x1 <= fig.bbox.width                  # the title is not cut off
    shown = fig.axes[1].get_images()[0].get_array()                 # DDPO's train block: its final images
    cells = tables._grid_cells(grid(2), 3, per)
    assert np.array_equal(np.asarray(shown), tables._compose(cells[:2]))


def test_each_ablation_is_set_beside_its_full_method_and_beside_ddpo(tmp_path, figures):
    """B²-DiffuRL's ablations get '<ablation> − B²-DiffuRL' (paired by seed, in the Holm family) as well as
    '− DDPO'; without B²-DiffuRL's runs the first is absent."""
    finals = {**FINALS, ("b2diffurl_no_branch", "t2i/a-v0"): [0.46, 0.46, 0.49],
              ("b2diffurl_no_branch", "t2i/b-v0"): [0.51, 0.50, 0.53]}
    tables.t2i_tables(_scalars(finals), tmp_path / "t", tmp_path / "f", missing=0, reps=100, seed=0)
    raw = pd.read_csv(tmp_path / "t" / "t2i_alignment.csv")
    mine = raw[raw.algorithm == "b2diffurl_no_branch"].set_index(["against", "task"])
    a = np.array([0.46, 0.46, 0.49]) - np.array([0.48, 0.49, 0.50])
    assert mine.loc[("b2diffurl", "t2i/a-v0"), "delta"] == pytest.approx(a.mean())
    assert mine.loc[("b2diffurl", "t2i/a-v0"), "p"] == pytest.approx(sps.ttest_1samp(a, 0).pvalue)
    assert {"base", "ddpo", "b2diffurl"} == set(mine.index.get_level_values(0))
    tests = pd.read_csv(tmp_path / "t" / "t2i_alignment_tests.csv")
    assert "B²-DiffuRL, no branch − B²-DiffuRL, all-sets train clipscore" in set(tests.difference)
    assert len(tests) == len(raw) == 3 * 8        # 4 methods − base, − control, 2 − DDPO, 1 − B²-DiffuRL
    table = (tmp_path / "t" / "t2i_alignment.md").read_text()
    assert "B²-DiffuRL, no branch − B²-DiffuRL" in table and "one part switched off" in table
    alone = {k: v for k, v in finals.items() if k[0] != "b2diffurl"}
    tables.t2i_tables(_scalars(alone), tmp_path / "u", tmp_path / "g", missing=0, reps=100, seed=0)
    assert set(pd.read_csv(tmp_path / "u" / "t2i_alignment.csv").against) == {"base", "ddpo_shuffled", "ddpo"}
