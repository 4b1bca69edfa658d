"""The search spec: one YAML file, validated into typed configuration.

Precedence, highest first: command-line flags, the environment (`OPTUNA_STORAGE`,
`MLFLOW_TRACKING_URI`), the file, the defaults. URLs may reference the environment as
``${VAR}`` so passwords never need to be written into a file.

Example:
    >>> spec = load_spec_text("compression: {scheme: sparsity, target: 0.7}")
    >>> spec.compression.target, spec.algorithm.name, spec.storage
    (0.7, 'evopress', 'sqlite:///pressroom.db')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from evaluators.config import CompressionSpec, DataSpec, EvaluatorSpec, ModelSpec

from .secrets import expand_env, redact_url

ENV_STORAGE = "OPTUNA_STORAGE"
ENV_TRACKING = "MLFLOW_TRACKING_URI"
DEFAULT_STORAGE = "sqlite:///pressroom.db"


class SpecError(ValueError):
    """A spec that cannot be used; `lines` holds one message per problem, each naming its key."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def algorithm_registry() -> dict[str, tuple[type, type]]:
    """Every algorithm a spec may name: name -> (class, config dataclass)."""
    from .algorithms import ALGORITHMS
    from .optuna_samplers import OPTUNA_SAMPLERS

    return {**ALGORITHMS, **OPTUNA_SAMPLERS}


class AlgorithmSpec(_Strict):
    """The algorithm and its parameters (`params` are checked against its configuration)."""

    name: str = "evopress"
    preset: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        known = algorithm_registry()
        if name not in known:
            raise ValueError(f"unknown algorithm {name!r}; allowed: {sorted(known)}")
        return name

    def config(self) -> Any:
        """The algorithm's validated configuration dataclass."""
        config_cls = algorithm_registry()[self.name][1]
        base: dict[str, Any] = {}
        if self.preset is not None:
            if not hasattr(config_cls, "preset"):
                raise ValueError(f"algorithm {self.name!r} has no presets; give its parameters under params")
            base = dataclasses.asdict(config_cls.preset(self.preset))
        return TypeAdapter(config_cls).validate_python({**base, **self.params})


class WorkersSpec(_Strict):
    """The Ray workers that evaluate candidates."""

    count: int = Field(2, ge=1, le=4096)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float | Literal["auto"] = "auto"
    timeout_s: float = Field(1800.0, gt=0)
    ray_address: str | None = None
    torch_threads: int | None = Field(None, ge=1)


class MlflowSpec(_Strict):
    """MLflow tracking: a run per search."""

    enabled: bool = True
    tracking_uri: str | None = None
    experiment: str = Field("pressroom", min_length=1)


