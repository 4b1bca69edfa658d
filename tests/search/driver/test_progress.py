"""The live view says which data each fitness was measured on, so a rising incumbent reads right."""

from __future__ import annotations

import io
import re

from rich.console import Console

from search.algorithms import EvoPress, EvoPressConfig
from search.driver.coordinator import Counters
from search.driver.progress import CAPTION, FITNESS_COLUMNS, LiveView
from tests.search.harness import additive_problem, sparsity_space


def _line_values(line: str) -> tuple[float, float]:
    match = re.search(r"incumbent (\S+) on this generation's data.*; lowest seen (\S+) \(any generation\)", line)
    assert match, line
    return float(match[1]), float(match[2])


def test_the_view_shows_the_incumbent_on_this_generations_data_and_the_lowest_seen():
    space = sparsity_space(12, 4)
    problem = additive_problem(space, 4, noise=0.5)  # noisy minibatches: the incumbent's value moves
    algo = EvoPress(space, EvoPressConfig(generations=8, offspring=6, stages=((2, 64), (1, 256))), seed=1)
    text = io.StringIO()
    view = LiveView(Console(file=text, force_terminal=False, width=300), Counters(), "test")
    while not algo.finished:
        batch = algo.ask(100)
        algo.tell([problem.respond(c) for c in batch])
        view.on_result(batch[-1], problem.respond(batch[-1]), algo)
        if batch[-1].final:
            view.on_barrier(algo)
    lines = text.getvalue().splitlines()
    assert len(lines) == len(algo.history) == 8
    rose = False
    for k, (line, entry) in enumerate(zip(lines, algo.history, strict=True)):
        incumbent, lowest = _line_values(line)
        assert incumbent == float(f"{entry['fitness']:.5g}")
        assert lowest == float(f"{min(h['fitness'] for h in algo.history[: k + 1]):.5g}")
        assert f"parent re-scored {entry['parent_fitness']:.5g}" in line or entry["parent_fitness"] is None
        rose = rose or (k > 0 and incumbent > _line_values(lines[k - 1])[0])
    assert rose, "this seed's incumbent rises in some generation: the case the labels are for"

    shown = Console(file=io.StringIO(), width=300, record=True)
    shown.print(view.table(algo))
    rendered = shown.export_text()
    for column in FITNESS_COLUMNS:
        for part in column.split("\n"):
            assert part in rendered
    assert " ".join(CAPTION.split()[:6]) in " ".join(rendered.split())
    assert f"{algo.best[1]:.5g}" in rendered
