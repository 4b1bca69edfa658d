"""What a layer holds, in the terms a kernel cares about: its sparsity, its bits, its pattern."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from evaluators.evaluator import DENSE_BITS
from spaces import Space

#: Sparsity patterns a setting may name; "2:4" = at most two non-zeros in every four weights
#: along the input dimension (what 2:4 semi-structured kernels need).
STRUCTURES = ("2:4",)

__all__ = ["DENSE_BITS", "STRUCTURES", "LayerSetting", "kernel_settings"]


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
    """Per layer, what `profile` puts in it: the sparsity scheme's pruned counts become
    sparsities, the bitwidth scheme's levels become bits.

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
    scheme = space.scheme.name
    if scheme not in ("sparsity", "bitwidth"):
        raise ValueError(f"kernels model the 'sparsity' and 'bitwidth' schemes, not {scheme!r}")
    numel = {layer.name: layer.numel for layer in space.layers}
    settings = space.layer_settings(profile)
    if scheme == "sparsity":
        return {name: LayerSetting(sparsity=count / numel[name]) for name, count in settings.items()}
    return {name: LayerSetting(bits=int(bits)) for name, bits in settings.items()}
