"""Optuna's TPE and CMA-ES samplers as ask/tell algorithms over a feasible-by-construction decoder.

Optuna checks constraints only after a trial, so the sampler never sees the budget: it proposes
one continuous ``z_i`` in [0, 1] per unit, and `decode` maps the vector to the feasible profile
nearest (in level meaning) to ``lo_i + z_i * (hi_i - lo_i)``. Every profile is evaluated at full
tokens on one fixed minibatch, like flat random search, so the budget is ``budget_tokens //
tokens`` trials.

This module sits outside `search.algorithms` because it imports optuna; the objects follow the
same `Algorithm` protocol and live in their own registry, `OPTUNA_SAMPLERS`.
"""

from __future__ import annotations

import importlib.util
import logging
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState

from search.algorithms import int_at_least, json_float
from search.algorithms.base import Algorithm, Candidate, Result
from search.algorithms.random_search import RandomSearch, RandomSearchConfig
from spaces import Profile, Space

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptunaSamplerConfig(RandomSearchConfig):
    """Flat random search's budget, plus the sampler's random start.

    Args:
        tokens: tokens per evaluation.
        budget_tokens: the search runs ``budget_tokens // tokens`` trials.
        max_retries: retries of a failed evaluation before the trial counts as failed.
        startup_trials: trials sampled at random before the model-based sampler takes over.

    Example:
        >>> OptunaSamplerConfig(tokens=1000, budget_tokens=50_000, startup_trials=5).samples
        50
    """

    startup_trials: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        int_at_least(type(self).__name__, "startup_trials", self.startup_trials, 0)


