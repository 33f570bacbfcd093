"""Train the shapes world's reward model: a small CLIP, contrastively, on images rendered on the fly.

    python -m suites.t2i.train_clip --out suites/t2i/weights/shapes-clip-v0 --minutes 12
    python -m suites.t2i.train_clip --out /tmp/clip --steps 2000 --seed 0 --threads 2

It is B²-DiffuRL's reward (an open_clip CLIP scored by cosine, see rewards.py) at the shapes world's
scale: `open_clip.model.CLIP` built from MODEL_CFG (a ViT on 32x32 images with 8x8 patches and fixed
2-D sin-cos position embeddings, and a causal text transformer over open_clip's bundled CLIP BPE
tokenizer, context 16), trained with the symmetric InfoNCE loss of CLIP plus two training-only terms
(below).  Architecture choice, measured on this machine: with learned position embeddings (4x4 or
8x8 patches) neither a relation probe nor the CLIP learned left/right/above/below within minutes
(chance after ~300-750 steps); with fixed sin-cos embeddings the probe's relation axis reached 0.97
in ~300 steps, and 8x8 patches make a step ~3x cheaper than 4x4 at equal accuracy per second.  The
output directory holds
  model.safetensors       the state dict in float16 (the 49408-token embedding table dominates its size)
  open_clip_config.json   {"model_cfg", "preprocess_cfg"}: open_clip's local-dir layout, so
                          `open_clip.create_model_and_transforms("local-dir:DIR")` loads it, as
                          `suites.t2i.rewards.load_clip(DIR)` does
  config.json             the project's manifest: format, model and preprocess config, tokenizer, the
                          weights' sha256 (checked on load), training settings
  train_log.json          steps, wall time, loss history, and the evaluation below
While training, DIR/train_state.pt (model, optimizer, step, wall time; written atomically every
--checkpoint-every seconds) makes a killed run resumable: rerun the same command.  It is deleted
when the run completes (keep it with --keep-state to extend the run later with a larger budget).

Training data (every batch is a function of (seed, step) only, so a resumed run sees the same data):
  captions  the prompt grammar of shapes/prompts.py, unbiased within each family: all 10 colours
            (the unusual orange/purple/white/pink as often as the base ones), all 3 shapes, counts
            1..3, all 4 relations; families single : counting : relation = 1 : 1 : 2 (relations get
            more because they are the hardest).  With probability ALIAS_P a caption uses an
            accepted alias ("on the left of", "left of", a digit count, "one").
  images    `scene_for(prompt)` (the prompt holds; 0 extra objects half of the time, else 1..room
            distractors of any colour), rendered, then made imperfect like a generator's output:
            background tint, dimmed or slightly off-colour objects, blur, noise, and uint8
            truncation as the reward applies it.
  pairs     the batch is made of pairs (prompt, hard variant of it) with an image for each, so each
            image meets the near-miss caption as an in-batch negative and each caption the
            near-miss image: swapped roles or the opposite or an orthogonal relation ("A left of B"
            vs "B left of A"), swapped colour binding ("a red circle ... a blue square" vs "a blue
            circle ... a red square"), another colour, another shape, another count (the image of
            "two red circles" next to that of "three red circles": missing/extra objects carry
            their true caption).
  false negatives  an in-batch caption that also holds for an image (judged on the scene with the
            oracle's own rules: exact count per kind, relation on pixel centroids with the judge's
            margins) is masked out of that image's softmax, in both directions.
Loss = CLIP's symmetric InfoNCE + --pair-loss-weight x the same cross-entropy restricted to each
(prompt, variant) pair (`_pair_loss`) + --aux-loss-weight x training-only linear heads (`_aux_heads`:
the image embedding predicts every kind's count and position, both embeddings predict one canonical
relation code).  Contrastive training alone stayed bag-of-words here ("left" vs "right" text
embeddings at cosine 1.00 after 500 steps); the heads are discarded, the checkpoint is a plain CLIP.

Evaluation (train_log.json "evaluation", on fresh rendered images of a fixed seed, through the saved
float16 checkpoint and the exact clipscore path of rewards.py):
  retrieval       for each shapes-v0 prompt set and split: zero-shot top-1 accuracy of picking a
                  prompt that holds among all the set's prompts, on clean images (no distractors),
                  mildly degraded ones (blur 0.6 px, noise 0.05), harshly degraded ones (blur 1.3 px,
                  noise 0.12: beyond the training augmentation) and scenes with distractors; chance
                  is 1 / #prompts.  These are the renderer's images: how the reward reads a diffusion
                  model's samples is measured by the t2i task's evaluation (clipscore vs the oracle).
  hard_negatives  text side: on an image of prompt p, clipscore(p) > clipscore(v) for each hard
                  variant v of p that does not hold (accuracy); image side, the view that matters for
                  RL (per-prompt normalised rewards): clipscore(image of p, p) > clipscore(image of
                  v, p) over all such pairs (AUC; ties count 1/2).  Per set and per variant kind.
  notes           plain statements of where the model is weak (retrieval or hard-negative accuracy
                  below 0.8), so nobody has to dig for them.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from suites.errors import UserError
from suites.t2i import rewards
from suites.t2i.shapes.prompts import (COUNT_WORDS, RELATION_ALIASES, RELATIONS, ObjectPhrase, Prompt,
                                       format_prompt, parse_prompt, random_prompt, relation_holds, scene_for)
from suites.t2i.shapes.render import COLOURS, MAX_OBJECTS, SHAPES, Scene, SceneObject, degrade, render

__all__ = ["NAME", "MODEL_CFG", "PREPROCESS_CFG", "FAMILY_WEIGHTS", "VARIANT_KINDS", "hard_variants",
           "random_variant", "caption_text", "prompt_holds", "training_batch", "build_model", "evaluate",
           "train", "main"]

NAME = "shapes-clip-v0"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)     # open_clip.OPENAI_DATASET_MEAN / _STD
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
MODEL_CFG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32, "mlp_ratio": 4.0,
                   "pos_embed_type": "sin_cos_2d"},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 3},
}
PREPROCESS_CFG: dict[str, Any] = {"size": 32, "mode": "RGB", "mean": list(OPENAI_MEAN), "std": list(OPENAI_STD),
                                  "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
ALL_COLOURS = tuple(COLOURS)
FAMILY_WEIGHTS = {"single": 0.25, "counting": 0.25, "relation": 0.5}
ALIAS_P = 0.1
NO_DISTRACTOR_P = 0.5
STATE_FILE = "train_state.pt"
LOSS_COLUMNS = ("loss", "contrastive", "pair", "aux")
LOG_FILE = "train_log.json"
EVAL_SETS = ("composition", "attribute", "spatial", "counting")
EVAL_SEED = 20240
WEAK = 0.8
RETRIEVAL_DEGRADE = {"degraded": {"noise_std": 0.05, "blur_sigma": 0.6}, "harsh": {"noise_std": 0.12, "blur_sigma": 1.3}}
RETRIEVAL_CONDITIONS = ("clean", "degraded", "harsh", "distractors")
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
ORTHOGONAL = {"left": ("above", "below"), "right": ("above", "below"), "above": ("left", "right"),
              "below": ("left", "right")}
VARIANT_KINDS = ("colour", "shape", "count", "swap_roles", "opposite_relation", "orthogonal_relation",
                 "swap_colours")
_RELATION_VARIANT_WEIGHTS = {"swap_roles": 0.25, "opposite_relation": 0.1, "orthogonal_relation": 0.15,
                             "swap_colours": 0.15, "colour": 0.2, "shape": 0.15}
_OBJECT_VARIANT_WEIGHTS = {"colour": 0.4, "shape": 0.3, "count": 0.3}


# ---- captions and their hard variants ----------------------------------------------------------------

def _other(rng: np.random.Generator, options: Sequence[str], current: str) -> str:
    choices = [o for o in options if o != current]
    return choices[int(rng.integers(len(choices)))]


def hard_variants(prompt: Prompt, rng: np.random.Generator) -> dict[str, Prompt]:
    """Near misses of `prompt`, one per applicable kind (VARIANT_KINDS); none of them means the same.
    Relation variants keep the two phrases of different kinds."""
    out: dict[str, Prompt] = {}
    if prompt.relation is None:
        phrase = prompt.objects[0]
        out["colour"] = Prompt((ObjectPhrase(_other(rng, ALL_COLOURS, phrase.colour), phrase.shape, phrase.count),))
        out["shape"] = Prompt((ObjectPhrase(phrase.colour, _other(rng, SHAPES, phrase.shape), phrase.count),))
        counts = [c for c in COUNT_WORDS if c != phrase.count]
        out["count"] = Prompt((ObjectPhrase(phrase.colour, phrase.shape, counts[int(rng.integers(len(counts)))]),))
        return out
    first, second = prompt.objects
    relation = prompt.relation
    out["swap_roles"] = Prompt((second, first), relation)
    out["opposite_relation"] = Prompt((first, second), OPPOSITE[relation])
    out["orthogonal_relation"] = Prompt((first, second), ORTHOGONAL[relation][int(rng.integers(2))])
    if first.colour != second.colour and first.shape != second.shape:
        out["swap_colours"] = Prompt((ObjectPhrase(second.colour, first.shape), ObjectPhrase(first.colour, second.shape)),
                                     relation)
    which = int(rng.integers(2))
    for kind, attribute, options in (("colour", "colour", ALL_COLOURS), ("shape", "shape", SHAPES)):
        for _ in range(20):
            phrases = [first, second]
            old = phrases[which]
            new_value = _other(rng, options, getattr(old, attribute))
            phrases[which] = ObjectPhrase(**{"colour": old.colour, "shape": old.shape, attribute: new_value})
            if phrases[0].kind != phrases[1].kind:
                out[kind] = Prompt(tuple(phrases), relation)
                break
    return out


def random_variant(prompt: Prompt, rng: np.random.Generator) -> Prompt:
    """One hard variant of `prompt`, its kind drawn with the weights above among the applicable kinds."""
    variants = hard_variants(prompt, rng)
    weights = _RELATION_VARIANT_WEIGHTS if prompt.relation is not None else _OBJECT_VARIANT_WEIGHTS
    kinds = [k for k in weights if k in variants]
    p = np.array([weights[k] for k in kinds])
    return variants[kinds[int(rng.choice(len(kinds), p=p / p.sum()))]]


def random_caption_prompt(rng: np.random.Generator) -> Prompt:
    """A prompt from the training distribution: family by FAMILY_WEIGHTS, then uniform over all colours,
    shapes, counts and relations (`prompts.random_prompt`)."""
    families = list(FAMILY_WEIGHTS)
    family = families[int(rng.choice(len(families), p=list(FAMILY_WEIGHTS.values())))]
    return random_prompt(rng, family, ALL_COLOURS)


_ALIASES = {rel: [alias for alias, target in RELATION_ALIASES.items() if target == rel] for rel in RELATIONS}


def caption_text(prompt: Prompt, rng: np.random.Generator, alias_p: float = ALIAS_P) -> str:
    """The prompt's canonical text, or (with probability alias_p) a form the grammar also accepts."""
    if rng.random() >= alias_p:
        return format_prompt(prompt)

    def phrase(p: ObjectPhrase) -> str:
        if p.count == 1:
            return f"{'one' if rng.random() < 0.3 else ('an' if p.colour[0] in 'aeiou' else 'a')} {p.colour} {p.shape}"
        return f"{str(p.count) if rng.random() < 0.5 else COUNT_WORDS[p.count]} {p.colour} {p.shape}s"

    if prompt.relation is None:
        return phrase(prompt.objects[0])
    aliases = _ALIASES[prompt.relation]
    return f"{phrase(prompt.objects[0])} {aliases[int(rng.integers(len(aliases)))]} {phrase(prompt.objects[1])}"


