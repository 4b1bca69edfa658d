"""The study lease: one live coordinator per study, taken over only from a stopped one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from search.storage.lease import LEASE, Lease, LeaseError
from search.storage.study import SearchStudy, connect
from search.storage.writer import StorageWriteError, TrialWriter


def _study(url: str, name: str) -> SearchStudy:
    return SearchStudy.open(connect(url), name, fingerprint="f", attrs={}, metrics=("fitness",))


def _holder(study: SearchStudy, **fields) -> None:
    """Another coordinator's lease, as it would have stored it."""
    record = {"host": "elsewhere", "pid": 1, "ns": "", "started": "2030-01-01T00:00:00+00:00",
              "heartbeat": time.time(), "beat_s": 10.0, "token": "theirs", **fields}  # fmt: skip
    study.storage.set_study_user_attr(study.id, LEASE, record)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_held_lease_is_refused_naming_its_holder_until_released(storage_url):
    study = _study(storage_url, "held")
    lease = Lease.take(study.storage, "held")
    with pytest.raises(LeaseError) as refused:
        Lease.take(study.storage, "held")
    message = str(refused.value)
    assert f"host {socket.gethostname()}, pid {os.getpid()}, started {lease.record['started']}" in message
    assert "'held'" in message
    lease.release()
    assert LEASE not in study.user_attrs()
    Lease.take(study.storage, "held").release()


def test_another_hosts_live_lease_is_refused_and_a_stale_one_taken_over(storage_url):
    study = _study(storage_url, "stale")
    _holder(study)
    with pytest.raises(LeaseError, match="host elsewhere, pid 1"):
        Lease.take(study.storage, "stale")
    _holder(study, heartbeat=time.time() - 61)  # six beats of 10 s missed
    lease = Lease.take(study.storage, "stale")
    assert study.user_attrs()[LEASE]["token"] == lease.record["token"]
    lease.release()


def test_a_dead_process_of_this_host_is_taken_over_at_once(storage_url):
    study = _study(storage_url, "dead")
    lease = Lease.take(study.storage, "dead")
    here = {"host": socket.gethostname(), "ns": lease.record["ns"]}
    lease.release()
    _holder(study, **here, pid=os.getpid())  # alive: refused
    with pytest.raises(LeaseError):
        Lease.take(study.storage, "dead")
    _holder(study, **here, pid=_dead_pid())
    Lease.take(study.storage, "dead").release()


def test_a_lease_taken_over_stops_its_writer(storage_url):
    study = _study(storage_url, "lost")
    lease = Lease.take(study.storage, "lost", beat_s=0.05)
    heartbeat = lease.record["heartbeat"]
    deadline = time.monotonic() + 60
    while lease.record["heartbeat"] == heartbeat and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lease.record["heartbeat"] > heartbeat  # renewed
    writer = TrialWriter(study, guard=lease.check)
    _holder(study)  # another coordinator thought this one stopped and took the study
    while lease.lost is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(LeaseError, match="taken over by host elsewhere"):
        lease.check()
    writer.study_attr("pressroom.progress", {"fraction": 0.5})
    with pytest.raises(StorageWriteError, match="taken over"):
        writer.close(timeout=60)
    assert "pressroom.progress" not in study.user_attrs()
    lease.release()
    assert study.user_attrs()[LEASE]["token"] == "theirs"  # a lost lease is not released
