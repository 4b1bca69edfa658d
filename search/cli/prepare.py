"""The commands that prepare a search: `validate` its spec files, `build-db` its compression database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from ..spec.config import SpecError
from .common import SpecArg, UsageError, err, out, read_spec


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
                err.print(line, markup=False, highlight=False, soft_wrap=True)
            continue
        if not quiet:
            out.rule(f"{path}: valid", style="green")
            out.print(yaml.safe_dump(spec.public_dict(), sort_keys=False), markup=False, highlight=False)
        else:
            out.print(f"{path}: valid", markup=False, highlight=False)
    if failed:
        raise typer.Exit(2)


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
        soft_wrap=True,
    )
