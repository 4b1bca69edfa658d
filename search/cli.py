"""The `pressroom` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from .spec import Spec, SpecError, load_spec

app = typer.Typer(
    name="pressroom",
    help="Search per-layer compression profiles (sparsity, bitwidth, depth) of transformer models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

SpecArg = Annotated[Path, typer.Argument(help="The search spec (YAML).", show_default=False)]


class UsageError(Exception):
    """A user-facing failure: its message is printed as it is, and the exit code is 2."""


def read_spec(path: Path, **overrides: object) -> Spec:
    """Load a spec with command-line overrides (dotted keys); `None` values are ignored."""
    return load_spec(path, overrides=overrides)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(help="One or more spec files.", show_default=False)],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only report errors.")] = False,
) -> None:
    """Check spec files and print each resolved spec (passwords redacted), or its errors."""
    failed = False
    for path in specs:
        try:
            spec = read_spec(path)
        except SpecError as exc:
            failed = True
            for line in exc.lines:
                err.print(line, markup=False, highlight=False)
            continue
        if not quiet:
            out.rule(f"{path}: valid", style="green")
            out.print(yaml.safe_dump(spec.public_dict(), sort_keys=False), markup=False, highlight=False)
        else:
            out.print(f"{path}: valid", markup=False, highlight=False)
    if failed:
        raise typer.Exit(2)


@app.command("build-db")
def build_db(
    spec_path: SpecArg,
    cache_dir: Annotated[str | None, typer.Option(help="Where databases live (overrides the spec).")] = None,
) -> None:
    """Build the compression database a spec needs, or finish an interrupted build."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from evaluators import Evaluator

    spec = read_spec(spec_path, cache_dir=cache_dir)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task("compressing layers", total=None)

        def advance(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"compressing {name}")

        try:
            evaluator = Evaluator(spec.evaluator_spec(), progress=advance)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    db = evaluator.db
    size = sum(p.stat().st_size for p in db.root.glob("*.safetensors"))
    out.print(
        f"database ready: {db.root}\n  compressor {db.compressor}, {len(db.manifest['layers'])} layers, "
        f"{size / 2**20:.1f} MiB",
        markup=False,
        highlight=False,
    )


def main() -> None:
    """Console-script entry point: user errors print one clear message and exit with 2."""
    try:
        app()
    except SpecError as exc:
        for line in exc.lines:
            err.print(line, markup=False, highlight=False)
        sys.exit(2)
    except UsageError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(2)
