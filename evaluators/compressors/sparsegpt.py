"""SparseGPT (Frantar & Alistarh, 2023): unstructured pruning with second-order error compensation.

Columns are swept left to right in blocks. At the start of a block the mask is chosen from the
block's current weights by w^2 / U_jj^2 (U the upper Cholesky factor of H^-1); then each column
is pruned and the error it leaves is pushed onto the columns to its right, inside the block at
once and onto later blocks lazily, in one matrix product per block. Every requested count is
swept in the same pass, as a batch, against one factorisation.

Counts are exact: each count is split over the column blocks in proportion to their widths
(largest remainder), and each block prunes exactly its share, its lowest scores.

Example:
    >>> import torch
    >>> from evaluators.compressors import sparsegpt_prune
    >>> generator = torch.Generator().manual_seed(0)
    >>> weight = torch.randn(8, 32, generator=generator)  # (out, in)
    >>> inputs = torch.randn(256, 32, generator=generator)  # (tokens, in)
    >>> half, most = sparsegpt_prune(weight, inputs.T @ inputs, [128, 200], blocksize=16)
    >>> int((half == 0).sum()), int((most == 0).sum())
    (128, 200)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._checks import check_int_list, check_weight
from ._hessian import Block, Problem, check_settings, sweep


def block_quotas(count: int, widths: Sequence[int]) -> list[int]:
    """Split `count` pruned weights over column blocks in proportion to their widths.

    Each block gets floor(count * width / total); the weights left over go one each to the
    blocks with the largest remainders, earlier blocks first on ties. No block gets more than
    rows * width when count <= rows * total.

    Args:
        count: total weights to prune, >= 0.
        widths: column count of each block, each > 0.

    Returns:
        Per-block counts, summing to `count`.
    """
    total = sum(widths)
    shares = [count * width // total for width in widths]
    remainders = [count * width % total for width in widths]
    left_over = count - sum(shares)
    by_remainder = sorted(range(len(widths)), key=lambda block: (-remainders[block], block))
    for block in by_remainder[:left_over]:
        shares[block] += 1
    return shares


def _nonzero_kept(levels: Tensor, swept: Tensor, mask: Tensor) -> Tensor:
    """Nudge kept weights that ended exactly at zero (or underflowed in the cast) off zero.

    A kept weight equal to 0 would count as pruned and break the level's exact count; the
    smallest normal number of the dtype, with the swept value's sign, is the nearest stand-in.
    """
    kept_zero = (levels == 0) & ~mask
    if not bool(kept_zero.any()):
        return levels
    signed_tiny = torch.full_like(levels, torch.finfo(levels.dtype).tiny).copysign(swept.to(levels.dtype))
    return torch.where(kept_zero, signed_tiny, levels)


@torch.no_grad()
def sparsegpt_prune(
    weight: Tensor,
    hessian: Tensor,
    counts: Sequence[int],
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> list[Tensor]:
    """Prune a linear layer's weight to several exact zero counts with SparseGPT.

    Dead inputs (zero diagonal: the input was 0 on every calibration token) get a unit diagonal
    and their weights count as free to prune: they are pruned before any live weight of their
    block, smaller |W| first; those a block's share does not reach keep their original value.

    Args:
        weight: (out, in) floating-point weight.
        hessian: (in, in) X^T X summed over calibration tokens (any positive scale).
        counts: weights to prune for each returned level, each in [0, out * in].
        blocksize: columns per block; the mask is chosen once per block.
        percdamp: dampening added to the diagonal, as a fraction of its mean.
        dtype: compute dtype, torch.float32 or torch.float64.

    Returns:
        One (out, in) pruned weight per count, in weight's dtype, each with exactly that many
        zeros.

    Raises:
        ValueError: on a non-finite or non-2-D weight, a hessian of the wrong shape or with
            non-finite entries, a count outside [0, out * in], blocksize < 1, negative percdamp,
            an unsupported dtype, or a Hessian that is not positive definite after dampening.
    """
    check_weight(weight)
    rows, cols = weight.shape
    counts = check_int_list("counts", counts, 0, rows * cols)
    settings = check_settings(hessian, cols, blocksize, percdamp, dtype)
    blocksize = settings.blocksize
    if not counts:
        return []
    if weight.numel() == 0:
        return [weight.detach().clone() for _ in counts]

    layer = Problem.factor(weight, hessian, settings)
    device, original, dead, U = weight.device, layer.original, layer.dead, layer.U  # (out, in), (in,), (in, in)
    levels = len(counts)
    W = layer.start(levels)  # (L, out, in)
    mask = torch.zeros((levels, rows, cols), dtype=torch.bool, device=device)  # (L, out, in)

    starts = list(range(0, cols, blocksize))
    widths = [min(blocksize, cols - start) for start in starts]
    quotas = torch.tensor([block_quotas(count, widths) for count in counts], device=device)  # (L, blocks)
    # Below every live score (>= 0) and ordered by |W|: pruning a dead weight costs nothing on the
    # calibration data, and among such weights magnitude is the only evidence left.
    dead_scores = -1.0 / (1.0 + original.abs())  # (out, in)

    def choose(block: Block) -> None:
        d = torch.diagonal(U[block.start : block.end, block.start : block.end])  # (B,)
        dead1 = dead[block.start : block.end]
        scores = torch.where(dead1, dead_scores[:, block.start : block.end], block.W.square() / d.square())
        # A stable sort ranks every score, so each level prunes exactly its quota, ties by index.
        order = torch.sort(scores.reshape(levels, -1), dim=1, stable=True).indices  # (L, out*B)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(order.shape[1], device=device).expand_as(order))
        index = block.start // blocksize
        width = block.end - block.start
        mask[:, :, block.start : block.end] = (ranks < quotas[:, index : index + 1]).reshape(levels, rows, width)

    sweep(W, U, blocksize, lambda block, i: block.W[:, :, i].masked_fill(mask[:, :, block.start + i], 0), choose)

    W = torch.where(dead & ~mask, original, W)
    pruned = _nonzero_kept(W.to(weight.dtype), W, mask)
    return [level.clone() for level in pruned]
