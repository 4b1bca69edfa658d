"""Fixtures shared by every test package: offline mode, a session cache, small evaluator specs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

# Nothing may come from a model hub at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache (corpus parse, compression databases) for the whole session."""
    return tmp_path_factory.mktemp("pressroom-cache")


def _evaluator_spec(cache_dir: Path, **sections: Any) -> Any:
    """An `EvaluatorSpec` for tests: small data by default, sections override it."""
    from evaluators import EvaluatorSpec

    data = {"seq_len": 64, "calibration_tokens": 8192, "heldout_tokens": 2048, "stats_tokens": 2048}
    data.update(sections.pop("data", {}))
    return EvaluatorSpec.model_validate({"data": data, "cache_dir": str(cache_dir), **sections})


@pytest.fixture(scope="session")
def make_evaluator(cache_dir: Path) -> Any:
    """Build (and memoise) evaluators by spec: building a database costs seconds."""
    from evaluators import Evaluator

    built: dict[str, Any] = {}

    def make(**sections: Any) -> Any:
        spec = _evaluator_spec(cache_dir, **sections)
        key = spec.model_dump_json()
        if key not in built:
            built[key] = Evaluator(spec)
        return built[key]

    return make


@pytest.fixture(scope="session")
def ray_session() -> Any:
    """One real local Ray for the whole session (starting one takes seconds).

    Token authentication stays as Ray sets it up. Reuses a Ray the session already started and
    then leaves it running.
    """
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    if started:
        ray.shutdown()
