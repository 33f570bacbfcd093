"""Write the shapes world's versioned prompt sets: suites/t2i/prompts/shapes-v0/<set>_<split>.txt.

    python -m suites.t2i.shapes.make_prompt_sets            # (re)write the files
    python -m suites.t2i.shapes.make_prompt_sets --check    # exit 1 if the files differ from this script

Deterministic (fixed seed, no dependence on the machine).  The four sets mirror B²-DiffuRL's three
prompt templates (t2i.md §3.9; the originals are in suites/t2i/prompts/b2diffurl/) plus counting,
translated into the shapes world's vocabulary; all use the grammar of prompts.py:

  composition  (template 1: seen parts, unseen pairs.)  B²-DiffuRL gives each of 45 animals one of
               3 activities in training, in blocks of 15, and tests every animal with its other two.
               Here colours play the animals and the 3 shapes the activities: each base colour has
               one shape in train (red, green: circle; blue, yellow: square; magenta, cyan:
               triangle) and its other two shapes in test.  Train 6, test 12.
  attribute    (template 2: colour binding, natural training colours, unusual test colours.)
               Train: every base colour with every shape ("a red circle"); test: every unusual
               colour (orange, purple, white, pink) with every shape.  No test colour occurs in
               train.  B²-DiffuRL's test half of unseen objects has no counterpart (the world has
               three shapes, all seen).  Train 18, test 12.
  spatial      (template 3: spatial relations.)  Two base-colour objects of different kinds joined
               by left of / right of / above / below.  Train: 10 prompts per relation, no two
               meaning the same ("A left of B" = "B right of A").  Test: 15 prompts that swap the
               roles of a training prompt ("B left of A" after "A left of B": the same words, the
               opposite picture, as B²-DiffuRL's test pairs "bear on the right of person" /
               "person on the right of bear") and 15 whose pair of objects never appears in train.
               No test prompt means the same as a train prompt.  Train 40, test 30 (B²-DiffuRL's sizes).
  counting     "two blue squares" / "three red circles" over the base colours and shapes: each
               (colour, shape) has one of the counts 2, 3 in train and the other in test, so every
               test prompt is a seen kind with an unseen count.  Train 18, test 18.

Changing anything here changes the files: bump the directory version (shapes-v1) instead of
rewriting shapes-v0, so results of different prompt sets are never mixed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from suites.t2i.shapes.prompts import ObjectPhrase, Prompt, format_prompt
from suites.t2i.shapes.render import BASE_COLOURS, SHAPES, UNUSUAL_COLOURS

VERSION = "shapes-v0"
SEED = 0
OUT_DIR = Path(__file__).resolve().parent.parent / "prompts" / VERSION
DESCRIPTIONS = {
    "composition": "template 1 analogue: seen colours and shapes, unseen colour-shape pairs",
    "attribute": "template 2 analogue: natural (base) training colours, unusual test colours",
    "spatial": "template 3 analogue: left/right/above/below between two objects",
    "counting": "counts 2..3 of one kind; each kind's test count is unseen in train",
}
SPATIAL_TRAIN_PER_RELATION = 10
SPATIAL_TEST_SWAPPED = 15
SPATIAL_TEST_UNSEEN_PAIRS = 15


def _single(colour: str, shape: str, count: int = 1) -> Prompt:
    return Prompt((ObjectPhrase(colour, shape, count),))


def composition_sets() -> dict[str, list[Prompt]]:
    train, test = [], []
    for i, colour in enumerate(BASE_COLOURS):
        trained_shape = SHAPES[i * len(SHAPES) // len(BASE_COLOURS)]      # blocks, as B²-DiffuRL's template 1
        train.append(_single(colour, trained_shape))
        test += [_single(colour, shape) for shape in SHAPES if shape != trained_shape]
    return {"train": train, "test": test}


def attribute_sets() -> dict[str, list[Prompt]]:
    return {"train": [_single(c, s) for c in BASE_COLOURS for s in SHAPES],
            "test": [_single(c, s) for c in UNUSUAL_COLOURS for s in SHAPES]}


def _meaning(prompt: Prompt) -> tuple:
    """Prompts that describe the same picture get the same key: right/below are read as left/above
    with the roles swapped."""
    first, second = (p.kind for p in prompt.objects)
    flipped = {"right": "left", "below": "above"}
    if prompt.relation in flipped:
        return second, flipped[prompt.relation], first
    return first, prompt.relation, second


def spatial_sets(rng: np.random.Generator) -> dict[str, list[Prompt]]:
    kinds = [(c, s) for c in BASE_COLOURS for s in SHAPES]

    def relation_prompt(a: tuple[str, str], relation: str, b: tuple[str, str]) -> Prompt:
        return Prompt((ObjectPhrase(*a), ObjectPhrase(*b)), relation)

    train: list[Prompt] = []
    meanings: set[tuple] = set()
    for relation in ("left", "right", "above", "below"):
        chosen = 0
        while chosen < SPATIAL_TRAIN_PER_RELATION:
            a, b = rng.choice(len(kinds), size=2, replace=False)
            prompt = relation_prompt(kinds[a], relation, kinds[b])
            if _meaning(prompt) not in meanings:
                meanings.add(_meaning(prompt))
                train.append(prompt)
                chosen += 1
    test: list[Prompt] = []
    test_meanings: set[tuple] = set()
    for index in rng.permutation(len(train)):
        first, second = train[index].objects
        swapped = Prompt((second, first), train[index].relation)
        if _meaning(swapped) not in meanings and _meaning(swapped) not in test_meanings:
            test.append(swapped)
            test_meanings.add(_meaning(swapped))
        if len(test) == SPATIAL_TEST_SWAPPED:
            break
    seen_pairs = {frozenset(p.kind for p in prompt.objects) for prompt in train}
    while len(test) < SPATIAL_TEST_SWAPPED + SPATIAL_TEST_UNSEEN_PAIRS:
        a, b = rng.choice(len(kinds), size=2, replace=False)
        relation = ("left", "right", "above", "below")[int(rng.integers(4))]
        prompt = relation_prompt(kinds[a], relation, kinds[b])
        if frozenset((kinds[a], kinds[b])) not in seen_pairs and _meaning(prompt) not in test_meanings:
            test.append(prompt)
            test_meanings.add(_meaning(prompt))
    return {"train": train, "test": test}


def counting_sets(rng: np.random.Generator) -> dict[str, list[Prompt]]:
    train, test = [], []
    for colour in BASE_COLOURS:
        for shape in SHAPES:
            train_count = int(rng.integers(2, 4))
            train.append(_single(colour, shape, train_count))
            test.append(_single(colour, shape, 5 - train_count))
    return {"train": train, "test": test}


def build_prompt_sets() -> dict[str, dict[str, list[str]]]:
    """set name -> split -> prompt texts, exactly what the files hold (in order)."""
    sets = {"composition": composition_sets(), "attribute": attribute_sets(),
            "spatial": spatial_sets(np.random.default_rng([SEED, 3])),
            "counting": counting_sets(np.random.default_rng([SEED, 4]))}
    return {name: {split: [format_prompt(p) for p in prompts] for split, prompts in splits.items()}
            for name, splits in sets.items()}


def file_texts() -> dict[str, str]:
    """File name -> content, for every file of the version."""
    files = {}
    for name, splits in build_prompt_sets().items():
        for split, prompts in splits.items():
            header = (f"# {VERSION}/{name} {split} ({len(prompts)} prompts): {DESCRIPTIONS[name]}.\n"
                      f"# Written by suites/t2i/shapes/make_prompt_sets.py (seed {SEED}); do not edit by hand.\n")
            files[f"{name}_{split}.txt"] = header + "".join(f"{p}\n" for p in prompts)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"directory to write (default {OUT_DIR})")
    parser.add_argument("--check", action="store_true", help="only compare the files with what this script writes")
    args = parser.parse_args(argv)
    stale = []
    for file_name, text in file_texts().items():
        path = args.out / file_name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"prompt-set files differ from make_prompt_sets.py: {', '.join(stale)}; "
              f"rerun without --check (and bump the version if shapes-v0 was already used)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
