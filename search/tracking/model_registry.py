"""`register_best`: a study's best profile, applied, logged to MLflow and registered as a version.

The compressed model is logged with MLflow's transformers flavour (model and tokenizer, saved as
safetensors), with explicit pip requirements so MLflow never has to infer them. The version
carries tags naming the profile, study, trial and fitness, so a registered model always says
where it came from; an alias (e.g. ``champion``) can point at it.

Example:
    >>> version = register_best("sqlite:///pressroom.db", "tiny-llama-sparsity-0.5-evopress-seed0",
    ...                         "tiny-llama-50", alias="champion")  # doctest: +SKIP
    >>> version.version, version.alias  # doctest: +SKIP
    ('1', 'champion')
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage

from evaluators.config import EvaluatorSpec

from ..results.best import Best, evaluator_spec_from, find_best, study_spec
from ..secrets import redact_url, url_secrets
from .tracker import TAG_STUDY, TrackingError, error_reason, experiment_id

logger = logging.getLogger(__name__)

TAG_PROFILE = "pressroom.profile"
TAG_TRIAL = "pressroom.trial"
TAG_FITNESS = "pressroom.fitness"
TAG_MODEL = "pressroom.model"
TAG_SOURCE = "pressroom.source"
_TAG_LIMIT = 100_000  # MLflow's longest model-version tag value
#: The pipeline task MLflow's transformers flavour records for each kind of model.
TASKS = {"causal-lm": "text-generation", "encoder": "feature-extraction"}


@dataclass(frozen=True)
class Registered:
    """A registered model version.

    Attributes:
        name: the registered model's name.
        version: its new version.
        model_uri: where the logged model is (``models:/...``).
        run_id: the MLflow run that logged it.
        alias: the alias set on it, if any.
        best: the profile it holds, with its study, trial and fitness.
    """

    name: str
    version: str
    model_uri: str
    run_id: str
    alias: str | None
    best: Best


def pip_requirements() -> list[str]:
    """The packages a logged model needs, pinned to the versions that wrote it."""
    import safetensors
    import tokenizers
    import torch
    import transformers

    torch_version = torch.__version__.split("+")[0]  # "+cpu" names a wheel index, not a version
    return [
        f"torch=={torch_version}",
        f"transformers=={transformers.__version__}",
        f"tokenizers=={tokenizers.__version__}",
        f"safetensors=={safetensors.__version__}",
    ]


def version_tags(best: Best) -> dict[str, str]:
    """Tags of a version: profile (compact JSON, when it fits), study, trial, fitness, model."""
    profile = best.profile.to_json(indent=None)
    if len(profile) > _TAG_LIMIT:
        profile = "too long for a tag: see the artifact pressroom-profile.json of the run"
    return {
        TAG_PROFILE: profile,
        TAG_STUDY: best.study,
        TAG_TRIAL: "-" if best.trial is None else str(best.trial),
        TAG_FITNESS: repr(best.fitness),
        TAG_MODEL: best.profile.model,
        TAG_SOURCE: best.source,
    }


def register_best(
    storage: str | BaseStorage,
    study: str,
    name: str,
    *,
    alias: str | None = None,
    tracking_uri: str | None = None,
    spec: EvaluatorSpec | None = None,
    experiment: str = "pressroom",
    cache_dir: str | None = None,
) -> Registered:
    """Apply a study's best profile, log the compressed model and register a version of `name`.

    Args:
        storage: the study's storage (a URL or an Optuna storage).
        study: the study name.
        name: the registered model's name (created if missing).
        alias: an alias to point at the new version (e.g. ``champion``).
        tracking_uri: the MLflow tracking URI (default: MLflow's, e.g. $MLFLOW_TRACKING_URI).
        spec: the model, compression and data to apply the profile with (default: the study's).
        experiment: the MLflow experiment of the run that logs the model.
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

    from evaluators.export import PROFILE_FILE, compressed_evaluator

    best = find_best(storage, study)
    evaluator_spec = spec or evaluator_spec_from(study_spec(storage, study), cache_dir)
    evaluator = compressed_evaluator(evaluator_spec, best.profile)
    tags = version_tags(best)
    where = redact_url(tracking_uri) if tracking_uri else "MLflow's default store"
    step = "connecting"
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        step = "creating the run"
        run_tags = {TAG_STUDY: study, TAG_TRIAL: tags[TAG_TRIAL], TAG_FITNESS: tags[TAG_FITNESS]}
        run = client.create_run(experiment_id(client, experiment), run_name=f"register {name}", tags=run_tags)
        run_id = run.info.run_id
        with tempfile.TemporaryDirectory(prefix="pressroom-register-") as tmp:
            step = "logging the model"
            folder = _save_model(evaluator, Path(tmp) / "model")
            (Path(tmp) / PROFILE_FILE).write_text(best.profile.to_json() + "\n")
            client.log_artifact(run_id, str(Path(tmp) / PROFILE_FILE))
            client.log_artifacts(run_id, str(folder), "model")
        client.set_terminated(run_id, status="FINISHED")
        step = "registering the version"
        if not client.search_registered_models(filter_string=f"name = {json.dumps(name)}"):
            client.create_registered_model(name)
        source = f"{run.info.artifact_uri}/model"
        version = client.create_model_version(name, source, run_id=run_id, tags=tags)
        if alias is not None:
            step = f"setting alias {alias!r}"
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        reason = error_reason(exc, url_secrets(tracking_uri or ""))
        raise TrackingError(f"MLflow at {where} failed while {step}: {reason}") from None
    logger.info("registered %s version %s from study %s (trial %s)", name, version.version, study, best.trial)
    return Registered(name, str(version.version), f"models:/{name}/{version.version}", run_id, alias, best)


def _save_model(evaluator: Any, folder: Path) -> Path:
    """Save the evaluator's model (holding the compressed weights) in MLflow's transformers flavour."""
    import mlflow.transformers

    components = {"model": evaluator.model, "tokenizer": evaluator.loaded.tokenizer}
    mlflow.transformers.save_model(
        components, path=str(folder), task=TASKS[evaluator.task], pip_requirements=pip_requirements()
    )
    return folder


__all__ = ["TASKS", "Registered", "pip_requirements", "register_best", "version_tags"]
