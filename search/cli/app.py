"""The `pressroom` command line: the typer app, its commands in the order `--help` lists them, and `main`."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from ..spec.config import SpecError
from . import launch, prepare, results, searches, zeroshot
from .common import UsageError, err, out

#: The distribution name in pyproject.toml, whose installed metadata gives `--version`.
DISTRIBUTION = "pressroom"

app = typer.Typer(
    name="pressroom",
    help="Search per-layer compression profiles (sparsity, bitwidth, depth) of transformer models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    """`--version`: print the installed package's version and stop before any command runs."""
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version(DISTRIBUTION)
        except PackageNotFoundError:
            raise UsageError(f"the {DISTRIBUTION!r} package is not installed, so it has no version") from None
        out.print(f"pressroom {number}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    show_version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


#: Each command's name and function, in the order `--help` lists them.
COMMANDS = (
    ("validate", prepare.validate),
    ("build-db", prepare.build_db),
    ("verify-db", prepare.verify_db),
    ("search", searches.search_command),
    ("compare", searches.compare_command),
    ("status", searches.status),
    ("launch", launch.launch_command),
    ("dashboard", results.dashboard),
    ("best", results.best),
    ("export", results.export),
    ("apply", results.apply),
    ("eval", zeroshot.eval_command),
    ("register", results.register),
)
for _name, _command in COMMANDS:
    app.command(_name)(_command)


def main() -> None:
    """Console-script entry point: user errors print one clear message and exit with 2."""
    try:
        app()
    except SpecError as exc:
        for line in exc.lines:
            err.print(line, markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except UsageError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
