"""The live terminal view of a search (rich): generation, stage, fitness, rate, ETA.

EvoPress and successive halving score each generation on a fresh minibatch, incumbent included,
so the incumbent's value moves up and down with the data even when the profile stays the same.
The view therefore shows three numbers, each saying which data it was measured on: the
incumbent on this generation's data, the lowest value seen in any generation (what the log
calls best), and the parent re-scored on this generation's data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..algorithms import read_float
from ..algorithms.base import Algorithm, Candidate, Result
from .coordinator import Counters

#: The live table's fitness columns, in the order of `Readings`' fields.
FITNESS_COLUMNS = (
    "incumbent\n(this generation)",
    "lowest seen\n(any generation)",
    "parent re-scored\n(this generation)",
)
#: Under the live table: how to read its fitness columns.
CAPTION = (
    "fitness, lower is better, on each generation's own fresh minibatch: the incumbent's value can rise "
    "while the profile stays the same; 'lowest seen' compares values of different minibatches."
)


def _fmt(value: float | None, digits: int = 5) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


@dataclass(frozen=True)
class Readings:
    """The fitness values the view shows, from an algorithm's answer and its history.

    Attributes:
        incumbent: the algorithm's current answer, measured on the data of the generation that
            chose it (EvoPress: this generation's last-stage minibatch).
        lowest: the lowest winner value of any generation so far (``best_fitness`` in the history).
        parent: the previous incumbent re-scored on this generation's data (staged searches only).
    """

    incumbent: float | None
    lowest: float | None
    parent: float | None

    @classmethod
    def of(cls, algorithm: Algorithm | None) -> Readings:
        if algorithm is None:
            return cls(None, None, None)
        last = algorithm.history[-1] if algorithm.history else {}
        incumbent = None if algorithm.best is None else algorithm.best[1]
        return cls(incumbent, read_float(last.get("best_fitness")), read_float(last.get("parent_fitness")))


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
            self._live = Live(self.table(None), console=console, refresh_per_second=4, transient=False)
            self._live.start()

    def table(self, algorithm: Algorithm | None) -> Table:
        """The live table: where the search is, its fitness readings, its pace."""
        table = Table(title=self.title, caption=CAPTION, show_header=True, header_style="bold")
        for column in ("generation", "stage", *FITNESS_COLUMNS, "evaluations", "eval/s", "ETA"):
            table.add_column(column, justify="right")
        readings = Readings.of(algorithm)
        table.add_row(
            str(self._generation), str(self._stage),
            _fmt(readings.incumbent), _fmt(readings.lowest), _fmt(readings.parent),
            f"{self.counters.evaluations} (+{self.counters.replayed} replayed)",
            f"{self.counters.rate():.2f}", self._eta(algorithm),
        )  # fmt: skip
        return table

    def line(self, algorithm: Algorithm) -> str:
        """The one line a non-terminal console gets at each barrier."""
        readings = Readings.of(algorithm)
        parent = "" if readings.parent is None else f", parent re-scored {_fmt(readings.parent)}"
        return (
            f"generation {self._generation} stage {self._stage}: incumbent {_fmt(readings.incumbent)} "
            f"on this generation's data{parent}; lowest seen {_fmt(readings.lowest)} (any generation); "
            f"{self.counters.evaluations} evaluations, {self.counters.rate():.2f}/s, ETA {self._eta(algorithm)}"
        )

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
            self._live.update(self.table(algorithm))
            self._drawn = time.monotonic()

    def on_barrier(self, algorithm: Algorithm) -> None:
        if self._live is not None:
            self._live.update(self.table(algorithm))
            return
        self.console.print(self.line(algorithm), markup=False, highlight=False, soft_wrap=True)

    def on_finish(self, algorithm: Algorithm) -> None:
        self.close(algorithm)

    def close(self, algorithm: Any = None) -> None:
        if self._live is not None:
            if algorithm is not None:
                self._live.update(self.table(algorithm))
            self._live.stop()
            self._live = None
