"""Strict YAML for every file a user writes (grids, CMP files).

- a key given twice in one mapping is an error (PyYAML silently keeps the last one);
- numbers in exponent notation without a dot (`3e-4`, `1e5`) are numbers, as a researcher means them
  (YAML 1.1, which PyYAML follows, would read them as strings);
- syntax errors become one-line `UserError`s with the line and column.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from suites.errors import UserError

_FLOAT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)$")


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden by explicit keys
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicated key {key!r} (first at line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def loads(text: str, where: str) -> Any:
    """Parse YAML text; `where` names the source in error messages."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None)
        detail = f": {problem}" if problem and "duplicated key" in problem else ""
        raise UserError(f"{where} is not valid YAML{at}{detail}; fix it there") from None


def load(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    return loads(path.read_text(), f"{what} {path}" if what else str(path))
