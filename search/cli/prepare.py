"""The commands that prepare a search: `validate` its spec files, `build-db` its compression
database, `verify-db` its files."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console

from ..spec.config import SpecError
from .common import SpecArg, UsageError, err, out, read_spec

if TYPE_CHECKING:
    from evaluators import Evaluator
    from evaluators.building import Executor


def _plain(console: Console, text: str) -> None:
    """Print as it is: paths are neither styled nor wrapped, so they can be copied."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


#: What an asymmetric bitwidth search's compressed-tensors checkpoint loads in (docs/results.md).
ASYMMETRIC_NOTE = (
    "compression.levels.symmetric is false: `pressroom apply --format compressed-tensors` writes zero points, "
    "which vLLM loads but transformers' from_pretrained does not (compressed-tensors 0.20.1), so `pressroom register` "
    "logs the dense model; set it true for a checkpoint both load"
)


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
                _plain(err, line)
            continue
        if not quiet:
            out.rule(f"{path}: valid", style="green")
            out.print(yaml.safe_dump(spec.public_dict(), sort_keys=False), markup=False, highlight=False)
            if spec.compression.scheme == "bitwidth" and not spec.compression.levels.symmetric:
                _plain(err, f"{path}: note: {ASYMMETRIC_NOTE}")
        else:
            out.print(f"{path}: valid", markup=False, highlight=False)
    if failed:
        raise typer.Exit(2)


CacheDirOpt = Annotated[str | None, typer.Option(help="Where databases live (overrides the spec).")]


@contextlib.contextmanager
def _progress_bar(description: str) -> Iterator[Callable[[int, int, str], None]]:
    """A transient bar on stdout; yields the (done, total, layer name) callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=out, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def advance(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{description}: {name}")

        yield advance


def _evaluator(spec_path: Path, cache_dir: str | None, executor: Executor | None = None) -> Evaluator:
    """The spec's evaluator, its compression database opened (built where missing, with a bar),
    its layers compressed by `executor` (None: in this process)."""
    from evaluators import Evaluator
    from evaluators.building import in_process

    spec = read_spec(spec_path, cache_dir=cache_dir)
    with _progress_bar("compressing") as advance:
        try:
            return Evaluator(spec.evaluator_spec(), progress=advance, executor=executor or in_process)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


@contextlib.contextmanager
def _ray_executor(workers: int, address: str | None) -> Iterator[Executor]:
    """Ray (connected to, or a local one started and stopped here) and an executor that
    compresses `workers` layers at once on it."""
    import ray

    from workers import build_executor

    from ..driver.run import SearchError, start_ray

    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    try:
        started = start_ray(address)
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    try:
        yield build_executor(workers)
    finally:
        if started:
            ray.shutdown()


def build_db(
    spec_path: SpecArg,
    cache_dir: CacheDirOpt = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Compress this many layers at once on Ray workers (default: one by one, no Ray)."),
    ] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local Ray).")] = None,
) -> None:
    """Build the compression database a spec needs, or finish an interrupted build.

    The statistics are gathered once in this process; with --workers N the layers are compressed
    N at a time on Ray workers, which write into the same database folder (the same files as
    without --workers).
    """
    if workers is None:
        if ray_address is not None:
            raise UsageError("--ray-address is for the workers of --workers N; without --workers no Ray is used")
        db = _evaluator(spec_path, cache_dir).db
    else:
        with _ray_executor(workers, ray_address) as executor:
            db = _evaluator(spec_path, cache_dir, executor).db
    size = sum(p.stat().st_size for p in db.root.glob("*.safetensors"))
    _plain(
        out,
        f"database ready: {db.root}\n  compressor {db.compressor}, {len(db.manifest['layers'])} layers, "
        f"{size / 2**20:.1f} MiB",
    )


def verify_db(
    spec_path: SpecArg,
    cache_dir: CacheDirOpt = None,
    repair: Annotated[bool, typer.Option("--repair", help="Rebuild the bad files instead of failing.")] = False,
) -> None:
    """Hash every file of a spec's compression database against its manifest.

    Opening a database checks only that each file exists at its recorded size; this reads them all.
    Prints one line per bad file and exits with 1, or with --repair rebuilds them and exits with 0.
    Missing or truncated files are rebuilt when the database opens, before the check.
    """
    evaluator = _evaluator(spec_path, cache_dir)
    db = evaluator.db
    with _progress_bar("hashing") as advance:
        bad = db.verify(progress=advance)
    for line in bad.values():
        _plain(out if repair else err, f"bad: {line}")
    if bad and repair:
        db.discard(list(bad))
        with _progress_bar("compressing") as advance:
            db = evaluator.open_database(advance)
        _plain(out, f"rebuilt {len(bad)} of {len(db.manifest['layers'])} layer files in {db.root}")
    elif bad:
        raise typer.Exit(1)
    else:
        _plain(out, f"database verified: {db.root}, {len(db.manifest['layers'])} layers")
