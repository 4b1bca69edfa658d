"""`ConstrainedSearch`: the queue of a search whose every profile meets an optional constraint.

Flat random search and the staged searches (EvoPress, successive-halving random search) share
this set-up: the constraint is checked to be reachable before anything is asked, and a
checkpoint records it, so a search resumes only under the constraint it was made with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spaces import Space

from ._queue import QueueAlgorithm
from .constraint import Constraint, check_reachable, restore


class ConstrainedSearch(QueueAlgorithm):
    """A `QueueAlgorithm` with a `constraint` (None: none) that its subclasses' samples meet.

    Args:
        space: the search space.
        seed: seeds the algorithm's own random stream (and the reachability probe's).
        max_retries: how often one piece of work is retried after a failure.
        constraint: a limit on an additive estimate (e.g. latency).

    Raises:
        ConstraintError: a constraint no profile meets, or that uniform draws (nearly) never meet.
    """

    def __init__(self, space: Space, seed: int, max_retries: int, constraint: Constraint | None) -> None:
        super().__init__(space, seed, max_retries)
        check_reachable(space, constraint, seed)
        self.constraint = constraint

    def _extra_state(self) -> dict[str, Any]:
        constraint = None if self.constraint is None else self.constraint.to_dict()
        return {**super()._extra_state(), "constraint": constraint}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        super()._load_extra_state(state)
        restore(self.name, self.constraint, state.get("constraint"))
