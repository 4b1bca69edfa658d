"""`pressroom eval`: zero-shot accuracy of the dense and the compressed model through lm-eval.

Registered on the `pressroom` app in `search/cli/app.py`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import StorageOpt, UsageError, err, out, read_spec, resolve_storage, show_table

DEFAULT_TASKS = "pressroom_facts,pressroom_sequences"


def _profile_and_spec(target: str, spec_path: Path | None, storage: str | None, cache_dir: str | None) -> Any:
    """(profile, evaluator spec) from a profile file and --spec, or from a study's best and its spec."""
    from spaces import Profile

    from ..results.best import evaluator_spec_from, find_best, study_spec

    path = Path(target)
    if path.is_file():
        if spec_path is None:
            raise UsageError(f"give the spec {target} was searched with: --spec SPEC")
        try:
            profile = Profile.from_json(path.read_text())
        except ValueError as exc:
            raise UsageError(f"{target}: {exc}") from None
        return profile, read_spec(spec_path, cache_dir=cache_dir).evaluator_spec()
    url = resolve_storage(storage)
    try:
        profile = find_best(url, target).profile
        if spec_path is not None:
            return profile, read_spec(spec_path, cache_dir=cache_dir).evaluator_spec()
        return profile, evaluator_spec_from(study_spec(url, target), cache_dir)
    except ValueError as exc:  # ResultsError: no such study (nor file), no answer yet
        raise UsageError(f"{target} is neither a profile file nor a study with a best profile: {exc}") from None


def eval_command(
    target: Annotated[
        str,
        typer.Argument(
            help="A profile JSON (from `best`; give --spec) or a study name (its best profile and recorded spec).",
            show_default=False,
        ),
    ],
    tasks: Annotated[
        str,
        typer.Option(
            help="Comma-separated lm-eval tasks: the shipped pressroom_facts, pressroom_sequences (offline) "
            "or lm-eval's own (arc_easy, hellaswag, piqa, winogrande: downloaded from the Hugging Face Hub)."
        ),
    ] = DEFAULT_TASKS,
    spec_path: Annotated[Path | None, typer.Option("--spec", help="The spec the profile was searched with.")] = None,
    storage: StorageOpt = None,
    cache_dir: Annotated[str | None, typer.Option(help="Where compression databases live (overrides).")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many items per task (a quick check).")] = None,
    batch_size: Annotated[int, typer.Option(help="Requests per forward pass.")] = 16,
    include_path: Annotated[Path | None, typer.Option(help="A folder of further lm-eval task YAMLs.")] = None,
    device: Annotated[str, typer.Option(help="Where the model runs: cpu, cuda, cuda:1...")] = "cpu",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the scores as JSON.")] = None,
) -> None:
    """Zero-shot accuracy (lm-evaluation-harness) of the dense model and of the compressed one."""
    from evaluators.quality.zeroshot import accuracy, check_tasks
    from evaluators.saving.export import compressed_evaluator

    names = [name.strip() for name in tasks.split(",") if name.strip()]
    if not names:
        raise UsageError("--tasks names no task")
    try:  # before the model loads: a missing lm-eval or an unknown task fails in seconds
        check_tasks(names, include_path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    profile, evaluator_spec = _profile_and_spec(target, spec_path, storage, cache_dir)
    start = time.monotonic()
    try:
        err.print(f"loading {evaluator_spec.model.name} and its compression database", markup=False)
        evaluator = compressed_evaluator(evaluator_spec, profile, device=device)
        if evaluator.task != "causal-lm":
            raise UsageError(f"pressroom eval needs a causal LM; {evaluator_spec.model.name} is an {evaluator.task}")
        scores: dict[str, Any] = {}
        for name, setting in (("dense", None), ("compressed", profile)):
            evaluator.apply(setting)
            err.print(f"lm-eval on the {name} model: {', '.join(names)}", markup=False)
            scores[name] = accuracy(
                evaluator.model, evaluator.loaded.tokenizer, names,
                batch_size=batch_size, limit=limit, include_path=include_path,
            )  # fmt: skip
    except ValueError as exc:  # another model or scheme, an unknown task
        raise UsageError(str(exc)) from None
    _print_table(target, scores)
    seconds = time.monotonic() - start
    out.print(f"{seconds:.0f} s, model loading included", markup=False, highlight=False)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps({"target": target, "tasks": names, "seconds": seconds, **scores}, indent=1))


def _print_table(target: str, scores: dict[str, dict[str, dict[str, float]]]) -> None:
    from rich.table import Table

    table = Table(title=f"zero-shot accuracy: {target}")
    for column in ("task", "metric", "dense", "compressed", "change"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for task, metrics in scores["dense"].items():
        for metric, dense in metrics.items():
            compressed = scores["compressed"][task][metric]
            table.add_row(task, metric, f"{dense:.4f}", f"{compressed:.4f}", f"{compressed - dense:+.4f}")
    show_table(table)


__all__ = ["eval_command"]
