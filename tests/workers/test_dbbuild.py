"""The compression database built on Ray workers: the same bytes as a build in one process.

SparseGPT's arithmetic depends on the torch thread count (a matmul's blocking), so the build in
one process runs with the one thread each task of `build_executor(2)` (1 CPU each) uses.
"""

from __future__ import annotations

import pytest

from tests.evaluators.test_database import SPEC


def _spec(cache):
    from evaluators import EvaluatorSpec

    return EvaluatorSpec.model_validate({**SPEC, "cache_dir": str(cache)})


@pytest.mark.ray
def test_two_workers_build_the_same_database_and_a_truncated_file_is_rebuilt(ray_session, tmp_path):
    import torch

    from evaluators import Evaluator
    from workers import build_executor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = Evaluator(_spec(tmp_path / "alone")).db  # SparseGPT: Hessians, the most arithmetic
    finally:
        torch.set_num_threads(threads)
    seen: list[str] = []
    parallel = Evaluator(
        _spec(tmp_path / "parallel"), executor=build_executor(2), progress=lambda done, total, name: seen.append(name)
    ).db
    assert sorted(seen) == sorted(alone.manifest["layers"])  # the bar advanced once per layer
    assert parallel.root.name == alone.root.name
    manifest = (parallel.root / "manifest.json").read_bytes()
    assert manifest == (alone.root / "manifest.json").read_bytes()  # every file's size and SHA-256
    for entry in alone.manifest["layers"].values():
        assert (parallel.root / entry["file"]).read_bytes() == (alone.root / entry["file"]).read_bytes()
    assert not list(parallel.root.glob(".*.tmp"))

    name = sorted(parallel.manifest["layers"])[0]
    truncated = parallel.root / parallel.manifest["layers"][name]["file"]
    size = truncated.stat().st_size
    truncated.write_bytes(truncated.read_bytes()[:100])
    reopened = Evaluator(_spec(tmp_path / "parallel"), executor=build_executor(2)).db
    assert reopened.repairs == [f"database file {truncated} has 100 bytes, the manifest says {size}: rebuilding it"]
    assert (parallel.root / "manifest.json").read_bytes() == manifest
    assert reopened.verify() == {}


def test_build_executor_rejects_a_bad_count():
    from workers import build_executor

    with pytest.raises(ValueError, match="at least 1, got 0"):
        build_executor(0)


def _pressroom(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from search.cli.app import main

    monkeypatch.setattr("sys.argv", ["pressroom", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = ("\n".join(line for line in text.splitlines() if line) for text in capsys.readouterr())
    return int(exited.value.code or 0), out, err


@pytest.mark.ray
def test_build_db_with_workers_on_the_running_ray(ray_session, tmp_path, monkeypatch, capsys):
    import yaml

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "compression": {"target": 0.5, "compressor": "wanda"}}))
    code, out, _ = _pressroom(
        monkeypatch, capsys, "build-db", str(spec), "--cache-dir", str(tmp_path), "--workers", "2"
    )
    assert code == 0
    assert out.startswith(f"database ready: {tmp_path}/db/")
    assert "compressor wanda, 28 layers" in out
    assert ray_session.is_initialized()  # the session's Ray, used and left running


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--ray-address", "auto"], "--ray-address is for the workers of --workers N"),
    ],
)
def test_build_db_rejects_bad_worker_options(tmp_path, monkeypatch, capsys, args, message):
    import yaml

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    code, _, err = _pressroom(monkeypatch, capsys, "build-db", str(spec), "--cache-dir", str(tmp_path), *args)
    assert code == 2
    assert message in err
