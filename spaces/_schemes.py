"""Level schemes: what an integer level means for a unit, and what it costs.

A scheme turns a unit and an integer level into a per-layer setting (pruned weights, bits,
dropped or not) and an integer cost, and says which total cost a profile must meet. Costs are
integers so that budgets hold exactly, never up to float rounding.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from ._layers import LayerInfo, Unit


class LevelScheme(ABC):
    """The meaning and cost of levels; implementations are frozen dataclasses.

    A scheme may have parameters that depend on the units (the sparsity step); `resolve` returns
    a copy with every such parameter fixed, and a `Space` only ever holds resolved schemes.
    """

    name: ClassVar[str]
    target: float

    def resolve(self, units: tuple[Unit, ...]) -> LevelScheme:
        """Fix the parameters that depend on the units; the default has none."""
        return self

    def _resolved(self, name: str) -> int:
        """A parameter `resolve` fixes, once it has."""
        value = getattr(self, name)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}.{name} is unresolved; call resolve(units) first")
        return int(value)

    @abstractmethod
    def levels(self, unit: Unit) -> tuple[int, ...]:
        """The unit's allowed levels, ascending."""

    @abstractmethod
    def cost(self, unit: Unit, level: int) -> int:
        """The integer cost of the unit at `level`."""

    @abstractmethod
    def budget(self, units: tuple[Unit, ...]) -> int:
        """The total cost a feasible profile must meet (`exact`) or stay within."""

    @property
    def exact(self) -> bool:
        """True when the budget must be met exactly, False when it is an upper bound."""
        return True

    @abstractmethod
    def uniform_level(self, unit: Unit) -> int | None:
        """The level that puts the unit at the target, or None when no single level does."""

    @abstractmethod
    def layer_settings(self, unit: Unit, level: int) -> dict[str, int]:
        """Per layer of the unit: pruned weights (sparsity), bits, or 1 = dropped."""

    @abstractmethod
    def meaning(self, unit: Unit, level: int) -> float:
        """What the level means as a number a person reads: sparsity, bits, or dropped."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)  # type: ignore[call-overload]
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}}


def is_whole(value: object) -> bool:
    """An integer (Python or numpy), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_fraction(key: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high) or math.isnan(value):
        raise ValueError(f"{key} must be in [{low}, {high}], got {value!r}")


def split_pruned(unit: Unit, total: int) -> dict[str, int]:
    """A unit's pruned weights shared over its layers in proportion to their sizes."""
    if len(unit.layers) == 1:
        return {unit.layers[0].name: total}
    # Largest remainder, so the layers' counts add up to the unit's exactly; integer
    # arithmetic, since float quotas of large layers can round past a whole number.
    shares = [divmod(total * layer.numel, unit.numel) for layer in unit.layers]
    counts = [quotient for quotient, _ in shares]
    order = sorted(range(len(shares)), key=lambda j: (-shares[j][1], j))
    for j in order[: total - sum(counts)]:
        counts[j] += 1
    return {layer.name: c for layer, c in zip(unit.layers, counts, strict=True)}


