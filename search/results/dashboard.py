"""optuna-dashboard for pressroom studies: the figures a search publishes, its note, the server.

During a search, `FigurePublisher` (a coordinator listener) redraws the best profile, the
fitness history and the layer sensitivity fitted to the trials so far (`sensitivity`) at most
every `interval_s` seconds, at generation barriers, on a background thread, and stores them as
*study artifacts* in Optuna's file-system artifact store. Each figure keeps one artifact whose
file is replaced in place (atomically), so the dashboard shows the newest version and nothing
piles up. `pressroom dashboard` serves the storage with the same
artifact folder; the study page then lists the figures under "Study Artifacts", and the study's
attributes and trial notes are made readable as they are served (`readable`).

Example:
    >>> server = make_server("sqlite:///pressroom.db", host="127.0.0.1", port=8080,
    ...                      artifacts=Path("pressroom-artifacts"))  # doctest: +SKIP
    >>> server.serve_forever()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import IO, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.simple_server import make_server as make_wsgi_server

import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.storages import BaseStorage

from spaces import Profile, Space

from ..algorithms.base import Algorithm, Candidate, Result
from ..background import Background
from ..secrets import redact_url
from ..spec.config import Spec
from ..storage.study import connect
from .readable import readable_app
from .sensitivity import layer_sensitivity

logger = logging.getLogger(__name__)


class ReplacingArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system artifact store whose writes replace a file atomically.

    A figure is rewritten under the same artifact id while the dashboard may be serving it; a
    temporary file renamed over the old one means a reader sees the old or the new PNG whole.
    """

    def write(self, artifact_id: str, content_body: IO[bytes]) -> None:
        path = self._get_filepath(artifact_id)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as f:
            shutil.copyfileobj(content_body, f)
        os.replace(partial, path)


