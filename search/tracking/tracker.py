"""MLflow tracking: one run per search, fed by a coordinator listener.

The run holds the spec as parameters (flattened, passwords redacted), per-generation metrics
(``best_fitness``, ``fitness`` of the generation's winner, ``parent_fitness`` of the re-evaluated
parent; step = generation), at the end the best profile, the history and the figures as
artifacts, and the held-out report (``heldout.<profile>.fitness`` and, for a causal LM,
``heldout.<profile>.perplexity`` of the uniform and the best profile). Tags link it to its study
and storage, without credentials, and summarise the best profile (`profile_tags`: target, units,
achieved average; the profile itself is the artifact ``profile.json``, never a tag). A resumed
search continues its run (found by study, storage and spec fingerprint, `find_runs`) instead of
starting another; `pressroom register` finds the run the same way and logs the model into it.

The experiment is tagged as model training (`TAG_EXPERIMENT_KIND`), so MLflow 3's UI opens it
on its runs, not in its GenAI view of traces.

All MLflow calls after the run is created happen on a background thread, so a slow tracking
server never stalls the search; the run is ended FINISHED when the search finishes, KILLED when
it stops early (a rerun resumes it).

Example:
    >>> tracker = MlflowTracker.start(spec)  # doctest: +SKIP
    >>> run_search(spec, listeners=[tracker])  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spaces import Profile, Space

from ..algorithms.base import Algorithm, Candidate, Result
from ..background import Background
from ..cluster.probe import TIMEOUT_S, http_listening
from ..secrets import redact_text, redact_url, url_secrets
from ..spec.config import Spec

logger = logging.getLogger(__name__)

TAG_STUDY = "pressroom.study"
TAG_STORAGE = "pressroom.storage"
TAG_FINGERPRINT = "pressroom.fingerprint"
TAG_ALGORITHM = "pressroom.algorithm"
TAG_LOGGED = "pressroom.history_logged"  # history entries already logged, so a resume adds only new ones
TAG_BEST = "pressroom.best_fitness"
TAG_TARGET = "pressroom.target"  # scheme and target, e.g. "sparsity 0.5"
TAG_UNITS = "pressroom.units"  # the number of units (layers or blocks) the profile sets
TAG_AVERAGE = "pressroom.average"  # the profile's achieved weight-averaged sparsity, bits or dropped share
#: The experiment tag MLflow 3's UI reads to choose its view, and the value of its "Machine
#: learning" (model training) kind; without it an experiment opens in the GenAI view.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
#: History fields logged as metrics, and their metric names.
METRICS = {"best_fitness": "best_fitness", "fitness": "fitness", "parent_fitness": "parent_fitness"}
_PARAM_LIMIT = 6000  # MLflow's longest parameter value
_BATCH = 100  # MLflow's most parameters or tags per log_batch


class TrackingError(RuntimeError):
    """MLflow cannot be used; the message names the (redacted) URI and the reason."""


def flat_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested data as MLflow parameters: dotted keys, JSON for lists, URLs redacted, long values cut.

    Example:
        >>> flat_params({"storage": "postgresql://u:pw@h/db", "data": {"seq_len": 64, "ids": [1, 2]}})
        {'storage': 'postgresql://u:***@h/db', 'data.seq_len': '64', 'data.ids': '[1, 2]'}
    """
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, prefix=f"{name}."))
            continue
        text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
        if "://" in text:
            text = redact_url(text)
        out[name] = text if len(text) <= _PARAM_LIMIT else text[: _PARAM_LIMIT - 3] + "..."
    return out


def run_tags(spec: Spec) -> dict[str, str]:
    """Tags that link a run to its study (the storage URL without its password)."""
    return study_run_tags(spec.public_dict(), spec.fingerprint())


def study_run_tags(recorded: Mapping[str, Any], fingerprint: str) -> dict[str, str]:
    """`run_tags` from what a study recorded: its spec's `Spec.public_dict()` and fingerprint."""
    return {
        TAG_STUDY: str(recorded["study"]),
        TAG_STORAGE: str(recorded["storage"]),
        TAG_FINGERPRINT: fingerprint,
        TAG_ALGORITHM: str(recorded["algorithm"]["name"]),
    }