# ---- ground truth on scenes (the oracle's rules, without pixels) ------------------------------------------

@functools.lru_cache(maxsize=None)
def _centroid_offset(shape: str, size: int) -> tuple[float, float]:
    """Pixel centroid of a rendered shape relative to its box corner (the judge reads centroids)."""
    mask = render(Scene((SceneObject(shape, "white", size, 0, 0),), image_size=size)).max(-1) > 0
    rows, cols = np.nonzero(mask)
    return float(cols.mean() + 0.5), float(rows.mean() + 0.5)


def _scene_summary(scene: Scene) -> dict[tuple[str, str], list[tuple[float, float]]]:
    summary: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for obj in scene.objects:
        dx, dy = _centroid_offset(obj.shape, obj.size)
        summary.setdefault((obj.colour, obj.shape), []).append((obj.x0 + dx, obj.y0 + dy))
    return summary


@functools.lru_cache(maxsize=1)
def _judge_margins() -> tuple[float, float]:
    from suites.t2i.shapes.oracle import JudgeConfig
    config = JudgeConfig()
    return config.relation_margin, config.relation_dominance


def _requirements(prompt: Prompt) -> tuple:
    """What `_holds` checks, precomputed: ((kind, count), ...), relation, subject kind, reference kind."""
    kinds = [p.kind for p in prompt.objects]
    return (tuple(prompt.required_counts.items()), prompt.relation, kinds[0], kinds[-1])


