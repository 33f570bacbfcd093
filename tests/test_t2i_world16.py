"""The 16 x 16 shapes world (issue 17): a base model that denoises 16 x 16 images and decodes them to 32 x 32
for the committed reward and oracle; its pretraining (area-averaged renders, caption presets), the world
probe, and the gradient instrument's per-step subsets with a resumable cache."""
import dataclasses
import json
from pathlib import Path
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from suites.errors import UserError  # noqa: E402
from suites.t2i import pretrain  # noqa: E402
from suites.t2i.shapes.oracle import score_images  # noqa: E402
from suites.t2i.shapes_model import (DEFAULT_WEIGHTS_DIR, WEIGHTS_FILE, ShapesModelConfig, decode,  # noqa: E402
                                     load_shapes_model)

TINY16 = {"image_size": 8, "decode_size": 16, "block_out_channels": [8, 16],
          "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
          "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 4}
SHAPES16_DIR = DEFAULT_WEIGHTS_DIR.parent / "shapes16-base-v0"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_decode_size_is_optional_and_checked():
    plain = ShapesModelConfig()
    assert "decode_size" not in plain.to_dict() and plain.output_size == 32      # 32 x 32 config.json as before
    small = ShapesModelConfig(image_size=16, decode_size=32)
    assert small.to_dict()["decode_size"] == 32 and small.output_size == 32 and small.latent_shape == (3, 16, 16)
    assert ShapesModelConfig.from_dict(json.loads(json.dumps(small.to_dict()))) == small
    for bad in (8, 24):                                          # smaller than, or no multiple of, image_size
        with pytest.raises(ValueError, match="decode_size"):
            ShapesModelConfig(image_size=16, decode_size=bad)


def test_decoder_upsamples_bicubic_and_clamps():
    x = torch.linspace(-3, 3, 2 * 3 * 16 * 16).reshape(2, 3, 16, 16)
    assert torch.equal(decode(x), (x / 2 + 0.5).clamp(0, 1))                   # no size: the 32 x 32 decoder
    up = decode(x, size=32)
    expected = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False)
    assert up.shape == (2, 3, 32, 32) and torch.equal(up, (expected / 2 + 0.5).clamp(0, 1))
    # a flat image stays flat (bicubic weights sum to 1); a black canvas decodes to black
    assert torch.allclose(decode(torch.full((1, 3, 16, 16), 0.2), size=32), torch.full((1, 3, 32, 32), 0.6))


def test_render_batch_area_averages_the_larger_render():
    dist = pretrain.CaptionDistribution()
    plain = pretrain.render_batch(dist, np.random.default_rng(3), 8, 32)
    same = pretrain.render_batch(dist, np.random.default_rng(3), 8, 32, 32)
    assert plain[0] == same[0] and np.array_equal(plain[1], same[1])             # render_size = image_size: as before
    captions, small = pretrain.render_batch(dist, np.random.default_rng(3), 8, 16, 32)
    assert captions == plain[0] and small.shape == (8, 3, 16, 16)
    pooled = plain[1].reshape(8, 3, 16, 2, 16, 2).mean((3, 5))                  # the same scenes, 2 x 2 means
    assert np.allclose(small, pooled, atol=1e-6)
    # decoded back to 32 x 32, the oracle still reads the captions (all captioned ones here)
    labelled = [i for i, c in enumerate(captions) if c]
    images = decode(torch.from_numpy(small[labelled]), size=32).numpy()
    assert score_images(images, [captions[i] for i in labelled])[0].mean() > 0.9
    with pytest.raises(ValueError, match="multiple"):
        pretrain.render_batch(dist, np.random.default_rng(3), 2, 16, 24)


def test_caption_presets_change_the_family_mix():
    rng = np.random.default_rng(0)
    heavy = pretrain.CaptionDistribution(**pretrain.CAPTION_PRESETS["relation-heavy"])
    families = [heavy.sample(rng).family for _ in range(4000)]
    shares = {f: families.count(f) / len(families) for f in ("single", "counting", "relation")}
    assert shares == pytest.approx({"single": 0.3, "counting": 0.3, "relation": 0.4}, abs=0.03)
    assert heavy.describe()["family_probs"]["relation"] == 0.4
    assert pretrain.CaptionDistribution().describe()["family_probs"] == pretrain.FAMILY_PROBS
    with pytest.raises(ValueError, match="family_probs"):
        pretrain.CaptionDistribution(family_probs={"single": 1.0})


