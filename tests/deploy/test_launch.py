"""`pressroom launch`: a search submitted through the Jobs API of a real two-node Ray cluster."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from search.cluster.launch import LaunchError, dashboard_url, entrypoint, holds_literal_secret
from tests.conftest import free_port
from tests.search.conftest import PRESSROOM, tiny_search

SECRET = "s3cret-Launch-pw"


def test_only_written_out_passwords_count_as_secrets():
    assert not holds_literal_secret("postgresql+psycopg://pressroom:${PGPASSWORD}@db:5432/optuna")
    assert not holds_literal_secret("postgresql+psycopg://pressroom@${PGHOST}:5432/optuna")
    assert not holds_literal_secret("sqlite:///pressroom.db")
    assert not holds_literal_secret("http://mlflow:5000?token=${MLFLOW_TOKEN}")
    assert holds_literal_secret(f"postgresql+psycopg://pressroom:{SECRET}@db:5432/optuna")
    assert holds_literal_secret("postgresql+psycopg://pressroom:pre${PGPASSWORD}@db:5432/optuna")
    assert holds_literal_secret("postgresql+psycopg://db:5432/optuna?password=x")


def test_the_entrypoint_passes_references_on_unexpanded():
    command = entrypoint("my spec.yaml", storage="postgresql+psycopg://u:${PGPASSWORD}@db/o", study="s", workers=3)
    assert command == (
        "pressroom search 'my spec.yaml' --ray-address auto "
        "--storage 'postgresql+psycopg://u:${PGPASSWORD}@db/o' --study s --workers 3"
    )
    assert entrypoint("spec.yaml", seed=0) == "pressroom search spec.yaml --ray-address auto --seed 0"


def test_addresses_are_dashboard_urls():
    assert dashboard_url("head:8265/") == "http://head:8265"
    assert dashboard_url("https://ray.example.com") == "https://ray.example.com"
    with pytest.raises(LaunchError, match="not the URL of a Ray dashboard"):
        dashboard_url("ray://head:10001")
    with pytest.raises(LaunchError, match="bad port"):
        dashboard_url("http://head:port")


def _spec(path: Path, cache_dir: Path, **overrides) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tiny_search(cache_dir, **overrides)))
    return path


def _one_error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_password_in_a_url_is_refused_and_never_shown(run_cli, tmp_path, cache_dir):
    address = f"http://127.0.0.1:{free_port()}"
    spec = _spec(tmp_path / "spec.yaml", cache_dir)
    url = f"postgresql+psycopg://pressroom:{SECRET}@db:5432/optuna"
    result = run_cli("launch", str(spec), "--address", address, "--storage", url)
    line = _one_error_line(result)
    assert "--storage" in line and "holds a password" in line and "${PGPASSWORD}" in line
    assert SECRET not in result.stdout + result.stderr

    in_file = _spec(tmp_path / "secret.yaml", cache_dir, storage=url)
    result = run_cli("launch", str(in_file), "--address", address)
    assert "the spec's storage" in _one_error_line(result)
    assert SECRET not in result.stdout + result.stderr


def test_an_address_where_nothing_answers_is_one_clear_error(run_cli, tmp_path, cache_dir):
    spec = _spec(tmp_path / "spec.yaml", cache_dir)
    line = _one_error_line(run_cli("launch", str(spec), "--address", f"http://127.0.0.1:{free_port()}"))
    assert "cannot reach Ray's Jobs API" in line
    line = _one_error_line(run_cli("launch", str(spec), "--address", "ray://127.0.0.1:10001"))
    assert "not the URL of a Ray dashboard" in line


@pytest.mark.ray
def test_a_wrong_token_is_one_clear_error(two_node_cluster, run_cli, tmp_path, cache_dir):
    spec = _spec(tmp_path / "spec.yaml", cache_dir)
    result = run_cli("launch", str(spec), "--address", two_node_cluster.dashboard, env={"RAY_AUTH_TOKEN": SECRET})
    assert "refused this client's token" in _one_error_line(result)
    assert SECRET not in result.stdout + result.stderr


def _wait_for_job(client, job_id: str, limit_s: float = 600.0):
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        if status.is_terminal():
            return status
        time.sleep(2)
    client.stop_job(job_id)
    return JobStatus.RUNNING


@pytest.mark.ray
@pytest.mark.postgres
@pytest.mark.slow
def test_a_launched_search_spreads_over_both_nodes_and_lands_in_postgres(
    two_node_cluster, postgres_url, tmp_path, cache_dir
):
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_nodes

    workers = {"count": 2, "cpus_per_worker": 0.5, "torch_threads": 1, "timeout_s": 300}
    spec = _spec(tmp_path / "somewhere" / "else" / "tiny.yaml", cache_dir, workers=workers)
    # As a user runs it: no RAY_AUTH_MODE, the token in ~/.ray/auth_token.
    env = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_MODE"}
    result = subprocess.run(
        [PRESSROOM, "launch", str(spec), "--address", two_node_cluster.dashboard, "--storage", postgres_url,
         "--study", "launched"],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    job_id = re.search(r"submitted job (\S+)", result.stdout).group(1)
    assert f"ray job logs {job_id} --follow --address {two_node_cluster.dashboard}" in result.stdout
    assert f"pressroom status launched --storage {postgres_url}" in result.stdout

    client = JobSubmissionClient(two_node_cluster.dashboard)
    status = _wait_for_job(client, job_id)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-4000:]
    info = client.get_job_info(job_id)
    assert info.entrypoint.startswith("pressroom search tiny.yaml --ray-address auto --storage ")
    assert info.metadata["pressroom.study"] == "launched"

    # Every evaluation is a trial in PostgreSQL, and the workers that ran them sat on both nodes.
    trials = optuna.load_study(study_name="launched", storage=postgres_url).get_trials(deepcopy=False)
    assert trials and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert any(t.state == TrialState.COMPLETE for t in trials)
    nodes = {t.user_attrs["worker"].rsplit("@", 1)[1] for t in trials}
    alive = {node.node_id[:8] for node in list_nodes(address=two_node_cluster.dashboard) if node.state == "ALIVE"}
    assert len(alive) == 2 and nodes == alive
