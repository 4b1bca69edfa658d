"""Ray workers: the actor that holds an `Evaluator`, its placement, and the pool that feeds it.

`EvaluatorRunner` executes task payloads in-process (what unit tests use); `EvaluatorActor` is
the thin Ray actor around it; `WorkerPool` sends keyed tasks to any actors and reports how each
ended, routing work to the actor that holds the nearest profile.

Example:
    >>> import ray  # doctest: +SKIP
    >>> from workers import WorkerPool, make_actors, switch_distance, task_payload
    >>> pool = WorkerPool(make_actors(spec, 2, num_cpus=1.0), distance=switch_distance)  # doctest: +SKIP
"""

from .actor import (
    EvaluatorActor,
    ResourceError,
    actor_options,
    check_fits,
    gpus_per_actor,
    make_actors,
    resolve_device,
    threads_for,
    wait_ready,
)
from .latency import LatencyReport, LatencyTable, build_table, measure_latency, profile_latency
from .pool import Outcome, WorkerPool
from .runner import EvaluatorRunner, switch_distance, task_payload

__all__ = [
    "EvaluatorActor",
    "EvaluatorRunner",
    "LatencyReport",
    "LatencyTable",
    "Outcome",
    "ResourceError",
    "WorkerPool",
    "actor_options",
    "build_table",
    "check_fits",
    "gpus_per_actor",
    "make_actors",
    "measure_latency",
    "profile_latency",
    "resolve_device",
    "switch_distance",
    "task_payload",
    "threads_for",
    "wait_ready",
]