def _holds(summary, requirements: tuple, image_size: int) -> bool:
    counts, relation, subject, reference = requirements
    for kind, count in counts:
        if len(summary.get(kind, ())) != count:
            return False
    if relation is None:
        return True
    margin, dominance = _judge_margins()
    return any(relation_holds(s, r, relation, margin * image_size, dominance)
               for s in summary[subject] for r in summary[reference] if s is not r)


def prompt_holds(scene: Scene, prompt: Prompt | str) -> bool:
    """Whether `prompt` holds for `scene` by the oracle's rules (exact count of each phrase's kind,
    relation between pixel centroids with the judge's margin and dominance)."""
    prompt = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    return _holds(_scene_summary(scene), _requirements(prompt), scene.image_size)


# ---- training data --------------------------------------------------------------------------------------

def _distractors(prompt: Prompt, rng: np.random.Generator) -> int:
    room = MAX_OBJECTS - sum(p.count for p in prompt.objects)
    if room <= 0 or rng.random() < NO_DISTRACTOR_P:
        return 0
    return int(rng.integers(1, room + 1))


def imperfect(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rendered float images [B, H, W, 3] made like a generator's: background tint (30%), dimmed and
    slightly off-colour objects (30%), blur (50%: sigma 0.5 / 0.8 / 1.1 px), noise (50%: std 0.01..0.08),
    then truncation to the uint8 grid as the reward applies it."""
    x = images.astype(np.float32, copy=True)
    n = len(x)
    background = x.max(-1, keepdims=True) == 0
    tint = rng.uniform(0.0, 0.2, (n, 1, 1, 3)).astype(np.float32) * (rng.random((n, 1, 1, 1)) < 0.3)
    x = np.where(background, tint, x)
    dim = rng.uniform(0.75, 1.0, (n, 1, 1, 1)) * rng.uniform(0.93, 1.0, (n, 1, 1, 3))
    dim = np.where(rng.random((n, 1, 1, 1)) < 0.3, dim, 1.0).astype(np.float32)
    x = np.where(background, x, x * dim)
    sigma = rng.choice([0.0, 0.5, 0.8, 1.1], size=n, p=[0.5, 0.2, 0.2, 0.1])
    for s in (0.5, 0.8, 1.1):
        group = sigma == s
        if group.any():
            x[group] = degrade(x[group], rng, noise_std=0.0, blur_sigma=float(s))
    noise = rng.uniform(0.01, 0.08, (n, 1, 1, 1)) * (rng.random((n, 1, 1, 1)) < 0.5)
    x = x + rng.normal(0.0, 1.0, x.shape).astype(np.float32) * noise.astype(np.float32)
    return np.floor(np.clip(x, 0.0, 1.0) * 255) / 255


KINDS = tuple((c, s) for c in ALL_COLOURS for s in SHAPES)
_KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}


def _canonical(prompt: Prompt) -> tuple[int, int, int]:
    """(first kind, second kind, axis) of a relation prompt in one form for both phrasings: first is
    the left (or upper) object, axis 0 horizontal / 1 vertical; (kind, none, 2) without a relation."""
    if prompt.relation is None:
        return _KIND_INDEX[prompt.objects[0].kind], len(KINDS), 2
    a, b = (_KIND_INDEX[p.kind] for p in prompt.objects)
    if prompt.relation in ("right", "below"):
        a, b = b, a
    return a, b, 0 if prompt.relation in ("left", "right") else 1


def _targets(scenes: Sequence[Scene], summaries, prompts: Sequence[Prompt], image_size: int) -> dict[str, np.ndarray]:
    """Labels for the training-only auxiliary heads (see `_aux_heads`): per image, the count of every
    (colour, shape) kind, the mean centroid of each present kind in [-1, 1], and for an image of a
    relation prompt without distractors its canonical relation (`_canonical`); per caption, its
    canonical relation and its first phrase's count."""
    n = len(scenes)
    counts = np.zeros((n, len(KINDS)), np.int64)
    positions = np.zeros((n, len(KINDS), 2), np.float32)
    for i, summary in enumerate(summaries):
        for kind, centres in summary.items():
            counts[i, _KIND_INDEX[kind]] = len(centres)
            positions[i, _KIND_INDEX[kind]] = np.mean(centres, axis=0) / image_size * 2 - 1
    canonical = np.array([_canonical(p) for p in prompts])
    relation_image = np.array([p.relation is not None and len(s.objects) == 2 for p, s in zip(prompts, scenes)])
    return {"counts": counts, "positions": positions, "first": canonical[:, 0], "second": canonical[:, 1],
            "axis": canonical[:, 2], "relation_image": relation_image,
            "count": np.array([p.objects[0].count - 1 for p in prompts])}


def training_batch(seed: int, step: int, batch_size: int, image_size: int = 32
                   ) -> tuple[np.ndarray, list[str], np.ndarray, dict[str, np.ndarray]]:
    """(images float32 [B, H, W, 3], captions [B], false_negative bool [B, B], auxiliary targets) for
    one step; a function of (seed, step) only.  false_negative[i, j] (i != j): caption j also holds
    for image i."""
    rng = np.random.default_rng([seed, step, 1])
    prompts: list[Prompt] = []
    while len(prompts) < batch_size:
        prompt = random_caption_prompt(rng)
        prompts += [prompt, random_variant(prompt, rng)]
    prompts = prompts[:batch_size]
    scenes = [scene_for(p, rng, n_distractors=_distractors(p, rng), distractor_colours=ALL_COLOURS,
                        image_size=image_size) for p in prompts]
    images = imperfect(render(scenes, np.float32), rng)
    captions = [caption_text(p, rng) for p in prompts]
    summaries = [_scene_summary(s) for s in scenes]
    requirements = [_requirements(p) for p in prompts]
    holds = np.array([[_holds(summary, r, image_size) for r in requirements] for summary in summaries])
    return images, captions, holds & ~np.eye(batch_size, dtype=bool), _targets(scenes, summaries, prompts, image_size)


# ---- model and training ---------------------------------------------------------------------------------

def build_model():
    from open_clip.model import CLIP
    return CLIP(**json.loads(json.dumps(MODEL_CFG)))


def _normalise(images: np.ndarray):
    import torch
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        embedding = "embedding" in name
        (decay if param.ndim >= 2 and not embedding else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr(base: float, step: int, progress: float, warmup: int, floor: float = 0.05) -> float:
    warm = min(1.0, (step + 1) / warmup)
    return base * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0))))


