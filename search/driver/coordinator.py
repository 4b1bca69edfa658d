"""The coordinator: ask -> dispatch -> collect -> record -> tell, until the algorithm finishes.

It owns candidate bookkeeping, the trial records and the checkpoints; the algorithm decides,
the pool evaluates, the writer stores. A checkpoint is written at every barrier (when nothing
is in flight after a tell), so a restarted search restores the algorithm at its last barrier
and replays the evaluations recorded since, instead of computing them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from optuna.trial import TrialState

from spaces import Space
from workers.runner import task_payload

from ..algorithms.base import Algorithm, Candidate, Result
from ..results.summary import ProfileSummary
from ..storage.study import BEST, Evaluation, SearchStudy
from ..storage.writer import TrialWriter

logger = logging.getLogger(__name__)


class Outcome(Protocol):
    """What a pool returns for one task (see `workers.pool.Outcome`)."""

    key: Any
    value: Any
    error: str | None
    worker: str
    attempts: int


class Pool(Protocol):
    """The part of `workers.WorkerPool` the coordinator uses."""

    def submit(self, key: Any, payload: Any, route: Any = None) -> None: ...

    def collect(self, timeout: float | None) -> Sequence[Outcome]: ...

    def cancel(self, key: Any) -> None: ...

    @property
    def live_workers(self) -> int: ...


class Listener(Protocol):
    """Observes a search: the live view, MLflow, the dashboard's figures."""

    def on_result(self, candidate: Candidate, result: Result, algorithm: Algorithm) -> None: ...

    def on_barrier(self, algorithm: Algorithm) -> None: ...

    def on_finish(self, algorithm: Algorithm) -> None: ...


@dataclass
class Counters:
    """What the coordinator has done so far (for the live view and the report)."""

    started: float = field(default_factory=time.monotonic)
    evaluations: int = 0
    replayed: int = 0
    failures: int = 0
    tokens: int = 0
    eval_seconds: float = 0.0

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.evaluations / elapsed if elapsed > 0 else 0.0


