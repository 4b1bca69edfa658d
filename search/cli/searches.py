"""The commands that run searches and show them: `search`, `compare` and `status`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..spec.config import Spec
from .common import SpecArg, StorageOpt, UsageError, err, out, read_spec, resolve_storage


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
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the table as JSON here.")] = None,
) -> None:
    """Run several methods on one evaluator at one budget of forwarded tokens, and compare them."""
    import json

    from rich.table import Table

    from ..driver.compare import compare, parse_methods, record, summarize
    from ..driver.run import SearchError

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
    out.print(table)
    where = redact_url(spec.storage)
    out.print(
        f"{outcome.evaluations} evaluations ({outcome.replayed} replayed from before a restart).\n"
        f"next: pressroom status {outcome.study} --storage '{where}'",
        markup=False,
        highlight=False,
    )


def status(
    study: Annotated[str | None, typer.Argument(help="A study name; all studies when left out.")] = None,
    storage: StorageOpt = None,
) -> None:
    """Show studies: trial states, best fitness and progress."""
    from rich.table import Table

    from ..storage.study import PROGRESS, StorageError, connect, describe_trials, fitness_of

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
