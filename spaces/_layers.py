"""Compressible layers and the units a search assigns levels to."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class LayerInfo:
    """One compressible layer, keyed by its fully qualified module name.

    Args:
        name: the module name, e.g. ``"model.layers.3.mlp.down_proj"``.
        shape: the weight's shape, ``(out_features, in_features)`` for a linear layer.
        numel: the number of weights the scheme counts (normally ``prod(shape)``).
        block: the index of the transformer block the layer belongs to.
        kind: what the layer is inside its block (``"attn"``, ``"mlp"`` or ``"linear"``);
            depth schemes use it to drop attention and MLP sub-blocks separately.
    """

    name: str
    shape: tuple[int, ...]
    numel: int
    block: int
    kind: str = "linear"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("LayerInfo.name must be a non-empty module name")
        if self.numel <= 0:
            raise ValueError(f"LayerInfo {self.name!r}: numel must be positive, got {self.numel}")
        if self.shape and math.prod(self.shape) != self.numel:
            raise ValueError(f"LayerInfo {self.name!r}: numel {self.numel} does not match shape {self.shape}")
        if self.block < 0:
            raise ValueError(f"LayerInfo {self.name!r}: block must be >= 0, got {self.block}")


@dataclass(frozen=True)
class Unit:
    """What one level is assigned to: a single layer, projections an engine fuses, or a block.

    Args:
        name: the key in a profile (the module name, or the block's name).
        layers: the layers that share the unit's level.
    """

    name: str
    layers: tuple[LayerInfo, ...]

    @property
    def numel(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def block(self) -> int:
        return self.layers[0].block


GRANULARITIES = ("layer", "fused", "block")
#: Projections that serving engines (vLLM, SGLang) run as one fused matrix, by the last part of
#: their module names: a level is per fused matrix there, so ``"fused"`` granularity ties them.
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def make_units(layers: list[LayerInfo] | tuple[LayerInfo, ...], granularity: str) -> tuple[Unit, ...]:
    """Group layers into units: one per layer, one per fused projection, or one per block.

    ``"fused"`` is ``"layer"`` except that the projections a serving engine fuses (`FUSED`: q, k
    and v; gate and up) of one module share a unit, named after the first with the others' last
    name parts joined by ``+`` (``model.layers.0.self_attn.q_proj+k_proj+v_proj``). Block units
    are named ``block.<index>``. Layers keep the order they were given in.

    Raises:
        ValueError: an unknown granularity, no layers, or a repeated layer name.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r} is not one of {GRANULARITIES}")
    if not layers:
        raise ValueError("a space needs at least one layer; the inventory found none")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"layer names must be unique; repeated: {repeated}")
    if granularity == "layer":
        return tuple(Unit(layer.name, (layer,)) for layer in layers)
    if granularity == "fused":
        return _fused_units(layers)
    by_block: dict[int, list[LayerInfo]] = {}
    for layer in layers:
        by_block.setdefault(layer.block, []).append(layer)
    return tuple(Unit(f"block.{b}", tuple(members)) for b, members in sorted(by_block.items()))


def _fused_units(layers: list[LayerInfo] | tuple[LayerInfo, ...]) -> tuple[Unit, ...]:
    """One unit per layer, but one per fused group of projections of the same parent module."""
    groups: dict[tuple[str, int] | str, list[LayerInfo]] = {}
    for layer in layers:
        parent, _, leaf = layer.name.rpartition(".")
        fused = [k for k, group in enumerate(FUSED) if leaf in group]
        groups.setdefault((parent, fused[0]) if fused else layer.name, []).append(layer)
    units = []
    for members in groups.values():
        first, *rest = members
        name = "+".join([first.name, *(layer.name.rpartition(".")[2] for layer in rest)])
        units.append(Unit(name, tuple(members)))
    return tuple(units)
