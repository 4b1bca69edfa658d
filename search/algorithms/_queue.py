"""The plumbing every algorithm shares: candidates waiting to be asked, in flight, retried.

`QueueAlgorithm` implements `ask`, `tell` and the queue's part of the state; a subclass only says
how to make more work (`_refill`) and what to do with a settled value (`_resolve`).
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from spaces import Space

from .base import Algorithm, Candidate, Result, candidate_from_dict, candidate_to_dict

logger = logging.getLogger(__name__)

#: The batch every single-shot evaluation uses (flat random search, baselines, the rounded
#: DASS profile, Optuna trials): one fixed batch, so their values compare with one another.
FIXED_BATCH = (0,)


def json_float(value: float) -> float | str:
    """Infinities as "inf"/"-inf": strict JSON has none, and a failed evaluation scores +inf."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def read_float(value: float | str | None) -> float | None:
    """Undo `json_float` (None stays None)."""
    return None if value is None else float(value)


def failed(candidate: Candidate, result: Result) -> bool:
    """Whether a result counts as a failure.

    An evaluation fails without a finite-or-infinite number (`Result.failed`); a statistics job
    carries its answer in `data`, so it fails only when the worker reports an `error`.
    """
    if candidate.job == "evaluate":
        return result.failed
    return result.error is not None


class QueueAlgorithm(Algorithm):
    """An `Algorithm` whose work goes through one queue.

    Candidates are created with `_enqueue(self._candidate(...))`; `ask` hands them out in
    creation order. An evaluation's tokens count as asked when it is created; a statistics
    job's, when its result reports what it forwarded. A failed result is asked again under a
    new id (same member, stage and fidelity) up to `max_retries` times; after that an evaluation settles at +inf and a
    statistics job raises, since no later step can do without its output. After
    `load_state_dict`, candidates that were asked but not told are asked again, under the
    same ids, before anything new.

    Args:
        space: the search space.
        seed: seeds the algorithm's own random stream.
        max_retries: how often one piece of work is retried after a failure.
    """

    def __init__(self, space: Space, seed: int, max_retries: int) -> None:
        super().__init__(space, seed)
        self._retry_limit = max_retries
        self._open: dict[int, Candidate] = {}  # created, not yet told (asked or not)
        self._unasked: list[int] = []
        self._attempt: dict[int, int] = {}  # id -> retries before it; absent means 0

    # --- what subclasses provide -------------------------------------------------------------

    @abstractmethod
    def _refill(self, wanted: int) -> None:
        """Enqueue more work if the algorithm has some; `wanted` is a hint, not a promise."""

    @abstractmethod
    def _resolve(self, candidate: Candidate, result: Result, fitness: float) -> None:
        """Take the settled value of a candidate (+inf for an evaluation that kept failing)."""

    @abstractmethod
    def _search_state(self) -> dict[str, Any]:
        """The subclass's JSON-able state."""

    @abstractmethod
    def _load_search_state(self, state: Mapping[str, Any]) -> None:
        """Restore what `_search_state` wrote."""

    # --- the protocol --------------------------------------------------------------------------

    def ask(self, n: int) -> list[Candidate]:
        if n <= 0:
            return []
        if len(self._unasked) < n:
            self._refill(n - len(self._unasked))
        ids, self._unasked = self._unasked[:n], self._unasked[n:]
        return [self._open[i] for i in ids]

    def tell(self, results: Sequence[Result]) -> None:
        for result in results:
            candidate = self._open.pop(result.id, None)
            if candidate is None:
                logger.warning("%s: result for candidate #%d ignored: it is not in flight", self.name, result.id)
                continue
            if result.id in self._unasked:  # told before it was asked again after a restore
                self._unasked.remove(result.id)
            attempt = self._attempt.pop(result.id, 0)
            if candidate.job != "evaluate":  # an evaluation's tokens were counted when asked
                self.tokens_asked += result.tokens  # what the statistics job reports it forwarded
            if not failed(candidate, result):
                fitness = math.inf if result.fitness is None else float(result.fitness)
                self._resolve(candidate, result, fitness)
            elif attempt < self._retry_limit:
                retry = self._enqueue(self._copy(candidate))
                self._attempt[retry.id] = attempt + 1
                logger.warning(
                    "%s: candidate #%d (member %d) failed (%s); retry %d/%d as #%d",
                    self.name,
                    candidate.id,
                    candidate.member,
                    result.error,
                    attempt + 1,
                    self._retry_limit,
                    retry.id,
                )
            elif candidate.job == "evaluate":
                logger.error(
                    "%s: candidate #%d (member %d) failed %d times (%s); counting it as +inf",
                    self.name,
                    candidate.id,
                    candidate.member,
                    attempt + 1,
                    result.error,
                )
                self._resolve(candidate, result, math.inf)
            else:
                raise RuntimeError(
                    f"{self.name}: the {candidate.job.value!r} job (candidate #{candidate.id}) failed "
                    f"{attempt + 1} times; last error: {result.error}"
                )

    # --- helpers -------------------------------------------------------------------------------

    def _enqueue(self, candidate: Candidate) -> Candidate:
        self._open[candidate.id] = candidate
        self._unasked.append(candidate.id)
        return candidate

    def _copy(self, candidate: Candidate) -> Candidate:
        """The same work under a new id."""
        return self._candidate(
            candidate.profile,
            candidate.fidelity,
            member=candidate.member,
            generation=candidate.generation,
            stage=candidate.stage,
            final=candidate.final,
            job=candidate.job,
            params=candidate.params,
        )

    # --- state ---------------------------------------------------------------------------------

    def _extra_state(self) -> dict[str, Any]:
        return {
            "open": [candidate_to_dict(c) for c in self._open.values()],
            "unasked": list(self._unasked),
            "attempt": sorted(self._attempt.items()),
            **self._search_state(),
        }

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        self._open = {}
        for data in state["open"]:
            candidate = candidate_from_dict(self.space, data)
            self._open[candidate.id] = candidate
        waiting = [int(i) for i in state["unasked"]]
        # Whatever was in flight when the state was saved is lost with the old process: ask it
        # again, oldest first, before the work that was still waiting.
        in_flight = sorted(set(self._open) - set(waiting))
        self._unasked = in_flight + waiting
        self._attempt = {int(i): int(a) for i, a in state["attempt"]}
        self._load_search_state(state)
