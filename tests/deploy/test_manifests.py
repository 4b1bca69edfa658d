"""deploy/: each file checked against its published schema, the image installed by CI's own
script, the database init script run on the real PostgreSQL, and no password anywhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs" / "deploy.md"
BIN = Path(sys.executable).parent
#: The Kubernetes version the manifests are checked against (kubernetes-validate ships 1.25 on).
K8S_VERSION = "1.33"


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), *args], capture_output=True, text=True, timeout=120, check=False
    )


# --- compose ---------------------------------------------------------------------------------


def test_the_compose_file_matches_the_compose_spec():
    result = _check_jsonschema("--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_file_runs_every_service_and_publishes_on_loopback_only():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) >= {"postgres", "dashboard", "mlflow", "ray-head", "ray-worker"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"
    assert services["ray-head"]["build"]["dockerfile"] == "deploy/Dockerfile"
    init = "./postgres/init-databases.sh:/docker-entrypoint-initdb.d/10-databases.sh:ro"
    assert init in services["postgres"]["volumes"]
    for name in ("ray-head", "ray-worker", "ray-worker-gpu"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?")
    assert "--address=ray-head:6379" in services["ray-worker"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")


# --- Kubernetes ------------------------------------------------------------------------------


def _kuberay_validator(kind: str) -> Any:
    """KubeRay's hand-written schema, its Kubernetes parts resolved against the published schema."""
    import jsonschema
    import kubernetes_validate
    from referencing import Registry, Resource

    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{K8S_VERSION}.0-local-strict"
    definitions = Resource.from_contents(json.loads((folder / "_definitions.json").read_text()))
    kuberay = Resource.from_contents(json.loads((DEPLOY / "schemas" / "kuberay-ray.io-v1.json").read_text()))
    registry = Registry().with_resources([(definitions.id(), definitions), (kuberay.id(), kuberay)])
    return jsonschema.Draft202012Validator({"$ref": f"{kuberay.id()}#/$defs/{kind}"}, registry=registry)


