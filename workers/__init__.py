"""Ray workers: the actor that holds an `Evaluator`, its placement, and the pool that feeds it;
and the inference runtime the workers time profiles with (`workers.runtime`, no Ray).

`EvaluatorRunner` executes task payloads in-process (what unit tests use); `EvaluatorActor` is
the thin Ray actor around it; `WorkerPool` sends keyed tasks to any actors and reports how each
ended, routing work to the actor that holds the nearest profile; `LocalPool` runs one runner in
the caller's process behind the same surface (no Ray: one GPU, or a laptop).

Names are imported on first use, so `import workers` (or `workers.runtime`) does not import Ray;
only the actor, the Ray pool and `build_executor` (the compression database's layers compressed on
Ray workers, for `pressroom build-db --workers N`) do.

Example:
    >>> import ray  # doctest: +SKIP
    >>> from workers import WorkerPool, make_actors, switch_distance, task_payload
    >>> pool = WorkerPool(make_actors(spec, 2, num_cpus=1.0), distance=switch_distance)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from .dbbuild import build_executor
    from .local import LocalPool, local_device
    from .outcome import Outcome
    from .pool import WorkerPool
    from .runner import EvaluatorRunner, switch_distance, task_payload

_WHERE = {
    "EvaluatorActor": "actor",
    "ResourceError": "actor",
    "actor_options": "actor",
    "check_fits": "actor",
    "gpus_per_actor": "actor",
    "make_actors": "actor",
    "resolve_device": "actor",
    "threads_for": "actor",
    "wait_ready": "actor",
    "build_executor": "dbbuild",
    "Outcome": "outcome",
    "LocalPool": "local",
    "local_device": "local",
    "WorkerPool": "pool",
    "EvaluatorRunner": "runner",
    "switch_distance": "runner",
    "task_payload": "runner",
}

__all__ = [
    "EvaluatorActor",
    "EvaluatorRunner",
    "LocalPool",
    "Outcome",
    "ResourceError",
    "WorkerPool",
    "actor_options",
    "build_executor",
    "check_fits",
    "gpus_per_actor",
    "local_device",
    "make_actors",
    "resolve_device",
    "switch_distance",
    "task_payload",
    "threads_for",
    "wait_ready",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'workers' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
