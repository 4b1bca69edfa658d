"""Nested pruning orders: magnitude and Wanda rankings, and applying a prefix of one.

A ranking is a permutation of `weight.flatten()`'s indices, least important first. Pruning its
first k entries gives a level with k pruned weights, and the level for k+1 contains the one for k, so a
single ranking serves every sparsity level of a layer.

Example:
    >>> import torch
    >>> from evaluators.compressors import apply_ranking, wanda_ranking
    >>> weight = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -0.5]])
    >>> ranking = wanda_ranking(weight, torch.tensor([1.0, 1.0, 4.0]))
    >>> apply_ranking(weight, ranking, 2)
    tensor([[ 0., -2.,  3.],
            [ 4.,  5.,  0.]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_int, check_weight


def _score_dtype(*tensors: Tensor) -> torch.dtype:
    # Half-precision scores tie far more often, which would make the order depend on index alone.
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def magnitude_ranking(weight: Tensor) -> Tensor:
    """Order a layer's weights by |W|, smallest first.

    Ties keep flat-index order (a stable sort), so the ranking is deterministic. Weights that are
    already zero come first, so a prefix of length k leaves max(k, zeros already there) zeros.

    Args:
        weight: any-shape floating-point tensor, usually (out, in).

    Returns:
        (numel,) int64 flat indices into `weight.flatten()`, least important first.

    Raises:
        ValueError: if weight is not floating point or has non-finite entries.
    """
    check_weight(weight, matrix=False)
    scores = weight.detach().flatten().abs().to(_score_dtype(weight))  # (numel,)
    return torch.sort(scores, stable=True).indices


def wanda_ranking(weight: Tensor, input_sq_norms: Tensor) -> Tensor:
    """Order a layer's weights by the Wanda score |W_ij| * ||X_j||_2, compared within each row.

    Rows are interleaved: the j-th weakest weight of row r sits at position j*R + r (R rows), so
    any prefix of length k prunes floor(k/R) + [r < k mod R] weights in row r, each row's
    lowest-scoring ones. Ties within a row keep column order.

    Args:
        weight: (out, in) floating-point weight.
        input_sq_norms: (in,) sum over calibration tokens of x_j^2; its square root is ||X_j||_2.

    Returns:
        (out * in,) int64 flat indices into `weight.flatten()`, least important first.

    Raises:
        ValueError: if weight is not a finite 2-D float tensor, or input_sq_norms does not have
            shape (in,) or has a negative or non-finite entry.
    """
    check_weight(weight)
    rows, cols = weight.shape
    if not isinstance(input_sq_norms, Tensor) or tuple(input_sq_norms.shape) != (cols,):
        shape = tuple(input_sq_norms.shape) if isinstance(input_sq_norms, Tensor) else type(input_sq_norms).__name__
        raise ValueError(f"input_sq_norms must have shape (in_features,) = ({cols},), got {shape}")
    if not bool(torch.isfinite(input_sq_norms).all()) or bool((input_sq_norms < 0).any()):
        raise ValueError("input_sq_norms must be finite and >= 0 (sums of squared inputs)")
    dtype = _score_dtype(weight, input_sq_norms)
    norms = input_sq_norms.detach().to(device=weight.device, dtype=dtype).sqrt()  # (in,)
    scores = weight.detach().to(dtype).abs() * norms  # (out, in)
    order = torch.sort(scores, dim=1, stable=True).indices  # (out, in) column indices
    row_offsets = torch.arange(rows, device=weight.device).unsqueeze(1) * cols  # (out, 1)
    # Transposing before flattening puts the j-th weakest of row r at j*R + r.
    return (order + row_offsets).t().flatten()


def apply_ranking(weight: Tensor, ranking: Tensor, k: int) -> Tensor:
    """Zero the first k entries of a ranking.

    Args:
        weight: any-shape tensor the ranking was computed for.
        ranking: (m,) integer flat indices into `weight.flatten()`, as returned by
            `magnitude_ranking` or `wanda_ranking`, or a prefix of such a ranking (m <= numel).
        k: how many entries to prune, in [0, m].

    Returns:
        A new contiguous tensor shaped and typed like weight, with those k entries set to 0.

    Raises:
        ValueError: if ranking is not a 1-D integer tensor with at most numel entries, or k is
            outside [0, m].
    """
    numel = weight.numel()
    if not isinstance(ranking, Tensor) or ranking.dim() != 1 or ranking.numel() > numel:
        shape = tuple(ranking.shape) if isinstance(ranking, Tensor) else type(ranking).__name__
        raise ValueError(f"ranking must be a 1-D tensor with at most weight.numel() = {numel} entries, got {shape}")
    if ranking.is_floating_point() or ranking.is_complex() or ranking.dtype == torch.bool:
        raise ValueError(f"ranking must hold integer indices, got dtype {ranking.dtype}")
    count = check_int("k", k, 0, ranking.numel())
    pruned = weight.detach().clone(memory_format=torch.contiguous_format)
    pruned.view(-1)[ranking[:count].to(device=weight.device, dtype=torch.int64)] = 0
    return pruned