def meaning_bounds(space: Space) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, the lowest and highest meaning (sparsity, bits, dropped) of its levels."""
    meanings = [
        [space.scheme.meaning(u, lv) for lv in levels] for u, levels in zip(space.units, space.levels, strict=True)
    ]
    return np.asarray([min(m) for m in meanings]), np.asarray([max(m) for m in meanings])


def decode(space: Space, z: Sequence[float], bounds: tuple[np.ndarray, np.ndarray] | None = None) -> Profile:
    """The feasible profile nearest to ``lo + z*(hi - lo)`` in each unit's level meaning.

    Args:
        space: the space.
        z: one number in [0, 1] per unit.
        bounds: `meaning_bounds(space)`, when the caller has it already.

    Example:
        >>> from spaces import DropScheme, LayerInfo, Space
        >>> space = Space([LayerInfo(f"b{i}", (4, 4), 16, block=i) for i in range(4)], DropScheme(0.5))
        >>> dict(decode(space, [0.9, 0.1, 0.2, 0.8]))
        {'b0': 1, 'b1': 0, 'b2': 0, 'b3': 1}
    """
    lo, hi = bounds or meaning_bounds(space)
    return space.nearest(lo + np.asarray(z, dtype=np.float64) * (hi - lo))


def _trial_seed(seed: int, number: int) -> int:
    """A sampler seed for one trial: independent of everything but (seed, trial number)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class OptunaSampler(RandomSearch):
    """Flat random search whose samples an Optuna sampler proposes through the z decoder.

    Each proposal runs ``study.ask`` on an in-memory study with a sampler freshly seeded from
    (seed, trial number), so a trial depends only on the study's trials, which the state rebuilds
    by replaying every ask and tell in order (`load_state_dict`). Failed evaluations (after
    retries) are told to Optuna as FAIL, so the sampler ignores them; for the algorithm they count
    as +inf. As in `RandomSearch`, sample i is candidate generation i and `best` is the lowest
    value seen.

    Args:
        space: the search space.
        config: tokens, budget and random start.
        seed: seeds the samplers.
    """

    config: OptunaSamplerConfig

    def __init__(self, space: Space, config: OptunaSamplerConfig | None = None, seed: int = 0) -> None:
        super().__init__(space, config or OptunaSamplerConfig(), seed)
        self._bounds = meaning_bounds(space)
        self._distributions: dict[str, BaseDistribution] = {
            f"z{i}": FloatDistribution(0.0, 1.0) for i in range(len(space))
        }
        self._study = self._new_study()
        self._trials: list[dict[str, Any]] = []  # per trial: z, then its value and state when told
        self._events: list[list[Any]] = []  # ["ask" | "tell", trial number], in order

    @abstractmethod
    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The sampler that proposes one trial."""

    @staticmethod
    def _new_study() -> optuna.Study:
        return optuna.create_study(direction="minimize")

    def _propose(self, index: int) -> Profile:
        z = self._optuna_ask(index)
        self._trials.append({"z": z, "value": None, "state": "running"})
        return decode(self.space, z, self._bounds)

    def _resolve(self, candidate: Candidate, result: Result, fitness: float) -> None:
        trial = self._trials[candidate.generation]
        trial["state"] = "complete" if np.isfinite(fitness) else "fail"
        trial["value"] = json_float(fitness)
        self._optuna_tell(candidate.generation)
        super()._resolve(candidate, result, fitness)

    # --- the study ---------------------------------------------------------------------------

    def _optuna_ask(self, number: int) -> list[float]:
        self._study.sampler = self._make_sampler(_trial_seed(self.seed, number))
        trial = self._study.ask(self._distributions)
        assert trial.number == number, "the study's trials and the algorithm's are numbered alike"
        self._events.append(["ask", number])
        return [float(trial.params[f"z{i}"]) for i in range(len(self.space))]

    def _optuna_tell(self, number: int) -> None:
        trial = self._trials[number]
        if trial["state"] == "complete":
            self._study.tell(number, float(trial["value"]))
        else:
            self._study.tell(number, state=TrialState.FAIL)
        self._events.append(["tell", number])

    # --- state ---------------------------------------------------------------------------------

    def _search_state(self) -> dict[str, Any]:
        return {**super()._search_state(), "trials": self._trials, "events": self._events}

    def _load_search_state(self, state: Mapping[str, Any]) -> None:
        super()._load_search_state(state)
        trials = [dict(t) for t in state["trials"]]
        self._study, self._events, self._trials = self._new_study(), [], []
        # Replay the study: the same asks with the same seeds, and the same tells in the same
        # order, give the samplers exactly the study they saw, so the next trial is the same.
        for kind, number in state["events"]:
            if kind == "ask":
                if self._optuna_ask(number) != trials[number]["z"]:
                    raise ValueError(
                        f"{self.name}: replaying the study gave trial #{number} other parameters than the "
                        "saved state; was optuna upgraded since the state was saved?"
                    )
                self._trials.append(trials[number])
            else:
                self._optuna_tell(number)


class OptunaTPE(OptunaSampler):
    """Optuna's TPE sampler (multivariate, with a constant liar for trials in flight).

    Example:
        >>> from spaces import LayerInfo, Space, SparsityScheme
        >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(6)]
        >>> algo = OptunaTPE(Space(layers, SparsityScheme(0.5)), OptunaSamplerConfig(1000, 20_000), seed=0)
        >>> all(algo.space.is_feasible(c.profile) for c in algo.ask(4))
        True
    """

    name: ClassVar[str] = "optuna-tpe"

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.config.startup_trials)


class OptunaCMAES(OptunaSampler):
    """Optuna's CMA-ES sampler; needs the ``cmaes`` package.

    Raises:
        ImportError: ``cmaes`` is not installed.
    """

    name: ClassVar[str] = "optuna-cmaes"

    def __init__(self, space: Space, config: OptunaSamplerConfig | None = None, seed: int = 0) -> None:
        if importlib.util.find_spec("cmaes") is None:
            raise ImportError("the optuna-cmaes search needs the 'cmaes' package: pip install cmaes")
        super().__init__(space, config, seed)

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=self.config.startup_trials)


OPTUNA_SAMPLERS: dict[str, tuple[type[Algorithm], type]] = {
    cls.name: (cls, OptunaSamplerConfig) for cls in (OptunaTPE, OptunaCMAES)
}

__all__ = ["OPTUNA_SAMPLERS", "OptunaCMAES", "OptunaSampler", "OptunaSamplerConfig", "OptunaTPE", "decode"]
