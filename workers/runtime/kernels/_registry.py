"""The registry of linear-layer backends, their availability probes and their error gates.

A backend turns one layer's (already compressed) weight into a module that computes the same
product faster, or nearly the same product for quantized formats. The registry is an explicit
dict keyed by name; nothing is discovered by walking packages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._settings import DENSE_BITS, LayerSetting
from .convert import (
    bsr_block,
    int4_group,
    quantize_fp8,
    quantize_groups_int4,
    quantize_rows_int8,
    to_bsr,
    to_csr,
)
from .modules import (
    DynamicInt8Linear,
    Fp8Linear,
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    SemiStructuredLinear,
    SparseLinear,
)

logger = logging.getLogger(__name__)

#: Relative error (Frobenius norm of the difference over the reference's) that the activation
#: dtype's rounding alone may cause, for a kernel that computes the dense product exactly.
DTYPE_GATES: dict[torch.dtype, float] = {torch.float32: 1e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
#: What each weight format adds on Gaussian weights and inputs, with a margin over what it was
#: measured to cost (int8 per row with 7-bit activations 0.023, int4 in groups of 128 0.10,
#: fp8 e4m3 per tensor 0.04).
FORMAT_GATES: dict[str, float] = {"exact": 0.0, "int8": 0.05, "int4": 0.15, "fp8": 0.08}

Shape = tuple[int, int]
Build = Callable[[torch.Tensor, "torch.Tensor | None"], nn.Module]


def _any_setting(shape: Shape, setting: LayerSetting) -> bool:
    return True


def _no_requirement(device: torch.device) -> str | None:
    return None


@dataclass(frozen=True)
class Backend:
    """One way to run a linear layer.

    Attributes:
        name: the registry key.
        devices: device types it runs on ("cpu", "cuda").
        weights: how it stores the weight: "exact" (the same values), "int8", "int4" or "fp8";
            sets its error gate.
        dtypes: activation dtypes it takes.
        build: ``(weight (out, in), bias or None) -> module``, on the weight's device.
        accepts: ``(shape (out, in), setting) -> bool``: whether a layer may use it.
        sparse: its speed depends on the layer's sparsity (a latency table measures a grid).
        hardware: None when the device can run it, else why not (checked before probing).
        summary: one line for listings.
    """

    name: str
    devices: tuple[str, ...]
    weights: str
    dtypes: tuple[torch.dtype, ...]
    build: Build
    accepts: Callable[[Shape, LayerSetting], bool] = _any_setting
    sparse: bool = False
    hardware: Callable[[torch.device], str | None] = field(default=_no_requirement)
    summary: str = ""

    def gate(self, dtype: torch.dtype) -> float:
        """The largest relative error its output may have against the dense product."""
        if dtype not in DTYPE_GATES:
            raise ValueError(f"no error gate for dtype {dtype}; allowed: {sorted(map(str, DTYPE_GATES))}")
        return DTYPE_GATES[dtype] + FORMAT_GATES[self.weights]


def _capability(minimum: tuple[int, int], what: str) -> Callable[[torch.device], str | None]:
    def check(device: torch.device) -> str | None:
        have = torch.cuda.get_device_capability(device)
        if have < minimum:
            return f"{what} needs compute capability {minimum[0]}.{minimum[1]}+, this GPU has {have[0]}.{have[1]}"
        return None

    return check


# --- builds -------------------------------------------------------------------------------------


def _dense(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    layer.weight = nn.Parameter(weight.detach(), requires_grad=False)
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return layer


def _csr(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    return SparseLinear(to_csr(weight), bias)


def _bsr(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    return SparseLinear(to_bsr(weight), bias)


def _int8_dynamic(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    return DynamicInt8Linear(*quantize_rows_int8(weight), bias)


def _int8_weight_only(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    return Int8WeightOnlyLinear(*quantize_rows_int8(weight), bias)


def _int4_weight_only(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    group = int4_group(weight.shape[1])
    if group is None:
        raise ValueError(f"int4: no group size divides in_features {weight.shape[1]}")
    q, scales_and_zeros = quantize_groups_int4(weight, group)
    return Int4WeightOnlyLinear(q, scales_and_zeros, group, bias, weight.dtype)


def _fp8(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    return Fp8Linear(*quantize_fp8(weight), bias)


def _semi_structured(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    return SemiStructuredLinear(weight, bias)


# --- which layers fit ---------------------------------------------------------------------------


def _is_sparse(shape: Shape, setting: LayerSetting) -> bool:
    return setting.sparsity > 0 and setting.bits == DENSE_BITS


def _fits_bsr(shape: Shape, setting: LayerSetting) -> bool:
    return _is_sparse(shape, setting) and bsr_block(shape) is not None


def _fits_8bit(shape: Shape, setting: LayerSetting) -> bool:
    return setting.bits <= 8


def _fits_int4(shape: Shape, setting: LayerSetting) -> bool:
    out_features, in_features = shape
    return setting.bits <= 4 and out_features % 8 == 0 and in_features % 32 == 0 and int4_group(in_features) is not None


def _fits_fp8(shape: Shape, setting: LayerSetting) -> bool:
    return setting.bits <= 8 and shape[0] % 16 == 0 and shape[1] % 16 == 0


def _fits_two_four(shape: Shape, setting: LayerSetting) -> bool:
    # the strictest of torch's minimum sizes for 2:4 weights (CUTLASS, 16-bit: 32 x 64)
    return setting.structure == "2:4" and shape[0] % 32 == 0 and shape[1] % 64 == 0


_HALF = (torch.float16, torch.bfloat16)

#: Every backend, by name. "dense" is the reference and the fall-back of every layer.
BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("dense", ("cpu", "cuda"), "exact", (torch.float32, *_HALF), _dense, summary="the layer as it is"),
        Backend(
            "csr", ("cpu", "cuda"), "exact", (torch.float32, *_HALF), _csr, _is_sparse, sparse=True,
            summary="CSR weight, sparse @ dense (MKL on CPU, cuSPARSE on CUDA)",
        ),
        Backend(
            "bsr", ("cpu", "cuda"), "exact", (torch.float32, *_HALF), _bsr, _fits_bsr, sparse=True,
            summary="BSR weight in square blocks of 32, 16 or 8",
        ),
        Backend(
            "int8-dynamic", ("cpu",), "int8", (torch.float32,), _int8_dynamic, _fits_8bit,
            summary="int8 weights per row, int8 activations per call (fbgemm/oneDNN)",
        ),
        Backend(
            "semi-structured", ("cuda",), "exact", _HALF, _semi_structured, _fits_two_four,
            hardware=_capability((8, 0), "2:4 semi-structured sparsity"),
            summary="2:4 sparse tensor cores (cuSPARSELt or CUTLASS)",
        ),
        Backend(
            "int8-weight-only", ("cuda",), "int8", _HALF, _int8_weight_only, _fits_8bit,
            summary="int8 weights per row, dequantised into the matmul",
        ),
        Backend(
            "int4-weight-only", ("cuda",), "int4", (torch.bfloat16,), _int4_weight_only, _fits_int4,
            hardware=_capability((8, 0), "the int4 tinygemm kernel"),
            summary="4-bit grouped weights, tinygemm",
        ),
        Backend(
            "fp8", ("cuda",), "fp8", _HALF, _fp8, _fits_fp8,
            hardware=_capability((8, 9), "float8 matmul"),
            summary="float8 e4m3 weights and activations, torch._scaled_mm",
        ),
    )
}  # fmt: skip


def get_backend(name: str) -> Backend:
    """The backend registered as `name`.

    Raises:
        ValueError: no backend has that name (the message lists them).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; registered: {sorted(BACKENDS)}")
    return BACKENDS[name]


