"""Input statistics of linear layers, gathered with forward hooks on the dense model.

Wanda needs each input column's squared norm; SparseGPT, GPTQ and the additive-error baseline
need the Hessian proxy H = X^T X. Hessians of a large model do not fit in memory at once, so the
blocks are processed in groups that fit `max_bytes`, one forward pass per group, each pass
stopped right after the group's last layer.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from spaces import LayerInfo

from .data import Batch
from .inventory import weight_view

logger = logging.getLogger(__name__)


@dataclass
class LayerStats:
    """Sums over the calibration tokens of one layer's inputs.

    Attributes:
        sq_norms: sum of x_j^2 per input column, shape (in,).
        hessian: sum of x x^T, shape (in, in), or None when not gathered.
        tokens: how many tokens were summed.
    """

    sq_norms: torch.Tensor
    hessian: torch.Tensor | None
    tokens: int


class _Stop(Exception):
    """Raised by a hook to end a forward pass once its group's last layer has run."""


def _groups(layers: Sequence[LayerInfo], hessian: bool, max_bytes: int) -> list[list[LayerInfo]]:
    """Consecutive blocks packed into groups whose Hessians fit `max_bytes` together."""
    by_block: dict[int, list[LayerInfo]] = {}
    for layer in layers:
        by_block.setdefault(layer.block, []).append(layer)
    groups: list[list[LayerInfo]] = []
    size = 0
    for members in by_block.values():
        cost = sum(layer.shape[1] ** 2 * 4 if hessian else layer.shape[1] * 4 for layer in members)
        if groups and size + cost <= max_bytes:
            groups[-1].extend(members)
            size += cost
        else:
            groups.append(list(members))
            size = cost
    return groups


def collect_stats(
    model: nn.Module,
    modules: dict[str, nn.Module],
    layers: Sequence[LayerInfo],
    batch: Batch,
    *,
    hessian: bool,
    chunk_rows: int = 8,
    max_bytes: int = 2 << 30,
) -> Iterator[dict[str, LayerStats]]:
    """Yield the statistics of `layers`, one dict per group of blocks.

    Padding tokens (attention mask 0) are left out. Statistics are float32 on the model's device.

    Args:
        model: the dense model.
        modules: module name -> module, for every name in `layers`.
        layers: which layers to gather for (any subset of the inventory).
        batch: the calibration tokens.
        hessian: also gather X^T X (else only the squared norms).
        chunk_rows: sequences per forward pass.
        max_bytes: the memory the statistics of one group may take.
    """
    device = next(model.parameters()).device
    for group in _groups(layers, hessian, max_bytes):
        gatherer = _Gatherer(group, hessian, device)
        handles = [modules[layer.name].register_forward_pre_hook(gatherer.hook(layer.name)) for layer in group]
        handles.append(modules[group[-1].name].register_forward_hook(_stop))
        try:
            with torch.no_grad():
                for chunk in batch.chunks(chunk_rows):
                    chunk = chunk.to(device)
                    gatherer.keep = chunk.attention_mask.reshape(-1).bool()
                    with contextlib.suppress(_Stop):
                        model(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask)
        finally:
            for handle in handles:
                handle.remove()
        logger.debug("gathered statistics of %d layers over %d tokens", len(group), batch.tokens)
        yield gatherer.stats


def _stop(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    raise _Stop


class _Gatherer:
    """Forward pre-hooks that add each layer's inputs (padding left out) to its statistics."""

    def __init__(self, group: Sequence[LayerInfo], hessian: bool, device: torch.device) -> None:
        self.keep = torch.ones(0, dtype=torch.bool)
        self.stats = {
            layer.name: LayerStats(
                torch.zeros(layer.shape[1], device=device),
                torch.zeros(layer.shape[1], layer.shape[1], device=device) if hessian else None,
                0,
            )
            for layer in group
        }

    def hook(self, name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        entry = self.stats[name]

        def gather(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            x = x.reshape(-1, x.shape[-1])  # (tokens, in)
            if self.keep.numel() == x.shape[0]:
                x = x[self.keep]
            x = x.float()
            entry.sq_norms += x.square().sum(0)
            if entry.hessian is not None:
                entry.hessian.addmm_(x.t(), x)
            entry.tokens += x.shape[0]

        return gather


def owl_outlier_ratios(
    modules: dict[str, nn.Module], layers: Sequence[LayerInfo], stats: dict[str, LayerStats], m: float
) -> dict[int, float]:
    """OWL's layer-wise outlier distribution: per block, the share of Wanda scores |W|*||X||
    above `m` times the block's mean score (as a fraction, not a percentage)."""
    scores: dict[int, list[torch.Tensor]] = {}
    for layer in layers:
        weight = weight_view(modules[layer.name]).float()
        score = weight.abs() * stats[layer.name].sq_norms.sqrt().unsqueeze(0)  # (out, in)
        scores.setdefault(layer.block, []).append(score.reshape(-1))
    ratios = {}
    for block, parts in scores.items():
        flat = torch.cat(parts)
        ratios[block] = float((flat > m * flat.mean()).float().mean())
    return ratios
