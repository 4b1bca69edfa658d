"""The ask/tell protocol every search algorithm implements.

Algorithms are pure: numpy and `spaces` only. The caller (the coordinator, or a test loop) asks
for candidates, has them evaluated anywhere, and tells the results back in any order.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from spaces import Fidelity, Job, JobParams, NoParams, Profile, Space, job_params, parse_job

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One piece of work the algorithm wants done.

    Attributes:
        id: unique within a run; algorithms number candidates with a counter kept in their
            state, so a restored algorithm asks the same ids the original would have.
        profile: the profile to evaluate (None for statistics jobs).
        fidelity: how many tokens, on which minibatch.
        member: the identity of a profile across the stages of one generation: the storage
            records one trial per member, with one intermediate value per stage.
        generation: the generation (or round) the candidate belongs to.
        stage: the index of the selection stage inside the generation.
        final: True when this evaluation's value is the member's final value.
        job: the job to run: `Job.EVALUATE` measures the fitness of `profile`; the others
            compute model statistics a baseline needs and return them in `Result.data`.
        params: the job's typed parameters (a job name or a JSON dict is read with
            `spaces.job_params`).
    """

    id: int
    profile: Profile | None
    fidelity: Fidelity
    member: int
    generation: int = 0
    stage: int = 0
    final: bool = True
    job: Job = Job.EVALUATE
    params: JobParams = field(default_factory=NoParams)

    def __post_init__(self) -> None:
        object.__setattr__(self, "job", parse_job(self.job))
        object.__setattr__(self, "params", job_params(self.job, self.params))
        if self.job is Job.EVALUATE and self.profile is None:
            raise ValueError(f"Candidate#{self.id} asks for an evaluation but has no profile")


@dataclass(frozen=True)
class Result:
    """What came back for one candidate.

    Attributes:
        id: the candidate's id.
        fitness: the measured fitness (lower is better), or None when the evaluation failed.
        tokens: tokens actually forwarded.
        seconds: wall time of the evaluation on the worker.
        data: JSON-able output of a statistics job.
        error: why the evaluation failed, when it did.
    """

    id: int
    fitness: float | None
    tokens: int = 0
    seconds: float = 0.0
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.fitness is None or math.isnan(self.fitness)


class Algorithm(ABC):
    """A search algorithm as an ask/tell object.

    Contract:
        - `ask(n)` returns at most `n` new candidates; an empty list means "wait for results"
          (a generation or stage barrier), or that the algorithm is `finished`.
        - `tell(results)` accepts results in any order and in several calls. A result for an
          unknown id, or one already told, is logged and ignored. A failed result is retried
          (asked again under a new id) up to `max_retries` times, then counts as infinitely bad;
          it is never silently dropped.
        - `pop_pruned()` returns the members a selection stage dropped since the last call.
        - `best` is the algorithm's current answer; `history` has one JSON-able record per
          generation.
        - `state_dict()` is JSON-able; `load_state_dict` on a fresh object built with the same
          space and configuration continues exactly where the original was, including the
          random stream. Candidates asked but not told are asked again after a restore.
    """

    name: ClassVar[str]
    max_retries: ClassVar[int] = 2
    #: whether the seed changes what the algorithm does; False where every seed gives the same run
    #: (a comparison then runs it once for all its seeds)
    seeded: bool = True

    def __init__(self, space: Space, seed: int) -> None:
        self.space = space
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._next_id = 0
        self._next_member = 0
        self.tokens_asked = 0
        self.history: list[dict[str, Any]] = []
        self._pruned: list[int] = []

    # --- the protocol ------------------------------------------------------------------------

    @abstractmethod
    def ask(self, n: int) -> list[Candidate]:
        """Up to `n` candidates to run now; [] means wait (or finished)."""

    @abstractmethod
    def tell(self, results: Sequence[Result]) -> None:
        """Take results of earlier candidates, in any order."""

    @property
    @abstractmethod
    def finished(self) -> bool:
        """True when the algorithm will ask for nothing more."""

    @property
    @abstractmethod
    def best(self) -> tuple[Profile, float] | None:
        """The current answer and its fitness, or None before any result."""

    @property
    def start(self) -> tuple[Profile, float] | None:
        """The warm start the search began from, with its first search value once measured; None
        for a cold start (the driver compares it with `best` on held-out data)."""
        return None

    @property
    def progress(self) -> float | None:
        """The share of the work asked so far, in [0, 1], or None when unknown (for ETAs)."""
        return None

    def pop_pruned(self) -> list[int]:
        """Members dropped by a selection stage since the last call."""
        out, self._pruned = self._pruned, []
        return out

    # --- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The algorithm's whole state as JSON-able data."""
        return {
            "algorithm": self.name,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
            "next_id": self._next_id,
            "next_member": self._next_member,
            "tokens_asked": self.tokens_asked,
            "history": self.history,
            "pruned": self._pruned,
            **self._extra_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state_dict()` output.

        Raises:
            ValueError: the state belongs to another algorithm.
        """
        if state.get("algorithm") != self.name:
            raise ValueError(f"state is for algorithm {state.get('algorithm')!r}, not {self.name!r}")
        self.seed = int(state["seed"])
        self.rng.bit_generator.state = state["rng"]
        self._next_id = int(state["next_id"])
        self._next_member = int(state["next_member"])
        self.tokens_asked = int(state["tokens_asked"])
        self.history = list(state["history"])
        self._pruned = list(state["pruned"])
        self._load_extra_state(state)

    @abstractmethod
    def _extra_state(self) -> dict[str, Any]:
        """The subclass's own JSON-able state."""

    @abstractmethod
    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what `_extra_state` wrote."""

    # --- helpers for subclasses ----------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _new_member(self) -> int:
        self._next_member += 1
        return self._next_member - 1

    def _candidate(
        self,
        profile: Profile | None,
        fidelity: Fidelity,
        *,
        member: int | None = None,
        generation: int = 0,
        stage: int = 0,
        final: bool = True,
        job: Job = Job.EVALUATE,
        params: JobParams | None = None,
    ) -> Candidate:
        """A new candidate with a fresh id; counts its tokens as asked."""
        if job is Job.EVALUATE:
            self.tokens_asked += fidelity.tokens
        return Candidate(
            id=self._new_id(),
            profile=profile,
            fidelity=fidelity,
            member=self._new_member() if member is None else member,
            generation=generation,
            stage=stage,
            final=final,
            job=job,
            params=job_params(job, params),
        )


def candidate_to_dict(candidate: Candidate) -> dict[str, Any]:
    """JSON-able form of a candidate (profiles as level lists in unit order)."""
    return {
        "id": candidate.id,
        "levels": None if candidate.profile is None else [candidate.profile[n] for n in candidate.profile],
        "fidelity": candidate.fidelity.to_dict(),
        "member": candidate.member,
        "generation": candidate.generation,
        "stage": candidate.stage,
        "final": candidate.final,
        "job": candidate.job.value,
        "params": candidate.params.to_dict(),
    }


def candidate_from_dict(space: Space, data: Mapping[str, Any]) -> Candidate:
    levels = data["levels"]
    return Candidate(
        id=int(data["id"]),
        profile=None if levels is None else space.from_array(levels),
        fidelity=Fidelity.from_dict(data["fidelity"]),
        member=int(data["member"]),
        generation=int(data["generation"]),
        stage=int(data["stage"]),
        final=bool(data["final"]),
        job=parse_job(data["job"]),
        params=job_params(data["job"], data["params"]),
    )