def _aux_heads(embed_dim: int):
    """Training-only linear heads on the (unnormalised) image and text embeddings.  Contrastive
    training alone sits for a long time on a saddle where neither tower encodes position, binding or
    relation (there is nothing to align them to), so text embeddings stay bag-of-words.  The heads
    ask the image embedding for each kind's count and position, and both embeddings for the same
    canonical relation code (`_canonical`: left/upper kind, right/lower kind, axis), so "A left of B",
    "B right of A" and an image showing it get one linear code to align.  The heads are not saved:
    the checkpoint is a plain open_clip CLIP."""
    from torch import nn

    n_kinds = len(KINDS)
    return nn.ModuleDict({
        "counts": nn.Linear(embed_dim, n_kinds * (MAX_OBJECTS + 1)),
        "positions": nn.Linear(embed_dim, n_kinds * 2),
        "image_first": nn.Linear(embed_dim, n_kinds),
        "image_second": nn.Linear(embed_dim, n_kinds + 1),
        "image_axis": nn.Linear(embed_dim, 3),
        "text_first": nn.Linear(embed_dim, n_kinds),
        "text_second": nn.Linear(embed_dim, n_kinds + 1),
        "text_axis": nn.Linear(embed_dim, 3),
        "text_count": nn.Linear(embed_dim, MAX_OBJECTS),
    })


