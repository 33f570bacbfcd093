"""The exact judge of the shapes world: which parts of a prompt an image shows, read from pixels only.

The judge never sees a scene, only the image (a generator's output later), so it is the ground-truth
reward for the embedded text-to-image task.  Reading an image:

1. Colour of each pixel.  Brightness v = max channel.  The image's background level is its median
   brightness (objects cover well under half of it): 0 for black, higher for a tinted or hazy
   background.  A pixel is foreground only if it is at least `min_contrast` of the way from that
   level to full brightness, so a dark or tinted background is never an object and a blurred edge
   is cut near half height whatever the background.  A foreground pixel takes the palette colour
   nearest to its chromaticity rgb / v (every palette colour peaks at 255, so blur against black
   dims a pixel without changing its chromaticity), or stays background if that colour is farther
   than `max_chroma_distance` (a desaturated or in-between colour is no palette colour).
2. Objects.  The 8-connected components of each colour's pixels.  Components smaller than
   `min_area` pixels are specks (noise, colour fringes), and components dimmer on average than
   `min_mean_brightness` are haze; both are dropped.
3. Shape of each object.  The brightness patch around its box, rescaled so that the background
   level is 0 and the object's bright core is 1, is compared (sum of squared differences) with a
   circle, square and triangle drawn square as the renderer draws them, crisp and slightly blurred,
   in every box a pixel or two smaller or larger than the detected one; the closest wins.  Matching
   the whole patch, not only a thresholded mask, keeps the answer stable under blur and noise; it
   weighs what a hand-made feature would (the fill ratio of the box: circle pi/4, square 1,
   triangle 1/2; the triangle's low mass; square corners) at once.  The shape is None (matches no
   prompt) when the box is more elongated than `max_aspect` or the best fit leaves more than
   `max_fit_error` squared error per template pixel: a ring, a cross, an L, a right-angled or
   upside-down triangle, two merged shapes and an ellipse of aspect 1.4 are rejected, crisp or
   blurred (a blurred diamond passes for a circle).
4. Centre of each object: the centroid of its pixels, for relations (`prompts.relation_holds` with
   margin `relation_margin` x image side and `relation_dominance`).

Judging a prompt (`Judgement`): for every phrase, three parts -
  colour  some object has the phrase's colour,
  shape   some object has the phrase's shape,
  count   exactly as many objects of the phrase's colour AND shape as the prompt asks for
          (same-kind phrases add up),
and for a relation prompt a fourth, `relation`: some object of the first phrase stands in the
relation to a different object of the second.  The graded score is the fraction of parts that hold
(in [0, 1]; partial credit for, e.g., the right shape in the wrong colour), the binary score is 1
when all hold.  Objects the prompt does not mention are allowed.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np
from scipy import ndimage

from suites.t2i.shapes.prompts import ObjectPhrase, Prompt, parse_prompt, relation_holds
from suites.t2i.shapes.render import COLOURS, SHAPES

__all__ = ["JudgeConfig", "DetectedObject", "PhraseCheck", "Judgement", "detect_objects", "judge_objects",
           "judge", "score_images"]

_PALETTE_NAMES = tuple(COLOURS)
_PALETTE_CHROMA = np.array([COLOURS[name] for name in _PALETTE_NAMES], np.float32) / 255
_IN_PLANE_8_CONNECTED = np.zeros((3, 3, 3), bool)
_IN_PLANE_8_CONNECTED[1] = True          # connect neighbours within an image, never across the batch


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """Thresholds of the judge.  The defaults judge every rendered image right, crisp, blurred (0.6 px) and
    noisy (std 0.05), on black or a dark tinted background; tests/test_t2i_shapes.py checks it."""

    min_contrast: float = 0.45           # a pixel this far from the background level to white is foreground
    min_mean_brightness: float = 0.65    # an object's pixels are this bright on average (a haze is not)
    max_chroma_distance: float = 0.25    # Euclidean, chromaticity in [0, 1]^3; palette colours are >= 0.5 apart
    min_area: int = 10                   # pixels; the smallest rendered triangle (size 8) has 32
    max_aspect: float = 2.0              # box side ratio beyond which a blob is no shape (a quick reject)
    max_fit_error: float = 0.12          # squared error per template pixel beyond which no shape fits
    relation_margin: float = 0.1         # x image side: the least offset that counts as left/right/above/below
    relation_dominance: float = 1.0      # the relation's axis offset must exceed this x the other axis' offset


@dataclasses.dataclass(frozen=True)
class DetectedObject:
    """One object read from an image.  `shape` is None when no shape fits.  Pixel units, y down."""

    colour: str
    shape: str | None
    centre: tuple[float, float]
    box: tuple[int, int, int, int]       # x0, y0, width, height
    area: int
    fit_error: float                     # squared error per template pixel of the best shape

    def is_kind(self, phrase: ObjectPhrase) -> bool:
        return self.colour == phrase.colour and self.shape == phrase.shape


@dataclasses.dataclass(frozen=True)
class PhraseCheck:
    """The parts of one phrase: colour present, shape present, and the exact count of its kind."""

    phrase: ObjectPhrase
    colour_present: bool
    shape_present: bool
    count_correct: bool
    found: int                           # objects with the phrase's colour and shape


@dataclasses.dataclass(frozen=True)
class Judgement:
    """Which parts of `prompt` an image shows; `score` graded in [0, 1], `binary` all parts."""

    prompt: Prompt
    phrases: tuple[PhraseCheck, ...]
    relation_holds: bool | None          # None for prompts without a relation
    objects: tuple[DetectedObject, ...]

    @property
    def parts(self) -> dict[str, bool]:
        """Flat part name -> holds, e.g. {'object1.colour': True, ..., 'relation': False}."""
        names = ["object"] if len(self.phrases) == 1 else [f"object{i + 1}" for i in range(len(self.phrases))]
        parts: dict[str, bool] = {}
        for name, check in zip(names, self.phrases):
            parts[f"{name}.colour"] = check.colour_present
            parts[f"{name}.shape"] = check.shape_present
            parts[f"{name}.count"] = check.count_correct
        if self.relation_holds is not None:
            parts["relation"] = self.relation_holds
        return parts

    @property
    def score(self) -> float:
        parts = self.parts
        return sum(parts.values()) / len(parts)

    @property
    def binary(self) -> bool:
        return all(self.parts.values())


def _as_float_images(images) -> np.ndarray:
    """[N, H, W, 3] float32 in [0, 1] from uint8 or float images, channels last or first (NCHW, as
    diffusers returns them), with or without the batch axis."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"images must be [N, H, W, 3] or [H, W, 3] (or channels first), got shape {x.shape}")
    if x.shape[-1] != 3 and x.shape[1] == 3:
        x = np.moveaxis(x, 1, -1)
    if x.shape[-1] != 3:
        raise ValueError(f"images must have 3 colour channels, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    return np.clip(x.astype(np.float32), 0.0, 1.0)


_TEMPLATE_BLURS = (0.0, 0.7)
_MAX_BOX_GROWTH = 2
_OBJECT_LEVEL_PERCENTILE = 90   # an object's brightness: its bright core, not its blurred rim


def _draw_shapes(side: int) -> dict[str, np.ndarray]:
    """Crisp masks of each shape filling a side x side box, drawn like the renderer draws them."""
    centres = (np.arange(side, dtype=np.float32) + 0.5 - side / 2) / (side / 2)   # box edges at +-1
    dy, dx = centres[:, None], centres[None, :]
    depth = (dy + 1) / 2                                                            # 0 at the apex, 1 at the base
    return {"circle": dx * dx + dy * dy <= 1,
            "square": (np.abs(dx) <= 1) & (np.abs(dy) <= 1),
            "triangle": (depth >= 0) & (depth <= 1) & (np.abs(dx) <= depth)}


def _window_pads(height: int, width: int) -> tuple[int, int]:
    """Pixels of context above/below and left/right of a detected box: room for every candidate box."""
    side = max(height, width) + _MAX_BOX_GROWTH
    return side - height + 1, side - width + 1


@functools.lru_cache(maxsize=128)
def _shape_templates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate templates for a detected height x width box, drawn in its window (the box plus
    `_window_pads` context).  Shapes are drawn square, as the renderer draws them, crisp and
    blurred, in every square box of side max(height, width) - 1 .. + _MAX_BOX_GROWTH placed over
    the detected box: the detected box can be a pixel or two off the drawn one (the renderer leaves
    a triangle's apex row empty; blur, noise and the brightness threshold move edges), and an
    elongated blob fits no square shape.
    Returns ([K, window height, window width] float32 templates, [K] shape index)."""
    pad_y, pad_x = _window_pads(height, width)
    templates, shape_index = [], []
    longest = max(height, width)
    for side in range(longest - 1, longest + _MAX_BOX_GROWTH + 1):
        masks = _draw_shapes(side)
        # Every placement whose box covers the detected one (or lies inside it, for the smaller side).
        for extra_top in range(min(0, side - height), max(0, side - height) + 1):
            for extra_left in range(min(0, side - width), max(0, side - width) + 1):
                for k, shape in enumerate(SHAPES):
                    window = np.zeros((height + 2 * pad_y, width + 2 * pad_x), np.float32)
                    y0, x0 = pad_y - extra_top, pad_x - extra_left
                    window[y0:y0 + side, x0:x0 + side] = masks[shape]
                    for sigma in _TEMPLATE_BLURS:
                        templates.append(ndimage.gaussian_filter(window, sigma, mode="constant") if sigma else window)
                        shape_index.append(k)
    return np.stack(templates), np.array(shape_index)


def _classify_pixels(x: np.ndarray, config: JudgeConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brightness [N, H, W], palette index [N, H, W] (int8, -1 for background) of every pixel, and
    each image's background level [N] (its median brightness: objects cover well under half)."""
    brightness = x.max(-1)
    background_level = np.median(brightness, axis=(1, 2))
    threshold = background_level + config.min_contrast * (1.0 - background_level)
    chroma = x / np.maximum(brightness, 1e-6)[..., None]
    squared = ((chroma[..., None, :] - _PALETTE_CHROMA) ** 2).sum(-1)      # [N, H, W, colours]
    nearest = squared.argmin(-1).astype(np.int8)
    distance = np.sqrt(np.take_along_axis(squared, nearest[..., None].astype(np.intp), -1)[..., 0])
    foreground = (brightness >= threshold[:, None, None]) & (distance <= config.max_chroma_distance)
    return brightness, np.where(foreground, nearest, np.int8(-1)), background_level


def _fit_shape(brightness: np.ndarray, not_ours: np.ndarray, y0: int, x0: int, height: int, width: int,
               background_level: float, object_level: float, config: JudgeConfig) -> tuple[str | None, float]:
    """Best shape for the object whose box is given, and its squared error per template pixel.
    `not_ours` marks the pixels of other objects, which are read as background.  Brightness is
    rescaled so that the image's background level is 0 and the object's level is 1, as in the
    templates: a tinted background or a dim object changes the contrast, not the shape."""
    if max(height, width) > config.max_aspect * min(height, width):
        return None, float("inf")
    pad_y, pad_x = _window_pads(height, width)
    # The canvas is padded with background, so boxes at the edge get a full window too.
    window = (slice(y0, y0 + height + 2 * pad_y), slice(x0, x0 + width + 2 * pad_x))
    padding = ((pad_y, pad_y), (pad_x, pad_x))
    contrast = max(object_level - background_level, 1e-3)
    patch = np.clip((np.pad(brightness, padding, constant_values=background_level)[window] - background_level)
                    / contrast, 0.0, 1.0)
    patch = np.where(np.pad(not_ours, padding)[window], 0.0, patch)
    templates, shape_index = _shape_templates(height, width)
    squared_error = ((patch[None] - templates) ** 2).sum((1, 2))
    best = int(squared_error.argmin())
    fit_error = float(squared_error[best] / templates[best].sum())
    shape = SHAPES[shape_index[best]]
    return (shape if fit_error <= config.max_fit_error else None), fit_error


def detect_objects(images, config: JudgeConfig | None = None) -> list[tuple[DetectedObject, ...]]:
    """The objects of each image (see the module docstring), in a list as long as the batch."""
    config = config or JudgeConfig()
    x = _as_float_images(images)
    n, height, width, _ = x.shape
    brightness, palette_index, background_level = _classify_pixels(x, config)
    found: list[list[DetectedObject]] = [[] for _ in range(n)]
    rows = np.broadcast_to(np.arange(height, dtype=np.float64)[None, :, None] + 0.5, palette_index.shape)
    cols = np.broadcast_to(np.arange(width, dtype=np.float64)[None, None, :] + 0.5, palette_index.shape)
    for colour_index, colour in enumerate(_PALETTE_NAMES):
        mask = palette_index == colour_index
        if not mask.any():
            continue
        labels, n_components = ndimage.label(mask, _IN_PLANE_8_CONNECTED)
        flat = labels.ravel()
        areas = np.bincount(flat, minlength=n_components + 1)
        sum_y = np.bincount(flat, weights=rows.ravel(), minlength=n_components + 1)
        sum_x = np.bincount(flat, weights=cols.ravel(), minlength=n_components + 1)
        sum_brightness = np.bincount(flat, weights=brightness.ravel(), minlength=n_components + 1)
        for label, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None or areas[label] < config.min_area:
                continue
            if sum_brightness[label] < config.min_mean_brightness * areas[label]:
                continue
            image, box_rows, box_cols = box[0].start, box[1], box[2]
            y0, x0 = box_rows.start, box_cols.start
            box_height, box_width = box_rows.stop - y0, box_cols.stop - x0
            not_ours = (palette_index[image] >= 0) & (labels[image] != label)
            ours = labels[image, box_rows, box_cols] == label
            object_level = float(np.percentile(brightness[image, box_rows, box_cols][ours], _OBJECT_LEVEL_PERCENTILE))
            shape, fit_error = _fit_shape(brightness[image], not_ours, y0, x0, box_height, box_width,
                                          float(background_level[image]), object_level, config)
            found[image].append(DetectedObject(
                colour=colour, shape=shape, centre=(float(sum_x[label] / areas[label]), float(sum_y[label] / areas[label])),
                box=(x0, y0, box_width, box_height), area=int(areas[label]), fit_error=fit_error))
    return [tuple(sorted(objects, key=lambda o: (o.box[1], o.box[0]))) for objects in found]


def judge_objects(objects: Sequence[DetectedObject], prompt: Prompt | str, image_size: int,
                  config: JudgeConfig | None = None) -> Judgement:
    """Judge `prompt` against objects already read from an image of side `image_size`."""
    config = config or JudgeConfig()
    prompt = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    required = prompt.required_counts
    checks = []
    for phrase in prompt.objects:
        found = sum(o.is_kind(phrase) for o in objects)
        checks.append(PhraseCheck(
            phrase=phrase,
            colour_present=any(o.colour == phrase.colour for o in objects),
            shape_present=any(o.shape == phrase.shape for o in objects),
            count_correct=found == required[phrase.kind],
            found=found))
    holds = None
    if prompt.relation is not None:
        subjects = [o for o in objects if o.is_kind(prompt.objects[0])]
        references = [o for o in objects if o.is_kind(prompt.objects[1])]
        margin = config.relation_margin * image_size
        holds = any(relation_holds(s.centre, r.centre, prompt.relation, margin, config.relation_dominance)
                    for s in subjects for r in references if s is not r)
    return Judgement(prompt, tuple(checks), holds, tuple(objects))


def judge(images, prompts: Sequence[Prompt | str] | Prompt | str, config: JudgeConfig | None = None) -> list[Judgement]:
    """One `Judgement` per image; `prompts` is one prompt per image, or one prompt for all of them.

    Images: uint8 or float in [0, 1], [N, H, W, 3] or [N, 3, H, W] (one image without the batch axis
    is fine).  Prompts: `Prompt`s or strings (a malformed string raises `UserError`)."""
    x = _as_float_images(images)
    if isinstance(prompts, (str, Prompt)):
        prompts = [prompts] * len(x)
    prompts = list(prompts)
    if len(prompts) != len(x):
        raise ValueError(f"got {len(x)} images but {len(prompts)} prompts")
    parsed = {p: parse_prompt(p) for p in set(prompts) if isinstance(p, str)}
    objects = detect_objects(x, config)
    return [judge_objects(objs, parsed.get(p, p), x.shape[2], config)
            for objs, p in zip(objects, prompts)]


def score_images(images, prompts, config: JudgeConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(graded float32 [N] in [0, 1], binary bool [N]): the reward-model view of `judge`."""
    judgements = judge(images, prompts, config)
    return (np.array([j.score for j in judgements], np.float32), np.array([j.binary for j in judgements], bool))
