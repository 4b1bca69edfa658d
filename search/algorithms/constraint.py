"""A constraint beyond the space's budget: per-unit, per-level values that add up, and a limit.

The latency-aware search hands the algorithms its latency estimate in this form (each unit's
layers' time at each level, from a per-layer latency table, plus the rest of the model as an
offset, all as fractions of the dense model's latency), but a `Constraint` is only numbers: any
additive quantity with an upper limit fits (bytes, FLOPs).

Algorithms that honour one (EvoPress, random search flat and with successive halving) ask only
for profiles that meet it. They draw exactly uniform budget-feasible profiles and reject those
that violate it, so what they keep is exactly uniform over the constrained set; EvoPress also
rejects violating children as it rejects duplicates. A constraint no profile can meet, or one
so tight that uniform draws almost never meet it, is refused when the algorithm is built.

Example:
    >>> from spaces import BitwidthScheme, LayerInfo, Space
    >>> space = Space([LayerInfo(f"l{i}", (8, 8), 64, i) for i in range(4)], BitwidthScheme(12.0, choices=(8, 16)))
    >>> latency = Constraint.for_space(space, [[0.1, 0.25]] * 4, limit=0.85, offset=0.2, name="latency")
    >>> round(latency.total([8, 8, 16, 16]), 3), latency.allows([8, 8, 16, 16])
    (0.9, False)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from spaces import Space

logger = logging.getLogger(__name__)

LevelArray = npt.NDArray[np.int64]

#: Uniform draws that may be rejected for one profile before a sampler gives up; the same number
#: of draws must find one accepted profile when an algorithm is built.
MAX_TRIES = 2000


class ConstraintError(ValueError):
    """The constraint cannot be met, or (nearly) never by a uniform draw; the message says which."""


@dataclass(frozen=True)
class Constraint:
    """Met when ``offset + sum_i values[i][k_i] <= limit``, k_i the position of unit i's level.

    Attributes:
        levels: per unit, its allowed levels (a space's `levels`).
        values: per unit, one finite value per level, aligned with `levels`.
        limit: the most the total may be.
        offset: added to every total (what no unit's level changes).
        name: what the values measure, for messages ("latency").

    Raises:
        ValueError: misaligned or non-finite values, or a non-finite limit or offset.
    """

    levels: tuple[tuple[int, ...], ...]
    values: tuple[tuple[float, ...], ...]
    limit: float
    offset: float = 0.0
    name: str = "constraint"
    _lookup: tuple[dict[int, float], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        levels = tuple(tuple(int(v) for v in row) for row in self.levels)
        values = tuple(tuple(float(v) for v in row) for row in self.values)
        if len(levels) != len(values):
            raise ValueError(f"{self.name}: {len(values)} rows of values for {len(levels)} units")
        for i, (lv, row) in enumerate(zip(levels, values, strict=True)):
            if len(lv) != len(row):
                raise ValueError(f"{self.name}: unit {i} has {len(lv)} levels but {len(row)} values")
            if not all(math.isfinite(v) for v in row):
                raise ValueError(f"{self.name}: unit {i} has a non-finite value in {list(row)}")
        if not (math.isfinite(self.limit) and math.isfinite(self.offset)):
            raise ValueError(f"{self.name}: limit and offset must be finite, got {self.limit!r} and {self.offset!r}")
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "limit", float(self.limit))
        object.__setattr__(self, "offset", float(self.offset))
        lookup = tuple(dict(zip(lv, row, strict=True)) for lv, row in zip(levels, values, strict=True))
        object.__setattr__(self, "_lookup", lookup)

    @classmethod
    def for_space(
        cls,
        space: Space,
        values: Sequence[Sequence[float]],
        *,
        limit: float,
        offset: float = 0.0,
        name: str = "constraint",
    ) -> Constraint:
        """A constraint whose values follow `space.levels`, unit by unit."""
        return cls(space.levels, tuple(tuple(row) for row in values), limit, offset, name)

    def total(self, levels: Sequence[int] | LevelArray) -> float:
        """``offset`` plus each unit's value at its level (in unit order).

        Raises:
            ValueError: a level array of another length, or a level a unit does not have.
        """
        if len(levels) != len(self._lookup):
            raise ValueError(f"{self.name}: expected {len(self._lookup)} levels, got {len(levels)}")
        try:
            return self.offset + sum(row[int(v)] for row, v in zip(self._lookup, levels, strict=True))
        except KeyError as exc:
            raise ValueError(f"{self.name}: level {exc.args[0]} is not a level of its unit") from None

    def allows(self, levels: Sequence[int] | LevelArray) -> bool:
        """Whether the profile's total stays within the limit."""
        return self.total(levels) <= self.limit

    def check(self, space: Space) -> None:
        """Raise a ValueError unless the constraint's levels are the space's."""
        if self.levels != space.levels:
            raise ValueError(f"the {self.name} constraint was made for another space (its units' levels differ)")

    def lowest(self, space: Space) -> LevelArray:
        """The budget-feasible profile with the least total (exact: the space's knapsack DP)."""
        self.check(space)
        best = space.project([[-v for v in row] for row in self.values])
        return space.to_array(best)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; `from_dict` rebuilds an equal constraint (floats round-trip exactly)."""
        return {
            "name": self.name,
            "limit": self.limit,
            "offset": self.offset,
            "levels": [list(row) for row in self.levels],
            "values": [list(row) for row in self.values],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Constraint:
        """The inverse of `to_dict`.

        Raises:
            ValueError: a malformed record.
        """
        try:
            return cls(data["levels"], data["values"], data["limit"], data["offset"], data["name"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed constraint record: {exc!r}") from None


def allowed(constraint: Constraint | None, levels: Sequence[int] | LevelArray) -> bool:
    """True without a constraint, else whether `levels` meet it."""
    return constraint is None or constraint.allows(levels)


def sample_within(
    space: Space, rng: np.random.Generator, constraint: Constraint | None, tries: int = MAX_TRIES
) -> LevelArray:
    """An exactly uniform budget-feasible profile that meets the constraint (by rejection).

    Without a constraint this is `space.sample_array(rng)`, drawing the same numbers.

    Raises:
        ConstraintError: `tries` draws in a row violated the constraint.
    """
    for _ in range(tries):
        levels = space.sample_array(rng)
        if allowed(constraint, levels):
            return levels
    assert constraint is not None, "an unconstrained draw is never rejected"
    raise ConstraintError(
        f"the {constraint.name} constraint is nearly infeasible: {tries} uniform profiles in a row exceeded "
        f"its limit {constraint.limit:.6g} (the lowest any feasible profile reaches is "
        f"{constraint.total(constraint.lowest(space)):.6g}); loosen it"
    )


def check_reachable(space: Space, constraint: Constraint | None, seed: int, tries: int = MAX_TRIES) -> None:
    """Refuse a constraint that no profile meets, or that `tries` uniform draws never meet.

    The probe draws from its own generator (seeded from `seed`), so it leaves the algorithm's
    random stream as it was.

    Raises:
        ConstraintError: naming the limit and the lowest total a feasible profile reaches.
    """
    if constraint is None:
        return
    constraint.check(space)
    lowest = constraint.total(constraint.lowest(space))
    if lowest > constraint.limit:
        raise ConstraintError(
            f"no profile of this space meets the {constraint.name} constraint: its limit is {constraint.limit:.6g}, "
            f"but the lowest any feasible profile reaches is {lowest:.6g}"
        )
    sample_within(space, np.random.default_rng([seed, 0x5EED]), constraint, tries)


def restore(owner: str, current: Constraint | None, stored: Mapping[str, Any] | None) -> None:
    """Check that a checkpoint was made under the same constraint as the algorithm now has.

    Raises:
        ValueError: the checkpoint's constraint (or its absence) differs: resuming would not
            continue the same search.
    """
    recorded = None if stored is None else Constraint.from_dict(stored)
    if recorded != current:
        have = "none" if current is None else f"{current.name} <= {current.limit:.6g}"
        had = "none" if recorded is None else f"{recorded.name} <= {recorded.limit:.6g}"
        raise ValueError(
            f"{owner}: the checkpoint was made under another constraint ({had}) than this search has ({have}); "
            "resume it with the same constraint, or start a new study"
        )


__all__ = ["MAX_TRIES", "Constraint", "ConstraintError", "allowed", "check_reachable", "restore", "sample_within"]
