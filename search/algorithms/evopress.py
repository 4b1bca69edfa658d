"""EvoPress: (1 + lambda) evolution with level-switch mutation and multi-stage selection.

The parent starts at the uniform profile (or, where there is none, the best of a few random
feasible profiles), or at a warm start (`EvoPressConfig.start`): the uniform profile, OWL's or the
additive DP's (from one statistics job, as those baselines compute them), or a given profile.
Each generation makes `offspring` distinct children by a few level switches
(one unit up a level, another down a level, at equal cost), runs them through the stage
schedule, and lets the parent compete in the last stage only; the last stage's winner is the
next parent. EvoPress: arXiv:2410.14649; its results here: docs/benchmarks.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self

import numpy as np

from spaces import Fidelity, Job, OwlParams, Profile, Space

from ._queue import FIXED_BATCH, json_float, read_float
from ._stages import LevelArray, RoundPlan, StagedSearch, schedule
from ._start import check_start, start_levels, start_problem
from ._validate import (
    MAX_TOKENS,
    Stages,
    check_entrants,
    check_overrides,
    check_stages,
    int_at_least,
    non_negative_float,
    optional_int_at_least,
)
from .base import Candidate, Result
from .baselines import STATISTICS_TOKENS, OWLConfig, additive_dp_profile, owl_problem, owl_profile
from .constraint import allowed, sample_within

logger = logging.getLogger(__name__)

# Tries for one switch by rejection (a random unit pair in the chosen group) before falling
# back to listing the group's valid pairs; and tries to make one child that is not a duplicate (and
# meets the constraint, if any).
_SWITCH_TRIES = 64
_DUPLICATE_TRIES = 32


@dataclass(frozen=True)
class EvoPressConfig:
    """EvoPress's parameters; the defaults are the reference sparsity schedule.

    Args:
        generations: how many generations; None derives ``ceil(k(n-k)/1.5)`` from a drop space
            (k dropped of n units), as the reference does for depth.
        offspring: lambda, the children per generation.
        stages: ``(survivors, tokens)`` per selection stage; the last keeps 1.
        max_switches: each child gets ``min(U{1..m}, U{1..m})`` level switches.
        init_samples: random feasible profiles to pick the start from, when the space has no
            uniform profile (fractional bits, depth).
        init_tokens: tokens each of those is evaluated on (one shared minibatch).
        budget_tokens: stop before a generation that would forward more tokens than this.
        max_retries: retries of a failed evaluation before it counts as +inf.
        start: the first parent. ``auto``: the uniform profile, else the best of `init_samples`
            random ones; ``uniform``: the uniform profile (an error without one); ``owl`` or
            ``dp``: OWL's or the additive DP's profile, from one statistics job (the tokens the
            worker reports it forwarded count as asked); a mapping unit name -> level:
            that profile, which must meet the budget (and the constraint, if any). A profile file
            path is read by the driver (`search.driver.warm.start_file_read`) into such a mapping.
        skip_margin: None (the reference): the parent runs in the last stage only. A number m >= 0:
            the parent also runs in the first stage, and when its value there is lower than
            every child's by at least ``m * |its value|``, the generation keeps it and skips the
            later, larger stages (`search.algorithms._stages`); measured in docs/benchmarks.md.

    Example:
        >>> EvoPressConfig.preset("super-fast").stages
        ((1, 512), (1, 8192))
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    generations: int | None = 400
    offspring: int = 64
    stages: Stages = ((8, 2048), (2, 16384), (1, 65536))
    max_switches: int = 3
    init_samples: int = 32
    init_tokens: int = 2048
    budget_tokens: int | None = None
    max_retries: int = 2
    start: str | dict[str, int] = "auto"
    skip_margin: float | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        optional_int_at_least(owner, "generations", self.generations, 1)
        int_at_least(owner, "offspring", self.offspring, 1)
        object.__setattr__(self, "stages", check_stages(owner, self.stages))
        check_entrants(owner, self.stages, "offspring", self.offspring)
        int_at_least(owner, "max_switches", self.max_switches, 1)
        int_at_least(owner, "init_samples", self.init_samples, 1)
        int_at_least(owner, "init_tokens", self.init_tokens, 1, MAX_TOKENS)
        optional_int_at_least(owner, "budget_tokens", self.budget_tokens, 1, MAX_TOKENS)
        int_at_least(owner, "max_retries", self.max_retries, 0)
        object.__setattr__(self, "start", check_start(owner, self.start))
        if self.skip_margin is not None:
            object.__setattr__(self, "skip_margin", non_negative_float(owner, "skip_margin", self.skip_margin))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> Self:
        """A reference schedule by name, with any field overridden.

        Names: ``sparsity`` (400 generations, lambda 64, 8 @ 2,048 -> 2 @ 16,384 -> 1 @ 65,536),
        ``bits`` (150, 128, 16 @ 2,048 -> 4 @ 16,384 -> 1 @ 131,072), ``depth`` (k(n-k)/1.5,
        32, 2 @ 2,048 -> 1 @ 32,768), ``super-fast`` (400, 16, 1 @ 512 -> 1 @ 8,192) and
        ``cpu-small`` (30, 16, 4 @ 512 -> 1 @ 2,048; for small models on CPUs).

        Raises:
            ValueError: an unknown preset or field, or a bad value.
        """
        check_overrides(cls, overrides)
        chosen = schedule(cls.__name__, name)
        base = cls(generations=chosen.generations, offspring=chosen.population, stages=chosen.stages)
        return replace(base, **overrides)


