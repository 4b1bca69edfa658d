"""What the `WorkerPool` tracks: its records of tasks, flights and actors, and how an error or a
lost actor reads in one line (how a task ended is `workers.outcome.Outcome`).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayTaskError

from .outcome import error_line

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Task:
    """A submitted task, queued or in flight, across its attempts."""

    key: Hashable
    payload: Any
    route: Any
    seq: int  # submission order; a re-queued task keeps it, so it is not sent to the back
    attempts: int = 0
    failed_on: set[str] = field(default_factory=set)


@dataclass(eq=False)
class Flight:
    """One attempt of a task: the call sent to an actor."""

    ref: ray.ObjectRef[Any]
    task: Task | None  # None once cancelled: the actor still runs it, its result is ignored
    worker: PoolWorker
    started: float | None = None  # when the actor could begin it (None: behind another task)


@dataclass(eq=False)
class PoolWorker:
    """An actor the pool has had, and what the pool knows of it."""

    name: str
    handle: ActorHandle[Any]
    order: int
    ready: bool = False  # the constructor has finished: only then does the task clock run
    alive: bool = True
    flights: deque[Flight] = field(default_factory=deque)
    last_route: Any = None
    completed: int = 0
    error: str | None = None
    info: Any = None
    info_ref: ray.ObjectRef[Any] | None = None

    @property
    def running_since(self) -> float | None:
        """When the task the actor runs now could start; None when it is out of rotation, has
        nothing in flight or its task has not started (the actor is still being built)."""
        return self.flights[0].started if self.alive and self.flights else None

    def land(self, flight: Flight, now: float) -> None:
        """`flight` has ended at `now`: a synchronous actor runs its tasks in order, so the next
        one starts as this one ends."""
        self.flights.remove(flight)
        if self.flights and self.ready and self.flights[0].started is None:
            self.flights[0].started = now

    def row(self) -> dict[str, Any]:
        """What `WorkerPool.workers_info` reports of this actor."""
        return {
            "name": self.name,
            "alive": self.alive,
            "ready": self.ready,
            "in_flight": sum(1 for flight in self.flights if flight.task is not None),
            "completed": self.completed,
            "error": self.error,
            "info": self.info,
        }


def fetch_info(workers: Sequence[PoolWorker], method: str, timeout: float) -> None:
    """Ask each live actor without a description for one (`method`), once, and keep the answers
    that come within `timeout` seconds; a failing actor's answer is its error."""
    for worker in workers:
        if worker.alive and worker.info is None and worker.info_ref is None:
            try:
                worker.info_ref = getattr(worker.handle, method).remote()
            except AttributeError:
                worker.info = {"error": f"the actor has no method {method!r}"}
    pending = {w.info_ref: w for w in workers if w.alive and w.info_ref is not None}
    if pending:
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in ready:
            worker = pending[ref]
            worker.info_ref = None
            try:
                worker.info = ray.get(ref)
            except Exception as exc:  # a dead or failing actor still gets a row
                worker.info = {"error": describe_error(exc)}


def soonest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def elapsed(flight: Flight, now: float) -> float:
    return 0.0 if flight.started is None else now - flight.started


def describe_error(exc: BaseException) -> str:
    """One line naming the error: the remote exception's own type and message when Ray wraps it.

    Ray's messages run to many lines of advice; the last line says what happened (`error_line`).
    The pool logs the whole message at DEBUG level.
    """
    logger.debug("full error: %s", exc)
    return error_line(exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc)


def kill_actor(handle: ActorHandle[Any]) -> None:
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # already gone: nothing to release
        logger.debug("ray.kill failed", exc_info=True)
