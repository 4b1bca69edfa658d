"""Argument checks shared by the compressors; each raises ValueError naming the value."""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import SupportsIndex

import torch
from torch import Tensor

COMPUTE_DTYPES = (torch.float32, torch.float64)


def check_weight(weight: Tensor, *, matrix: bool = True) -> None:
    """A finite floating-point tensor; a 2-D (out, in) matrix unless `matrix` is False."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must have a floating-point dtype, got {weight.dtype}")
    if matrix and weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight contains NaN or infinite values; only finite weights can be compressed")


def check_hessian(hessian: Tensor, in_features: int) -> None:
    """A finite (in, in) floating-point matrix."""
    if not isinstance(hessian, Tensor):
        raise TypeError(f"hessian must be a torch.Tensor, got {type(hessian).__name__}")
    if not hessian.is_floating_point():
        raise ValueError(f"hessian must have a floating-point dtype, got {hessian.dtype}")
    if tuple(hessian.shape) != (in_features, in_features):
        raise ValueError(
            f"hessian must have shape (in_features, in_features) = ({in_features}, {in_features}), "
            f"got {tuple(hessian.shape)}"
        )
    if not bool(torch.isfinite(hessian).all()):
        raise ValueError("hessian contains NaN or infinite values")
    if bool((torch.diagonal(hessian) < 0).any()):
        raise ValueError("hessian has a negative diagonal entry; it must be X^T X summed over tokens")


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """An integer (not a bool) in [low, high]; returns it as a plain int."""
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    number = operator.index(value)
    if number < low or (high is not None and number > high):
        allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {allowed}, got {number}")
    return int(number)


def check_int_list(name: str, values: Sequence[int], low: int, high: int) -> list[int]:
    """A sequence of integers, each in [low, high]."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a sequence of integers, got {values!r}")
    return [check_int(f"{name}[{i}]", value, low, high) for i, value in enumerate(values)]


def check_percdamp(percdamp: float) -> float:
    """A finite, non-negative dampening fraction."""
    if isinstance(percdamp, bool) or not isinstance(percdamp, (int, float)):
        raise ValueError(f"percdamp must be a number >= 0, got {percdamp!r}")
    if not math.isfinite(percdamp) or percdamp < 0:
        raise ValueError(f"percdamp must be a finite number >= 0, got {percdamp!r}")
    return float(percdamp)


def check_compute_dtype(dtype: torch.dtype) -> None:
    """float32 or float64: the sweeps lose too much precision in half types."""
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")


def check_bits(name: str, bits: object) -> int:
    """A bitwidth in 1..16."""
    return check_int(name, bits, 1, 16)


def check_group_size(group_size: object) -> int:
    """-1 (one group per row) or a positive integer."""
    if isinstance(group_size, bool) or not isinstance(group_size, SupportsIndex):
        raise ValueError(f"group_size must be -1 or a positive integer, got {group_size!r}")
    number = operator.index(group_size)
    if number == 0 or number < -1:
        raise ValueError(f"group_size must be -1 or a positive integer, got {number}")
    return int(number)
