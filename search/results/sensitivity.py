"""How much the fitness changes when one unit moves one level, estimated from the trials run.

Every evaluation a search recorded is a point (a profile's levels, a fitness). Fitness values
are comparable only within one generation and stage (EvoPress re-draws its minibatch every
generation and evaluates each stage on more tokens), so the fit works on evaluations grouped by
(generation, tokens): levels and fitness are centred within each group, and a ridge regression
of the centred fitness on the centred level positions gives, per unit, the fitness change of one
step up its levels. EvoPress's members differ from their parent in a few switches, so within a
generation the fit mostly compares profiles that differ in a few units. The small ridge term
keeps units that never moved at zero instead of undefined.

Under an exact budget every profile moves as many steps up as down (for units of one size), so
only differences between units are measured: an effect reads as "more sensitive than the
average unit", and the ridge term centres the effects on zero.

Example:
    >>> estimate = layer_sensitivity(space, study.get_trials(deepcopy=False))  # doctest: +SKIP
    >>> estimate.effects[space.index["model.layers.0.mlp.down_proj"]]  # doctest: +SKIP
    0.0031
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial

from spaces import Space

RIDGE = 1e-3  # the ridge term, relative to the mean squared level movement


@dataclass(frozen=True)
class Sensitivity:
    """Per unit (in unit order), the fitness change of one step up its levels.

    Args:
        effects: one value per unit of the space.
        evaluations: the evaluations the fit used.
        groups: the (generation, tokens) groups they fell into.
    """

    effects: np.ndarray
    evaluations: int
    groups: int


def layer_sensitivity(space: Space, trials: Iterable[FrozenTrial]) -> Sensitivity | None:
    """The fit over every finite intermediate value of trials whose `levels` fit `space`;
    None while no group holds two evaluations of different profiles."""
    positions = [{level: k for k, level in enumerate(levels)} for levels in space.levels]
    groups: dict[tuple[object, int], list[tuple[list[int], float]]] = {}
    for trial in trials:
        levels = trial.user_attrs.get("levels")
        if not isinstance(levels, list) or len(levels) != len(positions):
            continue
        try:
            steps = [index[int(level)] for index, level in zip(positions, levels, strict=True)]
        except KeyError:  # a level this space does not have: another space's trial
            continue
        for tokens, fitness in trial.intermediate_values.items():
            if math.isfinite(fitness):
                groups.setdefault((trial.user_attrs.get("generation"), int(tokens)), []).append((steps, fitness))
    xs, ys, used = [], [], 0
    for points in groups.values():
        if len(points) < 2:
            continue
        x = np.asarray([p[0] for p in points], dtype=float)
        y = np.asarray([p[1] for p in points], dtype=float)
        xs.append(x - x.mean(axis=0))
        ys.append(y - y.mean())
        used += 1
    if not xs:
        return None
    x, y = np.vstack(xs), np.concatenate(ys)
    gram = x.T @ x
    movement = float(np.trace(gram)) / len(positions)
    if movement == 0.0:
        return None
    effects = np.linalg.solve(gram + RIDGE * movement * np.eye(len(positions)), x.T @ y)
    return Sensitivity(effects, len(y), used)


__all__ = ["Sensitivity", "layer_sensitivity"]
