"""Bad input to `pressroom search`: one clear error each, exit code 2, nothing written, no secret shown."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.conftest import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SECRET = "s3cret-Pa55word-do-not-print"
PG_ROOT = Path("/usr/lib/postgresql")
PG_BIN = PG_ROOT / max(os.listdir(PG_ROOT), key=int, default="15") / "bin" if PG_ROOT.exists() else PG_ROOT


@pytest.fixture(scope="module")
def password_postgres() -> Iterator[int]:
    """A PostgreSQL server of our own that checks passwords (the machine's trusts everyone).

    initdb refuses to run as root, so the server runs as the `postgres` system user, in a folder
    it can reach (pytest's own temporary folders are private to root).
    """
    root = Path(tempfile.mkdtemp(prefix="pressroom-pgauth-"))
    data, sock, pwfile = root / "data", root / "sock", root / "pw"
    sock.mkdir()
    pwfile.write_text("the-real-password\n")
    shutil.chown(root, "postgres")
    for path in (sock, pwfile):
        shutil.chown(path, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_pg, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=scram-sha-256",
         f"--pwfile={pwfile}"], check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    port = free_port()
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o", options, "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield port
    finally:
        subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert SECRET not in result.stdout + result.stderr
    return lines[0]


def _studies(url: str) -> list[str]:
    return sorted(s.study_name for s in optuna.get_all_study_summaries(url))


def test_an_unreachable_database(write_spec, run_cli):
    url = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:{free_port()}/optuna"
    line = _one_error(run_cli("search", str(write_spec()), "--storage", url))
    assert "cannot use storage postgresql+psycopg://postgres:***@127.0.0.1" in line
    assert "refused" in line or "failed" in line


def test_a_wrong_password(write_spec, run_cli, password_postgres):
    url = f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:{password_postgres}/postgres"
    line = _one_error(run_cli("search", str(write_spec()), "--storage", url))
    assert "password authentication failed" in line


def test_a_password_from_the_environment_is_expanded_and_never_shown(write_spec, run_cli, password_postgres):
    url = "postgresql+psycopg://postgres:${PRESSROOM_TEST_PW}@127.0.0.1:" + f"{password_postgres}/postgres"
    env = {"PRESSROOM_TEST_PW": SECRET}
    line = _one_error(run_cli("search", str(write_spec()), "--storage", url, env=env))
    assert "password authentication failed" in line and ":***@" in line


def test_an_unknown_ray_address_writes_nothing(write_spec, run_cli, postgres_url):
    before = _studies(postgres_url)
    result = run_cli(
        "search", str(write_spec()), "--storage", postgres_url, "--ray-address", f"127.0.0.1:{free_port()}",
        "--study", "never-created",
    )  # fmt: skip
    line = _one_error(result)
    assert "cannot connect to Ray" in line
    assert _studies(postgres_url) == before


def test_more_workers_than_the_local_ray_holds_is_one_line_saying_what_fits(write_spec, run_cli, tmp_path):
    result = run_cli("search", str(write_spec()), "--storage", f"sqlite:///{tmp_path}/s.db", "--workers", "1000")
    line = _one_error(result)
    assert "workers.count 1000 does not fit: 1000 actors x 0.5 CPU need 500 CPU" in line and "actors fit" in line


@pytest.mark.parametrize(
    ("start", "message"),
    [
        ("nowhere/profile.json", "algorithm.params.start: nowhere/profile.json: no such file"),
        ("dpp", "algorithm.params.start: 'dpp' is not allowed: one of ['auto', 'uniform', 'owl', 'dp']"),
    ],
)
def test_a_bad_warm_start_is_one_line_before_any_worker_starts(write_spec, run_cli, tmp_path, start, message):
    params = {"generations": 2, "offspring": 4, "stages": [[2, 256], [1, 512]], "start": start}
    url = f"sqlite:///{tmp_path}/s.db"
    result = run_cli("search", str(write_spec(algorithm={"name": "evopress", "params": params})), "--storage", url)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_group_size_that_splits_a_layer_is_one_line_naming_it_and_writes_nothing(write_spec, run_cli, tmp_path):
    bits = {"scheme": "bitwidth", "target": 4.0, "compressor": "rtn", "levels": {"group_size": 32}}
    result = run_cli("search", str(write_spec(compression=bits)), "--storage", f"sqlite:///{tmp_path}/s.db")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "compression.levels.group_size: group size 32 does not divide model.layers.0.mlp.down_proj's 176" in line
    assert not (tmp_path / "s.db").exists()


def test_a_study_of_a_different_spec_is_refused(write_spec, run_cli, postgres_url, ray_head):
    common = ["--storage", postgres_url, "--ray-address", ray_head.address, "--study", "one-spec-only"]
    first = run_cli("search", str(write_spec("a.yaml")), *common)
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="one-spec-only", storage=postgres_url)
    trials = len(study.trials)
    attrs = dict(study.user_attrs)
    other = write_spec("b.yaml", seed=8)
    line = _one_error(run_cli("search", str(other), *common))
    assert "belongs to a different search" in line
    study = optuna.load_study(study_name="one-spec-only", storage=postgres_url)
    assert len(study.trials) == trials and dict(study.user_attrs) == attrs


def test_a_password_in_the_url_never_reaches_output_or_records(write_spec, run_cli, postgres_url, ray_head):
    # the machine's server trusts local connections, so this password is accepted and ignored
    url = postgres_url.replace("postgres@", f"postgres:{SECRET}@")
    result = run_cli(
        "search", str(write_spec()), "--storage", url, "--ray-address", ray_head.address, "--study", "secret-run",
        "--seed", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    study = optuna.load_study(study_name="secret-run", storage=postgres_url)
    assert SECRET not in repr(study.user_attrs)
    assert all(SECRET not in repr(t.user_attrs) + repr(t.system_attrs) for t in study.trials)
    assert "***" in repr(study.user_attrs["pressroom.spec"]["storage"])
