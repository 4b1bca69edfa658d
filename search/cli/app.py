"""The `pressroom` command line: the typer app, its commands in the order `--help` lists them, and `main`."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from ..spec.config import SpecError
from . import launch, prepare, results, searches, zeroshot
from .common import UsageError, err

app = typer.Typer(
    name="pressroom",
    help="Search per-layer compression profiles (sparsity, bitwidth, depth) of transformer models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


app.command("validate")(prepare.validate)
app.command("build-db")(prepare.build_db)
app.command("search")(searches.search_command)
app.command("compare")(searches.compare_command)
app.command("status")(searches.status)
app.command("launch")(launch.launch_command)
app.command("dashboard")(results.dashboard)
app.command("best")(results.best)
app.command("export")(results.export)
app.command("apply")(results.apply)
app.command("eval")(zeroshot.eval_command)
app.command("register")(results.register)


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
