"""`Lease`: one live coordinator per study, recorded in the study's storage.

A coordinator takes the study's lease (the study user attribute `pressroom.lease`: host, pid,
start time and heartbeat) before it touches the study's trials, renews the heartbeat every
`beat_s` seconds on a thread, and releases the lease when it stops. A second coordinator is
refused, with the holder named, unless the holder's heartbeat is `STALE_BEATS` beats old or the
holder is a process of this host that no longer exists (a killed coordinator rerun at once on the
same machine takes over without waiting). Heartbeats are the database's clock, so hosts' clocks
need not agree. Every change is a compare-and-swap on the attribute's row (Optuna keeps one row
per study and key), so of two coordinators racing for a lease exactly one gets it; a coordinator
whose lease was taken over sees it at its next heartbeat and stops writing (`check`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from optuna.storages import RDBStorage
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection

from .study import StorageError, reason

logger = logging.getLogger(__name__)

LEASE = "pressroom.lease"
BEAT_S = 10.0
STALE_BEATS = 6


class LeaseError(StorageError):
    """Another coordinator holds the study, or this coordinator's lease was taken over."""


class Lease:
    """A held lease on one study; from `Lease.take`.

    Args:
        storage: the study's storage.
        study_id: the study.
        record: the lease as stored.
        beat_s: seconds between heartbeats.
    """

    def __init__(self, storage: RDBStorage, study_id: int, record: dict[str, Any], beat_s: float) -> None:
        self.engine = storage.engine
        self.row = _Row(study_id)
        self.record = record
        self.beat_s = beat_s
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="pressroom-lease", daemon=True)
        self._thread.start()

    @classmethod
    def take(cls, storage: RDBStorage, name: str, beat_s: float = BEAT_S) -> Lease:
        """Take study `name`'s lease.

        Raises:
            LeaseError: a live coordinator holds it; the message names its host, pid and start.
        """
        row = _Row(storage.get_study_id_from_name(name))
        for _ in range(3):  # a race lost to another coordinator is decided on the next look
            try:
                with storage.engine.begin() as conn:
                    now = _now(conn)
                    held = row.read(conn)
                    record = {
                        "host": socket.gethostname(), "pid": os.getpid(), "ns": _pid_namespace(),
                        "started": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
                        "heartbeat": now, "beat_s": beat_s, "token": uuid.uuid4().hex,
                    }  # fmt: skip
                    if held is None:
                        conn.execute(
                            insert(row.table).values(study_id=row.study_id, key=LEASE, value_json=_json(record))
                        )
                    else:
                        holder = _parse(held)
                        if not _free(holder, now):
                            raise LeaseError(_refusal(name, holder, now))
                        if not row.swap(conn, held, record):
                            continue
                        logger.warning("took over study %s from a stopped coordinator (%s)", name, _who(holder))
            except sa_exc.IntegrityError:  # another coordinator inserted the lease first
                continue
            return cls(storage, row.study_id, record, beat_s)
        raise LeaseError(f"study {name!r}: another coordinator keeps taking its lease; try again")

    def check(self) -> None:
        """Raises:
        LeaseError: the lease was taken over (this coordinator was thought stopped)."""
        if self.lost is not None:
            raise LeaseError(self.lost)

    def release(self) -> None:
        """Stop the heartbeat and give the lease up (if it is still this coordinator's)."""
        self._stop.set()
        self._thread.join()
        try:
            with self.engine.begin() as conn:
                held = self.row.read(conn)
                if held is not None and _parse(held).get("token") == self.record["token"]:
                    conn.execute(delete(self.row.table).where(*self.row.where(held)))
        except sa_exc.SQLAlchemyError as exc:
            logger.warning("could not release the study's lease (%s); it goes stale in %.0f s", reason(exc),
                           self.beat_s * STALE_BEATS)  # fmt: skip

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                with self.engine.begin() as conn:
                    held = self.row.read(conn)
                    holder = None if held is None else _parse(held)
                    if holder is None or holder.get("token") != self.record["token"]:
                        self.lost = "this coordinator's lease on the study was " + (
                            "removed" if holder is None else f"taken over by {_who(holder)}"
                        ) + " (its heartbeat had stopped); it stopped writing"  # fmt: skip
                        logger.error(self.lost)
                        return
                    record = {**self.record, "heartbeat": _now(conn)}
                    if self.row.swap(conn, held, record):  # type: ignore[arg-type]
                        self.record = record
            except sa_exc.SQLAlchemyError as exc:  # the database is away: the next beat tries again
                logger.warning("could not renew the study's lease (%s)", reason(exc))


class _Row:
    """The lease's row of Optuna's study attribute table, read and swapped in a transaction."""

    def __init__(self, study_id: int) -> None:
        from optuna.storages._rdb import models  # Optuna's table definitions, as trial_store uses them

        self.table = models.StudyUserAttributeModel.__table__
        self.study_id = study_id

    def where(self, held: str | None = None) -> list[Any]:
        """The row, or the row only while it still holds `held`."""
        c = self.table.c
        return [c.study_id == self.study_id, c.key == LEASE, *([] if held is None else [c.value_json == held])]

    def read(self, conn: Connection) -> str | None:
        return conn.execute(select(self.table.c.value_json).where(*self.where())).scalar_one_or_none()

    def swap(self, conn: Connection, held: str, record: dict[str, Any]) -> bool:
        """Replace the lease `held` by `record`; False if it changed meanwhile."""
        statement = update(self.table).where(*self.where(held)).values(value_json=_json(record))
        return conn.execute(statement).rowcount == 1


def _now(conn: Connection) -> float:
    """The database's clock, in seconds since the epoch."""
    value = conn.execute(select(func.current_timestamp())).scalar_one()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:  # SQLite's CURRENT_TIMESTAMP is naive UTC
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def _parse(held: str) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        record = json.loads(held)
        if isinstance(record, dict):
            return record
    return {}


def _free(holder: dict[str, Any], now: float) -> bool:
    """Whether the holder has stopped: its heartbeat is stale, or it is a dead process of this host."""
    try:
        age = now - float(holder["heartbeat"])
        stale = age > float(holder.get("beat_s", BEAT_S)) * STALE_BEATS
        here = holder["host"] == socket.gethostname() and holder.get("ns", "") == _pid_namespace()
        return stale or (here and not _alive(int(holder["pid"])))
    except (KeyError, TypeError, ValueError):  # not a lease pressroom wrote
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: stopped all the same
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pid_namespace() -> str:
    """Which pid namespace this process is in (containers on one host can share its name)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _who(holder: dict[str, Any]) -> str:
    return f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"


def _refusal(name: str, holder: dict[str, Any], now: float) -> str:
    age = now - float(holder["heartbeat"])
    stale = float(holder.get("beat_s", BEAT_S)) * STALE_BEATS
    return (
        f"study {name!r} is being searched by another coordinator ({_who(holder)} UTC, last heartbeat "
        f"{age:.0f} s ago); wait for it to finish or stop it. A coordinator that stopped without "
        f"releasing the study is taken over once its heartbeat is {stale:.0f} s old"
    )
