"""The compression database: resumable builds, corruption detection, nested storage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evaluators.database import CompressionDatabase

SPEC = {
    "model": {"name": "pressroom:tiny-llama"},
    "compression": {"target": 0.5, "compressor": "sparsegpt"},
    "data": {"seq_len": 64, "calibration_tokens": 4096, "heldout_tokens": 1024, "stats_tokens": 1024},
}


def _spec(cache: Path, **overrides):
    from evaluators import EvaluatorSpec

    return EvaluatorSpec.model_validate({**SPEC, **overrides, "cache_dir": str(cache)})


def _count_compress(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = CompressionDatabase._compress

    def counting(compressor, module, settings, stats, params):
        calls.append(compressor)
        return original(compressor, module, settings, stats, params)

    monkeypatch.setattr(CompressionDatabase, "_compress", staticmethod(counting))
    return calls


def test_a_killed_build_resumes_without_recomputing_finished_layers(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import os, signal
        from evaluators import Evaluator, EvaluatorSpec
        spec = EvaluatorSpec.model_validate({json.dumps({**SPEC, "cache_dir": str(cache)})})
        def progress(done, total, name):
            if done == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        Evaluator(spec, progress=progress)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=os.environ)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    manifests = list(cache.glob("db/*/manifest.json"))
    assert len(manifests) == 1
    assert len(json.loads(manifests[0].read_text())["layers"]) == 5

    from evaluators import Evaluator

    calls = _count_compress(monkeypatch)
    evaluator = Evaluator(_spec(cache))
    assert len(calls) == len(evaluator.inventory) - 5
    assert len(evaluator.db.manifest["layers"]) == len(evaluator.inventory)

    calls.clear()
    Evaluator(_spec(cache))  # complete now: nothing to do
    assert calls == []


def test_a_corrupted_or_foreign_file_is_detected_and_rebuilt(tmp_path, monkeypatch, caplog):
    from evaluators import Evaluator

    cache = tmp_path / "cache"
    evaluator = Evaluator(_spec(cache))
    root = evaluator.db.root
    layers = evaluator.db.manifest["layers"]
    names = sorted(layers)
    good = evaluator.db.weight(names[0], evaluator.space.layer_choices()[names[0]][0]).clone()

    corrupt = root / layers[names[0]]["file"]
    data = bytearray(corrupt.read_bytes())
    data[-10] ^= 0xFF  # flip a byte inside the tensor data
    corrupt.write_bytes(bytes(data))
    foreign = root / layers[names[1]]["file"]
    foreign.write_bytes((root / layers[names[2]]["file"]).read_bytes())  # another layer's file
    truncated = root / layers[names[3]]["file"]
    truncated.write_bytes(truncated.read_bytes()[:100])

    calls = _count_compress(monkeypatch)
    with caplog.at_level("WARNING"):
        rebuilt = Evaluator(_spec(cache))
    assert len(calls) == 3
    assert sum("corrupt" in r.message for r in caplog.records) == 3
    assert sorted(rebuilt.db.repairs) == sorted(
        f"database file {path} is missing or corrupt: rebuilding it" for path in (corrupt, foreign, truncated)
    )
    assert Evaluator(_spec(cache)).db.repairs == []
    again = rebuilt.db.weight(names[0], rebuilt.space.layer_choices()[names[0]][0])
    assert (again == good).all()


def test_a_manifest_of_another_database_is_not_used(tmp_path, monkeypatch, caplog):
    from evaluators import Evaluator

    cache = tmp_path / "cache"
    evaluator = Evaluator(_spec(cache))
    manifest = evaluator.db.root / "manifest.json"
    data = json.loads(manifest.read_text())
    data["model"] = "someone-else"
    manifest.write_text(json.dumps(data))
    calls = _count_compress(monkeypatch)
    with caplog.at_level("WARNING"):
        rebuilt = Evaluator(_spec(cache))
    assert len(calls) == len(evaluator.inventory)
    assert any("another database" in r.message for r in caplog.records)
    assert rebuilt.db.repairs == [f"the manifest {manifest} belongs to another database: rebuilding it"]


def test_nested_compressors_store_one_ranking_per_layer(tmp_path):
    from evaluators import Evaluator

    evaluator = Evaluator(_spec(tmp_path, compression={"target": 0.5, "compressor": "wanda"}))
    db = evaluator.db
    assert db.nested
    for layer in evaluator.inventory.layers:
        entry = db.manifest["layers"][layer.name]
        from safetensors import safe_open

        with safe_open(str(db.root / entry["file"]), framework="pt") as handle:
            assert list(handle.keys()) == ["ranking"]
        assert db.ranking(layer.name).numel() == max(evaluator.space.layer_choices()[layer.name])
    with pytest.raises(KeyError, match="no 's3'"):
        db.weight(evaluator.inventory.layers[0].name, 3)
