"""Dynamic programmes over per-unit integer cost tables.

Each unit i has K_i levels with integer costs `costs[i][k]`; a feasible choice picks one level per
unit so that the total cost equals the budget (or stays within it). These functions count the
feasible choices (to sample them exactly uniformly) and find the one that maximises a sum of
per-level scores (the multiple-choice knapsack). They work on index arrays; `Space` maps levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Cells (units x budget values) one table may hold: 2.5e7 float64 cells is 200 MB.
MAX_TABLE_CELLS = 25_000_000


@dataclass(frozen=True)
class CostTables:
    """Cost tables shifted to start at zero and divided by their common divisor.

    Attributes:
        costs: per unit, the reduced cost of each level (smallest is 0).
        budget: the reduced budget, or -1 when no choice can meet an exact budget.
        exact: whether the budget must be met exactly.
    """

    costs: tuple[IntArray, ...]
    budget: int
    exact: bool

    @cached_property
    def cost_lists(self) -> list[list[int]]:
        """`costs` as Python lists, for per-unit loops."""
        return [c.tolist() for c in self.costs]

    @classmethod
    def build(cls, costs: list[list[int]], budget: int, exact: bool) -> CostTables:
        lows = [min(c) for c in costs]
        shifted = [np.asarray(c, dtype=np.int64) - low for c, low in zip(costs, lows, strict=True)]
        remaining = budget - sum(lows)
        divisor = 0
        for table in shifted:
            divisor = math.gcd(divisor, *(int(v) for v in table))
        divisor = max(divisor, 1)
        tables = tuple(t // divisor for t in shifted)
        top = sum(int(t.max()) for t in tables)
        if remaining < 0:
            reduced = -1
        elif exact:
            fits = remaining % divisor == 0 and remaining // divisor <= top
            reduced = remaining // divisor if fits else -1
        else:
            reduced = min(remaining // divisor, top)
        cells = (max(reduced, 0) + 1) * (len(tables) + 1)
        if cells > MAX_TABLE_CELLS:
            raise ValueError(
                f"the budget needs a table of {cells:,} cells (over {MAX_TABLE_CELLS:,}): the units' "
                "costs share too small a common divisor; use block granularity or fewer levels"
            )
        if exact and reduced > 0 and not _reaches(tables, reduced):
            reduced = -1  # within the range and the divisor, yet no combination of levels sums to it
        return cls(tables, reduced, exact)

    @property
    def feasible(self) -> bool:
        return self.budget >= 0


def _reaches(tables: tuple[IntArray, ...], target: int) -> bool:
    """Whether one level per unit can add up to exactly `target` (a boolean subset-sum DP)."""
    reach = np.zeros(target + 1, dtype=bool)
    reach[0] = True
    for costs in tables:
        nxt = np.zeros_like(reach)
        for c in np.unique(costs[costs <= target]):
            nxt[c:] |= reach[: target + 1 - c]
        reach = nxt
    return bool(reach[target])


def _shifted(row: FloatArray, cost: int, fill: float) -> FloatArray:
    """row[t - cost] at every t, `fill` where t - cost < 0."""
    out = np.full_like(row, fill)
    if cost == 0:
        out[:] = row
    elif cost < row.size:
        out[cost:] = row[: row.size - cost]
    return out


def _logsumexp_rows(stack: FloatArray) -> FloatArray:
    top = stack.max(axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return np.asarray(safe + np.log(np.exp(stack - safe).sum(axis=0)), dtype=np.float64)


def count_table(tables: CostTables) -> list[FloatArray]:
    """log N_i(t): the number of ways units i.. can spend exactly t (or at most t).

    Returns L+1 rows of length budget+1; row L is the empty completion.
    """
    size = tables.budget + 1
    last = np.full(size, -np.inf)
    if tables.exact:
        last[0] = 0.0
    else:
        last[:] = 0.0
    rows = [last]
    for costs in reversed(tables.costs):
        nxt = rows[-1]
        # A unit spending c leaves t - c for the rest: N_i(t) = sum_k N_{i+1}(t - c_k).
        stack = np.stack([_shifted(nxt, int(c), -np.inf) for c in costs])
        rows.append(_logsumexp_rows(stack))
    rows.reverse()
    return rows


def log_count(tables: CostTables, rows: list[FloatArray]) -> float:
    """log of the number of feasible choices."""
    return float(rows[0][tables.budget]) if tables.feasible else -math.inf


def sample_indices(tables: CostTables, rows: Sequence[Sequence[float]], rng: np.random.Generator) -> IntArray:
    """One feasible choice, exactly uniform over all of them.

    `rows` are `count_table`'s rows, best as memoryviews: indexing one gives a Python float
    without numpy's per-item cost.
    """
    if not tables.feasible or not np.isfinite(rows[0][tables.budget]):
        raise ValueError("the space has no feasible profile to sample")
    remaining = tables.budget
    picks = np.empty(len(tables.costs), dtype=np.int64)
    draws = rng.random(len(tables.costs)).tolist()
    # Plain Python per unit: a unit has a handful of levels, and numpy's per-call overhead on
    # arrays that small made sampling the coordinator's largest cost (11 ms for 224 units).
    for i, costs in enumerate(tables.cost_lists):
        row = rows[i + 1]
        logits = [row[remaining - c] if c <= remaining else -math.inf for c in costs]
        top = max(logits)
        weights = [math.exp(v - top) for v in logits]
        threshold, k, acc = draws[i] * sum(weights), 0, weights[0]
        while acc <= threshold and k + 1 < len(weights):
            k += 1
            acc += weights[k]
        while weights[k] == 0.0:  # a draw rounded up to the total: the last feasible level
            k -= 1
        picks[i] = k
        remaining -= costs[k]
    return picks


def best_indices(tables: CostTables, scores: list[FloatArray]) -> IntArray | None:
    """The feasible choice with the largest total score, or None if none is feasible."""
    if not tables.feasible:
        return None
    size = tables.budget + 1
    value = np.full(size, -np.inf)
    value[0] = 0.0
    choices = []
    for costs, score in zip(tables.costs, scores, strict=True):
        stack = np.stack([_shifted(value, int(c), -np.inf) + s for c, s in zip(costs, score, strict=True)])
        pick = stack.argmax(axis=0)
        choices.append(pick)
        value = stack[pick, np.arange(size)]
    end = tables.budget if tables.exact else int(np.argmax(value))
    if not np.isfinite(value[end]):
        return None
    picks = np.empty(len(tables.costs), dtype=np.int64)
    for i in range(len(tables.costs) - 1, -1, -1):
        k = int(choices[i][end])
        picks[i] = k
        end -= int(tables.costs[i][k])
    return picks
