"""Pretrain the shapes world's base text-to-image model on rendered images with biased captions.

    python -m suites.t2i.pretrain --out suites/t2i/weights/shapes-base-v0 --steps 4000 --threads 2
    python -m suites.t2i.pretrain --out /tmp/shapes --minutes 5          # a wall-clock budget instead

Every batch is rendered on the fly by the shapes renderer (`prompts.scene_for`, `render.render`):
a caption is drawn from the caption distribution below, a scene that satisfies it is drawn, and the
UNet learns to denoise the scene's image given the caption's MiniLM states (10% of captions are
dropped to "" for classifier-free guidance).  The caption always tells the truth about its image;
the bias is in WHICH captions (and so which images) are frequent.

The caption distribution is deliberately biased, as web captions are for SD, so that the base model
is decent but imperfect on the shapes-v0 train prompts (room for RL to raise the reward) and
measurably misaligned on the test prompts (what B²-DiffuRL's test templates probe).  Each bias mirrors
what one test split holds (make_prompt_sets.py); the tables are read from the train files of
`BIAS_SOURCE`, so they stay consistent with them:

  UNUSUAL_COLOUR_WEIGHT  each unusual colour (orange, purple, white, pink: attribute test) is drawn
                         with this weight against 1 for each base colour: ~1.3% of phrases in all.
  TYPICAL_SHAPE_PROB     a base colour takes its "typical" shape (the one composition train pairs it
                         with: red/green circle, blue/yellow square, magenta/cyan triangle) with this
                         probability, each other shape (composition test) with half the rest: 8:1.
  TYPICAL_COUNT_PROB     a counting caption of a base kind uses the count counting train gives that
                         kind with this probability, the other count (counting test) otherwise.
  SPATIAL_TRAIN_PROB     a relation caption is one of the spatial train prompts (uniformly) with this
                         probability; otherwise two random phrases and a uniform relation.  The test
                         prompts that swap a train prompt's roles ("B left of A") use the same words
                         as a frequent caption for the opposite picture.
  FAMILY_PROBS           single / counting / relation captions; relation captions are a minority.
  N_DISTRACTORS          objects the caption does not mention (0: the caption names every object).
  CAPTION_DROP_PROB      captions replaced by "" (the unconditional branch of guidance).

Resumable: a checkpoint (model, optimizer, EMA, step, RNG, wall time) is written atomically every
`--checkpoint-minutes` and on Ctrl-C / SIGTERM; rerunning the same command resumes from it (batches
and noise are functions of (seed, step), so a resumed run ends with the same weights, bit for bit on
the same machine and thread count, as an uninterrupted one).  At the end DIR holds unet.safetensors,
config.json (model config + the weights' sha256) and train_log.json (settings, speed, final loss,
the caption distribution, and the oracle's accuracy per shapes-v0 prompt set and split), and the
checkpoint is removed (unless --keep-checkpoint).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from suites.errors import UserError

__all__ = ["BIAS_SOURCE", "CAPTION_DROP_PROB", "CAPTION_PRESETS", "FAMILY_PROBS", "UNUSUAL_COLOUR_WEIGHT", "TYPICAL_SHAPE_PROB",
           "TYPICAL_COUNT_PROB", "SPATIAL_TRAIN_PROB", "N_DISTRACTORS", "SCHEDULES", "CaptionDistribution",
           "render_batch", "evaluate", "main"]

# ---- the caption distribution (see the module docstring) -------------------------------------------
BIAS_SOURCE = "shapes-v0"
CAPTION_DROP_PROB = 0.10
FAMILY_PROBS: dict[str, float] = {"single": 0.5, "counting": 0.2, "relation": 0.3}
UNUSUAL_COLOUR_WEIGHT = 0.02
TYPICAL_SHAPE_PROB = 0.8
TYPICAL_COUNT_PROB = 0.85
SPATIAL_TRAIN_PROB = 0.5
N_DISTRACTORS = 0

# Caption presets (`--captions`).  "v0" is the table above (the committed 32 x 32 model).  "relation-heavy" is
# the 16 x 16 world's (shapes16-base-v0): more captions with several objects, chosen before that model was
# trained, from the 32 x 32 base model's train-split oracle (binary): it seldom drew the two objects of a
# spatial prompt (0.12) or the exact count (0.22) while single objects were near solved (composition 0.94),
# so within a spatial or counting prompt's group rewards hardly varied for the right reason.
CAPTION_PRESETS: dict[str, dict[str, Any]] = {
    "v0": {"family_probs": FAMILY_PROBS},
    "relation-heavy": {"family_probs": {"single": 0.3, "counting": 0.3, "relation": 0.4}},
}

# ---- noise schedules compared when the default was chosen (ShapesModelConfig's docstring) -------------
SCHEDULES: dict[str, dict[str, Any]] = {
    "sd-epsilon": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                       rescale_betas_zero_snr=False, prediction_type="epsilon", timestep_spacing="leading",
                       steps_offset=1, clip_sample=False),
    "zero-snr-v": dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                       rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing",
                       steps_offset=0, clip_sample=False),
    "cosine-clip": dict(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=False,
                        prediction_type="epsilon", timestep_spacing="leading", steps_offset=1, clip_sample=True),
}

CHECKPOINT_FILE = "checkpoint.pt"
TRAIN_LOG_FILE = "train_log.json"
FP32_LIMIT_BYTES = 8_500_000         # save the UNet in float32 up to ~8 MB, else float16
EVAL_SETS = ("composition", "attribute", "spatial", "counting")
EVAL_SPLITS = ("train", "test")


class CaptionDistribution:
    """The biased caption sampler: `sample(rng)` -> (caption text, Prompt); tables from BIAS_SOURCE."""

    def __init__(self, source: str = BIAS_SOURCE, family_probs: dict[str, float] | None = None):
        from suites.t2i.prompt_sets import load_prompt_set
        from suites.t2i.shapes.prompts import parse_prompt
        from suites.t2i.shapes.render import BASE_COLOURS, COLOURS, SHAPES
        self.source = source
        self.shapes = SHAPES
        self.colours = tuple(COLOURS)
        weights = np.array([1.0 if c in BASE_COLOURS else UNUSUAL_COLOUR_WEIGHT for c in self.colours])
        self.colour_probs = weights / weights.sum()
        self.typical_shape = {p.objects[0].colour: p.objects[0].shape
                              for p in map(parse_prompt, load_prompt_set(f"{source}/composition", "train"))}
        self.typical_count = {p.objects[0].kind: p.objects[0].count
                              for p in map(parse_prompt, load_prompt_set(f"{source}/counting", "train"))}
        self.spatial_train = tuple(map(parse_prompt, load_prompt_set(f"{source}/spatial", "train")))
        self.family_table = dict(family_probs or FAMILY_PROBS)
        if set(self.family_table) != set(FAMILY_PROBS):
            raise ValueError(f"family_probs must give {sorted(FAMILY_PROBS)}, got {sorted(self.family_table)}")
        self.families = tuple(FAMILY_PROBS)
        self.family_probs = np.array([self.family_table[f] for f in self.families])
        self.family_probs /= self.family_probs.sum()

    def _kind(self, rng: np.random.Generator) -> tuple[str, str]:
        colour = self.colours[int(rng.choice(len(self.colours), p=self.colour_probs))]
        typical = self.typical_shape.get(colour)
        if typical is None:
            return colour, self.shapes[int(rng.integers(len(self.shapes)))]
        if rng.random() < TYPICAL_SHAPE_PROB:
            return colour, typical
        others = [s for s in self.shapes if s != typical]
        return colour, others[int(rng.integers(len(others)))]

    def sample(self, rng: np.random.Generator):
        """One caption's Prompt (never dropped here; `render_batch` drops captions)."""
        from suites.t2i.shapes.prompts import RELATIONS, ObjectPhrase, Prompt
        family = self.families[int(rng.choice(len(self.families), p=self.family_probs))]
        if family == "single":
            return Prompt((ObjectPhrase(*self._kind(rng)),))
        if family == "counting":
            kind = self._kind(rng)
            typical = self.typical_count.get(kind)
            if typical is None:
                count = int(rng.integers(2, 4))
            else:
                count = typical if rng.random() < TYPICAL_COUNT_PROB else 5 - typical
            return Prompt((ObjectPhrase(*kind, count),))
        if rng.random() < SPATIAL_TRAIN_PROB:
            return self.spatial_train[int(rng.integers(len(self.spatial_train)))]
        first = self._kind(rng)
        second = self._kind(rng)
        while second == first:
            second = self._kind(rng)
        relations = tuple(RELATIONS)
        return Prompt((ObjectPhrase(*first), ObjectPhrase(*second)), relations[int(rng.integers(len(relations)))])

    def describe(self) -> dict[str, Any]:
        """The parameters, for train_log.json."""
        return {"source": self.source, "caption_drop_prob": CAPTION_DROP_PROB, "family_probs": self.family_table,
                "unusual_colour_weight": UNUSUAL_COLOUR_WEIGHT, "typical_shape_prob": TYPICAL_SHAPE_PROB,
                "typical_count_prob": TYPICAL_COUNT_PROB, "spatial_train_prob": SPATIAL_TRAIN_PROB,
                "n_distractors": N_DISTRACTORS, "typical_shape": self.typical_shape,
                "typical_count": {f"{c} {s}": n for (c, s), n in self.typical_count.items()}}

    def split_frequencies(self, n: int = 20000, seed: int = 0) -> dict[str, float]:
        """Share of (non-dropped) captions that are exactly a prompt of each shapes-v0 set/split, per
        prompt of the split (so splits of different sizes compare): how often the model saw them."""
        from suites.t2i.prompt_sets import load_prompt_set
        rng = np.random.default_rng(seed)
        counts: dict[str, int] = {}
        for _ in range(n):
            text = self.sample(rng).text
            counts[text] = counts.get(text, 0) + 1
        out = {}
        for name in EVAL_SETS:
            for split in EVAL_SPLITS:
                prompts = load_prompt_set(f"{self.source}/{name}", split)
                out[f"{name}/{split}"] = sum(counts.get(p, 0) for p in prompts) / n / len(prompts)
        return out


