"""The t2i suite's rewards (jpeg, oracle, clipscore), diversity metrics, and the CLIP training script."""
import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from suites.errors import UserError
from suites.t2i import rewards, train_clip
from suites.t2i.rewards import SHAPES_CLIP_DIR, check_clip_checkpoint, diversity, make_reward
from suites.t2i.shapes.prompts import format_prompt, parse_prompt, scene_for
from suites.t2i.shapes.render import render

TINY_ARCH = "b2fb-test-tiny-clip"
TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
            "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()


def _rendered(prompts, seed=0, n_distractors=0):
    rng = np.random.default_rng(seed)
    return _nchw(render([scene_for(p, rng, n_distractors=n_distractors) for p in prompts], np.float32))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny random open_clip model saved the two ways clipscore loads: a built-in-style arch name
    (registered with open_clip.add_model_config) + a weights file, as for ViT-H-14, and an open_clip
    local dir (open_clip_config.json + weights), as the shapes CLIP."""
    import open_clip

    root = tmp_path_factory.mktemp("tiny_clip")
    (root / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(root / f"{TINY_ARCH}.json")
    other = {**TINY_CFG, "text_cfg": {**TINY_CFG["text_cfg"], "width": 24}}
    (root / f"{TINY_ARCH}-wide.json").write_text(json.dumps(other))
    open_clip.add_model_config(root / f"{TINY_ARCH}-wide.json")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH)
    weights = root / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), weights)
    local = root / "local"
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {}}))
    torch.save(model.state_dict(), local / "open_clip_pytorch_model.bin")
    return {"arch": TINY_ARCH, "file": weights, "dir": local}


# --- jpeg ---------------------------------------------------------------------------------------------

def test_jpeg_rewards_match_a_hand_computation_and_rank_flat_above_noise():
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 3, 32, 32, generator=generator)
    flat = torch.full((1, 3, 32, 32), 0.5)
    images = torch.cat([flat, noise])
    prompts = ["", ""]
    expected = []
    for image in images:
        array = (image * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=95)
        expected.append(len(buffer.getvalue()) / 1000)
    incompressibility = make_reward("jpeg_incompressibility")(images, prompts)
    compressibility = make_reward("jpeg_compressibility")(images, prompts)
    assert incompressibility.dtype == np.float32 and incompressibility.shape == (2,)
    np.testing.assert_allclose(incompressibility, expected, rtol=1e-6)
    np.testing.assert_allclose(compressibility, -np.array(expected), rtol=1e-6)
    assert compressibility[0] > compressibility[1], "a flat image compresses better than noise"
    assert make_reward("jpeg_compressibility").name == "jpeg_compressibility"


def test_brightness_reward_is_the_clamped_mean_pixel():
    images = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.25), torch.full((3, 4, 4), 2.0)])
    scores = make_reward("brightness")(images, ["a", "b", "c"])
    assert scores.dtype == np.float32
    np.testing.assert_allclose(scores, [0.0, 0.25, 1.0])          # values outside [0, 1] are clamped first


# --- oracle -------------------------------------------------------------------------------------------

def test_oracle_rewards_are_one_for_matching_prompts_and_less_for_wrong_ones():
    prompts = ["a red circle", "two blue squares", "a green triangle to the left of an orange square",
               "a white square above a pink circle"]
    images = _rendered(prompts)
    graded, binary = make_reward("oracle"), make_reward("oracle_binary")
    np.testing.assert_array_equal(graded(images, prompts), np.ones(4, np.float32))
    np.testing.assert_array_equal(binary(images, prompts), np.ones(4, np.float32))
    wrong = ["a blue circle", "three blue squares", "a green triangle to the right of an orange square",
             "a white circle above a pink square"]
    wrong_graded, wrong_binary = graded(images, wrong), binary(images, wrong)
    assert wrong_graded.dtype == np.float32 and (wrong_graded < 1).all() and (wrong_graded >= 0).all()
    assert set(np.unique(wrong_binary)) <= {0.0, 1.0} and (wrong_binary == 0).all()


# --- clipscore ----------------------------------------------------------------------------------------

def test_clipscore_through_a_tiny_arch_and_file_equals_a_hand_computation(tiny_clip):
    import open_clip

    prompts = ["a red circle", "two blue squares", "a green triangle below a cyan circle"]
    images = _rendered(prompts)
    reward = make_reward("clipscore", arch=tiny_clip["arch"], checkpoint=str(tiny_clip["file"]))
    scores = reward(images, prompts)
    assert reward.name == "clipscore" and scores.dtype == np.float32 and scores.shape == (3,)
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)
    np.testing.assert_array_equal(scores, reward(images, prompts))
    again = make_reward("clipscore", arch=tiny_clip["arch"], checkpoint=str(tiny_clip["file"]))
    np.testing.assert_array_equal(scores, again(images, prompts))
    # by hand: B²-DiffuRL's steps with open_clip's own model, transform and tokenizer
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_clip["arch"], pretrained=str(tiny_clip["file"]))
    model.eval()
    tokenizer = open_clip.get_tokenizer(tiny_clip["arch"])
    pils = [Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) for image in images]
    with torch.no_grad():
        image_features = model.encode_image(torch.stack([preprocess(p) for p in pils]))
        text_features = model.encode_text(tokenizer(prompts))
    image_features /= image_features.norm(dim=-1, keepdim=True)
    text_features /= text_features.norm(dim=-1, keepdim=True)
    by_hand = (image_features @ text_features.T).diagonal().numpy()
    np.testing.assert_allclose(scores, by_hand, atol=1e-6)
    # the same model as an open_clip local dir scores the same
    local = make_reward("clipscore", checkpoint=tiny_clip["dir"])
    np.testing.assert_allclose(local(images, prompts), scores, atol=1e-6)
    assert reward.score_matrix(images, prompts).shape == (3, 3)
    assert list(reward.hashes.values())[0] == rewards.file_sha256(tiny_clip["file"])


def test_missing_or_mismatched_clip_checkpoints_raise_user_errors(tmp_path, tiny_clip):
    with pytest.raises(UserError, match="make pretrain"):
        check_clip_checkpoint(tmp_path / "no-such-dir")
    with pytest.raises(UserError, match="laion2B-s32B-b79K"):
        make_reward("clipscore", arch="ViT-H-14", checkpoint=str(tmp_path / "open_clip_pytorch_model.bin"))
    with pytest.raises(UserError, match="needs checkpoint"):
        make_reward("clipscore", arch="ViT-H-14")
    with pytest.raises(UserError, match="pass arch"):
        make_reward("clipscore", checkpoint=tiny_clip["file"])
    with pytest.raises(UserError, match="open_clip_config.json"):
        make_reward("clipscore", checkpoint=tmp_path)
    with pytest.raises(UserError, match="Did you mean"):
        make_reward("clipscore", arch="ViT-H-41", checkpoint=tiny_clip["file"])
    with pytest.raises(UserError, match="cannot load"):
        make_reward("clipscore", arch=f"{TINY_ARCH}-wide", checkpoint=tiny_clip["file"])
    with pytest.raises(UserError):
        rewards.check_reward("clipscore", checkpoint=tmp_path / "missing")


def test_unknown_reward_names_and_arguments_raise_user_errors_with_suggestions():
    with pytest.raises(UserError, match="Did you mean 'clipscore'"):
        make_reward("clipscore_")
    with pytest.raises(UserError, match="jpeg_compressibility"):
        make_reward("jpeg_compresibility")
    with pytest.raises(UserError, match="takes no argument 'checkpoint'"):
        make_reward("oracle", checkpoint="x")
    rewards.check_reward("oracle", checkpoint=None, arch=None)


# --- diversity ----------------------------------------------------------------------------------------

def test_diversity_is_zero_for_identical_images_positive_for_different_and_nan_for_one(tiny_clip):
    reward = make_reward("clipscore", arch=tiny_clip["arch"], checkpoint=tiny_clip["file"])
    different = _rendered(["a red circle", "a red circle", "a red circle"], seed=3, n_distractors=2)
    same = _rendered(["a blue square"], seed=1).repeat(3, 1, 1, 1)
    single = _rendered(["a green triangle"], seed=2)
    images = torch.cat([different, same, single])
    prompts = ["a red circle"] * 3 + ["a blue square"] * 3 + ["a green triangle"]
    result = diversity(images, prompts, embed=reward.embed_images)
    assert list(result) == ["a red circle", "a blue square", "a green triangle"]
    assert result["a blue square"] == {"n": 3.0, "pixel_rms": 0.0, "clip_cosine": 0.0}
    assert result["a red circle"]["pixel_rms"] > 0.01 and result["a red circle"]["clip_cosine"] > 0
    assert math.isnan(result["a green triangle"]["pixel_rms"]) and math.isnan(result["a green triangle"]["clip_cosine"])
    assert set(diversity(images, prompts)["a red circle"]) == {"n", "pixel_rms"}
    # pixel_rms is the RMS per-value difference: black vs white is 1
    bw = torch.cat([torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)])
    assert diversity(bw, ["p", "p"])["p"]["pixel_rms"] == pytest.approx(1.0)


# --- train_clip ---------------------------------------------------------------------------------------

def test_training_batches_are_reproducible_and_mark_false_negatives():
    images, captions, false_negative, targets = train_clip.training_batch(5, 7, 16)
    images2, captions2, false_negative2, _ = train_clip.training_batch(5, 7, 16)
    np.testing.assert_array_equal(images, images2)
    assert captions == captions2 and (false_negative == false_negative2).all()
    assert images.shape == (16, 32, 32, 3) and images.min() >= 0 and images.max() <= 1
    assert not false_negative.diagonal().any()
    assert targets["counts"].shape == (16, len(train_clip.KINDS)) and (targets["counts"].sum(1) >= 1).all()
    for caption in captions:
        parse_prompt(caption)                        # every caption (aliases included) is in the grammar
    rng = np.random.default_rng(0)
    prompt = parse_prompt("a red circle to the left of a blue square")
    variants = train_clip.hard_variants(prompt, rng)
    assert format_prompt(variants["swap_roles"]) == "a blue square to the left of a red circle"
    assert format_prompt(variants["swap_colours"]) == "a blue circle to the left of a red square"
    scene = scene_for(prompt, rng, n_distractors=0)
    assert train_clip.prompt_holds(scene, prompt)
    assert not any(train_clip.prompt_holds(scene, v) for v in variants.values())


def test_train_clip_runs_resumes_and_loads_as_clipscore(tmp_path, capsys):
    out = tmp_path / "clip"
    common = ["--out", str(out), "--batch-size", "8", "--threads", "1", "--eval-images", "0", "--warmup-steps", "2"]
    assert train_clip.main([*common, "--steps", "2", "--keep-state"]) == 0
    assert (out / train_clip.STATE_FILE).is_file()
    assert train_clip.main([*common, "--steps", "3"]) == 0
    assert not (out / train_clip.STATE_FILE).exists()
    log = json.loads((out / "train_log.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert log["steps"] == 3 and log["resumed_at_steps"] == [2] and math.isfinite(log["final_loss"])
    assert config["weights"]["model.safetensors"]["sha256"] == rewards.file_sha256(out / "model.safetensors")
    assert config["model_cfg"] == train_clip.MODEL_CFG
    reward = make_reward("clipscore", checkpoint=out)
    prompts = ["a red circle", "three cyan triangles"]
    scores = reward(_rendered(prompts), prompts)
    assert scores.shape == (2,) and np.all(np.abs(scores) <= 1 + 1e-6)
    evaluation = train_clip.evaluate(reward, images_per_prompt=1, sets=("counting",))
    assert set(evaluation["retrieval"]) == {"counting/train", "counting/test"}
    assert 0 <= evaluation["hard_negatives"]["per_set"]["counting/test"]["image_side_auc"] <= 1
    with pytest.raises(UserError, match="--fresh"):
        train_clip.main([*common, "--steps", "3"])
    assert train_clip.main(["--out", str(out), "--eval-only", "--eval-images", "1", "--threads", "1"]) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["steps"] == 3 and len(log["evaluation"]["retrieval"]) == 8
    assert set(train_clip.RETRIEVAL_CONDITIONS) <= set(log["evaluation"]["retrieval"]["spatial/test"])
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt"):
        make_reward("clipscore", checkpoint=out)


# --- the committed shapes CLIP ------------------------------------------------------------------------

committed = pytest.mark.skipif(not (SHAPES_CLIP_DIR / "model.safetensors").is_file(),
                               reason="no committed shapes CLIP weights (make pretrain)")


@committed
def test_committed_shapes_clip_matches_its_hash_and_prefers_true_captions():
    weights, sha = check_clip_checkpoint()
    config = json.loads((SHAPES_CLIP_DIR / "config.json").read_text())
    assert sha == config["weights"]["model.safetensors"]["sha256"] and weights.stat().st_size < 8_000_000
    reward = make_reward("clipscore")
    from suites.t2i.prompt_sets import load_prompt_set
    prompts = list(load_prompt_set("shapes-v0/attribute", "train")) + list(load_prompt_set("shapes-v0/attribute", "test"))
    images = _rendered(prompts, seed=11)
    accuracy = (reward.score_matrix(images, prompts).argmax(1) == np.arange(len(prompts))).mean()
    assert accuracy >= 0.95, accuracy
    spatial = list(load_prompt_set("shapes-v0/spatial", "train"))
    images = _rendered(spatial, seed=12)
    swapped = [format_prompt(train_clip.hard_variants(parse_prompt(p), np.random.default_rng(0))["swap_roles"])
               for p in spatial]
    prefers = (reward(images, spatial) > reward(images, swapped)).mean()
    assert prefers >= 0.9, prefers



def test_reward_headroom_diagnostic_scores_correct_renders_above_shuffled_prompts(tmp_path):
    """benchmarks.diagnose_t2i: the reward of images that satisfy their prompt, beside the grid's models
    (none here: no runs), written as a table; the reward must prefer a render's own prompt."""
    import pandas as pd

    from benchmarks import diagnose_t2i
    from suites import registry

    assert diagnose_t2i.main(["--size", "tiny", "--results-dir", str(tmp_path), "--out", str(tmp_path / "d"),
                              "--agreement-images", "4"]) == 0
    agreement = pd.read_csv(tmp_path / "d" / "agreement.csv")
    assert list(agreement["prompt set"]) == ["shapes-composition-v0"]
    assert agreement.prompts.item() == 2 and agreement.images_per_prompt.item() == 4
    assert 0 <= agreement.oracle_graded.item() <= 1 and agreement.clipscore_sd_within_prompt.item() > 0
    per_prompt = pd.read_csv(tmp_path / "d" / "agreement_prompts.csv")
    assert list(per_prompt.prompt) == list(registry.get("t2i/shapes-composition-v0").make().eval_prompts("train"))[:2]
    frame = pd.read_csv(tmp_path / "d" / "headroom.csv")
    assert list(frame.split) == ["train", "test"] and (frame.runs == 0).all() and frame.base.isna().all()
    assert (tmp_path / "d" / "headroom.md").is_file()
    sensitivity = pd.read_csv(tmp_path / "d" / "sensitivity.csv")
    assert set(sensitivity.violation) == {"colour", "shape"} and (sensitivity.pairs > 0).all()
    # the committed reward model sees colour and shape on clean renders (sensitivity.md: accuracy ~1)
    assert (sensitivity.accuracy > 0.9).all() and (sensitivity.margin > 0).all()
    task = registry.get("t2i/shapes-composition-v0").make()
    prompts = list(task.eval_prompts("train"))
    x = _rendered(prompts)
    own = float(np.mean(task.reward_fn()(x, prompts)))
    shuffled = float(np.mean(task.reward_fn()(x, prompts[1:] + prompts[:1])))
    assert own > shuffled + 0.02


