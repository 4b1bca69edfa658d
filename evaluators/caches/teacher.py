"""A bounded cache of the dense model's outputs per minibatch.

Every candidate of a stage shares one minibatch, so the dense outputs are computed once per
stage and reused. Entries are evicted least-recently-used when their total size would pass
`max_bytes`; a single entry larger than the bound is still computed but not kept, so memory never
exceeds max(max_bytes, one minibatch's outputs).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class TeacherCache(Generic[T]):
    """LRU by bytes: `get(key, compute)` returns the cached value or computes and keeps it.

    Args:
        max_bytes: the bound on the bytes kept.
        size: how many bytes a value takes.
    """

    def __init__(self, max_bytes: int, size: Callable[[T], int]) -> None:
        self.max_bytes = max_bytes
        self._size = size
        self._entries: OrderedDict[Hashable, tuple[T, int]] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key][0]
        self.misses += 1
        value = compute()
        nbytes = self._size(value)
        if nbytes <= self.max_bytes:
            while self.bytes + nbytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self.bytes -= dropped
            self._entries[key] = (value, nbytes)
            self.bytes += nbytes
        return value

    def __len__(self) -> int:
        return len(self._entries)