def error_reason(exc: BaseException, secrets: list[str]) -> str:
    """The first line of an MLflow error, with the tracking URI's `secrets` (and any URL password) redacted."""
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__, secrets)


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment `name`, created if missing, tagged as model training unless it has a kind."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return str(client.create_experiment(name, tags={TAG_EXPERIMENT_KIND: MODEL_TRAINING}))
    if TAG_EXPERIMENT_KIND not in experiment.tags:  # made before this tag, or by someone else
        client.set_experiment_tag(experiment.experiment_id, TAG_EXPERIMENT_KIND, MODEL_TRAINING)
    return str(experiment.experiment_id)


def find_runs(client: Any, experiment: str, tags: Mapping[str, str]) -> list[Any]:
    """The active runs of `experiment` (an id) that carry every one of `tags`, newest first."""
    fingerprint = f"tags.`{TAG_FINGERPRINT}` = '{tags[TAG_FINGERPRINT]}'"
    runs = client.search_runs([experiment], filter_string=fingerprint)
    return [run for run in runs if all(run.data.tags.get(k) == v for k, v in tags.items())]


def profile_tags(profile: Profile, space: Space | None) -> dict[str, str]:
    """A short summary of a profile as tags: its target, its number of units and, when the space
    is known, the weight-averaged sparsity, bits or dropped share it achieves.

    Example:
        >>> profile_tags(Profile({"fc1": 1, "fc2": 0}, scheme={"name": "sparsity", "target": 0.5}, model="m"), None)
        {'pressroom.target': 'sparsity 0.5', 'pressroom.units': '2'}
    """
    tags = {TAG_TARGET: f"{profile.scheme.get('name')} {profile.scheme.get('target')}", TAG_UNITS: str(len(profile))}
    if space is not None:
        tags[TAG_AVERAGE] = f"{space.average(profile):.6g}"
    return tags


def _metrics(history: list[dict[str, Any]], start: int) -> list[Any]:
    from mlflow.entities import Metric

    from ..algorithms import read_float

    now = int(time.time() * 1000)
    metrics = []
    for index in range(start, len(history)):
        entry = history[index]
        step = int(entry.get("generation", index))
        for field, metric in METRICS.items():
            value = read_float(entry.get(field))
            if value is not None and math.isfinite(value):
                metrics.append(Metric(metric, value, now, step))
    return metrics