def test_tiny_16_world_pretrains_loads_and_samples_decoded_images(tmp_path):
    out = tmp_path / "tiny16"
    argv = ["--out", str(out), "--steps", "3", "--batch-size", "4", "--threads", "1", "--warmup-steps", "1",
            "--model-config", json.dumps(TINY16), "--captions", "relation-heavy", "--eval-images", "1",
            "--eval-splits", "train", "--eval-steps", "2", "--quiet"]
    assert pretrain.main(argv) == 0
    log = json.loads((out / "train_log.json").read_text())
    assert log["settings"]["captions"] == "relation-heavy" and log["eval_settings"]["num_steps"] == 2
    assert log["settings"]["model"]["decode_size"] == 16 and set(log["eval"]) == {
        f"{name}/train" for name in pretrain.EVAL_SETS}
    model = load_shapes_model(out)
    assert model.latent_shape == (3, 8, 8)
    from suites.t2i.shapes_model import sample_images
    images = sample_images(model, ["a red circle"] * 2, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    with pytest.raises(UserError, match="--eval-steps"):
        pretrain.main([*argv[:-1], "--eval-steps", "0"])


def test_world_probe_writes_one_row_per_step_count_and_set(tmp_path):
    import pandas as pd

    from suites.t2i import world_probe

    with pytest.raises(UserError, match="--images"):
        world_probe.main(["--out", str(tmp_path), "--images", "0"])
    model = load_shapes_model()
    rows, per_prompt = world_probe.probe(model, [1, 2], 2, 0, "train", 64, sets=("composition",))
    assert [(r["steps"], r["prompt set"]) for r in rows] == [(1, "composition"), (2, "composition")]
    for row in rows:
        assert 0 <= row["binary"] <= row["graded"] <= 1 and 0 <= row["prompts_mid"] <= 1
        assert row["cpu_ms_per_image"] > 0 and np.isfinite(row["clipscore"])
    frame = pd.DataFrame(per_prompt)
    assert len(frame) == 2 * 6 and set(frame.binary.unique()) <= {0.0, 0.5, 1.0}


@pytest.mark.skipif(not (SHAPES16_DIR / WEIGHTS_FILE).is_file(), reason="no committed shapes16 weights")
def test_committed_shapes16_weights_load_and_stay_small():
    from suites.t2i.shapes_model import check_weights

    recorded = json.loads((SHAPES16_DIR / "config.json").read_text())
    assert recorded["model"]["image_size"] == 16 and recorded["model"]["decode_size"] == 32
    assert check_weights(SHAPES16_DIR)[WEIGHTS_FILE] == recorded["weights"][WEIGHTS_FILE]["sha256"]
    model = load_shapes_model(SHAPES16_DIR)
    assert model.latent_shape == (3, 16, 16) and (SHAPES16_DIR / WEIGHTS_FILE).stat().st_size <= 8_500_000
    images = model.decode(torch.zeros(1, 3, 16, 16))
    assert images.shape == (1, 3, 32, 32)


def test_gradient_subsets_resume_from_the_cache_and_match_an_uncached_run(tmp_path):
    import pandas as pd

    from benchmarks import gradient_snr_t2i

    common = ["--size", "tiny", "--groups", "3", "--images-per-group", "2", "--subsets"]
    assert gradient_snr_t2i.main([*common, "--out", str(tmp_path / "plain")]) == 0
    plain = pd.read_csv(tmp_path / "plain" / "gradient_snr_clipscore.csv")
    # params x steps subsets; "all" x "all" is the default row's measurement
    assert len(plain) == 9 and set(plain.params) == {"all", "cross", "self"}
    assert set(plain.steps) == {"all", "early", "late"}
    assert ((plain.oracle_binary >= 0) & (plain.oracle_binary <= 1)).all()
    assert np.allclose(plain.run_snr, plain.r * plain.queries_per_run / plain.images_per_group)
    default = ["--size", "tiny", "--groups", "3", "--images-per-group", "2", "--out", str(tmp_path / "default")]
    assert gradient_snr_t2i.main(default) == 0
    one = pd.read_csv(tmp_path / "default" / "gradient_snr_clipscore.csv")
    both = plain[(plain.params == "all") & (plain.steps == "all")]
    scale = both.noise.item()                       # float32 step sums against one accumulated gradient
    assert one.signal.item() == pytest.approx(both.signal.item(), abs=1e-5 * scale)
    assert one.noise.item() == pytest.approx(scale, rel=1e-4)
    # the cross- and self-attention gradients split the full one: their noise traces add up
    cross, self_ = (plain[(plain.params == p) & (plain.steps == "all")].noise.item() for p in ("cross", "self"))
    assert cross + self_ == pytest.approx(both.noise.item(), rel=1e-4)
    # a cached measurement, then a second run that reads every group back, write the same table
    cache = ["--cache", str(tmp_path / "cache")]
    assert gradient_snr_t2i.main([*common, *cache, "--out", str(tmp_path / "cached")]) == 0
    assert gradient_snr_t2i.main([*common, *cache, "--out", str(tmp_path / "again")]) == 0
    first = (tmp_path / "cached" / "gradient_snr_clipscore.csv").read_text()
    assert first == (tmp_path / "again" / "gradient_snr_clipscore.csv").read_text()
    cached = pd.read_csv(tmp_path / "cached" / "gradient_snr_clipscore.csv")
    assert cached.signal.tolist() == pytest.approx(plain.signal.tolist(), abs=1e-6 * scale)


def test_the_ablation_grid_matches_the_main_16_grid_but_for_the_switches():
    """t2i_shapes16_ablations.yaml runs b2diffurl's two ablations on 2 of the main grid's (t2i.yaml's cpu size)
    sets with the same task settings, seeds and B²-DiffuRL config, so that its runs pair by seed with the main
    grid's."""
    from benchmarks.config import load_experiment

    configs = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
    main = load_experiment("t2i", "cpu")
    abl = load_experiment("t2i", "cpu", configs / "t2i_shapes16_ablations.yaml")
    assert set(abl.algorithms) == {"b2diffurl_no_backward", "b2diffurl_no_branch", "ddpo", "b2diffurl"}
    b2 = main.algorithms["b2diffurl"]
    assert abl.algorithms["b2diffurl"] == b2 and abl.algorithms["ddpo"] == main.algorithms["ddpo"]
    assert abl.algorithms["b2diffurl_no_backward"] == dataclasses.replace(b2, backward=False)
    assert abl.algorithms["b2diffurl_no_branch"] == dataclasses.replace(b2, branch=False)
    tasks = dict(main.tasks)
    assert [t for t, _ in abl.tasks] == ["t2i/shapes-spatial-v0", "t2i/shapes-counting-v0"]
    assert all(kwargs == tasks[t] for t, kwargs in abl.tasks)
    assert abl.seeds == main.seeds == [0, 1, 2] and len(abl.trials()) == 24
    shared = {t.run_id for t in abl.trials() if t.algorithm in ("ddpo", "b2diffurl")}
    assert len(shared) == 12 and shared <= {t.run_id for t in main.trials()}   # copies of the main grid's runs


def test_the_negatives_grid_matches_the_main_16_grid_but_for_beta_minus():
    """t2i_shapes16_negatives.yaml runs B²-DiffuRL with β₋ = 0 on the main grid's attribute set, with the same
    task settings, seeds and B²-DiffuRL config, beside copies of the main grid's B²-DiffuRL runs."""
    from benchmarks.config import load_experiment

    configs = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
    main = load_experiment("t2i", "cpu")
    neg = load_experiment("t2i", "cpu", configs / "t2i_shapes16_negatives.yaml")
    b2 = main.algorithms["b2diffurl"]
    assert set(neg.algorithms) == {"b2diffurl_positives_only", "b2diffurl"} and neg.algorithms["b2diffurl"] == b2
    assert b2.neg_weight == 1.0 and neg.algorithms["b2diffurl_positives_only"] == dataclasses.replace(b2, neg_weight=0.0)
    assert [t for t, _ in neg.tasks] == ["t2i/shapes-attribute-v0"]
    assert dict(neg.tasks)["t2i/shapes-attribute-v0"] == dict(main.tasks)["t2i/shapes-attribute-v0"]
    assert neg.seeds == main.seeds == [0, 1, 2] and len(neg.trials()) == 6
    shared = {t.run_id for t in neg.trials() if t.algorithm == "b2diffurl"}
    assert len(shared) == 3 and shared <= {t.run_id for t in main.trials()}   # copies of the main grid's runs
