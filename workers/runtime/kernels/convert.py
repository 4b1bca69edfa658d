"""Pure tensor functions: a layer's weight, ``(out_features, in_features)``, in a kernel's format.

Nothing here holds state or touches a module; `workers.runtime.kernels.modules` wraps the results.
"""

from __future__ import annotations

import warnings

import torch

# torch flags sparse compressed layouts as beta on every conversion; known, and documented.
_BETA_WARNING = r"Sparse CSR tensor support is in beta state.*"
#: Largest finite value of float8 e4m3 (what fp8 weights and activations are scaled to fill).
FP8_MAX = 448.0
#: Block sizes tried for BSR, largest first; a layer uses the largest that divides both dims.
BSR_BLOCKS = (32, 16, 8)
#: Group sizes the int4 kernels take along the input dimension, largest first.
INT4_GROUPS = (128, 64, 32)


def _check_matrix(weight: torch.Tensor) -> None:
    if weight.dim() != 2:
        raise ValueError(f"a linear weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")


def to_csr(weight: torch.Tensor) -> torch.Tensor:
    """The weight in CSR layout (only its non-zeros stored)."""
    _check_matrix(weight)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_BETA_WARNING, category=UserWarning)
        return weight.detach().to_sparse_csr()


def bsr_block(shape: tuple[int, int]) -> int | None:
    """The BSR block size for a weight shape: the largest of `BSR_BLOCKS` dividing both dims."""
    return next((b for b in BSR_BLOCKS if shape[0] % b == 0 and shape[1] % b == 0), None)


def to_bsr(weight: torch.Tensor) -> torch.Tensor:
    """The weight in BSR layout with `bsr_block`'s square blocks (all-zero blocks not stored).

    Raises:
        ValueError: no block size of `BSR_BLOCKS` divides the shape.
    """
    _check_matrix(weight)
    block = bsr_block((weight.shape[0], weight.shape[1]))
    if block is None:
        raise ValueError(f"no BSR block of {BSR_BLOCKS} divides the weight shape {tuple(weight.shape)}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_BETA_WARNING, category=UserWarning)
        return weight.detach().to_sparse_bsr((block, block))


def quantize_rows_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row.

    Returns:
        ``(q, scale)``: int8 ``(out, in)`` in [-127, 127] and float32 ``(out,)`` with
        ``weight ~= q * scale[:, None]``.
    """
    _check_matrix(weight)
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (out,)
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


def int4_group(in_features: int) -> int | None:
    """The int4 group size for an input width: the largest of `INT4_GROUPS` dividing it."""
    return next((g for g in INT4_GROUPS if in_features % g == 0), None)


def quantize_groups_int4(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit min-max quantisation per group of `group` input columns, in the form
    the tinygemm int4 kernels take: ``w = (q - 8) * scale + zero`` with ``zero = min + 8 * scale``.

    Returns:
        ``(q, scales_and_zeros)``: int32 values in [0, 15] of shape ``(out, in)``, and
        ``(in // group, out, 2)`` float32 holding each group's scale and zero.

    Raises:
        ValueError: `group` does not divide the input width.
    """
    _check_matrix(weight)
    out_features, in_features = weight.shape
    if group < 2 or in_features % group:
        raise ValueError(f"int4 group {group} must be >= 2 and divide in_features {in_features}")
    groups = weight.detach().float().reshape(-1, group)  # (out * in/group, group)
    low = groups.amin(dim=1, keepdim=True)
    scale = (groups.amax(dim=1, keepdim=True) - low).clamp_min(1e-6) / 15.0
    q = torch.round((groups - low) / scale).clamp_(0, 15).to(torch.int32).reshape(out_features, in_features)
    zero = low + 8.0 * scale
    pairs = torch.cat([scale, zero], dim=1).reshape(out_features, in_features // group, 2)
    return q, pairs.transpose(0, 1).contiguous()


def pack_int4_pairs(q: torch.Tensor) -> torch.Tensor:
    """Two 4-bit values per byte, even column in the high nibble: ``(out, in)`` -> ``(out, in/2)``
    uint8, the input `torch._convert_weight_to_int4pack` expects on CUDA."""
    return ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8)


def quantize_fp8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float8 e4m3 with one scale for the whole tensor.

    Returns:
        ``(q, scale)``: float8_e4m3fn ``(out, in)`` and a float32 scalar with
        ``weight ~= q.float() * scale``.
    """
    _check_matrix(weight)
    w = weight.detach().float()
    scale = (w.abs().amax().clamp_min(1e-12) / FP8_MAX).reshape(())
    return (w / scale).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def is_two_four(weight: torch.Tensor) -> bool:
    """Whether every group of four consecutive input weights holds at most two non-zeros."""
    _check_matrix(weight)
    if weight.shape[1] % 4:
        return False
    nonzero = (weight.detach() != 0).reshape(weight.shape[0], -1, 4).sum(dim=2)
    return bool((nonzero <= 2).all())
