"""Reaching a Ray cluster: a quick liveness check, and token authentication for clients."""

from __future__ import annotations

import os

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
