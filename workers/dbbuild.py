"""`build_executor`: the compression database's layers compressed on Ray workers in parallel.

The builder (`CompressionDatabase.build`, in the driver) gathers the statistics once and hands
each layer to a Ray task as a `LayerJob` (its dense weight and statistics travel through the
object store); the task compresses it with `evaluators.building.write_layer`, which writes the
file into the database folder under a temporary name and renames it, and returns its manifest
entry. The driver adds the entries to the manifest as they come back. At most `count` tasks run
at once, so at most `count` layers' statistics wait in the object store beyond the group being
gathered. Compression has no randomness, but its float arithmetic depends on the torch thread
count (a matmul's blocking changes the last bits of SparseGPT and GPTQ), so every task uses
`threads_for(num_cpus)` threads: the files and the manifest are the same bytes as a build in
one process with that many threads (`OMP_NUM_THREADS=1` for the default of 1 CPU per task),
whatever the number of workers.

The tasks write into the driver's database path: on several nodes, that folder must be shared
(see docs/deploy.md); the builder checks each file is there and says so when it is not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ray
import torch

from evaluators.building import Executor, LayerJob, write_layer

from .actor import threads_for

logger = logging.getLogger(__name__)


@ray.remote
def _compress_task(root: str, job: LayerJob, threads: int) -> dict[str, Any]:
    """One layer, on a worker: compress, write the file (atomic rename), return its entry."""
    torch.set_num_threads(threads)
    return write_layer(Path(root), job)


def build_executor(count: int, num_cpus: float = 1.0) -> Executor:
    """An `Executor` that runs up to `count` layers at once as Ray tasks on the running Ray.

    Args:
        count: how many layers are compressed at once (the build's workers).
        num_cpus: CPUs each task reserves (its torch threads: `threads_for`).

    Returns:
        The executor for `CompressionDatabase.build` (or `Evaluator(executor=...)`); it yields
        (layer name, entry) in the order the layers finish.

    Raises:
        ValueError: a count below 1 or a non-positive CPU count.
    """
    if count < 1:
        raise ValueError(f"the build's workers must be at least 1, got {count}")
    if num_cpus <= 0:
        raise ValueError(f"num_cpus must be positive, got {num_cpus}")
    task = _compress_task.options(num_cpus=float(num_cpus), num_gpus=0)
    threads = threads_for(num_cpus)

    def run(root: Path, jobs: Iterable[LayerJob]) -> Iterator[tuple[str, dict[str, Any]]]:
        pending: dict[Any, str] = {}
        source = iter(jobs)
        try:
            while True:
                while len(pending) < count and (job := next(source, None)) is not None:
                    pending[task.remote(str(root), job, threads)] = job.name
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(ready[0])
                yield name, ray.get(ready[0])
        finally:  # a failed or abandoned build: the other layers' tasks are not waited for
            for ref in pending:
                ray.cancel(ref)

    logger.info("compressing the database's layers in %d Ray tasks at once (%g CPU each)", count, num_cpus)
    return run
