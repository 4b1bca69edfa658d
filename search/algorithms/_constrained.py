"""`ConstrainedSearch`: the queue of a search whose every profile meets an optional constraint.

Flat random search and the staged searches (EvoPress, successive-halving random search) share
this set-up: the constraint is checked to be reachable before anything is asked, and a
checkpoint records it, so a search resumes only under the constraint it was made with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from spaces import Space

from ._queue import QueueAlgorithm
from .constraint import Constraint, check_reachable, restore


class ConstrainedSearch(QueueAlgorithm):
    """A `QueueAlgorithm` with a config and a `constraint` (None: none) that its samples meet.

    Subclasses name their config dataclass (`config_class`, which has ``max_retries``) and set
    up their own state in `_setup`, so every such search is built the same way.

    Args:
        space: the search space.
        config: the parameters (None: `config_class`'s defaults).
        seed: seeds the algorithm's own random stream (and the reachability probe's).
        constraint: a limit on an additive estimate (e.g. latency).

    Raises:
        ConstraintError: a constraint no profile meets, or that uniform draws (nearly) never meet.
    """

    config_class: ClassVar[type[Any]]

    def __init__(self, space: Space, config: Any = None, seed: int = 0, constraint: Constraint | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        super().__init__(space, seed, self.config.max_retries)
        check_reachable(space, constraint, seed)
        self.constraint = constraint
        self._setup()

    def _setup(self) -> None:
        """The subclass's own state, once `config`, `space`, `rng` and `constraint` are set."""

    def _extra_state(self) -> dict[str, Any]:
        constraint = None if self.constraint is None else self.constraint.to_dict()
        return {**super()._extra_state(), "constraint": constraint}

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        super()._load_extra_state(state)
        restore(self.name, self.constraint, state.get("constraint"))
