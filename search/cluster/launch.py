"""Submit a search to a Ray cluster as a Ray Job (`pressroom launch`).

The job runs ``pressroom search SPEC ...`` with the same overrides the user gave. Ray runs a
job's driver on the head node, and the driver joins the cluster it runs on
(``--ray-address auto``), so its evaluator actors spread over the cluster's nodes.

Only the spec travels: it is copied alone into a temporary folder that becomes the job's
``working_dir``, so nothing else from the submitting machine (a ``.env`` file, a virtualenv) is
uploaded, and the nodes run the pressroom they have installed (the deploy image). Paths written
in the spec are therefore paths on the cluster.

Secrets never travel: a job's entrypoint and runtime_env are stored with the job and shown in
Ray's dashboard, so `launch` refuses a database or tracking URL that holds a password. The
cluster's own environment provides secrets (``OPTUNA_STORAGE``, or ``PGPASSWORD`` referenced
as ``${PGPASSWORD}`` in the URL), typically from a Kubernetes Secret or the compose env file.

The Jobs API of a Ray 2.60 cluster authenticates with a token: unless ``RAY_AUTH_MODE`` says
otherwise, the client sends the token Ray finds in ``RAY_AUTH_TOKEN``, the file named by
``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token``.

Example:
    >>> submission = launch(Path("spec.yaml"), "http://127.0.0.1:8265")  # doctest: +SKIP
    >>> submission.job_id  # doctest: +SKIP
    'raysubmit_...'
"""

from __future__ import annotations

import logging
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..secrets import ENV_REFERENCE, REDACTED, redact_url
from ..spec.config import load_spec
from .raycluster import reachable, use_token_auth

logger = logging.getLogger(__name__)

#: Where `pressroom launch --address` is read from when the flag is left out (as `ray job` does).
ENV_ADDRESS = "RAY_API_SERVER_ADDRESS"
DEFAULT_DASHBOARD_PORT = 8265
#: The spec keys that hold URLs, as (path in the YAML, how the user calls it).
URL_KEYS = ((("storage",), "storage"), (("mlflow", "tracking_uri"), "mlflow.tracking_uri"))


class LaunchError(RuntimeError):
    """The job could not be submitted; the message is for the user and holds no secret."""


@dataclass(frozen=True)
class Submission:
    """A submitted search job.

    Attributes:
        job_id: Ray's submission id (``raysubmit_...``).
        address: the Jobs API address it was submitted to.
        study: the study the search records into.
        entrypoint: the command the job runs (holds no secret).
        storage: the storage URL the job was told (redacted), or None when the cluster's
            ``OPTUNA_STORAGE`` or the default decides.
    """

    job_id: str
    address: str
    study: str
    entrypoint: str
    storage: str | None


def holds_literal_secret(url: str) -> bool:
    """Whether a URL carries a password (or a token in its query) written out, not as ``${VAR}``.

    Args:
        url: a database or tracking URL as the user wrote it.

    Returns:
        True when redacting the URL would hide something other than ``${VAR}`` references.

    Example:
        >>> holds_literal_secret("postgresql+psycopg://pressroom:${PGPASSWORD}@db:5432/optuna")
        False
        >>> holds_literal_secret("postgresql+psycopg://pressroom:hunter2@db:5432/optuna")
        True
    """
    # References become the redaction mark itself, so redacting changes the URL only when a
    # secret position holds something else.
    masked = ENV_REFERENCE.sub(REDACTED, url)
    return redact_url(masked) != masked


def entrypoint(
    spec_name: str,
    *,
    storage: str | None = None,
    study: str | None = None,
    workers: int | None = None,
    seed: int | None = None,
) -> str:
    """The shell command a search job runs on the cluster.

    Args:
        spec_name: the spec's file name inside the job's working_dir.
        storage: ``--storage`` to pass on (``${VAR}`` references stay unexpanded, for the cluster).
        study: ``--study`` to pass on.
        workers: ``--workers`` to pass on.
        seed: ``--seed`` to pass on.

    Returns:
        ``pressroom search SPEC --ray-address auto [overrides]``, quoted for a POSIX shell.

    Example:
        >>> entrypoint("s.yaml", storage="postgresql+psycopg://u:${PGPASSWORD}@db/o", seed=1)
        "pressroom search s.yaml --ray-address auto --storage 'postgresql+psycopg://u:${PGPASSWORD}@db/o' --seed 1"
    """
    args = ["pressroom", "search", spec_name, "--ray-address", "auto"]
    for flag, value in (("--storage", storage), ("--study", study), ("--workers", workers), ("--seed", seed)):
        if value is not None:
            args += [flag, str(value)]
    return shlex.join(args)


def spec_urls(raw: Any) -> dict[str, str]:
    """The URLs a spec file itself holds (not the environment's), by key.

    Args:
        raw: the spec file's parsed YAML.

    Returns:
        ``{"storage": ..., "mlflow.tracking_uri": ...}`` for the keys the file sets.

    Example:
        >>> spec_urls({"storage": "sqlite:///p.db", "mlflow": {"enabled": False}})
        {'storage': 'sqlite:///p.db'}
    """
    urls: dict[str, str] = {}
    for path, name in URL_KEYS:
        node = raw
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, str):
            urls[name] = node
    return urls


