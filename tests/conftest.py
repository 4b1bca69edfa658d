"""Fixtures shared by every test package: offline mode, a session cache, small evaluator specs."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Nothing may come from a model hub at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The session's Ray cluster authenticates with a token (Ray 2.60's default for new clusters);
# Ray reads this when imported, so it is set before any test module imports ray.
os.environ["RAY_AUTH_MODE"] = "token"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache (corpus parse, compression databases) for the whole session."""
    return tmp_path_factory.mktemp("pressroom-cache")


def _evaluator_spec(cache_dir: Path, **sections: Any) -> Any:
    """An `EvaluatorSpec` for tests: small data by default, sections override it."""
    from evaluators import EvaluatorSpec

    data = {"seq_len": 64, "calibration_tokens": 8192, "heldout_tokens": 2048, "stats_tokens": 2048}
    data.update(sections.pop("data", {}))
    return EvaluatorSpec.model_validate({"data": data, "cache_dir": str(cache_dir), **sections})


@pytest.fixture(scope="session")
def make_evaluator(cache_dir: Path) -> Any:
    """Build (and memoise) evaluators by spec: building a database costs seconds."""
    from evaluators import Evaluator

    built: dict[str, Any] = {}

    def make(**sections: Any) -> Any:
        spec = _evaluator_spec(cache_dir, **sections)
        key = spec.model_dump_json()
        if key not in built:
            built[key] = Evaluator(spec)
        return built[key]

    return make


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RayHead:
    """A real Ray cluster started with `ray start --head` for the session."""

    address: str  # for ray.init and `pressroom search --ray-address`
    dashboard: str  # for the Jobs API: http://127.0.0.1:PORT


def stop_ray(temp_dir: str) -> None:
    """Stop the Ray processes of one cluster (those whose command line names its temp dir).

    `ray stop` would stop every Ray process on the machine, other people's clusters included.
    """
    mine = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if temp_dir in cmdline and int(proc.name) != os.getpid():
                mine.append(int(proc.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig == signal.SIGTERM:
            time.sleep(2)


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """One real local Ray cluster (2 CPUs, dashboard on) for the whole session.

    In-process tests connect to it (`ray_session`), command-line searches get its address, and
    job submissions its dashboard. Token authentication stays on, as Ray 2.60 sets it up. Its
    own temp dir lets teardown stop exactly its processes.
    """
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port, dashboard = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-pr-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # a token-authenticated head needs a token (kept in ~/.ray/auth_token, where clients find it)
    subprocess.run([ray_bin, "get-auth-token", "--generate"], check=True, env=env, capture_output=True, timeout=120)
    subprocess.run(
        [ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        check=True, env=env, capture_output=True, timeout=180,
    )  # fmt: skip
    try:
        yield RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}")
    finally:
        stop_ray(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session(ray_head: RayHead) -> Any:
    """This process connected, as a driver, to the session's Ray cluster."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_head.address, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()
