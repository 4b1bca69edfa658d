"""What a layer holds, in the terms a kernel cares about: its sparsity, its bits, its pattern."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from evaluators.evaluator import DENSE_BITS
from spaces import LevelScheme, MixedScheme, Space

#: Sparsity patterns a setting may name; "2:4" = at most two non-zeros in every four weights
#: along the input dimension (what 2:4 semi-structured kernels need).
STRUCTURES = ("2:4",)

__all__ = ["DENSE_BITS", "STRUCTURES", "LayerSetting", "kernel_settings", "layer_setting"]


@dataclass(frozen=True)
class LayerSetting:
    """One layer's compression, as the kernels see it.

    Attributes:
        sparsity: the fraction of zero weights, in [0, 1].
        bits: bits per weight (16 = not quantized).
        structure: the zeros' pattern when they follow one (see `STRUCTURES`), else None.
    """

    sparsity: float = 0.0
    bits: int = DENSE_BITS
    structure: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.sparsity <= 1.0:
            raise ValueError(f"LayerSetting sparsity must be in [0, 1], got {self.sparsity!r}")
        if not 1 <= self.bits <= DENSE_BITS:
            raise ValueError(f"LayerSetting bits must be in [1, {DENSE_BITS}], got {self.bits!r}")
        if self.structure is not None and self.structure not in STRUCTURES:
            raise ValueError(f"LayerSetting structure {self.structure!r} is not one of {STRUCTURES} or None")

    def to_dict(self) -> dict[str, float | int | str | None]:
        return {"sparsity": self.sparsity, "bits": self.bits, "structure": self.structure}


def kernel_settings(space: Space, profile: Mapping[str, int]) -> dict[str, LayerSetting]:
    """Per layer, what `profile` puts in it (see `layer_setting`): pruned counts become
    sparsities, bitwidth levels bits, N:M levels sparsities with their structure.

    Args:
        space: the search space the profile belongs to.
        profile: unit name -> level.

    Returns:
        Layer name -> `LayerSetting`, in the space's layer order.

    Raises:
        ValueError: the profile does not fit the space, or the scheme is "drop" (a dropped
            sub-block is skipped, not run by a faster kernel, so no kernel applies).

    Example:
        >>> from spaces import LayerInfo, SparsityScheme
        >>> space = Space([LayerInfo("h.0.mlp", (4, 8), 32, 0)], SparsityScheme(0.5))
        >>> kernel_settings(space, space.uniform())["h.0.mlp"].sparsity
        0.5
    """
    numel = {layer.name: layer.numel for layer in space.layers}
    return {
        name: layer_setting(space.scheme, numel[name], setting)
        for name, setting in space.layer_settings(profile).items()
    }


def layer_setting(scheme: LevelScheme, numel: int, setting: int) -> LayerSetting:
    """One layer's integer setting under `scheme` (see `LevelScheme.layer_settings`) as a
    `LayerSetting`: pruned weights become a sparsity, bits stay bits, and an N:M level of the
    mixed scheme becomes its sparsity with the "2:4" structure when its pattern is one (n <= 2
    of every 4: at most two non-zeros in every four); other patterns only count as sparse.

    Args:
        scheme: the space's (resolved) scheme.
        numel: the layer's number of weights.
        setting: the layer's integer setting.

    Raises:
        ValueError: the "drop" scheme, whose dropped sub-blocks no kernel runs.

    Example:
        >>> from spaces import MixedScheme
        >>> layer_setting(MixedScheme(0.5), 64, -32)
        LayerSetting(sparsity=0.5, bits=16, structure='2:4')
    """
    if isinstance(scheme, MixedScheme):
        pruned, patterned = MixedScheme.decode(setting)
        two_four = patterned and scheme.m == 4 and scheme.n <= 2
        return LayerSetting(sparsity=pruned / numel, structure="2:4" if two_four else None)
    if scheme.name == "sparsity":
        return LayerSetting(sparsity=setting / numel)
    if scheme.name == "bitwidth":
        return LayerSetting(bits=int(setting))
    raise ValueError(f"kernels model the 'sparsity', 'bitwidth' and 'mixed' schemes, not {scheme.name!r}")
