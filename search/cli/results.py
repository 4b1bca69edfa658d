"""The commands that use a search's results: dashboard, best, export, apply, register.

They are registered on the `pressroom` app in `search/cli/app.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from ..results.best import ResultsError
from ..secrets import redact_url
from ..spec.config import DEFAULT_ARTIFACTS
from .common import PIPED_WIDTH, StorageOpt, UsageError, err, out, read_spec, resolve_storage, show_table

StudyArg = Annotated[str, typer.Argument(help="The study name (see `pressroom status`).", show_default=False)]
OutputOpt = Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of the terminal.")]
BEST_FORMATS = ("json", "yaml", "table")
APPLY_FORMATS = ("dense", "compressed-tensors")


def _choice(value: str, allowed: tuple[str, ...] | list[str], option: str) -> str:
    if value not in allowed:
        raise UsageError(f"{option} {value!r} is not known; allowed: {', '.join(allowed)}")
    return value


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    err.print(f"wrote {output}", markup=False, highlight=False)


def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="The interface to listen on (0.0.0.0 for every one).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The TCP port.")] = 8080,
    artifacts: Annotated[
        Path, typer.Option(help="The artifact folder searches publish figures to (the spec's `artifacts`).")
    ] = Path(DEFAULT_ARTIFACTS),
) -> None:
    """Serve optuna-dashboard on the storage: studies, trials, stages, notes and figures."""
    from ..results.dashboard import make_server
    from ..storage.study import StorageError

    url = resolve_storage(storage)
    try:
        server = make_server(url, host=host, port=port, artifacts=artifacts.expanduser())
    except StorageError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    out.print(
        f"optuna-dashboard on http://{host}:{server.server_port}/dashboard\n"
        f"  storage {redact_url(url)}, artifacts {artifacts}; Ctrl-C stops it",
        markup=False,
        highlight=False,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def best(
    study: StudyArg,
    storage: StorageOpt = None,
    output: OutputOpt = None,
    fmt: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(BEST_FORMATS)}.")] = "json",
) -> None:
    """The best profile of a study: the finished search's answer, else its best completed trial.

    JSON and YAML hold the profile (unit -> level index, what `apply` reads) and, under
    ``values``, what each level means per layer: sparsity fraction, bits, or kept/dropped.
    """
    from ..results.best import find_best, study_space
    from ..results.exports import profile_document

    _choice(fmt, BEST_FORMATS, "--format")
    url = resolve_storage(storage)
    try:
        found = find_best(url, study)
    except ResultsError as exc:
        raise UsageError(str(exc)) from None
    try:
        space = study_space(url, study)
    except ResultsError as exc:  # a study recorded without its layers: only the levels can be shown
        if fmt == "table":
            raise UsageError(str(exc)) from None
        err.print(f"{exc}; writing the levels without their per-layer values", markup=False, highlight=False)
        space = None
    origin = (
        "the search's answer"
        if found.source == "search"
        else "best completed trial so far; the search has no answer yet"
    )
    trial = "" if found.trial is None else f"trial {found.trial}, "
    err.print(f"{study}: fitness {found.fitness:.6g} ({trial}{origin})", markup=False, highlight=False)
    if found.heldout and found.heldout.get("fitness") is not None:
        ppl = found.heldout.get("perplexity")
        shown = f"held-out: fitness {found.heldout['fitness']:.6g}" + ("" if ppl is None else f", perplexity {ppl:.4g}")
        err.print(shown, markup=False, highlight=False)
    document = found.profile.to_dict() if space is None else profile_document(found.profile, space)
    if fmt == "json":
        _emit(json.dumps(document, indent=2) + "\n", output)
    elif fmt == "yaml":
        _emit(yaml.safe_dump(document, sort_keys=False), output)
    else:
        from rich.console import Console
        from rich.table import Table

        from ..results.exports import describe_levels

        assert space is not None
        table = Table(title=f"best profile of {study}: average {space.scheme.name} {space.average(found.profile):.4g}")
        for column in ("unit", "level", space.scheme.name):
            table.add_column(column, justify="left" if column == "unit" else "right")
        for name, level, meaning in describe_levels(space, found.profile):
            table.add_row(name, str(level), f"{meaning:.4g}")
        if output is None:
            show_table(table)
        else:
            with output.open("w") as f:
                Console(file=f, width=PIPED_WIDTH).print(table)
            err.print(f"wrote {output}", markup=False, highlight=False)


def export(
    study: StudyArg,
    fmt: Annotated[str, typer.Option("--format", help="json, map, llm-compressor or evopress.", show_default=False)],
    storage: StorageOpt = None,
    output: OutputOpt = None,
) -> None:
    """Write a study's best profile for other tools (see docs/results.md for each format)."""
    from ..results.best import find_best, study_space, study_spec
    from ..results.exports import FORMATS, write_profile

    _choice(fmt, list(FORMATS), "--format")
    url = resolve_storage(storage)
    try:
        found = find_best(url, study)
        space = study_space(url, study)
        compression = study_spec(url, study).get("compression", {})
        symmetric = bool(compression.get("levels", {}).get("symmetric", False))
        text = write_profile(found.profile, space, fmt, compressor=compression.get("compressor"), symmetric=symmetric)
    except ValueError as exc:  # ResultsError, or a format that cannot hold this scheme
        raise UsageError(str(exc)) from None
    _emit(text, output)


