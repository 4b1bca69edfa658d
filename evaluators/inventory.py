"""The layer inventory: compressible linear layers, keyed by module name, with their blocks."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from spaces import BitwidthScheme, LayerInfo, Space

from .config import CompressionSpec, ModelSpec
from .models import model_skeleton

# A transformer block's index in its module name: model.layers.3., encoder.layer.3., h.3., ...
_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")


def is_linear(module: nn.Module) -> bool:
    """nn.Linear, or GPT-2's Conv1D (a linear layer that stores its weight transposed)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def weight_view(module: nn.Module) -> torch.Tensor:
    """The weight as ``(out_features, in_features)``; a view, so writing into it updates the layer."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.data.t() if type(module).__name__ == "Conv1D" else weight.data


def _kind(name: str) -> str:
    return "attn" if re.search(r"attn|attention", name) else "mlp"


@dataclass(frozen=True)
class Inventory:
    """The layers a search may compress, and the modules behind them."""

    layers: tuple[LayerInfo, ...]
    modules: dict[str, nn.Module]

    def __len__(self) -> int:
        return len(self.layers)


def take_inventory(model: nn.Module, spec: CompressionSpec) -> Inventory:
    """Find the compressible layers of `model` under the spec's scheme and patterns.

    Only linear layers inside numbered transformer blocks count (embeddings and heads are left
    dense). For the drop scheme the units are sub-blocks, represented by their output projection
    (the last linear layer of the block's attention or MLP): zeroing it leaves only the residual.

    Raises:
        ValueError: nothing matches the include/exclude patterns.
    """
    found: list[tuple[str, nn.Module, int]] = []
    for name, module in model.named_modules():
        match = _BLOCK.search(name)
        if match and is_linear(module) and spec.selects(name):
            found.append((name, module, int(match.group(1))))
    if spec.scheme == "drop":
        last: dict[tuple[int, str], tuple[str, nn.Module, int]] = {}
        for entry in found:
            last[(entry[2], _kind(entry[0]))] = entry
        wanted = {"attn", "mlp"} if spec.drop_unit in ("block", "sub-block") else {spec.drop_unit}
        found = [entry for (_, kind), entry in last.items() if kind in wanted]
    if not found:
        raise ValueError(
            f"no compressible layer matches include={list(spec.include)} exclude={list(spec.exclude)}; "
            "patterns are fnmatch globs on module names such as 'model.layers.*.mlp.*'"
        )
    layers = []
    for name, module, block in found:
        shape = tuple(weight_view(module).shape)
        layers.append(LayerInfo(name, shape, shape[0] * shape[1], block, _kind(name)))
    return Inventory(tuple(layers), {name: module for name, module, _ in found})


def build_space(inventory: Inventory, spec: CompressionSpec, model_fingerprint: str) -> Space:
    """The search space of an inventory under the spec's scheme.

    For drop, the unit follows `drop_unit`: a whole block (its attention and MLP together), every
    attention and every MLP sub-block on its own (``sub-block``, EvoPress's depth setting), or
    only the attention (or only the MLP) sub-blocks. With `tie_fused` (by default for bitwidth),
    the projections serving engines fuse share a unit.

    Raises:
        ValueError: a bitwidth group size that does not fit some layer (`BitwidthScheme.group_problem`).
    """
    scheme = spec.level_scheme()
    problem = scheme.group_problem(inventory.layers) if isinstance(scheme, BitwidthScheme) else None
    if problem:
        raise ValueError(f"compression.levels.group_size: {problem}")
    return Space(inventory.layers, scheme, granularity=spec.space_granularity(), model=model_fingerprint)


def spec_layers(model: ModelSpec, compression: CompressionSpec) -> tuple[LayerInfo, ...] | None:
    """The layers a search of this spec would compress, from the model's config alone (no
    weights: `models.model_skeleton`), or None when the config is not on this machine.

    Raises:
        ValueError: nothing matches the include/exclude patterns.
    """
    skeleton = model_skeleton(model)
    return None if skeleton is None else take_inventory(skeleton, compression).layers