def render_batch(distribution: CaptionDistribution, rng: np.random.Generator, batch_size: int,
                 image_size: int, render_size: int | None = None) -> tuple[list[str], np.ndarray]:
    """(captions, images float32 [B, 3, H, W] in [-1, 1]) drawn with `rng`; dropped captions are "".
    Scenes are drawn and rendered at `render_size` (default `image_size`) and area-averaged down to
    `image_size` (the 16 x 16 world: the 32 x 32 scenes, anti-aliased; its decoder upsamples them back)."""
    from suites.t2i.shapes.prompts import scene_for
    from suites.t2i.shapes.render import render
    render_size = render_size or image_size
    if render_size % image_size:
        raise ValueError(f"render_size {render_size} must be a multiple of image_size {image_size}")
    captions, scenes = [], []
    for _ in range(batch_size):
        prompt = distribution.sample(rng)
        scenes.append(scene_for(prompt, rng, n_distractors=N_DISTRACTORS, image_size=render_size))
        captions.append("" if rng.random() < CAPTION_DROP_PROB else prompt.text)
    images = render(scenes, dtype=np.float32).transpose(0, 3, 1, 2)
    factor = render_size // image_size
    if factor > 1:
        images = images.reshape(batch_size, 3, image_size, factor, image_size, factor).mean((3, 5))
    return captions, np.ascontiguousarray(images * 2 - 1)


