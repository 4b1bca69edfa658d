"""`pressroom launch`: submit a search to a Ray cluster through the Jobs API."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from ..cluster.launch import ENV_ADDRESS, LaunchError, launch
from .common import SpecArg, UsageError, out


def launch_command(
    spec_path: SpecArg,
    address: Annotated[
        str,
        typer.Option(
            "--address",
            envvar=ENV_ADDRESS,
            help="The head's Jobs API (its dashboard), e.g. http://HEAD:8265; reach it through a port-forward.",
            show_default=False,
        ),
    ],
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Storage URL for the job; write a password as ${PGPASSWORD} (default: the cluster's "
            "$OPTUNA_STORAGE or the spec's).",
        ),
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: the spec's, or one derived from it).")] = None,
    workers: Annotated[int | None, typer.Option(help="Number of evaluator workers.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Submit `pressroom search SPEC` as a Ray Job on a cluster; print the job id and how to follow it.

    Secrets come from the cluster's environment, never from this command: a URL with a password is refused.
    """
    try:
        job = launch(spec_path, address, storage=storage, study=study, workers=workers, seed=seed)
    except LaunchError as exc:
        raise UsageError(str(exc)) from None
    where = f"--address {shlex.quote(job.address)}"
    storage_arg = f"--storage {shlex.quote(job.storage)}" if job.storage else '--storage "$OPTUNA_STORAGE"'
    out.print(
        f"submitted job {job.job_id} (study {job.study})\n"
        f"  runs: {job.entrypoint}\n"
        f"follow it:\n"
        f"  ray job logs {job.job_id} --follow {where}\n"
        f"  ray job status {job.job_id} {where}\n"
        f"  pressroom status {shlex.quote(job.study)} {storage_arg}\n"
        f"stop it:\n"
        f"  ray job stop {job.job_id} {where}\n"
        "(the ray commands need RAY_AUTH_MODE=token and the cluster's token, as launch does; "
        "the storage must be reachable from here, e.g. through a port-forward)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