# --- correctness and availability ---------------------------------------------------------------


def relative_error(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> float:
    """How far `module(x)` is from the dense product ``x W^T + b`` computed in float32.

    Args:
        module: a backend's module built from `weight` and `bias`.
        weight: ``(out, in)``.
        bias: ``(out,)`` or None.
        x: ``(..., in)`` in the activation dtype.

    Returns:
        ``||module(x) - reference|| / ||reference||``.
    """
    with torch.no_grad():
        reference = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
        out = module(x).float()
    return float((out - reference).norm() / reference.norm().clamp_min(1e-30))


@dataclass(frozen=True)
class Probe:
    """Whether a backend runs correctly on a device and dtype.

    Attributes:
        backend: its name.
        device: the device it was tried on.
        dtype: the activation dtype.
        available: it ran and met its error gate.
        reason: why not, when not ("" when available).
        error: the relative error it had, when it ran.
    """

    backend: str
    device: str
    dtype: str
    available: bool
    reason: str = ""
    error: float | None = None


_PROBES: dict[tuple[str, str, torch.dtype], Probe] = {}
#: The probe layer: sizes every backend's shape rules accept; 40 rows so fp8's padding runs.
_PROBE_SHAPE = (128, 256)
_PROBE_ROWS = 40


def sample_layer(
    backend: Backend,
    shape: Shape = _PROBE_SHAPE,
    rows: int = _PROBE_ROWS,
    *,
    sparsity: float = 0.7,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, LayerSetting]:
    """A seeded random layer that `backend` accepts: weight, bias, input rows and its setting.

    Sparse backends get `sparsity` of the weights zeroed by magnitude, the 2:4 backend the two
    smaller of every four, quantised backends the bits they store; the others a dense weight.

    Args:
        backend: the backend the layer is for.
        shape: the weight's ``(out, in)``.
        rows: input rows.
        sparsity: the fraction of weights a sparse backend's layer has zeroed.
        device: where the tensors go.
        dtype: their dtype.
        seed: fixes the values.

    Returns:
        ``(weight (out, in), bias (out,), x (rows, in), setting)``.
    """
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=gen)
    setting = LayerSetting()
    if backend.name == "semi-structured":
        groups = weight.reshape(-1, 4)
        groups.scatter_(1, groups.abs().argsort(dim=1)[:, :2], 0.0)
        setting = LayerSetting(sparsity=0.5, structure="2:4")
    elif backend.sparse:
        pruned = int(sparsity * weight.numel())
        if pruned:
            order = weight.abs().flatten().argsort()[:pruned]
            weight.view(-1)[order] = 0.0
        setting = LayerSetting(sparsity=pruned / weight.numel())
    elif backend.weights != "exact":
        setting = LayerSetting(bits=4 if backend.weights == "int4" else 8)
    bias = torch.randn(shape[0], generator=gen)
    x = torch.randn(rows, shape[1], generator=gen)
    return weight.to(device, dtype), bias.to(device, dtype), x.to(device, dtype), setting


