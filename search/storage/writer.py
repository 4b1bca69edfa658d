"""`TrialWriter`: the coordinator's trial events and checkpoints, stored on a background thread.

Only the coordinator writes, and never on its own thread: the writer queues events, and its
thread, after lingering briefly for more, folds each member's queued events into one
`TrialRows` (a member evaluated before its trial was stored becomes one created trial) and
stores a whole pass at once, in one transaction where the schema allows (`trial_store`). A pass
that fails on a lost connection is retried until the database is back, so a restarted
PostgreSQL loses nothing; the checkpoint of a pass is stored with its trials, never ahead of
them.

A pass the direct SQL store rejects for another reason is stored again through Optuna's public
API, which is used from then on. If that fails too, the writer stops: it stores nothing more (so
no checkpoint ever gets ahead of the trials it needs), keeps what it could not store, and raises
`StorageWriteError` to whoever writes, flushes or closes next; the search ends with that error
and a rerun resumes from the last stored checkpoint, replaying every evaluation stored before it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import tenacity
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sa_exc

from .study import CHECKPOINT, EVALUATIONS, PROGRESS, Evaluation, SearchStudy, StorageError, reason
from .trial_store import ApiTrialStore, SqlTrialStore, TrialRows, TrialStore

logger = logging.getLogger(__name__)

_RETRYABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)


class StorageWriteError(StorageError):
    """The storage rejected a write that was not a lost connection; the search must stop."""


def retryable(exc: BaseException) -> bool:
    """Whether `exc` is a lost connection, also where Optuna wrapped it (StorageInternalError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _RETRYABLE):
            return True
        seen = seen.__cause__
    return False


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = None if state.outcome is None else state.outcome.exception()
    assert exc is not None and state.next_action is not None
    logger.warning("storage write failed (%s); retrying in %.1f s", reason(exc), state.next_action.sleep)


@dataclass
class _Member:
    """What the writer knows of one member: its trial (once created) and what is still to write."""

    attrs: dict[str, Any]
    trial_id: int | None = None
    params: dict[str, float] = field(default_factory=dict)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    started: datetime = field(default_factory=datetime.now)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    unwritten_values: dict[int, float] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)  # user attributes changed since the last write
    state: TrialState = TrialState.RUNNING
    state_written: bool = False
    final_values: list[float] | None = None  # one per objective, for COMPLETE

    def take(self, member: int) -> TrialRows:
        """What is still to store, as rows; afterwards the member holds nothing unwritten."""
        attrs = {**self.attrs, EVALUATIONS: self.evaluations}
        new = self.trial_id is None
        state = None if self.state_written or (not new and self.state == TrialState.RUNNING) else self.state
        rows = TrialRows(
            member,
            self.trial_id,
            self.started,
            state=state,
            values=self.final_values if state == TrialState.COMPLETE else None,
            attrs={key: attrs[key] for key in (attrs if new else sorted(self.dirty))},
            intermediate=dict(self.unwritten_values),
            params=dict(self.params) if new else {},
            distributions=self.distributions,
        )
        self.dirty.clear()
        self.unwritten_values.clear()
        self.state_written = self.state != TrialState.RUNNING
        return rows


