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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from evaluators.config import MAX_TOKENS, CompressionSpec, DataSpec, EvaluatorSpec, ModelSpec

from ..secrets import expand_env, redact_url
from .text import SpecError, apply_overrides, config_error, format_errors, read_yaml

ENV_STORAGE = "OPTUNA_STORAGE"
ENV_TRACKING = "MLFLOW_TRACKING_URI"
DEFAULT_STORAGE = "sqlite:///pressroom.db"
#: The folder of Optuna's artifact store (the figures optuna-dashboard shows) for the default
#: cache folder; a spec's is ``<cache_dir>/artifacts`` unless it says `artifacts` (docs/results.md).
DEFAULT_ARTIFACTS = "~/.cache/pressroom/artifacts"


#: Algorithm parameters added after studies were recorded, with their defaults: left out of the
#: fingerprint at the default, so those studies still resume (any other value is part of it).
LATER_DEFAULTS: dict[str, Any] = {"start": "auto"}


class _Strict(BaseModel):
    # strict: `true` is not 1 and "2" is not 2 (lists still read as tuples where a field says so)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def algorithm_registry() -> dict[str, tuple[type, type]]:
    """Every algorithm a spec may name: name -> (class, config dataclass)."""
    from ..algorithms import ALGORITHMS
    from ..optuna_samplers import OPTUNA_SAMPLERS

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
        """The algorithm's configuration dataclass: its preset (if any) with `params` over it.

        The dataclass checks every value itself (`search.algorithms`); nothing is converted on
        the way, so `true` is not 1 and "2" is not 2.

        Raises:
            ValueError: an unknown preset, or a value the configuration refuses.
            TypeError: a parameter the configuration does not have (`algorithm_problems` says
                which, as the spec's errors do).
        """
        return self.config_class()(**{**self.preset_values(), **self.params})

    def config_class(self) -> type:
        """The configuration dataclass of the named algorithm."""
        return algorithm_registry()[self.name][1]

    def preset_values(self) -> dict[str, Any]:
        """The fields of the named preset, or none without one.

        Raises:
            ValueError: an unknown preset, or an algorithm without presets.
        """
        config_cls = self.config_class()
        if self.preset is None:
            return {}
        if not hasattr(config_cls, "preset"):
            raise ValueError(f"algorithm {self.name!r} has no presets; give its parameters under params")
        return dataclasses.asdict(config_cls.preset(self.preset))


def algorithm_problems(algorithm: AlgorithmSpec) -> list[tuple[str, str]]:
    """(key, message) for each parameter the algorithm does not have, else for the first problem
    its configuration finds in the preset or the parameters."""
    names = [field.name for field in dataclasses.fields(algorithm.config_class()) if field.init]
    unknown = [key for key in algorithm.params if key not in names]
    if unknown:
        return [(f"algorithm.params.{key}", f"unknown key; allowed here: {names}") for key in unknown]
    try:
        algorithm.preset_values()
    except ValueError as exc:
        return [("algorithm.preset", config_error(str(exc))[1])]
    try:
        algorithm.config()
    except ValueError as exc:
        field, message = config_error(str(exc))
        return [("algorithm.params" if field is None else f"algorithm.params.{field}", message)]
    return []


