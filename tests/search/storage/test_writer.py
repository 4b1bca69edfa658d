"""The trial writer under storage faults: retried, stored another way, or stopped, never dropped."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import exc as sa_exc

from search.storage.study import CHECKPOINT, Evaluation, SearchStudy, connect
from search.storage.trial_store import ApiTrialStore, SqlTrialStore
from search.storage.writer import StorageWriteError, TrialWriter
from tests.search.faults import Reject


def _study(url: str, name: str) -> SearchStudy:
    return SearchStudy.open(connect(url), name, fingerprint="f", attrs={}, metrics=("fitness",))


def _member(writer: TrialWriter, member: int, fitness: float) -> None:
    writer.begin(member, {"member": member})
    evaluation = Evaluation(member, member, 0, fitness, 256, 0.01, "w0", TrialState.RUNNING)
    writer.record(member, evaluation, {"stage": 0, "worker": "w0"})
    writer.finish(member, TrialState.COMPLETE, fitness)


def _members(study: SearchStudy) -> dict[int, float | None]:
    return {t.user_attrs["member"]: t.value for t in study.trials()}


def test_a_write_the_direct_store_rejects_is_stored_through_optunas_api(storage_url):
    study = _study(storage_url, "fallback")
    writer = TrialWriter(study)
    assert isinstance(writer.store, SqlTrialStore)
    with Reject("trials", times=1) as fault:  # the first pass's INSERT INTO trials
        _member(writer, 0, 0.5)
        writer.flush()
    assert fault.rejected == 1
    _member(writer, 1, 0.25)
    assert writer.close(timeout=60)
    assert _members(study) == {0: 0.5, 1: 0.25}  # before: member 0 was dropped, and close() said True
    assert writer.error is None and isinstance(writer.store, ApiTrialStore)


def test_a_write_no_store_accepts_stops_the_writer_and_nothing_after_it_is_stored(storage_url):
    study = _study(storage_url, "rejected")
    writer = TrialWriter(study)
    _member(writer, 0, 0.5)
    writer.checkpoint({"next_id": 1}, {"fraction": 0.5})
    writer.flush()
    with Reject("trial_values"):  # member 1 can be created, never completed, by either store
        _member(writer, 1, 0.25)
        writer.checkpoint({"next_id": 2}, {"fraction": 1.0})
        with pytest.raises(StorageWriteError, match="IntegrityError: injected"):
            writer.flush()
    with pytest.raises(StorageWriteError):
        _member(writer, 2, 0.125)  # a stopped writer takes no more events
    with pytest.raises(StorageWriteError, match="rerun to resume"):
        writer.close(timeout=60)
    # the stored checkpoint is the one before the rejected pass, so a rerun redoes member 1
    assert json.loads(study.user_attrs()[CHECKPOINT]) == {"next_id": 1}
    assert {t.user_attrs["member"]: t.state for t in study.trials() if t.state.is_finished()} == {
        0: TrialState.COMPLETE
    }


def test_a_refused_finish_of_a_stored_trial_stops_the_writer_before_the_checkpoint(storage_url):
    """Optuna's `set_trial_state_values` answers an IntegrityError with False instead of raising;
    taken as stored, it let the checkpoint after it through while the trial stayed RUNNING, and a
    rerun then never finished that member (seen under load, where passes hold more events)."""
    study = _study(storage_url, "refused-finish")
    writer = TrialWriter(study)
    writer.begin(0, {"member": 0})
    writer.record(0, Evaluation(0, 0, 0, 0.5, 256, 0.01, "w0", TrialState.RUNNING), {"stage": 0})
    writer.checkpoint({"next_id": 1}, {"fraction": 0.5})
    writer.flush()  # member 0's trial exists, RUNNING
    with Reject("trial_values"):  # refused through the direct store and through Optuna's API
        writer.finish(0, TrialState.COMPLETE, 0.5)
        writer.checkpoint({"next_id": 2}, {"fraction": 1.0})
        with pytest.raises(StorageWriteError, match="refused to set trial"):
            writer.flush()
    assert json.loads(study.user_attrs()[CHECKPOINT]) == {"next_id": 1}
    assert [t.state for t in study.trials()] == [TrialState.RUNNING]


def test_a_lost_connection_is_retried_also_through_optunas_api(storage_url):
    """Optuna wraps a lost connection in StorageInternalError; the writer still retries it."""
    study = _study(storage_url, "api-retry")
    writer = TrialWriter(study, retry_s=0.01, direct=False)
    calls = []
    write = writer.store.write

    def flaky(*args):
        calls.append(1)
        if len(calls) == 1:
            lost = sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))
            raise optuna.exceptions.StorageInternalError("commit failed") from lost
        return write(*args)

    writer.store.write = flaky  # type: ignore[method-assign]
    _member(writer, 0, 0.5)
    assert writer.close(timeout=60)
    assert len(calls) == 2 and _members(study) == {0: 0.5}


def test_a_trial_added_after_the_search_is_retried_like_every_write(storage_url):
    """The latency search's measured trials: a lost connection delays them, never drops them."""
    study = SearchStudy.open(connect(storage_url), "added", fingerprint="f", attrs={}, metrics=("fitness", "latency"))
    writer = TrialWriter(study, retry_s=0.01)
    write, calls = writer.store.write, []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 1:
            raise sa_exc.OperationalError("INSERT", {}, Exception("server closed the connection"))
        return write(*args)

    writer.store.write = flaky  # type: ignore[method-assign]
    writer.add_trial([0.5, 0.75], {"levels": [1, 2], "measured_from_trial": 3})
    assert writer.close(timeout=60)
    (trial,) = study.trials()
    assert len(calls) == 2 and trial.state == TrialState.COMPLETE and trial.values == [0.5, 0.75]
    assert trial.user_attrs["measured_from_trial"] == 3
