"""B²-DiffuRL (algorithms/diffusion/b2diffurl.py) against research/t2i.md §6.5 items 5-9 and issue 15's
acceptance: the stage schedule, branch sampling inside a stage, the selection rule and the history z-score
on hand-made numbers, accumulation, state carried across stages, the on-policy first ratio, resume, the
ablations, the paper-size stage loop on a tiny random Stable Diffusion folder, and bad configs.

Models are the committed shapes model or tiny diffusers networks built from configs (no downloads, no mocks)."""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import signal
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import torch

import fixtures
from fixtures import MemoryWriter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from algorithms.diffusion import b2diffurl, core  # noqa: E402
from suites.errors import UserError  # noqa: E402

b2fb = functools.partial(fixtures.b2fb, timeout=900)

TINY = dict(num_stages=3, sample_num_steps=4, split_step_left=2, split_step_right=4, num_branches=3,
            sample_batch_size=2, sample_num_batches_per_stage=2, history_stages=2, train_batch_size=2,
            gradient_accumulation_steps=3, num_epochs_per_stage=2, learning_rate=1e-3, reward_batch_size=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _task():
    from suites import registry
    return registry.get("t2i/shapes-composition-v0").with_kwargs(eval_images_per_prompt=1, eval_max_prompts=1,
                                                                 eval_batch_size=8).make()


class CheckpointLog(MemoryWriter):
    """A MemoryWriter that keeps every checkpoint (by stage) and can resume from a chosen one."""

    def __init__(self, seed: int = 0, resume_from: dict | None = None):
        super().__init__(seed)
        self.checkpoints, self.resume_from = {}, resume_from

    def save_checkpoint(self, state, step):
        self.checkpoints[step] = copy.deepcopy(state)          # optimizer.state_dict() holds live tensors
        self.state = self.checkpoints[step]

    def load_checkpoint(self):
        return self.resume_from


def _train_rows(writer, split="train") -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for r in writer.rows:
        if r["split"] == split:
            out.setdefault(r["step"], {})[r["metric"]] = r["value"]
    return out


# ---- §6.5 item 5: the backward progressive schedule ----------------------------------------------------

def test_schedule_for_14_20_100_is_the_release_table():
    """t2i.md §3.3: s = 14 for stages 0-14, 15 for 15-28, 16 for 29-42, 17 for 43-57, 18 for 58-71,
    19 for 72-85, 20 for 86-99."""
    schedule = b2diffurl.stage_schedule(14, 20, 100)
    table = {14: (0, 14), 15: (15, 28), 16: (29, 42), 17: (43, 57), 18: (58, 71), 19: (72, 85), 20: (86, 99)}
    assert len(schedule) == 100
    for s, (first, last) in table.items():
        assert [i for i, v in enumerate(schedule) if v == s] == list(range(first, last + 1))
    cfg = b2diffurl.Config()
    assert [b2diffurl.trained_steps(cfg, i) for i in (0, 14, 15, 99)] == [14, 14, 15, 20]
    no_backward = dataclasses.replace(cfg, backward=False)
    assert {b2diffurl.trained_steps(no_backward, i) for i in range(100)} == {20}
    assert b2diffurl.stage_schedule(7, 10, 12) == [7, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10, 10]


# ---- §6.5 item 7: selection on hand-made z-scores, and the history z-score ------------------------------

def test_selection_keeps_each_groups_extremes_past_the_thresholds():
    # 2 batches x 2 prompt slots x K = 3: group (b, j) = rows (b*3 + k)*2 + j
    groups = core.branch_group_indices(2, 3, 2)
    z = np.zeros(12)
    z[groups[0].numpy()] = [0.5, 0.2, -0.6]       # best exactly at +0.5 (kept), worst -0.6 (kept)
    z[groups[1].numpy()] = [0.4, -0.5, 0.1]       # best 0.4 < 0.5; worst exactly -0.5 is not < -0.5: none
    z[groups[2].numpy()] = [2.0, 2.0, 1.0]        # ties: the first index; worst 1.0 is not negative
    z[groups[3].numpy()] = [-3.0, -1.0, -3.0]     # only a negative, the first of the tied minima
    rows, positive = b2diffurl.select_extremes(z, groups, 2, 0.5, -0.5)
    g = groups.tolist()
    # the release's order: prompt slot 0 (batches 0, 1), then slot 1; positive before negative
    assert rows == [g[0][0], g[0][2], g[2][0], g[3][0]] and positive == [True, False, True, False]
    # K = 1 (the no-branch ablation): a threshold filter over single samples
    single = core.branch_group_indices(1, 1, 4)
    rows, positive = b2diffurl.select_extremes(np.array([0.7, -0.2, -0.9, 0.5]), single, 4, 0.5, -0.5)
    assert rows == [0, 2, 3] and positive == [True, False, True]


def test_history_z_score_pools_the_last_h_stages_with_the_unbiased_std():
    norm = core.HistoryZScore(2)
    stage0 = norm.update(["a", "a", "b", "b"], [1.0, 3.0, 0.0, 4.0])
    assert np.allclose(stage0, [(1 - 2) / (np.std([1, 3], ddof=1) + 1e-8), (3 - 2) / (np.sqrt(2) + 1e-8),
                                -2 / (np.sqrt(8) + 1e-8), 2 / (np.sqrt(8) + 1e-8)])
    stage1 = norm.update(["a", "c"], [5.0, 7.0])            # a pools stage 0's [1, 3]; c has one score: z = 0
    pooled = np.array([1.0, 3.0, 5.0])
    assert np.isclose(stage1[0], (5 - pooled.mean()) / (pooled.std(ddof=1) + 1e-8)) and stage1[1] == 0.0
    stage2 = norm.update(["a", "a"], [0.0, 2.0])            # stages 0 and 1 are the last H = 2
    pooled = np.array([1.0, 3.0, 5.0, 0.0, 2.0])
    assert np.allclose(stage2, (np.array([0.0, 2.0]) - pooled.mean()) / (pooled.std(ddof=1) + 1e-8))
    stage3 = norm.update(["a", "a"], [0.0, 2.0])            # stage 0 has left the window
    pooled = np.array([5.0, 0.0, 2.0, 0.0, 2.0])
    assert np.allclose(stage3, (np.array([0.0, 2.0]) - pooled.mean()) / (pooled.std(ddof=1) + 1e-8))
    restored = core.HistoryZScore(0)
    restored.load_state_dict(json.loads(json.dumps(norm.state_dict())))
    assert np.array_equal(restored.update(["a", "b"], [1.0, 2.0]), norm.update(["a", "b"], [1.0, 2.0]))
    # H = 0: the current stage only
    alone = core.HistoryZScore(0)
    alone.update(["a", "a"], [0.0, 10.0])
    assert np.allclose(alone.update(["a", "a"], [1.0, 3.0]), [-1 / (np.sqrt(2) + 1e-8), 1 / (np.sqrt(2) + 1e-8)])


def test_rewards_are_scored_in_chunks_with_a_remainder():
    calls = []

    def reward(images, prompts):
        calls.append(len(prompts))
        return images.mean(dim=(1, 2, 3)).numpy() + np.array([len(p) for p in prompts])

    images = torch.rand(13, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    prompts = [f"p{'x' * i}" for i in range(13)]
    chunked = core.score_in_chunks(reward, images, prompts, 5)
    assert calls == [5, 5, 3] and np.allclose(chunked, reward(images, prompts))


# ---- a B² run on the committed shapes model: items 6, 8, 9 and the first ratio --------------------------

@pytest.fixture(scope="module")
def tiny_run():
    """Three tiny stages (intervals 2, 3, 4 of T = 4), every checkpoint kept, the sampled batches recorded."""
    sampled = []
    original = core.sample_branched_trajectories

    def spy(*args, **kwargs):
        traj = original(*args, **kwargs)
        sampled.append(traj)
        return traj

    core.sample_branched_trajectories = spy
    rows_seen = []
    try:
        writer = CheckpointLog()
        task = _task()
        load = task.load_model

        def load_with_hook():
            model = load()
            model.unet.register_forward_pre_hook(lambda m, args: rows_seen.append(args[0].shape[0]))
            return model
        task.load_model = load_with_hook
        b2diffurl.run(task, b2diffurl.Config(**TINY), writer)
    finally:
        core.sample_branched_trajectories = original
    return writer, sampled, rows_seen


def test_a_stage_samples_branch_groups_with_the_exact_unet_count(tiny_run):
    """§6.5 item 6 inside a stage: K branches bit-identical up to latent T - s and different after it, and
    (T - s) + K s UNet evaluations of each batch (rows the UNet saw / (2 B) with CFG)."""
    writer, sampled, rows_seen = tiny_run
    stages = _train_rows(writer)
    T, K, B = 4, 3, 2
    training = [t for t in sampled if t.num_branches == K]               # evaluation samples plainly
    assert len(training) == 3 * 2                                          # 3 stages x 2 batches
    sampling_rows = 0
    for stage, s in zip((1, 2, 3), (2, 3, 4)):
        assert stages[stage]["split_steps"] == s
        for traj in training[2 * (stage - 1):2 * stage]:
            assert traj.branch_start == T - s and traj.unet_evals == (T - s) + K * s
            sampling_rows += 2 * B * traj.unet_evals
            groups = core.branch_group_indices(1, K, B)
            for members in groups.tolist():
                first = traj.latents[members[0]]
                for r in members[1:]:
                    assert torch.equal(traj.latents[r, :T - s + 1], first[:T - s + 1])
                    assert all(not torch.equal(traj.latents[r, i], first[i]) for i in range(T - s + 1, T + 1))
    expected = sum(B * ((T - s) + K * s) * 2 for s in (2, 3, 4))
    assert stages[3]["budget/sampling_unet_evals"] == expected == sampling_rows // 2
    assert stages[3]["budget/reward_queries"] == 3 * 2 * B * K
    # every UNet row of the run is accounted for: sampling, training (2 rows a trained timestep with CFG)
    # and evaluation (2 evaluations x 2 splits x 1 image, T steps of 2 CFG rows)
    trained = stages[3]["budget/training_unet_evals"]
    assert sum(rows_seen) == sampling_rows + 2 * trained + 2 * 2 * 1 * T * 2


def test_one_optimizer_step_per_accstep_times_s_micro_steps_and_the_leftover_is_dropped(tiny_run):
    """§6.5 item 8: a stage with m micro-steps of interval s takes floor(m / (AccStep s)) optimizer steps;
    the m mod (AccStep s) leftover ones are dropped (the release's training process exits with them)."""
    writer, _, _ = tiny_run
    stages, updates = _train_rows(writer), _train_rows(writer, "update")
    total = 0
    for stage, s in zip((1, 2, 3), (2, 3, 4)):
        m = stages[stage]["micro_steps"]
        selected = stages[stage]["selected_positive"] + stages[stage]["selected_negative"]
        assert m == 2 * (selected // 2) * s                                  # 2 epochs, batch 2, all s steps
        group = 3 * s
        assert stages[stage]["optimizer_updates"] == m // group
        assert stages[stage]["leftover_micro_steps"] == m % group
        assert [updates[stage][f"update{i}/micro_steps"] for i in range(int(m // group))] == [group] * int(m // group)
        total += m // group
        assert stages[stage]["budget/optimizer_steps"] == total
        # each micro-step recomputes the log-probs of a batch of 2 trajectories
        assert stages[stage]["budget/training_unet_evals"] == 2 * sum(stages[k]["micro_steps"]
                                                                      for k in range(1, stage + 1))
    assert total > 0 and any(stages[k]["leftover_micro_steps"] > 0 for k in (1, 2, 3))


def test_the_first_ratio_of_every_stage_is_exactly_one(tiny_run):
    """§6.5 item 2 for B²: in fp32 on CPU each stage's first micro-step recomputes exactly the sampled
    log-probs (the policy has not moved since it sampled), although the LoRA has been trained before."""
    writer, _, _ = tiny_run
    stages = _train_rows(writer)
    assert all(stages[k]["first_abs_ratio_minus_1_max"] == 0.0 for k in (1, 2, 3))
    assert stages[3]["abs_ratio_minus_1_max"] > 0 and stages[1]["budget/optimizer_steps"] > 0


def test_lora_and_adamw_state_carry_across_stages_and_resume_bit_identically(tiny_run):
    """§6.5 item 9: stage i+1 starts from stage i's LoRA and AdamW moments.  Resuming from the stage-1
    checkpoint reproduces the uninterrupted run's later stages exactly; resuming with fresh AdamW moments
    (the state NOT carried) does not."""
    writer, _, _ = tiny_run
    first, last = writer.checkpoints[1], writer.checkpoints[3]
    steps = [state["optimizer"]["state"][0]["step"] for state in (first, last)]
    assert steps[1] == _train_rows(writer)[3]["budget/optimizer_steps"] and steps[0] < steps[1]   # not reset
    resumed = CheckpointLog(resume_from=first)
    b2diffurl.run(_task(), b2diffurl.Config(**TINY), resumed)
    assert all(torch.equal(resumed.checkpoints[3]["lora"][n], last["lora"][n]) for n in last["lora"])
    expected = [r for r in writer.rows if r["step"] > 1]
    assert json.dumps([r for r in resumed.rows if r["step"] > 1]) == json.dumps(expected)   # NaN == NaN here
    fresh_moments = {**first, "optimizer": {**first["optimizer"], "state": {}}}
    forgetful = CheckpointLog(resume_from=fresh_moments)
    b2diffurl.run(_task(), b2diffurl.Config(**TINY), forgetful)
    assert not all(torch.equal(forgetful.checkpoints[3]["lora"][n], last["lora"][n]) for n in last["lora"])


def test_ablations_keep_the_queries_and_switch_branches_and_intervals():
    """no_branch: K = 1 with K x the batches (equal queries); no_backward: s = T, branching at step 0."""
    from algorithms import registry

    base = b2diffurl.Config(**TINY)
    for name, branches, batches in (("b2diffurl_no_branch", 1, 6), ("b2diffurl_neither", 1, 6),
                                    ("b2diffurl_no_backward", 3, 2)):
        cfg = dataclasses.replace(base, **dict(registry.get(name).defaults))
        assert (cfg.branches, cfg.batches_per_stage) == (branches, batches)
        assert cfg.queries_per_stage == base.queries_per_stage == 12
    writer = MemoryWriter()
    b2diffurl.run(_task(), dataclasses.replace(base, num_stages=2, backward=False, branch=False), writer)
    stages = _train_rows(writer)
    assert [stages[k]["split_steps"] for k in (1, 2)] == [4, 4]
    # K = 1 and s = T: plain sampling, T evaluations per batch of B, 6 batches a stage
    assert stages[2]["budget/sampling_unet_evals"] == 2 * 6 * 2 * 4 and stages[2]["budget/reward_queries"] == 24


def test_beta_minus_zero_trains_nothing_from_the_negatives():
    """b2diffurl_positives_only (the β₋ = 0 diagnostic): with a positive threshold no sample reaches, only
    negatives are selected; they are trained (micro-steps, optimizer steps) but move no LoRA weight, while
    β₋ = 1 on the same samples does.  Weight decay 0, so that an optimizer step without gradient is a no-op."""
    from algorithms import registry

    assert dict(registry.get("b2diffurl_positives_only").defaults) == {"neg_weight": 0.0}
    cfg = b2diffurl.Config(**{**TINY, "num_stages": 1, "pos_threshold": 100.0, "adam_weight_decay": 0.0})
    initial = core.lora_state_dict(core.load_policy(_task(), cfg.lora_rank, 0, "cpu")[0].unet)
    moved = {}
    for neg_weight in (0.0, 1.0):
        writer = CheckpointLog()
        b2diffurl.run(_task(), dataclasses.replace(cfg, neg_weight=neg_weight), writer)
        stage = _train_rows(writer)[1]
        assert stage["selected_positive"] == 0 and stage["selected_negative"] > 0 and stage["optimizer_updates"] > 0
        lora = writer.checkpoints[1]["lora"]
        moved[neg_weight] = max(float((lora[n] - initial[n]).abs().max()) for n in initial)
    assert moved[0.0] == 0.0 and moved[1.0] > 0.0


def test_a_step_on_the_leftover_group_is_a_named_option():
    cfg = b2diffurl.Config(**{**TINY, "num_stages": 2, "drop_leftover_accumulation": False})
    writer = MemoryWriter()
    b2diffurl.run(_task(), cfg, writer)
    stages = _train_rows(writer)
    for k, s in ((1, 2), (2, 3)):
        m = stages[k]["micro_steps"]
        assert stages[k]["optimizer_updates"] == -(-m // (3 * s))              # ceil: the partial group steps


# ---- the paper-size stage loop on a tiny random Stable Diffusion folder ---------------------------------

def test_the_paper_size_stage_loop_runs_on_a_tiny_sd_pipeline(tmp_path):
    """The paper grid's B² config (T = 20, L = 14, R = 20, K = 5, 8 prompts, AccStep 64, ...) with only the
    counts shrunk, on B²-DiffuRL's template 1 and a tiny random SD folder built from configs; the LoRA it
    exports reloads into a fresh StableDiffusionPipeline with `load_lora_weights`."""
    from diffusers import StableDiffusionPipeline

    from benchmarks.config import load_experiment
    from suites.t2i import sd
    from suites.t2i.prompt_sets import load_prompt_set
    from suites.t2i.task import T2ITask

    paper = load_experiment("t2i", "paper", algos=["b2diffurl"]).algorithms["b2diffurl"]
    assert paper == b2diffurl.Config()                         # the paper size is the released defaults
    cfg = dataclasses.replace(paper, num_stages=2, sample_num_batches_per_stage=1, gradient_accumulation_steps=2)
    folder = sd.build_tiny_sd_folder(tmp_path / "sd")
    # the real task class on the SD model; the embedded clipscore scores (the ViT-H-14 file is not here)
    task = T2ITask("b2diffurl/template1", load_prompt_set("b2diffurl/template1", "train"),
                   load_prompt_set("b2diffurl/template1", "test"), "sd", str(folder), "clipscore", None, None,
                   1, 1, 0, 8)
    writer = MemoryWriter()
    b2diffurl.run(task, cfg, writer)
    stages = _train_rows(writer)
    assert [stages[k]["split_steps"] for k in (1, 2)] == [14, 17]          # s(i) = 14 + (7 i) // 2
    assert stages[2]["budget/reward_queries"] == 2 * 8 * 5
    assert stages[2]["budget/sampling_unet_evals"] == 8 * ((20 - 14) + 5 * 14) + 8 * ((20 - 17) + 5 * 17)
    # on-policy up to float rounding: this UNet's results depend on the batch size (40 rows sampled, 2 trained)
    assert stages[2]["first_abs_ratio_minus_1_max"] < 1e-5
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "lora.safetensors").write_bytes(writer.artifacts["lora.safetensors"])
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    pipe.load_lora_weights(tmp_path / "lora", weight_name="lora.safetensors")
    tuned = task.load_model()
    core.add_lora(tuned.unet, rank=cfg.lora_rank, seed=0)
    core.load_lora_state_dict(tuned.unet, writer.state["lora"])
    g = torch.Generator().manual_seed(0)
    x, t, c = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([951, 1]), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        expected = tuned.unet(x, t, encoder_hidden_states=c).sample
        torch.testing.assert_close(pipe.unet(x, t, encoder_hidden_states=c).sample, expected, rtol=1e-5, atol=1e-5)
        pipe.unet.disable_lora()
        assert not torch.allclose(pipe.unet(x, t, encoder_hidden_states=c).sample, expected, atol=1e-6)


# ---- bad configs: one line, exit 2 ------------------------------------------------------------------------

@pytest.mark.parametrize("setting, expected", [
    ("b2diffurl.num_branches=0", "num_branches must be >= 1"),
    ("b2diffurl.split_step_left=5", "split_step_left (L = 5) must be <= split_step_right"),
    ("b2diffurl.split_step_right=5", "split_step_right (R = 5) must be <= sample_num_steps"),
    ("b2diffurl.pos_threshold=-1.0", "pos_threshold (-1.0) is below neg_threshold"),
    ("b2diffurl.num_branchs=3", "unknown key 'num_branchs'"),
])
def test_bad_b2_configs_are_one_line_and_exit_2(tmp_path, setting, expected):
    key, value = setting.split(".", 1)[1].split("=")
    if key in {f.name for f in dataclasses.fields(b2diffurl.Config)}:
        with pytest.raises(UserError, match=expected.split(" (")[0]):
            b2diffurl.Config(**{**TINY, key: float(value) if "." in value else int(value)})
    out = b2fb(tmp_path, "run", "--suite", "t2i", "--size", "tiny", "--algos", "b2diffurl", "--set", setting)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "results").exists()


# ---- end to end through the orchestrator, killed during a stage and resumed --------------------------------

def test_tiny_b2_through_the_orchestrator_resumes_after_a_kill_bit_identically(tmp_path):
    from benchmarks.config import load_experiment
    from benchmarks.results import execute_trial, read_manifest

    args = ["run", "--suite", "t2i", "--size", "tiny", "--algos", "b2diffurl", "--set", "b2diffurl.num_stages=4",
            "--no-tables"]
    proc = subprocess.Popen(fixtures.b2fb_command(tmp_path, *args), cwd=fixtures.REPO, env=fixtures.cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs_dir = tmp_path / "results" / "t2i" / "runs"
    deadline = time.time() + 600
    while time.time() < deadline:
        manifests = [read_manifest(d) for d in runs_dir.glob("*")] if runs_dir.is_dir() else []
        if manifests and manifests[0] and manifests[0].get("checkpoint_step", 0) >= 1:
            break
        if proc.poll() is not None:
            pytest.fail(f"bench ended before it could be interrupted: {proc.stderr.read()[-2000:]}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)                              # during stage 2 (or a later one)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    (run,) = list(runs_dir.iterdir())
    interrupted = read_manifest(run)
    assert interrupted["status"] == "running" and 1 <= interrupted["checkpoint_step"] < 4

    resumed = b2fb(tmp_path, *args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    manifest = read_manifest(run)
    assert manifest["status"] == "done" and manifest["attempts"] == 2
    rows = pd.read_json(run / "scalars.jsonl", lines=True)
    assert not rows.duplicated(["step", "split", "metric"]).any()
    assert sorted(rows[rows.split == "train"].step.unique()) == list(range(1, 5))
    assert sorted(rows[rows.split == "eval"].step.unique()) == [0, 4]
    assert (run / "lora.safetensors").is_file() and (run / "samples_step00004.png").is_file()
    trial = next(iter(load_experiment("t2i", "tiny", overrides=["b2diffurl.num_stages=4"],
                                      algos=["b2diffurl"]).trials()))
    assert trial.run_id == run.name
    assert execute_trial(trial, tmp_path / "reference", threads=1) == "done"
    reference = pd.read_json(tmp_path / "reference" / "t2i" / "runs" / run.name / "scalars.jsonl", lines=True)
    merged = rows.merge(reference, on=["step", "split", "metric"], suffixes=("", "_ref"))
    assert len(merged) == len(reference) == len(rows)
    assert (merged.value == merged.value_ref).all()


def test_the_progress_bar_counts_stages():
    from benchmarks.orchestrate import progress_total

    assert progress_total({"num_stages": 12, "num_branches": 5}) == 12
    assert progress_total({"num_epochs": 60}) == 60 and progress_total({"num_steps": 300}) == 300
    assert progress_total({"policy": "random"}) == 1


# ---- the gradient-signal comparison (benchmarks/gradient_snr_t2i.py --b2) ---------------------------------

def test_cosine_of_mean_gradients_from_distinct_groups():
    from benchmarks.gradient_snr_t2i import cosine_summary

    rng = np.random.default_rng(0)
    mu, nu = np.zeros(40), np.zeros(40)
    mu[0], nu[1] = 1.0, 1.0                                              # orthogonal means
    u = mu + rng.normal(0, 0.5, size=(400, 40))
    aligned = cosine_summary(u, 2 * mu + rng.normal(0, 0.5, size=(300, 40)), False, reps=200)
    assert aligned["cos_ddpo"] == pytest.approx(1.0, abs=0.1) and aligned["cos_low"] > 0.8
    assert cosine_summary(u, -u, True, reps=200)["cos_ddpo"] == pytest.approx(-1.0, abs=1e-6)
    orthogonal = cosine_summary(u, nu + rng.normal(0, 0.5, size=(400, 40)), False, reps=200)
    assert abs(orthogonal["cos_ddpo"]) < 0.15 and orthogonal["cos_low"] < 0 < orthogonal["cos_high"]
    # same samples: the pairs of a group with itself (which share the noise) never count
    noise = rng.normal(0, 1.0, size=(400, 40))
    assert abs(cosine_summary(mu * 0.5 + noise, nu * 0.5 + noise, True, reps=50)["cos_ddpo"]) < 0.3


def test_b2_gradient_signal_runs_on_the_tiny_grid_caches_and_rejects_bad_input(tmp_path, capsys):
    from benchmarks import gradient_snr_t2i

    common = ["--size", "tiny", "--b2", "--groups", "3", "--single-groups", "4", "--control", "none",
              "--out", str(tmp_path), "--cache", str(tmp_path / "cache")]
    assert gradient_snr_t2i.main([*common, "--left", "9"]) == 2            # L > T = 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "split_step_left (L = 9)" in err[0] and not (tmp_path / "gradient_snr_b2.md").exists()
    assert gradient_snr_t2i.main([*common, "--left", "2"]) == 0
    frame = pd.read_csv(tmp_path / "gradient_snr_b2.csv")
    assert list(frame.estimator) == ["b2 (branched_first)", "ddpo_z (branched_first)", "centred (branched_first)",
                                     "b2 (branched_last)", "ddpo_z (branched_last)", "ddpo_all_steps", "neither",
                                     "no_branch"]
    by = frame.set_index("estimator")
    assert list(by.queries_per_group) == [5] * 5 + [1] * 3 and list(by.groups) == [3] * 5 + [4] * 3
    assert list(by.steps) == [2, 2, 2, 4, 4, 4, 4, 2]
    assert (by.r_per_query == by.r / by.queries_per_group).all() and np.isfinite(by.noise).all()
    assert by.loc["ddpo_all_steps", "cos_ddpo"] == 1.0 and by.loc["ddpo_z (branched_first)", "selected_per_group"] == 5
    assert (by.loc["b2 (branched_first)", "selected_per_group"] <= 2).all()
    again = tmp_path / "again"
    assert gradient_snr_t2i.main([*common[:-4], "--out", str(again), "--cache", str(tmp_path / "cache"),
                                  "--left", "2"]) == 0                   # from the cache: the same table
    assert (again / "gradient_snr_b2.csv").read_text() == (tmp_path / "gradient_snr_b2.csv").read_text()
