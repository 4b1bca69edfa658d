"""`EvaluatorActor` placement decisions, and real evaluator actors behind a `WorkerPool`."""

from __future__ import annotations

import time

import numpy as np
import pytest
import ray

from spaces import Fidelity
from workers import (
    ResourceError,
    WorkerPool,
    actor_options,
    check_fits,
    gpus_per_actor,
    make_actors,
    resolve_device,
    switch_distance,
    task_payload,
    threads_for,
    wait_ready,
)

TINY = {"model": {"name": "pressroom:tiny-llama"}, "compression": {"target": 0.5, "compressor": "magnitude"}}


def test_actor_options_ask_for_a_gpu_only_where_the_cluster_has_one():
    assert actor_options(0.5, cluster={"CPU": 2.0, "memory": 1e9}) == {
        "num_cpus": 0.5,
        "num_gpus": 0.0,
        "max_restarts": 0,
    }
    assert actor_options(4, cluster={"CPU": 64.0, "GPU": 8.0})["num_gpus"] == 1.0
    assert actor_options(1, 0.5, cluster={"CPU": 64.0, "GPU": 8.0})["num_gpus"] == 0.5
    assert gpus_per_actor(0, {"GPU": 8.0}) == 0.0
    with pytest.raises(ValueError, match="num_cpus must be positive"):
        actor_options(0, cluster={})
    with pytest.raises(ValueError, match="'all'"):
        gpus_per_actor("all", {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        gpus_per_actor(-1, {})


def test_device_and_threads_follow_the_assigned_resources():
    assert resolve_device("auto", []) == "cpu"
    assert resolve_device("auto", ["0"]) == "cuda"
    assert resolve_device("cpu", [1]) == "cpu"
    with pytest.raises(ValueError, match="no GPU"):
        resolve_device("cuda", [])
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu", [])
    assert (threads_for(0.5), threads_for(1.0), threads_for(3.7)) == (1, 1, 3)


def test_check_fits_says_how_many_actors_fit():
    check_fits(4, {"num_cpus": 0.5, "num_gpus": 0.0}, available={"CPU": 2.0})
    with pytest.raises(ResourceError) as caught:
        check_fits(8, {"num_cpus": 1.0, "num_gpus": 0.0}, available={"CPU": 2.0, "memory": 1e9})
    assert str(caught.value) == "8 actors x 1 CPU need 8 CPU, but the cluster has 2 CPU free: 2 actors fit"
    with pytest.raises(ResourceError, match="need 4 GPU, but the cluster has 0 GPU free: 0 actors fit"):
        check_fits(4, {"num_cpus": 1.0, "num_gpus": 1.0}, available={"CPU": 64.0})


@pytest.mark.ray
def test_actors_that_cannot_be_placed_time_out_and_are_killed(ray_session, evaluator):
    options = actor_options(4.0)  # the session's cluster has 2 CPUs
    with pytest.raises(ResourceError, match="0 actors fit"):
        check_fits(1, options)
    actors = make_actors(evaluator.spec, 1, num_cpus=4.0)
    with pytest.raises(TimeoutError, match="0 of 1 evaluator actors were ready after 2 s"):
        wait_ready(actors, timeout_s=2)
    with pytest.raises(ray.exceptions.RayActorError):  # killed, not left pending in Ray's queue
        ray.get(actors[0].info.remote(), timeout=60)


@pytest.mark.ray
def test_actor_options_ask_for_cpus_on_this_cluster(ray_session):
    assert actor_options(0.5) == {"num_cpus": 0.5, "num_gpus": 0.0, "max_restarts": 0}


@pytest.fixture(scope="module")
def evaluator(make_evaluator):
    return make_evaluator(**TINY)


@pytest.mark.ray
def test_a_pool_of_evaluator_actors_matches_the_plain_evaluator_even_when_one_is_killed(ray_session, evaluator):
    space = evaluator.space
    rng = np.random.default_rng(11)
    fidelity = Fidelity(1024, (0, 1))
    profiles = [space.sample(rng) for _ in range(6)]
    expected = {i: evaluator.evaluate(profile, fidelity).fitness for i, profile in enumerate(profiles)}

    actors = make_actors(evaluator.spec, 2, num_cpus=0.5)
    pool = WorkerPool(actors, distance=switch_distance, timeout_s=120)
    try:
        rows = pool.workers_info(timeout=120)  # waits for both evaluators to be built
        assert [row["name"] for row in rows] == ["w0", "w1"]
        for row in rows:
            info = row["info"]
            assert info["device"] == "cpu" and info["torch_threads"] == 1 and info["gpu_ids"] == []
            assert info["node_id"] == ray.get_runtime_context().get_node_id()
            assert info["space"] == space.summary() and info["model"] == evaluator.loaded.fingerprint

        for i, profile in enumerate(profiles):
            levels = space.to_array(profile)
            pool.submit(i, task_payload("evaluate", levels, fidelity), route=levels)
        outcomes = pool.collect(timeout=120)
        assert outcomes, "no evaluation finished in two minutes"
        # Both actors are busy now (the queue is not empty): kill one mid-evaluation.
        assert (pool.in_flight, pool.idle) == (2, 0)
        ray.kill(actors[0])
        deadline = time.monotonic() + 120
        while pool.queued or pool.in_flight:
            assert time.monotonic() < deadline
            outcomes += pool.collect(timeout=10)

        assert sorted(o.key for o in outcomes) == list(range(6))  # every key exactly once
        for outcome in outcomes:
            assert outcome.ok, outcome.error
            assert outcome.value["fitness"] == expected[outcome.key]  # same data, same weights: bit-identical
        assert max(o.attempts for o in outcomes) == 2  # the killed actor's task ran again
        assert pool.live_workers == 1
        assert {o.worker for o in outcomes if o.attempts == 2} == {"w1"}
    finally:
        pool.shutdown()
