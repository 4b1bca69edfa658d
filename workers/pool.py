"""`WorkerPool`: keyed tasks fed to Ray actors through `ray.wait`, with routing and recovery.

The pool does not know what its actors do. It calls one remote method with each task's payload,
tracks idle actors and in-flight futures, and turns every way a task can end into an `Outcome`:
a value, an application error (retried, then reported), a dead actor (kept out of rotation,
optionally replaced; its task re-queued) or a timeout (the actor is killed and replaced; the
task re-queued). Failures are reported as outcomes; `collect` raises only when no worker is
left to run anything.

Routing: an actor that is free takes the queued task whose `route` is closest, by the pool's
`distance`, to the route of the last task it was given (for evaluators: the level array it
holds, so it rewrites the fewest layers); when several actors are free, the closest pair goes
first, among the actors with the fewest tasks in flight (an idle actor before a busy one's
second slot). A task without a route has no preference and counts as a perfect match anywhere (so
routed work never starves it); an actor without a last route takes what the others leave, in
queue order; without a `distance` the pool is plain first-in, first-out. Ties go to the earlier
task, then to the earlier actor. An actor that already failed a task gets it again only when no
other is free.

Example:
    >>> pool = WorkerPool(actors, distance=switch_distance, timeout_s=600)  # doctest: +SKIP
    >>> pool.submit(7, payload, route=levels)  # doctest: +SKIP
    >>> [outcome] = pool.collect(timeout=None)  # doctest: +SKIP
    >>> outcome.key, outcome.error  # doctest: +SKIP
    (7, None)
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError, RayTaskError

logger = logging.getLogger(__name__)

Distance = Callable[[Any, Any], float]

#: The longest error text an `Outcome` carries.
MAX_ERROR_CHARS = 400


@dataclass(frozen=True)
class Outcome:
    """How one task ended.

    Attributes:
        key: the key it was submitted under.
        value: what the remote method returned (None when it failed).
        error: why it failed after its last attempt, or None.
        worker: the pool's name for the actor of the last attempt ("w0", "w1", ...; replacements
            get new names).
        attempts: how many times it was started (1 when the first attempt succeeded).
        seconds: wall time of the last attempt as the pool saw it, from the moment the actor
            could start it to the moment its result was seen.
    """

    key: Hashable
    value: Any
    error: str | None
    worker: str
    attempts: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(eq=False)
class _Task:
    key: Hashable
    payload: Any
    route: Any
    seq: int  # submission order; a re-queued task keeps it, so it is not sent to the back
    attempts: int = 0
    failed_on: set[str] = field(default_factory=set)


@dataclass(eq=False)
class _Flight:
    ref: ray.ObjectRef[Any]
    task: _Task | None  # None once cancelled: the actor still runs it, its result is ignored
    worker: _Worker
    started: float | None = None  # when the actor could begin it (None: behind another task)


@dataclass(eq=False)
class _Worker:
    name: str
    handle: ActorHandle[Any]
    order: int
    ready: bool = False  # the constructor has finished: only then does the task clock run
    alive: bool = True
    flights: deque[_Flight] = field(default_factory=deque)
    last_route: Any = None
    completed: int = 0
    error: str | None = None
    info: Any = None
    info_ref: ray.ObjectRef[Any] | None = None


class WorkerPool:
    """Feeds keyed tasks to a set of Ray actors and reports how each ended.

    Args:
        actors: the actor handles to start with.
        method: the remote method called with each task's payload.
        actor_factory: makes a fresh actor to replace one that died or timed out; None keeps the
            pool shrinking instead.
        timeout_s: the longest a task may run (from the moment its actor can start it; an
            actor's construction does not count); past it the actor is killed and replaced and
            the task re-queued. None: no limit.
        max_attempts: how often a task is started before its failure is reported.
        distance: distance between two routes, for routing (see the module docstring).
        max_in_flight_per_actor: tasks sent to one actor at a time; more than one hides the
            round trip but makes routing decide earlier.
        max_replacements: how many actors the factory may make over the pool's life; None: no
            limit (each replacement follows a failed attempt, so it is bounded by the work).
        info_method: the remote method `workers_info` calls, or None.

    Raises:
        ValueError: no actors and no factory, or a bad limit.
    """

    def __init__(
        self,
        actors: Sequence[ActorHandle[Any]] = (),
        *,
        method: str = "run",
        actor_factory: Callable[[], ActorHandle[Any]] | None = None,
        timeout_s: float | None = None,
        max_attempts: int = 3,
        distance: Distance | None = None,
        max_in_flight_per_actor: int = 1,
        max_replacements: int | None = None,
        info_method: str | None = "info",
    ) -> None:
        if not actors and actor_factory is None:
            raise ValueError("WorkerPool needs at least one actor or an actor_factory")
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive or None, got {timeout_s}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_in_flight_per_actor < 1:
            raise ValueError(f"max_in_flight_per_actor must be at least 1, got {max_in_flight_per_actor}")
        if max_replacements is not None and max_replacements < 0:
            raise ValueError(f"max_replacements must not be negative, got {max_replacements}")
        self.method = method
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.distance = distance
        self.max_in_flight_per_actor = max_in_flight_per_actor
        self.max_replacements = max_replacements
        self.info_method = info_method
        self._factory = actor_factory
        self._workers: list[_Worker] = []
        self._names = itertools.count()
        self._seq = itertools.count()
        self._replaced = 0
        self._last_error = "no error recorded"
        self._queue: dict[Hashable, _Task] = {}
        self._flights: dict[ray.ObjectRef[Any], _Flight] = {}
        self._running: dict[Hashable, _Flight] = {}
        self._probes: dict[ray.ObjectRef[Any], _Worker] = {}
        self._done: list[Outcome] = []
        for handle in actors or [self._make_actor()]:
            self._add(handle)

    # --- the public surface -------------------------------------------------------------------

    def submit(self, key: Hashable, payload: Any, route: Any = None) -> None:
        """Queue a task.

        Args:
            key: names the task in its `Outcome`; unique among the tasks not yet collected.
            payload: the remote method's argument.
            route: what routing compares (for evaluators: the level array); None: no preference.

        Raises:
            ValueError: `key` is already queued or in flight.
        """
        if key in self._queue or key in self._running:
            raise ValueError(f"task {key!r} is already {'queued' if key in self._queue else 'in flight'}")
        self._queue[key] = _Task(key, payload, route, next(self._seq))

    def collect(self, timeout: float | None = None) -> list[Outcome]:
        """Dispatch queued tasks, wait for completions, and return the tasks that ended.

        Args:
            timeout: the longest to wait for at least one outcome, in seconds; 0 only polls;
                None waits until one arrives (or returns at once when nothing is pending).

        Returns:
            The tasks that ended since the last call, in the order they ended; possibly empty.

        Raises:
            RuntimeError: no worker is alive and the factory cannot make one.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._dispatch()
            if self._done:
                break
            if not self.live_workers:
                raise RuntimeError(f"all {len(self._workers)} workers died: {self._last_error}")
            if not self._queue and not self._running:  # cancelled tasks still running are not waited for
                break
            now = time.monotonic()
            remaining = None if deadline is None else max(0.0, deadline - now)
            self._wait(_soonest(remaining, self._until_next_deadline(now)))
            self._expire(time.monotonic())
            if deadline is not None and time.monotonic() >= deadline:
                break
        # Hand free actors the queue's next tasks before returning, so they work while the
        # caller records these outcomes.
        self._dispatch()
        done, self._done = self._done, []
        return done

    def cancel(self, key: Hashable) -> bool:
        """Drop a queued or in-flight task; its result, if it comes, is logged and ignored.

        A running task keeps its actor busy until it ends (Ray cannot interrupt a method of a
        synchronous actor), so the actor is not handed other work before then.

        Args:
            key: the task's key.

        Returns:
            Whether a task of that key was queued, in flight or waiting to be collected.
        """
        if self._queue.pop(key, None) is not None:
            return True
        flight = self._running.pop(key, None)
        if flight is not None:
            # No `ray.cancel`: it cannot stop a running method of a synchronous actor, and on
            # Ray 2.60 cancelling an actor task can leave the actor waiting for a sequence
            # number that never comes, so that it fails every later call after 30 s.
            flight.task = None
            return True
        before = len(self._done)
        self._done = [outcome for outcome in self._done if outcome.key != key]
        return len(self._done) < before

    def shutdown(self) -> None:
        """Kill every actor and forget all tasks. The pool is unusable afterwards."""
        for worker in self._workers:
            if worker.alive:
                worker.alive = False
                worker.error = "shut down"
                _kill(worker.handle)
        self._last_error = "the pool was shut down"
        self._queue.clear()
        self._flights.clear()
        self._running.clear()
        self._probes.clear()
        self._done.clear()

    @property
    def queued(self) -> int:
        """Tasks waiting for an actor."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Tasks sent to an actor and not ended (cancelled ones excluded)."""
        return len(self._running)

    @property
    def idle(self) -> int:
        """Live actors with nothing in flight."""
        return sum(1 for worker in self._workers if worker.alive and not worker.flights)

    @property
    def live_workers(self) -> int:
        """Actors in rotation."""
        return sum(1 for worker in self._workers if worker.alive)

    def workers_info(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """What the pool knows about each actor it has had, dead ones included.

        The actor's own description (`info_method`) is fetched once and kept; a busy actor
        answers after its current task, so its ``info`` may be None until a later call.

        Args:
            timeout: the longest to wait for actors' descriptions, in seconds.

        Returns:
            One dict per actor: ``name``, ``alive``, ``ready``, ``in_flight``, ``completed``,
            ``error`` (why it left the rotation) and ``info`` (the actor's description or None).
        """
        if self.info_method is not None:
            for worker in self._workers:
                if worker.alive and worker.info is None and worker.info_ref is None:
                    try:
                        worker.info_ref = getattr(worker.handle, self.info_method).remote()
                    except AttributeError:
                        worker.info = {"error": f"the actor has no method {self.info_method!r}"}
            pending = {w.info_ref: w for w in self._workers if w.alive and w.info_ref is not None}
            if pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
                for ref in ready:
                    worker = pending[ref]
                    worker.info_ref = None
                    try:
                        worker.info = ray.get(ref)
                    except Exception as exc:  # a dead or failing actor still gets a row
                        worker.info = {"error": _describe(exc)}
        return [
            {
                "name": worker.name,
                "alive": worker.alive,
                "ready": worker.ready,
                "in_flight": sum(1 for flight in worker.flights if flight.task is not None),
                "completed": worker.completed,
                "error": worker.error,
                "info": worker.info,
            }
            for worker in self._workers
        ]

    # --- actors -------------------------------------------------------------------------------

    def _make_actor(self) -> ActorHandle[Any]:
        assert self._factory is not None
        return self._factory()

    def _add(self, handle: ActorHandle[Any]) -> _Worker:
        worker = _Worker(f"w{next(self._names)}", handle, order=len(self._workers))
        self._workers.append(worker)
        # Ray's own readiness probe (every actor class has it): it resolves once the constructor
        # has run, which for an evaluator may take minutes (model load, database build).
        self._probes[handle.__ray_ready__.remote()] = worker
        return worker

    def _replace(self) -> None:
        if self._factory is None:
            return
        if self.max_replacements is not None and self._replaced >= self.max_replacements:
            logger.warning("not replacing the worker: %d replacements already made", self._replaced)
            return
        try:
            handle = self._make_actor()
        except Exception as exc:
            self._last_error = f"the actor factory failed: {_describe(exc)}"
            logger.exception("the actor factory failed")
            return
        self._replaced += 1
        worker = self._add(handle)
        logger.info("started %s to replace a lost worker (%d live)", worker.name, self.live_workers)

    def _retire(self, worker: _Worker, reason: str, *, kill: bool) -> None:
        """Take `worker` out of rotation, settle its in-flight tasks, maybe replace it."""
        worker.alive = False
        worker.error = reason
        self._last_error = f"{worker.name}: {reason}"
        if kill:
            _kill(worker.handle)
        for ref in [ref for ref, w in self._probes.items() if w is worker]:
            del self._probes[ref]
        flights = list(worker.flights)
        worker.flights.clear()
        for position, flight in enumerate(flights):
            self._flights.pop(flight.ref, None)
            task = flight.task
            if task is None:
                continue
            del self._running[task.key]
            if position == 0:
                # The head was running (or its actor never came up): that counts as an attempt.
                task.failed_on.add(worker.name)
                self._fail(task, reason, flight)
            else:
                task.attempts -= 1  # it never started
                self._queue[task.key] = task
        logger.warning("%s left the rotation: %s (%d live)", worker.name, reason, self.live_workers)
        self._replace()

    # --- dispatching --------------------------------------------------------------------------

    def _rank(self, worker: _Worker, task: _Task) -> tuple[int, int, float, int, int]:
        """Sort key of giving `task` to `worker`: lower is better."""
        # Retrying on a worker that already failed the task is the last resort.
        tried = int(worker.name in task.failed_on)
        if self.distance is None or task.route is None:  # plain queue order; no route: no preference
            return (tried, 0, 0.0, task.seq, worker.order)
        if worker.last_route is None:  # a fresh actor switches everything anyway: it takes leftovers
            return (tried, 1, 0.0, task.seq, worker.order)
        return (tried, 0, float(self.distance(worker.last_route, task.route)), task.seq, worker.order)

    def _dispatch(self) -> None:
        slots = {
            worker: self.max_in_flight_per_actor - len(worker.flights)
            for worker in self._workers
            if worker.alive and len(worker.flights) < self.max_in_flight_per_actor
        }
        # A matrix of ranks, recomputed only for the worker that just took a task (its last
        # route changed): distances are the expensive part.
        ranks = {worker: self._ranks(worker, self._queue.values()) for worker in slots}
        while slots and self._queue:
            # After the retry rule, an actor with fewer tasks goes first: a second task queued
            # behind a running one while another actor idles leaves that one idle at a stage's end.
            *_, worker, key = min(
                (
                    (rank[0], len(worker.flights), rank, worker, key)
                    for worker in slots
                    for key, rank in ranks[worker].items()
                ),
                key=lambda item: item[:3],  # ranks are unique: they end in (task seq, worker order)
            )
            task = self._queue.pop(key)
            self._send(worker, task)
            for other in slots:
                ranks[other].pop(key, None)
            slots[worker] -= 1
            if slots[worker] == 0:
                del slots[worker]
            elif task.route is not None:
                ranks[worker] = self._ranks(worker, self._queue.values())

    def _ranks(self, worker: _Worker, tasks: Iterable[_Task]) -> dict[Hashable, tuple[int, int, float, int, int]]:
        return {task.key: self._rank(worker, task) for task in tasks}

    def _send(self, worker: _Worker, task: _Task) -> None:
        task.attempts += 1
        try:
            ref = getattr(worker.handle, self.method).remote(task.payload)
        except Exception as exc:  # no such method, or a payload Ray cannot serialise: no retry helps
            reason = f"could not send the task: {_describe(exc)}"
            logger.error("task %r: %s", task.key, reason)
            self._done.append(Outcome(task.key, None, reason, worker.name, task.attempts, 0.0))
            return
        flight = _Flight(ref, task, worker)
        if worker.ready and not worker.flights:
            flight.started = time.monotonic()
        worker.flights.append(flight)
        if task.route is not None:
            worker.last_route = task.route
        self._flights[ref] = flight
        self._running[task.key] = flight
        logger.debug("sent task %r to %s (attempt %d)", task.key, worker.name, task.attempts)

    # --- completions --------------------------------------------------------------------------

    def _wait(self, timeout: float | None) -> None:
        refs = [*self._flights, *self._probes]
        ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
        if ready:  # gather whatever else has finished too, without waiting
            first = set(ready)
            rest = [ref for ref in refs if ref not in first]
            if rest:
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                ready += more
        for ref in ready:
            if ref in self._probes:
                self._on_ready(ref)
            elif ref in self._flights:
                self._on_result(self._flights.pop(ref))
            else:  # its worker was retired earlier in this loop, and its task settled then
                logger.debug("ignoring a late completion from a retired worker")

    def _on_ready(self, ref: ray.ObjectRef[Any]) -> None:
        worker = self._probes.pop(ref)
        try:
            ray.get(ref)
        except Exception as exc:  # RayActorError: the constructor raised or the process died
            self._retire(worker, f"died while starting: {_describe(exc)}", kill=True)
            return
        worker.ready = True
        if worker.flights:
            worker.flights[0].started = time.monotonic()
        logger.debug("%s is ready", worker.name)

    def _on_result(self, flight: _Flight) -> None:
        worker = flight.worker
        now = time.monotonic()
        error: str | None = None
        try:
            value = ray.get(flight.ref)
        except RayActorError as exc:  # the flight is still in worker.flights: settled with the rest
            self._retire(worker, f"died: {_describe(exc)}", kill=True)
            return
        except Exception as exc:  # the remote method raised, or Ray lost its result
            value, error = None, _describe(exc)
        self._next_starts(worker, flight, now)
        task = flight.task
        if task is None:
            logger.info("ignoring the %s of a cancelled task from %s", "error" if error else "result", worker.name)
            return
        del self._running[task.key]
        if error is not None:
            task.failed_on.add(worker.name)
            self._fail(task, error, flight)
            return
        worker.completed += 1
        self._done.append(Outcome(task.key, value, None, worker.name, task.attempts, _since(flight, now)))

    def _next_starts(self, worker: _Worker, flight: _Flight, now: float) -> None:
        worker.flights.remove(flight)
        # A synchronous actor runs its tasks in order: the next one starts as this one ends.
        if worker.flights and worker.ready and worker.flights[0].started is None:
            worker.flights[0].started = now

    def _fail(self, task: _Task, reason: str, flight: _Flight) -> None:
        if task.attempts >= self.max_attempts:
            logger.error("task %r failed after %d attempts: %s", task.key, task.attempts, reason)
            seconds = _since(flight, time.monotonic())
            self._done.append(Outcome(task.key, None, reason, flight.worker.name, task.attempts, seconds))
        else:
            logger.warning(
                "task %r failed on %s (attempt %d): %s; retrying", task.key, flight.worker.name, task.attempts, reason
            )
            self._queue[task.key] = task

    # --- timeouts -----------------------------------------------------------------------------

    def _until_next_deadline(self, now: float) -> float | None:
        if self.timeout_s is None:
            return None
        starts = [w.flights[0].started for w in self._workers if w.alive and w.flights]
        known = [start for start in starts if start is not None]
        return max(0.0, min(known) + self.timeout_s - now) if known else None

    def _expire(self, now: float) -> None:
        if self.timeout_s is None:
            return
        for worker in list(self._workers):
            if not (worker.alive and worker.flights):
                continue
            started = worker.flights[0].started
            if started is not None and now - started > self.timeout_s:
                self._retire(worker, f"timed out: a task ran over {self.timeout_s:g}s", kill=True)


def _soonest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def _since(flight: _Flight, now: float) -> float:
    return 0.0 if flight.started is None else now - flight.started


def _describe(exc: BaseException) -> str:
    """One line naming the error: the remote exception's own type and message when Ray wraps it.

    Ray's messages run to many lines of advice; the last line says what happened, and a cap keeps
    the line fit for a log or a trial attribute. The pool logs the whole message at DEBUG level.
    """
    logger.debug("full error: %s", exc)
    cause = exc.cause if isinstance(exc, RayTaskError) and exc.cause is not None else exc
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _kill(handle: ActorHandle[Any]) -> None:
    try:
        ray.kill(handle, no_restart=True)
    except Exception:  # already gone: nothing to release
        logger.debug("ray.kill failed", exc_info=True)
