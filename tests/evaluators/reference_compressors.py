"""Slow, literal SparseGPT and GPTQ, for checking the fast versions on small layers only.

Everything is float64 and follows the optimal-brain-surgeon derivation directly: an explicit
inverse Hessian, a full-row update after every column, and the column's row and column removed
from the inverse by a Schur complement. No Cholesky factor, no blocks of lazy updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import torch
from torch import Tensor


def _prepare(weight: Tensor, hessian: Tensor, percdamp: float) -> tuple[Tensor, Tensor]:
    """Working weight (dead columns zeroed) and the explicit inverse of the damped Hessian."""
    H = hessian.double().clone()
    W = weight.double().clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H = H + percdamp * torch.diagonal(H).mean() * torch.eye(H.shape[0], dtype=torch.float64)
    return W, torch.linalg.inv(H)


def _drop_first(H_inv: Tensor) -> Tensor:
    """Inverse Hessian of the remaining columns once the first one is fixed (Schur complement)."""
    return H_inv[1:, 1:] - torch.outer(H_inv[1:, 0], H_inv[0, 1:]) / H_inv[0, 0]


def _obs_step(W: Tensor, column: int, target: Tensor, H_inv: Tensor) -> None:
    """Set W[:, column] to target and move the others to minimise the output error."""
    err = (W[:, column] - target) / H_inv[0, 0]
    W[:, column:] -= torch.outer(err, H_inv[0, :])
    W[:, column] = target


def _split(count: int, widths: Sequence[int]) -> list[int]:
    total = sum(widths)
    exact = [Fraction(count * width, total) for width in widths]
    shares = [int(value) for value in exact]
    by_fraction = sorted(range(len(widths)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_fraction[: count - sum(shares)]:
        shares[i] += 1
    return shares


def reference_sparsegpt(weight: Tensor, hessian: Tensor, count: int, blocksize: int, percdamp: float = 0.01) -> Tensor:
    """SparseGPT with the mask chosen per block of columns; returns the float64 pruned weight."""
    W, H_inv = _prepare(weight, hessian, percdamp)
    rows, cols = W.shape
    # The inverse-Hessian diagonal each column will see when the sweep reaches it.
    seen_diag = []
    remaining = H_inv
    for _ in range(cols):
        seen_diag.append(float(remaining[0, 0]))
        remaining = _drop_first(remaining)

    starts = list(range(0, cols, blocksize))
    quotas = _split(count, [min(blocksize, cols - start) for start in starts])
    mask = torch.zeros_like(W, dtype=torch.bool)
    remaining = H_inv
    for column in range(cols):
        if column % blocksize == 0:
            stop = min(column + blocksize, cols)
            quota = quotas[column // blocksize]
            entries = [
                (float(W[r, c]) ** 2 / seen_diag[c], r * (stop - column) + (c - column), r, c)
                for r in range(rows)
                for c in range(column, stop)
            ]
            for _, _, r, c in sorted(entries)[:quota]:
                mask[r, c] = True
        target = torch.where(mask[:, column], 0.0, W[:, column])
        _obs_step(W, column, target, remaining)
        remaining = _drop_first(remaining)
    return W


def _grid(values: Tensor, bits: int, symmetric: bool = False) -> tuple[Tensor, Tensor]:
    """Per-row scale and zero of the min-max grid that includes 0 (symmetric: of [-m, m] with m the
    largest magnitude, zero at 2^(bits-1), as IST-DASLab/gptq's quant.py at 0fbb4c8 with sym)."""
    maxq = 2**bits - 1
    low = torch.clamp(values.min(dim=1).values, max=0.0)
    high = torch.clamp(values.max(dim=1).values, min=0.0)
    if symmetric:
        high = values.abs().max(dim=1).values
        low = -high
    scale = (high - low) / maxq
    scale[high == low] = 1.0
    zero = torch.full_like(scale, (maxq + 1) / 2) if symmetric else torch.round(-low / scale)
    return scale, zero


def reference_gptq(
    weight: Tensor, hessian: Tensor, bits: int, group_size: int, percdamp: float = 0.01, symmetric: bool = False
) -> Tensor:
    """GPTQ without act-order, grids refitted at each group start; returns the float64 weight."""
    W, H_inv = _prepare(weight, hessian, percdamp)
    cols = W.shape[1]
    group = cols if group_size == -1 else min(group_size, cols)
    maxq = 2**bits - 1
    remaining = H_inv
    for column in range(cols):
        if column % group == 0:
            scale, zero = _grid(W[:, column : column + group], bits, symmetric)
        levels = torch.clamp(torch.round(W[:, column] / scale) + zero, 0, maxq)
        _obs_step(W, column, scale * (levels - zero), remaining)
        remaining = _drop_first(remaining)
    return W
