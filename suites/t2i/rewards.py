"""Reward models of the t2i suite, and diversity metrics.

Every reward is an object with a `name` and `__call__(images, prompts) -> np.ndarray float32 [B]`;
`images` is a torch float tensor [B, 3, H, W] in [0, 1] (the diffusion model's decoded output),
`prompts` a sequence of B strings.  Build one by name:

    reward = make_reward("clipscore")                                     # the embedded shapes CLIP
    reward = make_reward("clipscore", arch="ViT-H-14", checkpoint="/path/open_clip_pytorch_model.bin")
    reward = make_reward("jpeg_compressibility")
    scores = reward(images, prompts)

Rewards
  clipscore               cosine similarity of the L2-normalised open_clip image and text embeddings,
                          computed the way B²-DiffuRL computes its reward (t2i.md §3.5;
                          `run_sample.py` / `run_select.py` at e3a9129):
                            1. images -> uint8 as B²-DiffuRL writes its PNGs: `(x * 255).astype(uint8)`,
                               i.e. truncation, not rounding (x is clamped to [0, 1] first; DDPO's
                               rewards round instead).  The PNG round trip is lossless, so it is skipped.
                            2. the model's own open_clip eval transform on the PIL image: resize the
                               shortest side to the model's input size (bicubic, antialiased), centre
                               crop, to tensor, normalise with the OpenAI mean/std.  ViT-H-14:
                               224 px (a 512 px SD image is downsized, a 32 px shapes image upsized);
                               the shapes CLIP: 32 px, i.e. no resize at all.
                            3. text through the model's open_clip tokenizer
                               (`open_clip.get_tokenizer`; the bundled CLIP BPE).
                            4. `encode_image` / `encode_text`, each L2-normalised, and the per-pair
                               cosine (the diagonal of image_features @ text_features.T).
                          The reward is the raw cosine in [-1, 1]: no x100, no max(0, .) and no 2.5
                          weight (those belong to Hessel et al.'s CLIPScore / torchmetrics, which
                          B²-DiffuRL does not use).  B²-DiffuRL then z-scores it per prompt; that
                          normalisation belongs to the algorithm, not to the reward.
                          Checkpoints (open_clip's own loader, `create_model_and_transforms`, in both
                          cases):
                            * a directory holding `open_clip_config.json` and its weights (open_clip's
                              `local-dir:` layout; the default is the embedded shapes CLIP,
                              suites/t2i/weights/shapes-clip-v0/, written by
                              `python -m suites.t2i.train_clip`, whose sha256 in `config.json` is
                              checked on load; a downloaded Hugging Face snapshot of
                              laion/CLIP-ViT-H-14-laion2B-s32B-b79K has this layout too);
                            * `arch=<open_clip model name>` with `checkpoint=<weights file>`, e.g.
                              ViT-H-14 and laion2B-s32B-b79K's `open_clip_pytorch_model.bin`, which is
                              exactly B²-DiffuRL's `create_model_and_transforms('ViT-H-14',
                              pretrained='laion2B-s32B-b79K')` (same config; the tag's preprocessing
                              equals open_clip's defaults) without the download.
                          Nothing is ever downloaded.
  jpeg_incompressibility  DDPO's (`ddpo_pytorch/rewards.py`): `(x * 255).round().clamp(0, 255)` to
                          uint8, PIL JPEG at quality 95, size in kB = bytes / 1000.
  jpeg_compressibility    minus that size.
  oracle                  the shapes world's exact pixel judge (`shapes.oracle.score_images`), graded:
                          the fraction of the prompt's parts (colour, shape, count per object, and the
                          relation) that hold, in [0, 1].
  oracle_binary           1.0 only when every part holds, else 0.0: the truly sparse reward.

Diversity (`diversity`): per prompt, over the images generated for it, the mean pairwise cosine
distance of reward-model image embeddings and a pixel-space RMS distance (see its docstring).

Import-light: numpy at import time; torch, PIL and open_clip are imported when a reward is built or
called.
"""
from __future__ import annotations