@dataclass(frozen=True)
class SparsityScheme(LevelScheme):
    """EvoPress's scheme: level l means `round(S*n) + l*D` pruned weights.

    Every step prunes exactly `step` (D) more weights in any unit, so the budget holds exactly
    when the levels sum to zero, and any two units can trade a step.

    Args:
        target: the average sparsity S, in (0, 1).
        step: D, weights per level step; None picks `0.5*min(S, 1-S)/max_levels * smallest unit`.
        max_levels: N, the most steps each way from the target.
        min_sparsity / max_sparsity: the range a unit's sparsity must stay in.
    """

    name: ClassVar[str] = "sparsity"
    target: float
    step: int | None = None
    max_levels: int = 8
    min_sparsity: float = 0.0
    max_sparsity: float = 0.99

    def __post_init__(self) -> None:
        check_fraction("sparsity target", self.target, 0.0, 1.0)
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"sparsity target must be strictly between 0 and 1, got {self.target!r}")
        check_fraction("min_sparsity", self.min_sparsity, 0.0, 1.0)
        check_fraction("max_sparsity", self.max_sparsity, 0.0, 1.0)
        if not self.min_sparsity <= self.target <= self.max_sparsity:
            raise ValueError(
                f"sparsity target {self.target} must lie within [min_sparsity, max_sparsity] = "
                f"[{self.min_sparsity}, {self.max_sparsity}]"
            )
        if self.max_sparsity >= 1.0:
            raise ValueError(f"max_sparsity must be below 1, got {self.max_sparsity}")
        if not is_whole(self.max_levels) or self.max_levels < 0:
            raise ValueError(f"max_levels must be a whole number >= 0, got {self.max_levels!r}")
        if self.step is not None and (not is_whole(self.step) or self.step <= 0):
            raise ValueError(f"sparsity step must be a positive whole number of weights, got {self.step!r}")
        object.__setattr__(self, "max_levels", int(self.max_levels))  # numpy integers -> int (JSON)
        if self.step is not None:
            object.__setattr__(self, "step", int(self.step))

    def resolve(self, units: tuple[Unit, ...]) -> SparsityScheme:
        if self.step is not None:
            return self
        smallest = min(unit.numel for unit in units)
        n = max(self.max_levels, 1)
        step = max(1, int(0.5 * min(self.target, 1.0 - self.target) / n * smallest))
        return replace(self, step=step)

    @property
    def _step(self) -> int:
        return self._resolved("step")

    def base(self, numel: int) -> int:
        """Pruned weights at level 0: `S*n` rounded, but never rounded out of [min, max] sparsity."""
        pruned = round(self.target * numel)
        if pruned / numel > self.max_sparsity:
            pruned -= 1
        elif pruned / numel < self.min_sparsity:
            pruned += 1
        return pruned

    def levels(self, unit: Unit) -> tuple[int, ...]:
        n, base, step = unit.numel, self.base(unit.numel), self._step
        if not self.min_sparsity <= base / n <= self.max_sparsity:
            raise ValueError(
                f"unit {unit.name!r} has {n} weights: no whole number of them gives a sparsity in "
                f"[{self.min_sparsity}, {self.max_sparsity}]; widen the range or use block granularity"
            )

        def fits(level: int) -> bool:
            return self.min_sparsity <= (base + level * step) / n <= self.max_sparsity

        # Closed-form bounds, then nudged so that float rounding neither admits nor drops a level.
        lo = min(0, max(-self.max_levels, math.ceil((self.min_sparsity * n - base) / step)))
        hi = max(0, min(self.max_levels, math.floor((self.max_sparsity * n - base) / step)))
        while lo < 0 and not fits(lo):
            lo += 1
        while lo > -self.max_levels and fits(lo - 1):
            lo -= 1
        while hi > 0 and not fits(hi):
            hi -= 1
        while hi < self.max_levels and fits(hi + 1):
            hi += 1
        return tuple(range(lo, hi + 1))

    def cost(self, unit: Unit, level: int) -> int:
        return level

    def budget(self, units: tuple[Unit, ...]) -> int:
        return 0

    def uniform_level(self, unit: Unit) -> int | None:
        return 0

    def pruned(self, unit: Unit, level: int) -> int:
        """Pruned weights of the whole unit at `level`."""
        return self.base(unit.numel) + level * self._step

    def layer_settings(self, unit: Unit, level: int) -> dict[str, int]:
        return split_pruned(unit, self.pruned(unit, level))

    def meaning(self, unit: Unit, level: int) -> float:
        return self.pruned(unit, level) / unit.numel


