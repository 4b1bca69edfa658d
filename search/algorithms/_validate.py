"""Checks for algorithm configs: every error names the config, the field, the value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import Any

#: The most of anything an algorithm counts (generations, offspring, samples, steps, switches,
#: retries): far beyond any real search, low enough that a few stray zeros are caught up front.
MAX_COUNT = 1_000_000
#: The most tokens any token count or budget may name (a thousand times a large search's budget).
MAX_TOKENS = 10**12


def require(ok: bool, owner: str, field: str, value: object, allowed: str) -> None:
    """Raise a ValueError that says what to write instead, unless `ok`.

    Raises:
        ValueError: ``"<owner>.<field> = <value> is not allowed: <allowed>"``.
    """
    if not ok:
        raise ValueError(f"{owner}.{field} = {value!r} is not allowed: {allowed}")


def is_int(value: object) -> bool:
    """True for integers, but not for booleans (``True`` is an int to Python, not to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def int_at_least(owner: str, field: str, value: object, low: int, high: int = MAX_COUNT) -> None:
    """Require an integer >= `low` and <= `high`."""
    ok = is_int(value) and low <= value <= high  # type: ignore[operator]
    require(ok, owner, field, value, f"an integer >= {low} and <= {high:,}")


def optional_int_at_least(owner: str, field: str, value: object, low: int, high: int = MAX_COUNT) -> None:
    """Require None or an integer >= `low` and <= `high`."""
    ok = value is None or (is_int(value) and low <= value <= high)  # type: ignore[operator]
    require(ok, owner, field, value, f"None or an integer >= {low} and <= {high:,}")


def positive_float(owner: str, field: str, value: object) -> None:
    """Require a finite number > 0."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    require(ok, owner, field, value, "a finite number > 0")


def non_negative_float(owner: str, field: str, value: object) -> None:
    """Require a finite number >= 0."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    require(ok, owner, field, value, "a finite number >= 0")


def one_of(owner: str, field: str, value: object, allowed: Collection[object]) -> None:
    """Require one of `allowed`."""
    require(value in allowed, owner, field, value, f"one of {sorted(map(str, allowed))}")


def check_overrides(config_class: type[Any], overrides: Mapping[str, Any]) -> None:
    """Require that every key of `overrides` is a field of the config dataclass."""
    names = {f.name for f in fields(config_class)}
    unknown = sorted(set(overrides) - names)
    require(not unknown, config_class.__name__, "preset overrides", unknown, f"fields {sorted(names)}")
