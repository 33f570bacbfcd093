"""Image encoders of the FB family: how an agent sees pixel observations (stacked frames, uint8 [C, H, W]).

One place for both FB algorithms (each `update` calls `Observations.train_batch` where it moves the batch
to the device; inference, Q prediction and acting call `Observations.__call__`, unshifted).  Three modes,
the Config field `encoder`:

  "none"         state vectors (every committed state run): nothing changes, nothing is drawn.
  "per_network"  F, B and the actor each own an encoder inside the network (fb.md §3.1: the reference's
                 visual configs give each network its own `impala_small`); the target networks copy
                 theirs, and each encoder learns from its own network's loss.  The maps see the images.
  "shared"       one encoder in front of every network (DrQ-v2's design): F and B (and their targets) read
                 its features; it learns from the representation loss only (the actor reads them
                 detached); the targets use the online encoder's features of s', without gradient.

Augmentation (training only): OGBench's random crop, with probability `augment_prob` per batch the
observations are padded by `augment_pad` pixels (edge values) and cropped back at a random offset per
row, the same offset for s and s' of a row (the reference's `augment`, datasets.py; fb.md §3.1: pad 3,
p = 0.5).  Drawn from the update's generator.

Encoder architectures (`encoder_arch`):
  "impala_small"  OGBench's `ImpalaEncoder(num_blocks=1)`: three ResNet stacks (16, 32, 32 channels; conv
                  3x3, max-pool 3x3 stride 2 'SAME', one residual block), ReLU, flatten, Dense 512 + GELU;
                  inputs / 255; xavier-uniform kernels, zero biases.  512 features.
  "conv_stride2"  a small encoder for 2-core budgets: `encoder_channels` conv 3x3 stride-2 layers with ReLU
                  (32 channels each; 64 px -> 31 -> 15 -> 7 with three), flatten, then DrQ-v2's trunk
                  Dense(`encoder_features`) + LayerNorm + tanh; inputs / 255 - 0.5 (DrQ).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import nn

from algorithms.registry import added_field
from suites.errors import UserError
from suites.zeroshot import TransitionBatch

ENCODERS = ("none", "shared", "per_network")
ENCODER_ARCHS = ("impala_small", "conv_stride2")
_ADDED = "issue 18 (DMC from pixels)"


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """The pixel fields of FB's and one-step FB's Configs (each Config inherits them).  Declared with
    `added_field`: at their defaults they leave every state run's id as it was."""

    encoder: str = added_field("none", added=_ADDED)
    """'none' (state vectors), 'per_network' (F, B, actor each their own encoder: the reference's visual
    configs, fb.md §3.1) or 'shared' (one encoder, DrQ-v2 style; the cpu size's deviation, for speed)."""
    encoder_arch: str = added_field("impala_small", added=_ADDED)
    """'impala_small' (OGBench's, the reference's visual encoder) or 'conv_stride2' (cpu size)."""
    encoder_features: int = added_field(512, added=_ADDED)
    """Output width: impala_small's Dense (512 in the reference); conv_stride2's trunk (DrQ-v2: 50)."""
    encoder_layers: int = added_field(3, added=_ADDED)
    """conv_stride2: stride-2 convolutions."""
    encoder_channels: int = added_field(32, added=_ADDED)
    """conv_stride2: channels of each convolution (DrQ: 32)."""
    augment_prob: float = added_field(0.5, added=_ADDED)
    """Probability that a training batch is randomly shifted (the reference's p_aug 0.5); 0: never."""
    augment_pad: int = added_field(3, added=_ADDED)
    """Pixels of edge padding of the random shift (the reference's 3)."""
    inference_chunk: int = added_field(1024, added=_ADDED)
    """Rows encoded at a time when inferring z from the (10k) labelled observations."""


