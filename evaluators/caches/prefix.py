"""Prefix reuse: keep each block's output for the profile the model holds, per minibatch.

A candidate that differs from the held profile first at block b needs blocks < b only for
their outputs, which are the same as before; so blocks < b are stood in for by their cached
outputs and only blocks >= b run. The reference implementation recomputes every block for
every candidate. The results are the same tensors a full forward gives (the same kernels on
the same inputs), and the memory is bounded: minibatches whose block outputs would exceed the
bound are simply forwarded in full.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Hashable, Iterator
from typing import Any

from torch import nn

_BLOCK = re.compile(r"^(.*?(?:^|\.)(?:layers|layer|h|blocks|block))\.(\d+)(?:\.|$)")


def find_blocks(model: nn.Module, layer_names: list[str]) -> list[nn.Module]:
    """The model's transformer blocks in order, found from a compressible layer's name.

    Raises:
        ValueError: the layer names do not sit in a numbered list of blocks.
    """
    for name in layer_names:
        match = _BLOCK.match(name)
        if match:
            container = model.get_submodule(match.group(1))
            if isinstance(container, nn.ModuleList):
                return list(container)
    raise ValueError(f"no numbered block list found above layers like {layer_names[:2]}")


class PrefixCache:
    """Block outputs of the held profile on the last minibatch forwarded.

    Args:
        blocks: the model's blocks, in order.
        max_bytes: the most the cached outputs of one minibatch may take.

    Usage: call `changed(block)` whenever a layer of `block` changes; wrap each chunk's
    forward in `replay(key, chunk)`; read `reused` for how many block passes were saved.
    """

    def __init__(self, blocks: list[nn.Module], max_bytes: int) -> None:
        self.blocks = blocks
        self.max_bytes = max_bytes
        self._key: Hashable | None = None
        self._outputs: dict[int, list[Any]] = {}  # chunk -> per-block outputs
        self._valid = 0  # leading blocks whose cached outputs hold for the model as it is
        self._pending = 0  # the valid prefix while a minibatch is being forwarded
        self.reused = 0
        self.computed = 0

    def changed(self, block: int) -> None:
        """A layer of `block` was rewritten: its output and every later one are stale."""
        self._valid = min(self._valid, block)

    def begin(self, key: Hashable, nbytes: int) -> None:
        """Start forwarding a minibatch; `nbytes` is what caching its block outputs would take."""
        if key != self._key or nbytes * len(self.blocks) > self.max_bytes:
            self._outputs, self._valid = {}, 0
            self._key = key if nbytes * len(self.blocks) <= self.max_bytes else None
        self._pending = self._valid

    def end(self) -> None:
        """Every chunk of the minibatch was forwarded: all blocks now match the held profile."""
        self._valid = len(self.blocks) if self._key is not None else 0

    @contextlib.contextmanager
    def replay(self, chunk: int) -> Iterator[None]:
        """Within this context the model skips the valid prefix of blocks for chunk `chunk`."""
        start = self._pending if chunk in self._outputs else 0
        outputs = self._outputs.setdefault(chunk, [None] * len(self.blocks)) if self._key is not None else None
        handles = []
        try:
            for index, block in enumerate(self.blocks):
                if index < start:
                    assert outputs is not None
                    block.forward = _stand_in(outputs[index])
                elif outputs is not None:
                    handles.append(block.register_forward_hook(_keeper(outputs, index)))
            self.reused += start
            self.computed += len(self.blocks) - start
            yield
        finally:
            for index in range(start):
                del self.blocks[index].forward
            for handle in handles:
                handle.remove()


def _stand_in(output: Any) -> Any:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return output

    return forward


def _keeper(outputs: list[Any], index: int) -> Any:
    def keep(module: nn.Module, args: Any, output: Any) -> None:
        outputs[index] = output

    return keep