from suites.files import file_sha256  # noqa: E402  (re-exported)

import dataclasses
import inspect
import io
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from suites.errors import UserError
from suites.registry import did_you_mean, lookup

__all__ = ["REWARDS", "SHAPES_CLIP_DIR", "CLIP_FORMAT", "CLIP_FORMAT_VERSION", "OPEN_CLIP_CONFIG", "CLIP_CONFIG",
           "CLIP_WEIGHTS", "VIT_H_14_SOURCE", "LoadedClip", "JpegReward", "OracleReward", "ClipScore",
           "make_reward", "check_reward", "load_clip", "check_clip_checkpoint", "file_sha256",
           "jpeg_sizes_kb", "to_uint8_truncated", "diversity"]

SHAPES_CLIP_DIR = Path(__file__).resolve().parent / "weights" / "shapes-clip-v0"
OPEN_CLIP_CONFIG = "open_clip_config.json"   # open_clip's local-dir config: {"model_cfg", "preprocess_cfg"}
CLIP_CONFIG = "config.json"                  # this project's manifest: format, config, weights' sha256
CLIP_WEIGHTS = "model.safetensors"
CLIP_FORMAT = "b2fb-shapes-clip"
CLIP_FORMAT_VERSION = 1
VIT_H_14_SOURCE = ("open_clip_pytorch_model.bin of laion/CLIP-ViT-H-14-laion2B-s32B-b79K "
                   "(https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K, 3.9 GB)")
_SHAPES_FIX = "run `make pretrain` (it runs `python -m suites.t2i.train_clip --out {dir}`)"


# ---- helpers ----------------------------------------------------------------------------------------



def _batch(images, prompts: Sequence[str] | None = None):
    """images as a float32 CPU tensor [B, 3, H, W] (a numpy array is accepted too), prompts as a list."""
    import torch

    x = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be a float tensor [B, 3, H, W] in [0, 1], got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float32)
    if prompts is None:
        return x, None
    if isinstance(prompts, str):
        raise ValueError("prompts must be a sequence of strings, one per image, not one string")
    prompts = list(prompts)
    if len(prompts) != x.shape[0]:
        raise ValueError(f"got {x.shape[0]} images but {len(prompts)} prompts")
    if not all(isinstance(p, str) for p in prompts):
        raise ValueError("every prompt must be a string")
    return x, prompts


