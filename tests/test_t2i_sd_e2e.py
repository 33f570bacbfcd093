"""The `paper` path of the t2i suite end to end through the CLI, offline: a tiny random Stable Diffusion
pipeline saved as a diffusers folder and a tiny open_clip checkpoint, both built from configs (nothing is
downloaded, nothing is mocked), run as a `--size paper` grid with `task.model_dir` and
`task.reward_checkpoint` on the real Ray Tune orchestrator."""
import functools
import json

import pandas as pd
import pytest

import fixtures

b2fb = functools.partial(fixtures.b2fb, timeout=900)

# The paper grid's shape (an SD template task, DDPO with CFG, a GPU-less resource line) at seconds per trial.
PAPER_SHAPED_GRID = """\
suite: t2i
sizes:
  paper:
    seeds: 1
    resources: {cpu: 1, gpu: 0}
    tasks:
      - {id: t2i/sd-template1-v0, kwargs: {eval_images_per_prompt: 2, eval_max_prompts: 2, eval_batch_size: 4}}
    algorithms:
      ddpo: {num_epochs: 2, sample_num_steps: 3, guidance_scale: 5.0, sample_batch_size: 2,
             sample_num_batches_per_epoch: 1, train_batch_size: 2, stat_buffer_size: 16, stat_min_count: 2,
             lora_rank: 2, checkpoint_every: 1}
"""


@pytest.fixture(scope="module")
def sd_parts(tmp_path_factory):
    from suites.t2i.sd import build_tiny_sd_folder

    root = tmp_path_factory.mktemp("sd_parts")
    return build_tiny_sd_folder(root / "tiny-sd"), fixtures.build_tiny_open_clip_dir(root / "tiny-clip")


def test_paper_sized_sd_grid_runs_end_to_end_through_the_cli(tmp_path, sd_parts):
    model_dir, clip_dir = sd_parts
    grid = tmp_path / "paper_tiny.yaml"
    grid.write_text(PAPER_SHAPED_GRID)
    args = ["run", "--suite", "t2i", "--size", "paper", "--config", str(grid),
            "--set", f"task.model_dir={model_dir}", "--set", f"task.reward_checkpoint={clip_dir}",
            "--set", "task.reward_arch=null"]
    out = b2fb(tmp_path, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = sorted((tmp_path / "results" / "t2i" / "runs").iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["size"] == "paper"
    assert manifest["task_id"] == "t2i/sd-template1-v0"
    assert manifest["task_kwargs"]["model_dir"] == "tiny-sd"          # by name: no machine paths
    assert manifest["data_hashes"]["model:sd_folder"] == "tiny-sd"
    assert manifest["data_hashes"]["reward:clip:open_clip_pytorch_model.bin"] == fixtures.sha256_file(
        clip_dir / "open_clip_pytorch_model.bin")
    samples = pd.read_parquet(run / "samples.parquet")
    assert sorted(samples.step.unique()) == [0, 2]              # the base model and the fine-tuned one
    assert len(samples) == 2 * 2 * 2 * 2                         # 2 steps x 2 splits x 2 prompts x 2 images
    assert samples.clipscore.between(-1, 1).all()
    assert "oracle" not in samples                               # no exact oracle outside the shapes world
    assert (run / "lora.safetensors").is_file()
    assert (tmp_path / "results" / "t2i" / "tables" / "paper" / "t2i_alignment.md").is_file()
    again = b2fb(tmp_path, *args)
    assert again.returncode == 0 and "(1 complete, 0 to run)" in again.stdout, again.stderr[-2000:]


@pytest.mark.parametrize("case", ["missing", "a_file", "incomplete"])
def test_a_bad_stable_diffusion_folder_is_one_line_before_ray(tmp_path, sd_parts, case):
    _, clip_dir = sd_parts
    model_dir = tmp_path / "sd"
    if case == "a_file":
        model_dir.write_text("not a folder")
    elif case == "incomplete":
        (model_dir / "unet").mkdir(parents=True)
        (model_dir / "model_index.json").write_text("{}")
    grid = tmp_path / "paper_tiny.yaml"
    grid.write_text(PAPER_SHAPED_GRID)
    out = b2fb(tmp_path, "run", "--suite", "t2i", "--size", "paper", "--config", str(grid),
               "--set", f"task.model_dir={model_dir}", "--set", f"task.reward_checkpoint={clip_dir}",
               "--set", "task.reward_arch=null")
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(model_dir) in lines[0], lines
    assert {"missing": "does not exist", "a_file": "is a file", "incomplete": "(missing unet/config.json"}[case] \
        in lines[0]
    assert "hf download CompVis/stable-diffusion-v1-4" in lines[0]
    assert out.stdout == "" and not (tmp_path / "results").exists()
