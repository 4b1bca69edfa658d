"""EvoPress's warm starts: what `EvoPressConfig.start` may be, and whether a start profile fits.

A start is named (``auto``, ``uniform``, ``owl``, ``dp``), a profile file (which the driver reads,
since algorithms read no files), or a mapping unit name -> level. A start profile must meet the
search's budget and constraint: the parent competes in every last stage, so EvoPress never
returns anything worse on the search data than its start, and an infeasible start would make
that answer infeasible too.
"""

from __future__ import annotations

from collections.abc import Mapping

from spaces import Space

from ._stages import LevelArray
from ._validate import is_int, require
from .constraint import Constraint, allowed

#: The named starts of `EvoPressConfig.start`; any other string names a profile file.
STARTS = ("auto", "uniform", "owl", "dp")
#: The suffixes of the profile files `pressroom best` writes (``--format json`` or ``yaml``).
PROFILE_SUFFIXES = (".json", ".yaml", ".yml")


def check_start(owner: str, value: object) -> object:
    """Validate `EvoPressConfig.start` (without a space); returns a mapping as a plain dict.

    Raises:
        ValueError: naming the value and what is allowed.
    """
    if isinstance(value, Mapping):
        ok = len(value) > 0 and all(isinstance(k, str) and is_int(v) for k, v in value.items())
    else:
        ok = isinstance(value, str) and (value in STARTS or value.lower().endswith(PROFILE_SUFFIXES))
    allowed_here = (
        f"one of {list(STARTS)}, a profile file ({', '.join(PROFILE_SUFFIXES)}, as `pressroom best` writes it) "
        "or a mapping unit name -> integer level"
    )
    require(ok, owner, "start", value, allowed_here)
    return dict(value) if isinstance(value, Mapping) else value


def start_levels(space: Space, profile: Mapping[str, int]) -> LevelArray:
    """The start's levels in unit order.

    Raises:
        ValueError: the profile is not one of `space` (other units, or a level a unit lacks).
    """
    try:
        return space.to_array(profile)
    except ValueError as exc:
        raise ValueError(f"EvoPress start: {exc}") from None


def start_problem(space: Space, constraint: Constraint | None, levels: LevelArray) -> str | None:
    """Why a start profile does not fit the search (budget, then constraint), or None when it does."""
    if not space.is_feasible(levels):
        relation = "exactly" if space.exact else "at most"
        average = space.average(space.from_array(levels))
        return (
            f"its average {space.scheme.name} is {average:.6g} (cost {space.cost(levels)}), but the target "
            f"{space.scheme.target} allows a cost of {relation} {space.budget}"
        )
    if not allowed(constraint, levels):
        assert constraint is not None
        total = constraint.total(levels)
        return f"its {constraint.name} estimate {total:.6g} is over the limit {constraint.limit:.6g}"
    return None