def apply(
    profile_path: Annotated[
        Path, typer.Argument(help="A pressroom profile JSON (from `best` or `export --format json`).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="A new folder for the compressed model.", show_default=False)],
    spec_path: Annotated[Path | None, typer.Option("--spec", help="The spec the profile was searched with.")] = None,
    study: Annotated[str | None, typer.Option(help="Or: the study whose recorded spec to use.")] = None,
    storage: StorageOpt = None,
    cache_dir: Annotated[str | None, typer.Option(help="Where compression databases live (overrides).")] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="dense: the compressed weights in the model's own layout; compressed-tensors: packed "
            "integer weights (bitwidth) or a shallower model (drop) that serving engines load.",
        ),
    ] = "dense",
) -> None:
    """Write the compressed model a profile describes (safetensors, config, tokenizer, profile)."""
    from evaluators.saving.checkpoint import FORMAT, loads_in_transformers, save_compressed_tensors
    from evaluators.saving.export import compressed_evaluator, save_compressed
    from spaces import Profile

    from ..results.best import evaluator_spec_from, study_spec

    _choice(fmt, APPLY_FORMATS, "--format")
    try:
        profile = Profile.from_json(profile_path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {profile_path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{profile_path}: {exc}") from None
    if (spec_path is None) == (study is None):
        raise UsageError("give the model to apply the profile to: --spec SPEC, or --study STUDY (its recorded spec)")
    try:
        if spec_path is not None:
            evaluator_spec = read_spec(spec_path, cache_dir=cache_dir).evaluator_spec()
        else:
            assert study is not None
            evaluator_spec = evaluator_spec_from(study_spec(resolve_storage(storage), study), cache_dir)
        err.print(f"loading {evaluator_spec.model.name} and its compression database", markup=False)
        evaluator = compressed_evaluator(evaluator_spec, profile)
        if fmt == FORMAT:
            save_compressed_tensors(evaluator, profile, out_dir)
        else:
            save_compressed(evaluator, profile, out_dir)
    except ValueError as exc:  # ResultsError, another model or scheme, a non-empty folder
        raise UsageError(str(exc)) from None
    loader = "AutoModelForCausalLM" if evaluator.task == "causal-lm" else "AutoModel"
    how = f"load it with transformers.{loader}.from_pretrained({str(out_dir)!r})"
    if fmt == FORMAT and evaluator.spec.compression.scheme == "bitwidth":
        loads = loads_in_transformers(evaluator.spec.compression)  # symmetric grids: no zero points
        how = f"serve it with: vllm serve {out_dir}" + (f", or {how}" if loads else "") + " (see docs/results.md)"
    out.print(
        f"wrote {out_dir} ({fmt}): safetensors weights, config.json, tokenizer, pressroom-profile.json\n{how}",
        markup=False,
        highlight=False,
    )


def register(
    study: StudyArg,
    name: Annotated[str, typer.Option("--name", help="The registered model's name.", show_default=False)],
    alias: Annotated[str | None, typer.Option(help="An alias for the new version, e.g. champion.")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or MLflow's local store).")
    ] = None,
    storage: StorageOpt = None,
    spec_path: Annotated[Path | None, typer.Option("--spec", help="Apply with this spec, not the study's.")] = None,
    experiment: Annotated[
        str | None, typer.Option(help="The MLflow experiment of the search's run (default: the one its spec names).")
    ] = None,
    cache_dir: Annotated[str | None, typer.Option(help="Where compression databases live (overrides).")] = None,
) -> None:
    """Apply a study's best profile, log the compressed model into the search's MLflow run and register a version."""
    from ..secrets import expand_env
    from ..tracking.model_registry import register_best
    from ..tracking.tracker import TrackingError

    spec = None if spec_path is None else read_spec(spec_path, cache_dir=cache_dir).evaluator_spec()
    try:
        uri = None if tracking_uri is None else expand_env(tracking_uri, key="--tracking-uri")
        done = register_best(
            resolve_storage(storage), study, name, alias=alias, tracking_uri=uri, spec=spec,
            experiment=experiment, cache_dir=cache_dir,
        )  # fmt: skip
    except (ValueError, TrackingError) as exc:
        raise UsageError(str(exc)) from None
    trial = "-" if done.best.trial is None else str(done.best.trial)
    pointer = f"models:/{name}@{alias}" if alias else f"models:/{name}/{done.version}"
    out.print(
        f"registered {name} version {done.version}" + (f" (alias {alias})" if alias else "") + "\n"
        f"  from study {study}, trial {trial}, fitness {done.best.fitness:.6g}\n"
        f"  logged in the search's MLflow run {done.run_id}\n"
        f"load it with mlflow.transformers.load_model({pointer!r})",
        markup=False,
        highlight=False,
    )


__all__ = ["apply", "best", "dashboard", "export", "register"]
