"""`Outcome`: how one task sent to a pool ended, and an error in one line; no Ray, so the
in-process pool (`workers.local`) and the Ray pool (`workers.pool`) share them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

#: The longest error text an `Outcome` carries.
MAX_ERROR_CHARS = 400


@dataclass(frozen=True)
class Outcome:
    """How one task ended.

    Attributes:
        key: the key it was submitted under.
        value: what the remote method returned (None when it failed).
        error: why it failed after its last attempt, or None.
        worker: the pool's name for the actor of the last attempt ("w0", "w1", ...; replacements
            get new names).
        attempts: how many times it was started (1 when the first attempt succeeded).
        seconds: wall time of the last attempt as the pool saw it, from the moment the actor
            could start it to the moment its result was seen.
    """

    key: Hashable
    value: Any
    error: str | None
    worker: str
    attempts: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.error is None


def error_line(exc: BaseException) -> str:
    """The exception's type and the last line of its message, capped at `MAX_ERROR_CHARS`.

    Example:
        >>> error_line(ValueError("levels do not fit\\nthe space has 3 units"))
        'ValueError: the space has 3 units'
    """
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
