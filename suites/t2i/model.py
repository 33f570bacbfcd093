"""The one interface between a text-to-image model and the diffusion-RL core.

Both the embedded shapes model (`suites.t2i.shapes_model`) and Stable Diffusion at the `paper` size
(`suites.t2i.sd`) are loaded into a `T2IModel`.  The core (`algorithms/diffusion/`) only ever sees
this object, so DDPO and B²-DiffuRL run the same code on both.

Conventions
- `unet` is a diffusers `UNet2DConditionModel`; `scheduler` a diffusers `DDIMScheduler` whose
  `config.prediction_type` is "epsilon" or "v_prediction".
- `encode_prompts(prompts)` returns the cross-attention states `[B, L, D]` (float32, no grad) of a
  frozen text encoder.  `encode_prompts([""])` is the unconditional (negative) embedding used by
  classifier-free guidance, as in ddpo-pytorch.
- `decode(latents)` maps the final sample `[B, *latent_shape]` to images `[B, 3, H, W]` in [0, 1]
  (a VAE decode for SD; `(x / 2 + 0.5).clamp(0, 1)` for the pixel-space shapes model).
- `hashes` names the weights the model was built from (file name -> sha256), for run manifests.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

__all__ = ["T2IModel"]


@dataclasses.dataclass
class T2IModel:
    name: str
    unet: Any                                   # diffusers.UNet2DConditionModel
    scheduler: Any                              # diffusers.DDIMScheduler
    encode_prompts: Callable[[Sequence[str]], Any]
    decode: Callable[[Any], Any]
    latent_shape: tuple[int, int, int]          # (C, H, W) of the sample the UNet denoises
    hashes: dict[str, str] = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Loader-specific objects (e.g. the diffusers pipeline at the paper size, for LoRA export)."""

    def to(self, device) -> "T2IModel":
        """Move the model's modules (the UNet; at the paper size the whole pipeline: VAE, text encoder)
        to `device`.  Prompt states come back on the CPU and the core moves them to the UNet's device."""
        pipeline = self.extras.get("pipeline")
        if pipeline is not None:
            pipeline.to(device)
        self.unet.to(device)
        return self
