"""Latency-aware search on the coordinator's side: the latency table, the estimate, the final check.

Before the search, `LatencyModel.prepare` asks one worker for its per-layer latency table and
the dense model's end-to-end latency (the "latency" job, see `workers.runtime.latency`), or reuses the
ones the study recorded, so a resumed search estimates exactly as before. It turns them into
per-unit, per-level values, all fractions of the dense model's latency: a candidate's estimate
is ``offset + sum of its units' values``, the table's additive estimate. The algorithms get them
as a `Constraint` (numbers only); a multi-objective study records the estimate as each COMPLETE
trial's second value.

After the search, `LatencyModel.finish` measures the best profile on a worker with real
kernels, interleaved with the dense model. The estimate can be off by ~10 % on a busy CPU, so
when the measurement misses the constraint, the next best recorded profiles are measured in
turn (at most `fallbacks` of them) until one meets it; the search returns that one. Estimate
and measurement go into the study (and, in a multi-objective study, a COMPLETE trial per
measured profile whose second value is the measured latency).

Example:
    >>> model = LatencyModel.prepare(spec, storage, pool, space)  # doctest: +SKIP
    >>> algorithm = EvoPress(space, config, seed, model.constraint)  # doctest: +SKIP
    >>> profile, fitness, report = model.finish(pool, study, writer, algorithm.best, "evopress")  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from optuna.storages import BaseStorage
from optuna.trial import TrialState

from spaces import Fidelity, Profile, Space
from workers.runner import task_payload
from workers.runtime import LatencyTable
from workers.runtime.kernels import BACKENDS, layer_setting

from ..algorithms.base import Candidate
from ..algorithms.constraint import Constraint
from ..spec.config import LatencySpec, Spec
from ..storage.study import BEST, METRIC, SearchStudy
from ..storage.writer import TrialWriter

logger = logging.getLogger(__name__)

#: The study attribute with the table and the dense latency the search estimated with.
LATENCY = "pressroom.latency"
#: The study attribute with the measurements of the returned profile (and the ones tried before it).
MEASURED = "pressroom.latency.measured"
#: The second objective of a multi-objective study: latency as a fraction of the dense model's.
LATENCY_METRIC = "latency"


class LatencyError(RuntimeError):
    """Latency-aware search could not start or finish; the message is for the user."""


def unit_latencies(space: Space, table: LatencyTable, dense_seconds: float) -> tuple[list[list[float]], float]:
    """Per unit and level, the time of the unit's layers on their fastest backend; and the rest.

    Both are fractions of `dense_seconds`, and ``rest + sum of each unit's value at its level``
    equals ``table.estimate(dense_seconds, ...) / dense_seconds`` for every profile. Layers of a
    shape the table never timed count nothing (they save nothing in the table's estimate).

    Args:
        space: the search space.
        table: per-layer latencies on the worker, for the same rows as `dense_seconds`.
        dense_seconds: the dense model's end-to-end latency on the worker.

    Returns:
        (values aligned with ``space.levels``, offset).

    Raises:
        ValueError: a scheme no kernel models ("drop").
    """
    shapes = {layer.name: (int(layer.shape[0]), int(layer.shape[1])) for layer in space.layers}
    numel = {layer.name: layer.numel for layer in space.layers}
    values: list[list[float]] = []
    for unit, levels in zip(space.units, space.levels, strict=True):
        row = []
        for level in levels:
            seconds = 0.0
            for name, setting in space.scheme.layer_settings(unit, level).items():
                found = table.best(shapes[name], layer_setting(space.scheme, numel[name], setting))
                seconds += 0.0 if found is None else found[1]
            row.append(seconds / dense_seconds)
        values.append(row)
    timed = [table.dense_seconds(shape) for shape in shapes.values()]
    offset = 1.0 - sum(t for t in timed if t is not None) / dense_seconds
    return values, offset


@dataclass(frozen=True)
class Measurement:
    """One profile's latency, estimated and measured, as fractions of the dense model's.

    Attributes:
        levels: the profile's levels in unit order.
        fitness: its recorded search fitness.
        trial: the number of the trial that recorded it, if known.
        estimated: the table's estimate.
        measured: the compressed model's median over the dense model's, timed interleaved.
        meets: whether the measurement meets the constraint (None without one).
        report: the worker's `LatencyReport.to_dict()`.
    """

    levels: list[int]
    fitness: float
    trial: int | None
    estimated: float
    measured: float
    meets: bool | None
    report: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """JSON-able, without the per-layer plan."""
        report = self.report
        return {
            **{k: v for k, v in asdict(self).items() if k != "report"},
            "dense_seconds": report["dense"]["median"],
            "compressed_seconds": report["compressed"]["median"],
            "speedup": report["speedup"],
            "layers_swapped": len(report["plan"]),
        }


def choose(
    candidates: Iterable[tuple[list[int], float, int | None]],
    measure: Callable[[list[int]], tuple[float, dict[str, Any]]],
    estimate: Callable[[list[int]], float],
    limit: float | None,
    tries: int,
) -> tuple[Measurement | None, list[Measurement]]:
    """Measure candidates best first until one meets the limit.

    Args:
        candidates: (levels, fitness, trial) best first; the first is the search's answer.
        measure: levels -> (measured latency as a fraction of dense, the worker's report).
        estimate: levels -> estimated latency as a fraction of dense.
        limit: the constraint, or None (then only the first is measured).
        tries: how many candidates at most.

    Returns:
        (the chosen measurement, or None when none met the limit; every measurement made).
    """
    tried: list[Measurement] = []
    for levels, fitness, trial in candidates:
        if len(tried) >= tries:
            break
        measured, report = measure(levels)
        meets = None if limit is None else measured <= limit
        tried.append(Measurement(levels, fitness, trial, estimate(levels), measured, meets, report))
        which = "the best profile" if len(tried) == 1 else f"fallback {len(tried) - 1}"
        verdict = "" if limit is None else f" (limit {limit:.4f}: {'met' if meets else 'missed'})"
        logger.info(
            "latency of %s: estimated %.4f, measured %.4f of dense%s", which, tried[-1].estimated, measured, verdict
        )
        if meets is not False:
            return tried[-1], tried
    return None, tried


def _run_on_worker(pool: Any, key: Hashable, payload: dict[str, Any], what: str) -> dict[str, Any]:
    """Submit one task and wait for its value (other outcomes cannot be pending here)."""
    pool.submit(key, payload)
    while True:
        for outcome in pool.collect(timeout=5.0):
            if outcome.key != key:
                logger.warning("ignoring an unexpected outcome %r while waiting for %s", outcome.key, what)
                continue
            if outcome.error is not None:
                raise LatencyError(f"{what} failed on worker {outcome.worker}: {outcome.error}")
            return dict(outcome.value["data"])


class LatencyModel:
    """The latency estimate of one search, and its final check (see the module docstring).

    Args:
        spec: the latency section.
        space: the search space.
        table: the worker's per-layer latency table.
        dense_seconds: the dense model's latency on the table's rows.

    Raises:
        ValueError: a scheme no kernel models.
    """

    def __init__(self, spec: LatencySpec, space: Space, table: LatencyTable, dense_seconds: float) -> None:
        self.spec = spec
        self.space = space
        self.table = table
        self.dense_seconds = dense_seconds
        values, offset = unit_latencies(space, table, dense_seconds)
        # Without a constraint, the limit only names "no slower than dense"; `total` ignores it.
        limit = 1.0 if spec.constraint is None else spec.constraint
        self.estimator = Constraint.for_space(space, values, limit=limit, offset=offset, name="latency")
        self.constraint = self.estimator if spec.constraint is not None else None

    # --- before the search -----------------------------------------------------------------------

    @classmethod
    def prepare(cls, spec: Spec, storage: BaseStorage, pool: Any, space: Space) -> LatencyModel:
        """The model a resumed study recorded, or a fresh table and dense latency from a worker.

        Raises:
            LatencyError: an unknown backend, or the worker's latency job failed.
        """
        latency = spec.latency
        assert latency is not None, "prepare is for specs with a latency section"
        recorded = _recorded(storage, spec.study_name)
        if recorded is not None:
            logger.info("reusing the latency table study %s recorded", spec.study_name)
            return cls(latency, space, LatencyTable.from_dict(recorded["table"]), float(recorded["dense_seconds"]))
        unknown = sorted(set(latency.backends or ()) - set(BACKENDS))
        if unknown:
            raise LatencyError(f"latency.backends: unknown kernel backends {unknown}; registered: {sorted(BACKENDS)}")
        params: dict[str, Any] = {"repeats": latency.repeats, "warmup": latency.warmup}
        if latency.backends is not None:
            params["backends"] = list(latency.backends)
        payload = task_payload("latency", None, _fidelity(latency), params)
        data = _run_on_worker(pool, ("latency", "table"), payload, "the latency table")
        table = LatencyTable.from_dict(data["table"])
        dense = float(data["report"]["dense"]["median"])
        logger.info(
            "latency table: %d entries; dense model %.4f s on %d tokens", len(table.entries), dense, latency.tokens
        )
        return cls(latency, space, table, dense)

    def record(self) -> dict[str, Any]:
        """The study attribute that lets a resumed search estimate exactly as this one."""
        return {
            "dense_seconds": self.dense_seconds,
            "tokens": self.spec.tokens,
            "constraint": self.spec.constraint,
            "table": self.table.to_dict(),
        }

    @property
    def metrics(self) -> tuple[str, ...]:
        """The study's objectives: the fitness, and the latency when it is an objective."""
        return (METRIC, LATENCY_METRIC) if self.spec.objective else (METRIC,)

    @property
    def objectives(self) -> Callable[[Candidate], Sequence[float]] | None:
        """The coordinator's callback for a COMPLETE trial's second value, when there is one."""
        if not self.spec.objective:
            return None

        def latency(candidate: Candidate) -> list[float]:
            assert candidate.profile is not None
            return [self.estimate(self.space.to_array(candidate.profile).tolist())]

        return latency

    def estimate(self, levels: Sequence[int]) -> float:
        """The table's estimate of a profile's latency, as a fraction of the dense model's."""
        return self.estimator.total(levels)

    # --- after the search --------------------------------------------------------------------------

    def finish(
        self, pool: Any, study: SearchStudy, writer: TrialWriter, best: tuple[Profile, float], algorithm: str
    ) -> tuple[Profile, float, dict[str, Any]]:
        """Measure the best profile (and fallbacks while they miss the constraint); record it all.

        Args:
            pool: the workers.
            study: the search's study (its COMPLETE trials are the fallbacks).
            writer: the study's writer (flushed here before the trials are read).
            best: the algorithm's answer and its fitness.
            algorithm: the algorithm's name, for the study's best-profile record.

        Returns:
            (the profile to return, its fitness, a JSON-able summary: estimate vs measurement of
            the chosen profile, and every profile tried).

        Raises:
            LatencyError: no measured profile met the constraint (the measurements are recorded
                first), or a worker failed to measure.
        """
        writer.flush()
        counter = itertools.count()
        params = {"table": self.table.to_dict(), "repeats": self.spec.repeats, "warmup": self.spec.warmup}

        def measure(levels: list[int]) -> tuple[float, dict[str, Any]]:
            payload = task_payload("latency", levels, _fidelity(self.spec), params)
            report = _run_on_worker(pool, ("latency", next(counter)), payload, "a latency measurement")["report"]
            return report["compressed"]["median"] / report["dense"]["median"], report

        first = ([int(v) for v in self.space.to_array(best[0])], float(best[1]), None)
        candidates = _candidates(first, study, self.constraint)
        tries = 1 + (self.spec.fallbacks if self.constraint is not None else 0)
        chosen, tried = choose(candidates, measure, self.estimate, self.spec.constraint, tries)
        summary = {
            "constraint": self.spec.constraint,
            "tokens": self.spec.tokens,
            "chosen": None if chosen is None else chosen.summary(),
            "tried": [m.summary() for m in tried],
        }
        writer.study_attr(MEASURED, summary)  # also when none met: what was measured is worth keeping
        if self.spec.objective:
            for measurement in tried:
                writer.add_trial([measurement.fitness, measurement.measured], _measured_attrs(measurement, algorithm))
        if chosen is None:
            shown = ", ".join(f"{m.measured:.3f} (estimated {m.estimated:.3f})" for m in tried)
            raise LatencyError(
                f"none of the {len(tried)} best profiles met the latency constraint {self.spec.constraint} when "
                f"measured: {shown}; the table's estimate is off on this worker: time with more latency.repeats "
                "on a quieter worker, raise latency.fallbacks, or loosen the constraint"
            )
        writer.study_attr(
            BEST,
            {"levels": chosen.levels, "fitness": chosen.fitness, "algorithm": algorithm, "latency": chosen.summary()},
        )
        return self.space.from_array(chosen.levels), chosen.fitness, summary


def _fidelity(latency: LatencySpec) -> Fidelity:
    """The tokens of one timed forward: the same fixed batch for the table and every profile."""
    return Fidelity(latency.tokens, (0,))


def _recorded(storage: BaseStorage, name: str) -> dict[str, Any] | None:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    found = storage.get_study_user_attrs(study_id).get(LATENCY)
    return None if found is None else dict(found)


def _candidates(
    first: tuple[list[int], float, int | None], study: SearchStudy, constraint: Constraint | None
) -> Iterator[tuple[list[int], float, int | None]]:
    """The search's answer, then the recorded final-stage profiles by fitness (values of different
    minibatches, so a rough order), each once, skipping any the estimate already rules out."""
    yield first
    seen = {tuple(first[0])}
    complete = [
        t for t in study.trials((TrialState.COMPLETE,))
        if isinstance(t.user_attrs.get("levels"), list) and t.values and math.isfinite(t.values[0])
    ]  # fmt: skip
    for trial in sorted(complete, key=lambda t: (t.values[0], t.number)):
        levels = [int(v) for v in trial.user_attrs["levels"]]
        if tuple(levels) in seen or (constraint is not None and not constraint.allows(levels)):
            continue
        seen.add(tuple(levels))
        yield levels, float(trial.values[0]), trial.number


def _measured_attrs(measurement: Measurement, algorithm: str) -> dict[str, Any]:
    """The attributes of the COMPLETE trial whose values are a profile's fitness and its measured latency."""
    return {
        "levels": measurement.levels,
        "algorithm": algorithm,
        "latency": measurement.summary(),
        "measured_from_trial": measurement.trial,
    }


__all__ = ["LATENCY", "MEASURED", "LatencyError", "LatencyModel", "Measurement", "choose", "unit_latencies"]
