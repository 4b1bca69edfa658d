"""The driver's side of EvoPress warm starts: a profile file as the start, and the start on held-out data.

Algorithms read no files, so a `start` that names a profile file is read here into levels; and
the start competes with the search's answer on held-out data at the end (`prefer_start`).
docs/design.md, "Warm starts never lose to their start", says what is chosen and why.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from spaces import Profile, Space

from ..algorithms import STARTS
from ..results.exports import read_profile_file


def _start_file(config: Any) -> Path | None:
    start = getattr(config, "start", None)
    if not isinstance(start, str) or start in STARTS:
        return None
    return Path(start).expanduser()


def check_start_file(config: Any) -> None:
    """Fail early (before any worker starts) when the start's profile file cannot be read.

    Raises:
        ValueError: the file does not exist or is no file.
    """
    path = _start_file(config)
    if path is not None and not path.is_file():
        raise ValueError(f"{config.start}: no such file (give a profile `pressroom best -o` wrote)")


def start_file_read(config: Any, space: Space) -> Any:
    """`config` with a profile file named as its `start` read into levels; any other config as it is.

    Raises:
        ValueError: the file cannot be read, or is no profile of this model and search.
    """
    path = _start_file(config)
    if path is None:
        return config
    try:
        profile = read_profile_file(path, space)
    except OSError as exc:
        raise ValueError(f"cannot read {config.start}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{config.start}: {exc}") from None
    return replace(config, start=dict(profile))


def prefer_start(heldout: dict[str, dict[str, Any]], start: tuple[Profile, float] | None) -> Profile | None:
    """The warm start, when it beats the search's best on held-out data (else None); `heldout`'s
    best entry then becomes the start's, and says which it is (``source``: search or start).

    EvoPress never returns a profile worse than its start on the search's own minibatches (the
    parent competes in every last stage); this makes the answer no worse on held-out data either.
    """
    best = heldout["best"]
    best["source"] = "search"
    if start is None or "start" not in heldout:
        return None
    ours, theirs = heldout["start"]["fitness"], best["fitness"]
    if ours is None or (theirs is not None and ours >= theirs):
        return None
    heldout["best"] = {**heldout["start"], "source": "start"}
    return start[0]


__all__ = ["check_start_file", "prefer_start", "start_file_read"]