class Coordinator:
    """Runs one algorithm to the end on a pool, recording every evaluation.

    Args:
        algorithm: a fresh algorithm, or one restored from the study's checkpoint.
        space: the algorithm's space (profiles are sent to workers as level arrays).
        pool: evaluates payloads on workers.
        study: the study (read at start for replays).
        writer: writes trial events and checkpoints in the background.
        listeners: notified of results, barriers and the end.
        ask_ahead: candidates to keep queued per live worker, so routing has a choice.
        objectives: in a multi-objective study, the values after the fitness that a member's
            COMPLETE trial records (e.g. its estimated latency); None for one objective.
        began: `time.perf_counter()` when the search began, for the start-up line the first
            dispatch logs (how long from the start to the first evaluation); None: when `run` began.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        space: Space,
        pool: Pool,
        study: SearchStudy,
        writer: TrialWriter,
        *,
        listeners: Sequence[Listener] = (),
        ask_ahead: int = 2,
        objectives: Callable[[Candidate], Sequence[float]] | None = None,
        began: float | None = None,
    ) -> None:
        self.algorithm = algorithm
        self.objectives = objectives
        self.space = space
        self.summary = ProfileSummary(space)  # each trial's profile as a few dashboard parameters
        self.pool = pool
        self.study = study
        self.writer = writer
        self.listeners = list(listeners)
        self.ask_ahead = ask_ahead
        self.counters = Counters()
        self._in_flight: dict[int, Candidate] = {}
        self._open_members: set[int] = set()
        self._replay: dict[int, Evaluation] = {}
        self._began = began
        self._dispatched = False

    # --- resume ----------------------------------------------------------------------------------

    def restore(self) -> bool:
        """Continue from the study's checkpoint, if any; returns whether there was one.

        RUNNING trials of a coordinator that died are marked FAIL (through the writer, so only by
        the study's lease holder, and with its retries); the evaluations recorded after the
        checkpoint are kept for replay, so none is computed twice.
        """
        stale = self.study.trials((TrialState.RUNNING,))
        if stale:
            self.writer.fail_stale(stale, "the coordinator stopped before the trial finished")
            self.writer.flush()
            logger.warning("marked %d trials left RUNNING by a previous coordinator as FAIL", len(stale))
        state = self.study.load_checkpoint()
        if state is None:
            return False
        self.algorithm.load_state_dict(state)
        # Any recorded evaluation may be asked again: those after the checkpoint, and those
        # created (but not yet told) before it. Ids told before the checkpoint never come back.
        self._replay = {i: e for i, e in self.study.evaluations().items() if e.fitness is not None}
        for record in self._replay.values():
            if record.trial_state in (TrialState.COMPLETE, TrialState.PRUNED):
                self.writer.adopt(record.member)
        logger.info(
            "resumed study %s at %d evaluations asked; %d evaluations are recorded for replay",
            self.study.name, state["next_id"], len(self._replay),
        )  # fmt: skip
        return True

    # --- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        """Drive the algorithm until it finishes. On KeyboardInterrupt, in-flight trials are
        marked FAIL and every queued write is finished before the interrupt propagates."""
        if self._began is None:
            self._began = time.perf_counter()
        try:
            while not self.algorithm.finished:
                self._step()
        except KeyboardInterrupt:
            logger.warning("interrupted: marking %d in-flight trials FAIL", len(self._open_members))
            for member in self._open_members:
                self.writer.finish(member, TrialState.FAIL)
            raise
        for member in self._open_members:  # members whose evaluations failed for good
            self.writer.finish(member, TrialState.FAIL)
        self._open_members.clear()
        self.writer.checkpoint(self.algorithm.state_dict(), self.progress())
        best = self.algorithm.best
        if best is not None:
            levels = [int(v) for v in self.space.to_array(best[0])]
            self.writer.study_attr(BEST, {"levels": levels, "fitness": best[1], "algorithm": self.algorithm.name})
        for listener in self.listeners:
            listener.on_finish(self.algorithm)

    def progress(self) -> dict[str, Any]:
        """A summary for `pressroom status`: fraction done, generation, best, evaluations."""
        best = self.algorithm.best
        history = self.algorithm.history
        return {
            "fraction": 1.0 if self.algorithm.finished else self.algorithm.progress,
            "generation": history[-1].get("generation") if history else 0,
            "best": None if best is None else best[1],
            "evaluations": self.counters.evaluations + self.counters.replayed,
            "updated": time.time(),
        }

    def _step(self) -> None:
        room = max(0, self.ask_ahead * max(self.pool.live_workers, 1) - len(self._in_flight))
        asked = self.algorithm.ask(room) if room else []
        replayed = []
        for candidate in asked:
            self._in_flight[candidate.id] = candidate
            record = self._replay.pop(candidate.id, None)
            if record is not None and record.member != candidate.member:
                logger.warning("recorded evaluation %d belongs to another member: evaluating again", candidate.id)
                record = None
            if record is not None:
                replayed.append(self._replayed(candidate, record))
            else:
                self._dispatch(candidate)
        if replayed:
            self._tell(replayed)
            return
        if not self._in_flight:
            if self.algorithm.finished:
                return
            raise RuntimeError(f"{self.algorithm.name} asked for nothing while nothing is in flight")
        results = [self._result(outcome) for outcome in self.pool.collect(timeout=1.0)]
        if results:
            self._tell(results)

    def _dispatch(self, candidate: Candidate) -> None:
        levels = None if candidate.profile is None else self.space.to_array(candidate.profile)
        if candidate.job == "evaluate" and candidate.member not in self._open_members:
            self._begin(candidate, levels)
        job = task_payload(candidate.job, levels, candidate.fidelity, candidate.params)
        self.pool.submit(candidate.id, job, route=levels)
        if not self._dispatched:  # the whole start, the initial population included
            self._dispatched = True
            logger.info(
                "start: dispatched the first evaluation %.1f s after the search began (%.1f CPU-s in this process)",
                time.perf_counter() - (self._began or 0.0),
                time.process_time(),
            )

    def _begin(self, candidate: Candidate, levels: Any) -> None:
        """Open the member's trial: who it is, its levels, and their summary as parameters."""
        self._open_members.add(candidate.member)
        attrs = {
            "member": candidate.member,
            "generation": candidate.generation,
            "algorithm": self.algorithm.name,
            "levels": None if levels is None else [int(v) for v in levels],
        }
        params = None if levels is None else self.summary.params(levels)
        self.writer.begin(candidate.member, attrs, params, self.summary.distributions)

    def _result(self, outcome: Outcome) -> Result:
        candidate = self._in_flight[outcome.key]
        value = outcome.value or {}
        worker = str(value.get("worker", outcome.worker))
        if outcome.error is not None:
            self.counters.failures += 1
            logger.warning("candidate %d failed on %s: %s", candidate.id, worker, outcome.error)
            result = Result(candidate.id, None, error=outcome.error)
        else:
            result = Result(
                candidate.id,
                value.get("fitness"),
                tokens=int(value.get("tokens", 0)),
                seconds=float(value.get("seconds", 0.0)),
                data=value.get("data") or {},
            )
            self.counters.evaluations += 1
            self.counters.tokens += result.tokens
            self.counters.eval_seconds += result.seconds
        if candidate.job == "evaluate":
            cpu = float(value.get("cpu_seconds", 0.0))  # the worker process's CPU time on the task
            evaluation = Evaluation(
                candidate.id, candidate.member, candidate.stage, result.fitness, result.tokens, result.seconds,
                worker, TrialState.RUNNING, cpu,
            )  # fmt: skip
            attrs = {"stage": candidate.stage, "worker": worker, "seconds": round(result.seconds, 4),
                     "cpu_seconds": round(cpu, 4), "tokens": result.tokens}  # fmt: skip
            if result.error:
                attrs["last_error"] = result.error[:500]
            if outcome.attempts > 1:
                attrs["attempts"] = outcome.attempts
            self.writer.record(candidate.member, evaluation, attrs)
        return result

    def _replayed(self, candidate: Candidate, record: Evaluation) -> Result:
        """A result recorded before a restart. Its trial is finished (and stays as it was), or it
        was failed by `restore`, and then the member gets a new trial holding the record."""
        self.counters.replayed += 1
        if record.trial_state == TrialState.FAIL and candidate.job == "evaluate":
            if candidate.member not in self._open_members:
                self._begin(candidate, None if candidate.profile is None else self.space.to_array(candidate.profile))
            self.writer.record(candidate.member, record, {"stage": candidate.stage, "worker": record.worker})
        return Result(candidate.id, record.fitness, tokens=record.tokens, seconds=record.seconds)

    def _tell(self, results: list[Result]) -> None:
        told = [self._in_flight.pop(result.id) for result in results]
        for candidate, result in zip(told, results, strict=True):
            if candidate.job == "evaluate" and candidate.final and not result.failed:
                assert result.fitness is not None
                extra = [] if self.objectives is None else list(self.objectives(candidate))
                self.writer.finish(candidate.member, TrialState.COMPLETE, [result.fitness, *extra])
                self._open_members.discard(candidate.member)
        self.algorithm.tell(results)
        for member in self.algorithm.pop_pruned():
            self.writer.finish(member, TrialState.PRUNED)
            self._open_members.discard(member)
        for candidate, result in zip(told, results, strict=True):
            for listener in self.listeners:
                listener.on_result(candidate, result, self.algorithm)
        if not self._in_flight:
            self.writer.checkpoint(self.algorithm.state_dict(), self.progress())
            for listener in self.listeners:
                listener.on_barrier(self.algorithm)
