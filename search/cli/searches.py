"""The commands that run searches and show them: `search`, `compare` and `status`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..spec.config import Spec
from .common import SpecArg, StorageOpt, UsageError, err, out, read_spec, resolve_storage, show_table

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def search_command(
    spec_path: SpecArg,
    storage: StorageOpt = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the spec's, or one derived from it).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local Ray).")] = None,
    workers: Annotated[int | None, typer.Option(help="Number of evaluator workers.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Run a search, or resume it: re-running the same command continues from its last checkpoint."""
    from ..driver.run import SearchError, run_search

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


def compare_command(
    spec_path: SpecArg,
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated: evopress,evopress-dp,evopress-owl,random,random-sh,dass,uniform,owl,dp,tpe,cmaes."
        ),
    ] = "evopress,random,random-sh,uniform,owl,dp",
    budget_tokens: Annotated[int, typer.Option(help="Forwarded tokens each method may spend.")] = 500_000,
    seeds: Annotated[int, typer.Option(min=1, help="Runs per method (seeds of the methods' own randomness).")] = 3,
    storage: StorageOpt = None,
    study: Annotated[str | None, typer.Option(help="Prefix of the studies (default: the spec's study name).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local Ray).")] = None,
    workers: Annotated[int | None, typer.Option(help="Number of evaluator workers.")] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Also write the table as JSON here, and the figure next to it (same name, .png); "
            "without it the figure is STUDY-compare.png in the current folder.",
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="How stdout gets the table: table (rich), csv or markdown.")
    ] = "table",
) -> None:
    """Run several methods on one evaluator at one budget of forwarded tokens, and compare them."""
    import json

    from ..driver.compare import compare, parse_methods, record, summarize
    from ..driver.run import SearchError
    from ..results.comparison import TABLE_FORMATS, comparison_table, comparison_text

    if fmt not in TABLE_FORMATS:
        raise UsageError(f"--format {fmt!r} is not known; allowed: {', '.join(TABLE_FORMATS)}")
    if output is not None and output.suffix == ".png":
        raise UsageError(f"--output {output} would be overwritten by the figure; give the JSON file, e.g. compare.json")
    try:
        chosen = parse_methods(methods)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    overrides = {"storage": storage, "study": study, "workers.count": workers}
    spec = read_spec(spec_path, **overrides, **{"workers.ray_address": ray_address})
    figure = Path(f"{spec.study_name}-compare.png") if output is None else output.with_suffix(".png")
    try:
        runs = compare(spec, chosen, budget_tokens=budget_tokens, seeds=seeds, console=err)
        record(spec, runs, budget_tokens, figure)
    except SearchError as exc:
        raise UsageError(str(exc)) from None
    rows = summarize(runs)
    if fmt == "table":
        show_table(
            comparison_table(rows, f"{spec.study_name}: {budget_tokens:,} forwarded tokens per run, {seeds} seed(s)")
        )
    else:
        sys.stdout.write(comparison_text(rows, fmt))
    err.print(f"figure: {figure}", markup=False, highlight=False, soft_wrap=True)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"budget_tokens": budget_tokens, "rows": rows}, indent=1))


def show_outcome(spec: Spec, outcome: Any) -> None:
    """The end-of-search table: held-out fitness of uniform vs the found profile, and next steps."""
    from rich.table import Table

    from ..secrets import redact_url

    table = Table(title=f"held-out results: {outcome.study}")
    for column in ("profile", f"average {spec.compression.scheme}", "held-out fitness", "vs uniform", "perplexity"):
        table.add_column(column, justify="right")
    uniform = outcome.heldout.get("uniform", {}).get("fitness")
    for name, row in outcome.heldout.items():
        ppl = "-" if row.get("perplexity") is None else f"{row['perplexity']:.3f}"
        fit = "failed" if row.get("fitness") is None else f"{row['fitness']:.6g}"
        change = "-" if not uniform or row.get("fitness") is None else f"{row['fitness'] / uniform - 1:+.1%}"
        label = f"{name} (the start)" if row.get("source") == "start" else name
        table.add_row(label, f"{row['average']:.4g}", fit, change, ppl)
    show_table(table)
    where = redact_url(spec.storage)
    out.print(
        f"{outcome.evaluations} evaluations ({outcome.replayed} replayed from before a restart).\n"
        f"next: pressroom status {outcome.study} --storage '{where}'",
        markup=False,
        highlight=False,
    )


#: Under `pressroom status`: what its counts count.
STATUS_CAPTION = (
    "An evaluation is one measurement of one profile on one stage's tokens (what `pressroom search` counts). "
    "A trial is one profile's evaluations in one generation: complete when it passed every stage, pruned when "
    "an earlier stage dropped it. Best fitness: the lowest search fitness of a complete trial (calibration data)."
)
_STATE_WORDS = {"COMPLETE": "complete", "PRUNED": "pruned at a stage", "FAIL": "failed", "RUNNING": "running"}


def count_trials(trials: Sequence[FrozenTrial]) -> tuple[str, str]:
    """What a study's trials hold, in words: ``("118 (2 failed)", "98: 30 complete, 68 pruned at a stage")``.

    Evaluations are counted from the records each trial keeps, so they match what the search
    reported, replays after a restart included once.
    """
    from ..storage.study import EVALUATIONS, describe_trials

    records = [record for trial in trials for record in trial.user_attrs.get(EVALUATIONS, [])]
    failed = sum(record.get("fitness") is None for record in records)
    evaluations = f"{len(records)}" + (f" ({failed} failed)" if failed else "")
    states = describe_trials(trials)
    order = [*_STATE_WORDS, *sorted(set(states) - set(_STATE_WORDS))]
    parts = [f"{states[name]} {_STATE_WORDS.get(name, name.lower())}" for name in order if name in states]
    return evaluations, f"{len(trials)}" + (f": {', '.join(parts)}" if parts else "")


def status(
    study: Annotated[str | None, typer.Argument(help="A study name; all studies when left out.")] = None,
    storage: StorageOpt = None,
) -> None:
    """Show studies: evaluations, trials by state, best fitness and progress."""
    from rich.table import Table

    from ..storage.study import PROGRESS, StorageError, connect, fitness_of

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
    table = Table(title="pressroom studies", caption=STATUS_CAPTION)
    for column in ("study", "evaluations", "trials", "best fitness", "progress"):
        table.add_column(column)
    for summary in summaries:
        trials = rdb.get_all_trials(summary._study_id, deepcopy=False)
        complete = [f for t in trials if t.state.name == "COMPLETE" and (f := fitness_of(t)) is not None]
        progress = summary.user_attrs.get(PROGRESS, {})
        done = progress.get("fraction")
        table.add_row(
            summary.study_name,
            *count_trials(trials),
            f"{min(complete):.6g}" if complete else "-",
            "-" if done is None else f"{100 * done:.0f}% (generation {progress.get('generation', '-')})",
        )
    show_table(table)
