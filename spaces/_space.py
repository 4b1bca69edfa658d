"""`Space`: the feasible profiles of one model under one scheme and budget."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _dp
from ._layers import LayerInfo, Unit, make_units
from ._profile import Profile
from ._schemes import LevelScheme

LevelArray = npt.NDArray[np.int64]


class Space:
    """Per-unit level ranges, their costs and the budget a profile must meet.

    Profiles are keyed by unit name; internally a profile is an int64 array of level values in
    unit order, which is what algorithms work with (`to_array`, `from_array`).

    Args:
        layers: the compressible layers, in model order.
        scheme: the level scheme (resolved here against the units).
        granularity: ``"layer"`` (a level per layer), ``"fused"`` (one per layer, but one for the
            projections serving engines fuse: `make_units`) or ``"block"`` (a level per block).
        model: the model's fingerprint, recorded in every profile.

    Raises:
        ValueError: no layers, repeated names, or a budget no profile can meet.

    Example:
        >>> from spaces import LayerInfo, SparsityScheme, Space
        >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(4)]
        >>> space = Space(layers, SparsityScheme(0.5), model="demo")
        >>> space.is_feasible(space.sample(np.random.default_rng(0)))
        True
    """

    def __init__(
        self,
        layers: Sequence[LayerInfo],
        scheme: LevelScheme,
        *,
        granularity: str = "layer",
        model: str = "unknown",
    ) -> None:
        self.units: tuple[Unit, ...] = make_units(tuple(layers), granularity)
        self.layers: tuple[LayerInfo, ...] = tuple(layers)
        self.scheme = scheme.resolve(self.units)
        self.granularity = granularity
        self.model = model
        self.names: tuple[str, ...] = tuple(unit.name for unit in self.units)
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self.levels: tuple[tuple[int, ...], ...] = tuple(self.scheme.levels(u) for u in self.units)
        self._position = tuple({level: k for k, level in enumerate(levels)} for levels in self.levels)
        self.costs: tuple[tuple[int, ...], ...] = tuple(
            tuple(self.scheme.cost(u, level) for level in levels)
            for u, levels in zip(self.units, self.levels, strict=True)
        )
        self.budget: int = self.scheme.budget(self.units)
        self.exact: bool = self.scheme.exact
        self._tables = _dp.CostTables.build([list(c) for c in self.costs], self.budget, self.exact)
        if not self._tables.feasible:
            relation = "exactly" if self.exact else "within"
            raise ValueError(
                f"no profile meets the {self.scheme.name} target {self.scheme.target} {relation} "
                f"with these levels on {len(self.units)} units; change the target or the levels"
                + ("" if not self.exact else ", or allow a budget that is an upper bound")
            )
        self._scheme_dict = self.scheme.to_dict()

    # --- profiles and arrays -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.units)

    def from_array(self, levels: Sequence[int] | LevelArray) -> Profile:
        """A profile from level values in unit order."""
        integers = isinstance(levels, np.ndarray) and levels.dtype.kind in "iu"
        values = levels.tolist() if integers else [int(v) for v in levels]  # type: ignore[union-attr]
        if len(values) != len(self.units):
            raise ValueError(f"expected {len(self.units)} levels, got {len(values)}")
        levels_by_name = dict(zip(self.names, values, strict=True))
        return Profile._of_ints(levels_by_name, self._scheme_dict, self.model, self.granularity)

    def to_array(self, profile: Mapping[str, int]) -> LevelArray:
        """Level values in unit order; checks that the profile belongs to this space."""
        return np.array(self._checked_values(profile), dtype=np.int64)

    def check(self, profile: Mapping[str, int]) -> None:
        """Raise a clear ValueError unless `profile` is a profile of this space.

        It checks the model fingerprint, the scheme and granularity, the unit names and that every
        level is allowed; it does not check the budget (see `is_feasible`).
        """
        self._checked_values(profile)

    def _checked_values(self, profile: Mapping[str, int]) -> tuple[int, ...]:
        """`check`, returning the levels in unit order."""
        if isinstance(profile, Profile):
            if profile.model != self.model:
                raise ValueError(f"the profile was made for model {profile.model!r}, but this model is {self.model!r}")
            # Granularity first: it changes the units, and with them a resolved sparsity step.
            if profile.granularity != self.granularity:
                raise ValueError(
                    f"the profile has {profile.granularity!r} granularity, but this space has {self.granularity!r}"
                )
            if dict(profile.scheme) != self._scheme_dict:
                raise ValueError(
                    f"the profile uses scheme {_describe(profile.scheme)}, but this search uses "
                    f"{_describe(self._scheme_dict)}"
                )
        try:
            if isinstance(profile, Profile):
                values = profile.values_for(self.names)
            else:
                values = tuple(profile[name] for name in self.names)
        except KeyError:
            values = ()
        if len(values) != len(self.names) or len(profile) != len(self.names):
            unknown = sorted(set(profile) - set(self.index))
            missing = [name for name in self.names if name not in profile]
            raise ValueError(
                "the profile's units do not match this model's: "
                + (f"unknown {unknown[:5]}{'...' if len(unknown) > 5 else ''} " if unknown else "")
                + (f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}" if missing else "")
            )
        for i, (value, allowed) in enumerate(zip(values, self._position, strict=True)):
            if value not in allowed:
                raise ValueError(f"level {value} of {self.names[i]!r} is not allowed; allowed: {list(self.levels[i])}")
        return values

    def cost(self, profile: Mapping[str, int] | LevelArray) -> int:
        """The profile's total cost in the scheme's integer units."""
        levels = profile if isinstance(profile, np.ndarray) else self.to_array(profile)
        if len(levels) != len(self.units):
            raise ValueError(f"expected {len(self.units)} levels, got {len(levels)}")
        return sum(self.costs[i][self._position[i][int(v)]] for i, v in enumerate(levels))

    def is_feasible(self, profile: Mapping[str, int] | LevelArray) -> bool:
        """True when every level is allowed and the budget holds."""
        try:
            total = self.cost(profile)
        except (KeyError, ValueError):
            return False
        return total == self.budget if self.exact else total <= self.budget

    def uniform(self) -> Profile | None:
        """Every unit at the target, or None when no such profile meets the budget."""
        levels = [self.scheme.uniform_level(unit) for unit in self.units]
        if any(level is None for level in levels):
            return None
        array = np.asarray(levels, dtype=np.int64)
        return self.from_array(array) if self.is_feasible(array) else None

    # --- sampling and projection -----------------------------------------------------------

    @cached_property
    def _count_rows(self) -> list[npt.NDArray[np.float64]]:
        return _dp.count_table(self._tables)

    @cached_property
    def _count_views(self) -> list[memoryview]:
        return [memoryview(row.data) for row in self._count_rows]

    def log_size(self) -> float:
        """The natural log of the number of feasible profiles."""
        return _dp.log_count(self._tables, self._count_rows)

    def sample(self, rng: np.random.Generator) -> Profile:
        """A feasible profile drawn exactly uniformly (a counting DP, never rejection)."""
        return self.from_array(self.sample_array(rng))

    def sample_array(self, rng: np.random.Generator) -> LevelArray:
        picks = _dp.sample_indices(self._tables, self._count_views, rng)
        return np.asarray([self.levels[i][k] for i, k in enumerate(picks)], dtype=np.int64)

    def project(self, scores: Sequence[Sequence[float] | npt.NDArray[np.float64]]) -> Profile:
        """The feasible profile that maximises the sum of per-unit, per-level scores.

        Args:
            scores: per unit (in unit order), one score per allowed level (`self.levels[i]`);
                ``-inf`` forbids a level.

        Raises:
            ValueError: misaligned scores, or every feasible profile uses a forbidden level.
        """
        if len(scores) != len(self.units):
            raise ValueError(f"expected scores for {len(self.units)} units, got {len(scores)}")
        table = []
        for i, row in enumerate(scores):
            values = np.asarray(row, dtype=np.float64)
            if values.shape != (len(self.levels[i]),):
                raise ValueError(
                    f"scores of {self.names[i]!r} must have one value per level "
                    f"({len(self.levels[i])}), got shape {values.shape}"
                )
            if np.isnan(values).any():
                raise ValueError(f"scores of {self.names[i]!r} contain NaN")
            table.append(values)
        picks = _dp.best_indices(self._tables, table)
        if picks is None:
            raise ValueError("no feasible profile avoids the levels the scores forbid")
        return self.from_array([self.levels[i][k] for i, k in enumerate(picks)])

    def nearest(self, target: Sequence[float] | npt.NDArray[np.float64]) -> Profile:
        """The feasible profile closest (squared distance in level meaning) to real-valued levels.

        `target[i]` is a wished-for value of `meaning` for unit i (a sparsity, bits, drop
        probability); a decoder that always yields a feasible profile.
        """
        if len(target) != len(self.units):
            raise ValueError(f"expected {len(self.units)} values, got {len(target)}")
        scores = [
            -np.square(np.asarray([self.scheme.meaning(u, lv) for lv in levels]) - float(t))
            for u, levels, t in zip(self.units, self.levels, target, strict=True)
        ]
        return self.project(scores)

    # --- moves that keep the budget ------------------------------------------------------

    @cached_property
    def switch_groups(self) -> tuple[tuple[int, ...], ...]:
        """Units whose one-level steps cost the same: a switch stays inside one group."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, costs in enumerate(self.costs):
            key = tuple(sorted(set(np.diff(costs).tolist())))
            groups.setdefault(key, []).append(i)
        return tuple(tuple(members) for members in groups.values())

    def step(self, levels: LevelArray, unit: int, direction: int) -> int | None:
        """The level one step up (+1) or down (-1) from the unit's current one, or None."""
        k = self._position[unit][int(levels[unit])] + direction
        return self.levels[unit][k] if 0 <= k < len(self.levels[unit]) else None

    def step_cost(self, levels: LevelArray, unit: int, direction: int) -> int | None:
        """How much a one-level step changes the cost, or None when the step is impossible."""
        k = self._position[unit][int(levels[unit])]
        j = k + direction
        if not 0 <= j < len(self.levels[unit]):
            return None
        return self.costs[unit][j] - self.costs[unit][k]

    def can_switch(self, levels: LevelArray, up: int, down: int) -> bool:
        """Whether moving `up` one level up and `down` one level down keeps the cost."""
        if up == down:
            return False
        rise = self.step_cost(levels, up, +1)
        fall = self.step_cost(levels, down, -1)
        return rise is not None and fall is not None and rise + fall == 0

    def switch(self, levels: LevelArray, up: int, down: int) -> LevelArray:
        """A copy with the switch applied; raises ValueError if it would change the cost."""
        if not self.can_switch(levels, up, down):
            raise ValueError(f"switching {self.names[up]!r} up and {self.names[down]!r} down changes the cost")
        out = levels.copy()
        out[up] = self.levels[up][self._position[up][int(levels[up])] + 1]
        out[down] = self.levels[down][self._position[down][int(levels[down])] - 1]
        return out

    def switch_pairs(self, profile: Mapping[str, int]) -> list[tuple[str, str]]:
        """Every (up, down) pair of units a one-step switch may move from `profile`."""
        levels = self.to_array(profile)
        return [
            (self.names[up], self.names[down])
            for group in self.switch_groups
            for up in group
            for down in group
            if self.can_switch(levels, up, down)
        ]

    # --- what a profile means --------------------------------------------------------------

    def layer_settings(self, profile: Mapping[str, int]) -> dict[str, int]:
        """Per layer: pruned weights (sparsity), bits (bitwidth) or 1 = dropped (drop)."""
        levels = self.to_array(profile)
        out: dict[str, int] = {}
        for unit, level in zip(self.units, levels, strict=True):
            out.update(self.scheme.layer_settings(unit, int(level)))
        return out

    def layer_choices(self) -> dict[str, tuple[int, ...]]:
        """Per layer, every setting some level of its unit gives (what a database stores)."""
        out: dict[str, set[int]] = {layer.name: set() for layer in self.layers}
        for unit, levels in zip(self.units, self.levels, strict=True):
            for level in levels:
                for name, setting in self.scheme.layer_settings(unit, level).items():
                    out[name].add(setting)
        return {name: tuple(sorted(values)) for name, values in out.items()}

    def meanings(self, profile: Mapping[str, int]) -> dict[str, float]:
        """Per unit, what its level means (sparsity, bits, dropped)."""
        levels = self.to_array(profile)
        return {
            unit.name: self.scheme.meaning(unit, int(level)) for unit, level in zip(self.units, levels, strict=True)
        }

    def average(self, profile: Mapping[str, int]) -> float:
        """The weight-averaged meaning: actual average sparsity or bits, or the dropped share."""
        meanings = self.meanings(profile)
        return self._mean([meanings[unit.name] for unit in self.units])

    def expected_average(self, probabilities: Sequence[Sequence[float] | npt.NDArray[np.float64]]) -> float:
        """`average` in expectation, when unit i takes level ``levels[i][j]`` with probability
        ``probabilities[i][j]``: what a relaxed (soft) profile costs, in the target's units.

        Raises:
            ValueError: a row whose length is not its unit's number of levels.
        """
        if len(probabilities) != len(self.units):
            raise ValueError(f"need one row of probabilities per unit ({len(self.units)}), got {len(probabilities)}")
        means = []
        for unit, levels, row in zip(self.units, self.levels, probabilities, strict=True):
            p = np.asarray(row, dtype=np.float64)
            if p.shape != (len(levels),):
                raise ValueError(
                    f"unit {unit.name!r}: need {len(levels)} probabilities (levels {list(levels)}), got {p.shape}"
                )
            means.append(float(p @ np.asarray([self.scheme.meaning(unit, level) for level in levels])))
        return self._mean(means)

    def _mean(self, values: Sequence[float]) -> float:
        """Per-unit meanings averaged as the target is: over units for drop, else over weights."""
        if self.scheme.name == "drop":
            return sum(values) / len(self.units)
        total = sum(unit.numel for unit in self.units)
        return sum(value * unit.numel for value, unit in zip(values, self.units, strict=True)) / total

    def summary(self) -> dict[str, Any]:
        """A JSON-able description: scheme, units, levels and the size of the space."""
        log_size = self.log_size()
        return {
            "model": self.model,
            "scheme": self._scheme_dict,
            "granularity": self.granularity,
            "units": len(self.units),
            "layers": len(self.layers),
            "weights": sum(layer.numel for layer in self.layers),
            "levels_per_unit": [len(levels) for levels in self.levels],
            "budget": self.budget,
            "exact_budget": self.exact,
            "switch_groups": len(self.switch_groups),
            "log10_profiles": log_size / math.log(10),
        }


def _describe(scheme: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k}={v}" for k, v in scheme.items() if k not in {"name", "target"})
    return f"{scheme.get('name')} target {scheme.get('target')} ({params})"