def check_no_literal_secrets(urls: dict[str, str], storage: str | None) -> None:
    """Refuse URLs with a written-out password in what a job would carry.

    Args:
        urls: the spec file's URLs (`spec_urls`).
        storage: the ``--storage`` override, if any.

    Raises:
        LaunchError: naming the key (never the password) and what to write instead.
    """
    found = {f"the spec's {name}": (url, "remove it from the spec") for name, url in urls.items()}
    if storage is not None:
        found["--storage"] = (storage, "leave --storage out")
    for where, (url, instead) in found.items():
        if holds_literal_secret(url):
            raise LaunchError(
                f"{where} ({redact_url(url)}) holds a password. A Ray job's entrypoint and working_dir are stored "
                "with the job and shown in Ray's dashboard, so launch never sends one. Give the cluster the "
                "secret in its environment instead (e.g. PGPASSWORD or OPTUNA_STORAGE from a Kubernetes Secret, "
                "or deploy/.env for compose) and write the URL as "
                f"postgresql+psycopg://USER:${{PGPASSWORD}}@HOST:5432/DB, or {instead} so the cluster's "
                "OPTUNA_STORAGE is used."
            )


def dashboard_url(address: str) -> str:
    """Normalise a Jobs API address (the head's dashboard) to ``http[s]://host:port``.

    Args:
        address: ``http://HEAD:8265``, ``https://ray.example.com`` or ``HEAD:8265``.

    Returns:
        The URL without a trailing slash; ``http://`` is assumed without a scheme.

    Raises:
        LaunchError: a ``ray://`` (Ray Client) address, another scheme, or no host.

    Example:
        >>> dashboard_url("head:8265")
        'http://head:8265'
    """
    url = address.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        raise LaunchError(f"--address {address!r} has a bad port; write e.g. http://HEAD:8265") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LaunchError(
            f"--address {address!r} is not the URL of a Ray dashboard: launch submits through the Jobs API "
            f"on the head's dashboard port ({DEFAULT_DASHBOARD_PORT} by default); write e.g. http://HEAD:8265"
        )
    return url


def launch(
    spec_path: Path,
    address: str,
    *,
    storage: str | None = None,
    study: str | None = None,
    workers: int | None = None,
    seed: int | None = None,
) -> Submission:
    """Validate a spec and submit its search as a Ray Job.

    Args:
        spec_path: the search spec (YAML), anywhere on this machine.
        address: the Jobs API, i.e. the head's dashboard (see `dashboard_url`).
        storage: ``--storage`` for the job; ``${VAR}`` references are expanded on the cluster.
        study: ``--study`` for the job.
        workers: ``--workers`` for the job.
        seed: ``--seed`` for the job.

    Returns:
        The `Submission`.

    Raises:
        SpecError: the spec (with the overrides) is not valid.
        LaunchError: a URL with a written-out password, an address that is not a dashboard or
            does not answer, a refused token, or a refused submission.
    """
    overrides = {"storage": storage, "study": study, "seed": seed, "workers.count": workers}
    spec = load_spec(spec_path, overrides=overrides)
    urls = spec_urls(yaml.safe_load(spec_path.read_text()))
    check_no_literal_secrets(urls, storage)
    url = dashboard_url(address)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not reachable(f"{parts.hostname}:{port}"):
        raise LaunchError(
            f"cannot reach Ray's Jobs API at {url}: nothing answers there (is the head up, and is its dashboard "
            "port forwarded to this machine?)"
        )
    command = entrypoint(spec_path.name, storage=storage, study=study, workers=workers, seed=seed)
    with tempfile.TemporaryDirectory(prefix="pressroom-launch-") as folder:
        shutil.copyfile(spec_path, Path(folder) / spec_path.name)
        job_id = _submit(url, command, folder, spec.study_name)
    logger.debug("submitted job %s to %s: %s", job_id, url, command)
    shown = storage if storage is not None else urls.get("storage")
    return Submission(job_id, url, spec.study_name, command, None if shown is None else redact_url(shown))


def _submit(url: str, command: str, working_dir: str, study: str) -> str:
    """Submit through `JobSubmissionClient`; Ray's errors become one `LaunchError` each."""
    use_token_auth()
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(url)
        return str(
            client.submit_job(
                entrypoint=command,
                runtime_env={"working_dir": working_dir},
                metadata={"pressroom.study": study},
            )
        )
    except AuthenticationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "refused"
        raise LaunchError(
            f"the Ray cluster at {url} refused this client's token ({first}). Set RAY_AUTH_TOKEN to the cluster's "
            "token (`ray get-auth-token` on the head prints it) or write it to ~/.ray/auth_token, and leave "
            "RAY_AUTH_MODE unset or 'token'."
        ) from None
    except ConnectionError as exc:
        raise LaunchError(f"cannot reach Ray's Jobs API at {url}: {exc}") from None
    except (RuntimeError, ValueError) as exc:
        raise LaunchError(f"the Ray cluster at {url} did not take the job: {str(exc).strip()[:500]}") from None


__all__ = [
    "ENV_ADDRESS",
    "LaunchError",
    "Submission",
    "check_no_literal_secrets",
    "dashboard_url",
    "entrypoint",
    "holds_literal_secret",
    "launch",
    "spec_urls",
]
