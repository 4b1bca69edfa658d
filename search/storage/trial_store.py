"""Storing one pass of the trial writer: through Optuna's public API, or in one SQL transaction.

Optuna's public storage API commits each trial, parameter, user attribute and intermediate value in its own
ORM transaction. Recording one evaluation that way cost the coordinator about 20 ms of CPU, which
held one driver near 50 evaluations per second (`benchmarks/coordinator.py`). `SqlTrialStore`
writes the same rows with SQLAlchemy Core, every trial of a pass in one transaction, into the
tables Optuna's own models define, numbering new trials under the study-row lock Optuna takes, so
Optuna, the dashboard and `pressroom status` read them as their own. It is used only on an Optuna
release (`OPTUNA_RELEASES`) and schema revision (`SCHEMAS`) it was checked against: Optuna 5.1
changed how datetimes are stored under an unchanged revision, so the revision alone does not say
what the tables hold. Every private name it uses is resolved when it is created, so a release
that renamed one falls back at once instead of failing a write. Elsewhere `ApiTrialStore` writes
through the public API. The two stores give identical trials (`tests/search/storage/test_trial_store.py`).

Both follow one contract: `write` removes from each `TrialRows` what it stored, so after an
exception the rows hold exactly what is still to write, and writing them again neither duplicates
a trial nor touches a finished one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.storages import RDBStorage
from optuna.trial import TrialState, create_trial
from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

logger = logging.getLogger(__name__)

SCHEMAS = frozenset({"v3.2.0.a"})  # Optuna's alembic revisions whose tables SqlTrialStore writes
OPTUNA_RELEASES = frozenset({"5.1"})  # Optuna's major.minor releases whose tables SqlTrialStore writes


@dataclass
class TrialRows:
    """What one pass stores for one trial.

    Args:
        member: the member the trial records.
        trial_id: the trial's id; None creates it.
        started: when the member's first evaluation was dispatched (naive local time, as Optuna).
        state: the state to set (a new trial needs one); None leaves it.
        values: one per objective, with a COMPLETE state.
        attrs: user attributes to set.
        intermediate: intermediate values to set, by step.
        params: parameter values of a trial this creates (the profile's summary); Optuna sets
            parameters once, so an existing trial's are left as they are.
        distributions: the distribution of each parameter in `params`.
    """

    member: int
    trial_id: int | None
    started: datetime
    state: TrialState | None = None
    values: list[float] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)
    params: dict[str, float] = field(default_factory=dict)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)

    def stored(self) -> None:
        """Everything in these rows is stored."""
        self.state, self.values = None, None
        self.attrs.clear()
        self.intermediate.clear()
        self.params.clear()

    @property
    def empty(self) -> bool:
        return (
            self.trial_id is not None
            and self.state is None
            and not self.attrs
            and not self.intermediate
            and not self.params
        )


class RefusedWrite(RuntimeError):
    """The storage refused a write without raising (Optuna's API returned False)."""


class TrialStore(Protocol):
    """Stores the rows of one writer pass and the study attributes that go with it."""

    def write(self, study_id: int, rows: Iterable[TrialRows], study_attrs: dict[str, Any]) -> int:
        """Store and empty `rows` and `study_attrs`; returns the number of transactions."""


class ApiTrialStore:
    """Optuna's public storage API: one transaction per trial creation, attribute and value."""

    def __init__(self, storage: RDBStorage) -> None:
        self.storage = storage

    def write(self, study_id: int, rows: Iterable[TrialRows], study_attrs: dict[str, Any]) -> int:
        storage, calls = self.storage, 0
        for row in rows:
            if row.trial_id is None:
                assert row.state is not None, "a new trial needs a state"
                template = create_trial(
                    state=row.state,
                    values=row.values if row.state == TrialState.COMPLETE else None,
                    user_attrs=row.attrs,
                    intermediate_values=row.intermediate,
                    params=row.params,
                    distributions={name: row.distributions[name] for name in row.params},
                )
                template.datetime_start = row.started
                row.trial_id = storage.create_new_trial(study_id, template_trial=template)
                row.stored()
                calls += 1
                continue
            row.params.clear()  # Optuna sets a trial's parameters once, when it is created
            for step in list(row.intermediate):
                storage.set_trial_intermediate_value(row.trial_id, step, row.intermediate.pop(step))
                calls += 1
            for key in list(row.attrs):
                storage.set_trial_user_attr(row.trial_id, key, row.attrs[key])
                del row.attrs[key]
                calls += 1
            if row.state is not None:
                # Optuna answers an IntegrityError here with False, not an exception
                if not storage.set_trial_state_values(row.trial_id, row.state, row.values):
                    raise RefusedWrite(
                        f"Optuna's storage refused to set trial {row.trial_id} {row.state.name}"
                        f" with values {row.values} (an integrity error)"
                    )
                row.stored()
                calls += 1
        for key in list(study_attrs):
            storage.set_study_user_attr(study_id, key, study_attrs.pop(key))
            calls += 1
        return calls


class SqlTrialStore:
    """Optuna's tables written with SQLAlchemy Core: a whole pass in one transaction.

    Use `for_storage`, which checks the Optuna release and schema revision.

    Raises:
        AttributeError: `models` lacks a table or function this store uses.
    """

    def __init__(self, storage: RDBStorage, models: Any) -> None:
        self.engine = storage.engine
        self.studies = models.StudyModel.__table__
        self.trials = models.TrialModel.__table__
        self.values = models.TrialValueModel.__table__
        self.intermediate = models.TrialIntermediateValueModel.__table__
        self.user_attrs = models.TrialUserAttributeModel.__table__
        self.study_attrs = models.StudyUserAttributeModel.__table__
        self.params = models.TrialParamModel.__table__
        self._distribution_json: dict[BaseDistribution, str] = {}  # one text per distribution, made once
        self.value_repr = models.TrialValueModel.value_to_stored_repr
        self.intermediate_repr = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr

    @classmethod
    def for_storage(cls, storage: RDBStorage) -> SqlTrialStore | None:
        """The store for `storage`, or None where the Optuna release, its schema or its table
        definitions are not ones this module knows (the caller then uses `ApiTrialStore`)."""
        release = ".".join(optuna.__version__.split(".")[:2])
        if release not in OPTUNA_RELEASES:
            logger.info("Optuna %s is not a release pressroom writes directly; using Optuna's API", optuna.__version__)
            return None
        version = storage.get_current_version()
        if version not in SCHEMAS:
            logger.info("Optuna schema %s is not one pressroom writes directly; using Optuna's API", version)
            return None
        try:
            from optuna.storages._rdb import models  # Optuna's table definitions

            return cls(storage, models)
        except (ImportError, AttributeError) as exc:
            logger.info("Optuna's table definitions differ from what pressroom writes (%s); using Optuna's API", exc)
            return None

    def write(self, study_id: int, rows: Iterable[TrialRows], study_attrs: dict[str, Any]) -> int:
        rows = list(rows)
        now = _utc(datetime.now())
        with self.engine.begin() as conn:
            created = self._create(conn, study_id, [row for row in rows if row.trial_id is None], now)
            pairs = [(row, created[id(row)] if row.trial_id is None else row.trial_id) for row in rows]
            old = {row.trial_id for row in rows if row.trial_id is not None}
            intermediate = [
                (trial_id, step, self._intermediate(value))
                for row, trial_id in pairs
                for step, value in row.intermediate.items()
            ]
            self._replace(conn, self.intermediate, "step", intermediate, old)
            attrs = [
                (trial_id, key, {"value_json": json.dumps(value)})
                for row, trial_id in pairs
                for key, value in row.attrs.items()
            ]
            self._replace(conn, self.user_attrs, "key", attrs, old)
            params = [
                {"trial_id": trial_id, "param_name": name, **self._param(value, row.distributions[name])}
                for row, trial_id in pairs
                if trial_id not in old
                for name, value in row.params.items()
            ]
            if params:
                conn.execute(insert(self.params), params)
            self._set_values(conn, pairs)
            finished = [
                {"b_id": trial_id, "state": row.state, "datetime_complete": now if row.state.is_finished() else None}
                for row, trial_id in pairs
                if trial_id in old and row.state is not None
            ]
            if finished:
                conn.execute(update(self.trials).where(self.trials.c.trial_id == bindparam("b_id")), finished)
            self._set_study_attrs(conn, study_id, study_attrs)
        for row, trial_id in pairs:
            row.trial_id = trial_id
            row.stored()
        study_attrs.clear()
        return 1

    def _create(self, conn: Connection, study_id: int, new: list[TrialRows], now: datetime) -> dict[int, int]:
        """Insert the new trials, numbered after the study's last, under Optuna's study-row lock."""
        if not new:
            return {}
        studies, trials = self.studies, self.trials
        conn.execute(select(studies.c.study_id).where(studies.c.study_id == study_id).with_for_update())
        first = conn.execute(select(func.count()).select_from(trials).where(trials.c.study_id == study_id)).scalar_one()
        records = []
        for number, row in enumerate(new, start=first):
            assert row.state is not None, "a new trial needs a state"
            records.append({
                "number": number, "study_id": study_id, "state": row.state,
                "datetime_start": _utc(row.started), "datetime_complete": now if row.state.is_finished() else None,
            })  # fmt: skip
        result = conn.execute(insert(trials).returning(trials.c.trial_id, sort_by_parameter_order=True), records)
        return {id(row): trial_id for row, (trial_id,) in zip(new, result, strict=True)}

    def _set_values(self, conn: Connection, pairs: list[tuple[TrialRows, int]]) -> None:
        """The objective values of trials that are COMPLETE now."""
        records = []
        for row, trial_id in pairs:
            if row.state == TrialState.COMPLETE and row.values:
                for objective, value in enumerate(row.values):
                    number, kind = self.value_repr(value)
                    records.append({"trial_id": trial_id, "objective": objective, "value": number, "value_type": kind})
        if records:
            conn.execute(insert(self.values), records)

    def _param(self, value: float, distribution: BaseDistribution) -> dict[str, Any]:
        """A parameter's columns, as Optuna's `set_trial_param` stores them."""
        text = self._distribution_json.get(distribution)
        if text is None:
            text = self._distribution_json[distribution] = distribution_to_json(distribution)
        return {"param_value": distribution.to_internal_repr(value), "distribution_json": text}

    def _intermediate(self, value: float) -> dict[str, Any]:
        stored, kind = self.intermediate_repr(value)
        return {"intermediate_value": stored, "intermediate_value_type": kind}

    def _replace(
        self,
        conn: Connection,
        table: Any,
        column: str,
        items: Sequence[tuple[int, Any, Mapping[str, Any]]],
        old: set[int],
    ) -> None:
        """Set (trial, `column`) -> columns: delete what existing trials hold under those keys, insert."""
        stale = [{"b_id": trial_id, "b_key": key} for trial_id, key, _ in items if trial_id in old]
        if stale:
            conn.execute(
                delete(table).where(table.c.trial_id == bindparam("b_id"), table.c[column] == bindparam("b_key")),
                stale,
            )
        if items:
            conn.execute(insert(table), [{"trial_id": trial_id, column: key, **cols} for trial_id, key, cols in items])

    def _set_study_attrs(self, conn: Connection, study_id: int, attrs: dict[str, Any]) -> None:
        if not attrs:
            return
        table = self.study_attrs
        conn.execute(delete(table).where(table.c.study_id == study_id, table.c.key.in_(list(attrs))))
        conn.execute(
            insert(table), [{"study_id": study_id, "key": key, "value_json": json.dumps(v)} for key, v in attrs.items()]
        )


def _utc(local: datetime) -> datetime:
    """Naive local time as the naive UTC Optuna's RDB tables hold."""
    return local.astimezone(UTC).replace(tzinfo=None)