def _aux_loss(heads, image_embedding, text_embedding, targets: dict[str, Any]):
    import torch
    import torch.nn.functional as F

    n_kinds = len(KINDS)
    counts = torch.from_numpy(targets["counts"])
    loss = F.cross_entropy(heads["counts"](image_embedding).reshape(-1, MAX_OBJECTS + 1), counts.reshape(-1))
    present = (counts > 0).float()
    predicted = heads["positions"](image_embedding).reshape(-1, n_kinds, 2)
    squared = ((predicted - torch.from_numpy(targets["positions"])) ** 2).sum(-1)
    loss = loss + (squared * present).sum() / present.sum().clamp_min(1)
    for name in ("first", "second", "axis"):
        target = torch.from_numpy(targets[name])
        loss = loss + F.cross_entropy(heads[f"text_{name}"](text_embedding), target)
        relation_images = torch.from_numpy(targets["relation_image"])
        if relation_images.any():
            loss = loss + F.cross_entropy(heads[f"image_{name}"](image_embedding[relation_images]),
                                          target[relation_images])
    return loss + F.cross_entropy(heads["text_count"](text_embedding), torch.from_numpy(targets["count"]))


def _pair_loss(logits):
    """Cross-entropy within each (prompt, hard variant) pair of the batch (rows 2k, 2k+1): each image
    against the two captions and each caption against the two images.  It keeps the near misses'
    gradient from being drowned by the easy in-batch negatives early in training.  A pair whose
    variant also holds (masked to -inf) contributes nothing."""
    import torch
    import torch.nn.functional as F

    n = len(logits) // 2 * 2
    if n == 0:
        return logits.sum() * 0
    blocks = logits[:n, :n].reshape(n // 2, 2, n // 2, 2).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # [pairs, 2, 2]
    valid = torch.isfinite(blocks).all(-1).all(-1)
    if not valid.any():
        return logits.sum() * 0
    blocks = blocks[valid]
    labels = torch.arange(2).repeat(len(blocks))
    return (F.cross_entropy(blocks.reshape(-1, 2), labels)
            + F.cross_entropy(blocks.transpose(1, 2).reshape(-1, 2), labels)) / 2


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_json(path: Path, data: Any) -> None:
    _atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def _save_state(path: Path, state: dict[str, Any]) -> None:
    import torch
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """What must not change across a resume."""
    return {"model_cfg": MODEL_CFG, "seed": args.seed, "batch_size": args.batch_size, "lr": args.lr,
            "weight_decay": args.weight_decay, "warmup_steps": args.warmup_steps, "family_weights": FAMILY_WEIGHTS,
            "bf16": not args.no_bf16, "pair_loss_weight": args.pair_loss_weight,
            "init_logit_scale": args.init_logit_scale, "aux_loss_weight": args.aux_loss_weight}


def _write_checkpoint(out: Path, model, settings: dict[str, Any], training: dict[str, Any]) -> str:
    import open_clip
    import torch
    from safetensors.torch import save_file

    state = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous()
             for k, v in model.state_dict().items()}
    tmp = out / f".{rewards.CLIP_WEIGHTS}.tmp"
    save_file(state, str(tmp), metadata={"format": rewards.CLIP_FORMAT, "name": NAME})
    os.replace(tmp, out / rewards.CLIP_WEIGHTS)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out / rewards.CLIP_WEIGHTS, 0o666 & ~umask)        # safetensors writes 0600
    sha = rewards.file_sha256(out / rewards.CLIP_WEIGHTS)
    _atomic_json(out / rewards.OPEN_CLIP_CONFIG, {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG})
    _atomic_json(out / rewards.CLIP_CONFIG, {
        "format": rewards.CLIP_FORMAT, "version": rewards.CLIP_FORMAT_VERSION, "name": NAME,
        "model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG,
        "tokenizer": {"kind": "open_clip SimpleTokenizer (bundled bpe_simple_vocab_16e6.txt.gz)",
                      "context_length": MODEL_CFG["text_cfg"]["context_length"]},
        "weights": {rewards.CLIP_WEIGHTS: {"sha256": sha, "dtype": "float16",
                                           "bytes": (out / rewards.CLIP_WEIGHTS).stat().st_size,
                                           "parameters": int(sum(v.numel() for v in state.values()))}},
        "open_clip_version": open_clip.__version__,
        "trained_by": "python -m suites.t2i.train_clip",
        "training": {**{k: v for k, v in settings.items() if k != "model_cfg"}, **training},
    })
    return sha


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) into args.out; returns the train_log dict (written to DIR/train_log.json)."""
    import torch
    import torch.nn.functional as F
    from open_clip.tokenizer import SimpleTokenizer
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    settings = _settings(args)
    if args.fresh and state_path.exists():
        state_path.unlink()
    if not state_path.exists() and (out / rewards.CLIP_WEIGHTS).exists() and not args.fresh:
        raise UserError(f"{out} already holds a trained model ({rewards.CLIP_WEIGHTS}) and no {STATE_FILE} to "
                        f"resume; pass --fresh to retrain it from scratch, or choose another --out")

    torch.manual_seed(args.seed)
    model = build_model()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(args.init_logit_scale))
    heads = _aux_heads(MODEL_CFG["embed_dim"])
    groups = _param_groups(model, args.weight_decay)
    groups[1]["params"] = groups[1]["params"] + list(heads.parameters())
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    step, train_wall, history, resumes = 0, 0.0, [], []
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if json.loads(json.dumps(state["settings"])) != json.loads(json.dumps(settings)):
            raise UserError(f"{state_path} was written with other settings ({state['settings']}); rerun with the "
                            f"same --seed/--batch-size/--lr/... to resume, or pass --fresh to start over")
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["aux_heads"])
        optimizer.load_state_dict(state["optimizer"])
        step, train_wall, history, resumes = state["step"], state["train_wall_s"], state["history"], state["resumes"]
        resumes.append(step)
        print(f"resuming {out} at step {step} ({train_wall:.0f} s trained)", file=sys.stderr)

    def done() -> bool:
        return step >= args.steps if args.steps is not None else train_wall >= args.minutes * 60

    def progress() -> float:
        return step / args.steps if args.steps is not None else train_wall / (args.minutes * 60)

    tokenizer = SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    token_cache: dict[str, Any] = {}

    def tokens(captions: list[str]):
        missing = [c for c in dict.fromkeys(captions) if c not in token_cache]
        if missing:
            token_cache.update(zip(missing, tokenizer(missing)))
        return torch.stack([token_cache[c] for c in captions])

    by_steps = args.steps is not None
    bar = tqdm(total=args.steps if by_steps else int(args.minutes * 60), initial=step if by_steps else int(train_wall),
               unit="step" if by_steps else "s", desc="train_clip", dynamic_ncols=True, mininterval=2.0,
               file=sys.stderr)
    recent: list[list[float]] = []
    last_save = time.perf_counter()

    def save() -> None:
        _save_state(state_path, {"model": model.state_dict(), "aux_heads": heads.state_dict(),
                                 "optimizer": optimizer.state_dict(), "step": step, "train_wall_s": train_wall,
                                 "history": history, "resumes": resumes, "settings": settings})

    model.train()
    # The next batch is drawn in a thread while torch computes this one (torch releases the GIL).
    prefetch = ThreadPoolExecutor(max_workers=1)
    upcoming = prefetch.submit(training_batch, args.seed, step, args.batch_size)
    while not done():
        started = time.perf_counter()
        images, captions, false_negative, targets = upcoming.result()
        upcoming = prefetch.submit(training_batch, args.seed, step + 1, args.batch_size)
        x, text = _normalise(images), tokens(captions)
        mask = torch.from_numpy(false_negative)
        for group in optimizer.param_groups:
            group["lr"] = _lr(args.lr, step, progress(), args.warmup_steps)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.no_bf16):
            image_embedding, text_embedding = model.encode_image(x), model.encode_text(text)
        image_embedding, text_embedding = image_embedding.float(), text_embedding.float()
        image_features = F.normalize(image_embedding, dim=-1)
        text_features = F.normalize(text_embedding, dim=-1)
        logit_scale = model.logit_scale.exp()
        logits = logit_scale * image_features @ text_features.T
        logits = logits.masked_fill(mask, float("-inf"))
        labels = torch.arange(len(logits))
        contrastive = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        pair = _pair_loss(logits) if args.pair_loss_weight > 0 else torch.zeros(())
        aux = _aux_loss(heads, image_embedding, text_embedding, targets) if args.aux_loss_weight > 0 \
            else torch.zeros(())
        loss = contrastive + args.pair_loss_weight * pair + args.aux_loss_weight * aux
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        train_wall += time.perf_counter() - started
        recent.append([loss.item(), contrastive.item(), pair.item(), aux.item()])
        if step % args.log_every == 0:
            means = np.mean(recent[-args.log_every:], axis=0)
            history.append([step, round(train_wall, 1), *(round(float(v), 4) for v in means)])
        bar.update(1 if by_steps else int(train_wall) - bar.n)
        means = np.mean(recent[-20:], axis=0)
        bar.set_postfix(step=step, loss=f"{means[0]:.3f}", clip=f"{means[1]:.3f}", scale=f"{logit_scale.item():.0f}",
                        refresh=False)
        if time.perf_counter() - last_save >= args.checkpoint_every:
            save()
            last_save = time.perf_counter()
    bar.close()
    prefetch.shutdown(wait=True, cancel_futures=True)
    save()
    if recent:
        final = np.mean(recent[-50:], axis=0)
    elif history:
        final = np.array(history[-1][2:])
    else:
        final = np.full(4, np.nan)
    training = {"steps": step, "images_seen": step * args.batch_size, "train_wall_s": round(train_wall, 1),
                "threads": args.threads, "final_loss": round(float(final[0]), 4),
                "final_loss_parts": {name: round(float(v), 4) for name, v in zip(LOSS_COLUMNS[1:], final[1:])}}
    sha = _write_checkpoint(out, model, settings, training)
    log: dict[str, Any] = {"name": NAME, **training,
                           "final_loss_window": "mean of the last 50 steps (total = contrastive + pair_loss_weight "
                                                "x pair + aux_loss_weight x aux)",
                           "resumed_at_steps": resumes, "batch_size": args.batch_size, "seed": args.seed,
                           "lr": args.lr, "bf16": not args.no_bf16, "weights_sha256": sha,
                           "loss_history": {"columns": ["step", "train_wall_s", *LOSS_COLUMNS], "rows": history}}
    return log


# ---- evaluation ---------------------------------------------------------------------------------------

def _nchw(images: np.ndarray):
    import torch
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def _auc(positive: np.ndarray, negative: np.ndarray) -> tuple[float, int]:
    """Sum over all (positive, negative) pairs of 1[pos > neg] + 1/2 1[pos == neg], and the pair count."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).sum() + 0.5 * (diff == 0).sum()), diff.size


