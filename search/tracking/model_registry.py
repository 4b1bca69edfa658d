"""`register_best`: a study's best profile, applied, logged into the search's MLflow run and registered.

The compressed model is logged with MLflow's transformers flavour (model and tokenizer, saved as
safetensors, with explicit pip requirements so MLflow never has to infer them) as an MLflow
logged model whose source run is the search's own run, found as the search found it on resume
(`find_runs`: study, storage, spec fingerprint). So the version's ``run_id`` is the search's run
and MLflow's UI links the two. A study searched without MLflow gets a run of its own, tagged so
that a later search of it (with MLflow on) resumes that run.

The search's run has usually ended (FINISHED) when the model is registered: the model is logged
into it by id and the run is left as it is. MLflow accepts records for any active (not deleted)
run whatever its status, and registration is a separate command, maybe days later, so the run
cannot be kept open for it; reopening it would make a finished search look RUNNING, and leave it
so if registration failed.

The version carries a description (target, method, fitness, held-out results, the run, and the
commands that reproduce it) and short tags (study, trial, fitness, target, units, average); the
profile itself is a file, ``pressroom-profile.json`` in the model, never a tag.

Example:
    >>> version = register_best("sqlite:///pressroom.db", "tiny-llama-sparsity-0.5-evopress-seed0",
    ...                         "tiny-llama-50", alias="champion")  # doctest: +SKIP
    >>> version.version, version.alias  # doctest: +SKIP
    ('1', 'champion')
"""

from __future__ import annotations

import json
import logging
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage

from evaluators.config import EvaluatorSpec
from spaces import Space

from ..results.best import (
    Best,
    ResultsError,
    evaluator_spec_from,
    find_best,
    open_storage,
    study_attrs,
    study_space,
    study_spec,
)
from ..secrets import redact_url, url_secrets
from ..storage.study import FINGERPRINT
from .tracker import (
    TAG_ALGORITHM,
    TAG_STUDY,
    TrackingError,
    error_reason,
    experiment_id,
    find_runs,
    profile_tags,
    study_run_tags,
)

logger = logging.getLogger(__name__)

TAG_TRIAL = "pressroom.trial"
TAG_FITNESS = "pressroom.fitness"
TAG_MODEL = "pressroom.model"
TAG_SOURCE = "pressroom.source"
TAG_FORMAT = "pressroom.format"
#: The pipeline task MLflow's transformers flavour records for each kind of model.
TASKS = {"causal-lm": "text-generation", "encoder": "feature-extraction"}


@dataclass(frozen=True)
class Registered:
    """A registered model version.

    Attributes:
        name: the registered model's name.
        version: its new version.
        model_uri: where the logged model is (``models:/...``).
        run_id: the search's MLflow run, which logged it.
        alias: the alias set on it, if any.
        best: the profile it holds, with its study, trial and fitness.
    """

    name: str
    version: str
    model_uri: str
    run_id: str
    alias: str | None
    best: Best


def pip_requirements(compressed: bool = False) -> list[str]:
    """The packages a logged model needs, pinned to the versions that wrote it (`compressed`: and
    compressed-tensors, which transformers needs to load a compressed-tensors checkpoint)."""
    import safetensors
    import tokenizers
    import torch
    import transformers

    torch_version = torch.__version__.split("+")[0]  # "+cpu" names a wheel index, not a version
    pins = [
        f"torch=={torch_version}",
        f"transformers=={transformers.__version__}",
        f"tokenizers=={tokenizers.__version__}",
        f"safetensors=={safetensors.__version__}",
    ]
    if compressed:
        from importlib.metadata import version

        pins.append(f"compressed-tensors=={version('compressed-tensors')}")
    return pins


def version_tags(best: Best, space: Space | None = None) -> dict[str, str]:
    """Tags of a version: study, trial, fitness, model fingerprint, source, method and the
    profile's summary (`profile_tags`); the profile itself is the model's ``pressroom-profile.json``."""
    return {
        TAG_STUDY: best.study,
        TAG_TRIAL: "-" if best.trial is None else str(best.trial),
        TAG_FITNESS: repr(best.fitness),
        TAG_MODEL: best.profile.model,
        TAG_SOURCE: best.source,
        **({} if best.algorithm is None else {TAG_ALGORITHM: best.algorithm}),
        **profile_tags(best.profile, space),
    }


