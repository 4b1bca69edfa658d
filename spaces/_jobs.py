"""The worker job protocol: which jobs a worker runs, and each job's typed parameters.

A search algorithm asks for jobs (`search.algorithms.Candidate`), the coordinator sends them as
JSON task payloads (`workers.runner.task_payload`), and the worker answers them
(`evaluators.jobs.run_job`, `workers.runtime.latency_job`). All of them name jobs by `Job` and
read parameters through `job_params`, so a job or a parameter is spelled in one place.

Parameters travel as JSON: every parameter class is a frozen dataclass that is also a read-only
mapping of its JSON form (``dict(params)`` is what goes on the wire), and `job_params` reads that
form back, naming every missing, unknown or bad value.

Example:
    >>> params = job_params("owl_scores", {"M": 3})
    >>> params.M, dict(params)
    (3.0, {'M': 3.0})
    >>> job_params(Job.RELAX, {"steps": 2})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: relax job parameters [...] are missing (missing [...]); ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar


class Job(StrEnum):
    """A job a worker runs. ``evaluate`` measures a profile's fitness; ``latency`` times a
    profile with real kernels; the others compute model statistics a baseline needs."""

    EVALUATE = "evaluate"
    RELAX = "relax"
    LAYER_ERRORS = "layer_errors"
    OWL_SCORES = "owl_scores"
    LATENCY = "latency"


def parse_job(value: object) -> Job:
    """The `Job` named by `value`.

    Raises:
        ValueError: `value` names no job; the message lists the jobs.
    """
    if isinstance(value, str) and value in Job.__members__.values():
        return Job(value)
    raise ValueError(f"job {value!r} is not one of {[job.value for job in Job]}")


class JobParams(Mapping[str, Any]):
    """Base of the parameter classes: a frozen dataclass read as the mapping of its JSON form.

    Subclasses list the keys a payload must carry in `required`; every other field is optional
    and takes its default when absent.
    """

    job: ClassVar[Job]
    required: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: field name -> value, tuples as lists."""
        return {f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return _json(getattr(self, key))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobParams:
        """Read the JSON form, checking the keys; subclasses check the values in `_check`."""
        names = cls._names()
        missing = [key for key in cls.required if key not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            problems = [(word, keys) for word, keys in (("missing", missing), ("unknown", unknown)) if keys]
            kind = " or ".join(word for word, _ in problems)
            detail = ", ".join(f"{word} {keys}" for word, keys in problems)
            raise ValueError(
                f"{cls.job} job parameters {missing + unknown} are {kind} ({detail}); "
                f"allowed: {list(names)} (required: {list(cls.required)})"
            )
        values = {}
        for key, value in data.items():
            try:
                values[key] = cls._convert(key, value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{cls.job} job parameters: {key}={value!r} does not fit ({exc})") from None
        out = cls(**values)
        out._check()
        return out

    @classmethod
    def _convert(cls, key: str, value: Any) -> Any:
        """One JSON value as the field's type (the default leaves it as it is)."""
        return value

    def _check(self) -> None:
        """Raise ValueError for values no job could run with."""


@dataclass(frozen=True, eq=True)
class NoParams(JobParams):
    """The parameters of a job that takes none (``evaluate``, ``layer_errors``)."""

    job: ClassVar[Job] = Job.EVALUATE


@dataclass(frozen=True, eq=True)
class LayerErrorsParams(NoParams):
    """``layer_errors`` takes no parameters."""

    job: ClassVar[Job] = Job.LAYER_ERRORS


@dataclass(frozen=True, eq=True)
class OwlParams(JobParams):
    """``owl_scores``: M, the outlier threshold as a multiple of a layer's mean score (OWL,
    arXiv:2310.05175)."""

    job: ClassVar[Job] = Job.OWL_SCORES
    M: float = 5.0

    @classmethod
    def _convert(cls, key: str, value: Any) -> Any:
        return float(value)


@dataclass(frozen=True, eq=True, kw_only=True)
class RelaxParams(JobParams):
    """``relax``: the DASS-style relaxation loop's parameters (see `search.algorithms.DASSConfig`).

    Args:
        steps: gradient steps.
        lr: the step size on the logits (gradients normalised to RMS 1 over all logits, momentum 0.9).
        tau_start / tau_end: the softmax temperature, annealed geometrically.
        rho: the augmented Lagrangian's penalty weight on the normalised cost gap.
        mu0: the multiplier's starting value.
        gumbel: add Gumbel noise to the logits at every step.
        tokens_per_step / init: for the record only (the job's fidelity gives the tokens,
            ``init_logits`` the start).
        init_logits: per unit, the starting logits (aligned with ``space.levels[i]``; see
            `check_levels`).
        target_cost: the budget C.
        cost_scale: divides the cost gap, so that ``rho`` reads in levels per unit.
        seed: seeds the Gumbel noise.
    """

    job: ClassVar[Job] = Job.RELAX
    required: ClassVar[tuple[str, ...]] = (
        "steps", "lr", "tau_start", "tau_end", "rho", "init_logits", "target_cost", "cost_scale",
    )  # fmt: skip
    steps: int
    lr: float
    tau_start: float
    tau_end: float
    rho: float
    mu0: float = 0.0
    gumbel: bool = False
    tokens_per_step: int | None = None
    init: str | None = None
    init_logits: tuple[tuple[float, ...], ...]
    target_cost: float
    cost_scale: float
    seed: int = 0

    @classmethod
    def _convert(cls, key: str, value: Any) -> Any:
        if key == "init_logits":
            if not isinstance(value, Sequence):
                raise ValueError(f"init_logits must hold one list per unit, got {value!r}")
            return tuple(tuple(float(v) for v in row) for row in value)
        kinds: dict[str, type] = {"steps": int, "seed": int, "gumbel": bool, "tokens_per_step": int, "init": str}
        if value is None and key in ("tokens_per_step", "init"):
            return None
        return kinds.get(key, float)(value)

    def _check(self) -> None:
        for key in ("lr", "tau_start", "tau_end", "cost_scale"):
            if not getattr(self, key) > 0:
                raise ValueError(f"relax job parameters: {key} must be positive, got {getattr(self, key)!r}")
        if self.steps < 1 or not self.rho >= 0 or not math.isfinite(self.mu0):
            raise ValueError(
                f"relax job parameters: need steps >= 1, rho >= 0 and a finite mu0; got steps={self.steps}, "
                f"rho={self.rho}, mu0={self.mu0}"
            )

    def check_levels(self, levels: Sequence[Sequence[int]]) -> None:
        """Check `init_logits` against a space's levels (`Space.levels`).

        Raises:
            ValueError: not one row per unit, or a row that is not one finite number per level;
                the message names the unit and its levels.
        """
        if len(self.init_logits) != len(levels):
            raise ValueError(f"relax job parameters: init_logits must hold one list per unit ({len(levels)})")
        for i, (row, allowed) in enumerate(zip(self.init_logits, levels, strict=True)):
            if len(row) != len(allowed) or not all(math.isfinite(v) for v in row):
                raise ValueError(
                    f"relax job parameters: init_logits[{i}] must be {len(allowed)} finite numbers "
                    f"(one per level {list(allowed)}), got {list(row)!r}"
                )

    def tau(self, step: int) -> float:
        """The temperature at `step` (0-based): tau_start at the first, tau_end at the last."""
        t = step / max(self.steps - 1, 1)
        return self.tau_start * math.pow(self.tau_end / self.tau_start, t)


@dataclass(frozen=True, eq=True)
class LatencyParams(JobParams):
    """``latency``: how to time a profile on the worker (see `workers.runtime.latency_job`).

    Args:
        backends: kernel backend names for the per-layer table; None: every registered one.
        sparsities: the table's sparsity grid for sparse backends; None: the runtime's default.
        table: a latency table's JSON form to reuse instead of measuring one.
        plan: layer -> backend, overriding the table's choice.
        warmup: untimed rounds.
        repeats: timed rounds.
    """

    job: ClassVar[Job] = Job.LATENCY
    backends: tuple[str, ...] | None = None
    sparsities: tuple[float, ...] | None = None
    table: Mapping[str, Any] | None = None
    plan: Mapping[str, str] | None = None
    warmup: int = 2
    repeats: int = 15

    @classmethod
    def _convert(cls, key: str, value: Any) -> Any:
        if value is None:
            return None
        if key == "backends":
            return tuple(str(v) for v in value)
        if key == "sparsities":
            return tuple(float(v) for v in value)
        if key in ("warmup", "repeats"):
            return int(value)
        return dict(value)


#: The parameter class of each job.
PARAMS: Mapping[Job, type[JobParams]] = {
    Job.EVALUATE: NoParams,
    Job.RELAX: RelaxParams,
    Job.LAYER_ERRORS: LayerErrorsParams,
    Job.OWL_SCORES: OwlParams,
    Job.LATENCY: LatencyParams,
}


def job_params(job: str, data: Mapping[str, Any] | None = None) -> JobParams:
    """`job`'s typed parameters from their JSON form (an instance of the right class passes
    through unchanged).

    Raises:
        ValueError: an unknown job, or parameters the job does not take; the message names the
            missing, unknown or bad values and lists the allowed ones.
    """
    cls = PARAMS[parse_job(job)]
    if isinstance(data, cls):
        return data
    return cls.from_dict(data or {})


def _json(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value