def test_prompt_agreement_measures_whether_the_reward_ranks_like_the_oracle():
    """diagnose_t2i.prompt_agreement on hand-made scores: a reward that orders images as the oracle does
    gets rho 1 and positive gaps, the reverse order rho -1, and a constant oracle no rho."""
    from benchmarks.diagnose_t2i import prompt_agreement

    graded, binary = [0.0, 0.5, 0.5, 1.0], [0, 0, 0, 1]
    same = prompt_agreement([0.1, 0.2, 0.3, 0.4], graded, binary)
    assert same["rho"] == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert same["gap_graded"] == pytest.approx(0.75 - 0.25) and same["gap_binary"] == pytest.approx(0.5)
    reverse = prompt_agreement([0.4, 0.3, 0.2, 0.1], graded, binary)
    assert reverse["rho"] == pytest.approx(-same["rho"]) and reverse["gap_graded"] == pytest.approx(-0.5)
    flat = prompt_agreement([0.1, 0.2, 0.3, 0.4], [0.5] * 4, [0] * 4)
    assert np.isnan(flat["rho"]) and flat["gap_graded"] == 0 and flat["gap_binary"] == 0
    assert np.isnan(prompt_agreement([0.3, 0.3], [0, 1], [0, 1])["gap_graded"])   # no top half


