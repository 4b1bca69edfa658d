"""`LocalPool`: one `EvaluatorRunner` in the driver's own process, behind the part of
`WorkerPool`'s surface a coordinator uses; no Ray. For one machine with one GPU, or a laptop
(spec ``workers.backend: local``).

Tasks run one at a time, in submission order, when `collect` is called; an application error is
reported at once (an in-process evaluator is deterministic: a retry fails the same way), and a
task cannot be stopped mid-way, so there is no task timeout.

Example:
    >>> pool = LocalPool(EvaluatorRunner(spec, device=local_device("auto")))  # doctest: +SKIP
    >>> pool.submit(7, payload)  # doctest: +SKIP
    >>> [outcome] = pool.collect(timeout=None)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from typing import Any

import torch

from .outcome import Outcome, error_line
from .runner import EvaluatorRunner, pick_device

logger = logging.getLogger(__name__)

#: The pool's name for its one worker, as `WorkerPool` names its first actor.
NAME = "w0"


def local_device(choice: str) -> str:
    """The torch device an in-process worker uses.

    Args:
        choice: "auto" (CUDA when torch sees a GPU, else CPU), "cpu" or "cuda".

    Raises:
        ValueError: an unknown choice, or "cuda" where torch sees no GPU.

    Example:
        >>> local_device("cpu")
        'cpu'
    """
    try:
        return pick_device(choice, torch.cuda.is_available(), "torch sees no CUDA GPU here")
    except ValueError as exc:
        raise ValueError(f"workers.{exc}") from None


class LocalPool:
    """Runs keyed task payloads on one in-process `EvaluatorRunner`.

    Args:
        runner: the worker; the pool owns it from now on.
    """

    def __init__(self, runner: EvaluatorRunner) -> None:
        self.runner: EvaluatorRunner | None = runner
        self._queue: dict[Hashable, Any] = {}
        self._done: list[Outcome] = []
        self._completed = 0
        self._info: dict[str, Any] = runner.info()

    def submit(self, key: Hashable, payload: Any, route: Any = None) -> None:
        """Queue a task (`route` is accepted for `WorkerPool`'s signature; one worker needs none).

        Raises:
            ValueError: `key` is already queued.
        """
        if key in self._queue:
            raise ValueError(f"task {key!r} is already queued")
        self._queue[key] = payload

    def collect(self, timeout: float | None = None) -> list[Outcome]:
        """Run the next queued task and return the tasks that ended (`timeout` cannot shorten a
        running task; it is accepted for `WorkerPool`'s signature).

        Raises:
            RuntimeError: the pool was shut down.
        """
        if self.runner is None:
            raise RuntimeError("the local worker was shut down")
        if not self._done and self._queue:
            key = next(iter(self._queue))
            payload = self._queue.pop(key)
            start = time.monotonic()
            try:
                value, error = self.runner.run(payload), None
                self._completed += 1
            except Exception as exc:  # the task's error, reported like a remote one
                logger.exception("task %r failed", key)
                value, error = None, error_line(exc)
            self._done.append(Outcome(key, value, error, NAME, 1, time.monotonic() - start))
        done, self._done = self._done, []
        return done

    def cancel(self, key: Hashable) -> bool:
        """Drop a queued or uncollected task; returns whether there was one."""
        if self._queue.pop(key, None) is not None:
            return True
        before = len(self._done)
        self._done = [outcome for outcome in self._done if outcome.key != key]
        return len(self._done) < before

    def shutdown(self) -> None:
        """Drop the evaluator (and its GPU memory) and every task. The pool is unusable afterwards."""
        self.runner = None
        self._queue.clear()
        self._done.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Always 0: a task runs inside `collect` and has ended when it returns."""
        return 0

    @property
    def idle(self) -> int:
        return self.live_workers

    @property
    def live_workers(self) -> int:
        return 0 if self.runner is None else 1

    def workers_info(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """One row, as `WorkerPool.workers_info` gives per actor."""
        alive = self.runner is not None
        return [
            {
                "name": NAME,
                "alive": alive,
                "ready": alive,
                "in_flight": 0,
                "completed": self._completed,
                "error": None if alive else "shut down",
                "info": self._info,
            }
        ]
