"""The model walker: put a backend's module in place of each named linear layer, and take it out."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import nn

from evaluators.inventory import is_linear, weight_view

from ._registry import get_backend
from ._settings import LayerSetting

logger = logging.getLogger(__name__)


def swap_linears_(
    model: nn.Module, plan: Mapping[str, str], settings: Mapping[str, LayerSetting] | None = None
) -> dict[str, nn.Module]:
    """Replace each linear layer named in `plan` by its backend's module, in place.

    The new modules are built from the weights the layers hold now (a stitched, already
    compressed model), on their device; "dense" leaves a layer as it is. If a build fails, the
    layers already replaced are put back before the error propagates.

    Args:
        model: the model to change.
        plan: module name -> backend name.
        settings: module name -> what the layer holds; when given, each layer's backend must
            accept its shape and setting.

    Returns:
        The replaced modules by name, for `restore_linears_`.

    Raises:
        ValueError: a name that is not a linear layer of `model`, an unknown backend, a backend
            for another device, or one that does not accept the layer's setting.

    Example:
        >>> import torch
        >>> model = nn.Sequential(nn.Linear(8, 8))
        >>> with torch.no_grad():
        ...     model[0].weight[:, :4] = 0
        >>> originals = swap_linears_(model, {"0": "csr"})
        >>> type(model[0]).__name__
        'SparseLinear'
        >>> restore_linears_(model, originals)
    """
    originals: dict[str, nn.Module] = {}
    try:
        for name, backend_name in plan.items():
            backend = get_backend(backend_name)
            module = _linear(model, name)
            weight = weight_view(module)
            shape = (int(weight.shape[0]), int(weight.shape[1]))
            if settings is not None:
                setting = settings.get(name)
                if setting is None:
                    raise ValueError(f"layer {name!r} is in the plan but has no setting")
                if not backend.accepts(shape, setting):
                    raise ValueError(f"backend {backend.name!r} does not accept layer {name!r} {shape} at {setting}")
            if weight.device.type not in backend.devices:
                raise ValueError(
                    f"backend {backend.name!r} runs on {list(backend.devices)}; layer {name!r} is on {weight.device}"
                )
            if backend.name == "dense":
                continue
            model.set_submodule(name, backend.build(weight, getattr(module, "bias", None)))
            originals[name] = module
    except BaseException:
        restore_linears_(model, originals)
        raise
    logger.debug("swapped %d of %d planned layers", len(originals), len(plan))
    return originals


def restore_linears_(model: nn.Module, originals: Mapping[str, nn.Module]) -> None:
    """Put back the modules `swap_linears_` replaced."""
    for name, module in originals.items():
        model.set_submodule(name, module)


def _linear(model: nn.Module, name: str) -> nn.Module:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"model has no module {name!r}") from None
    if not is_linear(module):
        raise ValueError(f"module {name!r} is a {type(module).__name__}, not a linear layer")
    return module
