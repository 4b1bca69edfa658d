"""MLflow against a real `mlflow server`: a run per search, and `pressroom register`."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
import yaml
from optuna.trial import TrialState, create_trial

from evaluators.saving.export import PROFILE_FILE
from search import find_best
from search.driver.run import SearchOutcome, run_search
from search.results.best import record_space
from search.secrets import expand_env
from search.spec.config import load_spec, load_spec_text
from search.storage.study import BEST, HELDOUT, SPACE, SPEC, SearchStudy, connect
from search.tracking.model_registry import TAG_FORMAT, register_best
from search.tracking.tracker import (
    MODEL_TRAINING,
    TAG_ALGORITHM,
    TAG_AVERAGE,
    TAG_EXPERIMENT_KIND,
    TAG_FINGERPRINT,
    TAG_STORAGE,
    TAG_STUDY,
    TAG_TARGET,
    TAG_UNITS,
    MlflowTracker,
    TrackingError,
)
from spaces import Profile
from tests.conftest import free_port
from tests.search.conftest import tiny_search

SECRET_VAR, SECRET = "PRESSROOM_TEST_PGPASSWORD", "s3cret-Pa55-never-in-mlflow"
EXPERIMENT, STUDY, MODEL = "pressroom-tests", "mlflow-search", "tiny-llama-evopress"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server (SQLite backend, local artifacts) for this module."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not come up"
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        proc.wait(timeout=60)
        log.close()


@dataclass(frozen=True)
class Searched:
    storage: str  # with ${PRESSROOM_TEST_PGPASSWORD}, as a user writes it
    outcome: SearchOutcome
    spec_path: Path


@pytest.fixture(scope="module")
def searched(mlflow_server, postgres_url, ray_head, ray_session, cache_dir, tmp_path_factory) -> Iterator[Searched]:
    """A tiny search logged to the server, with a password in its storage URL (that the trusting
    PostgreSQL ignores) which must appear nowhere in MLflow."""
    os.environ[SECRET_VAR] = SECRET
    storage = postgres_url.replace("postgres@", f"postgres:${{{SECRET_VAR}}}@")
    folder = tmp_path_factory.mktemp("mlflow-search")
    mlflow = {"enabled": True, "tracking_uri": mlflow_server, "experiment": EXPERIMENT}
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_search(cache_dir, mlflow=mlflow, artifacts=str(folder / "artifacts"))))
    spec = load_spec(path, {"storage": storage, "study": STUDY, "workers.ray_address": ray_head.address})
    try:
        yield Searched(storage, run_search(spec), path)
    finally:
        os.environ.pop(SECRET_VAR, None)


def _client(url: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=url)


def _study_runs(client: Any) -> list[Any]:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_STUDY}` = '{STUDY}'")


@pytest.mark.ray
@pytest.mark.postgres
@pytest.mark.slow
def test_a_search_logs_one_run_with_spec_metrics_profile_and_figures(mlflow_server, searched, tmp_path):
    client = _client(mlflow_server)
    (run,) = _study_runs(client)
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["compression.scheme"] == "sparsity" and params["algorithm.name"] == "evopress"
    assert params["algorithm.resolved.generations"] == "4"
    assert params["storage"].startswith("postgresql+psycopg://postgres:***@127.0.0.1:5432/")
    assert tags[TAG_STORAGE] == params["storage"] and tags[TAG_STUDY] == STUDY
    everything = json.dumps([params, tags, run.data.metrics])
    assert SECRET not in everything and SECRET_VAR not in tags[TAG_STORAGE]
    for name, row in searched.outcome.heldout.items():  # held-out KL and perplexity, uniform and best
        for key in ("fitness", "perplexity"):
            assert run.data.metrics[f"heldout.{name}.{key}"] == pytest.approx(row[key])

    history = {m: client.get_metric_history(run.info.run_id, m) for m in ("best_fitness", "fitness", "parent_fitness")}
    assert sorted(m.step for m in history["best_fitness"]) == [1, 2, 3, 4]  # one per generation
    assert sorted(m.step for m in history["fitness"]) == [1, 2, 3, 4]
    assert history["parent_fitness"], "the re-evaluated parent is logged too"
    best_so_far = sorted(history["best_fitness"], key=lambda m: m.step)
    assert all(a.value >= b.value for a, b in itertools.pairwise(best_so_far))

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"profile.json", "history.json", "best-profile.png", "fitness-history.png"} <= names
    profile = Profile.from_json(
        Path(client.download_artifacts(run.info.run_id, "profile.json", str(tmp_path))).read_text()
    )
    assert profile == searched.outcome.best


@pytest.mark.ray
@pytest.mark.postgres
@pytest.mark.slow
def test_a_rerun_of_the_search_continues_its_run(mlflow_server, searched, ray_head):
    overrides = {"storage": searched.storage, "study": STUDY, "workers.ray_address": ray_head.address}
    run_search(load_spec(searched.spec_path, overrides))
    (run,) = _study_runs(_client(mlflow_server))
    assert run.info.status == "FINISHED"


@pytest.mark.ray
@pytest.mark.postgres
@pytest.mark.slow
def test_register_creates_version_1_that_gives_the_outputs_of_apply(
    mlflow_server, searched, run_cli, tmp_path, monkeypatch
):
    import mlflow

    env = {SECRET_VAR: SECRET}
    common = ["--storage", searched.storage]
    result = run_cli(
        "register", STUDY, "--name", MODEL, "--alias", "champion", "--tracking-uri", mlflow_server, *common, env=env
    )
    assert result.returncode == 0, result.stderr
    assert f"registered {MODEL} version 1 (alias champion)" in result.stdout
    assert SECRET not in result.stdout + result.stderr

    client = _client(mlflow_server)
    version = client.get_model_version(MODEL, "1")
    best = find_best(expand_env(searched.storage, key="storage"), STUDY)
    assert version.tags["pressroom.study"] == STUDY
    assert version.tags["pressroom.trial"] == str(best.trial) and best.trial is not None
    assert float(version.tags["pressroom.fitness"]) == best.fitness == searched.outcome.best_fitness
    assert best.profile == searched.outcome.best
    (run,) = _study_runs(client)  # the search's run, not a run of its own
    assert version.run_id == run.info.run_id and f"logged in the search's MLflow run {run.info.run_id}" in result.stdout
    assert client.get_model_version_by_alias(MODEL, "champion").version == "1"

    shown = run_cli("best", STUDY, *common, "-o", str(tmp_path / "best.json"), env=env)
    assert shown.returncode == 0, shown.stderr
    applied = run_cli(
        "apply", str(tmp_path / "best.json"), "--study", STUDY, *common, "--out", str(tmp_path / "m"), env=env
    )
    assert applied.returncode == 0, applied.stderr

    local = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # what models:/ URIs resolve against
    registered = mlflow.transformers.load_model(f"models:/{MODEL}@champion", return_type="components")["model"]
    requirements = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1/requirements.txt", dst_path=str(tmp_path))
    pins = Path(requirements).read_text()
    profile = mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1/{PROFILE_FILE}", dst_path=str(tmp_path))
    assert Profile.from_json(Path(profile).read_text()) == best.profile
    assert f"transformers=={transformers.__version__}" in pins and "torch==" in pins
    ids = torch.randint(0, 256, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(registered(input_ids=ids).logits, local(input_ids=ids).logits)


@pytest.mark.ray
@pytest.mark.postgres
@pytest.mark.slow
def test_the_version_is_the_model_of_the_search_run_described_and_summarised(mlflow_server, searched, tmp_path):
    storage = expand_env(searched.storage, key="storage")
    done = register_best(storage, STUDY, "tiny-llama-described", tracking_uri=mlflow_server)
    client = _client(mlflow_server)
    (run,) = _study_runs(client)
    assert done.run_id == run.info.run_id and run.info.status == "FINISHED"  # logged into, not reopened
    version = client.get_model_version("tiny-llama-described", done.version)
    assert version.run_id == run.info.run_id
    logged = client.get_logged_model(version.source.removeprefix("models:/"))  # the run's output
    assert logged.source_run_id == run.info.run_id
    assert logged.model_id in {output.model_id for output in run.outputs.model_outputs}

    description = version.description
    assert "compressed to sparsity 0.5 by evopress" in description, description
    assert f"study {STUDY}" in description and run.info.run_id in description
    for key in ("fitness", "perplexity"):  # held-out results, known since the search finished
        assert f"{key} {searched.outcome.heldout['best'][key]:.6g}" in description
    storage_shown = "--storage 'postgresql+psycopg://postgres:***@127.0.0.1:5432/"  # as the run's parameters have it
    assert f"pressroom search SPEC --study {STUDY} {storage_shown}" in description
    assert f"pressroom register {STUDY} --name tiny-llama-described {storage_shown}" in description
    assert f"--tracking-uri {mlflow_server}" in description
    assert SECRET not in description and SECRET_VAR not in description

    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags[TAG_EXPERIMENT_KIND] == MODEL_TRAINING  # MLflow 3 opens it as model training

    for tags in (run.data.tags, version.tags):  # a short summary; the profile is a file
        assert tags[TAG_TARGET] == "sparsity 0.5" and tags[TAG_UNITS] == str(len(searched.outcome.best))
        assert 0 < float(tags[TAG_AVERAGE]) < 1
        assert not [v for v in tags.values() if any(unit in v for unit in searched.outcome.best)], tags
    assert version.tags[TAG_ALGORITHM] == "evopress"
    profile = client.download_artifacts(run.info.run_id, "profile.json", str(tmp_path))
    assert Profile.from_json(Path(profile).read_text()) == searched.outcome.best


@pytest.mark.slow
def test_a_study_searched_without_mlflow_gets_one_run_that_every_registration_logs_into(
    mlflow_server, make_evaluator, cache_dir, tmp_path
):
    data = tiny_search(cache_dir, mlflow={"enabled": False, "tracking_uri": mlflow_server, "experiment": "untracked"})
    spec = load_spec_text(yaml.safe_dump(data))
    evaluator = make_evaluator(**{key: data[key] for key in ("model", "compression", "data", "seed")})
    profile = evaluator.space.sample(np.random.default_rng(3))
    url = f"sqlite:///{tmp_path}/untracked.db"
    study = SearchStudy.open(
        connect(url), spec.study_name, fingerprint=spec.fingerprint(),
        attrs={SPEC: spec.public_dict(), SPACE: record_space(evaluator.space)},
    )  # fmt: skip
    levels = [int(profile[name]) for name in evaluator.space.names]
    attrs = {"member": 0, "generation": 1, "algorithm": "evopress", "levels": levels}
    study.storage.create_new_trial(study.id, create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs=attrs))

    first = register_best(url, spec.study_name, "untracked", tracking_uri=mlflow_server)
    second = register_best(url, spec.study_name, "untracked", tracking_uri=mlflow_server)
    client = _client(mlflow_server)
    experiment = client.get_experiment_by_name("untracked")  # the study's spec names it
    (run,) = client.search_runs([experiment.experiment_id])
    assert first.run_id == second.run_id == run.info.run_id and run.info.status == "FINISHED"
    assert run.data.tags[TAG_FINGERPRINT] == spec.fingerprint() and run.data.tags[TAG_STUDY] == spec.study_name
    assert run.data.tags[TAG_TARGET] == "sparsity 0.5" and experiment.tags[TAG_EXPERIMENT_KIND] == MODEL_TRAINING
    assert [client.get_model_version("untracked", v).run_id for v in ("1", "2")] == [run.info.run_id] * 2
    assert client.get_model_version("untracked", "1").tags[TAG_FORMAT] == "dense"  # sparsity: no packed format
    saved = client.download_artifacts(run.info.run_id, "profile.json", str(tmp_path))
    assert Profile.from_json(Path(saved).read_text()) == profile

    enabled = spec.model_copy(update={"mlflow": spec.mlflow.model_copy(update={"enabled": True})})
    tracker = MlflowTracker.start(enabled)  # a later tracked search of the study resumes that run
    tracker.close()
    assert tracker.run_id == run.info.run_id


@pytest.mark.timeout(60)  # MLflow's client alone retries for about 4.5 minutes
def test_an_unreachable_tracking_server_fails_fast_without_showing_credentials(cache_dir, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # it would override the spec's
    uri = f"http://user:{SECRET}@127.0.0.1:{free_port()}"
    spec = load_spec_text(yaml.safe_dump(tiny_search(cache_dir, mlflow={"enabled": True, "tracking_uri": uri})))
    with pytest.raises(TrackingError) as caught:
        MlflowTracker.start(spec)
    message = str(caught.value)
    assert "cannot log the search to MLflow at http://user:***@127.0.0.1" in message
    assert "nothing answers there" in message
    assert "mlflow.enabled: false" in message and SECRET not in message


@pytest.mark.postgres
@pytest.mark.slow
def test_an_unreachable_ray_address_opens_no_mlflow_run(mlflow_server, postgres_url, write_spec, run_cli):
    experiment = "pressroom-no-orphans"
    spec = write_spec(mlflow={"enabled": True, "tracking_uri": mlflow_server, "experiment": experiment})
    result = run_cli(
        "search", str(spec), "--storage", postgres_url, "--ray-address", f"127.0.0.1:{free_port()}",
        env={"MLFLOW_TRACKING_URI": mlflow_server},  # the environment overrides the spec
    )  # fmt: skip
    assert result.returncode == 2 and "cannot connect to Ray" in result.stderr, result.stderr
    found = _client(mlflow_server).get_experiment_by_name(experiment)
    assert found is None or not _client(mlflow_server).search_runs([found.experiment_id])


def test_register_of_an_unknown_study_is_one_clear_error(run_cli, tmp_path):
    storage = f"sqlite:///{tmp_path}/empty.db"
    result = run_cli(
        "register", "nope", "--name", "x", "--storage", storage, "--tracking-uri", f"sqlite:///{tmp_path}/m.db"
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: no study 'nope' in this storage; studies: none"


SYMMETRIC_BITS = {
    "scheme": "bitwidth", "target": 6.0, "compressor": "rtn",
    "levels": {"choices": [4, 8, 16], "group_size": 16, "symmetric": True},
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("compression", [SYMMETRIC_BITS, {"scheme": "drop", "target": 0.5}], ids=["bits", "drop"])
def test_register_logs_the_compressed_tensors_checkpoint_that_mlflow_loads_and_runs(
    compression, mlflow_server, make_evaluator, cache_dir, tmp_path, monkeypatch
):
    import mlflow

    mlflow_spec = {"enabled": False, "tracking_uri": mlflow_server, "experiment": "compressed"}
    data = tiny_search(cache_dir, compression=compression, mlflow=mlflow_spec)
    spec = load_spec_text(yaml.safe_dump(data))
    evaluator = make_evaluator(**{key: data[key] for key in ("model", "compression", "data", "seed")})
    profile = evaluator.space.sample(np.random.default_rng(5))
    levels = [int(profile[name]) for name in evaluator.space.names]
    answer = {"levels": levels, "fitness": 0.5, "algorithm": "evopress"}
    attrs = {SPEC: spec.public_dict(), SPACE: record_space(evaluator.space), BEST: answer}
    attrs[HELDOUT] = {"best": {"fitness": 0.625, "perplexity": 41.5}}
    url = f"sqlite:///{tmp_path}/compressed.db"
    study = SearchStudy.open(connect(url), spec.study_name, fingerprint=spec.fingerprint(), attrs=attrs)
    trial = {"member": 0, "generation": 1, "algorithm": "evopress", "levels": levels}
    study.storage.create_new_trial(study.id, create_trial(state=TrialState.COMPLETE, value=0.5, user_attrs=trial))

    done = register_best(url, spec.study_name, "compressed", tracking_uri=mlflow_server)
    version = _client(mlflow_server).get_model_version("compressed", done.version)
    assert version.tags[TAG_FORMAT] == "compressed-tensors" and version.run_id == done.run_id
    assert "Held-out: fitness 0.625, perplexity 41.5." in version.description
    assert f"Logged in the search's MLflow run {done.run_id}." in version.description

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # what models:/ URIs resolve against
    uri = f"models:/compressed/{done.version}"
    registered = mlflow.transformers.load_model(uri, return_type="components")["model"]
    saved = Path(mlflow.artifacts.download_artifacts(f"{uri}/{PROFILE_FILE}", dst_path=str(tmp_path)))
    assert Profile.from_json(saved.read_text()) == profile
    pins = Path(mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt", dst_path=str(tmp_path))).read_text()
    if compression is SYMMETRIC_BITS:  # packed integers, which transformers decompresses with compressed-tensors
        assert registered.config.to_dict()["quantization_config"]["format"] == "pack-quantized"
        assert "compressed-tensors==" in pins
    else:  # a shallower model
        assert registered.config.num_hidden_layers == 4 - sum(levels)
    evaluator.apply(profile)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = evaluator.model(input_ids=ids, use_cache=False).logits
        torch.testing.assert_close(registered(input_ids=ids).logits, expected, rtol=0, atol=1e-4)