class EvoPress(StagedSearch):
    """(1 + lambda) EvoPress over any `Space` (sparsity, bitwidth, drop).

    Generation g >= 1 evaluates its stage s on the minibatch ``(g, s)``; the initial population
    (only without a uniform profile) is generation 0, all on one minibatch. Every child keeps
    one member id across its stages; the parent gets a new member id each generation.
    `best` is the current parent with its last-stage value.

    With a `constraint`, every child and every initial profile meets it; when the uniform
    profile does not, the search starts from the best of `init_samples` random profiles that do.

    A warm start (`EvoPressConfig.start` other than ``auto``) is the first parent, and `start`
    is it with its first value in a generation (the last stage's; with a skip margin, the first
    stage's, where it runs first); an OWL or DP start that violates the constraint is
    logged and replaced by the best of `init_samples` random profiles that meet it.

    Args:
        space: the search space.
        config: the parameters (defaults: the reference sparsity schedule).
        seed: seeds mutation and initial sampling.
        constraint: a limit on an additive estimate (e.g. latency) every candidate must meet.

    Raises:
        ValueError: no two units can trade a level, `generations` is None on a space that
            is not a drop space, the constraint is (nearly) infeasible (`ConstraintError`), or
            the start does not apply (no uniform profile, OWL beyond sparsity, a given profile
            of another space or over the budget or constraint, an unread profile file).

    Example:
        >>> from spaces import LayerInfo, Space, SparsityScheme
        >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(8)]
        >>> algo = EvoPress(Space(layers, SparsityScheme(0.5)), EvoPressConfig.preset("cpu-small"), seed=0)
        >>> [c.stage for c in algo.ask(100)] == [0] * 16
        True
    """

    name: ClassVar[str] = "evopress"
    config_class = EvoPressConfig
    config: EvoPressConfig

    def _setup(self) -> None:
        super()._setup()
        space, constraint = self.space, self.constraint
        self.generations = self._generations(space, self.config.generations)
        # Units with a single level cannot move (Space groups them together, vacuously equal).
        movable = [tuple(u for u in group if len(space.levels[u]) > 1) for group in space.switch_groups]
        self._groups = [group for group in movable if len(group) >= 2]
        if not self._groups:
            raise ValueError(
                f"EvoPress needs two units that can trade a level; no switch group of this "
                f"{space.scheme.name} space has two units with more than one level "
                f"(movable units per group: {[len(g) for g in movable]})"
            )
        self._generation = 0  # the last generation started
        # the warm start's levels and first value (see `start`); the statistics job still to ask
        # ("ask"), asked ("asked"), or none (None)
        self._start: list[int] | None = None
        self._start_fitness: float | None = None
        self._start_job: str | None = None
        start: str | Mapping[str, int] = self.config.start
        if start in ("owl", "dp"):
            if start == "owl" and owl_problem(space) is not None:
                raise ValueError(f"EvoPress start 'owl' sets per-block sparsities; this space is {space.scheme.name!r}")
            self._start_job = "ask"
            return
        uniform = space.uniform()
        if start == "auto":
            self._incumbent = None if uniform is None else [int(v) for v in space.to_array(uniform)]
            if self._incumbent is not None and constraint is not None and not constraint.allows(self._incumbent):
                logger.info(
                    "%s: the uniform profile violates the %s constraint; starting from the best of %d random "
                    "profiles that meet it", self.name, constraint.name, self.config.init_samples,
                )  # fmt: skip
                self._incumbent = None
            c, budget = self.config, self.config.budget_tokens
            if self._incumbent is None and budget is not None and c.init_samples * c.init_tokens > budget:
                raise ValueError(
                    f"EvoPress starts here from the best of init_samples={c.init_samples} random profiles on "
                    f"init_tokens={c.init_tokens} tokens each, {c.init_samples * c.init_tokens:,} tokens, more than "
                    f"budget_tokens={budget:,}; lower init_samples or init_tokens"
                )
            return
        if start == "uniform":
            if uniform is None:
                raise ValueError(
                    f"EvoPress start 'uniform': the {space.scheme.name} space at target {space.scheme.target} has "
                    "no uniform profile; start from 'auto', 'dp' or a given profile"
                )
            start = uniform
        if isinstance(start, str):
            raise ValueError(
                f"EvoPress start {start!r} is a profile file, which the driver reads "
                "(search.driver.warm.start_file_read); give the algorithm a mapping unit name -> level"
            )
        self._take_start(start, strict=True)

    def _take_start(self, profile: Mapping[str, int], *, strict: bool) -> None:
        """Make `profile` the first parent; `strict`: refuse one over the budget or constraint,
        else (a derived start) log that and fall back to the random initial profiles."""
        levels = start_levels(self.space, profile)
        problem = start_problem(self.space, self.constraint, levels)
        if problem is not None and strict:
            raise ValueError(f"EvoPress start profile does not meet this search's constraints: {problem}")
        if problem is not None:
            logger.warning(
                "%s: the %s start does not meet the constraints (%s); starting from the best of %d random profiles",
                self.name, self.config.start, problem, self.config.init_samples,
            )  # fmt: skip
            return
        self._start = self._incumbent = [int(v) for v in levels]

    @property
    def finished(self) -> bool:
        return self._start_job is None and super().finished

    @property
    def start(self) -> tuple[Profile, float] | None:
        if self._start is None or self._start_fitness is None:
            return None
        return self.space.from_array(self._start), self._start_fitness

    @property
    def progress(self) -> float | None:
        by_generation = min(1.0, self._generation / self.generations)
        by_budget = super().progress
        return by_generation if by_budget is None else max(by_generation, by_budget)

    @staticmethod
    def _generations(space: Space, generations: int | None) -> int:
        if generations is not None:
            return generations
        if space.scheme.name != "drop":
            raise ValueError(
                f"EvoPressConfig.generations = None derives k(n-k)/1.5 for drop spaces only; this space "
                f"is {space.scheme.name!r}: give a number of generations"
            )
        k, n = space.budget, len(space)
        return max(1, math.ceil(k * (n - k) / 1.5))

    # --- the warm start's statistics job -------------------------------------------------------

    def _refill(self, wanted: int) -> None:
        if self._start_job is None:
            super()._refill(wanted)
        elif self._start_job == "ask":  # the one job comes first; its answer gives the first parent
            fidelity = Fidelity(STATISTICS_TOKENS, batch=FIXED_BATCH)
            if self.config.start == "owl":
                job = self._candidate(None, fidelity, job=Job.OWL_SCORES, params=OwlParams(OWLConfig().M))
            else:
                job = self._candidate(None, fidelity, job=Job.LAYER_ERRORS)
            self._enqueue(job)
            self._start_job = "asked"

    def _resolve(self, candidate: Candidate, result: Result, fitness: float) -> None:
        if candidate.job is not Job.EVALUATE:
            derive = additive_dp_profile if self.config.start == "dp" else owl_profile
            args = () if self.config.start == "dp" else (OWLConfig().lam,)
            profile, facts = derive(self.space, result.data, *args)
            self._start_job = None
            self._take_start(profile, strict=False)
            self.history.append(
                {"phase": "start", "start": self.config.start, **facts, "tokens_asked": self.tokens_asked}
            )
            return
        scored = candidate.final or self.config.skip_margin is not None  # the parent runs in stage 0 too
        if scored and candidate.generation >= 1 and self._start_fitness is None and self._start is not None:
            assert candidate.profile is not None, "an evaluation has a profile"
            if list(candidate.profile.values_for(self.space.names)) == self._start:  # its first value
                self._start_fitness = fitness
        super()._resolve(candidate, result, fitness)

    # --- rounds --------------------------------------------------------------------------------

    def _plan(self) -> RoundPlan | None:
        if self._incumbent is None:
            return RoundPlan(0, ((1, self.config.init_tokens),), self.config.init_samples, elite=False)
        if self._generation >= self.generations:
            return None
        config = self.config
        return RoundPlan(self._generation + 1, config.stages, config.offspring, elite=True, margin=config.skip_margin)

    def _entrants(self, plan: RoundPlan) -> list[LevelArray]:
        self._generation = plan.generation
        if plan.generation == 0:
            return [sample_within(self.space, self.rng, self.constraint) for _ in range(plan.size)]
        assert self._incumbent is not None, "generations >= 1 have a parent"
        return self._offspring(np.asarray(self._incumbent, dtype=np.int64), plan.size)

    # --- mutation ------------------------------------------------------------------------------

    def _offspring(self, parent: LevelArray, count: int) -> list[LevelArray]:
        """`count` children that differ from the parent and from each other and meet the
        constraint (or fewer: a child that violates it is rejected like a duplicate)."""
        seen = {parent.tobytes()}
        children = []
        for _ in range(count):
            for _ in range(_DUPLICATE_TRIES):
                child = self._mutate(parent)
                key = child.tobytes()
                if key not in seen and allowed(self.constraint, child):
                    seen.add(key)
                    children.append(child)
                    break
        if len(children) < count:
            logger.info(
                "%s: generation %d has %d distinct children of %d", self.name, self._generation, len(children), count
            )
        return children

    def _mutate(self, parent: LevelArray) -> LevelArray:
        top = self.config.max_switches + 1
        switches = min(int(self.rng.integers(1, top)), int(self.rng.integers(1, top)))
        child = parent
        for _ in range(switches):
            child = self._switch(child)
        return child

    def _switch(self, levels: LevelArray) -> LevelArray:
        """One level switch: a group with probability proportional to its size, then a pair in it.

        The group is drawn once; only the pair is redrawn when `space.can_switch` rejects it, so
        a group whose units sit near their level bounds is not chosen less often for it. A group
        with no valid pair at all is set aside and the group drawn again, by size, from the rest.
        Returns the levels unchanged when no group has a switch.
        """
        groups = self._groups
        while groups:
            cdf = np.cumsum([len(group) for group in groups], dtype=np.float64)
            group = groups[int(np.searchsorted(cdf / cdf[-1], self.rng.random(), side="right"))]
            pair = self._pair(levels, group)
            if pair is not None:
                return self.space.switch(levels, *pair)
            groups = [other for other in groups if other is not group]
        return levels

    def _pair(self, levels: LevelArray, group: tuple[int, ...]) -> tuple[int, int] | None:
        """A uniformly drawn valid (up, down) pair of `group`, or None when it has none.

        Rejection keeps this O(1) on hundreds of units: draw `up` and `down` uniformly, accept
        when the switch keeps the cost. When that keeps failing (few valid pairs left), list the
        group's valid pairs and draw one.
        """
        for _ in range(_SWITCH_TRIES):
            up, down = (group[int(k)] for k in self.rng.integers(0, len(group), size=2))
            if self.space.can_switch(levels, up, down):
                return up, down
        pairs = [(u, d) for u in group for d in group if self.space.can_switch(levels, u, d)]
        return pairs[int(self.rng.integers(len(pairs)))] if pairs else None

    # --- state ---------------------------------------------------------------------------------

    def _search_state(self) -> dict[str, Any]:
        fitness = None if self._start_fitness is None else json_float(self._start_fitness)
        start = {"levels": self._start, "fitness": fitness, "job": self._start_job}
        return {**super()._search_state(), "generation": self._generation, "start": start}

    def _load_search_state(self, state: Mapping[str, Any]) -> None:
        super()._load_search_state(state)
        self._generation = int(state["generation"])
        # checkpoints from before warm starts have no "start": a cold start
        start = state.get("start") or {"levels": None, "fitness": None, "job": None}
        self._start = None if start["levels"] is None else [int(v) for v in start["levels"]]
        self._start_fitness = read_float(start["fitness"])
        self._start_job = start["job"]
