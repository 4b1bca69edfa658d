"""What every `pressroom` command shares: consoles, user errors, common arguments, reading spec and storage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..spec.config import Spec, load_spec

out = Console()
err = Console(stderr=True)
#: The width tables get off a terminal: wide enough that none is cut or wrapped at 80 columns.
PIPED_WIDTH = 10_000

SpecArg = Annotated[Path, typer.Argument(help="The search spec (YAML).", show_default=False)]
StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", help="SQLAlchemy URL of the Optuna storage (default: $OPTUNA_STORAGE or the spec's)."),
]


def show_table(table: Table) -> None:
    """Print a table on stdout. On a terminal it fits the window; piped or redirected (where
    rich would assume 80 columns, cutting numbers and dropping columns) it keeps its natural
    width: a table is never wider than its cells, so the large limit adds no padding."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=PIPED_WIDTH).print(table)


class UsageError(Exception):
    """A user-facing failure: its message is printed as it is, and the exit code is 2."""


def read_spec(path: Path, **overrides: object) -> Spec:
    """Load a spec with command-line overrides (dotted keys); `None` values are ignored."""
    return load_spec(path, overrides=overrides)


def resolve_storage(storage: str | None) -> str:
    """--storage, else $OPTUNA_STORAGE, else the default; ${VAR} expanded."""
    import os

    from ..secrets import expand_env
    from ..spec.config import DEFAULT_STORAGE, ENV_STORAGE

    try:
        return expand_env(storage or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE, key="--storage")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
