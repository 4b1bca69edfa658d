"""Multi-stage selection, shared by EvoPress and successive-halving random search.

A round (EvoPress calls it a generation) takes a set of entrants through a schedule of stages
``((survivors_0, tokens_0), (survivors_1, tokens_1), ...)``: every entrant is evaluated at stage 0
on ``tokens_0`` tokens of a fresh minibatch ``(generation, 0)``, the best ``survivors_0`` go on to
stage 1 on a fresh minibatch ``(generation, 1)``, and so on. The incumbent (EvoPress's parent)
joins only the last stage, which keeps exactly one: the next incumbent.

With a skip margin (EvoPress's `skip_margin`), the incumbent also runs in stage 0, on the same
minibatch as the entrants; when it beats every entrant there by at least that margin, the round
ends at stage 0 and keeps it: the stage that already drops most entrants on that minibatch is
trusted to drop the rest too, and the later, larger stages are not forwarded.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spaces import Fidelity, Profile

from ._constrained import ConstrainedSearch
from ._queue import json_float, read_float
from ._validate import Stages, require
from .base import Candidate, Result

logger = logging.getLogger(__name__)

LevelArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Schedule:
    """A reference schedule: how many generations, entrants per generation, and the stages.

    Attributes:
        generations: None for depth, where the reference uses ``k(n-k)/1.5`` (see `EvoPress`).
    """

    generations: int | None
    population: int
    stages: Stages


#: The reference scripts' schedules, plus "cpu-small" (ours): 30 generations of 16 offspring,
#: the best 4 of them re-run on 2,048 tokens against the parent. About 0.55 M tokens in all,
#: which a small encoder on a laptop CPU forwards in minutes.
SCHEDULES: dict[str, Schedule] = {
    "sparsity": Schedule(400, 64, ((8, 2048), (2, 16384), (1, 65536))),
    "bits": Schedule(150, 128, ((16, 2048), (4, 16384), (1, 131072))),
    "depth": Schedule(None, 32, ((2, 2048), (1, 32768))),
    "super-fast": Schedule(400, 16, ((1, 512), (1, 8192))),
    "cpu-small": Schedule(30, 16, ((4, 512), (1, 2048))),
}


def schedule(owner: str, name: str) -> Schedule:
    """The named reference schedule.

    Raises:
        ValueError: an unknown name.
    """
    require(name in SCHEDULES, owner, "preset", name, f"one of {sorted(SCHEDULES)}")
    return SCHEDULES[name]


def stage_sizes(population: int, stages: Stages, elite: bool, early: bool = False) -> list[int]:
    """How many candidates each stage evaluates at most; `early`: the elite also runs in stage 0."""
    sizes = [population]
    for survivors, _ in stages[:-1]:
        sizes.append(min(survivors, sizes[-1]))
    sizes[-1] += int(elite)
    if len(sizes) > 1:
        sizes[0] += int(elite and early)
    return sizes


def round_tokens(population: int, stages: Stages, elite: bool, early: bool = False) -> int:
    """Tokens one round forwards at most (without retries)."""
    sizes = stage_sizes(population, stages, elite, early)
    return sum(size * tokens for size, (_, tokens) in zip(sizes, stages, strict=True))


def matched_budget(preset: Schedule) -> int:
    """Tokens EvoPress forwards over a whole schedule, to run other searches at the same budget.

    Raises:
        ValueError: the schedule's generations depend on the space (depth).
    """
    if preset.generations is None:
        raise ValueError("this schedule's generations depend on the space; give a token budget instead")
    return preset.generations * round_tokens(preset.population, preset.stages, elite=True)


@dataclass(frozen=True)
class RoundPlan:
    """What the next round will be: its number, stages, entrants, whether the incumbent joins,
    and the skip margin (None: the incumbent joins the last stage only)."""

    generation: int
    stages: Stages
    size: int
    elite: bool
    margin: float | None = None

    @property
    def tokens(self) -> int:
        return round_tokens(self.size, self.stages, self.elite, self.margin is not None)


class SelectionRound:
    """The selection state of one round: who is still in, at which stage, with which values.

    Args:
        generation: the round's number; stage s uses the minibatch ``(generation, s)``.
        stages: the round's schedule.
        entrants: member id -> levels, in the order they were made.
        elite: the incumbent's member id and levels, when it joins the last stage.
        margin: the skip margin: the incumbent also runs in stage 0, and the round ends there
            when it beats every entrant by at least ``margin * |its value|``; None: it does not.
    """

    def __init__(
        self,
        generation: int,
        stages: Stages,
        entrants: Mapping[int, list[int]],
        elite: tuple[int, list[int]] | None,
        margin: float | None = None,
    ) -> None:
        self.generation = generation
        self.stages = stages
        self.margin = margin
        self.alive: dict[int, list[int]] = dict(entrants)
        self.entrants = len(self.alive)
        self.elite = elite
        self.stage = 0
        self.scores: dict[int, float] = {}

    @property
    def last(self) -> bool:
        return self.stage == len(self.stages) - 1

    def members(self) -> list[tuple[int, list[int]]]:
        """Who this stage evaluates: the survivors, then the incumbent at the last stage (and at
        stage 0 with a skip margin)."""
        out = list(self.alive.items())
        if self.elite is not None and (self.last or (self.stage == 0 and self.margin is not None)):
            out.append(self.elite)
        return out

    def decided(self) -> bool:
        """Whether the incumbent beat every surviving entrant in stage 0 by the skip margin."""
        if self.margin is None or self.elite is None or self.stage != 0 or self.last:
            return False
        parent = self.scores[self.elite[0]]
        return all(self.scores[m] - parent >= self.margin * abs(parent) for m in self.alive)

    def fidelity(self) -> Fidelity:
        return Fidelity(self.stages[self.stage][1], batch=(self.generation, self.stage))

    @property
    def complete(self) -> bool:
        return all(member in self.scores for member, _ in self.members())

    def ranking(self) -> list[int]:
        """This stage's members, best first; ties keep the order of `members` (entrants first)."""
        order = [member for member, _ in self.members()]
        return sorted(order, key=lambda m: (self.scores[m], order.index(m)))

    def advance(self) -> list[int]:
        """Keep this stage's best and move to the next stage; returns the members dropped."""
        keep = set([m for m in self.ranking() if m in self.alive][: self.stages[self.stage][0]])
        dropped = [m for m in self.alive if m not in keep]
        self.alive = {m: levels for m, levels in self.alive.items() if m in keep}
        self.stage += 1
        self.scores = {}
        return dropped

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "stages": [list(s) for s in self.stages],
            "entrants": self.entrants,
            "alive": [[m, levels] for m, levels in self.alive.items()],
            "elite": None if self.elite is None else [self.elite[0], self.elite[1]],
            "margin": self.margin,
            "stage": self.stage,
            "scores": [[m, json_float(v)] for m, v in self.scores.items()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SelectionRound:
        elite = data["elite"]
        out = cls(
            int(data["generation"]),
            tuple((int(s), int(t)) for s, t in data["stages"]),
            {int(m): [int(v) for v in levels] for m, levels in data["alive"]},
            None if elite is None else (int(elite[0]), [int(v) for v in elite[1]]),
            data.get("margin"),  # checkpoints from before skip margins have none
        )
        out.entrants = int(data["entrants"])
        out.stage = int(data["stage"])
        out.scores = {int(m): float(v) for m, v in data["scores"]}
        return out


class StagedSearch(ConstrainedSearch):
    """Rounds of multi-stage selection with an incumbent that joins every last stage.

    Subclasses say what the next round is (`_plan`) and who enters it (`_entrants`, meeting
    `constraint` when there is one); this class runs the stages, keeps the incumbent, writes the
    history and stops before a round that would overrun `budget_tokens`.

    History records (one per round): ``generation``; ``parent_fitness``, the incumbent's
    re-drawn last-stage value (None when it did not take part); ``fitness``, the winner's
    last-stage value; ``best_fitness``, the lowest winner value so far (values of different
    minibatches, so it can only be a rough guide); ``replaced``, whether an entrant beat the
    incumbent; ``entrants``; ``tokens_asked``.
    """

    def _setup(self) -> None:
        self._budget_tokens: int | None = self.config.budget_tokens
        self._round: SelectionRound | None = None
        self._incumbent: list[int] | None = None
        self._incumbent_fitness: float | None = None
        self._best_fitness: float | None = None
        self._exhausted = False  # a round found no entrant and no incumbent to run

    @abstractmethod
    def _plan(self) -> RoundPlan | None:
        """The next round, ignoring the token budget, or None when there is none. No randomness."""

    @abstractmethod
    def _entrants(self, plan: RoundPlan) -> list[LevelArray]:
        """Up to `plan.size` distinct entrants (drawn from `self.rng`)."""

    def _next_plan(self) -> RoundPlan | None:
        plan = None if self._exhausted else self._plan()
        if plan is None:
            return None
        if self._budget_tokens is not None and self.tokens_asked + plan.tokens > self._budget_tokens:
            return None
        return plan

    # --- the protocol ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._round is None and not self._open and self._next_plan() is None

    @property
    def progress(self) -> float | None:
        if self._budget_tokens is None:
            return None
        return min(1.0, self.tokens_asked / self._budget_tokens)

    @property
    def best(self) -> tuple[Profile, float] | None:
        if self._incumbent is None or self._incumbent_fitness is None:
            return None
        return self.space.from_array(self._incumbent), self._incumbent_fitness

    def _refill(self, wanted: int) -> None:
        if self._round is not None or self._open:
            return  # a stage barrier: the next stage starts when this one is told
        plan = self._next_plan()
        if plan is None:
            return
        entrants = self._entrants(plan)
        if not entrants and not plan.elite:
            logger.warning("%s: round %d has nothing to evaluate; stopping", self.name, plan.generation)
            self._exhausted = True
            return
        members = {self._new_member(): levels.tolist() for levels in entrants}
        # The incumbent gets a new member id every round: one trial per evaluation series.
        elite = (self._new_member(), list(self._incumbent)) if plan.elite and self._incumbent is not None else None
        self._round = SelectionRound(plan.generation, plan.stages, members, elite, plan.margin)
        self._enqueue_stage(self._round)

    def _enqueue_stage(self, selection: SelectionRound) -> None:
        while not selection.members() and not selection.last:
            # No entrant came (every draw a duplicate, or over the constraint): the incumbent,
            # which joins only the last stage, is all there is to evaluate.
            selection.advance()
        fidelity = selection.fidelity()
        for member, levels in selection.members():
            self._enqueue(
                self._candidate(
                    self.space.from_array(levels),
                    fidelity,
                    member=member,
                    generation=selection.generation,
                    stage=selection.stage,
                    final=selection.last,
                )
            )

    def _resolve(self, candidate: Candidate, result: Result, fitness: float) -> None:
        selection = self._round
        assert selection is not None and candidate.generation == selection.generation, "a result outside its round"
        selection.scores[candidate.member] = fitness
        if not selection.complete:
            return
        if selection.decided():
            assert selection.elite is not None
            self._pruned.extend([*selection.alive, selection.elite[0]])
            rescored = selection.scores[selection.elite[0]]
            kept = rescored if self._incumbent_fitness is None else self._incumbent_fitness
            self._record(selection, kept, rescored, replaced=False, decided=True)
            return
        if not selection.last:
            self._pruned.extend(selection.advance())
            self._enqueue_stage(selection)
            return
        winner = selection.ranking()[0]
        self._incumbent = list(dict(selection.members())[winner])
        parent = None if selection.elite is None else selection.scores[selection.elite[0]]
        is_elite = selection.elite is not None and winner == selection.elite[0]
        self._record(selection, selection.scores[winner], parent, replaced=not is_elite, decided=False)

    def _record(
        self, selection: SelectionRound, fitness: float, parent: float | None, *, replaced: bool, decided: bool
    ) -> None:
        """End the round: the incumbent's value is `fitness`; write the history record and log it.
        `decided`: the round ended at stage 0 by the skip margin (`fitness` is then the kept
        incumbent's earlier last-stage value, or its stage-0 value when it has none yet)."""
        self._incumbent_fitness = fitness
        self._best_fitness = fitness if self._best_fitness is None else min(self._best_fitness, fitness)
        record = {
            "generation": selection.generation,
            "parent_fitness": None if parent is None else json_float(parent),
            "fitness": json_float(fitness),
            "best_fitness": json_float(self._best_fitness),
            "replaced": replaced,
            "entrants": selection.entrants,
            "tokens_asked": self.tokens_asked,
        }
        self.history.append({**record, "decided_at_stage_0": True} if decided else record)
        logger.info(
            "%s: generation %d: incumbent %.6g on this generation's data (parent re-scored %s)%s; "
            "lowest seen %.6g (any generation)",
            self.name, selection.generation, fitness, "-" if parent is None else f"{parent:.6g}",
            ", kept at stage 0 by the skip margin" if decided else "", self._best_fitness,
        )  # fmt: skip
        self._round = None

    # --- state ---------------------------------------------------------------------------------

    def _search_state(self) -> dict[str, Any]:
        return {
            "round": None if self._round is None else self._round.to_dict(),
            "incumbent": self._incumbent,
            "incumbent_fitness": None if self._incumbent_fitness is None else json_float(self._incumbent_fitness),
            "best_fitness": None if self._best_fitness is None else json_float(self._best_fitness),
            "exhausted": self._exhausted,
        }

    def _load_search_state(self, state: Mapping[str, Any]) -> None:
        self._round = None if state["round"] is None else SelectionRound.from_dict(state["round"])
        self._incumbent = None if state["incumbent"] is None else [int(v) for v in state["incumbent"]]
        self._incumbent_fitness = read_float(state["incumbent_fitness"])
        self._best_fitness = read_float(state["best_fitness"])
        self._exhausted = bool(state["exhausted"])
