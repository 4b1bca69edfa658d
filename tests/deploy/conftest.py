"""Fixtures for the deployment tests: a two-node Ray cluster of their own, and the CLI.

The cluster is separate from the session's `ray_head` (its own ports and temp dir), so adding
and removing a node never disturbs other tests. Each node is a `ray start --block` process that
this fixture started; stopping it means SIGTERM to that process alone, which shuts its node
down (`ray stop` would stop every Ray on the machine, the session's cluster too).

Both nodes run with the project's virtualenv first on PATH, as the deploy image has it, so a
job's entrypoint finds `pressroom` the way it does on a real cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

# The search tests own these fixtures (a fresh PostgreSQL database, the CLI runner): reuse them.
from tests.search.conftest import postgres_url, run_cli  # noqa: F401

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class TwoNodeCluster:
    """A head (1 CPU, dashboard on) and a second node (1 CPU and the resource ``node2``)."""

    address: str  # the GCS, for ray.init
    dashboard: str  # the Jobs API: http://127.0.0.1:PORT
    env: dict[str, str]  # the environment the nodes run with


def _start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen([str(BIN / "ray"), "start", "--block", *args], env=env, stdout=sink, stderr=sink)


def _wait_for_nodes(dashboard: str, count: int, processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    """Until the cluster reports `count` live nodes; fails with the nodes' logs if one exits."""
    from ray.util.state import list_nodes

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                pytest.fail(f"`ray start` exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            alive = [node for node in list_nodes(address=dashboard) if node.state == "ALIVE"]
        except Exception:  # the dashboard is still starting
            alive = []
        if len(alive) >= count:
            return
        time.sleep(1)
    tails = "\n".join(log.read_text()[-2000:] for log in logs)
    pytest.fail(f"the cluster did not reach {count} live nodes in 3 minutes:\n{tails}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def two_node_cluster() -> Iterator[TwoNodeCluster]:
    """A real two-node Ray cluster on this machine, token authentication on, for one module."""
    # Unix socket paths must stay short, so not under pytest's tmp_path.
    temp_dir = Path(tempfile.mkdtemp(prefix="prd-", dir="/tmp"))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
    }
    env.pop("OPTUNA_STORAGE", None)  # the job is told its storage on the command line
    port, dashboard = free_port(), free_port()
    common = ["--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats"]
    head = [
        "--head", f"--port={port}", f"--temp-dir={temp_dir}", "--include-dashboard=true",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}", *common,
    ]  # fmt: skip
    second = [
        f"--address=127.0.0.1:{port}", "--resources", '{"node2": 1}',
        f"--dashboard-agent-listen-port={free_port()}", *common,
    ]  # fmt: skip
    logs = [temp_dir / "head.log", temp_dir / "node2.log"]
    url = f"http://127.0.0.1:{dashboard}"
    # A token-authenticated head starts only where a token exists: make one (in ~/.ray/auth_token,
    # where clients find it too) the way a user does; an existing one is kept.
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True, check=True,
                   timeout=120)  # fmt: skip
    processes = [_start_node(head, env, logs[0])]
    try:
        _wait_for_nodes(url, 1, processes, logs[:1])
        processes.append(_start_node(second, env, logs[1]))
        _wait_for_nodes(url, 2, processes, logs)
        yield TwoNodeCluster(f"127.0.0.1:{port}", url, env)
    finally:
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(temp_dir, ignore_errors=True)
