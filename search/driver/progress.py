"""The live terminal view of a search (rich): generation, stage, best fitness, rate, ETA."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..algorithms.base import Algorithm, Candidate, Result
from .coordinator import Counters


def _fmt(value: float | None, digits: int = 5) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


class LiveView:
    """A `Listener` that redraws a small table at most a few times a second.

    Args:
        console: where to draw (a non-terminal console prints one line per barrier instead).
        counters: the coordinator's counters.
        title: shown above the table (the study name).
    """

    def __init__(self, console: Console, counters: Counters, title: str) -> None:
        self.console = console
        self.counters = counters
        self.title = title
        self._generation = 0
        self._stage = 0
        self._drawn = 0.0
        self._live: Live | None = None
        if console.is_terminal:
            self._live = Live(self._table(None), console=console, refresh_per_second=4, transient=False)
            self._live.start()

    def _table(self, algorithm: Algorithm | None) -> Table:
        table = Table(title=self.title, show_header=True, header_style="bold")
        for column in ("generation", "stage", "best fitness", "parent (re-drawn)", "evaluations", "eval/s", "ETA"):
            table.add_column(column, justify="right")
        best = None if algorithm is None or algorithm.best is None else algorithm.best[1]
        parent = None
        if algorithm is not None and algorithm.history:
            parent = algorithm.history[-1].get("parent_fitness")
        table.add_row(
            str(self._generation), str(self._stage), _fmt(best), _fmt(parent),
            f"{self.counters.evaluations} (+{self.counters.replayed} replayed)",
            f"{self.counters.rate():.2f}", self._eta(algorithm),
        )  # fmt: skip
        return table

    def _eta(self, algorithm: Algorithm | None) -> str:
        done = None if algorithm is None else algorithm.progress
        elapsed = time.monotonic() - self.counters.started
        if not done or done <= 0 or done >= 1:
            return "-"
        left = elapsed * (1 - done) / done
        return time.strftime("%H:%M:%S", time.gmtime(left))

    def on_result(self, candidate: Candidate, result: Result, algorithm: Algorithm) -> None:
        self._generation, self._stage = candidate.generation, candidate.stage
        if self._live is not None and time.monotonic() - self._drawn > 0.25:
            self._live.update(self._table(algorithm))
            self._drawn = time.monotonic()

    def on_barrier(self, algorithm: Algorithm) -> None:
        if self._live is not None:
            self._live.update(self._table(algorithm))
            return
        best = None if algorithm.best is None else algorithm.best[1]
        self.console.print(
            f"generation {self._generation} stage {self._stage}: best {_fmt(best)}, "
            f"{self.counters.evaluations} evaluations, {self.counters.rate():.2f}/s, ETA {self._eta(algorithm)}",
            markup=False,
            highlight=False,
        )

    def on_finish(self, algorithm: Algorithm) -> None:
        self.close(algorithm)

    def close(self, algorithm: Any = None) -> None:
        if self._live is not None:
            if algorithm is not None:
                self._live.update(self._table(algorithm))
            self._live.stop()
            self._live = None
