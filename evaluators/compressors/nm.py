"""N:M pruning: keep `n` of every `m` consecutive input weights in each output row.

Magnitude and Wanda give a keep-mask from a score per weight (|W|, and |W_ij| * ||X_j||_2).
SparseGPT's N:M variant (Frantar & Alistarh, 2023, section "Semi-structured N:M sparsity")
sweeps the columns as the unstructured one does, pushing each pruned column's error onto the
columns to its right, but chooses the mask of a group of `m` columns only when the sweep reaches
the group, from the weights as updated so far: in each row, the m - n smallest
w^2 / [U]_jj^2 of the group are pruned (U the upper Cholesky factor of H^-1).

Example:
    >>> import torch
    >>> weight = torch.tensor([[0.1, -3.0, 2.0, 0.5], [4.0, 0.2, -0.3, 1.0]])
    >>> magnitude_nm_mask(weight, 2, 4)
    tensor([[False,  True,  True, False],
            [ True, False, False,  True]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_int, check_weight
from ._hessian import Block, Problem, check_settings, sweep
from .sparsegpt import _nonzero_kept


def _check_pattern(weight: Tensor, n: int, m: int) -> tuple[int, int]:
    check_weight(weight)
    m = check_int("m", m, 2)
    n = check_int("n", n, 1, m - 1)
    if weight.shape[1] % m:
        raise ValueError(f"an {n}:{m} pattern needs in_features divisible by {m}, got {weight.shape[1]}")
    return n, m


def nm_mask(scores: Tensor, n: int, m: int) -> Tensor:
    """Keep the `n` largest scores of every `m` consecutive columns, row by row.

    Args:
        scores: (out, in) importance of each weight; in_features divisible by `m`.
        n: weights kept per group.
        m: the group length.

    Returns:
        (out, in) bool, True where a weight is kept; ties keep the lower column.

    Raises:
        ValueError: non-finite or non-2-D scores, 1 <= n < m violated, or in_features not
            divisible by m.
    """
    n, m = _check_pattern(scores, n, m)
    rows, cols = scores.shape
    groups = scores.detach().reshape(rows, cols // m, m)  # (out, groups, m)
    kept = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., :n]  # (out, groups, n)
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device).scatter_(-1, kept, True)
    return mask.reshape(rows, cols)


def magnitude_nm_mask(weight: Tensor, n: int, m: int) -> Tensor:
    """The N:M keep-mask of the largest |W| (see `nm_mask`)."""
    check_weight(weight)
    return nm_mask(weight.detach().abs().float(), n, m)


def wanda_nm_mask(weight: Tensor, input_sq_norms: Tensor, n: int, m: int) -> Tensor:
    """The N:M keep-mask of the largest Wanda scores |W_ij| * ||X_j||_2 (see `nm_mask`).

    Args:
        weight: (out, in) weight.
        input_sq_norms: (in,) sum over calibration tokens of x_j^2.
        n: weights kept per group.
        m: the group length.

    Raises:
        ValueError: as `nm_mask`, or norms that are not a finite, non-negative (in,) tensor.
    """
    check_weight(weight)
    cols = weight.shape[1]
    if not isinstance(input_sq_norms, Tensor) or tuple(input_sq_norms.shape) != (cols,):
        raise ValueError(f"input_sq_norms must have shape (in_features,) = ({cols},)")
    if not bool(torch.isfinite(input_sq_norms).all()) or bool((input_sq_norms < 0).any()):
        raise ValueError("input_sq_norms must be finite and >= 0 (sums of squared inputs)")
    norms = input_sq_norms.detach().to(weight.device, torch.float32).sqrt()  # (in,)
    return nm_mask(weight.detach().float().abs() * norms, n, m)


@torch.no_grad()
def sparsegpt_nm_prune(
    weight: Tensor,
    hessian: Tensor,
    n: int,
    m: int,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Prune a linear layer to an N:M pattern with SparseGPT's error compensation.

    Dead inputs (zero Hessian diagonal) are pruned first within their group, smaller |W| first,
    as in `sparsegpt_prune`; a dead weight the pattern keeps keeps its original value.

    Args:
        weight: (out, in) weight, in_features divisible by `m`.
        hessian: (in, in) X^T X summed over calibration tokens.
        n: weights kept per group of `m` consecutive inputs.
        m: the group length.
        blocksize: columns per lazy-update block; a multiple of `m`, so no group straddles two.
        percdamp: dampening added to the diagonal, as a fraction of its mean.
        dtype: compute dtype, torch.float32 or torch.float64.

    Returns:
        The (out, in) pruned weight in weight's dtype: exactly m - n zeros in every group.

    Raises:
        ValueError: bad shapes or values (as `sparsegpt_prune`), 1 <= n < m violated, in_features
            or blocksize not divisible by m.
    """
    n, m = _check_pattern(weight, n, m)
    rows, cols = weight.shape
    settings = check_settings(hessian, cols, blocksize, percdamp, dtype)
    if settings.blocksize % m:
        raise ValueError(f"blocksize must be a multiple of m = {m}, got {settings.blocksize}")

    layer = Problem.factor(weight, hessian, settings)
    original, dead, U = layer.original, layer.dead, layer.U  # (out, in), (in,), (in, in)
    W = layer.start(1)[0]  # (out, in)
    mask = torch.zeros((rows, cols), dtype=torch.bool, device=weight.device)  # True = pruned
    dead_scores = -1.0 / (1.0 + original.abs())  # below every live score, ordered by |W|

    def compress(block: Block, i: int) -> Tensor:
        column = block.start + i
        if i % m == 0:  # the sweep reaches a group: choose its mask from the updated weights
            d = torch.diagonal(U)[column : column + m]  # (m,)
            live = block.W[0, :, i : i + m].square() / d.square()  # (out, m)
            scores = torch.where(dead[column : column + m], dead_scores[:, column : column + m], live)
            pruned = torch.sort(scores, dim=1, stable=True).indices[:, : m - n]  # (out, m - n)
            mask[:, column : column + m].scatter_(1, pruned, True)
        return block.W[:, :, i].masked_fill(mask[:, column], 0)  # (1, out)

    sweep(W.unsqueeze(0), U, settings.blocksize, compress)  # one level: a view, so W is swept in place

    W = torch.where(dead & ~mask, original, W)
    return _nonzero_kept(W.to(weight.dtype), W, mask)


def nm_weight(stored: Tensor, dense: Tensor) -> Tensor:
    """A stored N:M level as a weight: a keep-mask (magnitude, Wanda) applied to the dense weight,
    or the pruned weight itself (SparseGPT).

    Args:
        stored: (out, in) bool keep-mask, or (out, in) weight.
        dense: (out, in) dense weight.

    Returns:
        The (out, in) weight of the level, on `dense`'s device.
    """
    if stored.dtype == torch.bool:
        return torch.where(stored.to(dense.device), dense, torch.zeros((), dtype=dense.dtype, device=dense.device))
    return stored.to(dense.device, dense.dtype)
