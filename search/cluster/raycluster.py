"""Reaching a Ray cluster: a quick liveness check, token authentication for clients, and a
local Ray that listens on loopback only."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from .probe import TIMEOUT_S, listening

ENV_AUTH_MODE = "RAY_AUTH_MODE"


def reachable(address: str, timeout: float = TIMEOUT_S) -> bool:
    """Whether something listens at ``[ray://]host:port`` (Ray itself waits minutes to give up).

    Forms without a port (``auto``) are left to Ray and count as reachable.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return True
    return listening(host, int(port), timeout)


def use_token_auth() -> None:
    """Make this process's Ray client send its token, as a Ray 2.60 cluster expects, unless the
    user chose another mode in ``RAY_AUTH_MODE``. The token itself comes from
    ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    os.environ.setdefault(ENV_AUTH_MODE, "token")
    from ray._raylet import AuthenticationMode, Config, get_authentication_mode  # type: ignore[attr-defined]

    # Ray reads the mode into its config when first imported, and the CLI imports Ray early:
    # re-read it (Ray does the same when `ray.init` turns token mode on for a local cluster).
    if os.environ[ENV_AUTH_MODE].lower() == "token" and get_authentication_mode() != AuthenticationMode.TOKEN:
        Config.initialize("")


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """While a new local Ray starts, make 127.0.0.1 its node address.

    Ray 2.60 binds the GCS, the raylet, the dashboard and runtime-env agents and every worker to
    the node address, which it otherwise takes from the machine's outward interface (and some of
    them to all interfaces); a node address of 127.0.0.1 keeps all of them on loopback (checked
    with ``ss -ltnp``; tests/search/cli/test_bad_input.py checks it). Ray takes a loopback node
    address only where multi-node clusters are off (``ray._private.services.get_node_ip_address``
    reads ``ray_constants.ENABLE_RAY_CLUSTER``), so that switch is off while the node starts;
    ``_node_ip_address="127.0.0.1"`` would be turned back into the outward address.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def stop_on_sigterm() -> None:
    """Make SIGTERM stop this process as Ctrl-C does (a KeyboardInterrupt), so a search marks its
    in-flight trials and shuts down the local Ray it started, whose agents would otherwise keep
    listening for a minute after it. Call it after `ray.init`, which installs a handler that aborts."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
