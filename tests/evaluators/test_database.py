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

SPEC = {
    "model": {"name": "pressroom:tiny-llama"},
    "compression": {"target": 0.5, "compressor": "sparsegpt"},
    "data": {"seq_len": 64, "calibration_tokens": 4096, "heldout_tokens": 1024, "stats_tokens": 1024},
}


def _spec(cache: Path, **overrides):
    from evaluators import EvaluatorSpec

    return EvaluatorSpec.model_validate({**SPEC, **overrides, "cache_dir": str(cache)})


def _count_compress(monkeypatch) -> list[str]:
    from evaluators import building

    calls: list[str] = []
    original = building.compress

    def counting(compressor, weight, settings, stats, params):
        calls.append(compressor)
        return original(compressor, weight, settings, stats, params)

    monkeypatch.setattr(building, "compress", counting)
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


def test_opening_rebuilds_a_missing_truncated_or_unlisted_file_but_does_not_hash(tmp_path, monkeypatch, caplog):
    """Opening checks sizes only: a flipped byte at the same size passes it (by design: hashing
    every file on every open cost the database's size in reads) and `verify()` finds it."""
    from evaluators import Evaluator

    cache = tmp_path / "cache"
    evaluator = Evaluator(_spec(cache))
    root = evaluator.db.root
    layers = evaluator.db.manifest["layers"]
    names = sorted(layers)
    choice = evaluator.space.layer_choices()[names[0]][0]
    good = evaluator.db.weight(names[0], choice).clone()

    flipped = root / layers[names[0]]["file"]
    data = bytearray(flipped.read_bytes())
    data[-10] ^= 0xFF  # a byte inside the tensor data: same size
    flipped.write_bytes(bytes(data))
    truncated = root / layers[names[1]]["file"]
    size = truncated.stat().st_size
    truncated.write_bytes(truncated.read_bytes()[:100])
    missing = root / layers[names[2]]["file"]
    missing.unlink()
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["layers"][names[3]]
    (root / "manifest.json").write_text(json.dumps(manifest))

    calls = _count_compress(monkeypatch)
    with caplog.at_level("WARNING"):
        opened = Evaluator(_spec(cache))
    assert len(calls) == 3  # truncated, missing, unlisted; not the flipped one
    assert sorted(opened.db.repairs) == sorted(
        [
            f"database file {truncated} has 100 bytes, the manifest says {size}: rebuilding it",
            f"database file {missing} is missing: rebuilding it",
        ]
    )
    assert sorted(r.message for r in caplog.records if r.levelname == "WARNING") == sorted(opened.db.repairs)
    assert flipped.read_bytes() == bytes(data)  # served as it is: finding it is verify-db's job

    assert opened.db.verify() == {names[0]: f"{flipped}: SHA-256 does not match the manifest (layer {names[0]})"}
    opened.db.discard([names[0]])
    assert names[0] not in json.loads((root / "manifest.json").read_text())["layers"]
    calls.clear()
    opened.db = opened.open_database()
    assert len(calls) == 1
    assert opened.db.verify() == {}
    assert (opened.db.weight(names[0], choice) == good).all()
    assert Evaluator(_spec(cache)).db.repairs == []


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


def test_verify_db_names_each_bad_file_and_repairs_on_request(tmp_path, monkeypatch, capsys):
    import yaml

    from search.cli.app import main

    def pressroom(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.argv", ["pressroom", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        # a transient progress bar leaves empty lines when the output is not a terminal
        out, err = ("\n".join(line for line in text.splitlines() if line) for text in capsys.readouterr())
        return int(exited.value.code or 0), out, err

    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        yaml.safe_dump({**SPEC, "compression": {"target": 0.5, "compressor": "magnitude", "levels": {"max_levels": 2}}})
    )
    args = ("verify-db", str(spec), "--cache-dir", str(tmp_path / "cache"))
    code, out, _ = pressroom(*args)  # builds it first, like build-db
    assert code == 0
    assert out.startswith("database verified: ") and out.endswith(", 28 layers")
    root = Path(out.removeprefix("database verified: ").split(", 28 layers")[0])
    manifest = json.loads((root / "manifest.json").read_text())["layers"]
    bad = sorted(manifest)[:2]
    for name in bad:
        path = root / manifest[name]["file"]
        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))

    code, out, err = pressroom(*args)
    assert code == 1
    lines = [f"bad: {root / manifest[n]['file']}: SHA-256 does not match the manifest (layer {n})" for n in bad]
    assert err.splitlines() == lines
    code, out, err = pressroom(*args, "--repair")
    assert code == 0
    assert out.splitlines() == [*lines, f"rebuilt 2 of 28 layer files in {root}"]
    assert pressroom(*args)[0] == 0