def version_description(best: Best, model: str, run_id: str, commands: list[list[str]]) -> str:
    """The version's description: what it is, how good, where it comes from, how to make it again.

    Example:
        >>> from spaces import Profile
        >>> profile = Profile({"fc1": 1}, scheme={"name": "sparsity", "target": 0.5}, model="m")
        >>> best = Best(profile, 0.0123, "s", 7, "search", "evopress", {"fitness": 0.02, "perplexity": 31.5})
        >>> text = version_description(best, "tiny-llama", "abc", [["pressroom", "register", "s", "--name", "x"]])
        >>> text.splitlines()[1:3]
        ['Held-out: fitness 0.02, perplexity 31.5.', "Logged in the search's MLflow run abc."]
    """
    target = f"{best.profile.scheme.get('name')} {best.profile.scheme.get('target')}"
    origin = "the search's answer" if best.source == "search" else "the best completed trial so far"
    trial = "" if best.trial is None else f", trial {best.trial}"
    lines = [
        f"{model} compressed to {target} by {best.algorithm or 'an unknown method'}: fitness {best.fitness:.6g} "
        f"(study {best.study}{trial}, {origin})."
    ]
    shown = ("fitness", "perplexity", "average")
    heldout = {k: v for k, v in (best.heldout or {}).items() if k in shown and isinstance(v, int | float)}
    if heldout:
        lines.append("Held-out: " + ", ".join(f"{k} {v:.6g}" for k, v in heldout.items()) + ".")
    lines.append(f"Logged in the search's MLflow run {run_id}.")
    lines.append(
        "Reproduce (SPEC: the spec the run's parameters record): "
        + "; then ".join(shlex.join(command) for command in commands)
    )
    return "\n".join(lines)


def register_best(
    storage: str | BaseStorage,
    study: str,
    name: str,
    *,
    alias: str | None = None,
    tracking_uri: str | None = None,
    spec: EvaluatorSpec | None = None,
    experiment: str | None = None,
    cache_dir: str | None = None,
) -> Registered:
    """Apply a study's best profile, log the compressed model into the search's run and register
    it as a new version of `name`.

    Args:
        storage: the study's storage (a URL or an Optuna storage).
        study: the study name.
        name: the registered model's name (created if missing).
        alias: an alias to point at the new version (e.g. ``champion``).
        tracking_uri: the MLflow tracking URI (default: MLflow's, e.g. $MLFLOW_TRACKING_URI).
        spec: the model, compression and data to apply the profile with (default: the study's).
        experiment: the MLflow experiment of the search's run (default: the one its spec names).
        cache_dir: where compression databases live here (default: the study's spec's).

    Returns:
        The new version.

    Raises:
        ResultsError: no such study, or no profile in it yet.
        ValueError: the spec does not fit the profile (other model or scheme).
        TrackingError: MLflow refused a step (the message says which, with the URI redacted).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from evaluators.saving.checkpoint import FORMAT, loads_in_transformers
    from evaluators.saving.export import compressed_evaluator

    rdb = open_storage(storage)
    best = find_best(rdb, study)
    recorded = study_spec(rdb, study)
    evaluator_spec = spec or evaluator_spec_from(recorded, cache_dir)
    evaluator = compressed_evaluator(evaluator_spec, best.profile)
    space = _space(rdb, study)
    tags = {
        **version_tags(best, space),
        TAG_FORMAT: FORMAT if loads_in_transformers(evaluator_spec.compression) else "dense",
    }
    search_tags = study_run_tags(recorded, str(study_attrs(rdb, study)[1].get(FINGERPRINT, "")))
    where = redact_url(tracking_uri) if tracking_uri else "MLflow's default store"
    step = "connecting"
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        step = "finding the search's run"
        run_id, experiment_of_run = _search_run(
            client, experiment or recorded.get("mlflow", {}).get("experiment", "pressroom"), search_tags, best, space
        )
        step = "logging the model"
        model_id = _log_model(client, evaluator, best, experiment_of_run, run_id, name, tags)
        step = "registering the version"
        if not client.search_registered_models(filter_string=f"name = {json.dumps(name)}"):
            client.create_registered_model(name)
        commands = _commands(study, name, alias, recorded, tracking_uri)
        version = client.create_model_version(
            name,
            f"models:/{model_id}",
            run_id=run_id,
            tags=tags,
            description=version_description(best, evaluator_spec.model.name, run_id, commands),
            model_id=model_id,
        )
        if alias is not None:
            step = f"setting alias {alias!r}"
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        reason = error_reason(exc, url_secrets(tracking_uri or ""))
        raise TrackingError(f"MLflow at {where} failed while {step}: {reason}") from None
    logger.info("registered %s version %s from study %s (trial %s)", name, version.version, study, best.trial)
    return Registered(name, str(version.version), f"models:/{name}/{version.version}", run_id, alias, best)


def _space(storage: BaseStorage, study: str) -> Space | None:
    """The study's space, or None for a study recorded without its layers (its average is then not tagged)."""
    try:
        return study_space(storage, study)
    except ResultsError:
        return None