def _validate_manifest(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    if doc["apiVersion"] == "ray.io/v1":
        _kuberay_validator(doc["kind"]).validate(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kubernetes_manifests_match_the_published_schemas():
    kinds = []
    for path in sorted((DEPLOY / "kuberay").glob("*.yaml")):
        for doc in _documents(path):
            _validate_manifest(doc)
            kinds.append(doc["kind"])
    assert {"RayCluster", "RayJob", "Secret", "ConfigMap", "Deployment", "Service"} <= set(kinds)


def test_the_kuberay_schema_catches_mistakes_in_both_of_its_parts():
    import jsonschema

    cluster = _documents(DEPLOY / "kuberay" / "raycluster.yaml")[0]
    broken = json.loads(json.dumps(cluster))
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # KubeRay wants strings
    with pytest.raises(jsonschema.ValidationError):
        _validate_manifest(broken)
    broken = json.loads(json.dumps(cluster))
    broken["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["envv"] = []  # a Kubernetes typo
    with pytest.raises(jsonschema.ValidationError, match="envv"):
        _validate_manifest(broken)
    broken = json.loads(json.dumps(cluster))
    broken["spec"]["workerGroupSpecs"][0]["replica"] = 2  # a KubeRay typo
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        _validate_manifest(broken)


def test_the_kuberay_cluster_has_a_gpu_worker_group_and_reads_secrets_by_reference():
    cluster = _documents(DEPLOY / "kuberay" / "raycluster.yaml")[0]
    workers = cluster["spec"]["workerGroupSpecs"]
    limits = [group["template"]["spec"]["containers"][0]["resources"]["limits"] for group in workers]
    assert any("nvidia.com/gpu" in limit for limit in limits)
    env = {e["name"]: e for e in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OPTUNA_STORAGE"]["valueFrom"]["secretKeyRef"] == {"name": "pressroom-db", "key": "OPTUNA_STORAGE"}
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "pressroom-ray-token"
    job = _documents(DEPLOY / "kuberay" / "rayjob.yaml")[0]
    assert job["spec"]["entrypoint"].startswith("pressroom search /etc/pressroom/search.yaml")
    for doc in _documents(DEPLOY / "kuberay" / "secret.example.yaml"):
        assert "data" not in doc and all(re.fullmatch(r"<[^<>]+>", v) for v in doc["stringData"].values())


def test_the_spec_in_the_configmap_is_a_valid_spec_without_storage():
    from search.spec.config import load_spec_text

    config = _documents(DEPLOY / "kuberay" / "spec-configmap.yaml")[0]
    text = config["data"]["search.yaml"]
    assert "storage" not in yaml.safe_load(text)  # the head's OPTUNA_STORAGE decides
    spec = load_spec_text(text, source="pressroom-spec")
    assert spec.study_name == "minilm-on-kuberay"


# --- ray up ----------------------------------------------------------------------------------


def test_the_ray_up_config_matches_rays_schema_and_has_a_gpu_node_type():
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    path = DEPLOY / "ray-cluster.yaml"
    result = _check_jsonschema("--schemafile", str(schema), str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    validate_config(prepare_config(config))  # what `ray up` runs on it
    types = config["available_node_types"]
    assert any(t["resources"].get("GPU", 0) >= 1 for t in types.values())
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}


# --- the image -------------------------------------------------------------------------------


def test_the_image_installs_with_the_script_ci_runs():
    import dockerfile

    commands = dockerfile.parse_file(str(DEPLOY / "Dockerfile"))  # Docker's own parser: a syntax check
    runs = [" ".join(c.value) for c in commands if c.cmd == "RUN"]
    assert sum("scripts/setup.sh" in run for run in runs) == 1
    assert not any(re.search(r"pip3? install|python3? -m pip", run) for run in runs), "install only through setup.sh"
    args = {c.value[0].split("=", 1)[0]: c.value[0] for c in commands if c.cmd == "ARG"}
    assert {"BASE_IMAGE", "TORCH_SPEC"} <= set(args) and "cuda" not in args["BASE_IMAGE"]
    assert next(c for c in commands if c.cmd == "FROM").value[0] == "${BASE_IMAGE}"
    # CI is `.ci/run` -> `make test` -> scripts/test.sh, which installs with the same script.
    assert "scripts/setup.sh" in (ROOT / "scripts" / "test.sh").read_text()
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", "**/.env"} <= set(ignored)


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_init_script_creates_both_databases_with_their_owners():
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    names = {"OPTUNA_DB": f"optuna_{suffix}", "OPTUNA_ROLE": f"pressroom_{suffix}",
             "MLFLOW_DB": f"mlflow_{suffix}", "MLFLOW_ROLE": f"mlflow_{suffix}"}  # fmt: skip
    env = {**os.environ, **names, "PGHOST": "127.0.0.1", "PGPORT": "5432", "POSTGRES_USER": "postgres",
           "PGPASSWORD_PRESSROOM": "it's-a \"quoted\" secret", "MLFLOW_DB_PASSWORD": "another; one"}  # fmt: skip
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    try:
        result = subprocess.run([str(DEPLOY / "postgres" / "init-databases.sh")], env=env, capture_output=True,
                                text=True, timeout=60, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
        with psycopg.connect(admin) as conn:
            owners = dict(conn.execute(
                "SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                "WHERE d.datname = ANY(%s)", [[names["OPTUNA_DB"], names["MLFLOW_DB"]]],
            ).fetchall())  # fmt: skip
            passwords = conn.execute(
                "SELECT count(*) FROM pg_authid WHERE rolname = ANY(%s) AND rolpassword IS NOT NULL",
                [[names["OPTUNA_ROLE"], names["MLFLOW_ROLE"]]],
            ).fetchone()
        assert owners == {names["OPTUNA_DB"]: names["OPTUNA_ROLE"], names["MLFLOW_DB"]: names["MLFLOW_ROLE"]}
        assert passwords == (2,)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for key in ("OPTUNA_DB", "MLFLOW_DB"):
                conn.execute(f'DROP DATABASE IF EXISTS "{names[key]}"')
            for key in ("OPTUNA_ROLE", "MLFLOW_ROLE"):
                conn.execute(f'DROP ROLE IF EXISTS "{names[key]}"')


# --- secrets ---------------------------------------------------------------------------------

# What stands in for a secret: a reference to the environment (${VAR}, ${VAR:?message}, $${VAR},
# $VAR) or a <placeholder>.
_STAND_IN = re.compile(r"\$\$?\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|<[^<>\n]+>")
_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@'\"]+:([^\s@'\"]*)@")
_SECRET_KEY = re.compile(
    r"""^\s*(?:-\s*)?["']?([\w.-]*(?:password|passwd|secret|token)[\w.-]*)["']?\s*[:=]\s*(.*?)\s*$""", re.I
)


def written_out_secrets(path: Path) -> list[str]:
    """Lines of a file that hold a password or token instead of a reference or a placeholder."""
    found = []
    config = path.suffix in {".yaml", ".yml"} or path.name.startswith(".env")
    for number, line in enumerate(path.read_text().splitlines(), 1):
        bare = _STAND_IN.sub("REF", line)
        passwords = [p for p in _URL_PASSWORD.findall(bare) if p != "REF"]
        match = _SECRET_KEY.match(bare) if config and not line.lstrip().startswith("#") else None
        value = match.group(2).strip("'\"") if match else ""
        if passwords or (value not in ("", "REF") and not value.startswith(("~/", "/"))):
            found.append(f"{path.relative_to(path.parents[1])}:{number}: {line.strip()}")
    return found


def test_the_secret_check_finds_written_out_secrets(tmp_path):
    planted = tmp_path / "deploy" / "x.yaml"
    planted.parent.mkdir()
    planted.write_text(
        "a: postgresql://u:hunter2@db/o\nPOSTGRES_PASSWORD: hunter2\n- name: RAY_AUTH_TOKEN\n"
        "b: postgresql://u:${PGPASSWORD}@db/o\nc: postgresql://u:$${PGPASSWORD}@db/o\n"
        'PGPASSWORD: ${PGPASSWORD:?set it in deploy/.env}\nauth_token: "<a long random string>"\n'
        "secretKeyRef:\n~/.ray/auth_token: ~/.ray/auth_token\n"
    )
    assert [line.split(":", 2)[1] for line in written_out_secrets(planted)] == ["1", "2"]


def test_nothing_in_deploy_holds_a_password():
    files = [p for p in DEPLOY.rglob("*") if p.is_file() and p.name != ".env"]  # .env is git-ignored
    assert len(files) >= 10
    found = [line for path in [*files, DOCS] for line in written_out_secrets(path)]
    assert not found, "\n".join(found)


def test_the_docs_say_where_each_secret_comes_from():
    docs = DOCS.read_text()
    env_keys = re.findall(r"^([A-Z_]+)=", (DEPLOY / ".env.example").read_text(), re.M)
    secrets = [key for key in env_keys if re.search(r"PASSWORD|TOKEN", key)]
    assert len(secrets) == 5
    refs = {
        name
        for path in (DEPLOY / "kuberay").glob("*.yaml")
        for name in re.findall(r"secretKeyRef:\s*\n\s*name: (\S+)", path.read_text())
    }
    assert refs == {"pressroom-db", "pressroom-ray-token", "pressroom-hf"}
    for name in [*secrets, *refs, "cluster.env", "auth_token", "OPTUNA_STORAGE", "MLFLOW_BACKEND_STORE_URI"]:
        assert name in docs, f"docs/deploy.md does not say where {name} comes from"
