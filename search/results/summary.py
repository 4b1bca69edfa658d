"""A profile summarised as a few Optuna parameters, so the dashboard's parameter plots work.

A trial records its profile as one `levels` user attribute (storing one parameter per layer was
too slow, see `search.storage.study`), which leaves optuna-dashboard's importance, slice,
contour and parallel-coordinate plots empty. `ProfileSummary` gives each trial at most
`MAX_PARAMS` real parameters instead: the average level meaning (sparsity, bits, dropped) of a
few contiguous block groups and, at layer (or fused) granularity, of each layer type (``q_proj``,
``down_proj``, ... or attention / MLP where a model has too many types). Each parameter's
distribution spans the lowest to the highest meaning its units allow.

Example:
    >>> summary = ProfileSummary(space)  # doctest: +SKIP
    >>> summary.params(space.to_array(profile))  # doctest: +SKIP
    {'sparsity blocks 0-1': 0.52, 'sparsity blocks 2-3': 0.48, 'sparsity q_proj': 0.61, ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from optuna.distributions import FloatDistribution

from spaces import Space

MAX_PARAMS = 12
BLOCK_GROUPS = 4  # contiguous block ranges (fewer on a shallower model)
MEASURES = {"sparsity": "sparsity", "bitwidth": "bits", "drop": "dropped"}


def layer_type(name: str) -> str:
    """What a layer is inside its block, from its module name: ``model.layers.3.mlp.up_proj`` -> ``up_proj``."""
    return name.rsplit(".", 1)[-1]


class ProfileSummary:
    """The summary parameters of one space: their names, distributions and values.

    Args:
        space: the search space.
    """

    def __init__(self, space: Space) -> None:
        measure = MEASURES.get(space.scheme.name, space.scheme.name)
        meanings = [
            {level: space.scheme.meaning(unit, level) for level in levels}
            for unit, levels in zip(space.units, space.levels, strict=True)
        ]
        self._meanings = meanings
        # the target averages drop decisions over units and the other schemes over weights
        weights = np.asarray([1.0 if space.scheme.name == "drop" else float(u.numel) for u in space.units])
        rows, self.distributions = [], {}
        for label, members in _groups(space):
            values = [value for i in members for value in meanings[i].values()]
            low, high = math.floor(min(values) * 1e6) / 1e6, math.ceil(max(values) * 1e6) / 1e6
            if low == high:
                continue  # a constant tells the dashboard nothing
            row = np.zeros(len(space.units))
            row[members] = weights[members] / weights[members].sum()
            rows.append(row)
            self.distributions[f"{measure} {label}"] = FloatDistribution(low, high)
        self._matrix = np.asarray(rows).reshape(len(rows), len(space.units))
        self._bounds = [(d.low, d.high) for d in self.distributions.values()]

    def params(self, levels: Sequence[int]) -> dict[str, float]:
        """The summary of a profile given as level values in unit order."""
        meanings = np.fromiter((m[int(v)] for m, v in zip(self._meanings, levels, strict=True)), float)
        averages = self._matrix @ meanings
        return {
            name: min(max(round(float(value), 6), low), high)
            for name, value, (low, high) in zip(self.distributions, averages, self._bounds, strict=True)
        }


def _groups(space: Space) -> list[tuple[str, list[int]]]:
    """(label, unit indices): contiguous block ranges, then layer types where units are layers."""
    blocks = sorted({unit.block for unit in space.units})
    count = min(BLOCK_GROUPS, len(blocks))
    groups = []
    for chunk in np.array_split(np.asarray(blocks), count):
        first, last = int(chunk[0]), int(chunk[-1])
        members = [i for i, unit in enumerate(space.units) if first <= unit.block <= last]
        groups.append((f"block {first}" if first == last else f"blocks {first}-{last}", members))
    if space.granularity == "block":
        return groups
    room = MAX_PARAMS - len(groups)
    for key in (lambda unit: layer_type(unit.name), lambda unit: unit.layers[0].kind):
        kinds: dict[str, list[int]] = {}
        for i, unit in enumerate(space.units):
            kinds.setdefault(key(unit), []).append(i)
        if 1 < len(kinds) <= room:
            return groups + list(kinds.items())  # in model order
    return groups


__all__ = ["MAX_PARAMS", "ProfileSummary", "layer_type"]
