"""The shapes world's prompt grammar: parse, format and sample prompts, and scenes that satisfy them.

Grammar (lower case; surrounding spaces, repeated spaces and one trailing period are ignored):

  single     "a <colour> <shape>"                              a red circle / an orange square
  counting   "<count> <colour> <shape>s"                       two blue squares / 3 green circles
  relation   "a <colour> <shape> <relation> a <colour> <shape>"
                                                               a red circle to the left of a green triangle

  colour    one of render.COLOURS; "an" is written before a vowel ("an orange circle"), and
            "a"/"an" are both accepted when parsing
  shape     circle | square | triangle (plural with -s when count >= 2)
  count     one..three, or the digits 1..3; "one red circle" is the same prompt as "a red circle"
  relation  "to the left of" | "to the right of" | "above" | "below"
            ("left of", "on the left of", "right of", "on the right of" are accepted when parsing)

Meaning (the oracle checks exactly this; see oracle.py): every phrase asks for objects of its colour
and shape, exactly `count` of them (phrases with the same colour and shape add up, so "a red circle
to the left of a red circle" asks for two); other objects may be present; a relation asks that some
object of the first phrase stands to the given side of some other object of the second phrase,
judged on centroids (`relation_holds`).

A prompt is a `Prompt` dataclass; its text is `format_prompt(prompt)` (also `prompt.text`), and
`parse_prompt(format_prompt(p)) == p` for every valid `p`.  A malformed string raises `UserError`
naming the string, what is wrong, and the grammar.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from suites.errors import UserError
from suites.registry import did_you_mean
from suites.t2i.shapes.render import (BASE_COLOURS, COLOURS, DEFAULT_IMAGE_SIZE, MAX_OBJECTS, SHAPES, Scene,
                                      place_objects)

__all__ = ["RELATIONS", "FAMILIES", "COUNT_WORDS", "GRAMMAR", "ObjectPhrase", "Prompt", "parse_prompt",
           "format_prompt", "random_prompt", "relation_holds", "scene_for", "SCENE_RELATION_MARGIN",
           "SCENE_RELATION_DOMINANCE"]

COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three"}
RELATIONS: dict[str, str] = {"left": "to the left of", "right": "to the right of", "above": "above", "below": "below"}
RELATION_ALIASES: dict[str, str] = {
    "to the left of": "left", "on the left of": "left", "left of": "left",
    "to the right of": "right", "on the right of": "right", "right of": "right",
    "above": "above", "below": "below",
}
FAMILIES: tuple[str, ...] = ("single", "counting", "relation")
GRAMMAR = ("'a <colour> <shape>', '<count> <colour> <shape>s' or 'a <colour> <shape> <relation> a <colour> <shape>' "
           f"(colours: {', '.join(COLOURS)}; shapes: {', '.join(SHAPES)}; counts: one, two, three; "
           f"relations: {', '.join(RELATIONS.values())})")

# Scenes drawn for a relation prompt hold it with room to spare, so that a mild blur or a judge
# with a slightly different margin agrees: the offset along the relation's axis is at least
# SCENE_RELATION_MARGIN x image side and at least SCENE_RELATION_DOMINANCE x the cross-axis offset.
SCENE_RELATION_MARGIN = 0.2
SCENE_RELATION_DOMINANCE = 2.0


@dataclasses.dataclass(frozen=True)
class ObjectPhrase:
    """'a red circle' / 'two blue squares': `count` objects of one colour and shape."""

    colour: str
    shape: str
    count: int = 1

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; colours are {', '.join(COLOURS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; shapes are {', '.join(SHAPES)}")
        if self.count not in COUNT_WORDS:
            raise ValueError(f"count must be one of {sorted(COUNT_WORDS)}, got {self.count!r}")

    @property
    def kind(self) -> tuple[str, str]:
        """(colour, shape): what an object must look like to be counted for this phrase."""
        return self.colour, self.shape


@dataclasses.dataclass(frozen=True)
class Prompt:
    """A parsed prompt: one phrase, or two single-object phrases joined by a relation
    ("<objects[0]> <relation> <objects[1]>")."""

    objects: tuple[ObjectPhrase, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objects", tuple(self.objects))
        if self.relation is None:
            if len(self.objects) != 1:
                raise ValueError(f"a prompt without a relation has one phrase, got {len(self.objects)}")
        else:
            if self.relation not in RELATIONS:
                raise ValueError(f"unknown relation {self.relation!r}; relations are {', '.join(RELATIONS)}")
            if len(self.objects) != 2 or any(p.count != 1 for p in self.objects):
                raise ValueError("a relation joins exactly two single-object phrases")

    @property
    def family(self) -> str:
        """'relation', 'counting' (a count of two or more) or 'single'."""
        if self.relation is not None:
            return "relation"
        return "counting" if self.objects[0].count > 1 else "single"

    @property
    def required_counts(self) -> dict[tuple[str, str], int]:
        """(colour, shape) -> how many such objects the image must show (same-kind phrases add up)."""
        counts: dict[tuple[str, str], int] = {}
        for phrase in self.objects:
            counts[phrase.kind] = counts.get(phrase.kind, 0) + phrase.count
        return counts

    @property
    def text(self) -> str:
        return format_prompt(self)

    def __str__(self) -> str:
        return self.text


def _article(colour: str) -> str:
    return "an" if colour[0] in "aeiou" else "a"


def _format_phrase(phrase: ObjectPhrase) -> str:
    if phrase.count == 1:
        return f"{_article(phrase.colour)} {phrase.colour} {phrase.shape}"
    return f"{COUNT_WORDS[phrase.count]} {phrase.colour} {phrase.shape}s"


def format_prompt(prompt: Prompt) -> str:
    """The canonical text of a prompt (the form the prompt-set files use)."""
    if prompt.relation is None:
        return _format_phrase(prompt.objects[0])
    first, second = prompt.objects
    return f"{_format_phrase(first)} {RELATIONS[prompt.relation]} {_format_phrase(second)}"


def _malformed(text: str, reason: str) -> UserError:
    end = " " if reason.endswith(("?", ".")) else ". "
    return UserError(f"malformed prompt {text!r}: {reason}{end}Expected {GRAMMAR}")


_COUNT_TOKENS = {**{word: n for n, word in COUNT_WORDS.items()}, **{str(n): n for n in COUNT_WORDS}}


def _parse_phrase(words: list[str], text: str, single_only: bool) -> ObjectPhrase:
    if len(words) != 3:
        what = "each side of a relation must be" if single_only else "a phrase must be"
        raise _malformed(text, f"{what} three words (article or count, colour, shape), got {' '.join(words)!r}")
    determiner, colour, noun = words
    if determiner in ("a", "an"):
        count = 1
    elif determiner in _COUNT_TOKENS and not single_only:
        count = _COUNT_TOKENS[determiner]
    elif single_only:
        raise _malformed(text, f"a relation joins two single objects ('a <colour> <shape>'), got {' '.join(words)!r}")
    else:
        raise _malformed(text, f"expected 'a', 'an' or a count one..three, got {determiner!r}")
    if colour not in COLOURS:
        raise _malformed(text, f"unknown colour {colour!r}.{did_you_mean(colour, COLOURS)}")
    shape = noun[:-1] if noun.endswith("s") else noun
    if shape not in SHAPES:
        raise _malformed(text, f"unknown shape {noun!r}.{did_you_mean(shape, SHAPES)}")
    if count == 1 and noun != shape:
        raise _malformed(text, f"write the singular {shape!r} after {determiner!r}")
    if count > 1 and noun == shape:
        raise _malformed(text, f"write the plural '{shape}s' after {determiner!r}")
    return ObjectPhrase(colour, shape, count)


def parse_prompt(text: str) -> Prompt:
    """The `Prompt` a string means, or `UserError` naming the string and the grammar."""
    if not isinstance(text, str):
        raise UserError(f"a prompt must be a string, got {type(text).__name__} {text!r}. Expected {GRAMMAR}")
    normalised = " ".join(text.strip().lower().split())
    if normalised.endswith("."):
        normalised = normalised[:-1].rstrip()
    if not normalised:
        raise _malformed(text, "it is empty")
    padded = f" {normalised} "
    for alias in sorted(RELATION_ALIASES, key=len, reverse=True):
        marker = f" {alias} "
        if marker in padded:
            before, after = padded.split(marker, 1)
            first = _parse_phrase(before.split(), text, single_only=True)
            second = _parse_phrase(after.split(), text, single_only=True)
            return Prompt((first, second), RELATION_ALIASES[alias])
    return Prompt((_parse_phrase(normalised.split(), text, single_only=False),))


def random_prompt(rng: np.random.Generator, family: str, colours: Sequence[str] = BASE_COLOURS,
                  shapes: Sequence[str] = SHAPES) -> Prompt:
    """A uniformly random prompt of one family.  Counting prompts use counts 2..3 (a count of one is
    the single family); the two phrases of a relation prompt differ in colour or shape."""
    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    if family == "single":
        return Prompt((ObjectPhrase(pick(colours), pick(shapes)),))
    if family == "counting":
        return Prompt((ObjectPhrase(pick(colours), pick(shapes), int(rng.integers(2, MAX_OBJECTS + 1))),))
    if family == "relation":
        first = ObjectPhrase(pick(colours), pick(shapes))
        while True:
            second = ObjectPhrase(pick(colours), pick(shapes))
            if second.kind != first.kind:
                break
        return Prompt((first, second), pick(tuple(RELATIONS)))
    raise UserError(f"unknown prompt family {family!r}.{did_you_mean(family, FAMILIES)} Known: {', '.join(FAMILIES)}.")


def relation_holds(subject_xy: tuple[float, float], reference_xy: tuple[float, float], relation: str,
                   margin: float, dominance: float = 1.0) -> bool:
    """Whether the subject stands `relation` of the reference, from their centres (x right, y down).

    It holds when the offset along the relation's axis points the right way, is larger than
    `margin` pixels, and is more than `dominance` x the offset along the other axis (so with
    dominance >= 1 'left of' and 'above' never both hold)."""
    dx = reference_xy[0] - subject_xy[0]          # > 0: subject is left of reference
    dy = reference_xy[1] - subject_xy[1]          # > 0: subject is above reference
    along, across = {"left": (dx, dy), "right": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}[relation]
    return along > margin and along > dominance * abs(across)


def scene_for(prompt: Prompt | str, rng: np.random.Generator, n_distractors: int | None = None,
              distractor_colours: Sequence[str] = BASE_COLOURS, image_size: int = DEFAULT_IMAGE_SIZE) -> Scene:
    """A random scene that satisfies `prompt`.

    The scene holds the prompt's objects plus `n_distractors` others (default: uniform over what
    fits in MAX_OBJECTS); a distractor never has the colour and shape of a prompt phrase, so it
    cannot change whether the prompt holds.  For a relation prompt the first two objects stand in
    the relation with the margins SCENE_RELATION_MARGIN / SCENE_RELATION_DOMINANCE."""
    prompt = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    kinds = [phrase.kind for phrase in prompt.objects for _ in range(phrase.count)]
    room = MAX_OBJECTS - len(kinds)
    if n_distractors is None:
        n_distractors = int(rng.integers(0, room + 1))
    if not 0 <= n_distractors <= room:
        raise ValueError(f"{prompt.text!r} leaves room for 0..{room} distractors, asked for {n_distractors}")
    excluded = {phrase.kind for phrase in prompt.objects}
    options = [(c, s) for c in distractor_colours for s in SHAPES if (c, s) not in excluded]
    kinds += [options[int(rng.integers(len(options)))] for _ in range(n_distractors)]
    accept = None
    if prompt.relation is not None:
        def accept(objects) -> bool:
            return relation_holds(objects[0].centre, objects[1].centre, prompt.relation,
                                  margin=SCENE_RELATION_MARGIN * image_size, dominance=SCENE_RELATION_DOMINANCE)
    return place_objects(rng, kinds, image_size, accept=accept)
