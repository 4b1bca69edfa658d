"""`WorkerPool` mechanics on a real local Ray with cheap fake actors.

The fakes return quickly unless the payload asks them to sleep, raise or kill their own process;
a misbehaviour marked "once" happens only on the first attempt (a marker file remembers it), so
a test can tell a retry that went elsewhere from one that failed again.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray

from workers import WorkerPool, switch_distance


@ray.remote
class FakeActor:
    """Runs payloads like ``{"value": 3, "sleep": 0.5, "fail": True, "exit": True, "once": path}``."""

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        once = payload.get("once")
        misbehave = True
        if once is not None:
            misbehave = not os.path.exists(once)
            if misbehave:  # remember who misbehaved
                Path(once).write_text(str(os.getpid()))
        if misbehave:
            time.sleep(payload.get("sleep", 0.0))
            if payload.get("exit"):
                os._exit(1)
            if payload.get("fail"):
                raise ValueError(f"cannot handle value {payload.get('value')}")
        return {"value": payload.get("value"), "pid": os.getpid()}

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid()}


def _fake() -> Any:
    return FakeActor.options(num_cpus=0.1, max_restarts=0).remote()


@pytest.fixture
def make_pool(ray_session):
    """Build pools of fake actors; every actor is killed at the end of the test."""
    pools: list[WorkerPool] = []

    def make(count: int = 2, *, replace: bool = False, **kwargs: Any) -> WorkerPool:
        pool = WorkerPool([_fake() for _ in range(count)], actor_factory=_fake if replace else None, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown()


def _drain(pool: WorkerPool, timeout: float = 60.0) -> list:
    """Collect until nothing is queued or in flight."""
    outcomes = []
    deadline = time.monotonic() + timeout
    while pool.queued or pool.in_flight:
        assert time.monotonic() < deadline, "the pool did not finish in time"
        outcomes += pool.collect(timeout=5.0)
    return outcomes


def _by_key(outcomes) -> dict:
    keys = [o.key for o in outcomes]
    assert len(keys) == len(set(keys)), f"a key came back twice: {keys}"
    return {o.key: o for o in outcomes}


@pytest.mark.ray
def test_every_key_comes_back_once_with_its_value(make_pool):
    pool = make_pool(2)
    for i in range(8):
        pool.submit(("task", i), {"value": i})
    assert (pool.queued, pool.in_flight) == (8, 0)
    with pytest.raises(ValueError, match="already queued"):
        pool.submit(("task", 3), {"value": 3})
    outcomes = _by_key(_drain(pool))
    assert sorted(outcomes) == [("task", i) for i in range(8)]
    for (_, i), outcome in outcomes.items():
        assert outcome.ok and outcome.value["value"] == i and outcome.attempts == 1
        assert outcome.worker in {"w0", "w1"} and outcome.seconds >= 0
    assert (pool.queued, pool.in_flight, pool.idle, pool.live_workers) == (0, 0, 2, 2)
    assert pool.collect(timeout=None) == []  # nothing pending: returns at once


@pytest.mark.ray
def test_collect_returns_empty_when_nothing_ends_in_time(make_pool):
    pool = make_pool(1)
    pool.submit("slow", {"value": 1, "sleep": 3.0})
    start = time.monotonic()
    assert pool.collect(timeout=0.3) == []
    assert time.monotonic() - start < 2.0
    assert (pool.queued, pool.in_flight, pool.idle) == (0, 1, 0)


@pytest.mark.ray
def test_idle_actor_takes_the_task_nearest_its_last_route(make_pool):
    pool = make_pool(2, distance=switch_distance)
    zeros, ones = np.zeros(6, dtype=np.int64), np.ones(6, dtype=np.int64)
    pool.submit("a", {"value": "a"}, route=zeros)
    pool.submit("b", {"value": "b"}, route=ones)
    first = _by_key(_drain(pool))
    assert {first["a"].worker, first["b"].worker} == {"w0", "w1"}
    held = {first["a"].worker: zeros, first["b"].worker: ones}

    def near(worker: str) -> np.ndarray:
        route = held[worker].copy()
        route[0] = 1 - route[0]
        return route

    # Both actors are idle: queue order, or letting w0 choose first, would give this task to w0.
    pool.submit("for-w1", {"value": 1}, route=near("w1"))
    assert _drain(pool)[0].worker == "w1"
    pool.submit("for-w1-again", {"value": 2}, route=near("w1"))
    pool.submit("for-w0", {"value": 3}, route=near("w0"))
    second = _by_key(_drain(pool))
    assert second["for-w1-again"].worker == "w1"
    assert second["for-w0"].worker == "w0"


@pytest.mark.ray
@pytest.mark.parametrize("distance", [switch_distance, None])
def test_one_actor_runs_the_nearest_queued_task_first(make_pool, distance):
    pool = make_pool(1, distance=distance)
    start = np.zeros(8, dtype=np.int64)
    pool.submit("start", {"value": 0}, route=start)
    _drain(pool)
    far, near = start + 1, start.copy()
    near[0] = 1
    pool.submit("far", {"value": 1}, route=far)
    pool.submit("near", {"value": 2}, route=near)
    pool.submit("anywhere", {"value": 3})  # no route: a perfect match anywhere, never starved
    order = [o.key for o in _drain(pool)]
    if distance is None:
        assert order == ["far", "near", "anywhere"]
    else:
        assert order == ["anywhere", "near", "far"]


@pytest.mark.ray
@pytest.mark.parametrize("replace", [False, True])
def test_task_of_a_dying_worker_runs_elsewhere(make_pool, tmp_path, replace):
    pool = make_pool(2, replace=replace)
    for i in range(6):
        payload: dict[str, Any] = {"value": i}
        if i == 2:
            payload.update(exit=True, sleep=0.2, once=str(tmp_path / "exit-once"))
        pool.submit(i, payload)
    outcomes = _by_key(_drain(pool))
    assert sorted(outcomes) == list(range(6))
    assert all(o.ok for o in outcomes.values())
    assert outcomes[2].attempts == 2
    assert outcomes[2].value["pid"] != int((tmp_path / "exit-once").read_text())
    assert pool.live_workers == (2 if replace else 1)
    rows = pool.workers_info()
    dead = [row for row in rows if not row["alive"]]
    assert len(dead) == 1 and "died" in dead[0]["error"]
    assert [row["name"] for row in rows] == (["w0", "w1", "w2"] if replace else ["w0", "w1"])
    assert all(row["info"]["pid"] > 0 for row in rows if row["alive"])


@pytest.mark.ray
def test_a_task_over_the_timeout_is_killed_and_retried_elsewhere(make_pool, tmp_path):
    pool = make_pool(2, replace=True, timeout_s=1.0)
    marker = tmp_path / "sleep-once"
    pool.submit("slow-once", {"value": 1, "sleep": 60.0, "once": str(marker)})
    pool.submit("quick", {"value": 2})
    start = time.monotonic()
    outcomes = _by_key(_drain(pool))
    assert time.monotonic() - start < 20.0
    assert outcomes["slow-once"].ok and outcomes["slow-once"].attempts == 2
    assert outcomes["slow-once"].value["pid"] != int(marker.read_text())
    assert outcomes["quick"].ok
    assert pool.live_workers == 2  # the killed actor was replaced
    assert any("timed out" in (row["error"] or "") for row in pool.workers_info())


@pytest.mark.ray
def test_a_task_that_always_times_out_is_reported(make_pool):
    pool = make_pool(2, replace=True, timeout_s=0.5, max_attempts=2)
    pool.submit("stuck", {"value": 1, "sleep": 60.0})
    pool.submit("fine", {"value": 2})
    outcomes = _by_key(_drain(pool))
    stuck = outcomes["stuck"]
    assert not stuck.ok and stuck.value is None and stuck.attempts == 2
    assert "timed out" in stuck.error
    assert outcomes["fine"].ok
    assert pool.live_workers == 2


@pytest.mark.ray
def test_failing_task_is_reported_after_max_attempts_and_the_pool_keeps_working(make_pool, tmp_path):
    pool = make_pool(2, max_attempts=3)
    marker = tmp_path / "fail-once"
    pool.submit("bad", {"value": "bad", "fail": True})
    pool.submit("flaky", {"value": "flaky", "fail": True, "once": str(marker)})
    for i in range(4):
        pool.submit(i, {"value": i})
    outcomes = _by_key(_drain(pool))
    bad = outcomes["bad"]
    assert bad.value is None and bad.attempts == 3
    assert bad.error == "ValueError: cannot handle value bad"
    flaky = outcomes["flaky"]
    assert flaky.ok and flaky.attempts == 2
    # (A retry prefers an actor that has not failed the task, but takes the one that failed it
    # when that is the only idle one, so which actor ran it is not asserted.)
    assert all(outcomes[i].ok for i in range(4))
    assert pool.live_workers == 2
    pool.submit("after", {"value": "after"})
    assert [o.value["value"] for o in _drain(pool)] == ["after"]


@pytest.mark.ray
def test_all_workers_dead_raises(make_pool):
    pool = make_pool(2)
    pool.submit("poison", {"value": 0, "exit": True})
    pool.submit("fine", {"value": 1, "sleep": 0.3})
    with pytest.raises(RuntimeError, match=r"all 2 workers died: w\d: died"):
        _drain(pool)


@pytest.mark.ray
def test_all_workers_dead_raises_when_the_factory_fails(ray_session):
    def factory() -> Any:
        raise RuntimeError("no resources left")

    pool = WorkerPool([_fake()], actor_factory=factory)
    try:
        pool.submit("poison", {"value": 0, "exit": True})
        expected = "all 1 workers died: the actor factory failed: RuntimeError: no resources left"
        with pytest.raises(RuntimeError, match=expected):
            _drain(pool)
    finally:
        pool.shutdown()


@pytest.mark.ray
def test_cancelled_tasks_are_dropped_and_a_late_result_is_ignored(make_pool, caplog):
    pool = make_pool(1)
    pool.submit("running", {"value": 1, "sleep": 0.5})
    pool.submit("queued", {"value": 2})
    assert pool.collect(timeout=0) == []
    assert (pool.queued, pool.in_flight) == (1, 1)
    assert pool.cancel("running") and pool.cancel("queued")
    assert not pool.cancel("unknown")
    assert (pool.queued, pool.in_flight, pool.idle) == (0, 0, 0)  # the actor still runs the cancelled task
    pool.submit("running", {"value": 3})  # the key is free again
    with caplog.at_level(logging.INFO, logger="workers.pool"):
        outcomes = _drain(pool)
    assert [(o.key, o.value["value"]) for o in outcomes] == [("running", 3)]
    assert "ignoring the" in caplog.text and "of a cancelled task from w0" in caplog.text


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least one actor or an actor_factory"):
        WorkerPool([])
    with pytest.raises(ValueError, match="max_attempts"):
        WorkerPool(actor_factory=lambda: None, max_attempts=0)
    with pytest.raises(ValueError, match="timeout_s"):
        WorkerPool(actor_factory=lambda: None, timeout_s=0)


@pytest.mark.ray
def test_several_tasks_in_flight_per_actor(make_pool):
    pool = make_pool(2, max_in_flight_per_actor=2)
    for i in range(6):
        pool.submit(i, {"value": i, "sleep": 0.2})
    pool.collect(timeout=0)
    assert (pool.queued, pool.in_flight) == (2, 4)
    outcomes = _by_key(_drain(pool))
    assert sorted(outcomes) == list(range(6)) and all(o.ok for o in outcomes.values())


@pytest.mark.ray
def test_an_idle_actor_gets_a_task_before_a_busy_actor_gets_its_second(make_pool):
    pool = make_pool(2, distance=switch_distance, max_in_flight_per_actor=2)
    zeros = np.zeros(6, dtype=np.int64)
    # By route alone the actor that takes "a" is nearest "b" too, and would queue it behind "a"
    # while the other actor idles.
    pool.submit("a", {"value": "a", "sleep": 0.3}, route=zeros)
    pool.submit("b", {"value": "b", "sleep": 0.3}, route=zeros)
    outcomes = _by_key(_drain(pool))
    assert {outcomes["a"].worker, outcomes["b"].worker} == {"w0", "w1"}


@pytest.mark.ray
def test_a_task_that_cannot_be_sent_is_reported(make_pool):
    pool = make_pool(1, method="no_such_method")
    pool.submit("x", {"value": 1})
    [outcome] = pool.collect(timeout=10)
    assert outcome.key == "x" and outcome.attempts == 1
    assert outcome.error.startswith("could not send the task: AttributeError")
    assert pool.live_workers == 1