class MlflowTracker:
    """A coordinator listener that records a search in an MLflow run (see the module docstring).

    Build it with `start`, which creates (or resumes) the run.
    """

    def __init__(self, client: Any, run_id: str, logged: int, secrets: list[str]) -> None:
        self.client = client
        self.run_id = run_id
        self._secrets = secrets
        self._logged = logged
        self._ended = False
        self._worker = Background("pressroom-mlflow", self._secrets)

    @staticmethod
    def check(spec: Spec) -> None:
        """Check within seconds that the spec's tracking server answers (MLflow's own client
        retries for minutes); creates nothing.

        Raises:
            TrackingError: nothing answers at the tracking URI.
        """
        uri = spec.tracking_uri()
        if uri and not http_listening(uri):
            raise TrackingError(
                f"cannot log the search to MLflow at {redact_url(uri)}: nothing answers there within "
                f"{TIMEOUT_S:g} s (is the tracking server up?); set mlflow.enabled: false to search without tracking"
            )

    @classmethod
    def start(cls, spec: Spec) -> MlflowTracker:
        """Create the search's run, or resume the one an earlier attempt of it left.

        Raises:
            TrackingError: the tracking server cannot be reached or refuses the run.
        """
        from mlflow import MlflowClient
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        cls.check(spec)
        uri = spec.tracking_uri()
        shown = redact_url(uri) if uri else "MLflow's default store"
        secrets = url_secrets(uri or "")
        tags = run_tags(spec)
        try:
            client = MlflowClient(tracking_uri=uri)
            experiment = experiment_id(client, spec.mlflow.experiment)
            earlier = find_runs(client, experiment, tags)
            if earlier:
                run = earlier[0]
                client.update_run(run.info.run_id, status="RUNNING")
                logger.info("resuming MLflow run %s of study %s", run.info.run_id, spec.study_name)
                return cls(client, run.info.run_id, int(run.data.tags.get(TAG_LOGGED, 0)), secrets)
            run = client.create_run(experiment, tags=tags, run_name=spec.study_name)
            params = [Param(k, v) for k, v in flat_params(spec.public_dict()).items()]
            for i in range(0, len(params), _BATCH):
                client.log_batch(run.info.run_id, params=params[i : i + _BATCH])
            client.set_tag(run.info.run_id, TAG_LOGGED, "0")
        except (MlflowException, OSError) as exc:
            raise TrackingError(
                f"cannot log the search to MLflow at {shown}: {error_reason(exc, secrets)}; "
                "set mlflow.enabled: false to search without tracking"
            ) from None
        logger.info("MLflow run %s records study %s", run.info.run_id, spec.study_name)
        return cls(client, run.info.run_id, 0, secrets)

    # --- the listener ------------------------------------------------------------------------------

    def on_result(self, candidate: Candidate, result: Result, algorithm: Algorithm) -> None:
        """Metrics are per generation: they are logged at barriers."""

    def on_barrier(self, algorithm: Algorithm) -> None:
        self._log_history(list(algorithm.history))

    def on_finish(self, algorithm: Algorithm) -> None:
        history = list(algorithm.history)
        self._log_history(history)
        best = algorithm.best
        self._worker.submit(lambda: self._finish(algorithm.space, best, history))

    def log_heldout(self, report: Mapping[str, Mapping[str, Any]]) -> None:
        """The held-out report's fitness and perplexity per profile, as metrics ``heldout.<profile>.<key>``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"heldout.{name}.{key}", float(row[key]), now, 0)
            for name, row in report.items()
            for key in ("fitness", "perplexity")
            if isinstance(row.get(key), int | float) and math.isfinite(row[key])
        ]
        if metrics:
            self._worker.submit(lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def close(self, timeout: float | None = 120.0) -> None:
        """Finish what is queued; a run whose search did not finish is ended KILLED."""
        if not self._worker.close(timeout):
            logger.warning("MLflow logging was still busy after %s s; the run may miss its last records", timeout)
        if not self._ended:
            try:
                self.client.set_terminated(self.run_id, status="KILLED")
            except Exception as exc:  # the search's own error matters more than this one
                logger.warning(
                    "could not mark MLflow run %s KILLED: %s", self.run_id, redact_text(str(exc), self._secrets)
                )

    # --- on the background thread ----------------------------------------------------------------

    def _log_history(self, history: list[dict[str, Any]]) -> None:
        start, self._logged = self._logged, len(history)
        if start < len(history):
            self._worker.submit(lambda: self._write_history(history, start))

    def _write_history(self, history: list[dict[str, Any]], start: int) -> None:
        metrics = _metrics(history, start)
        for i in range(0, len(metrics), 1000):  # MLflow's most metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])
        self.client.set_tag(self.run_id, TAG_LOGGED, str(len(history)))

    def _finish(self, space: Space, best: tuple[Profile, float] | None, history: list[dict[str, Any]]) -> None:
        from ..results.exports import profile_document
        from ..results.figures import (  # matplotlib: 1 s
            HISTORY_PNG,
            PROFILE_PNG,
            history_figure,
            profile_figure,
            save_png,
        )

        with tempfile.TemporaryDirectory(prefix="pressroom-mlflow-") as tmp:
            folder = Path(tmp)
            (folder / "history.json").write_text(json.dumps(history, indent=1))
            save_png(history_figure(history), folder / HISTORY_PNG)
            if best is not None:
                (folder / "profile.json").write_text(json.dumps(profile_document(best[0], space), indent=2))
                save_png(profile_figure(space, best[0], fitness=best[1]), folder / PROFILE_PNG)
                for key, value in {TAG_BEST: repr(best[1]), **profile_tags(best[0], space)}.items():
                    self.client.set_tag(self.run_id, key, value)
            self.client.log_artifacts(self.run_id, str(folder))
        self.client.set_terminated(self.run_id, status="FINISHED")
        self._ended = True


__all__ = [
    "METRICS",
    "MODEL_TRAINING",
    "TAG_EXPERIMENT_KIND",
    "MlflowTracker",
    "TrackingError",
    "error_reason",
    "experiment_id",
    "find_runs",
    "flat_params",
    "profile_tags",
    "run_tags",
    "study_run_tags",
]
