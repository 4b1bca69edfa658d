"""Optuna storage I/O for one search: trials, checkpoints and the evaluation log.

One study per search; one trial per *member* (a profile within a generation), with one
intermediate value per selection stage (step = tokens), PRUNED when a stage drops it, COMPLETE
with its last-stage fitness otherwise. The profile is one JSON user attribute: at 224 layers, a
trial with 224 Optuna parameters took 461 ms to create on PostgreSQL against 12 ms with one JSON
attribute (`benchmarks/storage.py`), and the dashboard cannot show 224 parameters usefully anyway.
Instead a trial has a dozen Optuna parameters that summarise its profile (average levels per
block group and layer type, `search.results.summary`), for the dashboard's parameter plots.

Only the coordinator writes, through `writer.TrialWriter`, on a background thread.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import exc as sa_exc

from ..secrets import redact_text, redact_url, url_secrets

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the live view

CHECKPOINT = "pressroom.checkpoint"
PROGRESS = "pressroom.progress"
BEST = "pressroom.best"
HELDOUT = "pressroom.heldout"  # the held-out report of a finished search: uniform and best
FINGERPRINT = "pressroom.fingerprint"
SPEC = "pressroom.spec"
SPACE = "pressroom.space"
EVALUATIONS = "evaluations"
METRIC = "fitness"


class StorageError(RuntimeError):
    """The storage cannot be used; the message says why and never holds a password."""


def reason(exc: BaseException) -> str:
    """The first line of what the database (or SQLAlchemy) said, without the statement."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(url: str) -> RDBStorage:
    """An Optuna RDB storage for `url`, with connections checked before use.

    Raises:
        StorageError: a malformed URL, an unknown driver, an unreachable server or refused
            credentials; the message names the redacted URL and the server's reason.
    """
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        return RDBStorage(url, engine_kwargs=kwargs)
    except (sa_exc.SQLAlchemyError, ValueError, ImportError) as exc:
        why = redact_text(reason(exc), url_secrets(url))
        raise StorageError(f"cannot use storage {redact_url(url)}: {why}") from None


def check_fingerprint(storage: RDBStorage, name: str, fingerprint: str) -> bool:
    """Whether study `name` exists; writes nothing.

    Raises:
        StorageError: it exists and belongs to another spec.
    """
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False
    found = storage.get_study_user_attrs(study_id).get(FINGERPRINT)
    if found != fingerprint:
        raise StorageError(
            f"study {name!r} belongs to a different search (spec fingerprint {found}, this spec "
            f"{fingerprint}); choose another --study name or restore the spec that made it"
        )
    return True


@dataclass
class Evaluation:
    """One evaluation as the storage recorded it (the coordinator replays these on resume)."""

    id: int
    member: int
    stage: int
    fitness: float | None
    tokens: int
    seconds: float
    worker: str
    trial_state: TrialState
    cpu_seconds: float = 0.0  # the worker process's CPU time on it (0 in records from before it was kept)

    def to_attr(self) -> dict[str, Any]:
        return {
            "id": self.id, "stage": self.stage, "fitness": self.fitness, "tokens": self.tokens,
            "seconds": round(self.seconds, 4), "cpu_seconds": round(self.cpu_seconds, 4), "worker": self.worker,
        }  # fmt: skip


class SearchStudy:
    """The study of one search: creation, the spec check, checkpoints, reading trials.

    Args:
        storage: from `connect`.
        name: the study name.
    """

    def __init__(self, storage: RDBStorage, name: str) -> None:
        self.storage = storage
        self.name = name
        self.study = optuna.load_study(study_name=name, storage=storage)
        self.id = self.study._study_id

    @classmethod
    def open(
        cls,
        storage: RDBStorage,
        name: str,
        *,
        fingerprint: str,
        attrs: Mapping[str, Any],
        metrics: Sequence[str] = (METRIC,),
    ) -> SearchStudy:
        """Create the study, or reopen it if it belongs to the same spec.

        Args:
            storage: from `connect`.
            name: the study name.
            fingerprint: the spec's fingerprint.
            attrs: study user attributes to write when the study is created.
            metrics: one name per objective, all minimised; the first is the fitness. Two give
                a multi-objective study (e.g. fitness and latency), whose COMPLETE trials hold
                one value per metric and whose Pareto front the dashboard draws.

        Raises:
            StorageError: the study exists and was made by a different spec.
        """
        if not check_fingerprint(storage, name, fingerprint):
            study_id = storage.create_new_study([StudyDirection.MINIMIZE] * len(metrics), name)
            for key, value in {**attrs, FINGERPRINT: fingerprint}.items():
                storage.set_study_user_attr(study_id, key, value)
            with warnings.catch_warnings():  # set_metric_names is marked experimental, and is what the dashboard reads
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.load_study(study_name=name, storage=storage).set_metric_names(list(metrics))
        return cls(storage, name)

    def user_attrs(self) -> dict[str, Any]:
        return dict(self.storage.get_study_user_attrs(self.id))

    def load_checkpoint(self) -> dict[str, Any] | None:
        text = self.user_attrs().get(CHECKPOINT)
        return None if text is None else dict(json.loads(text))

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return list(self.storage.get_all_trials(self.id, deepcopy=False, states=states))

    def evaluations(self) -> dict[int, Evaluation]:
        """Every recorded evaluation by candidate id (failed trials included)."""
        out: dict[int, Evaluation] = {}
        for trial in self.trials():
            member = int(trial.user_attrs.get("member", -1))
            for record in trial.user_attrs.get(EVALUATIONS, []):
                out[int(record["id"])] = Evaluation(
                    int(record["id"]), member, int(record["stage"]), record["fitness"], int(record["tokens"]),
                    float(record["seconds"]), str(record["worker"]), trial.state,
                    float(record.get("cpu_seconds", 0.0)),
                )  # fmt: skip
        return out


def fitness_of(trial: FrozenTrial) -> float | None:
    """A trial's fitness: its first objective (a quality-vs-latency study has two values)."""
    return None if not trial.values else float(trial.values[0])


def describe_trials(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Counts of trials by state name."""
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts
