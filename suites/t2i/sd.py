"""Stable Diffusion at the `paper` size: a local diffusers folder loaded into a `T2IModel`.

  check_sd_folder(path)         the folder's layout checked without loading anything (one-line UserError)
  load_sd_model(path)           a diffusers Stable Diffusion folder (CompVis/stable-diffusion-v1-4, the
                                base model of both papers) -> T2IModel, set up as ddpo-pytorch does:
                                DDIM scheduler converted from the folder's config, frozen VAE / text
                                encoder / UNet, no safety checker
  model_from_pipeline(pipe)     the same from an already built StableDiffusionPipeline
  build_tiny_sd_folder(dir)     a tiny random SD folder from configs (env.md §3a-§3c), for tests and
                                offline smoke runs of the paper path
  save_lora_diffusers(model, d) the UNet's PEFT LoRA in diffusers format, loadable with
                                `StableDiffusionPipeline.from_pretrained(folder).load_lora_weights(d)`

Weights are never downloaded: a missing or incomplete folder is a `UserError` saying what to put where.
Import-light: torch, diffusers and transformers are imported inside the functions.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from suites.errors import UserError
from suites.t2i.model import T2IModel

__all__ = ["SD_REPO", "check_sd_folder", "load_sd_model", "model_from_pipeline", "build_tiny_sd_folder",
           "save_lora_diffusers"]

SD_REPO = "CompVis/stable-diffusion-v1-4"

# SD v1.x's own scheduler config (a PNDM config, as on the hub); DDIMScheduler.from_config turns it into
# leading spacing with steps_offset 1: timesteps [951, 901, ..., 1] at 20 steps (t2i.md §1).
_SD_SCHEDULER_CONFIG = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                            num_train_timesteps=1000, set_alpha_to_one=False, skip_prk_steps=True,
                            steps_offset=1, trained_betas=None, clip_sample=False)

# (part, what must be there): a config file, and for the networks at least one weight file
_REQUIRED = (
    ("model_index.json", None),
    ("unet/config.json", ("unet", "diffusion_pytorch_model*")),
    ("vae/config.json", ("vae", "diffusion_pytorch_model*")),
    ("text_encoder/config.json", ("text_encoder", "*model*")),
    ("tokenizer", None),
    ("scheduler/scheduler_config.json", None),
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def _fix(path: Path) -> str:
    return (f"download {SD_REPO} in diffusers format (e.g. `hf download {SD_REPO} --local-dir {path}`) "
            f"and put the folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) at {path}")


def _missing_parts(path: Path) -> list[str]:
    missing = []
    for entry, weights in _REQUIRED:
        if not (path / entry).exists():
            missing.append(entry)
        elif weights is not None:
            folder, pattern = weights
            if not any(f.suffix in _WEIGHT_SUFFIXES for f in (path / folder).glob(pattern)):
                missing.append(f"{folder}/ weights")
    return missing


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sd_folder(path) -> Path:
    """The resolved folder if it is laid out as a diffusers Stable Diffusion folder (model_index.json,
    unet/, vae/, text_encoder/ with weights, tokenizer/, scheduler/); a `UserError` naming the folder, what
    is missing and where to get it otherwise.  Cheap: nothing is loaded (the task calls it before any
    trial starts)."""
    if not path:
        raise UserError(f"the sd model needs model_dir, a local diffusers Stable Diffusion folder; "
                        f"{_fix(Path('/models/stable-diffusion-v1-4'))}")
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise UserError(f"Stable Diffusion weights not found: {path} does not exist; {_fix(path)}")
    if not path.is_dir():
        raise UserError(f"Stable Diffusion model_dir {path} is a file, not a folder; {_fix(path)}")
    missing = _missing_parts(path)
    if missing:
        raise UserError(f"{path} is not a diffusers Stable Diffusion folder (missing {', '.join(missing)}); "
                        f"{_fix(path)}")
    return path


def load_sd_model(path, *, device: str = "cpu", dtype=None, hash_weights: bool = True) -> T2IModel:
    """A local diffusers Stable Diffusion folder -> T2IModel (frozen parts, DDIM scheduler, no safety checker).

    dtype: the frozen weights' dtype (default float32; the references use fp16 on GPUs; LoRA added later
    by `algorithms.diffusion.core.add_lora` stays fp32).  hash_weights: sha256 of the UNet's, VAE's and
    text encoder's weight files into `T2IModel.hashes` (a few seconds per GB).  Raises UserError for a missing or incomplete folder.
    """
    path = check_sd_folder(path)
    import torch
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            path, safety_checker=None, requires_safety_checker=False, local_files_only=True,
            dtype=dtype if dtype is not None else torch.float32)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} could not be loaded as a diffusers Stable Diffusion folder ({reason}); "
                        f"{_fix(path)}") from None
    hashes = {}
    if hash_weights:
        for file in sorted(f for part in ("unet", "vae", "text_encoder") for f in (path / part).rglob("*")):
            if file.is_file() and file.suffix in _WEIGHT_SUFFIXES:
                hashes[str(file.relative_to(path))] = _sha256(file)
    return model_from_pipeline(pipe.to(device), name=path.name, hashes=hashes)


def model_from_pipeline(pipe, name: str = "stable-diffusion", hashes: dict[str, str] | None = None) -> T2IModel:
    """Wrap a StableDiffusionPipeline as a T2IModel, as ddpo-pytorch sets it up (train.py L101-124).

    The pipeline's scheduler is replaced by `DDIMScheduler.from_config(pipe.scheduler.config)`; a config
    without a `clip_sample` entry (old SD folders) gets clip_sample=False, the value of SD's hub config
    that the references ran with (DDIMScheduler's own default would clip x̂0 to [-1, 1]).
    VAE, text encoder and UNet are frozen and in eval mode.
    """
    import torch
    from diffusers import DDIMScheduler

    config = dict(pipe.scheduler.config)
    overrides = {} if "clip_sample" in config else {"clip_sample": False}
    pipe.scheduler = DDIMScheduler.from_config(config, **overrides)
    for part in (pipe.vae, pipe.text_encoder, pipe.unet):
        part.requires_grad_(False)
        part.eval()
    pipe.set_progress_bar_config(disable=True)
    tokenizer, text_encoder, vae, unet = pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.unet

    def encode_prompts(prompts):
        # ddpo-pytorch: pad to model_max_length (77), the text encoder's last hidden state
        ids = tokenizer(list(prompts), return_tensors="pt", padding="max_length", truncation=True,
                        max_length=tokenizer.model_max_length).input_ids.to(text_encoder.device)
        with torch.no_grad():
            return text_encoder(ids)[0].float()

    def decode(latents):
        # the pipeline's decode + postprocess(output_type="pt"): latents / scaling_factor -> [-1, 1] -> [0, 1]
        with torch.no_grad():
            image = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return (image.float() / 2 + 0.5).clamp(0, 1)

    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return T2IModel(
        name=name,
        unet=unet,
        scheduler=pipe.scheduler,
        encode_prompts=encode_prompts,
        decode=decode,
        latent_shape=(unet.config.in_channels, height, width),
        hashes=dict(hashes or {}),
        extras={"pipeline": pipe},
    )


def _write_clip_tokenizer(directory: Path, model_max_length: int = 77):
    """The real CLIP BPE tokenizer, rebuilt from the vocabulary file open_clip bundles (env.md §3c)."""
    import gzip
    import json

    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]      # 49408 tokens
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                         model_max_length=model_max_length)


def build_tiny_sd_folder(out_dir, seed: int = 0) -> Path:
    """Write a tiny random Stable Diffusion folder (diffusers format, ~20 MB) to `out_dir`; returns its path.

    Parts (env.md §3a-§3c, diffusers' "dummy components"): UNet (32, 64) blocks, 8x8 latents, cross-attention
    dim 32; VAE (32, 64) blocks (scale factor 2: 16x16 images); CLIPTextModel hidden 32 with the real
    49408-token CLIP vocabulary; CLIPTokenizer from open_clip's bundled BPE (model_max_length 77);
    SD v1.x's PNDM scheduler config.  Deterministic in `seed`; leaves torch's global RNG as it was.
    """
    import tempfile

    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)
        vae = AutoencoderKL(
            block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, sample_size=16,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1, norm_num_groups=8)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
            layer_norm_eps=1e-5, vocab_size=49408, max_position_embeddings=77,
            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = _write_clip_tokenizer(Path(scratch))
        pipe = StableDiffusionPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
            scheduler=PNDMScheduler.from_config(_SD_SCHEDULER_CONFIG), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(out, safe_serialization=True)
    return out


def save_lora_diffusers(model: T2IModel, out_dir) -> Path:
    """Save the UNet's PEFT LoRA ("default" adapter, from `core.add_lora`) in diffusers format
    (`pytorch_lora_weights.safetensors` with the adapter config as metadata) to `out_dir`.
    `StableDiffusionPipeline.from_pretrained(base).load_lora_weights(out_dir)` then reproduces the
    fine-tuned UNet."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    unet = model.unet
    if "default" not in (getattr(unet, "peft_config", None) or {}):
        raise ValueError("the model's UNet has no LoRA adapter to save (add one with core.add_lora)")
    layers = {k: v.detach().to("cpu").contiguous()
              for k, v in convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)).items()}
    out = Path(out_dir)
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True,
                                              unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())
    return out
