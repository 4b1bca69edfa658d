"""Routing: which queued candidate an idle worker should take, as a distance between routes.

A route is the level array a task evaluates; a worker's route is the last one it ran. The pool
gives an idle worker the task at the smallest distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


class PrefixDistance:
    """The work a worker holding `a` does to evaluate `b`, for evaluators that reuse prefixes.

    An evaluator with a prefix cache (`evaluators.prefix`) runs only the blocks from the first one
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