def check_encoder_config(cfg: Any) -> None:
    from algorithms.fb.common import check_choices, check_positive

    check_choices(cfg, encoder=ENCODERS, encoder_arch=ENCODER_ARCHS)
    check_positive(cfg, "encoder_features", "encoder_layers", "encoder_channels", "inference_chunk")
    if not 0.0 <= cfg.augment_prob <= 1.0 or cfg.augment_pad < 0:
        raise UserError(
            f"{type(cfg).__module__}.Config: augment_prob must be in [0, 1] and augment_pad >= 0, got "
            f"{cfg.augment_prob!r} and {cfg.augment_pad!r}"
        )


# ---- architectures --------------------------------------------------------------------------------------
def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """flax `max_pool(window 3, stride 2, padding='SAME')`: output ceil(n / 2), padding at the end first."""
    h, w = x.shape[-2:]
    pad_h, pad_w = max((math.ceil(h / 2) - 1) * 2 + 3 - h, 0), max((math.ceil(w / 2) - 1) * 2 + 3 - w, 0)
    x = nn.functional.pad(
        x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=-math.inf
    )
    return nn.functional.max_pool2d(x, 3, 2)


def _xavier(layer: nn.Module) -> nn.Module:
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ResnetStack(nn.Module):
    """OGBench's ResnetStack: conv 3x3, max-pool 3x3/2 (SAME), `blocks` x [relu, conv, relu, conv] + skip."""

    def __init__(self, in_channels: int, channels: int, blocks: int):
        super().__init__()
        self.conv = _xavier(nn.Conv2d(in_channels, channels, 3, padding=1))
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                [
                    _xavier(nn.Conv2d(channels, channels, 3, padding=1)),
                    _xavier(nn.Conv2d(channels, channels, 3, padding=1)),
                ]
            )
            for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _max_pool_same(self.conv(x))
        for first, second in self.blocks:
            x = x + second(torch.relu(first(torch.relu(x))))
        return x


class ImpalaSmall(nn.Module):
    """OGBench's `impala_small` (ImpalaEncoder with num_blocks=1), see the module docstring."""

    def __init__(
        self, shape: tuple[int, int, int], stacks: tuple[int, ...] = (16, 32, 32), features: int = 512
    ):
        super().__init__()
        channels = (shape[0], *stacks)
        self.stacks = nn.Sequential(*(ResnetStack(a, b, 1) for a, b in zip(channels[:-1], channels[1:])))
        with torch.no_grad():
            flat = self.stacks(torch.zeros(1, *shape)).numel()
        self.dense = _xavier(nn.Linear(flat, features))
        self.out_dim = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stacks(x / 255.0)).flatten(1)
        return nn.functional.gelu(self.dense(h))


class ConvStride2(nn.Module):
    """The cpu-size encoder: stride-2 convolutions, then DrQ-v2's trunk (Dense, LayerNorm, tanh)."""

    def __init__(self, shape: tuple[int, int, int], layers: int = 3, channels: int = 32, features: int = 50):
        super().__init__()
        convs, c = [], shape[0]
        for _ in range(layers):
            convs += [nn.Conv2d(c, channels, 3, stride=2), nn.ReLU()]
            c = channels
        self.convs = nn.Sequential(*convs)
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *shape)).numel()
        self.trunk = nn.Sequential(nn.Linear(flat, features), nn.LayerNorm(features), nn.Tanh())
        self.out_dim = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.convs(x / 255.0 - 0.5).flatten(1))


def build_encoder(cfg: Any, shape: tuple[int, int, int]) -> nn.Module:
    if cfg.encoder_arch == "impala_small":
        return ImpalaSmall(shape, features=cfg.encoder_features)
    return ConvStride2(shape, cfg.encoder_layers, cfg.encoder_channels, cfg.encoder_features)


# ---- image inputs of the maps ------------------------------------------------------------------------------
class ImageInputs:
    """What `networks.map_inputs` passes a per-network-encoded map: the images and the action (or None)."""

    def __init__(self, obs: torch.Tensor, action: torch.Tensor | None):
        self.obs, self.action = obs, action


class EncodedMap(nn.Module):
    """A map (F or B) with its own encoder: inner(concat(encoder(images), action)[, z])."""

    def __init__(self, encoder: nn.Module, inner: nn.Module):
        super().__init__()
        self.encoder, self.inner = encoder, inner

    def forward(self, inputs: ImageInputs, *z: torch.Tensor) -> torch.Tensor:
        h = self.encoder(inputs.obs)
        return self.inner(h if inputs.action is None else torch.cat([h, inputs.action], dim=-1), *z)