def to_uint8_truncated(images) -> np.ndarray:
    """uint8 [B, H, W, 3] the way B²-DiffuRL writes its sample PNGs: `(x * 255).astype(np.uint8)`
    (truncation), after clamping x to [0, 1]."""
    x, _ = _batch(images)
    return (x.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def jpeg_sizes_kb(images, quality: int = 95) -> np.ndarray:
    """DDPO's `jpeg_incompressibility`: each image -> uint8 by `(x * 255).round().clamp(0, 255)`, PIL JPEG
    at `quality`, size in kB (bytes / 1000).  float64 [B]."""
    import torch
    from PIL import Image

    x, _ = _batch(images)
    array = (x * 255).round().clamp(0, 255).to(torch.uint8).numpy().transpose(0, 2, 3, 1)
    sizes = []
    for image in array:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return np.array(sizes, np.float64)


# ---- weight-free rewards ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class JpegReward:
    """`sign` x JPEG size in kB (DDPO): +1 is jpeg_incompressibility, -1 jpeg_compressibility."""

    name: str
    sign: float
    quality: int = 95

    def __call__(self, images, prompts: Sequence[str]) -> np.ndarray:
        _batch(images, prompts)
        return (self.sign * jpeg_sizes_kb(images, self.quality)).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class BrightnessReward:
    """Mean pixel value in [0, 1] (not from the papers): a sanity reward that every denoising step's mean
    shifts directly; the one reward whose DDPO gradient signal was detectable at the cpu size
    (results/t2i/diagnostics/cpu/gradient_snr_brightness.md).  Use it to check that a setup moves anything."""

    name: str = "brightness"

    def __call__(self, images, prompts: Sequence[str]) -> np.ndarray:
        x, _ = _batch(images, prompts)
        return x.clamp(0, 1).mean(dim=(1, 2, 3)).numpy().astype(np.float32)


@dataclasses.dataclass(frozen=True)
class OracleReward:
    """The shapes world's exact judge: graded part fraction in [0, 1], or 1/0 for all parts (binary).
    Prompts must follow the shapes grammar (a malformed one raises `UserError`)."""

    name: str
    binary: bool

    def __call__(self, images, prompts: Sequence[str]) -> np.ndarray:
        from suites.t2i.shapes.oracle import score_images

        x, prompts = _batch(images, prompts)
        graded, all_parts = score_images(x.clamp(0, 1).permute(0, 2, 3, 1).numpy(), prompts)
        return (all_parts if self.binary else graded).astype(np.float32)


# ---- CLIP loading ----------------------------------------------------------------------------------

@dataclasses.dataclass
class LoadedClip:
    """An open_clip model ready for scoring: model (eval, frozen), its eval preprocess (PIL -> tensor),
    tokenizer, where it came from, and the sha256 of its weights file (None until computed)."""

    model: Any
    preprocess: Callable[[Any], Any]
    tokenizer: Callable[[Sequence[str]], Any]
    source: str
    weights_file: Path
    sha256: str | None = None


def _missing_message(path: Path, arch: str | None) -> str:
    if arch is None:
        return (f"shapes CLIP reward checkpoint not found: {path} does not exist; "
                + _SHAPES_FIX.format(dir=path))
    hint = f"download {VIT_H_14_SOURCE} and pass its path" if arch == "ViT-H-14" else \
        f"pass the path of a local open_clip weights file for {arch}"
    return f"clipscore checkpoint for arch {arch!r} not found: {path} does not exist; {hint} as checkpoint=PATH"


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The project's config.json of a checkpoint directory written by train_clip, or None when the
    directory is some other open_clip local dir (e.g. a Hugging Face snapshot)."""
    manifest = path / CLIP_CONFIG
    if not manifest.is_file():
        return None
    fix = _SHAPES_FIX.format(dir=path)
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{manifest}: unreadable ({error}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != CLIP_FORMAT:
        return None
    if data.get("version") != CLIP_FORMAT_VERSION:
        raise UserError(f"{manifest} has format version {data.get('version')!r}, this code reads "
                        f"{CLIP_FORMAT_VERSION}; {fix}")
    try:
        data["weights"][CLIP_WEIGHTS]["sha256"]
    except (KeyError, TypeError) as error:
        raise UserError(f"{manifest}: malformed (no weights.{CLIP_WEIGHTS}.sha256: {error}); {fix}") from None
    return data


# The order in which open_clip's local-dir loader (factory._find_checkpoint_in_dir) picks a weights file.
_OPEN_CLIP_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                           "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "model.safetensors",
                           "pytorch_model.bin", "pytorch_model.pth", "model.pth")


def _weights_in_dir(path: Path) -> Path | None:
    """The weights file open_clip will load from a local dir (its preference order), or None."""
    for name in _OPEN_CLIP_WEIGHT_NAMES:
        if (path / name).is_file():
            return path / name
    found = sorted((p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pth")),
                   key=lambda p: (p.suffix != ".safetensors", p.name))
    return found[0] if found else None


def check_clip_checkpoint(checkpoint: str | Path | None = None, arch: str | None = None) -> tuple[Path, str | None]:
    """Validate a clipscore checkpoint without torch: (weights file, sha256 if verified here).

    Directories must hold open_clip_config.json and a weights file; a directory written by train_clip
    also has config.json, whose sha256 is checked.  A file needs `arch` (an open_clip model name,
    checked when open_clip is imported by `load_clip`).  `UserError` naming the path and the fix
    otherwise."""
    if checkpoint is None:
        if arch is not None:
            raise UserError(f"clipscore with arch={arch!r} needs checkpoint=<local weights file>; nothing is "
                            f"downloaded. For ViT-H-14: download {VIT_H_14_SOURCE} and pass its path")
        checkpoint = SHAPES_CLIP_DIR
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise UserError(_missing_message(path, arch))
    if path.is_file():
        if arch is None:
            raise UserError(f"clipscore checkpoint {path} is a weights file: pass arch=<open_clip model name> "
                            f"with it (e.g. arch='ViT-H-14'), or pass a directory holding {OPEN_CLIP_CONFIG}")
        return path, None
    if arch is not None:
        raise UserError(f"clipscore checkpoint {path} is a directory, which carries its own {OPEN_CLIP_CONFIG}: "
                        f"drop arch={arch!r}, or pass the weights file inside it together with arch")
    fix = _SHAPES_FIX.format(dir=path)
    if not (path / OPEN_CLIP_CONFIG).is_file():
        raise UserError(f"{path} is not an open_clip model directory ({OPEN_CLIP_CONFIG} is missing); "
                        f"for the shapes CLIP {fix}")
    manifest = _read_manifest(path)
    if manifest is None:
        found = _weights_in_dir(path)
        if found is None:
            raise UserError(f"{path} holds {OPEN_CLIP_CONFIG} but no weights file (*.safetensors, *.bin, *.pth); "
                            f"put the model's weights next to it")
        return Path(found), None
    weights = path / CLIP_WEIGHTS
    if not weights.is_file():
        raise UserError(f"shapes CLIP checkpoint incomplete: {weights} is missing; {fix}")
    expected = manifest["weights"][CLIP_WEIGHTS]["sha256"]
    actual = file_sha256(weights)
    if actual != expected:
        raise UserError(f"{weights} is corrupt: sha256 {actual[:12]}... differs from the {expected[:12]}... "
                        f"recorded in {path / CLIP_CONFIG}; restore it from git or {fix}")
    return weights, actual


def load_clip(checkpoint: str | Path | None = None, arch: str | None = None, device: str = "cpu") -> LoadedClip:
    """An open_clip model for clipscore, through open_clip's `create_model_and_transforms`.

    checkpoint=None, arch=None       the embedded shapes CLIP (SHAPES_CLIP_DIR)
    checkpoint=DIR                   an open_clip local dir (`local-dir:DIR`: open_clip_config.json +
                                     weights); a train_clip directory's sha256 is verified first
    arch=NAME, checkpoint=FILE       open_clip's built-in config NAME with the weights in FILE, e.g.
                                     arch="ViT-H-14" + laion2B-s32B-b79K's open_clip_pytorch_model.bin"""
    weights, sha = check_clip_checkpoint(checkpoint, arch)
    import open_clip

    if arch is not None:
        if arch not in open_clip.list_models():
            raise UserError(f"unknown open_clip arch {arch!r}.{did_you_mean(arch, open_clip.list_models())} "
                            f"See open_clip.list_models() (B²-DiffuRL uses 'ViT-H-14')")
        name, pretrained = arch, str(weights)
    else:
        name, pretrained = f"local-dir:{weights.parent}", None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    except (RuntimeError, ValueError, KeyError, OSError, AssertionError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot load clipscore checkpoint {weights} as {name!r}: {first[:300]}; check that the "
                        f"file holds that model's weights") from None
    model.eval().requires_grad_(False)
    return LoadedClip(model, preprocess, tokenizer, name, weights, sha)


# ---- clipscore ------------------------------------------------------------------------------------

class ClipScore:
    """B²-DiffuRL's reward: cosine of L2-normalised open_clip image and text embeddings (see the module
    docstring for each step).  `embed_images` / `embed_texts` / `score_matrix` expose the parts."""

    name = "clipscore"

    def __init__(self, checkpoint: str | Path | None = None, arch: str | None = None, device: str = "cpu",
                 batch_size: int = 64):
        self.clip = load_clip(checkpoint, arch, device)
        self.device = device
        self.batch_size = int(batch_size)
        self._text_cache: dict[str, Any] = {}

    def to(self, device: str) -> "ClipScore":
        """Compute embeddings on `device` (scores still come back as numpy on the CPU)."""
        self.clip.model.to(device)
        self.device = str(device)
        return self

    @property
    def hashes(self) -> dict[str, str]:
        """weights file name -> sha256 (computed once; the ViT-H-14 file takes a few seconds)."""
        if self.clip.sha256 is None:
            self.clip.sha256 = file_sha256(self.clip.weights_file)
        return {f"clip:{self.clip.weights_file.name}": self.clip.sha256}

    def preprocess(self, images):
        """[B, 3, S, S] model input: uint8 by truncation, then the model's eval transform per PIL image."""
        import torch
        from PIL import Image

        array = to_uint8_truncated(images)
        return torch.stack([self.clip.preprocess(Image.fromarray(image)) for image in array])

    def embed_images(self, images):
        """L2-normalised image embeddings, float32 [B, D] on the CPU."""
        import torch

        x = self.preprocess(images)
        out = []
        with torch.no_grad():
            for start in range(0, len(x), self.batch_size):
                features = self.clip.model.encode_image(x[start:start + self.batch_size].to(self.device))
                out.append((features / features.norm(dim=-1, keepdim=True)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    def embed_texts(self, prompts: Sequence[str]):
        """L2-normalised text embeddings, float32 [P, D] on the CPU (cached per prompt string)."""
        import torch

        missing = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        if len(self._text_cache) + len(missing) > 8192:
            self._text_cache.clear()
            missing = list(dict.fromkeys(prompts))
        with torch.no_grad():
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start:start + self.batch_size]
                features = self.clip.model.encode_text(self.clip.tokenizer(chunk).to(self.device))
                features = (features / features.norm(dim=-1, keepdim=True)).float().cpu()
                self._text_cache.update(zip(chunk, features))
        return torch.stack([self._text_cache[p] for p in prompts])

    def __call__(self, images, prompts: Sequence[str]) -> np.ndarray:
        images, prompts = _batch(images, prompts)
        if not prompts:
            return np.zeros(0, np.float32)
        scores = (self.embed_images(images) * self.embed_texts(prompts)).sum(-1)
        return scores.numpy().astype(np.float32)

    def score_matrix(self, images, prompts: Sequence[str]) -> np.ndarray:
        """float32 [B, P]: the cosine of every image with every prompt (for retrieval)."""
        images, _ = _batch(images)
        return (self.embed_images(images) @ self.embed_texts(list(prompts)).T).numpy().astype(np.float32)


# ---- registry -----------------------------------------------------------------------------------

def _clipscore(checkpoint: str | Path | None = None, arch: str | None = None, device: str = "cpu",
               batch_size: int = 64) -> ClipScore:
    return ClipScore(checkpoint=checkpoint, arch=arch, device=device, batch_size=batch_size)


def _jpeg_incompressibility(quality: int = 95) -> JpegReward:
    return JpegReward("jpeg_incompressibility", 1.0, quality)


def _jpeg_compressibility(quality: int = 95) -> JpegReward:
    return JpegReward("jpeg_compressibility", -1.0, quality)


def _brightness() -> BrightnessReward:
    return BrightnessReward()


def _oracle() -> OracleReward:
    return OracleReward("oracle", binary=False)


def _oracle_binary() -> OracleReward:
    return OracleReward("oracle_binary", binary=True)


REWARDS: Mapping[str, Callable[..., Any]] = {
    "clipscore": _clipscore,
    "jpeg_compressibility": _jpeg_compressibility,
    "jpeg_incompressibility": _jpeg_incompressibility,
    "oracle": _oracle,
    "oracle_binary": _oracle_binary,
    "brightness": _brightness,
}


def _bind(name: str, kwargs: dict[str, Any]) -> Callable[..., Any]:
    factory = lookup(REWARDS, name, "reward")
    parameters = inspect.signature(factory).parameters
    unknown = [k for k in kwargs if k not in parameters]
    if unknown:
        accepted = ", ".join(parameters) or "no arguments"
        raise UserError(f"reward {name!r} takes no argument {unknown[0]!r}.{did_you_mean(unknown[0], parameters)} "
                        f"It accepts: {accepted}")
    return factory


def make_reward(name: str, **kwargs: Any):
    """The reward called `name` (see REWARDS), built with `kwargs`.  Unknown names and arguments raise
    `UserError` with suggestions."""
    return _bind(name, kwargs)(**kwargs)


def check_reward(name: str, checkpoint: str | Path | None = None, arch: str | None = None) -> None:
    """Cheap validation before any trial starts: the name exists and, for clipscore, the checkpoint is
    there (and, for a train_clip directory, matches its sha256).  `checkpoint`/`arch` are ignored by
    rewards without a model."""
    lookup(REWARDS, name, "reward")
    if name == "clipscore":
        check_clip_checkpoint(checkpoint, arch)


# ---- diversity ------------------------------------------------------------------------------------

def diversity(images, prompts: Sequence[str], embed: Callable[[Any], Any] | None = None
              ) -> dict[str, dict[str, float]]:
    """Per prompt (keys in order of first appearance), over the images generated for it:

      n                  how many images the prompt has
      pixel_rms          mean over pairs i < j of ||x_i - x_j||_2 / sqrt(3 H W): the root-mean-square
                         per-value difference of the two images, in [0, 1] for images in [0, 1]
                         (0 for identical images)
      clip_cosine        (only when `embed` is given) mean over pairs of the cosine distance
                         1 - cos(e_i, e_j) of the image embeddings `embed(images)` (e.g.
                         `ClipScore.embed_images`; normalised here), in [0, 2]; computed as
                         ||e_i - e_j||^2 / 2 of the unit vectors, so identical images give exactly 0

    A prompt with a single image gets NaN for the pairwise metrics (no pair), never 0."""
    import torch

    x, prompts = _batch(images, prompts)
    groups: dict[str, list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(index)
    embeddings = None
    if embed is not None and len(x):
        # Embed each distinct image once: identical images then get bit-identical embeddings (a batched
        # forward pass can differ in the last bits between rows).
        unique, inverse = torch.unique(x.reshape(len(x), -1), dim=0, return_inverse=True)
        e = embed(unique.reshape(-1, *x.shape[1:]))
        e = e.detach().to("cpu", torch.float64) if isinstance(e, torch.Tensor) else \
            torch.as_tensor(np.asarray(e, np.float64))
        embeddings = e[inverse]
    result: dict[str, dict[str, float]] = {}
    flat = x.reshape(len(x), -1).double()
    for prompt, indices in groups.items():
        metrics: dict[str, float] = {"n": float(len(indices))}
        pairs = torch.triu_indices(len(indices), len(indices), offset=1)
        if pairs.shape[1] == 0:
            metrics["pixel_rms"] = math.nan
            if embeddings is not None:
                metrics["clip_cosine"] = math.nan
        else:
            group = flat[indices]
            distances = torch.cdist(group, group, compute_mode="donot_use_mm_for_euclid_dist")[pairs[0], pairs[1]]
            distances = distances / math.sqrt(group.shape[1])
            metrics["pixel_rms"] = float(distances.mean())
            if embeddings is not None:
                e = embeddings[indices].double()
                e = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                squared = ((e[pairs[0]] - e[pairs[1]]) ** 2).sum(-1) / 2
                metrics["clip_cosine"] = float(squared.mean())
        result[prompt] = metrics
    return result