def evaluate(clip, images_per_prompt: int = 16, seed: int = EVAL_SEED, sets: Sequence[str] = EVAL_SETS
             ) -> dict[str, Any]:
    """Retrieval and hard-negative numbers (see the module docstring) for a `rewards.ClipScore`."""
    from suites.t2i.prompt_sets import load_prompt_set

    k_variant = max(1, images_per_prompt // 2)
    rng = np.random.default_rng(seed)
    retrieval: dict[str, Any] = {}
    per_set: dict[str, Any] = {}
    by_kind: dict[str, dict[str, list[float]]] = {k: {"text_hits": [0.0, 0], "image_pairs": [0.0, 0]}
                                                  for k in VARIANT_KINDS}
    for set_name in sets:
        for split in ("train", "test"):
            texts = list(load_prompt_set(f"shapes-v0/{set_name}", split))
            prompts = [parse_prompt(t) for t in texts]
            scenes = [scene_for(p, rng, n_distractors=0) for p in prompts for _ in range(images_per_prompt)]
            clean = render(scenes, np.float32)
            crowded_scenes = [scene_for(p, rng, distractor_colours=ALL_COLOURS) for p in prompts
                              for _ in range(images_per_prompt)]
            text_embeddings = clip.embed_texts(texts)
            entry: dict[str, Any] = {"prompts": len(texts), "images": len(scenes), "chance": round(1 / len(texts), 4)}
            clean_embeddings = None
            conditions = (("clean", scenes, clean),
                          ("degraded", scenes, degrade(clean, rng, **RETRIEVAL_DEGRADE["degraded"])),
                          ("harsh", scenes, degrade(clean, rng, **RETRIEVAL_DEGRADE["harsh"])),
                          ("distractors", crowded_scenes, render(crowded_scenes, np.float32)))
            for condition, condition_scenes, images in conditions:
                embeddings = clip.embed_images(_nchw(images))
                if condition == "clean":
                    clean_embeddings = embeddings
                best = (embeddings @ text_embeddings.T).argmax(1).numpy()
                hits = [prompt_holds(scene, prompts[b]) for scene, b in zip(condition_scenes, best)]
                entry[condition] = round(float(np.mean(hits)), 4)
            retrieval[f"{set_name}/{split}"] = entry
            # hard negatives
            text_hits, text_total, image_hits, image_total = 0.0, 0, 0.0, 0
            for i, (text, prompt) in enumerate(zip(texts, prompts)):
                own = clean_embeddings[i * images_per_prompt:(i + 1) * images_per_prompt]
                own_scenes = scenes[i * images_per_prompt:(i + 1) * images_per_prompt]
                own_scores = (own @ text_embeddings[i]).numpy()
                variants = hard_variants(prompt, rng)
                variant_texts = [format_prompt(v) for v in variants.values()]
                variant_embeddings = clip.embed_texts(variant_texts)
                variant_scenes = [scene_for(v, rng, n_distractors=0) for v in variants.values() for _ in range(k_variant)]
                variant_image_embeddings = clip.embed_images(_nchw(render(variant_scenes, np.float32)))
                for j, (kind, variant) in enumerate(variants.items()):
                    valid = np.array([not prompt_holds(s, variant) for s in own_scenes])
                    scores_v = (own @ variant_embeddings[j]).numpy()
                    hits = float(((own_scores > scores_v) + 0.5 * (own_scores == scores_v))[valid].sum())
                    text_hits += hits
                    text_total += int(valid.sum())
                    by_kind[kind]["text_hits"][0] += hits
                    by_kind[kind]["text_hits"][1] += int(valid.sum())
                    v_scenes = variant_scenes[j * k_variant:(j + 1) * k_variant]
                    v_valid = np.array([not prompt_holds(s, prompt) for s in v_scenes])
                    v_scores = (variant_image_embeddings[j * k_variant:(j + 1) * k_variant] @ text_embeddings[i]).numpy()
                    wins, pairs = _auc(own_scores, v_scores[v_valid])
                    image_hits += wins
                    image_total += pairs
                    by_kind[kind]["image_pairs"][0] += wins
                    by_kind[kind]["image_pairs"][1] += pairs
            per_set[f"{set_name}/{split}"] = {
                "text_side_accuracy": round(text_hits / max(text_total, 1), 4), "text_side_pairs": text_total,
                "image_side_auc": round(image_hits / max(image_total, 1), 4), "image_side_pairs": image_total}
    kinds = {kind: {"text_side_accuracy": round(v["text_hits"][0] / v["text_hits"][1], 4) if v["text_hits"][1] else None,
                    "image_side_auc": round(v["image_pairs"][0] / v["image_pairs"][1], 4) if v["image_pairs"][1] else None,
                    "pairs": v["text_hits"][1] + v["image_pairs"][1]}
             for kind, v in by_kind.items()}
    notes = []
    for name, entry in retrieval.items():
        weak = [f"retrieval on {c} images {entry[c]:.2f} (chance {entry['chance']:.2f})"
                for c in RETRIEVAL_CONDITIONS if entry[c] < WEAK]
        weak += [f"hard-negative {m} {per_set[name][m]:.2f} (chance 0.5)"
                 for m in ("text_side_accuracy", "image_side_auc") if per_set[name][m] < WEAK]
        if weak:
            notes.append(f"weak on {name}: " + "; ".join(weak))
    for kind, entry in kinds.items():
        weak = [f"{m} {entry[m]:.2f}" for m in ("text_side_accuracy", "image_side_auc")
                if entry[m] is not None and entry[m] < WEAK]
        if weak:
            notes.append(f"weak on variant kind {kind!r} (all sets; chance 0.5): " + "; ".join(weak))
    return {"seed": seed, "images_per_prompt": images_per_prompt, "variant_images_per_prompt": k_variant,
            "retrieval_conditions": {"clean": "rendered, no distractors",
                                     "degraded": f"clean + {RETRIEVAL_DEGRADE['degraded']} (inside the training "
                                                 f"augmentation's range)",
                                     "harsh": f"clean + {RETRIEVAL_DEGRADE['harsh']} (beyond it: training blur "
                                              f"<= 1.1 px, noise <= 0.08)",
                                     "distractors": "rendered with scene_for's default 0..room extra objects of "
                                                    "any colour; a hit is any prompt that holds"},
            "retrieval": retrieval, "hard_negatives": {"per_set": per_set, "per_kind": kinds},
            "notes": notes or [f"no retrieval or hard-negative number is below {WEAK}"]}


# ---- command line -----------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m suites.t2i.train_clip",
        description="Train the shapes world's CLIP reward model (open_clip architecture) on rendered images "
                    "and grammar captions; write model.safetensors, open_clip_config.json, config.json and "
                    "train_log.json into --out.  A killed run resumes from --out/train_state.pt when rerun.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output directory (e.g. suites/t2i/weights/shapes-clip-v0)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=None,
                        help="training wall-time budget in minutes, summed over resumes (default 12 when --steps "
                             "is not given); the LR schedule follows the elapsed fraction")
    budget.add_argument("--steps", type=int, default=None,
                        help="train for exactly this many steps in all (a reproducible schedule)")
    parser.add_argument("--seed", type=int, default=0, help="model init and data seed")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=128, help="images (= captions) per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (cosine decay to 5%%)")
    parser.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (matrices only)")
    parser.add_argument("--warmup-steps", type=int, default=100, help="linear LR warm-up steps")
    parser.add_argument("--pair-loss-weight", type=float, default=1.0,
                        help="weight of the extra cross-entropy within each (prompt, hard variant) pair")
    parser.add_argument("--aux-loss-weight", type=float, default=1.0,
                        help="weight of the training-only auxiliary heads (kinds, counts, positions, relation)")
    parser.add_argument("--init-logit-scale", type=float, default=1 / 0.07,
                        help="initial CLIP logit scale (1 / temperature; learned, capped at 100)")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 instead of bfloat16 autocast")
    parser.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between resumable checkpoints")
    parser.add_argument("--log-every", type=int, default=25, help="steps per loss-history entry")
    parser.add_argument("--eval-images", type=int, default=16,
                        help="images per prompt in the final evaluation (0 skips it)")
    parser.add_argument("--eval-only", action="store_true",
                        help="do not train: evaluate the model already in --out and update its train_log.json")
    parser.add_argument("--fresh", action="store_true", help="ignore and overwrite an existing state or model in --out")
    parser.add_argument("--keep-state", action="store_true",
                        help=f"keep {STATE_FILE} after a completed run (to extend it later with a larger budget)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.steps is None and args.minutes is None:
        args.minutes = 12.0
    for name in ("batch_size", "threads", "warmup_steps", "log_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if (args.steps is not None and args.steps < 1) or (args.minutes is not None and args.minutes <= 0):
        raise UserError("--steps must be >= 1 and --minutes > 0")
    if args.batch_size < 2:
        raise UserError("--batch-size must be >= 2 (a contrastive batch needs negatives)")
    # Threads that spin while waiting make 2 threads ~10x slower when other jobs share the cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    started = time.perf_counter()
    out = Path(args.out)
    if args.eval_only:
        rewards.check_clip_checkpoint(out)
        log = json.loads((out / LOG_FILE).read_text()) if (out / LOG_FILE).is_file() else {"name": NAME}
        args.eval_images = args.eval_images or 16
    else:
        log = train(args)
    if args.eval_images > 0:
        import torch
        torch.set_num_threads(args.threads)
        print("evaluating ...", file=sys.stderr)
        eval_started = time.perf_counter()
        clip = rewards.ClipScore(checkpoint=out)
        log["evaluation"] = evaluate(clip, images_per_prompt=args.eval_images)
        log["evaluation"]["wall_s"] = round(time.perf_counter() - eval_started, 1)
    else:
        log["evaluation"] = None
    if not args.eval_only:
        log["total_wall_s_this_process"] = round(time.perf_counter() - started, 1)
    _atomic_json(out / LOG_FILE, log)
    if not args.keep_state and not args.eval_only:
        (out / STATE_FILE).unlink(missing_ok=True)
    summary = {k: log.get(k) for k in ("steps", "train_wall_s", "final_loss")}
    print(f"wrote {out}: {summary}", file=sys.stderr)
    if log["evaluation"]:
        for name, entry in log["evaluation"]["retrieval"].items():
            hard = log["evaluation"]["hard_negatives"]["per_set"][name]
            retrieval = " ".join(f"{c} {entry[c]:.3f}" for c in RETRIEVAL_CONDITIONS)
            print(f"  {name:18s} retrieval {retrieval} (chance {entry['chance']:.3f}); hard negatives text "
                  f"{hard['text_side_accuracy']:.3f} image AUC {hard['image_side_auc']:.3f}", file=sys.stderr)
        for note in log["evaluation"]["notes"]:
            print(f"  {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from suites.errors import run_script
    run_script(main)
