"""Random search, the honest baseline: exactly uniform feasible profiles, at a token budget.

`RandomSearch` evaluates every sample at full fidelity on one fixed minibatch, so all values
compare; `RandomSearchSH` runs fresh samples through EvoPress's stage schedule (successive
halving) with the incumbent in every last stage. Give both EvoPress's token budget
(`EvoPress.tokens_asked`, or `matched_budget`) to compare at equal cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from spaces import Fidelity, Profile

from ._constrained import ConstrainedSearch
from ._queue import FIXED_BATCH, json_float
from ._stages import (
    SCHEDULES,
    LevelArray,
    RoundPlan,
    Schedule,
    StagedSearch,
    matched_budget,
    round_tokens,
    schedule,
)
from ._validate import MAX_TOKENS, Stages, check_entrants, check_overrides, check_stages, int_at_least, require
from .base import Candidate, Result
from .constraint import sample_within

logger = logging.getLogger(__name__)

_SPARSITY = SCHEDULES["sparsity"]
#: EvoPress's whole reference sparsity search: 400 generations of about 0.46 M tokens.
DEFAULT_BUDGET = matched_budget(_SPARSITY)
_Config = TypeVar("_Config")


def _from_schedule(
    cls: type[_Config], name: str, overrides: Mapping[str, Any], fields: Callable[[Schedule], dict[str, Any]]
) -> _Config:
    """A config built from the named schedule's `fields`, with `overrides` over them, at the
    budget the overrides give, or else at EvoPress's over the whole schedule.

    Raises:
        ValueError: an unknown preset or field; a schedule without a fixed number of generations
            (``depth``) and no `budget_tokens`.
    """
    check_overrides(cls, overrides)
    chosen = schedule(cls.__name__, name)
    budget = {}
    if "budget_tokens" not in overrides:
        allowed = f"a number of tokens (preset {name!r} has no fixed number of generations)"
        require(chosen.generations is not None, cls.__name__, "budget_tokens", None, allowed)
        budget["budget_tokens"] = matched_budget(chosen)
    return cls(**{**fields(chosen), **budget, **overrides})


@dataclass(frozen=True)
class RandomSearchConfig:
    """Flat random search.

    Args:
        tokens: tokens per evaluation (the last stage's, to compare with EvoPress's winners).
        budget_tokens: the search evaluates ``budget_tokens // tokens`` samples.
        max_retries: retries of a failed evaluation before it counts as +inf.

    Example:
        >>> RandomSearchConfig(tokens=1000, budget_tokens=10_000).samples
        10
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    tokens: int = _SPARSITY.stages[-1][1]
    budget_tokens: int = DEFAULT_BUDGET
    max_retries: int = 2

    def __post_init__(self) -> None:
        owner = type(self).__name__
        int_at_least(owner, "tokens", self.tokens, 1, MAX_TOKENS)
        int_at_least(owner, "budget_tokens", self.budget_tokens, self.tokens, MAX_TOKENS)
        int_at_least(owner, "max_retries", self.max_retries, 0)

    @property
    def samples(self) -> int:
        return self.budget_tokens // self.tokens

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Self:
        """EvoPress's named schedule as a budget: its last stage's tokens, its total tokens.

        Raises:
            ValueError: an unknown preset or field; ``depth`` without `budget_tokens`.
        """
        return _from_schedule(cls, name, overrides, lambda chosen: {"tokens": chosen.stages[-1][1]})