class WorkersSpec(_Strict):
    """The workers that evaluate candidates: Ray actors, or one evaluator in the driver's process."""

    # "ray": `count` Ray actors (a local Ray is started when no `ray_address` is given);
    # "local": one evaluator in the driver's own process on `device`, without Ray (one GPU, a
    # laptop); `count`, the Ray resources and `timeout_s` then do not apply
    backend: Literal["ray", "local"] = "ray"
    # the local worker's device: "auto" is CUDA where torch sees a GPU, else CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    count: int = Field(2, ge=1, le=4096)
    cpus_per_worker: float = Field(1.0, gt=0, le=1024)
    gpus_per_worker: float | Literal["auto"] = "auto"
    timeout_s: float = Field(1800.0, gt=0, le=7 * 24 * 3600)
    # the longest wait for every worker to be placed and to load its model (and database)
    start_timeout_s: float = Field(600.0, gt=0, le=7 * 24 * 3600)
    ray_address: str | None = None
    torch_threads: int | None = Field(None, ge=1, le=1024)
    # tasks sent to one worker at a time: 2 hides Ray's round trip (a few ms) behind the running
    # evaluation, which matters only for evaluations under ~100 ms (see docs/benchmarks.md);
    # routing then chooses the next candidate before the current one ends
    in_flight: int = Field(1, ge=1, le=8)

    @field_validator("gpus_per_worker", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        # Checked before the union so a bad value is one error, not one per alternative.
        if value == "auto" or (isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 64):
            return value
        raise ValueError("expected 'auto' or a number of GPUs from 0 to 64")


class LatencySpec(_Strict):
    """Latency-aware search: a limit on the estimated latency, a second objective, or both.

    Before searching, one worker times each layer shape on each kernel backend and the dense
    model end to end (`workers.runtime`); a candidate's latency is then estimated without
    running it. After searching, the returned profile is measured with real kernels, and the
    next best recorded profiles (at most `fallbacks`) when it misses the constraint.
    """

    # the most a profile's latency may be, as a fraction of the dense model's on the worker
    constraint: float | None = Field(None, gt=0.0, le=1.0)
    # record the estimated latency as a second objective: a Pareto front in the dashboard
    objective: bool = False
    # kernel backends the table times (workers.runtime.kernels); null: every one that passes its probe
    backends: tuple[str, ...] | None = Field(None, min_length=1, strict=False)
    tokens: int = Field(2048, ge=8, le=MAX_TOKENS)
    repeats: int = Field(10, ge=3, le=1000)
    warmup: int = Field(2, ge=0, le=1000)
    fallbacks: int = Field(4, ge=0, le=1000)

    @model_validator(mode="after")
    def _something_to_do(self) -> LatencySpec:
        if self.constraint is None and not self.objective:
            raise ValueError("give a constraint (e.g. 0.85 of the dense latency), objective: true, or both")
        return self

    def searched(self) -> dict[str, Any]:
        """What makes two latency-aware searches the same (not how carefully they time)."""
        return self.model_dump(mode="json", include={"constraint", "objective", "backends", "tokens"})


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
    # The folder where the search publishes its figures (give the same to `pressroom dashboard
    # --artifacts`); null means <cache_dir>/artifacts.
    artifacts: str | None = Field(None, min_length=1)
    study: str | None = Field(None, min_length=1, max_length=512)
    seed: int = Field(0, ge=0, lt=2**32)
    mlflow: MlflowSpec = MlflowSpec()
    cache_dir: str = "~/.cache/pressroom"
    latency: LatencySpec | None = None

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, url: str) -> str:
        if "://" not in url:
            raise ValueError(f"not a database URL; write e.g. {DEFAULT_STORAGE!r}")
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

    def artifacts_dir(self) -> Path:
        """The folder of the study's figures (Optuna's file-system artifact store)."""
        return Path(self.artifacts or Path(self.cache_dir) / "artifacts").expanduser()

    def storage_url(self) -> str:
        """The storage URL with ``${VAR}`` expanded (holds secrets: never print it).

        Raises:
            SpecError: the URL references an unset environment variable.
        """
        return _expand(self.storage, "storage")

    def tracking_uri(self) -> str | None:
        """The MLflow tracking URI with ``${VAR}`` expanded, or None for MLflow's default.

        Raises:
            SpecError: the URI references an unset environment variable.
        """
        uri = self.mlflow.tracking_uri
        return None if uri is None else _expand(uri, "mlflow.tracking_uri")

    def fingerprint(self) -> str:
        """What makes two searches the same search: model, data, compression, algorithm, seed."""
        evaluator = self.evaluator_spec().model_dump(mode="json", exclude={"cache_dir"})
        # Tied units came later: only a search that ties them has the key, so the searches before
        # keep their fingerprints (and a bitwidth one, whose units the default now ties, does not).
        del evaluator["compression"]["tie_fused"]
        if self.compression.ties_fused():
            evaluator["compression"]["tie_fused"] = True
        if not self.compression.levels.symmetric:  # so is the symmetric grid: the asymmetric default keeps them
            del evaluator["compression"]["levels"]["symmetric"]
        payload = {
            "evaluator": evaluator,
            "algorithm": self.algorithm.name,
            "config": {
                key: value
                for key, value in dataclasses.asdict(self.algorithm.config()).items()
                if key not in LATER_DEFAULTS or value != LATER_DEFAULTS[key]
            },
        }
        if self.latency is not None:  # absent otherwise, so other searches keep their fingerprints
            payload["latency"] = self.latency.searched()
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