class FigurePublisher:
    """A coordinator listener that keeps the study's figures current (see the module docstring).

    Args:
        study: the search's Optuna study.
        space: the search space (to draw profiles).
        folder: the artifact folder (created if missing).
        interval_s: the least time between two redraws during the search (and before the first);
            the end of the search always draws. A redraw costs the driver about 0.5 CPU-s (the
            sensitivity fit over every trial so far, three figures): every 15 s that was about
            1.7 % of a 2-worker search's CPU, every 60 s it is 0.4 % (docs/benchmarks.md, "CPU
            per forwarded token").
    """

    def __init__(self, study: optuna.Study, space: Space, folder: Path, *, interval_s: float = 60.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.study = study
        self.space = space
        self.store = ReplacingArtifactStore(folder)
        self.interval_s = interval_s
        # the first figures come one interval in: a short search gets only its final figures
        self._drawn = time.monotonic()
        self._worker = Background("pressroom-figures")

    def on_result(self, candidate: Candidate, result: Result, algorithm: Algorithm) -> None:
        """Results are drawn at barriers only."""

    def on_barrier(self, algorithm: Algorithm) -> None:
        if time.monotonic() - self._drawn >= self.interval_s:
            self._submit(algorithm)

    def on_finish(self, algorithm: Algorithm) -> None:
        self._submit(algorithm)

    def close(self, timeout: float | None = 60.0) -> None:
        """Finish the last redraw (waiting at most `timeout` seconds) and stop the thread."""
        if not self._worker.close(timeout):
            logger.warning("the last figures were still being drawn after %s s; they may be stale", timeout)

    def _submit(self, algorithm: Algorithm) -> None:
        self._drawn = time.monotonic()
        # Copied here, on the coordinator's thread: the algorithm changes while the figures draw.
        best = algorithm.best
        history = list(algorithm.history)
        self._worker.submit(lambda: self.publish(best, history), key="figures")

    def publish(self, best: tuple[Profile, float] | None, history: list[dict[str, Any]]) -> None:
        """Draw the figures now and store them (the background thread calls this); the layer
        sensitivity is fitted to every trial stored so far, once there are enough."""
        from . import figures  # matplotlib: 1 s

        estimate = layer_sensitivity(self.space, self.study.get_trials(deepcopy=False))
        with tempfile.TemporaryDirectory(prefix="pressroom-figures-") as tmp:
            paths = [figures.save_png(figures.history_figure(history), Path(tmp) / figures.HISTORY_PNG)]
            if best is not None:
                figure = figures.profile_figure(self.space, best[0], fitness=best[1])
                paths.append(figures.save_png(figure, Path(tmp) / figures.PROFILE_PNG))
            if estimate is not None:
                figure = figures.sensitivity_figure(self.space, estimate)
                paths.append(figures.save_png(figure, Path(tmp) / figures.SENSITIVITY_PNG))
            for path in paths:
                self._store(path)

    def _store(self, path: Path) -> None:
        existing = [m for m in get_all_artifact_meta(self.study) if m.filename == path.name]
        if existing:
            with open(path, "rb") as f:
                self.store.write(existing[0].artifact_id, f)
        else:
            upload_artifact(artifact_store=self.store, file_path=str(path), study_or_trial=self.study)


def spec_note(spec: Spec, space: Space) -> str:
    """A Markdown summary of the search for the dashboard's study note (no secrets)."""
    c, a, d, w = spec.compression, spec.algorithm, spec.data, spec.workers
    params = ", ".join(f"{k}={v}" for k, v in sorted(spec.public_dict()["algorithm"]["resolved"].items()))
    summary = space.summary()
    return "\n".join(
        [
            f"## {spec.study_name}",
            "",
            f"- **model**: `{spec.model.name}` (fingerprint `{space.model}`), task {spec.task}",
            f"- **compression**: {c.scheme} to target {c.target:g} with {c.compressor},"
            f" {space.granularity} granularity, {summary['units']} units over {summary['layers']} layers,"
            f" about 10^{summary['log10_profiles']:.0f} feasible profiles",
            f"- **algorithm**: {a.name}" + (f" (preset {a.preset})" if a.preset else "") + f": {params}",
            f"- **data**: {d.source}, sequences of {d.seq_len} tokens, metric {d.metric},"
            f" {d.heldout_tokens} held-out tokens",
            f"- **workers**: {w.count} x {w.cpus_per_worker:g} CPU, GPUs {w.gpus_per_worker}",
            f"- **storage**: `{redact_url(spec.storage)}`, seed {spec.seed}",
            "",
            "The metric is the fitness (lower is better); each trial is one member of a generation with one"
            " intermediate value per selection stage (step = tokens). PRUNED members were dropped by a stage."
            " The figures of the best profile and of the fitness per generation are under Study Artifacts.",
        ]
    )


def write_note(study: optuna.Study, text: str) -> None:
    """Set the study's dashboard note, unless it already says exactly that."""
    from optuna_dashboard import get_note, save_note

    if get_note(study) != text:
        save_note(study, text)


def attach_figures(spec: Spec, study: optuna.Study, space: Space) -> FigurePublisher:
    """Write the study's note, and return the figure publisher the search gets."""
    write_note(study, spec_note(spec, space))
    return FigurePublisher(study, space, spec.artifacts_dir())


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """A browser fetches a page's parts in parallel; one thread per request keeps it quick."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """Requests go to the debug log, not one stderr line each."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("dashboard: " + format, *args)


def make_server(storage: str, *, host: str, port: int, artifacts: Path | None) -> WSGIServer:
    """An optuna-dashboard WSGI server on the storage (not yet serving: call `serve_forever`).

    Args:
        storage: the storage URL (with its password, which is never shown).
        host: the interface to listen on.
        port: the TCP port.
        artifacts: the artifact folder the searches publish figures to; None shows no artifacts.

    Raises:
        StorageError: the storage cannot be reached.
        OSError: the address cannot be bound (e.g. the port is in use).
    """
    from optuna_dashboard import wsgi

    rdb = connect(storage)
    store = None
    if artifacts is not None:
        artifacts.mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(artifacts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        app = wsgi(rdb, artifact_store=store)
    app = readable_app(_no_importance_without_params(app, rdb), rdb)
    return make_wsgi_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)


_IMPORTANCES = re.compile(r"/api/studies/(\d+)/param_importances")


def _no_importance_without_params(app: Any, storage: BaseStorage) -> Any:
    """Answer "no importances" for a study whose trials have no parameters.

    Studies made before trials got summary parameters (`summary`) have none, and
    optuna-dashboard 0.21 divides by zero computing the importances of such a study: every study
    page would show an "internal server error" instead of an empty importance card.
    """

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        match = _IMPORTANCES.fullmatch(environ.get("PATH_INFO", ""))
        if match is not None:
            study_id = int(match.group(1))
            try:
                directions = storage.get_study_directions(study_id)
                trials = storage.get_all_trials(study_id, deepcopy=False)
            except KeyError:  # an unknown study: the dashboard's own 404
                return app(environ, start_response)
            if not any(trial.params for trial in trials):
                body = json.dumps({"param_importances": [[] for _ in directions]}).encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
        return app(environ, start_response)

    return wrapped


__all__ = [
    "FigurePublisher",
    "ReplacingArtifactStore",
    "attach_figures",
    "make_server",
    "spec_note",
    "write_note",
]
