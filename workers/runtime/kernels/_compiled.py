"""`torch.compile` of a stitched model whose weights are swapped in place, never recompiled.

The Evaluator switches layers by writing into the weights (``copy_``, ``torch.where(out=)``),
which keeps every parameter the same tensor: the compiled graph takes parameters as inputs,
so a swap needs no recompilation. Two things would silently lose the compiled code, and both
are turned into errors here:

- a recompilation after the warm-up (a weight *replaced* rather than written into, a change of
  grad mode or dtype): each input signature compiles once, later calls run under
  `torch.compiler.set_stance("fail_on_recompile")`;
- more input signatures than dynamo's recompile limit, after which dynamo runs the model
  eagerly without a word.

``freezing=True`` is never used: it folds the weights into the graph as constants, so a swap
would not be seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import nn

logger = logging.getLogger(__name__)


class RecompileError(RuntimeError):
    """A compiled model was about to recompile, or to fall back to eager mode."""


def _signature(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    def describe(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return (tuple(value.shape), value.dtype, value.device.type)
        return repr(value)

    named = tuple(sorted((key, describe(value)) for key, value in kwargs.items()))
    return (tuple(describe(a) for a in args), named, torch.is_grad_enabled())


class CompiledModel:
    """A model compiled once per input signature, whose weights may change in place.

    Args:
        model: the model; it stays the owner of its parameters, so writes into them (the
            Evaluator's switching, `load_`) reach the compiled code.
        fullgraph: refuse graph breaks (each would run its part eagerly).
        max_signatures: input signatures allowed; default dynamo's recompile limit, beyond
            which dynamo would fall back to eager mode.

    Raises:
        RecompileError: (from calls) a call would recompile a signature already compiled, or
            compile more signatures than allowed.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8)).eval()
        >>> compiled = CompiledModel(model)  # doctest: +SKIP
        >>> with torch.no_grad():  # doctest: +SKIP
        ...     y = compiled(torch.randn(2, 8))
        ...     compiled.load_({"0.weight": torch.zeros(8, 8)})
        ...     y = compiled(torch.randn(2, 8))  # the same graph, the new weight
        >>> compiled.graphs  # doctest: +SKIP
        1
    """

    def __init__(self, model: nn.Module, *, fullgraph: bool = True, max_signatures: int | None = None) -> None:
        limit = int(torch._dynamo.config.recompile_limit)
        self.model = model
        self.max_signatures = limit if max_signatures is None else max_signatures
        if not 1 <= self.max_signatures <= limit:
            raise ValueError(f"max_signatures must be in [1, {limit}] (dynamo's recompile limit), got {max_signatures}")
        #: graphs handed to inductor so far (one per signature with fullgraph)
        self.graphs = 0
        self._signatures: set[tuple[Any, ...]] = set()
        self._compiled: Callable[..., Any] = torch.compile(
            model, backend=self._count, fullgraph=fullgraph, dynamic=False
        )

    def _count(self, graph: torch.fx.GraphModule, example_inputs: list[torch.Tensor]) -> Callable[..., Any]:
        # A custom backend sees every graph dynamo compiles; it hands each to inductor, which
        # is what backend="inductor" would do.
        from torch._inductor.compile_fx import compile_fx

        self.graphs += 1
        logger.info("compiling graph %d (%d inputs)", self.graphs, len(example_inputs))
        # compile_fx's annotation covers its other modes; for a graph it returns a callable
        return cast(Callable[..., Any], compile_fx(graph, example_inputs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        signature = _signature(args, kwargs)
        if signature in self._signatures:
            try:
                with torch.compiler.set_stance("fail_on_recompile"):
                    return self._compiled(*args, **kwargs)
            except RuntimeError as exc:
                if "fail_on_recompile" not in str(exc):
                    raise
                raise RecompileError(
                    "the compiled model would recompile for inputs it was compiled for: something else changed "
                    f"(a parameter replaced instead of written into with copy_?): {exc}"
                ) from exc
        if len(self._signatures) >= self.max_signatures:
            raise RecompileError(
                f"a new input signature after {len(self._signatures)}; more would exceed the limit "
                f"{self.max_signatures}, past which dynamo silently runs eagerly (use fixed input shapes)"
            )
        out = self._compiled(*args, **kwargs)
        self._signatures.add(signature)
        return out

    def load_(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Write new values into named parameters or buffers (``copy_``), keeping the tensors.

        Raises:
            ValueError: a name the model does not have, or a shape that differs.
        """
        tensors = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        with torch.no_grad():
            for name, value in weights.items():
                if name not in tensors:
                    raise ValueError(f"the compiled model has no parameter or buffer {name!r}")
                if tuple(value.shape) != tuple(tensors[name].shape):
                    raise ValueError(f"{name!r}: shape {tuple(value.shape)} != {tuple(tensors[name].shape)}")
                tensors[name].copy_(value)