def _search_run(
    client: Any, experiment: str, tags: Mapping[str, str], best: Best, space: Space | None
) -> tuple[str, str]:
    """The id and experiment id of the search's run; for a search that logged none, a new run
    with the tags a search would have given it, its profile as ``profile.json``, ended FINISHED."""
    from mlflow.entities import RunTag

    found = experiment_id(client, experiment)
    runs = find_runs(client, found, tags)
    if runs:
        return runs[0].info.run_id, found
    logger.info("study %s has no MLflow run in experiment %s; creating one", tags[TAG_STUDY], experiment)
    run_id = client.create_run(found, tags=dict(tags), run_name=tags[TAG_STUDY]).info.run_id
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in profile_tags(best.profile, space).items()])
    with tempfile.TemporaryDirectory(prefix="pressroom-register-") as tmp:
        (Path(tmp) / "profile.json").write_text(best.profile.to_json())
        client.log_artifact(run_id, str(Path(tmp) / "profile.json"))
    client.set_terminated(run_id, status="FINISHED")
    return run_id, found


def _log_model(
    client: Any, evaluator: Any, best: Best, experiment: str, run_id: str, name: str, tags: dict[str, str]
) -> str:
    """Log the evaluator's model, as the compressed-tensors checkpoint where `tags` name that format
    (else the dense weights it holds), and its profile as an MLflow logged model whose source is
    the run `run_id`; returns its id. A failed upload marks it FAILED."""
    import mlflow.transformers
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    from evaluators.saving.checkpoint import FORMAT, save_compressed_tensors
    from evaluators.saving.export import PROFILE_FILE

    compressed = tags[TAG_FORMAT] == FORMAT
    model = client.create_logged_model(experiment, name=name, source_run_id=run_id, tags=tags)
    try:
        with tempfile.TemporaryDirectory(prefix="pressroom-register-") as tmp:
            folder = Path(tmp) / "model"
            metadata = Model(artifact_path=model.artifact_location, run_id=run_id, model_id=model.model_id)
            written = evaluator.model
            if compressed:  # the checkpoint as transformers loads it: packed, or shallower
                checkpoint = save_compressed_tensors(evaluator, best.profile, Path(tmp) / "checkpoint")
                written = _loader(evaluator.task).from_pretrained(checkpoint)
            mlflow.transformers.save_model(
                {"model": written, "tokenizer": evaluator.loaded.tokenizer},
                path=str(folder),
                task=TASKS[evaluator.task],
                pip_requirements=pip_requirements(compressed),
                mlflow_model=metadata,
            )
            (folder / PROFILE_FILE).write_text(best.profile.to_json() + "\n")
            client.log_model_artifacts(model.model_id, str(folder))
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    return str(model.model_id)


def _loader(task: str) -> Any:
    """The transformers class that loads a model of this task."""
    import transformers

    return transformers.AutoModelForCausalLM if task == "causal-lm" else transformers.AutoModel


def _commands(
    study: str, name: str, alias: str | None, recorded: Mapping[str, Any], tracking_uri: str | None
) -> list[list[str]]:
    """The commands that make this version again, with every URL redacted: the search (its spec
    is the run's parameters) and this registration."""
    storage = ["--storage", str(recorded["storage"])] if recorded.get("storage") else []
    register = ["pressroom", "register", study, "--name", name, *storage]
    register += [] if alias is None else ["--alias", alias]
    register += [] if tracking_uri is None else ["--tracking-uri", redact_url(tracking_uri)]
    return [["pressroom", "search", "SPEC", "--study", study, *storage], register]


__all__ = [
    "TAG_FORMAT",
    "TASKS",
    "Registered",
    "pip_requirements",
    "register_best",
    "version_description",
    "version_tags",
]
