"""Everything that touches a model: loading, layer inventory, data, compressors, the compression
database, fitness functions and the `Evaluator` that ties them together.

Names are imported on first use, so `import evaluators.config` (all a spec needs) does not pull
in torch and transformers.

Example:
    >>> from evaluators import Evaluator, EvaluatorSpec
    >>> spec = EvaluatorSpec.model_validate({"model": {"name": "pressroom:tiny-llama"}})
    >>> evaluator = Evaluator(spec)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import COMPRESSORS, CompressionSpec, DataSpec, EvaluatorSpec, LevelsSpec, ModelSpec
    from .data import Batch, TokenData
    from .database import CompressionDatabase
    from .evaluator import EvalResult, Evaluator
    from .inventory import Inventory, build_space, take_inventory
    from .models import BUILTINS, LoadedModel, load_model

_WHERE = {
    "COMPRESSORS": "config",
    "CompressionSpec": "config",
    "DataSpec": "config",
    "EvaluatorSpec": "config",
    "LevelsSpec": "config",
    "ModelSpec": "config",
    "Batch": "data",
    "TokenData": "data",
    "CompressionDatabase": "database",
    "EvalResult": "evaluator",
    "Evaluator": "evaluator",
    "Inventory": "inventory",
    "build_space": "inventory",
    "take_inventory": "inventory",
    "BUILTINS": "models",
    "LoadedModel": "models",
    "load_model": "models",
}

__all__ = [
    "BUILTINS",
    "COMPRESSORS",
    "Batch",
    "CompressionDatabase",
    "CompressionSpec",
    "DataSpec",
    "EvalResult",
    "Evaluator",
    "EvaluatorSpec",
    "Inventory",
    "LevelsSpec",
    "LoadedModel",
    "ModelSpec",
    "TokenData",
    "build_space",
    "load_model",
    "take_inventory",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'evaluators' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
