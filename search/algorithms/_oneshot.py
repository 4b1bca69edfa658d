"""Algorithms that ask for at most one statistics job, derive one profile, and evaluate it once.

The uniform, OWL and additive-error baselines and the DASS-style search all have this shape;
they differ in the job they ask for and in how its output becomes a profile.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

from spaces import Fidelity, Profile, Space

from ._queue import FIXED_BATCH, QueueAlgorithm, json_float, read_float
from .base import Candidate, Result


class OneShot(QueueAlgorithm):
    """Statistics job (optional) -> one profile -> one evaluation on `final_tokens`.

    The evaluation uses the fixed minibatch every single-shot evaluation uses, so baselines
    compare with one another and with flat random search. `best` is that evaluated profile.
    History: one record when the profile is chosen (``phase: "choose"`` plus whatever
    `_choose` adds) and one when its value comes back (``phase: "evaluate"``).

    Args:
        space: the search space.
        seed: seeds the algorithm's random stream.
        max_retries: retries of a failed job or evaluation.
        final_tokens: tokens of the one evaluation.
    """

    def __init__(self, space: Space, seed: int, *, max_retries: int, final_tokens: int) -> None:
        super().__init__(space, seed, max_retries)
        self._final_tokens = final_tokens
        # "start" (nothing asked) -> "statistics" (job asked) -> "evaluate" (profile asked) -> "done"
        self._phase = "start"
        self._profile: list[int] | None = None
        self._fitness: float | None = None

    @abstractmethod
    def _statistics(self) -> Candidate | None:
        """The statistics job to ask first (made with `self._candidate`), or None for none."""

    @abstractmethod
    def _choose(self, data: Mapping[str, Any] | None) -> tuple[Profile, dict[str, Any]]:
        """The profile to evaluate, from the job's output, and facts for the history."""

    @property
    def finished(self) -> bool:
        return self._phase == "done"

    @property
    def best(self) -> tuple[Profile, float] | None:
        if self._profile is None or self._fitness is None:
            return None
        return self.space.from_array(self._profile), self._fitness

    def _refill(self, wanted: int) -> None:
        if self._phase != "start":
            return
        job = self._statistics()
        if job is None:
            self._evaluate(None)
        else:
            self._enqueue(job)
            self._phase = "statistics"

    def _evaluate(self, data: Mapping[str, Any] | None) -> None:
        profile, facts = self._choose(data)
        self._profile = [int(v) for v in self.space.to_array(profile)]
        self.history.append({"phase": "choose", **facts, "tokens_asked": self.tokens_asked})
        self._enqueue(self._candidate(profile, Fidelity(self._final_tokens, batch=FIXED_BATCH)))
        self._phase = "evaluate"

    def _resolve(self, candidate: Candidate, result: Result, fitness: float) -> None:
        if candidate.job != "evaluate":
            self._evaluate(result.data)
            return
        self._fitness = fitness
        self._phase = "done"
        self.history.append(
            {
                "phase": "evaluate",
                "generation": candidate.generation,
                "fitness": json_float(fitness),
                "best_fitness": json_float(fitness),
                "tokens_asked": self.tokens_asked,
            }
        )

    def _search_state(self) -> dict[str, Any]:
        return {
            "phase": self._phase,
            "profile": self._profile,
            "fitness": None if self._fitness is None else json_float(self._fitness),
        }

    def _load_search_state(self, state: Mapping[str, Any]) -> None:
        self._phase = str(state["phase"])
        self._profile = None if state["profile"] is None else [int(v) for v in state["profile"]]
        self._fitness = read_float(state["fitness"])
