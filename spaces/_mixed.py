"""The mixed scheme: dense, unstructured and N:M levels of one unit in one space."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from ._layers import Unit
from ._schemes import LevelScheme, is_whole, split_pruned

#: An automatic grain leaves every unit of a mixed space at least this many grains ...
_GRAINS_PER_SMALLEST_UNIT = 256
#: ... unless the exact-budget tables (units x budget values) would grow past this many cells.
_MIXED_TABLE_CELLS = 10_000_000


@dataclass(frozen=True)
class MixedScheme(LevelScheme):
    """Dense, unstructured and N:M levels in one space, at least `target` average sparsity.

    The levels index one list of options ordered by sparsity (`options`): level 0 is dense, then
    each of `sparsities` (unstructured) and the N:M pattern (`n` of every `m` consecutive input
    weights kept, sparsity 1 - n/m) in its place; at equal sparsity the unstructured option
    comes first. A unit has the N:M level only if `m` divides every one of its layers' input
    dimension (the last entry of `LayerInfo.shape`).

    Costs are kept weights in *grains* of `grain` weights, rounded up, and the budget is an upper
    bound, ``floor((1 - target) * weights / grain)`` grains; so a feasible profile keeps at most
    ``(1 - target)`` of the weights: its average sparsity is at least the target. Unstructured
    levels keep a whole number of grains (they prune at least their sparsity), so their costs
    are exact and the uniform profile at a listed sparsity is feasible. The grain keeps the
    budget's tables small: integer costs in single weights would need millions of budget values.

    Per-layer settings are pruned weights, negated for the N:M level (`decode`): an N:M layer
    and an unstructured one may prune the same number of weights, yet hold different masks.

    Args:
        target: the least average sparsity, in (0, 1).
        sparsities: the unstructured levels, each in (0, 1).
        n: weights kept in every group of `m`.
        m: the group length along the input dimension.
        grain: weights per cost unit; None picks ``smallest unit / 256`` (more on large models
            with many units, to bound the tables).

    Example:
        >>> from spaces import LayerInfo, Space
        >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(4)]
        >>> space = Space(layers, MixedScheme(0.5, sparsities=(0.5, 0.7)))
        >>> [(sparsity, nm) for sparsity, nm in space.scheme.options()]
        [(0.0, False), (0.5, False), (0.5, True), (0.7, False)]
        >>> space.scheme.layer_settings(space.units[0], 2)  # 2:4: half the weights, in pattern
        {'l0': -2048}
    """

    name: ClassVar[str] = "mixed"
    target: float
    sparsities: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8)
    n: int = 2
    m: int = 4
    grain: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(
                f"mixed target (the least average sparsity) must be strictly between 0 and 1, got {self.target!r}"
            )
        values = [float(s) for s in self.sparsities]
        if any(not 0.0 < s < 1.0 for s in values):
            raise ValueError(f"mixed sparsities must each lie strictly between 0 and 1, got {list(self.sparsities)}")
        if len(set(values)) != len(values):
            raise ValueError(f"mixed sparsities must not repeat, got {list(self.sparsities)}")
        object.__setattr__(self, "sparsities", tuple(sorted(values)))
        if not (is_whole(self.n) and is_whole(self.m) and 1 <= self.n < self.m):
            raise ValueError(f"an N:M pattern needs whole numbers 1 <= n < m, got n={self.n!r}, m={self.m!r}")
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "m", int(self.m))
        if self.grain is not None and (not is_whole(self.grain) or self.grain <= 0):
            raise ValueError(f"mixed grain must be a positive whole number of weights, got {self.grain!r}")
        if self.grain is not None:
            object.__setattr__(self, "grain", int(self.grain))

    @property
    def pattern(self) -> str:
        """The N:M pattern as text, e.g. "2:4"."""
        return f"{self.n}:{self.m}"

    def options(self) -> tuple[tuple[float, bool], ...]:
        """(sparsity, is N:M) of every level, in level order."""
        found = [(0.0, False), *((s, False) for s in self.sparsities), (1.0 - self.n / self.m, True)]
        return tuple(sorted(found))

    @property
    def structured_level(self) -> int:
        """The N:M level."""
        return next(level for level, (_, structured) in enumerate(self.options()) if structured)

    def is_structured(self, level: int) -> bool:
        """Whether `level` is the N:M level."""
        return level == self.structured_level

    @staticmethod
    def decode(setting: int) -> tuple[int, bool]:
        """A per-layer setting as (pruned weights, whether they follow the N:M pattern)."""
        return abs(setting), setting < 0

    def resolve(self, units: tuple[Unit, ...]) -> MixedScheme:
        if self.grain is not None:
            return self
        smallest = min(unit.numel for unit in units)
        total = sum(unit.numel for unit in units)
        bounded = math.ceil(total * (len(units) + 1) / _MIXED_TABLE_CELLS)
        return replace(self, grain=max(1, smallest // _GRAINS_PER_SMALLEST_UNIT, bounded))

    @property
    def _grain(self) -> int:
        return self._resolved("grain")

    def fits_pattern(self, unit: Unit) -> bool:
        """Whether every layer of the unit has an input dimension that `m` divides."""
        return all(layer.shape and layer.shape[-1] % self.m == 0 for layer in unit.layers)

    def _kept(self, numel: int, sparsity: float) -> int:
        """Weights an unstructured level keeps: whole grains, at most (1 - sparsity) of them."""
        return math.floor((1.0 - sparsity) * numel / self._grain + 1e-9) * self._grain

    def levels(self, unit: Unit) -> tuple[int, ...]:
        out = []
        for level, (sparsity, structured) in enumerate(self.options()):
            if structured:
                if self.fits_pattern(unit):
                    out.append(level)
                continue
            if sparsity > 0 and self._kept(unit.numel, sparsity) == 0:
                raise ValueError(
                    f"unit {unit.name!r} has {unit.numel} weights: at sparsity {sparsity} it keeps less than one "
                    f"grain of {self._grain} weights; choose a smaller grain or lower sparsities"
                )
            out.append(level)
        return tuple(out)

    def pruned(self, unit: Unit, level: int) -> int:
        """Pruned weights of the whole unit at `level`."""
        sparsity, structured = self.options()[level]
        if structured:
            return sum(layer.numel // self.m * (self.m - self.n) for layer in unit.layers)
        return 0 if sparsity == 0 else unit.numel - self._kept(unit.numel, sparsity)

    def cost(self, unit: Unit, level: int) -> int:
        return -(-(unit.numel - self.pruned(unit, level)) // self._grain)  # kept grains, rounded up

    def budget(self, units: tuple[Unit, ...]) -> int:
        total = sum(unit.numel for unit in units)
        return math.floor((1.0 - self.target) * total / self._grain + 1e-9)

    @property
    def exact(self) -> bool:
        return False

    def uniform_level(self, unit: Unit) -> int | None:
        allowed = self.levels(unit)
        for level, (sparsity, _) in enumerate(self.options()):
            if sparsity == self.target and level in allowed:
                return level
        return None

    def layer_settings(self, unit: Unit, level: int) -> dict[str, int]:
        if self.is_structured(level):
            return {layer.name: -(layer.numel // self.m * (self.m - self.n)) for layer in unit.layers}
        return split_pruned(unit, self.pruned(unit, level))

    def meaning(self, unit: Unit, level: int) -> float:
        return self.pruned(unit, level) / unit.numel
