"""Everything that touches a model: loading, layer inventory, data, compressors, the compression
database, fitness functions and the `Evaluator` that ties them together.

Example:
    >>> from evaluators import Evaluator, EvaluatorSpec
    >>> spec = EvaluatorSpec.model_validate({"model": {"name": "pressroom:tiny-llama"}})
    >>> evaluator = Evaluator(spec)  # doctest: +SKIP
"""

from .config import COMPRESSORS, CompressionSpec, DataSpec, EvaluatorSpec, LevelsSpec, ModelSpec
from .data import Batch, TokenData
from .database import CompressionDatabase
from .evaluator import EvalResult, Evaluator
from .inventory import Inventory, build_space, take_inventory
from .models import BUILTINS, LoadedModel, load_model

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
