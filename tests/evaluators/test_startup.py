"""Start-up timings: one INFO line per step that ended, none for a step that failed."""

from __future__ import annotations

import logging
import re

import pytest

from evaluators.startup import StartTimer, start_line

LINE = r"start: {} in \d+\.\d s \(\d+\.\d CPU-s\)"


def test_each_step_is_timed_and_logged_as_it_ends(caplog):
    timer = StartTimer(logging.getLogger("test.startup"))
    with caplog.at_level("INFO", logger="test.startup"):
        with timer.step("loaded model"):
            sum(range(10_000))
        with timer.step("opened the compression database"):
            pass
    assert list(timer.steps) == ["loaded model", "opened the compression database"]
    assert all(wall >= 0 and cpu >= 0 for wall, cpu in timer.steps.values())
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert re.fullmatch(LINE.format("loaded model"), messages[0])
    assert messages[1] == start_line("opened the compression database", *timer.steps["opened the compression database"])


def test_a_step_that_fails_logs_and_records_nothing(caplog):
    timer = StartTimer(logging.getLogger("test.startup"))
    with (
        caplog.at_level("INFO", logger="test.startup"),
        pytest.raises(ValueError, match="no model"),
        timer.step("loaded model"),
    ):
        raise ValueError("no model")
    assert timer.steps == {}
    assert caplog.records == []
