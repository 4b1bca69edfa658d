"""The `pressroom` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

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
                err.print(line, markup=False, highlight=False, soft_wrap=True)
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
        soft_wrap=True,
    )


StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", help="SQLAlchemy URL of the Optuna storage (default: $OPTUNA_STORAGE or the spec's)."),
]


@app.command("search")
def search_command(
    spec_path: SpecArg,
    storage: StorageOpt = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the spec's, or one derived from it).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local Ray).")] = None,
    workers: Annotated[int | None, typer.Option(help="Number of evaluator workers.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Run a search, or resume it: re-running the same command continues from its last checkpoint."""
    from .run import SearchError, run_search

    overrides = {"storage": storage, "study": study, "seed": seed, "workers.count": workers}
    spec = read_spec(spec_path, **overrides, **{"workers.ray_address": ray_address})
    try:
        outcome = run_search(spec, console=err)
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        err.print("interrupted: in-flight trials were marked FAIL; run the same command to resume", markup=False)
        raise typer.Exit(130) from None
    show_outcome(spec, outcome)


@app.command("compare")
def compare_command(
    spec_path: SpecArg,
    methods: Annotated[
        str, typer.Option(help="Comma-separated: evopress,random,random-sh,dass,uniform,owl,dp,tpe,cmaes.")
    ] = "evopress,random,random-sh,uniform,owl,dp",
    budget_tokens: Annotated[int, typer.Option(help="Forwarded tokens each method may spend.")] = 500_000,
    seeds: Annotated[int, typer.Option(min=1, help="Runs per method (seeds of the methods' own randomness).")] = 3,
    storage: StorageOpt = None,
    study: Annotated[str | None, typer.Option(help="Prefix of the studies (default: the spec's study name).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local Ray).")] = None,
    workers: Annotated[int | None, typer.Option(help="Number of evaluator workers.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the table as JSON here.")] = None,
) -> None:
    """Run several methods on one evaluator at one budget of forwarded tokens, and compare them."""
    import json

    from rich.table import Table

    from .compare import compare, parse_methods, record, summarize
    from .run import SearchError

    try:
        chosen = parse_methods(methods)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    overrides = {"storage": storage, "study": study, "workers.count": workers}
    spec = read_spec(spec_path, **overrides, **{"workers.ray_address": ray_address})
    try:
        runs = compare(spec, chosen, budget_tokens=budget_tokens, seeds=seeds, console=err)
        figure = record(spec, runs, budget_tokens)
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    rows = summarize(runs)
    table = Table(title=f"{spec.study_name}: {budget_tokens:,} forwarded tokens per run, {seeds} seed(s)")
    columns = ["method", "held-out fitness", "spread (sd)", "best seed", "wall s", "evaluations", "tokens"]
    causal = any(row["perplexity_mean"] is not None for row in rows)
    for column in [*columns, *(["perplexity"] if causal else [])]:
        table.add_column(column, justify="right")
    for row in sorted(rows, key=lambda r: (r["heldout_mean"] is None, r["heldout_mean"])):
        mean = "-" if row["heldout_mean"] is None else f"{row['heldout_mean']:.5g}"
        best = "-" if row["heldout_min"] is None else f"{row['heldout_min']:.5g}"
        cells = [row["method"], mean, f"{row['heldout_std']:.2g}", best, f"{row['seconds']:.0f}",
                 f"{row['evaluations']:.0f}", f"{row['tokens']:,.0f}"]  # fmt: skip
        if causal:
            cells.append("-" if row["perplexity_mean"] is None else f"{row['perplexity_mean']:.3f}")
        table.add_row(*cells)
    out.print(table)
    out.print(f"figure: {figure}", markup=False, highlight=False, soft_wrap=True)
    if output is not None:
        output.write_text(json.dumps({"budget_tokens": budget_tokens, "rows": rows}, indent=1))


def show_outcome(spec: Spec, outcome: Any) -> None:
    """The end-of-search table: held-out fitness of uniform vs the found profile, and next steps."""
    from rich.table import Table

    from .secrets import redact_url

    table = Table(title=f"held-out results: {outcome.study}")
    for column in ("profile", f"average {spec.compression.scheme}", "held-out fitness", "vs uniform", "perplexity"):
        table.add_column(column, justify="right")
    uniform = outcome.heldout.get("uniform", {}).get("fitness")
    for name, row in outcome.heldout.items():
        ppl = "-" if row.get("perplexity") is None else f"{row['perplexity']:.3f}"
        fit = "failed" if row.get("fitness") is None else f"{row['fitness']:.6g}"
        change = "-" if not uniform or row.get("fitness") is None else f"{row['fitness'] / uniform - 1:+.1%}"
        table.add_row(name, f"{row['average']:.4g}", fit, change, ppl)
    out.print(table)
    where = redact_url(spec.storage)
    out.print(
        f"{outcome.evaluations} evaluations ({outcome.replayed} replayed from before a restart).\n"
        f"next: pressroom status {outcome.study} --storage '{where}'",
        markup=False,
        highlight=False,
    )


@app.command()
def status(
    study: Annotated[str | None, typer.Argument(help="A study name; all studies when left out.")] = None,
    storage: StorageOpt = None,
) -> None:
    """Show studies: trial states, best fitness and progress."""
    from rich.table import Table

    from .storage import PROGRESS, StorageError, connect, describe_trials, fitness_of

    url = resolve_storage(storage)
    try:
        rdb = connect(url)
    except StorageError as exc:
        raise UsageError(str(exc)) from None
    summaries = rdb.get_all_studies()
    if study is not None:
        summaries = [s for s in summaries if s.study_name == study]
        if not summaries:
            names = sorted(s.study_name for s in rdb.get_all_studies())
            raise UsageError(f"no study {study!r} in this storage; studies: {names or 'none'}")
    table = Table(title="pressroom studies")
    for column in ("study", "trials", "states", "best fitness", "progress"):
        table.add_column(column)
    for summary in summaries:
        trials = rdb.get_all_trials(summary._study_id, deepcopy=False)
        states = describe_trials(trials)
        complete = [f for t in trials if t.state.name == "COMPLETE" and (f := fitness_of(t)) is not None]
        progress = summary.user_attrs.get(PROGRESS, {})
        done = progress.get("fraction")
        table.add_row(
            summary.study_name,
            str(len(trials)),
            ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items())),
            f"{min(complete):.6g}" if complete else "-",
            "-" if done is None else f"{100 * done:.0f}% (generation {progress.get('generation', '-')})",
        )
    out.print(table)


def resolve_storage(storage: str | None) -> str:
    """--storage, else $OPTUNA_STORAGE, else the default; ${VAR} expanded."""
    import os

    from .secrets import expand_env
    from .spec import DEFAULT_STORAGE, ENV_STORAGE

    try:
        return expand_env(storage or os.environ.get(ENV_STORAGE) or DEFAULT_STORAGE, key="--storage")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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


# Commands that live in their own modules register here, one line each.
from . import cli_launch, cli_results  # noqa: E402, F401

app.command("dashboard")(cli_results.dashboard)
app.command("best")(cli_results.best)
app.command("export")(cli_results.export)
app.command("apply")(cli_results.apply)
app.command("register")(cli_results.register)
