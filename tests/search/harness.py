"""Synthetic problems and drivers that run any `Algorithm` without a model.

A `Problem` is a fitness of (level array, Fidelity): an additive part (a per-unit, per-level
table), optional pairwise interactions, and optional noise that depends on the minibatch. It
also answers the statistics jobs (layer errors, OWL ratios, a gradient-free stand-in for the
DASS relaxation) from the additive part alone, as a per-layer measurement would.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.algorithms import Algorithm, Candidate, Result, candidate_to_dict
from spaces import BitwidthScheme, DropScheme, Fidelity, LayerInfo, Space, SparsityScheme

#: Tokens a synthetic statistics pass (layer errors, OWL ratios) reports as forwarded.
STATS_TOKENS = 2048
SHAPES = ((32, 32), (32, 64), (64, 64), (64, 128), (128, 128))


def layers(n: int, seed: int, shapes: Sequence[tuple[int, int]] = SHAPES, per_block: int = 4) -> list[LayerInfo]:
    """`n` layers of random sizes, `per_block` to a block."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape = shapes[int(rng.integers(len(shapes)))]
        out.append(
            LayerInfo(f"blocks.{i // per_block}.fc{i % per_block}", shape, shape[0] * shape[1], block=i // per_block)
        )
    return out


def sparsity_space(n: int, seed: int = 0, target: float = 0.6, step: int | None = 256) -> Space:
    """Varied layer sizes; a fixed step of `step` weights gives small layers few, coarse levels."""
    return Space(layers(n, seed), SparsityScheme(target, step=step), model="synthetic")


def bits_space(n: int, target: float = 4.0) -> Space:
    """Two layer sizes in turn, so switches stay inside two equal-size groups.

    With n a multiple of 4, quarter-bit targets are feasible.
    """
    shapes = ((32, 32), (32, 128))
    units = [LayerInfo(f"blocks.{i // 2}.fc{i % 2}", shapes[i % 2], math.prod(shapes[i % 2]), i // 2) for i in range(n)]
    return Space(units, BitwidthScheme(target), model="synthetic")


def drop_space(n: int, target: float = 0.25) -> Space:
    blocks = [LayerInfo(f"blocks.{i}", (16, 16), 256, block=i) for i in range(n)]
    return Space(blocks, DropScheme(target), model="synthetic")


@dataclass
class Problem:
    """A synthetic fitness over one space (lower is better).

    Attributes:
        space: the space.
        table: (units, levels) additive cost per unit and level position (aligned with
            ``space.levels[i]``; +inf pads units with fewer levels).
        couples: (i, j, penalty): ``penalty * |x_i - x_j|`` is added: units i and j are cheap to
            compress only together (a per-layer measurement, partner at level 0, sees only
            ``penalty * |x_i|``).
        noise: relative noise of a per-unit sensitivity drawn per minibatch, at 512 tokens;
            it shrinks as 1/sqrt(tokens).
        fail: candidates for which the worker reports a failure.
    """

    space: Space
    table: np.ndarray
    couples: list[tuple[int, int, float]] = field(default_factory=list)
    noise: float = 0.0
    seed: int = 0
    fail: Callable[[Candidate], bool] = lambda candidate: False
    evaluations: int = 0
    _eps: dict[tuple[tuple[int, ...], int], np.ndarray] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        # level -> position lookup, vectorised: lookup[i, level - low] (the harness is hot).
        self._low = min(min(levels) for levels in self.space.levels)
        high = max(max(levels) for levels in self.space.levels)
        self._lookup = np.full((len(self.space), high - self._low + 1), -1, dtype=np.int64)
        for i, levels in enumerate(self.space.levels):
            self._lookup[i, np.asarray(levels) - self._low] = np.arange(len(levels))
        self._rows = np.arange(len(self.space))

    # --- values -----------------------------------------------------------------------------

    def per_unit(self, levels: Sequence[int] | np.ndarray) -> np.ndarray:
        positions = self._lookup[self._rows, np.asarray(levels) - self._low]
        assert (positions >= 0).all(), "a level outside the space"
        out: np.ndarray = self.table[self._rows, positions]
        return out

    def interaction(self, levels: Sequence[int] | np.ndarray) -> float:
        return sum(penalty * abs(int(levels[i]) - int(levels[j])) for i, j, penalty in self.couples)

    def true(self, levels: Sequence[int] | np.ndarray) -> float:
        """The noise-free (held-out) fitness."""
        return float(self.per_unit(levels).sum()) + self.interaction(levels)

    def observe(self, levels: Sequence[int] | np.ndarray, fidelity: Fidelity) -> float:
        """The fitness a worker would measure on this minibatch."""
        value = self.true(levels)
        if self.noise:
            key = (fidelity.batch, fidelity.tokens)
            if key not in self._eps:
                rng = np.random.default_rng([self.seed, *fidelity.batch, fidelity.tokens])
                self._eps[key] = rng.standard_normal(len(self.space)) * self.noise * math.sqrt(512 / fidelity.tokens)
            value += float((self.per_unit(levels) * self._eps[key]).sum())
        return value

    def measured(self, levels: Sequence[int] | np.ndarray) -> float:
        """The sum of per-unit errors measured alone (what `layer_errors` reports)."""
        alone = sum(penalty * (abs(int(levels[i])) + abs(int(levels[j]))) for i, j, penalty in self.couples)
        return float(self.per_unit(levels).sum()) + alone

    def optimum(self) -> np.ndarray:
        """The additive optimum (exact: the knapsack DP)."""
        scores = [-self.table[i, : len(levels)] for i, levels in enumerate(self.space.levels)]
        profile = self.space.project(scores)
        return np.asarray([profile[n] for n in self.space.names], dtype=np.int64)

    # --- the worker ----------------------------------------------------------------------------

    def respond(self, candidate: Candidate) -> Result:
        if self.fail(candidate):
            return Result(candidate.id, None, error="synthetic failure")
        if candidate.job == "evaluate":
            assert candidate.profile is not None
            self.evaluations += 1
            levels = [candidate.profile[n] for n in self.space.names]
            return Result(candidate.id, self.observe(levels, candidate.fidelity), tokens=candidate.fidelity.tokens)
        jobs = {"layer_errors": self.layer_errors, "owl_scores": self.owl_scores, "relax": self.relax}
        # What a worker reports it forwarded: one statistics pass, or the relaxation's steps.
        steps = int(candidate.params["steps"]) if candidate.job == "relax" else 1
        tokens = steps * (candidate.fidelity.tokens if candidate.job == "relax" else STATS_TOKENS)
        return Result(candidate.id, None, tokens=tokens, data=jobs[candidate.job]())

    def layer_errors(self) -> dict[str, Any]:
        # Each unit measured alone, every other unit at level 0: its additive cost plus what a
        # couple costs with the partner at 0; split evenly over the unit's layers.
        alone = {i: 0.0 for i in range(len(self.space))}
        for i, j, penalty in self.couples:
            alone[i] += penalty
            alone[j] += penalty
        errors: dict[str, dict[str, float]] = {layer.name: {} for layer in self.space.layers}
        for i, (unit, levels) in enumerate(zip(self.space.units, self.space.levels, strict=True)):
            for k, level in enumerate(levels):
                value = float(self.table[i, k]) + alone[i] * abs(level)
                for name, setting in self.space.scheme.layer_settings(unit, level).items():
                    errors[name][str(setting)] = value / len(unit.layers)
        return {"errors": errors}

    def owl_scores(self) -> dict[str, Any]:
        rng = np.random.default_rng(self.seed)
        blocks = sorted({unit.block for unit in self.space.units})
        return {"ratios": {str(b): float(r) for b, r in zip(blocks, rng.uniform(1, 10, len(blocks)), strict=True)}}

    def relax(self) -> dict[str, Any]:
        # A gradient-free stand-in for the relaxation: logits = -additive cost, so rounding
        # them with the exact-budget DP must land on the additive optimum.
        logits = [(-self.table[i, : len(levels)]).tolist() for i, levels in enumerate(self.space.levels)]
        expected = 0.0
        for row, costs in zip(logits, self.space.costs, strict=True):
            p = np.exp(np.asarray(row) - max(row))
            expected += float((p / p.sum()) @ np.asarray(costs, dtype=float))
        return {"logits": logits, "expected_cost": expected, "target_cost": self.space.budget, "trace": [1.0, 0.5]}


def additive_problem(space: Space, seed: int = 0, noise: float = 0.0, power: float = 2.0) -> Problem:
    """Per-unit error ``w_i * numel_i * meaning^power``: convex in the level, with random weights.

    For the drop scheme, meaning is 0 or 1, so the error is ``w_i * numel_i`` when dropped.
    """
    rng = np.random.default_rng(seed)
    width = max(len(levels) for levels in space.levels)
    table = np.full((len(space), width), np.inf)
    for i, (unit, levels) in enumerate(zip(space.units, space.levels, strict=True)):
        weight = rng.lognormal(0.0, 0.5) * unit.numel / 1000.0
        meaning = np.asarray([space.scheme.meaning(unit, level) for level in levels])
        if space.scheme.name == "bitwidth":
            meaning = 2.0 ** (-meaning)  # fewer bits, more error
        table[i, : len(levels)] = weight * meaning**power
    return Problem(space, table, noise=noise, seed=seed)


# --- drivers ---------------------------------------------------------------------------------


def run(algo: Algorithm, problem: Problem, max_asks: int = 1_000_000) -> list[Candidate]:
    """Ask for everything available, tell it all back, until the algorithm finishes."""
    asked: list[Candidate] = []
    while not algo.finished:
        batch = algo.ask(max_asks)
        assert batch, f"{algo.name} asked nothing but is not finished"
        asked.extend(batch)
        algo.tell([problem.respond(c) for c in batch])
    return asked


@dataclass
class Driver:
    """Asks `chunk` at a time and tells a random part of what is in flight, in random order.

    It leaves candidates in flight across asks (as a pool of workers does), and can be copied
    with its pool and random stream, to drive a restored algorithm in lockstep.
    """

    problem: Problem
    seed: int = 0
    chunk: int = 3
    share: float = 0.5
    pool: list[Candidate] = field(default_factory=list)
    asked: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def step(self, algo: Algorithm) -> None:
        new = algo.ask(self.chunk)
        self.asked.extend(candidate_to_dict(c) for c in new)
        self.pool.extend(new)
        assert self.pool, f"{algo.name} asked nothing, has nothing in flight, and is not finished"
        told = self.rng.sample(self.pool, max(1, int(len(self.pool) * self.share)))
        gone = {c.id for c in told}
        self.pool = [c for c in self.pool if c.id not in gone]
        algo.tell([self.problem.respond(c) for c in told])

    def run(self, algo: Algorithm, steps: int | None = None) -> None:
        done = 0
        while not algo.finished and (steps is None or done < steps):
            self.step(algo)
            done += 1

    def copy(self) -> Driver:
        """The same pool, log and random stream (candidates are immutable, so shared)."""
        twin = Driver(self.problem, self.seed, self.chunk, self.share, list(self.pool), list(self.asked))
        twin.rng.setstate(self.rng.getstate())
        return twin


def strict_json(state: dict[str, Any]) -> dict[str, Any]:
    """The state through strict JSON (no NaN or Infinity), as a database would store it."""
    out: dict[str, Any] = json.loads(json.dumps(state, allow_nan=False))
    return out


def resume_in_lockstep(original: Algorithm, restored: Algorithm, driver: Driver) -> None:
    """Load `original`'s state into `restored`, which re-asks what is in flight, then drive both
    to the end in lockstep, checking that they ask the same candidates."""
    restored.load_state_dict(strict_json(original.state_dict()))
    twin = driver.copy()
    assert len(restored.ask(len(driver.pool))) == len(driver.pool)
    while not original.finished:
        driver.step(original)
        twin.step(restored)
        assert twin.asked == driver.asked