class RandomSearch(ConstrainedSearch):
    """Exactly uniform samples, each on the same `tokens` of one fixed minibatch.

    Sample i is candidate generation i; `best` is the lowest value seen. With a `constraint`,
    samples are exactly uniform over the feasible profiles that meet it (by rejection).

    Built as ``cls(space, config, seed, constraint)`` (see `ConstrainedSearch`); the config holds
    the tokens and budget, the seed seeds the sampler.

    Example:
        >>> from spaces import LayerInfo, Space, SparsityScheme
        >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(8)]
        >>> algo = RandomSearch(Space(layers, SparsityScheme(0.5)), RandomSearchConfig(1000, 5000), seed=0)
        >>> len(algo.ask(100))
        5
    """

    name: ClassVar[str] = "random"
    config_class = RandomSearchConfig
    config: RandomSearchConfig

    def _setup(self) -> None:
        self._drawn = 0
        self._best: tuple[list[int], float] | None = None

    @property
    def finished(self) -> bool:
        return self._drawn >= self.config.samples and not self._open

    @property
    def progress(self) -> float | None:
        return min(1.0, self._drawn / self.config.samples)

    @property
    def best(self) -> tuple[Profile, float] | None:
        if self._best is None:
            return None
        return self.space.from_array(self._best[0]), self._best[1]

    def _refill(self, wanted: int) -> None:
        fidelity = Fidelity(self.config.tokens, batch=FIXED_BATCH)
        for _ in range(min(wanted, self.config.samples - self._drawn)):
            profile = self._propose(self._drawn)
            self._enqueue(self._candidate(profile, fidelity, generation=self._drawn))
            self._drawn += 1

    def _propose(self, index: int) -> Profile:
        """Sample number `index`: here exactly uniform over the feasible profiles that meet the
        constraint, if any."""
        return self.space.from_array(sample_within(self.space, self.rng, self.constraint))

    def _resolve(self, candidate: Candidate, result: Result, fitness: float) -> None:
        assert candidate.profile is not None, "random search only evaluates"
        if self._best is None or fitness < self._best[1]:
            self._best = ([int(v) for v in self.space.to_array(candidate.profile)], fitness)
        self.history.append(
            {
                "generation": candidate.generation,
                "fitness": json_float(fitness),
                "best_fitness": json_float(self._best[1]),
                "tokens_asked": self.tokens_asked,
            }
        )

    def _search_state(self) -> dict[str, Any]:
        return {
            "drawn": self._drawn,
            "best": None if self._best is None else [self._best[0], json_float(self._best[1])],
        }

    def _load_search_state(self, state: Mapping[str, Any]) -> None:
        self._drawn = int(state["drawn"])
        best = state["best"]
        self._best = None if best is None else ([int(v) for v in best[0]], float(best[1]))


@dataclass(frozen=True)
class RandomSearchSHConfig:
    """Successive halving over fresh random samples, with EvoPress's stages.

    Args:
        samples: fresh samples per round (EvoPress's lambda).
        stages: ``(survivors, tokens)`` per stage; the last keeps 1.
        budget_tokens: stop before a round that would forward more than this.
        max_retries: retries of a failed evaluation before it counts as +inf.

    Example:
        >>> RandomSearchSHConfig.preset("super-fast").budget_tokens
        9830400
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    samples: int = _SPARSITY.population
    stages: Stages = _SPARSITY.stages
    budget_tokens: int = DEFAULT_BUDGET
    max_retries: int = 2

    def __post_init__(self) -> None:
        owner = type(self).__name__
        int_at_least(owner, "samples", self.samples, 1)
        object.__setattr__(self, "stages", check_stages(owner, self.stages))
        check_entrants(owner, self.stages, "samples", self.samples)
        int_at_least(
            owner, "budget_tokens", self.budget_tokens, round_tokens(self.samples, self.stages, elite=False), MAX_TOKENS
        )
        int_at_least(owner, "max_retries", self.max_retries, 0)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Self:
        """EvoPress's named schedule, at the tokens its whole search would forward.

        Raises:
            ValueError: an unknown preset or field; ``depth`` without `budget_tokens`.
        """
        return _from_schedule(cls, name, overrides, lambda s: {"samples": s.population, "stages": s.stages})


class RandomSearchSH(StagedSearch):
    """Rounds of `samples` fresh uniform samples through the stage schedule.

    Round r evaluates stage s on minibatch ``(r, s)``; the incumbent (last round's winner) joins
    the last stage, exactly as EvoPress's parent does, so the two differ only in where the
    entrants come from. The history has EvoPress's fields.

    Built as ``cls(space, config, seed, constraint)`` (see `ConstrainedSearch`); the config holds
    the samples, stages and budget, the seed seeds the sampler.

    Example:
        >>> from spaces import LayerInfo, Space, SparsityScheme
        >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(8)]
        >>> config = RandomSearchSHConfig(samples=4, stages=((1, 100), (1, 400)), budget_tokens=10_000)
        >>> [c.fidelity.batch for c in RandomSearchSH(Space(layers, SparsityScheme(0.5)), config).ask(10)]
        [(0, 0), (0, 0), (0, 0), (0, 0)]
    """

    name: ClassVar[str] = "random-sh"
    config_class = RandomSearchSHConfig
    config: RandomSearchSHConfig

    def _setup(self) -> None:
        super()._setup()
        self._rounds = 0  # rounds started

    def _plan(self) -> RoundPlan | None:
        return RoundPlan(self._rounds, self.config.stages, self.config.samples, elite=self._incumbent is not None)

    def _entrants(self, plan: RoundPlan) -> list[LevelArray]:
        self._rounds = plan.generation + 1
        return [sample_within(self.space, self.rng, self.constraint) for _ in range(plan.size)]

    def _search_state(self) -> dict[str, Any]:
        return {**super()._search_state(), "rounds": self._rounds}

    def _load_search_state(self, state: Mapping[str, Any]) -> None:
        super()._load_search_state(state)
        self._rounds = int(state["rounds"])
