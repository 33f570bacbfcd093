"""The t2i suite end to end: DDPO at the tiny size through the real CLI and Ray Tune on the committed
shapes model and reward model (evaluation before and after fine-tuning, tables, figures, resume), the
DDPO loop's invariants (t2i.md §6.5 items 2 and 8) on the same model, and the one-line errors."""
import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fixtures import MemoryWriter

import fixtures


b2fb = functools.partial(fixtures.b2fb, timeout=900)


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """One tiny t2i bench (DDPO, B²-DiffuRL and its 'neither' ablation, 1 seed, one prompt set) through the
    CLI, shared by the tests below: its results directory's parent.  One trial at a time, so one Ray worker
    runs all three (the second and third in a reused process)."""
    root = tmp_path_factory.mktemp("t2i_tiny")
    first = b2fb(root, "run", "--suite", "t2i", "--size", "tiny", "--max-concurrent", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    return root


def test_tiny_t2i_bench_fine_tunes_evaluates_and_tabulates(tiny_bench):
    tmp_path = tiny_bench
    runs = sorted((tmp_path / "results" / "t2i" / "runs").iterdir())
    assert [r.name.split("--")[0] for r in runs] == ["b2diffurl", "b2diffurl_neither", "ddpo"]
    run = runs[2]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert any(k.startswith("model:") for k in manifest["data_hashes"])
    assert any(k.startswith("reward:") for k in manifest["data_hashes"])
    samples = pd.read_parquet(run / "samples.parquet")
    # base (step 0) and final (step 2) evaluations, 2 prompts x 2 images per split
    assert sorted(samples.step.unique()) == [0, 2]
    assert len(samples) == 2 * 2 * 2 * 2
    assert samples.clipscore.between(-1, 1).all() and samples.oracle.between(0, 1).all()
    assert set(samples.oracle_binary.unique()) <= {0.0, 1.0}
    scalars = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    train = {r["metric"]: r["value"] for r in scalars if r["split"] == "train" and r["step"] == 2}
    # budget: 2 epochs x 4 trajectories x 4 steps sampled + as many trained; 8 images scored
    assert train["budget/reward_queries"] == 8
    assert train["budget/trained_timesteps"] == 2 * 4 * 4
    assert train["budget/unet_evals"] == 2 * 4 * 4 * 2
    # one optimizer step per train batch of 2 (gradient accumulation over the 4 timesteps)
    assert train["budget/optimizer_steps"] == 2 * 2
    assert (run / "samples_step00000.png").is_file() and (run / "samples_step00002.png").is_file()
    assert (run / "lora.safetensors").is_file()
    table = (tmp_path / "results" / "t2i" / "tables" / "tiny" / "t2i_alignment.md").read_text()
    for name in ("base", "DDPO", "DDPO − base", "B²-DiffuRL − base", "B²-DiffuRL, neither − base", "clipscore",
                 "oracle (graded)", "train", "test"):
        assert name in table
    for b2 in runs[:2]:                              # B² and an ablation beside DDPO, the same protocol
        assert json.loads((b2 / "manifest.json").read_text())["status"] == "done"
        assert sorted(pd.read_parquet(b2 / "samples.parquet").step.unique()) == [0, 3]
        assert (b2 / "lora.safetensors").is_file()
    figures = tmp_path / "results" / "t2i" / "figures" / "tiny"
    assert (figures / "t2i_reward_vs_queries.png").is_file()
    assert (figures / "t2i_samples_shapes-composition_ddpo.png").is_file()
    again = b2fb(tmp_path, "run", "--suite", "t2i", "--size", "tiny")
    assert again.returncode == 0 and "(3 complete, 0 to run)" in again.stdout


def _runs(root: Path) -> dict[str, Path]:
    return {r.name.split("--")[0]: r for r in (root / "results" / "t2i" / "runs").iterdir()}


def _final(run: Path, metric: str) -> float:
    """A run's last evaluation of `metric`, read from its own scalars.jsonl."""
    rows = [json.loads(line) for line in (run / "scalars.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "eval" and r["metric"] == metric]
    return max(evals, key=lambda r: r["step"])["value"]


def _md_table(text: str) -> pd.DataFrame:
    """The table of a t2i_alignment.md, as text cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return pd.DataFrame(cells[2:], columns=cells[0])


_FRESH_TRIAL = """
import json, sys
from pathlib import Path
from benchmarks.config import load_experiment
from benchmarks.results import execute_trial
trial = next(t for t in load_experiment("t2i", "tiny").trials() if t.run_id == sys.argv[1])
print(execute_trial(trial, Path(sys.argv[2]), threads=1))
"""


def test_a_reused_worker_reproduces_fresh_processes_byte_for_byte(tiny_bench, tmp_path):
    """The orchestrator reuses Ray workers (reuse_actors) to save each trial its imports.  The trials that a
    reused worker ran give the same scalars and samples, to the byte, as each trial alone in a fresh
    process: nothing a trial leaves in the process (the prompt encoder's cache, torch's RNG) reaches the
    next one."""
    manifests = {a: json.loads((r / "manifest.json").read_text()) for a, r in _runs(tiny_bench).items()}
    order = sorted(manifests, key=lambda a: manifests[a]["platform"]["trial_in_process"])
    assert [manifests[a]["platform"]["trial_in_process"] for a in order] == [1, 2, 3]
    for algo in order[1:]:
        run_id = manifests[algo]["run_id"]
        fresh = subprocess.run([sys.executable, "-c", _FRESH_TRIAL, run_id, str(tmp_path)], cwd=fixtures.REPO,
                               env=fixtures.cli_env(), capture_output=True, text=True, timeout=600)
        assert fresh.stdout.split()[-1:] == ["done"], fresh.stderr[-3000:]
        alone = json.loads((tmp_path / "t2i" / "runs" / run_id / "manifest.json").read_text())
        assert alone["platform"]["trial_in_process"] == 1
        assert alone["result_sha256"] == manifests[algo]["result_sha256"], algo


def test_tiny_t2i_table_sets_each_method_beside_ddpo_paired_by_seed(tiny_bench):
    """'<method> − DDPO' for B²-DiffuRL and its ablation (not for DDPO itself): seed k minus DDPO's seed k,
    in the table, the raw csv (against = ddpo) and the tested family, with the footer naming the pairing."""
    from benchmarks.tables import fmt_signed

    tables = tiny_bench / "results" / "t2i" / "tables" / "tiny"
    table = (tables / "t2i_alignment.md").read_text()
    frame = _md_table(table)
    assert {"B²-DiffuRL − DDPO", "B²-DiffuRL, neither − DDPO"} <= set(frame.columns)
    assert "DDPO − DDPO" not in frame.columns and "DDPO − control" not in frame.columns  # no control ran
    runs = _runs(tiny_bench)
    expected = _final(runs["b2diffurl"], "train/clipscore") - _final(runs["ddpo"], "train/clipscore")
    raw = pd.read_csv(tables / "t2i_alignment.csv")
    versus = raw[raw.against == "ddpo"].set_index(["algorithm", "split", "metric"])
    assert set(versus.index.get_level_values(0)) == {"b2diffurl", "b2diffurl_neither"}
    assert versus.loc[("b2diffurl", "train", "clipscore"), "delta"] == pytest.approx(expected, abs=1e-12)
    cell = frame[(frame.split == "train") & (frame.metric == "clipscore")]["B²-DiffuRL − DDPO"].item()
    assert cell == fmt_signed(expected, float("nan"), float("nan"), 4)  # one seed: no interval
    tests = pd.read_csv(tables / "t2i_alignment_tests.csv").set_index("difference")
    label = "B²-DiffuRL − DDPO, shapes-composition train clipscore"
    assert tests.loc[label, "estimate"] == pytest.approx(expected)
    assert len(tests) == len(raw)  # every printed difference is in the one Holm family
    same = "'B²-DiffuRL − DDPO', 'B²-DiffuRL, neither − DDPO', 'B²-DiffuRL, neither − B²-DiffuRL': the same noise"
    assert same in table and "B²-DiffuRL, neither − B²-DiffuRL" in frame.columns   # the ablation beside its method


def test_tiny_t2i_table_has_the_papers_columns_empty_and_says_why(tiny_bench):
    table = (tiny_bench / "results" / "t2i" / "tables" / "tiny" / "t2i_alignment.md").read_text()
    frame = _md_table(table)
    for column in ("DDPO (paper)", "B²-DiffuRL (paper)"):
        assert set(frame[column]) == {"–"}
    assert "the B²-DiffuRL paper's numbers are not available to this project" in table
    assert "no value is invented" in table and "Stable Diffusion v1.4" in table and "ViT-H-14" in table


def test_tiny_t2i_methods_share_the_base_models_evaluation_noise(tiny_bench):
    """Seed k's evaluation noise depends on (eval_seed, seed, split) only, and DDPO and B²-DiffuRL sample it
    with the same DDIM steps, eta and CFG at the tiny size: their base models (LoRA at zero) draw the same
    images.  clipscore may differ in the last float32 bit: B²-DiffuRL embeds every prompt once at its start
    (core.embed_prompts_once) and caches it, DDPO embeds the evaluation prompts in other encoder batches."""
    from PIL import Image

    runs = _runs(tiny_bench)
    grids = {a: np.asarray(Image.open(r / "samples_step00000.png")) for a, r in runs.items()}
    assert all(np.array_equal(g, grids["ddpo"]) for g in grids.values())
    base = {a: pd.read_parquet(r / "samples.parquet").query("step == 0").reset_index(drop=True)
            for a, r in runs.items()}
    exact = ["split", "prompt", "image", "oracle", "oracle_binary", "diversity_pixel_rms"]
    for algo in ("b2diffurl", "b2diffurl_neither"):
        assert base[algo][exact].equals(base["ddpo"][exact])
        assert np.allclose(base[algo].clipscore, base["ddpo"].clipscore, rtol=0, atol=1e-6)


def test_tiny_t2i_figures_show_every_method_side_by_side_and_against_unet_evaluations(tiny_bench):
    from PIL import Image

    from benchmarks.tables import FIGURE_DPI, t2i_samples_width

    figures = tiny_bench / "results" / "t2i" / "figures" / "tiny"
    assert (figures / "t2i_reward_vs_unet_evals.png").is_file()
    side = Image.open(figures / "t2i_samples_shapes-composition_side_by_side.png")
    assert side.size[0] == round(FIGURE_DPI * t2i_samples_width(1 + 3))  # base | DDPO | B² | B², neither
    for algo in ("ddpo", "b2diffurl", "b2diffurl_neither"):             # the per-method figures stay
        assert (figures / f"t2i_samples_shapes-composition_{algo}.png").is_file()


@pytest.mark.parametrize("args, expected", [
    (["--set", "task.prompt_set=shapes-v0/colours"], "unknown prompt set 'shapes-v0/colours'"),
    (["--set", "task.model_dir=/nonexistent/sd"], "/nonexistent/sd"),
    (["--set", "task.reward_checkpoint=/nonexistent/clip"], "/nonexistent/clip"),
    (["--set", "task.reward=clipscor"], "clipscore"),
])
def test_bad_t2i_input_is_one_line(tmp_path, args, expected):
    out = b2fb(tmp_path, "run", "--suite", "t2i", "--size", "tiny", *args)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("files, expected", [
    ({"mine/animals_train.txt": "a red circle\na red circle\n", "mine/animals_test.txt": "a blue square\n"},
     "animals_train.txt:2: duplicate prompt 'a red circle'"),
    ({"mine/animals_train.txt": "# only a comment\n", "mine/animals_test.txt": "a blue square\n"},
     "the prompt set is empty"),
    ({"mine/animals_train.json": '["a red circle", 3]', "mine/animals_test.txt": "a blue square\n"},
     "item 1 is 3, not a string"),
    ({"mine/animals_train.txt": "a red circle\n"}, "has no split 'test'"),
    ({}, "is not a directory"),
])
def test_a_malformed_user_prompt_file_is_one_line(tmp_path, files, expected):
    """Users bring their own prompts with `--set task.prompt_dir=DIR --set task.prompt_set=GROUP/SET`;
    a bad file is named with its line, before any trial starts."""
    prompt_dir = tmp_path / "prompts"
    for name, text in files.items():
        (prompt_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (prompt_dir / name).write_text(text)
    out = b2fb(tmp_path, "run", "--suite", "t2i", "--size", "tiny", "--set", f"task.prompt_dir={prompt_dir}",
               "--set", "task.prompt_set=mine/animals")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "results").exists()


def test_user_prompt_dir_is_used_by_the_task(tmp_path):
    from suites import registry
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "pairs_train.txt").write_text("a red circle\n# comment\ntwo blue squares\n")
    (tmp_path / "mine" / "pairs_test.txt").write_text("a green triangle\n")
    task = registry.get("t2i/shapes-composition-v0").with_kwargs(prompt_dir=str(tmp_path),
                                                                 prompt_set="mine/pairs").make()
    assert task.train_prompts == ("a red circle", "two blue squares")
    assert task.test_prompts == ("a green triangle",)


def test_paper_size_without_a_stable_diffusion_folder_is_one_line(tmp_path):
    out = b2fb(tmp_path, "run", "--suite", "t2i", "--size", "paper", "--seeds", "1")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "stable-diffusion" in lines[0].lower()


# ---- the DDPO loop on the committed shapes model, no Ray ------------------------------------------------
def test_ddpo_first_micro_step_is_on_policy_and_steps_follow_accumulation():
    """§6.5 item 2: before any update the recomputed log-probs equal the sampled ones (ratio 1,
    approx_kl 0, clipfrac 0 in fp32); item 8: one optimizer step per accumulation group."""
    from algorithms.diffusion import ddpo
    from suites import registry

    task = registry.get("t2i/shapes-composition-v0").with_kwargs(
        eval_images_per_prompt=1, eval_max_prompts=1).make()
    cfg = ddpo.Config(num_epochs=1, sample_num_steps=3, sample_batch_size=4, sample_num_batches_per_epoch=1,
                      train_batch_size=2, gradient_accumulation_steps=2, stat_min_count=2, learning_rate=0.0,
                      adam_weight_decay=0.0)
    torch.set_num_threads(2)
    writer = MemoryWriter()
    ddpo.run(task, cfg, writer)
    train = {r["metric"]: r["value"] for r in writer.rows if r["split"] == "train"}
    # lr 0: the policy never changes, so every recomputed log-prob equals the sampled one
    assert train["ratio"] == 1.0 and train["approx_kl"] == 0.0 and train["clipfrac"] == 0.0
    # 4 trajectories / batch 2 = 2 micro-batches x 3 timesteps = 6 micro-steps; group = 2 x 3 -> 1 step
    assert train["budget/optimizer_steps"] == 1
    assert train["budget/trained_timesteps"] == 4 * 3


def test_ddpo_config_must_end_every_epoch_on_an_optimizer_step():
    from algorithms.diffusion import ddpo
    from suites.errors import UserError

    with pytest.raises(UserError, match="multiple of train_batch_size x gradient_accumulation_steps"):
        ddpo.Config(sample_batch_size=3, sample_num_batches_per_epoch=1, train_batch_size=2).validate()


def test_ddpo_draws_each_prompt_k_times_in_a_row_and_k_1_is_the_reference_stream():
    from algorithms.diffusion import ddpo
    from suites.errors import UserError

    prompts = [f"p{i}" for i in range(40)]
    cfg = ddpo.Config(sample_batch_size=16, sample_images_per_prompt=8)
    drawn = ddpo.draw_prompts(prompts, cfg, torch.Generator().manual_seed(0))
    assert len(drawn) == 16 and drawn[:8] == [drawn[0]] * 8 and drawn[8:] == [drawn[8]] * 8
    # k = 1: exactly ddpo-pytorch's draw, one uniform prompt per image from the same generator stream
    one = ddpo.draw_prompts(prompts, ddpo.Config(sample_batch_size=16), torch.Generator().manual_seed(0))
    expected = torch.randint(40, (16,), generator=torch.Generator().manual_seed(0)).tolist()
    assert one == [prompts[i] for i in expected]
    with pytest.raises(UserError, match="multiple of sample_images_per_prompt"):
        ddpo.Config(sample_batch_size=16, sample_images_per_prompt=3).validate()


def test_the_shuffled_advantage_control_trains_on_a_permutation_of_ddpos_advantages(monkeypatch):
    """ddpo_shuffled: the same epoch (prompts, images, rewards, advantages) as DDPO, but the advantages
    reach the trajectories in a random order."""
    from algorithms import registry as algorithm_registry
    from algorithms.diffusion import core, ddpo, ddpo_shuffled
    from suites import registry

    calls = []
    make_transitions = core.make_transitions

    def spy(traj, advantages):
        calls.append((list(traj.prompts), advantages.clone()))
        return make_transitions(traj, advantages)

    monkeypatch.setattr(core, "make_transitions", spy)
    cfg = ddpo.Config(num_epochs=1, sample_num_steps=2, sample_batch_size=8, sample_num_batches_per_epoch=1,
                      train_batch_size=8, stat_min_count=2, learning_rate=0.0)
    torch.set_num_threads(2)
    for module in (ddpo, ddpo_shuffled):
        task = registry.get("t2i/shapes-composition-v0").with_kwargs(eval_images_per_prompt=1, eval_max_prompts=1).make()
        module.run(task, cfg, MemoryWriter(seed=3))
    (prompts_a, adv_a), (prompts_b, adv_b) = calls
    assert prompts_a == prompts_b                               # the same samples ...
    assert torch.equal(adv_a.sort().values, adv_b.sort().values)  # ... the same advantages ...
    assert not torch.equal(adv_a, adv_b)                        # ... in another order
    assert "ddpo_shuffled" in {a.name for a in algorithm_registry.for_suite("t2i")}


@pytest.mark.parametrize("grid, algorithms, n_trials", [("control", {"ddpo", "ddpo_shuffled"}, 24),
                                                        ("grid640", {"ddpo"}, 12), ("grid1920", {"ddpo"}, 12),
                                                        ("shapes32", {"ddpo"}, 12)])
def test_diagnostic_grid_files_reproduce_their_committed_runs(grid, algorithms, n_trials):
    """benchmarks/configs/t2i_<grid>.yaml pins an earlier cpu default that now lives as a diagnostic: its
    trials are exactly the committed runs under results/t2i/diagnostics/cpu/<grid> (a changed setting
    would change their ids), and it shares the default grid's tasks and seeds."""
    from benchmarks.config import load_experiment
    from benchmarks.results import is_complete

    root = Path(__file__).resolve().parents[1]
    pinned = load_experiment("t2i", "cpu", root / "benchmarks" / "configs" / f"t2i_{grid}.yaml")
    trials = pinned.trials()
    assert len(trials) == n_trials and {t.algorithm for t in trials} == algorithms
    assert all(is_complete(root / "results" / "t2i" / "diagnostics" / "cpu" / grid, t) for t in trials)
    default = load_experiment("t2i", "cpu")
    assert set(default.algorithms) == {"ddpo", "ddpo_shuffled", "b2diffurl"} and len(default.trials()) == 36
    assert [t for t, _ in default.tasks] == [t for t, _ in pinned.tasks] and default.seeds == pinned.seeds


def test_the_32_grid_spends_more_queries_than_the_grids_it_replaced():
    """The 32 x 32 grid (the cpu default until issue 17) differs from the 640-query grid only in the named
    deviations of t2i_shapes32.yaml: 10 DDIM steps with half of them trained, 4 optimizer steps an epoch, 3x
    the epochs and lr 1e-3; from the 1920-query grid it replaced only in the learning rate."""
    from benchmarks.config import load_experiment

    configs = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
    old = load_experiment("t2i", "cpu", configs / "t2i_grid640.yaml").algorithms["ddpo"]
    new = load_experiment("t2i", "cpu", configs / "t2i_shapes32.yaml").algorithms["ddpo"]
    assert new == dataclasses.replace(old, num_epochs=3 * old.num_epochs, eval_every=old.num_epochs,
                                      sample_num_steps=10, timestep_fraction=0.5,
                                      gradient_accumulation_steps=4, checkpoint_every=5, learning_rate=1e-3)
    grid1920 = load_experiment("t2i", "cpu", configs / "t2i_grid1920.yaml").algorithms["ddpo"]
    assert new == dataclasses.replace(grid1920, learning_rate=1e-3) and grid1920.learning_rate == 3e-3
    per_epoch = new.sample_batch_size * new.sample_num_batches_per_epoch
    assert per_epoch // (new.train_batch_size * new.gradient_accumulation_steps) == 4
    assert new.num_train_timesteps == 5


def test_the_cpu_default_is_the_16_grid_with_its_named_deviations_and_equal_queries():
    """t2i.yaml's cpu size (issue 17) changes the 32 x 32 grid's DDPO only where its header names a deviation
    (the 16 x 16 base model, 70 epochs evaluated every 35), runs the no-signal control with DDPO's exact
    config, and gives B²-DiffuRL the same reward-query budget a run (2240)."""
    from benchmarks.config import load_experiment

    configs = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
    old = load_experiment("t2i", "cpu", configs / "t2i_shapes32.yaml")
    new = load_experiment("t2i", "cpu")
    ddpo = new.algorithms["ddpo"]
    assert ddpo == dataclasses.replace(old.algorithms["ddpo"], num_epochs=70, eval_every=35)
    assert new.algorithms["ddpo_shuffled"] == ddpo
    assert [t for t, _ in new.tasks] == [t for t, _ in old.tasks] and new.seeds == old.seeds
    for (_, k_new), (_, k_old) in zip(new.tasks, old.tasks):
        assert {**k_new, "model_dir": None} == k_old and k_old["model_dir"] is None  # 32 x 32: the default model
        assert Path(k_new["model_dir"]).name == "shapes16-base-v0"
    b2 = new.algorithms["b2diffurl"]
    ddpo_queries = ddpo.num_epochs * ddpo.sample_batch_size * ddpo.sample_num_batches_per_epoch
    assert ddpo_queries == b2.num_stages * b2.queries_per_stage == 2240
    assert b2.sample_num_steps == ddpo.sample_num_steps == 10 and b2.guidance_scale == ddpo.guidance_scale


def test_the_t2i_diagnostics_default_to_the_32_grid_they_describe_at_the_cpu_size():
    """diagnose_t2i and gradient_snr_t2i read t2i_shapes32.yaml at --size cpu unless given --config, so their
    documented commands regenerate the 32 x 32 files in results/t2i/diagnostics/cpu/ and never overwrite them
    with the 16 x 16 default's; other sizes use the suite's grid file."""
    from benchmarks.diagnose_t2i import SHAPES32_CONFIG, default_grid

    assert default_grid("cpu", None) == SHAPES32_CONFIG and SHAPES32_CONFIG.name == "t2i_shapes32.yaml"
    assert default_grid("tiny", None) is None and default_grid("cpu", Path("x.yaml")) == Path("x.yaml")


def test_the_t2i_diagnostics_read_and_write_where_their_grid_lives():
    """diagnostic_paths, shared by diagnose_t2i and gradient_snr_t2i: the 32 x 32 grid reads its own runs and
    writes results/t2i/diagnostics/cpu; other sizes read results/ and write their own size's folder; a
    --results-dir holds both; another grid without --out is a UserError, never a write over committed files."""
    from benchmarks.diagnose_t2i import SHAPES32_CONFIG, SHAPES32_RESULTS, diagnostic_paths
    from suites.errors import UserError

    assert diagnostic_paths("cpu", None, None, None) == (
        SHAPES32_CONFIG, SHAPES32_RESULTS, Path("results/t2i/diagnostics/cpu"))
    assert diagnostic_paths("tiny", None, None, None) == (None, Path("results"), Path("results/t2i/diagnostics/tiny"))
    assert diagnostic_paths("tiny", None, "r", None) == (None, Path("r"), Path("r/t2i/diagnostics/tiny"))
    assert diagnostic_paths("cpu", Path("g.yaml"), None, "o") == (Path("g.yaml"), Path("results"), Path("o"))
    with pytest.raises(UserError, match="also give --out"):
        diagnostic_paths("cpu", Path("g.yaml"), "r", None)


def test_gradient_snr_with_another_grid_needs_its_own_out(capsys):
    from benchmarks import gradient_snr_t2i

    assert gradient_snr_t2i.main(["--config", "benchmarks/configs/t2i.yaml", "--groups", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "also give --out" in err[0]
