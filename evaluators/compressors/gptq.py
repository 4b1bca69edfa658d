"""GPTQ (Frantar et al., 2022): quantisation with second-order error compensation, no act-order.

The same left-to-right column sweep as SparseGPT, rounding each column onto its group's grid
instead of masking it. A group's grid is fitted when the sweep reaches the group's first
column, from the weights as they are then, with every earlier column's error already applied.
Every requested bitwidth is swept in the same pass, as a batch, against one factorisation.

Example:
    >>> import torch
    >>> from evaluators.compressors import gptq_quantize
    >>> generator = torch.Generator().manual_seed(0)
    >>> weight = torch.randn(8, 32, generator=generator)  # (out, in)
    >>> inputs = torch.randn(256, 32, generator=generator)  # (tokens, in)
    >>> three, four = gptq_quantize(weight, inputs.T @ inputs, [3, 4], group_size=-1, blocksize=8)
    >>> max(len(row.unique()) for row in three) <= 2**3
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import (
    check_group_size,
    check_int_list,
    check_weight,
)
from ._hessian import Block, Problem, check_settings, sweep
from .rtn import fake_quantize, fit_grid


@torch.no_grad()
def gptq_quantize(
    weight: Tensor,
    hessian: Tensor,
    bits_list: Sequence[int],
    *,
    group_size: int = 128,
    blocksize: int = 128,
    percdamp: float = 0.01,
    dtype: torch.dtype = torch.float32,
    symmetric: bool = False,
) -> list[Tensor]:
    """Quantise a linear layer's weight to several bitwidths with GPTQ.

    The grid is RTN's min-max grid per row and group of input columns (asymmetric, or symmetric). Weights of
    dead inputs (zero diagonal: the input was 0 on every calibration token) are set to 0.

    Args:
        weight: (out, in) floating-point weight.
        hessian: (in, in) X^T X summed over calibration tokens (any positive scale).
        bits_list: bitwidth of each returned level, each in 1..16.
        group_size: consecutive input columns sharing a grid in each row; -1 or >= in means one
            grid per row. Groups need not align with blocks.
        blocksize: columns per lazy-update block.
        percdamp: dampening added to the diagonal, as a fraction of its mean.
        dtype: compute dtype, torch.float32 or torch.float64.
        symmetric: RTN's symmetric grid (`evaluators.compressors.rtn`), GPTQ's ``sym`` mode.

    Returns:
        One (out, in) fake-quantised (quantised, then dequantised) weight per bitwidth, in
        weight's dtype.

    Raises:
        ValueError: on a non-finite or non-2-D weight, a hessian of the wrong shape or with
            non-finite entries, bits outside 1..16, a group_size that is neither -1 nor positive,
            blocksize < 1, negative percdamp, an unsupported dtype, or a Hessian that is not
            positive definite after dampening.
    """
    check_weight(weight)
    cols = weight.shape[1]
    bits = check_int_list("bits_list", bits_list, 1, 16)
    group_size = check_group_size(group_size)
    settings = check_settings(hessian, cols, blocksize, percdamp, dtype)
    if not bits:
        return []
    if weight.numel() == 0:
        return [weight.detach().clone() for _ in bits]

    layer = Problem.factor(weight, hessian, settings)
    U = layer.U  # (in, in)
    maxq = torch.tensor([2**b - 1 for b in bits], dtype=dtype, device=weight.device).unsqueeze(1)  # (L, 1)
    W = layer.start(len(bits))  # (L, out, in)
    group = cols if group_size == -1 else min(group_size, cols)
    grid: dict[str, Tensor] = {}  # the current group's scale and zero, (L, out, 1) each

    def compress(block: Block, i: int) -> Tensor:
        column = block.start + i
        if column % group == 0:
            g2 = min(column + group, cols)
            members = block.W[:, :, i : g2 - block.start]  # (L, out, <= group)
            if g2 > block.end:
                # Columns past this block have not yet received the lazy update from this
                # block's columns before `column`; fitting on stale values would not match
                # the weights the sweep will actually round.
                later = W[:, :, block.end : g2] - block.errors[:, :, :i] @ U[block.start : column, block.end : g2]
                members = torch.cat([members, later], dim=2)
            grid["scale"], grid["zero"] = fit_grid(members, maxq.unsqueeze(2), symmetric)
        # column 0 always starts a group, so the grid is set
        return fake_quantize(block.W[:, :, i], grid["scale"][:, :, 0], grid["zero"][:, :, 0], maxq)

    sweep(W, U, settings.blocksize, compress)

    quantised = W.to(weight.dtype)
    return [level.clone() for level in quantised]
