"""Optuna storage I/O for one search: trials, checkpoints and the evaluation log.

One study per search; one trial per *member* (a profile within a generation), with one
intermediate value per selection stage (step = tokens), PRUNED when a stage drops it, COMPLETE
with its last-stage fitness otherwise. The profile is one JSON user attribute: at 224 layers, a
trial with 224 Optuna parameters took 461 ms to create on PostgreSQL against 12 ms with one JSON
attribute (`benchmarks/storage.py`), and the dashboard cannot show 224 parameters usefully anyway.

Only the coordinator writes, and never on its own thread: `TrialWriter` queues events and a
background thread applies them, coalescing a member's queued events into as few storage calls as
possible (a member evaluated before its trial was written becomes one `create_new_trial`). A
write that fails on a lost connection is retried until the database is back, so a restarted
PostgreSQL loses nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial
from sqlalchemy import exc as sa_exc

from .secrets import redact_text, url_password

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the live view

CHECKPOINT = "pressroom.checkpoint"
PROGRESS = "pressroom.progress"
BEST = "pressroom.best"
FINGERPRINT = "pressroom.fingerprint"
SPEC = "pressroom.spec"
SPACE = "pressroom.space"
EVALUATIONS = "evaluations"
METRIC = "fitness"
_RETRYABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)


class StorageError(RuntimeError):
    """The storage cannot be used; the message says why and never holds a password."""


def connect(url: str) -> RDBStorage:
    """An Optuna RDB storage for `url`, with connections checked before use.

    Raises:
        StorageError: a malformed URL, an unknown driver, an unreachable server or refused
            credentials; the message names the redacted URL and the server's reason.
    """
    secret = url_password(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        return RDBStorage(url, engine_kwargs=kwargs)
    except (sa_exc.SQLAlchemyError, ValueError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StorageError(redact_text(f"cannot use storage {url}: {reason}", [secret or ""])) from None


def check_fingerprint(storage: RDBStorage, name: str, fingerprint: str) -> bool:
    """Whether study `name` exists; writes nothing.

    Raises:
        StorageError: it exists and belongs to another spec.
    """
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False
    found = storage.get_study_user_attrs(study_id).get(FINGERPRINT)
    if found != fingerprint:
        raise StorageError(
            f"study {name!r} belongs to a different search (spec fingerprint {found}, this spec "
            f"{fingerprint}); choose another --study name or restore the spec that made it"
        )
    return True


@dataclass
class Evaluation:
    """One evaluation as the storage recorded it (the coordinator replays these on resume)."""

    id: int
    member: int
    stage: int
    fitness: float | None
    tokens: int
    seconds: float
    worker: str
    trial_state: TrialState
    trial_id: int = -1

    def to_attr(self) -> dict[str, Any]:
        return {
            "id": self.id, "stage": self.stage, "fitness": self.fitness,
            "tokens": self.tokens, "seconds": round(self.seconds, 4), "worker": self.worker,
        }  # fmt: skip


class SearchStudy:
    """The study of one search: creation, the spec check, checkpoints, reading trials.

    Args:
        storage: from `connect`.
        name: the study name.
    """

    def __init__(self, storage: RDBStorage, name: str) -> None:
        self.storage = storage
        self.name = name
        self.study = optuna.load_study(study_name=name, storage=storage)
        self.id = self.study._study_id

    @classmethod
    def open(
        cls,
        storage: RDBStorage,
        name: str,
        *,
        fingerprint: str,
        attrs: Mapping[str, Any],
        metrics: Sequence[str] = (METRIC,),
    ) -> SearchStudy:
        """Create the study, or reopen it if it belongs to the same spec.

        Args:
            storage: from `connect`.
            name: the study name.
            fingerprint: the spec's fingerprint.
            attrs: study user attributes to write when the study is created.
            metrics: one name per objective, all minimised; the first is the fitness. Two give
                a multi-objective study (e.g. fitness and latency), whose COMPLETE trials hold
                one value per metric and whose Pareto front the dashboard draws.

        Raises:
            StorageError: the study exists and was made by a different spec.
        """
        if not check_fingerprint(storage, name, fingerprint):
            study_id = storage.create_new_study([StudyDirection.MINIMIZE] * len(metrics), name)
            for key, value in {**attrs, FINGERPRINT: fingerprint}.items():
                storage.set_study_user_attr(study_id, key, value)
            with warnings.catch_warnings():  # set_metric_names is marked experimental, and is what the dashboard reads
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.load_study(study_name=name, storage=storage).set_metric_names(list(metrics))
        return cls(storage, name)

    def user_attrs(self) -> dict[str, Any]:
        return dict(self.storage.get_study_user_attrs(self.id))

    def load_checkpoint(self) -> dict[str, Any] | None:
        text = self.user_attrs().get(CHECKPOINT)
        return None if text is None else dict(json.loads(text))

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return list(self.storage.get_all_trials(self.id, deepcopy=False, states=states))

    def evaluations(self) -> dict[int, Evaluation]:
        """Every recorded evaluation by candidate id (failed trials included)."""
        out: dict[int, Evaluation] = {}
        for trial in self.trials():
            member = int(trial.user_attrs.get("member", -1))
            for record in trial.user_attrs.get(EVALUATIONS, []):
                out[int(record["id"])] = Evaluation(
                    int(record["id"]), member, int(record["stage"]), record["fitness"], int(record["tokens"]),
                    float(record["seconds"]), str(record["worker"]), trial.state, trial._trial_id,
                )  # fmt: skip
        return out

    def fail_running(self, reason: str) -> list[int]:
        """Mark RUNNING trials (left by a coordinator that died) FAIL; returns their numbers."""
        failed = []
        for trial in self.trials((TrialState.RUNNING,)):
            self.storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
        return failed


@dataclass
class _Member:
    """What the writer knows of one member: its trial (once created) and what is still to write."""

    attrs: dict[str, Any]
    trial_id: int | None = None
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    values: dict[int, float] = field(default_factory=dict)
    unwritten_values: dict[int, float] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)  # user attributes changed since the last write
    state: TrialState = TrialState.RUNNING
    state_written: bool = False
    final_values: list[float] | None = None  # one per objective, for COMPLETE


class TrialWriter:
    """Applies trial and checkpoint events on a background thread; never blocks its callers.

    Args:
        study: the study to write to.
        retry_s: the first back-off after a lost connection (doubling up to 30 s).
    """

    def __init__(self, study: SearchStudy, retry_s: float = 0.5) -> None:
        self.study = study
        self.retry_s = retry_s
        self._lock = threading.Condition()
        self._events: deque[tuple[str, Any]] = deque()
        self._members: dict[int, _Member] = {}
        self._finished: set[int] = set()
        self._study_attrs: dict[str, Any] = {}
        self._busy = False
        self._closed = False
        self.errors: list[str] = []
        self.writes = 0
        self._thread = threading.Thread(target=self._run, name="pressroom-trial-writer", daemon=True)
        self._thread.start()

    # --- events (called by the coordinator) ------------------------------------------------------

    def _push(self, kind: str, payload: Any) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("TrialWriter is closed")
            self._events.append((kind, payload))
            self._lock.notify_all()

    def begin(self, member: int, attrs: Mapping[str, Any]) -> None:
        """A member's first evaluation was dispatched: its trial should exist, RUNNING."""
        self._push("begin", (member, dict(attrs)))

    def adopt(self, member: int, trial_id: int, state: TrialState) -> None:
        """A member whose trial already exists (from before a restart): write to it, not anew."""
        self._push("adopt", (member, trial_id, state))

    def record(self, member: int, evaluation: Evaluation, attrs: Mapping[str, Any]) -> None:
        """An evaluation of the member finished: an intermediate value at step = tokens."""
        self._push("record", (member, evaluation, dict(attrs)))

    def finish(self, member: int, state: TrialState, value: float | Sequence[float] | None = None) -> None:
        """The member's fate: COMPLETE with its final value (one per objective in a
        multi-objective study: the fitness first), PRUNED or FAIL."""
        values = None if value is None else [float(value)] if isinstance(value, int | float) else list(value)
        self._push("finish", (member, state, values))

    def checkpoint(self, state: Mapping[str, Any], progress: Mapping[str, Any]) -> None:
        """The algorithm's state, and a summary for `pressroom status`; written after every
        trial event queued before them."""
        self._push("checkpoint", (json.dumps(state), dict(progress)))

    def study_attr(self, key: str, value: Any) -> None:
        """A study user attribute, written after every trial event queued before it."""
        self._push("study_attr", (key, value))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._events or self._busy:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the thread; returns False if some events could not be written in time."""
        done = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(1.0 if not done else None)
        return done

    @property
    def backlog(self) -> int:
        with self._lock:
            return len(self._events)

    # --- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._events and not self._closed:
                    self._lock.wait()
                if not self._events and self._closed:
                    return
                batch = list(self._events)
                self._events.clear()
                self._busy = True
            checkpoint = self._absorb(batch)
            self._write_until_done(checkpoint)
            with self._lock:
                self._busy = False
                self._lock.notify_all()

    def _absorb(self, batch: Iterable[tuple[str, Any]]) -> tuple[str, dict[str, Any]] | None:
        """Fold events into member states; returns the last checkpoint of the batch."""
        checkpoint = None
        for kind, payload in batch:
            if kind == "checkpoint":
                checkpoint = payload
                continue
            if kind == "study_attr":
                self._study_attrs[payload[0]] = payload[1]
                continue
            if kind == "adopt":
                member, trial_id, state = payload
                if state == TrialState.RUNNING:
                    self._members[member] = _Member({}, trial_id)
                else:
                    self._finished.add(member)
                continue
            member = payload[0]
            if member in self._finished:
                continue  # a finished trial is never reopened
            entry = self._members.setdefault(member, _Member({}))
            if kind == "begin":
                entry.attrs.update(payload[1])
                entry.dirty.update(payload[1])
            elif kind == "record":
                _, evaluation, attrs = payload
                entry.attrs.update(attrs)
                entry.evaluations.append(evaluation.to_attr())
                entry.dirty.update(attrs)
                entry.dirty.add(EVALUATIONS)
                if evaluation.fitness is not None:
                    entry.values[evaluation.tokens] = evaluation.fitness
                    entry.unwritten_values[evaluation.tokens] = evaluation.fitness
            elif kind == "finish":
                _, state, values = payload
                entry.state, entry.final_values = state, values
        return checkpoint

    def _write_until_done(self, checkpoint: tuple[str, dict[str, Any]] | None) -> None:
        delay = self.retry_s
        while True:
            try:
                self._write(checkpoint)
                return
            except _RETRYABLE as exc:
                reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                logger.warning("storage write failed (%s); retrying in %.1f s", reason, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # a bug or a rejected value: keep going, but say so loudly
                logger.exception("storage write failed and was dropped")
                self.errors.append(repr(exc))
                return

    def _write(self, checkpoint: tuple[str, dict[str, Any]] | None) -> None:
        storage, study_id = self.study.storage, self.study.id
        for entry in self._members.values():
            attrs = {**entry.attrs, EVALUATIONS: entry.evaluations}
            if entry.trial_id is None:
                # one call creates the trial as it stands, whatever events came before
                final = entry.state
                template = create_trial(
                    state=final,
                    values=entry.final_values if final == TrialState.COMPLETE else None,
                    user_attrs=attrs,
                    intermediate_values=dict(entry.values),
                )
                entry.trial_id = storage.create_new_trial(study_id, template_trial=template)
                self.writes += 1
                entry.unwritten_values.clear()
                entry.dirty.clear()
                entry.state_written = final != TrialState.RUNNING
                continue
            for step, value in list(entry.unwritten_values.items()):
                storage.set_trial_intermediate_value(entry.trial_id, step, value)
                self.writes += 1
                del entry.unwritten_values[step]
            # only what changed: a profile's levels are written once, not with every evaluation
            for key in sorted(entry.dirty):
                storage.set_trial_user_attr(entry.trial_id, key, attrs[key])
                self.writes += 1
            entry.dirty.clear()
            if entry.state != TrialState.RUNNING and not entry.state_written:
                values = entry.final_values if entry.state == TrialState.COMPLETE else None
                storage.set_trial_state_values(entry.trial_id, entry.state, values)
                self.writes += 1
                entry.state_written = True
        if checkpoint is not None:
            storage.set_study_user_attr(study_id, CHECKPOINT, checkpoint[0])
            storage.set_study_user_attr(study_id, PROGRESS, checkpoint[1])
            self.writes += 2
        for key in list(self._study_attrs):
            storage.set_study_user_attr(study_id, key, self._study_attrs[key])
            del self._study_attrs[key]
            self.writes += 1
        # finished members need nothing more; forget them so a long search stays small
        for member in [m for m, e in self._members.items() if e.state_written and e.state != TrialState.RUNNING]:
            del self._members[member]
            self._finished.add(member)


def fitness_of(trial: FrozenTrial) -> float | None:
    """A trial's fitness: its first objective (a quality-vs-latency study has two values)."""
    return None if not trial.values else float(trial.values[0])


def describe_trials(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Counts of trials by state name."""
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts
