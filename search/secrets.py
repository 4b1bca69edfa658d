"""Keep credentials out of output: expand `${VAR}` in URLs, and redact secrets.

One place decides what is secret in a URL (storage, MLflow tracking URI, Ray address): the
password of ``user:password@`` and the value of every query parameter whose name looks secret
(``password``, ``sslpassword``, ``token``, ``secret``, ``api_key``, ...). `redact_url` hides
both (the password through SQLAlchemy), `url_secrets` returns them (so free text that quotes
one, such as a driver's error, can be cleaned by `redact_text`).
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, unquote, urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REDACTED = "***"
#: A query parameter name that holds a secret.
SECRET_KEY = re.compile(r"(?i)pass|pwd|token|secret|key|credential|auth")
# ``name=value`` (in a query string, or in text) whose name looks secret.
_SECRET_PARAM = re.compile(r"(?i)(\b[\w.-]*(?:pass|pwd|token|secret|key|credential|auth)[\w.-]*=)[^&;#\s'\"]*")
# ``scheme://user:password@``, up to the last ``@`` before the path (a password may hold ``@``).
_USERINFO = re.compile(r"(://[^:/@\s]*:)[^/\s]*@")
# ``:password@`` in a string that is not a well-formed URL (e.g. "postgresql:/u:pw@db").
_LOOSE_USERINFO = re.compile(r":[^:@/\s]+@")


def expand_env(value: str, *, key: str) -> str:
    """Replace every ``${VAR}`` with the environment's value.

    Raises:
        ValueError: a referenced variable is not set (its name is given, never a value).
    """

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"{key}: environment variable {name} is referenced but not set")
        return os.environ[name]

    return ENV_REFERENCE.sub(lookup, value)


def url_secrets(url: str) -> list[str]:
    """The secrets a URL holds: its password and its secret-looking query values (decoded).

    Example:
        >>> url_secrets("postgresql://u:pw@h/db?sslmode=require&sslpassword=k%2F1")
        ['pw', 'k/1']
    """
    try:
        parts = urlsplit(url)
        password = parts.password or ""
    except ValueError:
        parts, password = None, ""
    # A password with a bare "@" is cut there by SQLAlchemy and drivers, which then quote the
    # rest as the host: each piece is secret.
    found = [password, *password.split("@"), unquote(password)]
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        query: list[tuple[str, str]] = parse_qsl(parts.query) if parts is not None else []
    else:
        found.append(parsed.password if isinstance(parsed.password, str) else "")
        query = [
            (k, v) for k, values in parsed.query.items() for v in ([values] if isinstance(values, str) else values)
        ]
    found += [value for key, value in query if SECRET_KEY.search(key)]
    return list(dict.fromkeys(secret for secret in found if secret))


def redact_url(url: str) -> str:
    """The URL with its password and secret query values replaced by ``***``.

    A URL with nothing secret (or only ``***`` already) comes back unchanged. Otherwise SQLAlchemy
    renders it with the password hidden, and `mask_params` masks secret query values; a string
    SQLAlchemy cannot read as a URL is redacted as text (`redact_text`).

    Example:
        >>> redact_url("postgresql+psycopg://u:pw@h:5432/db?password=x&application_name=a")
        'postgresql+psycopg://u:***@h:5432/db?application_name=a&password=***'
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # e.g. "postgresql:/u:pw@db"
        return redact_text(url, [])
    if all(secret == REDACTED for secret in url_secrets(url)):
        return url
    if parsed.host and "@" in parsed.host:
        # A password with a bare "@" is cut there by SQLAlchemy, which reads the rest as the host.
        parsed = parsed.set(host=parsed.host.rpartition("@")[2])
    return mask_params(parsed.render_as_string(hide_password=True))


def redact_text(text: str, secrets: list[str]) -> str:
    """`text` with every occurrence of each secret, URL password and secret query value replaced."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return _mask(text)


def _mask(text: str) -> str:
    return mask_params(_LOOSE_USERINFO.sub(f":{REDACTED}@", _USERINFO.sub(rf"\g<1>{REDACTED}@", text)))


def mask_params(text: str) -> str:
    """`text` with the value of every secret-looking ``name=value`` (e.g. in a query string) masked.

    Example:
        >>> mask_params("http://h/x?api_key=K&x=1")
        'http://h/x?api_key=***&x=1'
    """
    return _SECRET_PARAM.sub(rf"\g<1>{REDACTED}", text)
