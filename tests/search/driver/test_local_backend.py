"""`workers.backend: local`: a search and a comparison in the driver's own process, without Ray."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.search.conftest import tiny_search

# Runs in a fresh interpreter, so that no other test's import of Ray or MLflow counts.
PROGRAM = """
import json, sys
from search.driver.compare import compare, summarize
from search.spec.config import load_spec_text
spec = load_spec_text(open(sys.argv[1]).read())
runs = compare(spec, ["evopress", "uniform", "dp"], budget_tokens=8192, seeds=2)
studies = [[run.method, run.seed, run.study] for run in runs]
loaded = {"ray": "ray" in sys.modules, "mlflow": "mlflow" in sys.modules}
print(json.dumps({"rows": summarize(runs), "studies": studies, **loaded}))
"""


def test_compare_runs_in_process_without_ray_or_mlflow(tmp_path):
    workers = {"backend": "local", "device": "cpu", "torch_threads": 1}
    spec = tiny_search(tmp_path / "cache", workers=workers, storage=f"sqlite:///{tmp_path / 'store.db'}")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(path)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ray"] is False and result["mlflow"] is False
    rows = {row["method"]: row for row in result["rows"]}
    assert list(rows) == ["evopress", "uniform", "dp"]
    for row in rows.values():  # the same kind of row as the Ray path gives
        assert row["seeds"] == 2 and row["heldout_mean"] > 0 and row["perplexity_mean"] > 1
    # uniform and the DP do not use their seed: one run (one study) stands for both seeds
    studies = {(method, seed): study for method, seed, study in result["studies"]}
    assert studies[("evopress", 0)] != studies[("evopress", 1)]
    assert studies[("uniform", 1)] == studies[("uniform", 0)] and studies[("dp", 1)] == studies[("dp", 0)]
    assert rows["uniform"]["heldout_std"] == 0 and rows["dp"]["heldout_std"] == 0
    assert 0 < rows["evopress"]["tokens"] <= 8192 + 512
    # The DP's statistics pass is charged what the worker forwarded: data.stats_tokens, once.
    assert rows["dp"]["tokens"] == rows["uniform"]["tokens"] + spec["data"]["stats_tokens"]


def test_a_bad_backend_is_one_error_at_validate(write_spec, run_cli):
    path = write_spec(workers={"backend": "slurm"})
    done = run_cli("validate", str(path))
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "backend" in line]
    assert len(lines) == 1 and "slurm" in lines[0] and "'ray'" in lines[0] and "'local'" in lines[0], lines


def test_compare_names_the_methods_a_space_cannot_take():
    from search.driver.compare import inapplicable
    from spaces import BitwidthScheme, LayerInfo, Space, SparsityScheme

    layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(4)]
    sparse, bits = Space(layers, SparsityScheme(0.5)), Space(layers, BitwidthScheme(3.5, choices=(2, 3, 4, 5)))
    assert all(inapplicable(method, sparse) is None for method in ("owl", "evopress-owl", "uniform", "dp"))
    for method in ("owl", "evopress-owl"):
        assert "'bitwidth'" in (inapplicable(method, bits) or "")
    assert inapplicable("uniform", bits) == "this space has no uniform profile"  # 3.5 bits is no level
    assert inapplicable("dp", bits) is None and inapplicable("evopress", bits) is None