class Spec(_Strict):
    """A whole search: what to compress, how to search, where to record it."""

    model: ModelSpec = ModelSpec()
    task: Literal["auto", "causal-lm", "encoder"] = "auto"
    compression: CompressionSpec = CompressionSpec()
    data: DataSpec = DataSpec()
    algorithm: AlgorithmSpec = AlgorithmSpec()
    workers: WorkersSpec = WorkersSpec()
    storage: str = Field(DEFAULT_STORAGE, min_length=1)
    study: str | None = Field(None, min_length=1, max_length=512)
    seed: int = Field(0, ge=0, lt=2**32)
    mlflow: MlflowSpec = MlflowSpec()
    cache_dir: str = "~/.cache/pressroom"

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, url: str) -> str:
        if "://" not in url:
            raise ValueError(f"{redact_url(url)!r} is not a database URL; write e.g. {DEFAULT_STORAGE!r}")
        return url

    def evaluator_spec(self) -> EvaluatorSpec:
        return EvaluatorSpec(
            model=self.model,
            task=self.task,
            compression=self.compression,
            data=self.data,
            seed=self.seed,
            cache_dir=self.cache_dir,
        )

    @property
    def study_name(self) -> str:
        if self.study:
            return self.study
        model = Path(self.model.name.replace("pressroom:", "")).name or "model"
        c = self.compression
        return f"{model}-{c.scheme}-{c.target:g}-{self.algorithm.name}-seed{self.seed}"

    def storage_url(self) -> str:
        """The storage URL with ``${VAR}`` expanded (holds secrets: never print it)."""
        return expand_env(self.storage, key="storage")

    def tracking_uri(self) -> str | None:
        uri = self.mlflow.tracking_uri
        return None if uri is None else expand_env(uri, key="mlflow.tracking_uri")

    def fingerprint(self) -> str:
        """What makes two searches the same search: model, data, compression, algorithm, seed."""
        payload = {
            "evaluator": self.evaluator_spec().model_dump(mode="json", exclude={"cache_dir"}),
            "algorithm": self.algorithm.name,
            "config": dataclasses.asdict(self.algorithm.config()),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def public_dict(self) -> dict[str, Any]:
        """The resolved spec as data safe to print or record: passwords redacted."""
        data = self.model_dump(mode="json")
        data["storage"] = redact_url(self.storage)
        if self.mlflow.tracking_uri:
            data["mlflow"]["tracking_uri"] = redact_url(self.mlflow.tracking_uri)
        data["study"] = self.study_name
        data["algorithm"]["resolved"] = dataclasses.asdict(self.algorithm.config())
        return data


def _apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *path, last = dotted.split(".")
        for key in path:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise SpecError([f"{key}: expected a mapping to set {dotted!r}, got {child!r}"])
            node = child
        node[last] = value


def _format_errors(source: str, exc: ValidationError, prefix: str = "") -> list[str]:
    lines: list[str] = []
    seen: set[str] = set()
    for error in exc.errors():
        parts = [prefix] if prefix else []
        parts += [str(part) for part in error["loc"] if not str(part).startswith("function-")]
        loc = ".".join(parts)
        if loc in seen:  # a union reports each alternative; one line per key is enough
            continue
        seen.add(loc)
        message = error["msg"].removeprefix("Value error, ")
        shown = error.get("input")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and the section it is in)"
        elif error["type"] == "missing":
            message = "required key is missing"
        value = "" if isinstance(shown, dict) or error["type"] == "missing" else f" (got {_short(shown)})"
        lines.append(f"{source}: {loc or '(top level)'}: {message}{value}")
    return lines


def _short(value: Any) -> str:
    text = repr(value)
    if isinstance(value, str) and "://" in value:
        text = repr(redact_url(value))
    return text if len(text) <= 80 else text[:77] + "..."


def load_spec_text(text: str, *, source: str = "<spec>", overrides: Mapping[str, Any] | None = None) -> Spec:
    """Validate YAML text into a `Spec`, with overrides and the environment applied.

    Raises:
        SpecError: one line per problem, each naming the key path, the value and what is allowed.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise SpecError([f"{source}: {where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError([f"{source}: (top level): a spec is a mapping of sections, got {type(raw).__name__}"])
    env = {"storage": os.environ.get(ENV_STORAGE), "mlflow.tracking_uri": os.environ.get(ENV_TRACKING)}
    _apply_overrides(raw, env)
    _apply_overrides(raw, overrides or {})
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_errors(source, exc)) from None
    try:
        spec.algorithm.config()
    except ValidationError as exc:
        raise SpecError(_format_errors(source, exc, prefix="algorithm.params")) from None
    except ValueError as exc:
        raise SpecError([f"{source}: algorithm.preset: {exc}"]) from None
    return spec


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Read and validate a spec file (see `load_spec_text`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec ({exc.strerror})"]) from None
    return load_spec_text(text, source=str(path), overrides=overrides)


__all__ = [
    "ENV_STORAGE",
    "ENV_TRACKING",
    "AlgorithmSpec",
    "CompressionSpec",
    "DataSpec",
    "MlflowSpec",
    "ModelSpec",
    "Spec",
    "SpecError",
    "WorkersSpec",
    "load_spec",
    "load_spec_text",
]
