"""Start-up timings: each step before a search's first evaluation, logged as it ends.

A start that loads an 8B model, its data and its compression database takes minutes; one line
per step (``start: loaded model in 41.2 s (38.0 CPU-s)``) shows it is not hung and where the time
goes. CPU seconds are the process's (`time.process_time`, every thread), so a step that waits
(for a file, a lock, a worker) shows little CPU and a step that computes shows much.

Example:
    >>> import logging
    >>> timer = StartTimer(logging.getLogger("demo"))
    >>> with timer.step("counted"):
    ...     total = sum(range(1000))
    >>> list(timer.steps)
    ['counted']
    >>> start_line("loaded model", 2.43, 1.9)
    'start: loaded model in 2.4 s (1.9 CPU-s)'
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator


def start_line(step: str, seconds: float, cpu_seconds: float) -> str:
    """The one line a step logs: what, wall seconds, CPU seconds."""
    return f"start: {step} in {seconds:.1f} s ({cpu_seconds:.1f} CPU-s)"


class StartTimer:
    """Times named steps and logs each at INFO when it ends (a step that raises logs nothing).

    Args:
        log: where the lines go.

    Attributes:
        steps: step -> (wall seconds, CPU seconds), in the order they ended.
    """

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.steps: dict[str, tuple[float, float]] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the body as step `name`."""
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.steps[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        self.log.info("%s", start_line(name, *self.steps[name]))
