"""The trial writer's two stores: direct SQL and Optuna's public API give the same trials."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages._rdb import models
from optuna.trial import TrialState, create_trial

from search.storage import trial_store
from search.storage.study import Evaluation, SearchStudy, connect
from search.storage.trial_store import ApiTrialStore, SqlTrialStore, TrialRows
from search.storage.writer import TrialWriter


def _study(url: str, name: str, metrics: tuple[str, ...] = ("fitness",)) -> SearchStudy:
    return SearchStudy.open(connect(url), name, fingerprint="f", attrs={"spec": "s"}, metrics=metrics)


def _evaluation(member: int, stage: int, fitness: float | None, tokens: int) -> Evaluation:
    return Evaluation(10 * member + stage, member, stage, fitness, tokens, 0.05, "w0", TrialState.RUNNING)


DISTRIBUTIONS = {"sparsity blocks 0-1": FloatDistribution(0.25, 0.75), "bits q_proj": FloatDistribution(2.0, 8.0)}


def _search(writer: TrialWriter, objectives: int) -> None:
    """Every kind of event, some members stored in several passes, some in one."""
    final = [0.5] if objectives == 1 else [0.5, 2.0]
    params = {"sparsity blocks 0-1": 0.5, "bits q_proj": 3.5}
    writer.begin(0, {"member": 0, "generation": 0, "levels": [1, 2, 3]}, params, DISTRIBUTIONS)
    writer.record(0, _evaluation(0, 0, 0.9, 256), {"stage": 0, "worker": "w0"})
    writer.record(0, _evaluation(0, 1, 0.7, 1024), {"stage": 1, "worker": "w1"})
    writer.finish(0, TrialState.COMPLETE, final)
    writer.begin(1, {"member": 1, "levels": [0, 0, 0]}, params, DISTRIBUTIONS)
    writer.flush()  # stored RUNNING, then changed in later passes
    writer.begin(1, {"member": 1}, {"bits q_proj": 4.0}, DISTRIBUTIONS)  # a stored trial's parameters stay
    writer.record(1, _evaluation(1, 0, math.inf, 256), {"stage": 0, "worker": "w0", "attempts": 2})
    writer.flush()
    writer.record(1, _evaluation(1, 1, math.nan, 1024), {"stage": 1, "worker": "w0"})
    writer.finish(1, TrialState.PRUNED)
    writer.begin(2, {"member": 2, "levels": [3, 3, 3]})
    writer.record(2, _evaluation(2, 0, None, 0), {"stage": 0, "worker": "w1", "last_error": "boom"})
    writer.flush()
    writer.finish(2, TrialState.FAIL)
    writer.begin(3, {"member": 3, "levels": [2, 2, 2]})  # left RUNNING
    writer.checkpoint({"next_id": 4}, {"fraction": 0.5})
    writer.adopt(4)
    writer.finish(4, TrialState.COMPLETE, final)  # finished before a restart: nothing is written
    writer.begin(5, {"member": 5})
    writer.flush()
    writer.finish(5, TrialState.COMPLETE, final)
    writer.study_attr("pressroom.best", {"fitness": 0.5})
    assert writer.close(timeout=60)
    assert writer.error is None


def _trials(study: SearchStudy) -> list[tuple[Any, ...]]:
    out = []
    for trial in study.trials():
        assert trial.datetime_start is not None
        assert (trial.datetime_complete is not None) == trial.state.is_finished()
        intermediate = {step: "nan" if math.isnan(v) else v for step, v in trial.intermediate_values.items()}
        out.append(
            (trial.number, trial.state, trial.values, intermediate, trial.user_attrs, trial.params, trial.distributions)
        )
    return out


@pytest.mark.parametrize("objectives", [1, 2])
def test_direct_sql_and_the_public_api_store_identical_trials(storage_url, objectives):
    metrics = ("fitness", "latency")[:objectives]
    stored = {}
    for direct in (True, False):
        study = _study(storage_url, f"same-{direct}-{objectives}", metrics)
        writer = TrialWriter(study, direct=direct)
        assert isinstance(writer.store, SqlTrialStore if direct else ApiTrialStore)
        _search(writer, objectives)
        stored[direct] = (_trials(study), study.user_attrs())
    assert stored[True] == stored[False]
    trials, attrs = stored[True]
    assert [t[1] for t in trials] == [
        TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.COMPLETE
    ]  # fmt: skip
    assert trials[1][3] == {256: math.inf, 1024: "nan"} and trials[1][4]["attempts"] == 2
    assert trials[0][5] == {"sparsity blocks 0-1": 0.5, "bits q_proj": 3.5} and trials[0][6] == DISTRIBUTIONS
    assert trials[1][5] == {"sparsity blocks 0-1": 0.5, "bits q_proj": 3.5} and trials[2][5] == {}
    assert attrs["pressroom.checkpoint"] == '{"next_id": 4}' and attrs["pressroom.best"] == {"fitness": 0.5}


def test_a_pass_is_one_transaction_numbered_after_trials_made_elsewhere(storage_url):
    study = _study(storage_url, "numbers")
    study.storage.create_new_trial(study.id, template_trial=create_trial(state=TrialState.RUNNING))
    store = SqlTrialStore.for_storage(study.storage)
    assert store is not None
    rows = [TrialRows(m, None, datetime.now(), state=TrialState.RUNNING, attrs={"member": m}) for m in range(3)]
    attrs = {"pressroom.progress": {"fraction": 0.1}}
    assert store.write(study.id, rows, attrs) == 1
    assert all(row.empty for row in rows) and attrs == {}
    assert [t.number for t in study.trials()] == [0, 1, 2, 3]
    assert [t.user_attrs.get("member") for t in study.trials()] == [None, 0, 1, 2]


def test_a_failed_pass_stores_nothing_and_keeps_its_rows(storage_url):
    study = _study(storage_url, "atomic")
    store = SqlTrialStore.for_storage(study.storage)
    assert store is not None
    rows = [
        TrialRows(0, None, datetime.now(), state=TrialState.RUNNING, attrs={"member": 0}),
        TrialRows(1, None, datetime.now(), state=TrialState.RUNNING, attrs={"member": 1, "bad": object()}),
    ]
    with pytest.raises(TypeError):
        store.write(study.id, rows, {"pressroom.progress": 1})
    assert study.trials() == [] and "pressroom.progress" not in study.user_attrs()
    assert [row.trial_id for row in rows] == [None, None] and rows[1].attrs["member"] == 1
    del rows[1].attrs["bad"]
    store.write(study.id, rows, {})
    assert [t.user_attrs["member"] for t in study.trials()] == [0, 1]


def test_an_unknown_schema_revision_falls_back_to_the_public_api(tmp_path, monkeypatch):
    monkeypatch.setattr(trial_store, "SCHEMAS", frozenset({"v0.0.0"}))
    study = _study(f"sqlite:///{tmp_path / 'old.db'}", "old")
    writer = TrialWriter(study)
    assert isinstance(writer.store, ApiTrialStore)
    _search(writer, 1)
    assert len(study.trials()) == 5


def test_an_optuna_release_it_was_not_checked_against_falls_back_when_created(tmp_path, monkeypatch):
    study = _study(f"sqlite:///{tmp_path / 'next.db'}", "next")
    assert SqlTrialStore.for_storage(study.storage) is not None
    monkeypatch.setattr(optuna, "__version__", "5.2.0")
    assert SqlTrialStore.for_storage(study.storage) is None
    assert isinstance(TrialWriter(study).store, ApiTrialStore)


def test_a_renamed_private_optuna_function_falls_back_when_created_not_when_writing(tmp_path, monkeypatch):
    study = _study(f"sqlite:///{tmp_path / 'renamed.db'}", "renamed")
    monkeypatch.delattr(models.TrialIntermediateValueModel, "intermediate_value_to_stored_repr")
    writer = TrialWriter(study)
    monkeypatch.undo()  # Optuna's own API needs the function back
    assert isinstance(writer.store, ApiTrialStore)
    _search(writer, 1)
    assert len(study.trials()) == 5
