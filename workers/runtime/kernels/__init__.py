"""Linear-layer kernels for compressed models: a registry of backends, probed and checked.

Three layers, as in torchao: pure tensor conversions (`convert`), a module per kernel
(`modules`), and a walker that swaps a model's linear layers by name (`swap_linears_`). The
registry (`BACKENDS`) says where each backend runs and which layers it accepts; `probe` runs a
backend once and checks it against the dense product before anyone relies on it.
`CompiledModel` compiles a whole stitched model once and lets its weights change in place.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from workers.runtime.kernels import available_backends, swap_linears_
    >>> "dense" in available_backends("cpu")
    True
    >>> model = nn.Sequential(nn.Linear(64, 64))
    >>> originals = swap_linears_(model, {"0": "int8-dynamic"})  # doctest: +SKIP
"""

from ._compiled import CompiledModel, RecompileError
from ._registry import (
    BACKENDS,
    DTYPE_GATES,
    FORMAT_GATES,
    Backend,
    Probe,
    available_backends,
    get_backend,
    probe,
    relative_error,
    sample_layer,
)
from ._settings import LayerSetting, kernel_settings, layer_setting
from ._walker import restore_linears_, swap_linears_

__all__ = [
    "BACKENDS",
    "DTYPE_GATES",
    "FORMAT_GATES",
    "Backend",
    "CompiledModel",
    "LayerSetting",
    "Probe",
    "RecompileError",
    "available_backends",
    "get_backend",
    "kernel_settings",
    "layer_setting",
    "probe",
    "relative_error",
    "restore_linears_",
    "sample_layer",
    "swap_linears_",
]