def _expand(value: str, key: str) -> str:
    # Variables are read when a URL is used, not when the spec is validated, so a spec that
    # names ${PGPASSWORD} validates anywhere; the user still gets one line naming the key.
    try:
        return expand_env(value, key=key)
    except ValueError as exc:
        raise SpecError([str(exc)]) from None


def load_spec_text(text: str, *, source: str = "<spec>", overrides: Mapping[str, Any] | None = None) -> Spec:
    """Validate YAML text into a `Spec`, with overrides and the environment applied.

    Raises:
        SpecError: one line per problem, each naming the key path, the value and what is allowed.
    """
    raw = read_yaml(text, source)
    env = {"storage": os.environ.get(ENV_STORAGE), "mlflow.tracking_uri": os.environ.get(ENV_TRACKING)}
    apply_overrides(raw, env)
    apply_overrides(raw, overrides or {})
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(format_errors(source, exc, Spec)) from None
    problems = latency_problems(spec) or algorithm_problems(spec.algorithm) or layer_problems(spec)
    if problems:
        raise SpecError([f"{source}: {key}: {message}" for key, message in problems])
    return spec


def latency_problems(spec: Spec) -> list[tuple[str, str]]:
    """(key, message) for each way the latency section does not fit the rest of the spec."""
    from ..algorithms import CONSTRAINED

    latency = spec.latency
    if latency is None:
        return []
    problems = []
    if latency.constraint is not None and spec.algorithm.name not in CONSTRAINED:
        allowed = f"use one of {list(CONSTRAINED)}"
        message = f"algorithm {spec.algorithm.name!r} cannot honour a constraint; {allowed}"
        problems.append(("latency.constraint", message))
    if spec.compression.scheme == "drop":
        problems.append(("latency", "kernels do not run dropped blocks; latency-aware search needs another scheme"))
    if latency.tokens > spec.data.calibration_tokens:
        problems.append(("latency.tokens", f"must not exceed data.calibration_tokens ({spec.data.calibration_tokens})"))
    return problems


def layer_problems(spec: Spec) -> list[tuple[str, str]]:
    """(key, message) when the model's layers, read from its config, do not fit the compression:
    no layer matches the patterns, or a bitwidth group size does not fit some layer's width
    (`spaces.BitwidthScheme.group_problem`). Models whose config is not on this machine are
    checked when the search builds their space instead."""
    from spaces import BitwidthScheme

    if spec.compression.scheme != "bitwidth":  # the only scheme with a per-layer constraint
        return []
    from evaluators.inventory import spec_layers

    try:
        layers = spec_layers(spec.model, spec.compression)
    except ValueError as exc:
        return [("compression.include", str(exc))]
    scheme = spec.compression.level_scheme()
    problem = layers and isinstance(scheme, BitwidthScheme) and scheme.group_problem(layers)
    return [("compression.levels.group_size", problem)] if problem else []


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Spec:
    """Read and validate a spec file (see `load_spec_text`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([f"{path}: cannot read the spec ({exc.strerror})"]) from None
    return load_spec_text(text, source=str(path), overrides=overrides)


__all__ = [
    "DEFAULT_ARTIFACTS",
    "ENV_STORAGE",
    "ENV_TRACKING",
    "AlgorithmSpec",
    "CompressionSpec",
    "DataSpec",
    "LatencySpec",
    "MlflowSpec",
    "ModelSpec",
    "Spec",
    "SpecError",
    "WorkersSpec",
    "load_spec",
    "load_spec_text",
]
