"""What a search found, read back from its study: the best profile, its space and its spec.

A finished search writes its answer to the study attribute ``pressroom.best``. A study without
it (a search still running, or interrupted) is answered with its best COMPLETE trial: only the
members that passed every selection stage are COMPLETE, so a PRUNED candidate, measured on
fewer tokens, never wins on a lucky small minibatch, and a FAIL one never counts at all.

Example:
    >>> from search import load_best
    >>> profile = load_best("sqlite:///pressroom.db", "minilm-sparsity-0.6-evopress-seed0")  # doctest: +SKIP
    >>> profile.scheme["name"], len(profile)  # doctest: +SKIP
    ('sparsity', 36)
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from evaluators.config import EvaluatorSpec
from spaces import LayerInfo, Profile, Space, scheme_from_dict

from ..storage.study import BEST, HELDOUT, SPACE, SPEC, StorageError, connect, describe_trials, fitness_of

logger = logging.getLogger(__name__)

#: `Best.source` of a finished search's own answer, and of the best completed trial so far.
FROM_SEARCH = "search"
FROM_TRIAL = "trial"


class ResultsError(ValueError):
    """A study cannot answer the question asked; the message says why and holds no secret."""


@dataclass(frozen=True)
class Best:
    """The best profile of a study, with where it comes from.

    Attributes:
        profile: the profile (unit name -> level, with scheme, model and granularity).
        fitness: its final-stage fitness (lower is better).
        study: the study name.
        trial: the number of the trial that measured `fitness`, when one matches.
        source: `FROM_SEARCH` (the finished search's answer) or `FROM_TRIAL` (the best
            completed trial of a search without an answer yet).
        algorithm: the algorithm that found it.
        heldout: the finished search's held-out measurement of it (``fitness``, ``perplexity`` for
            a causal LM, ``average``), when the study has one.
    """

    profile: Profile
    fitness: float
    study: str
    trial: int | None
    source: str
    algorithm: str | None
    heldout: Mapping[str, Any] | None = None


def open_storage(storage: str | BaseStorage) -> BaseStorage:
    """The storage itself, or a connection to a URL.

    Raises:
        ResultsError: the URL cannot be used (the reason, with the password redacted).
    """
    if not isinstance(storage, str):
        return storage
    try:
        return connect(storage)
    except StorageError as exc:
        raise ResultsError(str(exc)) from None


def study_attrs(storage: BaseStorage, study: str) -> tuple[int, dict[str, Any]]:
    """The study's id and user attributes.

    Raises:
        ResultsError: no study of that name (the message lists the names there are).
    """
    try:
        study_id = storage.get_study_id_from_name(study)
    except KeyError:
        names = sorted(s.study_name for s in storage.get_all_studies())
        raise ResultsError(f"no study {study!r} in this storage; studies: {names or 'none'}") from None
    return study_id, dict(storage.get_study_user_attrs(study_id))


def space_record(attrs: Mapping[str, Any], study: str) -> dict[str, Any]:
    """The study's ``pressroom.space`` record (model, scheme, granularity, unit names, layers).

    Raises:
        ResultsError: the study was not made by a pressroom search.
    """
    record = attrs.get(SPACE)
    if not isinstance(record, dict) or "units" not in record:
        raise ResultsError(f"study {study!r} was not made by a pressroom search (it has no {SPACE!r} attribute)")
    return record


def profile_from_levels(record: Mapping[str, Any], levels: Sequence[int]) -> Profile:
    """A profile from level values in the order of the record's units.

    Raises:
        ResultsError: the number of levels is not the number of units.
    """
    units = list(record["units"])
    if len(levels) != len(units):
        raise ResultsError(f"expected {len(units)} levels (one per unit), got {len(levels)}")
    return Profile(
        dict(zip(units, (int(v) for v in levels), strict=True)),
        scheme=record["scheme"],
        model=str(record["model"]),
        granularity=str(record["granularity"]),
    )


def layers_from_records(records: Sequence[Mapping[str, Any]]) -> list[LayerInfo]:
    """`LayerInfo`s from their JSON form (what workers report and studies record)."""
    return [LayerInfo(**{**layer, "shape": tuple(layer["shape"])}) for layer in records]


def record_space(space: Space) -> dict[str, Any]:
    """What a study records of its space (``pressroom.space``): the summary, the unit names in
    order and the layers, so that `space_from_record` rebuilds it without loading the model."""
    layers = [{**dataclasses.asdict(layer), "shape": list(layer.shape)} for layer in space.layers]
    return {**space.summary(), "units": list(space.names), "layers": layers}


def space_from_record(record: Mapping[str, Any], study: str) -> Space:
    """The study's search space, rebuilt without loading the model.

    Raises:
        ResultsError: the study predates the recording of its layers.
    """
    if "layers" not in record:
        raise ResultsError(
            f"study {study!r} was recorded without its layers (by an older pressroom); "
            "only the pressroom JSON form of its profile can be written"
        )
    return Space(
        layers_from_records(record["layers"]),
        scheme_from_dict(dict(record["scheme"])),
        granularity=str(record["granularity"]),
        model=str(record["model"]),
    )


def find_best(storage: str | BaseStorage, study: str) -> Best:
    """The best profile of a study: the search's answer, else its best completed trial.

    Args:
        storage: a storage URL or an Optuna storage.
        study: the study name.

    Returns:
        The profile with its fitness, trial number and source.

    Raises:
        ResultsError: an unknown study, a study not made by pressroom, or one without a single
            completed final-stage trial yet (the message counts its trials by state).

    Example:
        >>> best = find_best("sqlite:///pressroom.db", "tiny-llama-bits-3.5-evopress-seed0")  # doctest: +SKIP
        >>> best.source, best.trial, round(best.fitness, 4)  # doctest: +SKIP
        ('search', 41, 0.0123)
    """
    rdb = open_storage(storage)
    study_id, attrs = study_attrs(rdb, study)
    record = space_record(attrs, study)
    trials = rdb.get_all_trials(study_id, deepcopy=False)
    completed = [t for t in trials if _is_final(t)]
    answer = attrs.get(BEST)
    if answer is not None:
        levels = [int(v) for v in answer["levels"]]
        fitness = float(answer["fitness"])
        matches = [t.number for t in completed if t.user_attrs["levels"] == levels and fitness_of(t) == fitness]
        trial = matches[-1] if matches else None
        heldout = attrs.get(HELDOUT, {}).get("best")
        profile = profile_from_levels(record, levels)
        return Best(profile, fitness, study, trial, FROM_SEARCH, answer.get("algorithm"), heldout)
    if not completed:
        counts = ", ".join(f"{state.lower()} {n}" for state, n in sorted(describe_trials(trials).items()))
        raise ResultsError(
            f"study {study!r} has no completed final-stage trial yet ({counts or 'no trials'}); "
            "a profile becomes available when a candidate passes its last selection stage"
        )
    winner = min(completed, key=lambda t: (fitness_of(t) or 0.0, t.number))
    value = fitness_of(winner)
    assert value is not None, "_is_final keeps trials with a value"
    logger.info("study %s has no final answer yet; using its best completed trial %d", study, winner.number)
    return Best(
        profile_from_levels(record, winner.user_attrs["levels"]),
        value,
        study,
        winner.number,
        FROM_TRIAL,
        winner.user_attrs.get("algorithm"),
    )


def load_best(storage: str | BaseStorage, study: str) -> Profile:
    """The best profile a search found (see `find_best` for which one, and the errors).

    Example:
        >>> profile = load_best("sqlite:///pressroom.db", "minilm-sparsity-0.6-evopress-seed0")  # doctest: +SKIP
        >>> profile.to_json()  # doctest: +SKIP
    """
    return find_best(storage, study).profile


def study_space(storage: str | BaseStorage, study: str) -> Space:
    """The search space of a study, rebuilt from what it recorded (no model is loaded).

    Raises:
        ResultsError: unknown study, not a pressroom study, or one recorded without its layers.
    """
    rdb = open_storage(storage)
    _, attrs = study_attrs(rdb, study)
    return space_from_record(space_record(attrs, study), study)


def study_spec(storage: str | BaseStorage, study: str) -> dict[str, Any]:
    """The (redacted) spec the study was searched with, as data.

    Raises:
        ResultsError: unknown study, or one without a recorded spec.
    """
    rdb = open_storage(storage)
    _, attrs = study_attrs(rdb, study)
    spec = attrs.get(SPEC)
    if not isinstance(spec, dict):
        raise ResultsError(f"study {study!r} has no recorded spec (attribute {SPEC!r}); pass the spec file instead")
    return spec


def evaluator_spec_from(spec: Mapping[str, Any], cache_dir: str | None = None) -> EvaluatorSpec:
    """The evaluator part (model, task, compression, data, seed, cache) of a recorded spec.

    Args:
        spec: a `Spec.public_dict()` as a study records it.
        cache_dir: where compression databases live here, if not where the search kept them.

    Raises:
        ResultsError: the recorded sections no longer validate.
    """
    keys = ("model", "task", "compression", "data", "seed", "cache_dir")
    data = {key: spec[key] for key in keys if key in spec}
    compression = data.get("compression")
    if isinstance(compression, dict) and "tie_fused" not in compression:
        data["compression"] = {**compression, "tie_fused": False}  # recorded before there were tied units
    if cache_dir is not None:
        data["cache_dir"] = cache_dir
    try:
        return EvaluatorSpec.model_validate(data)
    except ValueError as exc:
        raise ResultsError(f"the study's recorded spec does not validate any more: {exc}") from None


def _is_final(trial: FrozenTrial) -> bool:
    """COMPLETE with a value and a recorded profile: a member that passed every stage."""
    return (
        trial.state == TrialState.COMPLETE
        and fitness_of(trial) is not None
        and isinstance(trial.user_attrs.get("levels"), list)
    )


__all__ = [
    "FROM_SEARCH",
    "FROM_TRIAL",
    "Best",
    "ResultsError",
    "evaluator_spec_from",
    "find_best",
    "layers_from_records",
    "load_best",
    "open_storage",
    "profile_from_levels",
    "record_space",
    "space_from_record",
    "space_record",
    "study_attrs",
    "study_space",
    "study_spec",
]
