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
