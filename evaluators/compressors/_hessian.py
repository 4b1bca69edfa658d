"""What SparseGPT (arXiv:2301.00774) and GPTQ (arXiv:2210.17323) share: the upper Cholesky factor
of the damped inverse Hessian, and the left-to-right column sweep that uses it.

Row j of the factor is row j of the inverse Hessian of the columns j.. that remain once columns
0..j-1 are fixed, divided by the square root of its diagonal entry. So one factorisation gives
every inverse a left-to-right column sweep needs, for every compression level swept with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ._checks import check_compute_dtype, check_hessian, check_int, check_percdamp


@dataclass(frozen=True)
class Block:
    """The columns ``start:end`` a sweep is working on.

    Attributes:
        start / end: the block's columns in the layer.
        W: (L, out, end - start) the block's weights, updated column by column as the sweep goes.
        errors: (L, out, end - start) each finished column's error, scaled by the factor's
            diagonal (zero for columns not yet reached).
    """

    start: int
    end: int
    W: Tensor
    errors: Tensor


def sweep(
    W: Tensor,
    U: Tensor,
    blocksize: int,
    compress: Callable[[Block, int], Tensor],
    begin: Callable[[Block], None] = lambda block: None,
) -> None:
    """Compress `W` column by column in place, spreading each column's error over the columns
    after it (lazily: within a block at once, to later blocks once per block).

    Args:
        W: (L, out, in) weights, one per level; rewritten with the compressed weights.
        U: (in, in) `inverse_hessian_cholesky`'s factor.
        blocksize: columns per lazy-update block.
        compress: (block, i) -> (L, out) the compressed column i of the block, from
            ``block.W[:, :, i]`` (what the column holds after the earlier columns' updates).
        begin: called as each block starts, before its first column (to choose a mask, say).
    """
    cols = W.shape[-1]
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        block = Block(i1, i2, W[:, :, i1:i2].clone(), torch.zeros_like(W[:, :, i1:i2]))
        Q1 = torch.zeros_like(block.W)  # (L, out, B)
        U1 = U[i1:i2, i1:i2]  # (B, B)
        begin(block)
        for i in range(i2 - i1):
            w = block.W[:, :, i]  # (L, out)
            q = compress(block, i)
            Q1[:, :, i] = q
            err = (w - q) / U1[i, i]  # (L, out)
            block.W[:, :, i:] -= err.unsqueeze(2) * U1[i, i:]
            block.errors[:, :, i] = err
        W[:, :, i1:i2] = Q1
        W[:, :, i2:] -= block.errors @ U[i1:i2, i2:]


@dataclass(frozen=True)
class Settings:
    """A sweep's checked settings: columns per lazy-update block, dampening, compute dtype."""

    blocksize: int
    percdamp: float
    dtype: torch.dtype


def check_settings(hessian: Tensor, in_features: int, blocksize: int, percdamp: float, dtype: torch.dtype) -> Settings:
    """Check what SparseGPT, its N:M variant and GPTQ share.

    Raises:
        ValueError: a hessian of the wrong shape or with non-finite entries, blocksize < 1,
            negative percdamp or an unsupported dtype.
    """
    check_hessian(hessian, in_features)
    blocksize = check_int("blocksize", blocksize, 1)
    percdamp = check_percdamp(percdamp)
    check_compute_dtype(dtype)
    return Settings(blocksize, percdamp, dtype)


@dataclass(frozen=True)
class Problem:
    """One layer ready for a sweep.

    Attributes:
        original: (out, in) the weight in the compute dtype.
        dead: (in,) inputs that were zero on every calibration token.
        U: (in, in) `inverse_hessian_cholesky`'s factor.
    """

    original: Tensor
    dead: Tensor
    U: Tensor

    @classmethod
    def factor(cls, weight: Tensor, hessian: Tensor, settings: Settings) -> Problem:
        """Factor the damped inverse Hessian on the weight's device.

        Raises:
            ValueError: the Hessian is not positive definite after dampening.
        """
        hessian = hessian.detach().to(weight.device)
        U = inverse_hessian_cholesky(hessian, settings.percdamp, settings.dtype)
        return cls(weight.detach().to(settings.dtype), dead_inputs(hessian), U)

    def start(self, levels: int) -> Tensor:
        """(levels, out, in) copies of the weight with dead inputs zeroed: what a sweep rewrites."""
        rows, cols = self.original.shape
        return self.original.masked_fill(self.dead, 0).expand(levels, rows, cols).clone()


def dead_inputs(hessian: Tensor) -> Tensor:
    """Inputs that were zero on every calibration token.

    Args:
        hessian: (in, in) X^T X summed over tokens.

    Returns:
        (in,) bool, True where the diagonal is exactly 0.
    """
    return torch.diagonal(hessian) == 0


def inverse_hessian_cholesky(hessian: Tensor, percdamp: float, dtype: torch.dtype) -> Tensor:
    """Upper Cholesky factor U of (H + damp*I)^-1, so that (H + damp*I)^-1 = U^T U.

    Dead inputs get a unit diagonal first; their rows and columns are otherwise zero, so they
    stay decoupled from the live inputs in the factor and never receive or pass on an update.

    Args:
        hessian: (in, in) X^T X summed over tokens; only its lower triangle is read.
        percdamp: dampening as a fraction of the mean diagonal (after the dead-input fix).
        dtype: float32 or float64, the dtype of the factor.

    Returns:
        (in, in) upper-triangular factor in `dtype` on the hessian's device.

    Raises:
        ValueError: when the damped Hessian or its inverse is not positive definite.
    """
    H = hessian.detach().to(dtype=dtype, copy=True)  # (in, in)
    dead = dead_inputs(H)
    H[dead, dead] = 1.0
    diag = torch.diagonal(H)
    diag += percdamp * diag.mean()
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise ValueError(
            f"hessian is not positive definite after dampening with percdamp={percdamp}; "
            "use a larger percdamp or more calibration tokens"
        )
    H_inv = torch.cholesky_inverse(L)
    U: Tensor
    U, info = torch.linalg.cholesky_ex(H_inv, upper=True)
    if int(info) != 0:
        raise ValueError(
            f"inverse hessian is not positive definite in {dtype} with percdamp={percdamp}; "
            "use a larger percdamp or dtype=torch.float64"
        )
    return U