# ---------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------

def evaluate(model, images_per_prompt: int = 16, seed: int = 0, sets: Sequence[str] = EVAL_SETS,
             splits: Sequence[str] = EVAL_SPLITS, num_steps: int = 20, guidance_scale: float = 5.0,
             eta: float = 1.0, batch_size: int = 128, scheduler_overrides: dict[str, Any] | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Oracle accuracy of `model` on shapes-v0 prompt sets: {"<set>/<split>": {"graded", "binary",
    "prompts", "background"}} where graded/binary are means over images (equal images per prompt) and
    background is the mean median brightness of the images (0 for a clean black background).
    Each distinct prompt is sampled once (`images_per_prompt` images from one seeded noise stream)."""
    import torch
    from suites.t2i.prompt_sets import load_prompt_set
    from suites.t2i.shapes.oracle import score_images
    from suites.t2i.shapes_model import sample_images
    wanted = {(name, split): load_prompt_set(f"{BIAS_SOURCE}/{name}", split) for name in sets for split in splits}
    unique = list(dict.fromkeys(p for prompts in wanted.values() for p in prompts))
    generator = torch.Generator().manual_seed(seed)
    per_prompt: dict[str, tuple[float, float, float]] = {}
    chunk = max(1, batch_size // images_per_prompt)
    iterator = range(0, len(unique), chunk)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="eval", unit="batch", file=sys.stderr, mininterval=_tqdm_interval())
    for start in iterator:
        prompts = [p for p in unique[start:start + chunk] for _ in range(images_per_prompt)]
        images = sample_images(model, prompts, num_steps=num_steps, guidance_scale=guidance_scale, eta=eta,
                               generator=generator, batch_size=len(prompts),
                               scheduler_overrides=scheduler_overrides)
        graded, binary = score_images(images.numpy(), prompts)
        background = np.median(images.numpy().max(1), axis=(1, 2))
        for i, prompt in enumerate(dict.fromkeys(prompts)):
            sl = slice(i * images_per_prompt, (i + 1) * images_per_prompt)
            per_prompt[prompt] = (float(graded[sl].mean()), float(binary[sl].mean()), float(background[sl].mean()))
    results: dict[str, Any] = {}
    for (name, split), prompts in wanted.items():
        rows = np.array([per_prompt[p] for p in prompts])
        results[f"{name}/{split}"] = {"graded": round(float(rows[:, 0].mean()), 4),
                                      "binary": round(float(rows[:, 1].mean()), 4),
                                      "background": round(float(rows[:, 2].mean()), 4), "prompts": len(prompts)}
    return results


# ---------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainSettings:
    """Everything that changes the trained weights (a checkpoint resumes only with the same settings)."""
    seed: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    ema_decay: float          # 0: no EMA (what gets saved, EMA or raw, is --save-weights)
    precision: str            # "bf16" (CPU autocast) or "fp32"
    schedule: str
    model: dict[str, Any]
    captions: str = "v0"


def _tqdm_interval() -> float:
    return 0.5 if sys.stderr.isatty() else 60.0


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_write_json(path: Path, data: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def _resolve_precision(choice: str) -> str:
    import torch
    if choice != "auto":
        return choice
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


def _model_config(schedule: str, overrides: str | None):
    from suites.t2i.shapes_model import ShapesModelConfig
    if schedule not in SCHEDULES:
        raise UserError(f"unknown --schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    base = ShapesModelConfig().to_dict()
    base.update(SCHEDULES[schedule])
    if overrides:
        text = Path(overrides[1:]).read_text() if overrides.startswith("@") else overrides
        try:
            extra = json.loads(text)
        except json.JSONDecodeError as error:
            raise UserError(f"--model-config is not valid JSON ({error.msg}); pass e.g. "
                            f"'{{\"block_out_channels\": [16, 32]}}' or @file.json") from None
        if not isinstance(extra, dict):
            raise UserError("--model-config must be a JSON object of ShapesModelConfig fields")
        base.update(extra)
    try:
        return ShapesModelConfig.from_dict(base)
    except (TypeError, ValueError) as error:
        raise UserError(f"bad model config: {error}") from None


class _Interrupted(Exception):
    pass


def _raise_interrupt(signum, frame):       # SIGTERM -> the same path as Ctrl-C
    raise _Interrupted(signal.Signals(signum).name)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import io
    import torch
    buffer = io.BytesIO()
    torch.save(state, buffer)
    _atomic_write_bytes(path, buffer.getvalue())


def _state_dict_bytes(unet_state: dict, dtype) -> bytes:
    from safetensors.torch import save
    return save({k: v.detach().to(dtype).contiguous() for k, v in sorted(unet_state.items())})


def train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm
    from suites.t2i.shapes_model import (CONFIG_FILE, FORMAT, FORMAT_VERSION, WEIGHTS_FILE, build_scheduler,
                                         build_unet, model_from_unet, training_target)
    from suites.t2i.text_encoder import shared_encoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = _model_config(args.schedule, args.model_config)
    settings = TrainSettings(seed=args.seed, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                             weight_decay=args.weight_decay, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
                             precision=_resolve_precision(args.precision), schedule=args.schedule,
                             model=config.to_dict(), captions=args.captions)
    distribution = CaptionDistribution(**CAPTION_PRESETS[args.captions])
    encoder = shared_encoder(config.text_max_length)
    torch.manual_seed(args.seed)                  # the initial weights
    unet = build_unet(config)
    scheduler = build_scheduler(config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    ema = None
    if args.ema_decay > 0:
        ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    step, wall, loss_ema = 0, 0.0, None
    ckpt_path = out / CHECKPOINT_FILE
    if ckpt_path.exists() and args.resume:
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        except Exception as error:            # a truncated file cannot happen (atomic), a foreign one can
            raise UserError(f"{ckpt_path}: unreadable checkpoint ({type(error).__name__}); delete it or "
                            f"pass --no-resume to start over") from None
        if state.get("settings") != dataclasses.asdict(settings):
            saved = state.get("settings") or {}
            diff = sorted(k for k in set(saved) | set(dataclasses.asdict(settings))
                          if saved.get(k) != dataclasses.asdict(settings).get(k))
            raise UserError(f"{ckpt_path} was made with different settings ({', '.join(diff)}); rerun with the "
                            f"same options to resume, or pass --no-resume to start over")
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        ema = state["ema"]
        step, wall, loss_ema = state["step"], state["wall_seconds"], state["loss_ema"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resuming {out} at step {step} ({wall / 60:.1f} min trained)", file=sys.stderr)
    elif ckpt_path.exists():
        ckpt_path.unlink()
    total_steps = args.steps
    budget = args.minutes * 60 if args.minutes is not None else None
    stop_after = args.stop_after

    def lr_at(s: int) -> float:
        return args.lr * min(1.0, (s + 1) / max(1, args.warmup_steps))

    def checkpoint() -> None:
        _save_checkpoint(ckpt_path, {"settings": dataclasses.asdict(settings), "step": step, "wall_seconds": wall,
                                     "loss_ema": loss_ema, "unet": unet.state_dict(),
                                     "optimizer": optimizer.state_dict(), "ema": ema,
                                     "torch_rng": torch.get_rng_state()})

    def done() -> bool:
        if total_steps is not None and step >= total_steps:
            return True
        return budget is not None and wall >= budget

    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if settings.precision == "bf16"
                else contextlib.nullcontext())
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    bar = tqdm(total=total_steps, initial=step, desc="pretrain", unit="step", file=sys.stderr,
               mininterval=_tqdm_interval(), disable=args.quiet)
    last_checkpoint = time.monotonic()
    interrupted = None
    unet.train()
    try:
        while not done():
            if stop_after is not None and step >= stop_after:
                interrupted = f"--stop-after {stop_after}"
                break
            started = time.monotonic()
            rng = np.random.default_rng([args.seed, step])
            captions, images = render_batch(distribution, rng, args.batch_size, config.image_size,
                                            config.output_size)
            generator = torch.Generator().manual_seed((args.seed << 32) + step)
            x0 = torch.from_numpy(images)
            noise = torch.randn(x0.shape, generator=generator)
            timesteps = torch.randint(0, config.num_train_timesteps, (x0.shape[0],), generator=generator)
            noisy = scheduler.add_noise(x0, noise, timesteps)
            target = training_target(scheduler, x0, noise, timesteps)
            context = encoder(captions)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            with autocast:
                prediction = unet(noisy, timesteps, context).sample
            loss = torch.nn.functional.mse_loss(prediction.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(unet.parameters(), args.grad_clip)
            optimizer.step()
            if ema is not None:
                decay = min(args.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    for name, value in unet.state_dict().items():
                        if value.dtype.is_floating_point:
                            ema[name].mul_(decay).add_(value, alpha=1 - decay)
                        else:
                            ema[name].copy_(value)
            value = loss.item()
            if not np.isfinite(value):
                raise RuntimeError(f"the loss became {value} at step {step}; lower --lr")
            loss_ema = value if loss_ema is None else 0.99 * loss_ema + 0.01 * value
            step += 1
            wall += time.monotonic() - started
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.4f}", min=f"{wall / 60:.1f}", refresh=False)
            if time.monotonic() - last_checkpoint >= args.checkpoint_minutes * 60:
                checkpoint()
                last_checkpoint = time.monotonic()
    except (KeyboardInterrupt, _Interrupted) as error:
        interrupted = str(error) or "Ctrl-C"
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        bar.close()
    if interrupted is not None:
        checkpoint()
        print(f"stopped ({interrupted}) at step {step}; checkpoint {ckpt_path}; rerun the same command to resume",
              file=sys.stderr)
        return 0 if interrupted.startswith("--stop-after") else 130

    # ---- final artefacts ----
    checkpoint()        # the final state: a kill during the evaluation below does not cost training
    final_state = ema if (ema is not None and args.save_weights == "ema") else unet.state_dict()
    nbytes = sum(v.numel() * 4 for v in final_state.values())
    dtype = torch.float32 if nbytes <= FP32_LIMIT_BYTES else torch.float16
    weights = _state_dict_bytes(final_state, dtype)
    import hashlib
    sha = hashlib.sha256(weights).hexdigest()
    _atomic_write_bytes(out / WEIGHTS_FILE, weights)
    _atomic_write_json(out / CONFIG_FILE, {
        "format": FORMAT, "version": FORMAT_VERSION, "model": config.to_dict(),
        "weights": {WEIGHTS_FILE: {"sha256": sha, "dtype": str(dtype).replace("torch.", ""),
                                   "parameters": int(sum(v.numel() for v in final_state.values()))}},
        "text_encoder": encoder.identity,
    })
    log: dict[str, Any] = {
        "steps": step, "wall_seconds": round(wall, 1), "steps_per_second": round(step / max(wall, 1e-9), 3),
        "final_loss_ema": None if loss_ema is None else round(loss_ema, 5), "threads": threads,
        "settings": dataclasses.asdict(settings), "schedule": args.schedule,
        "scheduler": config.scheduler_kwargs(), "weights_dtype": str(dtype).replace("torch.", ""),
        "weights_sha256": sha, "saved_weights": "ema" if final_state is ema else "raw",
        "caption_distribution": distribution.describe(),
        "caption_frequency_per_prompt": {k: round(v, 5) for k, v in distribution.split_frequencies().items()},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count()},
    }
    if args.eval_images > 0:
        from safetensors.torch import load
        eval_unet = build_unet(config)
        eval_unet.load_state_dict({k: v.float() for k, v in load(weights).items()})
        model = model_from_unet(eval_unet, config, name=out.name, encoder=encoder)
        started = time.monotonic()
        splits = tuple(s.strip() for s in args.eval_splits.split(",") if s.strip())
        log["eval"] = evaluate(model, images_per_prompt=args.eval_images, seed=args.eval_seed, splits=splits,
                               num_steps=args.eval_steps, progress=not args.quiet)
        log["eval_settings"] = {"images_per_prompt": args.eval_images, "seed": args.eval_seed,
                                "num_steps": args.eval_steps,
                                "eta": 1.0, "guidance_scale": 5.0, "negative_prompt": "",
                                "seconds": round(time.monotonic() - started, 1)}
    _atomic_write_json(out / TRAIN_LOG_FILE, log)
    if ckpt_path.exists() and not args.keep_checkpoint:
        ckpt_path.unlink()
    summary = f"wrote {out / WEIGHTS_FILE} (sha256 {sha[:12]}), {step} steps in {wall / 60:.1f} min"
    if loss_ema is not None:
        summary += f", loss {loss_ema:.4f}"
    print(summary, file=sys.stderr)
    for key, row in (log.get("eval") or {}).items():
        print(f"  {key:<22} graded {row['graded']:.3f}  binary {row['binary']:.3f}  background {row['background']:.3f}",
              file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m suites.t2i.pretrain",
        description="Pretrain the shapes world's base text-to-image model (a pixel-space diffusers UNet "
                    "conditioned on frozen MiniLM states) on rendered images with deliberately biased "
                    "captions. Writes DIR/unet.safetensors, DIR/config.json and DIR/train_log.json; "
                    "resumable (rerun the same command after an interruption).",
        epilog="The committed model: python -m suites.t2i.pretrain --out suites/t2i/weights/shapes-base-v0 "
               "--steps N --threads 2 (see its train_log.json for N).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (created; holds the checkpoint while training)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="train this many optimizer steps in all")
    length.add_argument("--minutes", type=float, default=None,
                        help="train for this many minutes of training wall time in all (counted across resumes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of batches, noise and initial weights")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", dest="resume", action="store_true", default=True,
                        help="resume from DIR/checkpoint.pt when it exists")
    resume.add_argument("--no-resume", dest="resume", action="store_false",
                        help="discard an existing checkpoint and start over")
    parser.add_argument("--batch-size", type=int, default=64, help="images per optimizer step")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (constant after warm-up)")
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear learning-rate warm-up steps")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    parser.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip (0: none)")
    parser.add_argument("--ema-decay", type=float, default=0.999,
                        help="decay of the weights' exponential moving average (0: no EMA)")
    parser.add_argument("--save-weights", choices=("ema", "raw"), default="ema",
                        help="which weights to write at the end: the EMA (when --ema-decay > 0) or the raw ones; "
                             "not a training setting, so a kept checkpoint can be finished either way")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="UNet forward precision while training (bf16 CPU autocast is ~1.4x faster where the CPU "
                             "has native bf16; auto picks it then); weights are float32 either way")
    parser.add_argument("--schedule", choices=tuple(SCHEDULES), default="zero-snr-v",
                        help="noise schedule / prediction type preset (ShapesModelConfig documents the comparison)")
    parser.add_argument("--model-config", default=None,
                        help="JSON object (or @file.json) overriding ShapesModelConfig fields, e.g. a tiny test model")
    parser.add_argument("--checkpoint-minutes", type=float, default=2.0, help="minutes between checkpoints")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="keep DIR/checkpoint.pt after finishing (to extend the run later with more --steps)")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="stop after this many steps in all as if interrupted (checkpoint, no final files); "
                             "for testing resumption")
    parser.add_argument("--eval-images", type=int, default=16,
                        help="images per prompt of the final oracle evaluation on shapes-v0 (0: skip it)")
    parser.add_argument("--eval-splits", default="train,test", help="comma-separated splits to evaluate")
    parser.add_argument("--eval-steps", type=int, default=20, help="DDIM steps of the final oracle evaluation")
    parser.add_argument("--captions", choices=tuple(CAPTION_PRESETS), default="v0",
                        help="caption distribution preset (CAPTION_PRESETS): v0 is the committed 32 x 32 model's")
    parser.add_argument("--eval-seed", type=int, default=1234, help="noise seed of the final evaluation")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.steps is None and args.minutes is None:
        raise UserError("say how long to train: --steps N or --minutes M")
    for name in ("steps", "minutes", "batch_size", "lr", "eval_steps"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if not 0 <= args.ema_decay < 1:
        raise UserError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if args.seed < 0:
        raise UserError(f"--seed must be >= 0, got {args.seed}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    return train(args)


if __name__ == "__main__":
    from suites.errors import run_script
    run_script(main)
