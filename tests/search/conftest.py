"""Fixtures for searches against the real services: PostgreSQL databases and spec files."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PRESSROOM = str(Path(sys.executable).with_name("pressroom"))


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the machine's server, dropped at the end of the session."""
    name = f"pressroom_test_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        _admin(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage URL: a fresh SQLite file, then the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


def tiny_search(cache_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A spec for a tiny-Llama EvoPress search that takes seconds on 2 CPUs."""
    spec: dict[str, Any] = {
        "model": {"name": "pressroom:tiny-llama"},
        "compression": {"scheme": "sparsity", "target": 0.5, "compressor": "magnitude", "levels": {"max_levels": 4}},
        "data": {"seq_len": 64, "calibration_tokens": 8192, "heldout_tokens": 1024, "stats_tokens": 1024},
        "algorithm": {
            "name": "evopress",
            "params": {"generations": 4, "offspring": 6, "stages": [[2, 256], [1, 512]]},
        },
        "workers": {"count": 2, "cpus_per_worker": 0.5, "torch_threads": 1, "timeout_s": 120},
        "mlflow": {"enabled": False},
        "cache_dir": str(cache_dir),
        "seed": 7,
    }
    for key, value in overrides.items():
        spec[key] = value
    return spec


@pytest.fixture
def write_spec(tmp_path: Path, cache_dir: Path) -> Callable[..., Path]:
    """Write a tiny search spec (with overrides) to a file and return its path."""

    def write(name: str = "spec.yaml", **overrides: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tiny_search(cache_dir, **overrides)))
        return path

    return write


def _run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PRESSROOM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the `pressroom` console script and capture everything it prints."""
    return _run_cli
