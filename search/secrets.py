"""Keep credentials out of output: expand `${VAR}` in URLs, and redact passwords."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REDACTED = "***"


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


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (also in query strings such as ?password=)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if parts.password is None and not re.search(r"(?i)(password|passwd|pwd|token|secret)=", parts.query):
        return url
    netloc = parts.netloc
    if parts.password is not None:
        user = parts.username or ""
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{user}:{REDACTED}@{host}"
    query = re.sub(r"(?i)((?:password|passwd|pwd|token|secret)=)[^&]*", rf"\g<1>{REDACTED}", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str, secrets: list[str]) -> str:
    """`text` with every occurrence of each secret (and any URL password) replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return re.sub(r"(://[^:/@\s]*:)[^@\s]+@", rf"\g<1>{REDACTED}@", text)


def url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None
