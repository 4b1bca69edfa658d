"""Module handlers: an `nn.Module` per kernel, built from `convert`'s tensors.

Each takes input ``(..., in_features)``, runs its kernel on the rows ``(N, in_features)`` and
returns ``(..., out_features)``, so it drops in where an `nn.Linear` was.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .convert import pack_int4_pairs, quantize_fp8

# Creating quantized tensors is deprecated since torch 2.10 (its successor is torchao), but the
# fbgemm/oneDNN dynamic int8 GEMM behind it is still the fastest int8 path in torch itself on
# x86 CPUs; the registry's probe notices the day it is gone.
_QTENSOR_WARNING = r".*quantized tensor creation functions.*"
#: Rows of an fp8 GEMM's first operand must be a multiple of this on CUDA (cuBLASLt).
_FP8_ROWS = 16


class KernelLinear(nn.Module):
    """Base of the kernel modules: flattens the leading dimensions around `matmul`."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (N, in)
        return self.matmul(rows).reshape(*x.shape[:-1], self.out_features)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in) -> (N, out)``: the layer on a block of rows."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class SparseLinear(KernelLinear):
    """A CSR or BSR weight: ``y = (b + W x^T)^T``.

    The sparse operand goes first, with the bias fused into ``addmm``: of the call forms
    measured on CPU (docs/kernels.md), sparse @ dense is MKL's fast path and the dense @
    sparse^T forms are several times slower.
    """

    weight: torch.Tensor
    bias_column: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(weight.shape[1], weight.shape[0])
        self.register_buffer("weight", weight)
        if bias is None:
            column = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        else:
            column = bias.detach().reshape(-1, 1).clone()
        self.register_buffer("bias_column", column)  # (out, 1)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias_column, self.weight, x.t()).t()  # (out, N) -> (N, out)


class DynamicInt8Linear(KernelLinear):
    """int8 weights per output row, activations quantised per call (fbgemm/oneDNN, CPU)."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(q.shape[1], q.shape[0])
        zero = torch.zeros(q.shape[0], dtype=torch.long)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_QTENSOR_WARNING, category=UserWarning)
            qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
        self._packed = torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        # reduce_range: 7-bit activations, so the x86 kernels' 16-bit pair sums cannot
        # saturate on CPUs without VNNI (torch's own default for dynamic int8 on x86).
        out: torch.Tensor = torch.ops.quantized.linear_dynamic(x, self._packed, True)
        return out


class ScaledLinear(KernelLinear):
    """Quantised weights ``q`` ``(out, in)`` with their ``scale``, and the layer's bias, as
    buffers; subclasses say how to multiply."""

    q: torch.Tensor
    scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(q.shape[1], q.shape[0])
        self.register_buffer("q", q)  # (out, in) row-major, so q.t() is the column-major operand
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())


class Int8WeightOnlyLinear(ScaledLinear):
    """int8 weights per output row, float activations: ``y = (x q^T) * scale + b``."""

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.q.to(x.dtype)) * self.scale.to(x.dtype)
        return out if self.bias is None else out + self.bias


class Int4WeightOnlyLinear(KernelLinear):
    """4-bit grouped weights (tinygemm layout), float activations; CUDA or CPU kernels.

    Args:
        q: int32 values in [0, 15], ``(out, in)`` (from `quantize_groups_int4`).
        scales_and_zeros: ``(in // group, out, 2)``.
        group: the group size along the input dimension.
        bias: the layer's bias or None.
        dtype: the activation dtype the scales are stored in (bfloat16 on CUDA).
    """

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        q: torch.Tensor,
        scales_and_zeros: torch.Tensor,
        group: int,
        bias: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> None:
        super().__init__(q.shape[1], q.shape[0])
        self.group = group
        inner_k_tiles = next(t for t in (8, 4, 2) if q.shape[1] % (16 * t) == 0)
        if q.device.type == "cuda":
            packed = torch._convert_weight_to_int4pack(pack_int4_pairs(q), inner_k_tiles)
        else:
            packed = torch._convert_weight_to_int4pack_for_cpu(q, inner_k_tiles)
        self.register_buffer("packed", packed)
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(dtype))
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            out = torch._weight_int4pack_mm(x, self.packed, self.group, self.scales_and_zeros)
        else:
            out = torch._weight_int4pack_mm_for_cpu(x, self.packed, self.group, self.scales_and_zeros)
        return out if self.bias is None else out + self.bias


class Fp8Linear(ScaledLinear):
    """float8 e4m3 weights and activations, one scale each (activations scaled per call)."""

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        pad = -rows % _FP8_ROWS if x.is_cuda else 0
        xq, x_scale = quantize_fp8(F.pad(x, (0, 0, 0, pad)) if pad else x)
        out = torch._scaled_mm(xq, self.q.t(), scale_a=x_scale, scale_b=self.scale, out_dtype=x.dtype)[:rows]
        return out if self.bias is None else out + self.bias


class SemiStructuredLinear(KernelLinear):
    """A 2:4 semi-structured sparse weight (cuSPARSELt or CUTLASS, CUDA only)."""

    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(weight.shape[1], weight.shape[0])
        from torch.sparse import to_sparse_semi_structured

        self.weight = nn.Parameter(to_sparse_semi_structured(weight.detach()), requires_grad=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)
