"""Quick liveness checks of the services a search needs.

Their own clients wait minutes before giving up (Ray's connection retries, urllib3's retries
under MLflow), so a search checks first that something answers, within seconds, and stops with
one line when nothing does.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

#: Seconds a check waits for a TCP connection.
TIMEOUT_S = 5.0
DEFAULT_PORTS = {"http": 80, "https": 443}


def listening(host: str, port: int, timeout: float = TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:port`` opens within `timeout` seconds (one try)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_listening(uri: str, timeout: float = TIMEOUT_S) -> bool:
    """Whether the server of an ``http(s)://`` URI accepts connections; other URIs (files,
    ``databricks``, a database) are not servers this can check, and count as reachable.

    Example:
        >>> http_listening("file:./mlruns"), http_listening("sqlite:///mlflow.db")
        (True, True)
    """
    try:
        parts = urlsplit(uri)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return True  # malformed: the client's own error says more
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or port is None:
        return True
    return listening(parts.hostname, port, timeout)
