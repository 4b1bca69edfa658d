"""`LocalPool`: one in-process `EvaluatorRunner` behind the pool surface a coordinator uses."""

from __future__ import annotations

import pytest

from spaces import Fidelity
from workers import EvaluatorRunner, LocalPool, local_device, task_payload

TINY = {"model": {"name": "pressroom:tiny-llama"}, "compression": {"target": 0.5, "compressor": "magnitude"}}


@pytest.fixture(scope="module")
def evaluator(make_evaluator):
    return make_evaluator(**TINY)


def test_tasks_run_in_order_and_report_like_the_ray_pool(evaluator):
    pool = LocalPool(EvaluatorRunner(evaluator.spec))
    space = evaluator.space
    uniform = space.to_array(space.uniform())
    pool.submit("a", task_payload("evaluate", uniform, Fidelity(256)))
    pool.submit("bad", {**task_payload("evaluate", uniform, Fidelity(256)), "levels": [0]})
    pool.submit("dropped", task_payload("evaluate", uniform, Fidelity(256)))
    assert pool.queued == 3 and pool.in_flight == 0 and pool.live_workers == pool.idle == 1
    with pytest.raises(ValueError, match="already queued"):
        pool.submit("a", {})
    assert pool.cancel("dropped") and not pool.cancel("dropped")
    (first,) = pool.collect(timeout=0)
    assert first.key == "a" and first.ok and first.worker == "w0" and first.attempts == 1
    assert first.value["fitness"] == evaluator.evaluate(space.uniform(), Fidelity(256)).fitness
    (second,) = pool.collect()
    assert second.key == "bad" and second.value is None and second.error.startswith("ValueError: ")
    assert pool.collect() == [] and pool.queued == 0
    (row,) = pool.workers_info()
    assert row["completed"] == 1 and row["alive"] and row["info"]["model"] == evaluator.loaded.fingerprint
    pool.shutdown()
    assert pool.live_workers == 0 and not pool.workers_info()[0]["alive"]
    with pytest.raises(RuntimeError, match="shut down"):
        pool.collect()


def test_the_device_choice_is_checked():
    assert local_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"workers.device must be one of \('auto', 'cpu', 'cuda'\), got 'tpu'"):
        local_device("tpu")