class EncodedActor(nn.Module):
    """An actor with its own encoder: actor(encoder(images), z)."""

    def __init__(self, encoder: nn.Module, inner: nn.Module):
        super().__init__()
        self.encoder, self.inner = encoder, inner

    def forward(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.inner(self.encoder(obs), z)

    def pre_squash_mean(self, obs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.inner.pre_squash_mean(self.encoder(obs), z)


# ---- what the agents hold ----------------------------------------------------------------------------------
def random_shift(x: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Each row of x [N, C, H, W] padded by `pad` (edge values) and cropped at offsets [N, 2] (dy, dx)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    rows = (offsets[:, 0:1] + torch.arange(h, device=x.device))[:, None, :, None]  # [N, 1, H, 1]
    cols = (offsets[:, 1:2] + torch.arange(w, device=x.device))[:, None, None, :]  # [N, 1, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


class Observations(nn.Module):
    """An agent's view of observations (see the module docstring).  With `encoder="none"` it has no
    parameters and draws nothing, so state runs are exactly what they were before it existed."""

    def __init__(self, cfg: Any, obs_dim: int | tuple[int, ...]):
        super().__init__()
        self.mode, self.cfg = cfg.encoder, cfg
        images = isinstance(obs_dim, (tuple, list))
        if images and self.mode == "none":
            raise UserError(
                f"{type(cfg).__module__}.Config: the task gives image observations {tuple(obs_dim)}; "
                f"set encoder to 'shared' or 'per_network'"
            )
        if not images and self.mode != "none":
            raise UserError(
                f"{type(cfg).__module__}.Config: encoder={self.mode!r} needs image observations, but the "
                f"task gives {obs_dim}-d vectors; set encoder: none (or use a -pixels task)"
            )
        self.shape = tuple(obs_dim) if images else None
        self.encoder = build_encoder(cfg, self.shape) if self.mode == "shared" else None
        self.feature_dim = obs_dim if self.mode == "none" else cfg.encoder_features
        self.chunk = cfg.inference_chunk if images else None

    def wrap_map(self, net: nn.Module) -> nn.Module:
        """F or B as built on features; per_network: with its own encoder in front."""
        return EncodedMap(build_encoder(self.cfg, self.shape), net) if self.mode == "per_network" else net

    def wrap_actor(self, actor: nn.Module | None) -> nn.Module | None:
        if actor is None or self.mode != "per_network":
            return actor
        return EncodedActor(build_encoder(self.cfg, self.shape), actor)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as the maps take them: shared: the encoder's features; else unchanged."""
        return self.encoder(obs) if self.encoder is not None else obs

    def train_batch(self, b: TransitionBatch, generator: torch.Generator) -> TransitionBatch:
        """The training batch (already on the device): shifted with probability augment_prob, then encoded
        (shared).  State observations pass through untouched."""
        if self.mode == "none":
            return b
        obs, next_obs = b.obs, b.next_obs
        if self.cfg.augment_prob > 0 and float(torch.rand(1, generator=generator)) < self.cfg.augment_prob:
            pad = self.cfg.augment_pad
            offsets = torch.randint(0, 2 * pad + 1, (len(b), 2), generator=generator).to(obs.device)
            obs, next_obs = random_shift(obs, offsets, pad), random_shift(next_obs, offsets, pad)
        return TransitionBatch(self(obs), b.action, self(next_obs), b.next_action, b.weight)

    def in_chunks(
        self,
        fn: Callable[..., torch.Tensor],
        *tensors: torch.Tensor,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """fn over the rows of `tensors` (cast to dtype, moved to device): images in chunks of
        `inference_chunk` rows (10k stacked frames would not fit at once), state vectors in one call."""
        n = tensors[0].shape[0]
        step = self.chunk or n
        parts = [fn(*(t[i : i + step].to(device, dtype) for t in tensors)) for i in range(0, n, step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
