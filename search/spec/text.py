"""The text side of a spec: reading its YAML and wording what is wrong with it, one line per key.

`search.spec.config` holds what a spec means; this module turns a file into the mapping it validates
(refusing duplicate keys, which YAML would let the last one win silently) and turns validation
errors into lines of the form ``SOURCE: KEY.PATH: what is wrong (got VALUE)``.

Example:
    >>> read_yaml("seed: 1\\nseed: 2\\n", "s.yaml")
    Traceback (most recent call last):
    ...
    search.spec.text.SpecError: s.yaml: seed: duplicate key at line 2 (first at line 1)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from ..algorithms import wrong_kind
from ..secrets import redact_url


class SpecError(ValueError):
    """A spec that cannot be used; `lines` holds one message per problem, each naming its key."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def read_yaml(text: str, source: str) -> dict[str, Any]:
    """The mapping a spec's YAML text holds (an empty one for an empty text).

    Raises:
        SpecError: not YAML, not a mapping, or a key given twice in one mapping (one line per
            duplicate, naming its key path and both lines).
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        duplicates = _duplicate_keys(node, [], set())
        if duplicates:
            raise SpecError([f"{source}: {line}" for line in duplicates])
        raw = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise SpecError([f"{source}: {where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    finally:
        loader.dispose()
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError([f"{source}: (top level): a spec is a mapping of sections, got {type(raw).__name__}"])
    return raw


def _duplicate_keys(node: yaml.Node | None, path: list[str], visited: set[int]) -> list[str]:
    """``KEY.PATH: duplicate key at line N (first at line M)`` for each key repeated in a mapping."""
    if node is None or id(node) in visited:  # an alias repeats a node already walked
        return []
    visited.add(id(node))
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first and key != "<<":  # "<<" merges mappings; it may repeat
                found.append(f"{'.'.join([*path, key])}: duplicate key at line {line} (first at line {first[key]})")
            first.setdefault(key, line)
            found += _duplicate_keys(value_node, [*path, key], visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicate_keys(item, [*path, str(index)], visited)
    return found


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """Set each ``"section.key": value`` of `overrides` in `raw` (None values are skipped).

    Raises:
        SpecError: a dotted path runs through a value that is not a mapping.
    """
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *path, last = dotted.split(".")
        for key in path:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise SpecError([f"{key}: expected a mapping to set {dotted!r}, got {child!r}"])
            node = child
        node[last] = value


# How algorithm configs word a bad value (`search.algorithms`): the field is folded into the key
# path so the line reads like every other one.
_CONFIG_ERROR = re.compile(r"\w+\.(\w+) = (.*) is not allowed: (.*)", re.DOTALL)


def config_error(message: str) -> tuple[str | None, str]:
    """(field, message without the config's class name) for an algorithm config's error."""
    match = _CONFIG_ERROR.fullmatch(message)
    if match is None:
        return None, message
    return match.group(1), f"{match.group(2)} is not allowed: {match.group(3)}"


def _allowed_keys(section: Any, path: list[str]) -> list[str]:
    """The keys a spec section accepts, found by walking `path` down from `section`."""
    for part in path:
        fields = getattr(section, "model_fields", {})
        if part not in fields:
            return []
        section = fields[part].annotation
        # an optional section (`LatencySpec | None`): its keys are the model's
        section = next((a for a in get_args(section) if isinstance(a, type) and issubclass(a, BaseModel)), section)
    return list(getattr(section, "model_fields", {}))


def format_errors(source: str, exc: ValidationError, section: type[BaseModel]) -> list[str]:
    """One line per key: ``SOURCE: KEY.PATH: what is wrong (got VALUE)``.

    `section` is the model validated (the whole spec); unknown keys are answered with the keys
    it accepts there.
    """
    lines: list[str] = []
    seen: set[str] = set()
    for error in exc.errors():
        parts = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
        message = error["msg"].removeprefix("Value error, ")
        loc = ".".join(parts)
        if loc in seen:  # one line per key, even where a union reports each alternative
            continue
        seen.add(loc)
        shown = error.get("input")
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(section, parts[:-1])
            message = f"unknown key; allowed here: {allowed}" if allowed else "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] in ("int_type", "float_type"):
            # strict types refuse what a lenient parse would convert (`true` to 1, "2" to 2); say why
            message = wrong_kind(shown, integer=error["type"] == "int_type") or message
        hidden = isinstance(shown, dict | BaseModel) or error["type"] == "missing"
        value = "" if hidden else f" (got {_short(shown)})"
        lines.append(f"{source}: {loc or '(top level)'}: {message}{value}")
    return lines


def _short(value: Any) -> str:
    text = repr(value)
    if isinstance(value, str) and "@" in value:  # a URL, perhaps malformed: never echo its password
        text = repr(redact_url(value))
    return text if len(text) <= 80 else text[:77] + "..."
