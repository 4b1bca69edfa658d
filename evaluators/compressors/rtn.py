"""Round-to-nearest quantisation on a min-max grid, per group of input columns.

The grid for a group is {scale * (q - zero) : q = 0 .. 2^bits - 1}; its range always contains 0,
so zero weights (pruned or dead) stay exactly zero. GPTQ uses the same grid. Asymmetric (the
default) spans [min(w, 0), max(w, 0)]. Symmetric spans [-m, m] with m = max(|min|, |max|) and
fixes zero at 2^(bits-1), GPTQ's ``sym`` mode (IST-DASLab/gptq, quant.py, commit 0fbb4c8; there
a group with no negative value keeps its asymmetric range, here every group is symmetric), so
q - zero is a signed integer and no zero point is stored: compressed-tensors' symmetric int.

Example:
    >>> import torch
    >>> from evaluators.compressors import rtn_quantize
    >>> weight = torch.tensor([[-1.0, 0.1, 0.45, 2.0]])
    >>> rtn_quantize(weight, 2, group_size=-1)
    tensor([[-1.,  0.,  0.,  2.]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_bits, check_group_size, check_weight


def compute_dtype(weight: Tensor) -> torch.dtype:
    """float64 for float64 weights, float32 for every other float type."""
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


def fit_grid(w: Tensor, maxq: Tensor | float, symmetric: bool = False) -> tuple[Tensor, Tensor]:
    """Scale and zero point over the last dimension; `maxq` (2^bits - 1) may broadcast per batch."""
    xmin = w.amin(dim=-1, keepdim=True).clamp(max=0)
    xmax = w.amax(dim=-1, keepdim=True).clamp(min=0)
    if symmetric:
        xmax = torch.maximum(-xmin, xmax)
        xmin = -xmax
    span = xmax - xmin
    # An all-zero group has no range; any positive scale maps it to 0 exactly.
    scale = torch.where(span > 0, span / maxq, torch.ones_like(span))
    if symmetric:
        return scale, torch.zeros_like(scale) + (maxq + 1) / 2
    zero = torch.round(-xmin / scale)
    return scale, zero


def fake_quantize(w: Tensor, scale: Tensor, zero: Tensor, maxq: Tensor | float) -> Tensor:
    """Round onto the grid and map back: scale * (clamp(round(w / scale) + zero, 0, maxq) - zero)."""
    q = torch.clamp(torch.round(w / scale) + zero, min=0)
    q = torch.minimum(q, torch.as_tensor(maxq, dtype=w.dtype, device=w.device))
    return scale * (q - zero)


def quant_params(w_group: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Asymmetric min-max grid parameters for each row of a group.

    The range is [min(w, 0), max(w, 0)]; scale = range / (2^bits - 1) and zero = round(-min / scale),
    so zero is an integer in [0, 2^bits - 1]. An all-zero row gets scale 1 and zero 0.

    Args:
        w_group: (..., group) floating-point values; the grid is fitted over the last dimension.
        bits: bitwidth in 1..16.

    Returns:
        (scale, zero), each (..., 1) in w_group's dtype; zero holds integer values.

    Raises:
        ValueError: if bits is outside 1..16, or w_group is not a finite float tensor with at
            least one dimension and one column.
    """
    check_weight(w_group, matrix=False)
    bits = check_bits("bits", bits)
    if w_group.dim() == 0 or w_group.shape[-1] == 0:
        raise ValueError(f"w_group must have a non-empty last dimension, got shape {tuple(w_group.shape)}")
    return fit_grid(w_group.detach(), float(2**bits - 1))


def group_bounds(in_features: int, group_size: int) -> list[tuple[int, int]]:
    """Column ranges [start, stop) of the groups; -1 or a size >= in_features means one group."""
    if group_size == -1 or group_size >= in_features:
        return [(0, in_features)]
    return [(start, min(start + group_size, in_features)) for start in range(0, in_features, group_size)]


def rtn_quantize(weight: Tensor, bits: int, *, group_size: int = 128, symmetric: bool = False) -> Tensor:
    """Fake-quantise a weight by rounding each group of input columns to its own min-max grid.

    Args:
        weight: (out, in) floating-point weight.
        bits: bitwidth in 1..16.
        group_size: consecutive input columns sharing a grid in each row; -1 or >= in means one
            grid per row. A last group narrower than group_size is allowed.
        symmetric: zero fixed at 2^(bits-1), the range from max(|min|, |max|) (see the module).

    Returns:
        (out, in) quantised-then-dequantised weight in weight's dtype (computed in float32, or
        float64 for float64 weights).

    Raises:
        ValueError: if weight is not a finite 2-D float tensor, bits is outside 1..16, or
            group_size is neither -1 nor positive.
    """
    check_weight(weight)
    bits = check_bits("bits", bits)
    group_size = check_group_size(group_size)
    maxq = float(2**bits - 1)
    w = weight.detach().to(compute_dtype(weight))  # (out, in)
    out = torch.empty_like(w)
    if w.numel() == 0:
        return out.to(weight.dtype)
    for start, stop in group_bounds(w.shape[1], group_size):
        group = w[:, start:stop]  # (out, g)
        scale, zero = fit_grid(group, maxq, symmetric)  # (out, 1) each
        out[:, start:stop] = fake_quantize(group, scale, zero, maxq)
    return out.to(weight.dtype)