@dataclass(frozen=True)
class BitwidthScheme(LevelScheme):
    """Level = bits per weight; cost = weights * bits.

    Args:
        target: the average bits B over all weights (group overhead not counted).
        choices: the allowed bitwidths.
        group_size: the quantisation group along the input dimension; it must divide each
            layer's input width, or be at least that width (one group per row), see `group_problem`.
        exact_budget: True for `sum n_i*b_i == B*sum n_i`, False for `<=`.
    """

    name: ClassVar[str] = "bitwidth"
    target: float
    choices: tuple[int, ...] = (2, 3, 4, 5, 6)
    group_size: int = 128
    exact_budget: bool = True

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError("bitwidth choices must not be empty")
        if any(not is_whole(b) or b < 1 or b > 16 for b in self.choices):
            raise ValueError(f"bitwidth choices must be integers in [1, 16], got {list(self.choices)}")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"bitwidth choices must not repeat, got {list(self.choices)}")
        object.__setattr__(self, "choices", tuple(sorted(int(b) for b in self.choices)))
        if not min(self.choices) <= self.target <= max(self.choices):
            raise ValueError(
                f"bitwidth target {self.target!r} must lie within the choices' range "
                f"[{min(self.choices)}, {max(self.choices)}]"
            )
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")

    @property
    def exact(self) -> bool:
        return self.exact_budget

    def levels(self, unit: Unit) -> tuple[int, ...]:
        return self.choices

    def cost(self, unit: Unit, level: int) -> int:
        return unit.numel * level

    def budget(self, units: tuple[Unit, ...]) -> int:
        total = sum(unit.numel for unit in units)
        return math.floor(self.target * total + 1e-9)

    def uniform_level(self, unit: Unit) -> int | None:
        return int(self.target) if float(self.target).is_integer() and self.target in self.choices else None

    def layer_settings(self, unit: Unit, level: int) -> dict[str, int]:
        return {layer.name: level for layer in unit.layers}

    def meaning(self, unit: Unit, level: int) -> float:
        return float(level)

    def group_problem(self, layers: Sequence[LayerInfo]) -> str | None:
        """Why the group size cannot quantise these layers as a serving engine runs them, or None.

        The rule, per layer: groups of `group_size` input columns when it divides the layer's
        input width; one group per row (llm-compressor's ``channel`` strategy) when it is at
        least the width. A group size between (a narrower last group) is refused: llm-compressor
        and the engines' kernels take only whole groups. The message names the first such layer.
        """
        widths = [(layer.name, layer.shape[-1]) for layer in layers if len(layer.shape) == 2]
        for name, width in widths:
            if self.group_size < width and width % self.group_size:
                fits = max(d for d in range(1, self.group_size) if all(d >= w or w % d == 0 for _, w in widths))
                return (
                    f"group size {self.group_size} does not divide {name}'s {width} input columns; use one "
                    f"that divides every wider layer's input width (here at most {fits}) or one of at least "
                    f"{max(w for _, w in widths)} (one group per row)"
                )
        return None

    def overhead_bits(self, scale_bits: int = 16) -> float:
        """Extra bits per weight for one scale and one zero point per group."""
        return 2 * scale_bits / self.group_size


@dataclass(frozen=True)
class DropScheme(LevelScheme):
    """Level 0 keeps a unit (a block or a sub-block), 1 drops it; exactly k are dropped.

    Args:
        target: the fraction of units to drop, in (0, 1); k = round(target * units).
    """

    name: ClassVar[str] = "drop"
    target: float

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0:
            raise ValueError(f"drop target must be a fraction of units strictly between 0 and 1, got {self.target!r}")

    def levels(self, unit: Unit) -> tuple[int, ...]:
        return (0, 1)

    def cost(self, unit: Unit, level: int) -> int:
        return level

    def budget(self, units: tuple[Unit, ...]) -> int:
        k = round(self.target * len(units))
        if k == 0:
            raise ValueError(
                f"drop target {self.target} rounds to 0 of {len(units)} units; raise it to at least "
                f"{1 / len(units):.3g}"
            )
        return k

    def uniform_level(self, unit: Unit) -> int | None:
        return None

    def layer_settings(self, unit: Unit, level: int) -> dict[str, int]:
        return {layer.name: level for layer in unit.layers}

    def meaning(self, unit: Unit, level: int) -> float:
        return float(level)
