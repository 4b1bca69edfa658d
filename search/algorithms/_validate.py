"""Checks for algorithm configs: every error names the config, the field, the value and what is allowed.

These are the only checks of an algorithm's parameters: a spec file's `algorithm.params` reach
the config dataclasses as they are (`search.spec.config`), and numbers are never converted from
booleans or strings on the way.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any

#: A stage schedule: ``(survivors, tokens)`` per stage (see `search.algorithms._stages`).
Stages = tuple[tuple[int, int], ...]

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


def wrong_kind(value: object, integer: bool) -> str | None:
    """What to say of a boolean or a string given where a number belongs; None for anything else.

    YAML reads ``true`` and ``"2"`` as a boolean and a string, and nothing converts them behind
    the user's back.
    """
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool):
        return f"a boolean is not {kind}; write {'a whole number' if integer else 'a number'}"
    if isinstance(value, str):
        return f"a string is not {kind}; write the number without quotes"
    return None


def int_at_least(owner: str, field: str, value: object, low: int, high: int = MAX_COUNT) -> None:
    """Require an integer >= `low` and <= `high`."""
    ok = is_int(value) and low <= value <= high  # type: ignore[operator]
    require(ok, owner, field, value, wrong_kind(value, integer=True) or f"an integer >= {low} and <= {high:,}")


def optional_int_at_least(owner: str, field: str, value: object, low: int, high: int = MAX_COUNT) -> None:
    """Require None or an integer >= `low` and <= `high`."""
    ok = value is None or (is_int(value) and low <= value <= high)  # type: ignore[operator]
    allowed = wrong_kind(value, integer=True) or f"None or an integer >= {low} and <= {high:,}"
    require(ok, owner, field, value, allowed)


def _finite(owner: str, field: str, value: object, ok: Callable[[float], bool], allowed: str) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    require(number and ok(value), owner, field, value, wrong_kind(value, integer=False) or allowed)  # type: ignore[arg-type]
    return float(value)  # type: ignore[arg-type]


def finite_float(owner: str, field: str, value: object) -> float:
    """Require a finite number; returns it as a float."""
    return _finite(owner, field, value, lambda _: True, "a finite number")


def positive_float(owner: str, field: str, value: object) -> float:
    """Require a finite number > 0; returns it as a float."""
    return _finite(owner, field, value, lambda v: v > 0, "a finite number > 0")


def non_negative_float(owner: str, field: str, value: object) -> float:
    """Require a finite number >= 0; returns it as a float."""
    return _finite(owner, field, value, lambda v: v >= 0, "a finite number >= 0")


def one_of(owner: str, field: str, value: object, allowed: Collection[object]) -> None:
    """Require one of `allowed`."""
    require(value in allowed, owner, field, value, f"one of {sorted(map(str, allowed))}")


def check_overrides(config_class: type[Any], overrides: Mapping[str, Any]) -> None:
    """Require that every key of `overrides` is a field of the config dataclass."""
    names = {f.name for f in fields(config_class)}
    unknown = sorted(set(overrides) - names)
    require(not unknown, config_class.__name__, "preset overrides", unknown, f"fields {sorted(names)}")


def check_stages(owner: str, value: object) -> Stages:
    """Validate a stage schedule and return it as a tuple of ``(survivors, tokens)`` pairs.

    Lists (from JSON or YAML) are accepted. Survivors may not grow from stage to stage, and the
    last stage keeps exactly one: the round's winner.

    Raises:
        ValueError: naming the config, the bad schedule and what is allowed.
    """
    allowed = (
        f"a non-empty list of [survivors, tokens] pairs of positive integers (survivors <= {MAX_COUNT:,}, "
        f"tokens <= {MAX_TOKENS:,})"
    )
    require(
        isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0, owner, "stages", value, allowed
    )
    pairs = []
    for pair in value:  # type: ignore[attr-defined]
        ok = isinstance(pair, Sequence) and len(pair) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
        ok = ok and pair[0] <= MAX_COUNT and pair[1] <= MAX_TOKENS
        require(ok, owner, "stages", value, allowed)
        pairs.append((int(pair[0]), int(pair[1])))
    survivors = [s for s, _ in pairs]
    require(
        all(a >= b for a, b in itertools.pairwise(survivors)),
        owner,
        "stages",
        value,
        "survivors that never grow from one stage to the next",
    )
    require(survivors[-1] == 1, owner, "stages", value, "a last stage that keeps 1 (the winner)")
    return tuple(pairs)


def check_entrants(owner: str, stages: Stages, field: str, entrants: int) -> None:
    """Require that the first stage keeps no more than the round's entrants (`field` of the config).

    Raises:
        ValueError: naming the stage, how many it keeps, and the entrants.
    """
    kept = stages[0][0]
    message = f"stage 1 keeps {kept} survivors of only {field} = {entrants}; keep at most {entrants} there"
    require(kept <= entrants, owner, "stages", stages, f"{message}, or raise {field}")
