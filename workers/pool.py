"""`WorkerPool`: keyed tasks fed to Ray actors through `ray.wait`, with routing and recovery.

The pool does not know what its actors do. It calls one remote method with each task's payload,
tracks idle actors and in-flight futures, and turns every way a task can end into an `Outcome`:
a value, an application error (retried, then reported), a dead actor (kept out of rotation,
optionally replaced; its task re-queued) or a timeout (the actor is killed and replaced; the
task re-queued). Failures are reported as outcomes; `collect` raises only when no worker is
left to run anything.

Routing (which free actor takes which queued task) is `workers.routing`.

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
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import ray
from ray.actor import ActorHandle
from ray.exceptions import RayActorError

from .outcome import Outcome
from .routing import Distance, dispatch
from .tasks import Flight, PoolWorker, Task, describe_error, elapsed, fetch_info, kill_actor, soonest

logger = logging.getLogger(__name__)


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
        distance: distance between two routes, for routing (see `workers.routing`).
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
        self._workers: list[PoolWorker] = []
        self._names = itertools.count()
        self._seq = itertools.count()
        self._replaced = 0
        self._last_error = "no error recorded"
        self._queue: dict[Hashable, Task] = {}
        self._flights: dict[ray.ObjectRef[Any], Flight] = {}
        self._running: dict[Hashable, Flight] = {}
        self._probes: dict[ray.ObjectRef[Any], PoolWorker] = {}
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
        self._queue[key] = Task(key, payload, route, next(self._seq))

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
            self._wait(soonest(remaining, self._until_next_deadline(now)))
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
                kill_actor(worker.handle)
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
            fetch_info(self._workers, self.info_method, timeout)
        return [worker.row() for worker in self._workers]

    # --- actors -------------------------------------------------------------------------------

    def _make_actor(self) -> ActorHandle[Any]:
        assert self._factory is not None
        return self._factory()

    def _add(self, handle: ActorHandle[Any]) -> PoolWorker:
        worker = PoolWorker(f"w{next(self._names)}", handle, order=len(self._workers))
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
            self._last_error = f"the actor factory failed: {describe_error(exc)}"
            logger.exception("the actor factory failed")
            return
        self._replaced += 1
        worker = self._add(handle)
        logger.info("started %s to replace a lost worker (%d live)", worker.name, self.live_workers)

    def _retire(self, worker: PoolWorker, reason: str, *, kill: bool) -> None:
        """Take `worker` out of rotation, settle its in-flight tasks, maybe replace it."""
        worker.alive = False
        worker.error = reason
        self._last_error = f"{worker.name}: {reason}"
        if kill:
            kill_actor(worker.handle)
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

    def _dispatch(self) -> None:
        dispatch(self._workers, self._queue, self.distance, self.max_in_flight_per_actor, self._send)

    def _send(self, worker: PoolWorker, task: Task) -> None:
        task.attempts += 1
        try:
            ref = getattr(worker.handle, self.method).remote(task.payload)
        except Exception as exc:  # no such method, or a payload Ray cannot serialise: no retry helps
            reason = f"could not send the task: {describe_error(exc)}"
            logger.error("task %r: %s", task.key, reason)
            self._done.append(Outcome(task.key, None, reason, worker.name, task.attempts, 0.0))
            return
        flight = Flight(ref, task, worker)
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
            self._retire(worker, f"died while starting: {describe_error(exc)}", kill=True)
            return
        worker.ready = True
        if worker.flights:
            worker.flights[0].started = time.monotonic()
        logger.debug("%s is ready", worker.name)

    def _on_result(self, flight: Flight) -> None:
        worker = flight.worker
        now = time.monotonic()
        error: str | None = None
        try:
            value = ray.get(flight.ref)
        except RayActorError as exc:  # the flight is still in worker.flights: settled with the rest
            self._retire(worker, f"died: {describe_error(exc)}", kill=True)
            return
        except Exception as exc:  # the remote method raised, or Ray lost its result
            value, error = None, describe_error(exc)
        worker.land(flight, now)
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
        self._done.append(Outcome(task.key, value, None, worker.name, task.attempts, elapsed(flight, now)))

    def _fail(self, task: Task, reason: str, flight: Flight) -> None:
        if task.attempts >= self.max_attempts:
            logger.error("task %r failed after %d attempts: %s", task.key, task.attempts, reason)
            seconds = elapsed(flight, time.monotonic())
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
        known = [w.running_since for w in self._workers if w.running_since is not None]
        return max(0.0, min(known) + self.timeout_s - now) if known else None

    def _expire(self, now: float) -> None:
        if self.timeout_s is None:
            return
        for worker in list(self._workers):
            started = worker.running_since
            if started is not None and now - started > self.timeout_s:
                self._retire(worker, f"timed out: a task ran over {self.timeout_s:g}s", kill=True)
