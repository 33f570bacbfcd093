"""The shapes world's base model: MiniLM text encoder, UNet/scheduler config, sampler, the pretraining
script (tiny run, resumption, artefacts) and the weights loader (hash checks, UserErrors)."""
import hashlib
import json
import os
import types

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from suites.errors import UserError  # noqa: E402
from suites.t2i import pretrain  # noqa: E402
from suites.t2i.model import T2IModel  # noqa: E402
from suites.t2i.shapes.oracle import score_images  # noqa: E402
from suites.t2i.shapes.prompts import scene_for  # noqa: E402
from suites.t2i.shapes.render import render  # noqa: E402
from suites.t2i.shapes_model import (DEFAULT_WEIGHTS_DIR, WEIGHTS_FILE, ShapesModelConfig, build_scheduler,  # noqa: E402
                                     build_unet, check_weights, decode, load_shapes_model, sample_images,
                                     weights_hashes)
from suites.t2i.text_encoder import MiniLMEncoder, shared_encoder  # noqa: E402

TINY = {"block_out_channels": [8, 16], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- text encoder ----------------------------------------------------------------------------------

def test_a_new_trial_empties_the_shared_prompt_caches_and_keeps_the_encoder():
    from suites.registry import reset_for_new_trial

    encoder = shared_encoder(16)
    encoder(["a red circle", "two blue squares"])
    assert encoder.cache_size() >= 2
    reset_for_new_trial()
    assert encoder.cache_size() == 0 and shared_encoder(16) is encoder


def test_minilm_encoder_shape_determinism_and_cache():
    encoder = shared_encoder(16)
    encoder.clear_cache()
    states = encoder(["a red circle", "", "a magenta triangle to the right of a yellow triangle"])
    assert states.shape == (3, 16, 384) and states.dtype == torch.float32 and not states.requires_grad
    assert encoder.cache_size() == 3
    again = encoder(["a magenta triangle to the right of a yellow triangle", "a red circle"])
    assert encoder.cache_size() == 3                       # served from the cache
    torch.testing.assert_close(again[1], states[0], rtol=0, atol=0)
    torch.testing.assert_close(again[0], states[2], rtol=0, atol=0)
    uncached = MiniLMEncoder(max_length=16, cache=False)(["a red circle", ""])
    torch.testing.assert_close(uncached, states[:2], rtol=0, atol=0)   # batch composition does not matter
    assert not torch.equal(states[0], states[1])
    assert encoder.token_count("a magenta triangle to the right of a yellow triangle") <= 16
    sha = encoder.identity["minilm/model.safetensors"]
    # the recorded identity is the sha256 of the weights file the encoder actually loaded (computed here
    # independently), with the setting that changes its states
    import hashlib
    assert sha == hashlib.sha256((encoder.path / "model.safetensors").read_bytes()).hexdigest()
    assert encoder.identity["minilm/max_length"] == "16"
    with pytest.raises(TypeError):
        encoder("a red circle")


# --- config, UNet, scheduler, sampler --------------------------------------------------------------

def test_default_config_builds_unet_and_scheduler():
    config = ShapesModelConfig()
    assert ShapesModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    unet = build_unet(config)
    n_params = sum(p.numel() for p in unet.parameters())
    assert 1.5e6 < n_params < 2.2e6                         # fits float32 in ~8 MB
    with torch.no_grad():
        out = unet(torch.randn(2, 3, 32, 32), torch.tensor([10, 900]), torch.randn(2, 16, 384)).sample
    assert out.shape == (2, 3, 32, 32)
    scheduler = build_scheduler(config)
    assert scheduler.config.prediction_type in ("epsilon", "v_prediction")
    assert not scheduler.config.set_alpha_to_one
    with pytest.raises(ValueError):
        ShapesModelConfig(rescale_betas_zero_snr=True, prediction_type="epsilon")


@pytest.mark.parametrize("schedule", sorted(pretrain.SCHEDULES))
def test_sampler_recovers_images_from_an_exact_denoiser(schedule):
    """DDIM (eta 1, 20 steps, CFG 5) with a model that knows x0 ends at x0 for every schedule preset
    (epsilon and v-prediction, zero terminal SNR included), and the oracle reads the result."""
    config = ShapesModelConfig().replace(**pretrain.SCHEDULES[schedule])
    scheduler = build_scheduler(config)
    rng = np.random.default_rng(0)
    prompts = ["a red circle", "two blue squares", "a green triangle above a cyan square"]
    x0 = torch.from_numpy(render([scene_for(p, rng) for p in prompts], dtype=np.float32).transpose(0, 3, 1, 2) * 2 - 1)

    class ExactDenoiser(torch.nn.Module):
        device, dtype = torch.device("cpu"), torch.float32    # what the core reads of a UNet

        def forward(self, x, t, encoder_hidden_states):
            alpha = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
            target = x0.repeat(x.shape[0] // len(x0), 1, 1, 1)
            eps = (x - alpha.sqrt() * target) / (1 - alpha).sqrt()
            out = eps if config.prediction_type == "epsilon" else alpha.sqrt() * eps - (1 - alpha).sqrt() * target
            return types.SimpleNamespace(sample=out)

    model = T2IModel("exact", ExactDenoiser(), scheduler, lambda ps: torch.zeros(len(ps), 4, 8), decode, (3, 32, 32))
    images = sample_images(model, prompts, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, 32, 32) and torch.isfinite(images).all()
    assert (images - decode(x0)).abs().max() < 0.15
    assert score_images(images.numpy(), prompts)[1].all()


def test_caption_distribution_is_biased_towards_the_train_splits():
    freq = pretrain.CaptionDistribution().split_frequencies(n=5000)
    for name in ("composition", "attribute", "spatial", "counting"):
        assert freq[f"{name}/test"] < 0.5 * freq[f"{name}/train"], (name, freq)
    captions, images = pretrain.render_batch(pretrain.CaptionDistribution(), np.random.default_rng(0), 16, 32)
    assert len(captions) == 16 and images.shape == (16, 3, 32, 32)
    assert images.min() >= -1 and images.max() <= 1
    labelled = [(c, i) for c, i in zip(captions, images) if c]
    graded, binary = score_images(np.stack([i for _, i in labelled]) / 2 + 0.5, [c for c, _ in labelled])
    assert binary.all()                                      # the caption tells the truth about its image


# --- pretraining script and loader -----------------------------------------------------------------

def _pretrain(out, *extra):
    argv = ["--out", str(out), "--steps", "6", "--batch-size", "4", "--threads", "1", "--warmup-steps", "2",
            "--model-config", json.dumps(TINY), "--eval-images", "0", "--quiet", *extra]
    return pretrain.main(argv)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_pretrain_resumes_bit_identically_and_loads(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _pretrain(straight, "--keep-checkpoint") == 0
    kept = torch.load(straight / pretrain.CHECKPOINT_FILE, weights_only=False)
    assert kept["step"] == 6                                # the final state, to extend the run later
    assert _pretrain(resumed, "--stop-after", "3") == 0
    assert (resumed / pretrain.CHECKPOINT_FILE).is_file() and not (resumed / WEIGHTS_FILE).exists()
    assert _pretrain(resumed) == 0
    assert not (resumed / pretrain.CHECKPOINT_FILE).exists()
    assert _sha(straight / WEIGHTS_FILE) == _sha(resumed / WEIGHTS_FILE)

    config = json.loads((straight / "config.json").read_text())
    assert config["weights"][WEIGHTS_FILE]["sha256"] == _sha(straight / WEIGHTS_FILE)
    log = json.loads((straight / "train_log.json").read_text())
    assert log["steps"] == 6 and log["threads"] == 1 and log["final_loss_ema"] > 0
    assert log["caption_distribution"]["caption_drop_prob"] == pretrain.CAPTION_DROP_PROB
    assert log["schedule"] in pretrain.SCHEDULES

    model = load_shapes_model(straight)
    assert isinstance(model, T2IModel) and model.latent_shape == (3, 32, 32)
    assert model.hashes[WEIGHTS_FILE] == _sha(straight / WEIGHTS_FILE) == weights_hashes(straight)[WEIGHTS_FILE]
    states = model.encode_prompts(["a red circle", ""])
    assert states.shape == (2, 16, 384)
    with torch.no_grad():
        out = model.unet(torch.randn(2, 3, 32, 32), torch.tensor([999, 49]), states).sample
    assert out.shape == (2, 3, 32, 32)
    images = model.decode(torch.randn(2, 3, 32, 32) * 3)
    assert images.shape == (2, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    scores = pretrain.evaluate(model, images_per_prompt=1, sets=("composition",), splits=("train",))
    assert set(scores) == {"composition/train"} and 0 <= scores["composition/train"]["graded"] <= 1

    # a checkpoint made with other settings is refused, --no-resume starts over
    assert _pretrain(resumed, "--stop-after", "2", "--no-resume") == 0
    with pytest.raises(UserError, match="different settings"):
        _pretrain(resumed, "--lr", "0.01")


def test_missing_or_corrupt_weights_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="make pretrain"):
        load_shapes_model(tmp_path / "nowhere")
    with pytest.raises(UserError, match="make pretrain"):
        check_weights(tmp_path)                              # exists, but empty
    out = tmp_path / "model"
    assert _pretrain(out, "--steps", "1") == 0
    data = bytearray((out / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF
    (out / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt.*make pretrain"):
        load_shapes_model(out)
    (out / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="make pretrain"):
        load_shapes_model(out)


def test_pretrain_cli_errors():
    with pytest.raises(UserError, match="--steps N or --minutes M"):
        pretrain.main(["--out", "/tmp/unused"])
    with pytest.raises(UserError, match="--model-config"):
        pretrain.main(["--out", "/tmp/unused", "--steps", "1", "--model-config", "{oops"])


@pytest.mark.skipif(not (DEFAULT_WEIGHTS_DIR / WEIGHTS_FILE).is_file(), reason="no committed shapes weights")
def test_committed_weights_load_and_match_their_hash():
    recorded = json.loads((DEFAULT_WEIGHTS_DIR / "config.json").read_text())["weights"][WEIGHTS_FILE]["sha256"]
    assert check_weights()[WEIGHTS_FILE] == recorded == _sha(DEFAULT_WEIGHTS_DIR / WEIGHTS_FILE)
    model = load_shapes_model()
    assert model.hashes[WEIGHTS_FILE] == recorded and model.latent_shape == (3, 32, 32)
    assert (DEFAULT_WEIGHTS_DIR / WEIGHTS_FILE).stat().st_size <= 8_500_000
