"""Versioned prompt-set files and their loader: `load_prompt_set("shapes-v0/spatial", "train")`.

Layout (suites/t2i/prompts/, see its README.md for where every list comes from):

  <group>/<set>_<split>.txt|json   a set with splits (split: train or test)
  <group>/<set>.txt|json           a set without splits: load it with split "all"

A set's name is "<group>/<set>": shapes-v0/composition, b2diffurl/template1, ddpo/simple_animals...
.txt files hold one prompt per line (blank lines and lines starting with '#' are skipped);
.json files hold a list of strings (B²-DiffuRL's own format).  Every set is checked on load: no
empty set, no empty or duplicate prompt, and in the shapes world's groups (names starting with
"shapes-") every prompt must parse under the shapes grammar.  A bad file raises `UserError`
naming the file and the line (or list item).
"""
from __future__ import annotations

import json
from pathlib import Path

from suites.errors import UserError
from suites.registry import UnknownName, did_you_mean, lookup

__all__ = ["PROMPTS_DIR", "SPLITS", "WHOLE_SET", "prompt_set_files", "load_prompt_set"]

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
SPLITS = ("train", "test")
WHOLE_SET = "all"                    # the split name of a set stored without splits
_SUFFIXES = (".txt", ".json")
_SHAPES_GROUP_PREFIX = "shapes-"


def prompt_set_files(root: Path | str | None = None) -> dict[str, dict[str, Path]]:
    """Set name -> split -> file, read from the directory layout under `root` (default PROMPTS_DIR)."""
    root = Path(root) if root is not None else PROMPTS_DIR
    sets: dict[str, dict[str, Path]] = {}
    for group in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for path in sorted(p for p in group.iterdir() if p.is_file() and p.suffix in _SUFFIXES):
            set_name, _, split = path.stem.rpartition("_")
            if split not in SPLITS:
                set_name, split = path.stem, WHOLE_SET
            sets.setdefault(f"{group.name}/{set_name}", {})[split] = path
    return sets


def _read_txt(path: Path, text: str) -> list[tuple[str, str]]:
    """(where, prompt) for each prompt line of a .txt file."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            entries.append((f"{path}:{number}", prompt))
    return entries


def _read_json(path: Path, text: str) -> list[tuple[str, str]]:
    """(where, prompt) for each item of a .json list of strings."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: not valid JSON ({error.msg}); a prompt set is a JSON list of "
                        f"strings") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: a JSON prompt set must be a list of strings, got a {type(items).__name__}")
    entries = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise UserError(f"{path}: item {index} is {item!r}, not a string; a prompt set is a JSON list of strings")
        if not item.strip():
            raise UserError(f"{path} item {index}: empty prompt; remove it")
        entries.append((f"{path} item {index}", item.strip()))
    return entries


def load_prompt_set(name: str, split: str = "train", root: Path | str | None = None) -> tuple[str, ...]:
    """The prompts of one split of a set, in file order.  `UserError` for an unknown set or split
    (with suggestions) and for a malformed file (naming the file and line)."""
    files = lookup(prompt_set_files(root), name, "prompt set")
    if split not in files:
        raise UnknownName(f"prompt set {name!r} has no split {split!r}.{did_you_mean(split, files)} "
                          f"Its splits: {', '.join(sorted(files))}.")
    path = files[split]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read prompt set ({error}); restore the file from git") from None
    entries = _read_json(path, text) if path.suffix == ".json" else _read_txt(path, text)
    if not entries:
        raise UserError(f"{path}: the prompt set is empty; it needs at least one prompt")
    if name.startswith(_SHAPES_GROUP_PREFIX):
        from suites.t2i.shapes.prompts import parse_prompt    # the grammar; numpy only
        for where, prompt in entries:
            try:
                parse_prompt(prompt)
            except UserError as error:
                raise UserError(f"{where}: {error}") from None
    first_seen: dict[str, str] = {}
    for where, prompt in entries:
        if prompt in first_seen:
            raise UserError(f"{where}: duplicate prompt {prompt!r} (first at {first_seen[prompt]}); remove one")
        first_seen[prompt] = where
    return tuple(prompt for _, prompt in entries)
