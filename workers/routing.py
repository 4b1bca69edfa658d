"""Routing: which queued task a free actor of the `WorkerPool` takes, by a distance between routes.

A route is what a task would have its actor hold (for evaluators: the level array it evaluates).
An actor that is free takes the queued task whose `route` is closest, by the pool's `distance`,
to the route of the last task it was given (for evaluators: the level array it holds, so it
rewrites the fewest layers); when several actors are free, the closest pair goes
first, among the actors with the fewest tasks in flight (an idle actor before a busy one's
second slot). A task without a route has no preference and counts as a perfect match anywhere (so
routed work never starves it); an actor without a last route takes what the others leave, in
queue order; without a `distance` the pool is plain first-in, first-out. Ties go to the earlier
task, then to the earlier actor. An actor that already failed a task gets it again only when no
other is free.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .tasks import PoolWorker, Task

#: The distance between two routes (what an actor holding the first does to run the second).
Distance = Callable[[Any, Any], float]
#: How good giving a task to an actor is, lower first: (already failed there, no route to
#: compare, distance, task order, actor order).
Rank = tuple[int, int, float, int, int]


def rank(worker: PoolWorker, task: Task, distance: Distance | None) -> Rank:
    """Sort key of giving `task` to `worker`: lower is better."""
    # Retrying on a worker that already failed the task is the last resort.
    tried = int(worker.name in task.failed_on)
    if distance is None or task.route is None:  # plain queue order; no route: no preference
        return (tried, 0, 0.0, task.seq, worker.order)
    if worker.last_route is None:  # a fresh actor switches everything anyway: it takes leftovers
        return (tried, 1, 0.0, task.seq, worker.order)
    return (tried, 0, float(distance(worker.last_route, task.route)), task.seq, worker.order)


def rank_tasks(worker: PoolWorker, tasks: Iterable[Task], distance: Distance | None) -> dict[Hashable, Rank]:
    """Task key -> `rank` of giving it to `worker`."""
    return {task.key: rank(worker, task, distance) for task in tasks}


def pick(
    slots: Mapping[PoolWorker, int], ranks: Mapping[PoolWorker, Mapping[Hashable, Rank]]
) -> tuple[PoolWorker, Hashable]:
    """The (actor, task key) pair to send next, among the actors with free slots.

    After the retry rule, an actor with fewer tasks goes first: a second task queued behind a
    running one while another actor idles leaves that one idle at a stage's end.
    """
    *_, worker, key = min(
        ((r[0], len(worker.flights), r, worker, key) for worker in slots for key, r in ranks[worker].items()),
        key=lambda item: item[:3],  # ranks are unique: they end in (task seq, worker order)
    )
    return worker, key


def dispatch(
    workers: Sequence[PoolWorker],
    queue: dict[Hashable, Task],
    distance: Distance | None,
    per_actor: int,
    send: Callable[[PoolWorker, Task], None],
) -> None:
    """Send queued tasks to the live actors with fewer than `per_actor` in flight, best pair first
    (`pick`), until the slots or the queue run out; sent tasks leave `queue`."""
    slots = {w: per_actor - len(w.flights) for w in workers if w.alive and len(w.flights) < per_actor}
    # A matrix of ranks, recomputed only for the worker that just took a task (its last
    # route changed): distances are the expensive part.
    ranks = {worker: rank_tasks(worker, queue.values(), distance) for worker in slots}
    while slots and queue:
        worker, key = pick(slots, ranks)
        task = queue.pop(key)
        send(worker, task)
        for other in slots:
            ranks[other].pop(key, None)
        slots[worker] -= 1
        if slots[worker] == 0:
            del slots[worker]
        elif task.route is not None:
            ranks[worker] = rank_tasks(worker, queue.values(), distance)


class PrefixDistance:
    """The work a worker holding `a` does to evaluate `b`, for evaluators that reuse prefixes.

    An evaluator with a prefix cache (`evaluators.caches.prefix`) runs only the blocks from the first one
    where the profiles differ, so that is what counts first; the number of layers to rewrite
    breaks ties.

    Args:
        unit_blocks: the block of each unit, in unit order.

    Example:
        >>> distance = PrefixDistance([0, 0, 1, 1, 2, 2])
        >>> distance([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, -1]) < distance([0, 0, 0, 0, 0, 0], [1, -1, 0, 0, 0, 0])
        True
    """

    def __init__(self, unit_blocks: Sequence[int]) -> None:
        self.blocks = np.asarray(unit_blocks, dtype=np.int64)
        self.count = int(self.blocks.max()) + 1 if self.blocks.size else 0

    def __call__(self, a: Sequence[int] | npt.NDArray[Any], b: Sequence[int] | npt.NDArray[Any]) -> int:
        left, right = np.asarray(a), np.asarray(b)
        if left.shape != right.shape or left.shape != self.blocks.shape:
            raise ValueError(f"level arrays of shapes {left.shape} and {right.shape}; expected {self.blocks.shape}")
        differ = np.nonzero(left != right)[0]
        if differ.size == 0:
            return 0
        blocks_to_run = self.count - int(self.blocks[differ].min())
        return blocks_to_run * (self.blocks.size + 1) + int(differ.size)
