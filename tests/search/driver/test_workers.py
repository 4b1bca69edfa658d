"""`Workers` against the session's real Ray: what the evaluator actors report back to the driver."""

from __future__ import annotations

import re

import pytest
import yaml

from search.driver.run import Workers
from search.spec.config import load_spec_text
from tests.search.conftest import tiny_search


@pytest.mark.ray
@pytest.mark.slow
def test_a_database_a_worker_repaired_is_reported_by_the_driver(ray_session, tmp_path, caplog):
    workers = {"count": 1, "cpus_per_worker": 0.5, "torch_threads": 1, "timeout_s": 120}
    spec = load_spec_text(yaml.safe_dump(tiny_search(tmp_path / "cache", workers=workers)))
    with Workers(spec):  # builds the database in this test's own cache
        pass
    (corrupt,) = sorted((tmp_path / "cache" / "db").glob("*/*.safetensors"))[:1]
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    with caplog.at_level("INFO"), Workers(spec):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.name == "search.driver.run" and r.levelname == "WARNING"]
    (line,) = warnings
    assert "repaired its compression database" in line and f"database file {corrupt} has 100 bytes" in line
    # the start's steps, the workers' included (their own logs are not watched), with timings
    starts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("start: ")]
    for step in ("started Ray", "loaded model", "opened the compression database", "started 1 worker"):
        assert any(re.match(rf"start: {step} in \d+\.\d s \(\d+\.\d CPU-s\)", s) for s in starts), (step, starts)