class TrialWriter:
    """Applies trial and checkpoint events on a background thread; never blocks its callers.

    Args:
        study: the study to write to.
        retry_s: the first back-off after a lost connection (doubling up to 30 s).
        linger_s: how long a pass waits after its first event for more, so that short
            evaluations share transactions (`flush` and `close` cut it short).
        direct: store passes with `SqlTrialStore` where the schema is one it knows; False
            always uses Optuna's public API.
        guard: called before every pass; raising `StorageError` (the study's lease was lost)
            stops the writer as a rejected write does.
    """

    def __init__(
        self,
        study: SearchStudy,
        retry_s: float = 0.5,
        linger_s: float = 0.05,
        direct: bool = True,
        guard: Callable[[], None] | None = None,
    ) -> None:
        self.study = study
        self.linger_s = linger_s
        self.guard = guard
        # A lost connection is retried until the database is back; a lost lease never is.
        self._retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda exc: not isinstance(exc, StorageError) and retryable(exc)),
            wait=tenacity.wait_exponential(multiplier=retry_s, max=30.0),
            before_sleep=_log_retry,
            reraise=True,
        )
        self.fallback = ApiTrialStore(study.storage)
        self.store: TrialStore = (direct and SqlTrialStore.for_storage(study.storage)) or self.fallback
        self._lock = threading.Condition()
        self._events: deque[tuple[str, Any]] = deque()
        self._members: dict[int, _Member] = {}
        self._finished: set[int] = set()
        self._study_attrs: dict[str, Any] = {}
        self._busy = False
        self._closed = False
        self._flushing = 0  # callers waiting in flush: no lingering then
        self._loose: list[TrialRows] = []  # rows of no member: stale trials to fail, added trials
        self.error: StorageWriteError | None = None  # set when a pass could not be stored
        self.writes = 0  # transactions committed
        self._thread = threading.Thread(target=self._run, name="pressroom-trial-writer", daemon=True)
        self._thread.start()

    # --- events (called by the coordinator) ------------------------------------------------------

    def _push(self, kind: str, payload: Any) -> None:
        with self._lock:
            if self.error is not None:
                raise self.error
            if self._closed:
                raise RuntimeError("TrialWriter is closed")
            self._events.append((kind, payload))
            if len(self._events) == 1:  # the thread may be waiting for a first event
                self._lock.notify_all()

    def begin(
        self,
        member: int,
        attrs: Mapping[str, Any],
        params: Mapping[str, float] | None = None,
        distributions: Mapping[str, BaseDistribution] | None = None,
    ) -> None:
        """A member's first evaluation was dispatched: its trial should exist, RUNNING, with
        these user attributes and Optuna parameters (each with its distribution). Parameters
        are set when the trial is created, as Optuna's own trials do, and never changed."""
        params = dict(params or {})
        distributions = dict(distributions or {})
        missing = sorted(set(params) - set(distributions))
        if missing:
            raise ValueError(f"parameters {missing} have no distribution; give one per parameter")
        self._push("begin", (member, dict(attrs), params, distributions))

    def adopt(self, member: int) -> None:
        """A member whose trial was finished before a restart: its later events change nothing."""
        self._push("adopt", member)

    def record(self, member: int, evaluation: Evaluation, attrs: Mapping[str, Any]) -> None:
        """An evaluation of the member finished: an intermediate value at step = tokens."""
        self._push("record", (member, evaluation, dict(attrs)))

    def finish(self, member: int, state: TrialState, value: float | Sequence[float] | None = None) -> None:
        """The member's fate: COMPLETE with its final value (one per objective in a
        multi-objective study: the fitness first), PRUNED or FAIL."""
        values = None if value is None else [float(value)] if isinstance(value, int | float) else list(value)
        self._push("finish", (member, state, values))

    def fail_stale(self, trials: Iterable[FrozenTrial], reason: str) -> None:
        """Mark trials that an earlier coordinator left RUNNING as FAIL, saying why."""
        self._push("stale", ([(t._trial_id, t.datetime_start or datetime.now()) for t in trials], reason))

    def add_trial(self, values: Sequence[float], attrs: Mapping[str, Any]) -> None:
        """A COMPLETE trial of no member (a measurement made after the search)."""
        self._push("trial", ([float(v) for v in values], dict(attrs)))

    def checkpoint(self, state: Mapping[str, Any], progress: Mapping[str, Any]) -> None:
        """The algorithm's state, and a summary for `pressroom status`; written after every
        trial event queued before them."""
        self._push("checkpoint", (json.dumps(state), dict(progress)))

    def study_attr(self, key: str, value: Any) -> None:
        """A study user attribute, written after every trial event queued before it."""
        self._push("study_attr", (key, value))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout.

        Raises:
            StorageWriteError: a pass could not be stored (nothing after it was).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
            self._lock.notify_all()
            try:
                while (self._events or self._busy) and self.error is None:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._lock.wait(remaining)
            finally:
                self._flushing -= 1
            if self.error is not None:
                raise self.error
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread; returns False if some events could not be written in time.

        Raises:
            StorageWriteError: a pass could not be stored (nothing after it was).
        """
        done = False
        try:
            done = self.flush(timeout)
        finally:
            with self._lock:
                self._closed = True
                self._lock.notify_all()
            self._thread.join(None if done else 1.0)
        return done

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def backlog(self) -> int:
        with self._lock:
            return len(self._events)

    # --- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._events and not self._closed and self.error is None:
                    self._lock.wait()
                if self.error is not None or (not self._events and self._closed):
                    return
                deadline = time.monotonic() + self.linger_s
                while not (self._closed or self._flushing) and (left := deadline - time.monotonic()) > 0:
                    self._lock.wait(left)
                batch = list(self._events)
                self._events.clear()
                self._busy = True
            self._absorb(batch)
            self._write_pass()
            with self._lock:
                self._busy = False
                self._lock.notify_all()

    def _absorb(self, batch: Iterable[tuple[str, Any]]) -> None:
        """Fold events into member states and the study attributes to write."""
        for kind, payload in batch:
            if kind == "checkpoint":
                self._study_attrs[CHECKPOINT], self._study_attrs[PROGRESS] = payload
                continue
            if kind == "study_attr":
                self._study_attrs[payload[0]] = payload[1]
                continue
            if kind == "adopt":
                self._finished.add(payload)
                continue
            if kind == "stale":
                trials, why = payload
                rows = [
                    TrialRows(-1, i, start, state=TrialState.FAIL, attrs={"fail_reason": why}) for i, start in trials
                ]
                self._loose.extend(rows)
                continue
            if kind == "trial":
                values, attrs = payload
                self._loose.append(TrialRows(-1, None, datetime.now(), TrialState.COMPLETE, values, attrs))
                continue
            member = payload[0]
            if member in self._finished:
                continue  # a finished trial is never reopened
            entry = self._members.setdefault(member, _Member({}))
            if kind == "begin":
                _, attrs, params, distributions = payload
                entry.attrs.update(attrs)
                entry.dirty.update(attrs)
                entry.params.update(params)
                entry.distributions.update(distributions)
            elif kind == "record":
                _, evaluation, attrs = payload
                entry.attrs.update(attrs)
                entry.evaluations.append(evaluation.to_attr())
                entry.dirty.update(attrs)
                entry.dirty.add(EVALUATIONS)
                if evaluation.fitness is not None:
                    entry.unwritten_values[evaluation.tokens] = evaluation.fitness
            elif kind == "finish":
                _, state, values = payload
                entry.state, entry.final_values = state, values

    def _write_pass(self) -> None:
        """Store what the members and study attributes hold, retrying while the database is away.

        On a rejected write (after the fallback to Optuna's API) or a lost lease, the rows stay
        unwritten, `error` is set, and the thread stops.
        """
        mine = [row for member, entry in self._members.items() if not (row := entry.take(member)).empty]
        rows = [*self._loose, *mine]
        while rows or self._study_attrs:
            try:
                self._retrying(self._store, rows)
                break
            except StorageError as exc:  # the lease is lost: another coordinator owns the study now
                self._stop(exc)
                return
            except Exception as exc:
                if self.store is self.fallback:
                    self._stop(exc)
                    return
                logger.warning("direct SQL write failed (%s); writing through Optuna's API from now on", reason(exc))
                self.store = self.fallback
        self._loose.clear()
        for row in mine:
            if row.trial_id is not None:
                self._members[row.member].trial_id = row.trial_id
        # finished members need nothing more; forget them so a long search stays small
        for member in [m for m, e in self._members.items() if e.state_written]:
            del self._members[member]
            self._finished.add(member)

    def _store(self, rows: list[TrialRows]) -> None:
        """One attempt at storing a pass (after checking the lease)."""
        if self.guard is not None:
            self.guard()
        self.writes += self.store.write(self.study.id, rows, self._study_attrs)

    def _stop(self, exc: Exception) -> None:
        """Keep what could not be stored, write nothing more, and make writers see the error."""
        logger.debug("the rejected write", exc_info=exc)
        cause: BaseException = exc
        while cause.__cause__ is not None:  # what the database said, not Optuna's wrapper
            cause = cause.__cause__
        why = (
            str(exc)
            if isinstance(exc, StorageError)
            else f"a trial write was rejected ({type(cause).__name__}: {reason(cause)})"
        )
        error = StorageWriteError(
            f"{why}; nothing after it was stored, rerun to resume from the last stored checkpoint"
        )
        with self._lock:
            self.error = error
            self._lock.notify_all()
