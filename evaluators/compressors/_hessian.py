"""The factorisation SparseGPT and GPTQ share: the upper Cholesky factor of the damped inverse Hessian.

Row j of the factor is row j of the inverse Hessian of the columns j.. that remain once columns
0..j-1 are fixed, divided by the square root of its diagonal entry. So one factorisation gives
every inverse a left-to-right column sweep needs, for every compression level swept with it.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