def test_reward_headroom_diagnostic_rejects_a_grid_without_the_shapes_world(tmp_path, capsys):
    from benchmarks import diagnose_t2i

    assert diagnose_t2i.main(["--size", "paper", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shapes-world" in err[0]
    assert diagnose_t2i.main(["--size", "tiny", "--results-dir", str(tmp_path), "--agreement-images", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--agreement-images" in err[0]
    assert diagnose_t2i.main(["--config", str(tmp_path / "nope.yaml"), "--results-dir", str(tmp_path),
                              "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.yaml does not exist" in err[0]
    # another grid's diagnostics never land on the committed 32 x 32 ones by default
    assert diagnose_t2i.main(["--config", "benchmarks/configs/t2i.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "also give --out" in err[0]
    assert not (tmp_path / "t2i").exists()


def test_each_sensitivity_violation_breaks_its_prompt_and_only_the_named_part():
    """diagnose_t2i.violations: on every shapes-v0 prompt, each minimal edit renders to an image the oracle
    fails under the original prompt, while the original's own render passes; the edit changes one thing."""
    from benchmarks.diagnose_t2i import violations
    from suites.t2i.prompt_sets import load_prompt_set
    from suites.t2i.shapes.oracle import score_images

    rng = np.random.default_rng(0)
    texts = [text for name in ("composition", "attribute", "counting", "spatial") for split in ("train", "test")
             for text in load_prompt_set(f"shapes-v0/{name}", split)]
    good, bad, originals, kinds = [], [], [], set()
    for text in texts:
        prompt = parse_prompt(text)
        for kind, wrong in violations(prompt, rng).items():
            kinds.add(kind)
            changed = [a != b for a, b in zip(prompt.objects, wrong.objects)] + [prompt.relation != wrong.relation]
            assert sum(changed) == 1, (text, kind, format_prompt(wrong))
            good.append(scene_for(prompt, rng, n_distractors=0))
            bad.append(scene_for(wrong, rng, n_distractors=0))
            originals.append(text)
    assert kinds == {"colour", "shape", "count", "relation"}
    assert score_images(render(good, np.float32), originals)[1].all()
    assert not score_images(render(bad, np.float32), originals)[1].any()


def test_gradient_snr_estimator_separates_a_common_direction_from_noise():
    """gradient_snr_t2i.snr_from_gram: gradients that all equal mu have signal |mu|^2 and no noise; [a, -a]
    has negative signal (anti-aligned); Gaussian gradients mu + noise recover |mu|^2 and the noise trace."""
    from benchmarks.gradient_snr_t2i import snr_from_gram, snr_summary

    mu = np.array([3.0, 4.0])
    signal, noise = snr_from_gram(np.tile(mu, (5, 1)) @ np.tile(mu, (5, 1)).T)
    assert signal == pytest.approx(25.0) and noise == pytest.approx(0.0, abs=1e-9)
    a = np.array([[1.0, 2.0], [-1.0, -2.0]])
    assert snr_from_gram(a @ a.T) == pytest.approx((-5.0, 10.0))
    # a bootstrap resample counts group 0 twice: its 4 self-pairs are not signal, only the 4 ordered pairs
    # (copy of 0, 1), each -5
    signal, _ = snr_from_gram(a @ a.T, counts=np.array([2, 1]))
    assert signal == pytest.approx(-5.0)
    rng = np.random.default_rng(0)
    mu = np.full(50, 0.2)                                                 # |mu|^2 = 2
    grads = mu + rng.normal(0, 1.0, size=(800, 50))                      # tr Sigma = 50
    summary = snr_summary(grads, reps=200)
    assert summary["signal"] == pytest.approx(2.0, rel=0.2) and summary["noise"] == pytest.approx(50.0, rel=0.1)
    assert summary["r_low"] < 0.04 < summary["r_high"] and summary["r_low"] > 0
    null = snr_summary(rng.normal(0, 1.0, size=(800, 50)), reps=200)
    assert null["r_low"] < 0 < null["r_high"]


def test_gradient_snr_diagnostic_runs_on_the_tiny_grid_and_rejects_bad_input(tmp_path, capsys):
    import pandas as pd

    from benchmarks import gradient_snr_t2i

    assert gradient_snr_t2i.main(["--size", "tiny", "--groups", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--images-per-group" in err[0]          # tiny samples one image per prompt
    assert gradient_snr_t2i.main(["--size", "tiny", "--groups", "2", "--images-per-group", "2"]) == 2
    assert gradient_snr_t2i.main(["--size", "tiny", "--tasks", "t2i/nope", "--images-per-group", "2"]) == 2
    assert gradient_snr_t2i.main(["--size", "tiny", "--reward", "nope", "--images-per-group", "2"]) == 2
    assert capsys.readouterr().err.count("error:") == 3 and not list(tmp_path.iterdir())
    assert gradient_snr_t2i.main(["--size", "tiny", "--groups", "3", "--images-per-group", "2",
                                  "--out", str(tmp_path)]) == 0
    frame = pd.read_csv(tmp_path / "gradient_snr_clipscore.csv")
    assert list(frame["prompt set"]) == ["shapes-composition-v0"] and frame.groups.item() == 3
    assert frame.reward.item() == "clipscore"
    assert frame.noise.item() > 0 and np.isfinite(frame.signal.item()) and frame.reward_sd_in_group.item() > 0
    assert np.isfinite([frame.r.item(), frame.r_low.item(), frame.r_high.item()]).all()
    assert frame.queries_per_step.item() == 2 and frame.queries_per_run.item() == 8
    r_high = frame.r_high.item()
    assert frame.run_snr_high.item() == pytest.approx(max(0.0, 8 / 2 * r_high))
    assert frame.queries_needed_low.item() == (pytest.approx(2 / r_high) if r_high > 0 else np.inf)
    assert (tmp_path / "gradient_snr_clipscore.md").is_file()