def probe(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Probe:
    """Run backend `name` once on a small layer and check it against the dense product.

    The answer is remembered per (backend, device, dtype) for the life of the process.

    Args:
        name: a key of `BACKENDS`.
        device: where to run it.
        dtype: the activation dtype.

    Returns:
        A `Probe`; ``available`` is False with a reason when the backend does not run on this
        device or dtype, raises, or misses its error gate.

    Raises:
        ValueError: an unknown backend name.

    Example:
        >>> probe("dense").available
        True
    """
    backend = get_backend(name)
    where = torch.device(device)
    key = (name, str(where), dtype)
    if key not in _PROBES:
        _PROBES[key] = _run_probe(backend, where, dtype)
        found = _PROBES[key]
        logger.info("kernel %s on %s/%s: %s", name, where, dtype, "available" if found.available else found.reason)
    return _PROBES[key]


def _run_probe(backend: Backend, device: torch.device, dtype: torch.dtype) -> Probe:
    def missing(reason: str, error: float | None = None) -> Probe:
        return Probe(backend.name, str(device), str(dtype), False, reason, error)

    if device.type not in backend.devices:
        return missing(f"runs on {list(backend.devices)}, not {device.type}")
    if dtype not in backend.dtypes:
        return missing(f"takes {[str(d) for d in backend.dtypes]} activations, not {dtype}")
    if device.type == "cuda" and not torch.cuda.is_available():
        return missing("CUDA is not available")
    reason = backend.hardware(device)
    if reason is not None:
        return missing(reason)
    try:
        weight, bias, x, _ = sample_layer(backend, device=device, dtype=dtype)
        error = relative_error(backend.build(weight, bias), weight, bias, x)
    except Exception as exc:  # a probe's job is to turn any failure into "unavailable"
        return missing(f"{type(exc).__name__}: {exc}")
    if not error <= backend.gate(dtype):  # also catches NaN
        return missing(f"relative error {error:.3g} exceeds its gate {backend.gate(dtype):.3g}", error)
    return Probe(backend.name, str(device), str(dtype), True, "", error)


def available_backends(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> list[str]:
    """Names of the backends that pass their probe on `device` with `dtype` activations."""
    return [name for name in BACKENDS if probe(name, device, dtype).available]
