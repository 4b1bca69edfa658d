"""`pressroom search` under storage faults and against a second coordinator (real Ray, PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.driver.run import HELDOUT
from search.storage.lease import LEASE
from tests.search.faults import sitecustomize

pytestmark = [pytest.mark.ray, pytest.mark.postgres, pytest.mark.slow]

PRESSROOM = str(Path(sys.executable).with_name("pressroom"))


def _with_fault(folder: str) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([folder, os.environ.get("PYTHONPATH", "")])}


def _members(url: str, study: str) -> Counter[tuple[int, int]]:
    """(generation, member) of every finished trial, counted: each must be there once."""
    trials = optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    done = (TrialState.COMPLETE, TrialState.PRUNED)
    return Counter((t.user_attrs["generation"], t.user_attrs["member"]) for t in trials if t.state in done)


def _check_whole(url: str, study: str) -> None:
    """The tiny search's 4 generations of 6 offspring: 2 survive stage 0, the parent is redrawn."""
    members = _members(url, study)
    assert set(members.values()) == {1}, "a member with two finished trials"
    states = Counter(t.state for t in optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False))
    assert states[TrialState.COMPLETE] == 4 * 3 and states[TrialState.PRUNED] == 4 * (6 - 2)


def test_a_rejected_write_stops_the_search_and_a_rerun_resumes_everything(
    write_spec, postgres_url, ray_head, run_cli, tmp_path
):
    spec = write_spec("rejected.yaml")
    args = [
        "search",
        str(spec),
        "--storage",
        postgres_url,
        "--ray-address",
        ray_head.address,
        "--study",
        "rejected-by-cli",
    ]
    # the 2nd write of objective values fails, and so does every later one, through either store
    fault = sitecustomize(tmp_path / "fault", "trial_values", skip=1)
    failed = run_cli(*args, env=_with_fault(fault))
    assert failed.returncode == 2, failed.stderr
    # the rejection surfaces as the database's IntegrityError, or as Optuna's False for a trial it
    # could not finish (`set_trial_state_values` swallows the IntegrityError)
    rejected = failed.stderr.split("error: a trial write was rejected (", 1)[-1]
    assert "IntegrityError: injected" in rejected or "(an integrity error)" in rejected, failed.stderr
    assert "Traceback" not in failed.stderr
    study = optuna.load_study(study_name="rejected-by-cli", storage=postgres_url)
    assert LEASE not in study.user_attrs  # released on the way out
    assert 0 < len(study.get_trials(states=(TrialState.COMPLETE,))) < 12
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming study rejected" in rerun.stderr
    _check_whole(postgres_url, "rejected-by-cli")


def test_a_lost_connection_at_the_held_out_write_is_retried(write_spec, postgres_url, ray_head, run_cli, tmp_path):
    spec = write_spec("heldout.yaml")
    args = ["search", str(spec), "--storage", postgres_url, "--ray-address", ray_head.address, "--study", "heldout"]
    fault = sitecustomize(
        tmp_path / "fault", "study_user_attributes", times=1, holding=HELDOUT, error="OperationalError"
    )
    run = run_cli(*args, env=_with_fault(fault))
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "retrying" in run.stderr
    study = optuna.load_study(study_name="heldout", storage=postgres_url)
    assert set(study.user_attrs[HELDOUT]) == {"uniform", "best"}
    _check_whole(postgres_url, "heldout")


def test_a_second_coordinator_on_a_study_is_refused_and_the_first_untouched(
    write_spec, postgres_url, ray_head, run_cli
):
    algorithm = {"name": "evopress", "params": {"generations": 60, "offspring": 6, "stages": [[2, 1024], [1, 2048]]}}
    spec = write_spec("twice.yaml", algorithm=algorithm)
    args = ["search", str(spec), "--storage", postgres_url, "--ray-address", ray_head.address, "--study", "twice"]
    first = subprocess.Popen([PRESSROOM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while first.poll() is None and time.monotonic() < deadline:  # until the first holds the lease
            try:
                if LEASE in optuna.load_study(study_name="twice", storage=postgres_url).user_attrs:
                    break
            except KeyError:  # no study yet
                pass
            time.sleep(0.1)
        second = run_cli(*args)
        assert first.poll() is None, "the first search ended before the second started"
        assert second.returncode == 2, second.stderr
        assert f"another coordinator (host {os.uname().nodename}, pid {first.pid}, started " in second.stderr
        assert "Traceback" not in second.stderr
        _, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    trials = optuna.load_study(study_name="twice", storage=postgres_url).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.FAIL or "fail_reason" in t.user_attrs]
    assert set(_members(postgres_url, "twice").values()) == {1}
