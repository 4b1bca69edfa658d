"""`pressroom search` on the packaged pretrained LLM: a short EvoPress run on SmolLM2-135M beats
uniform sparsity on held-out text (Jane Austen) the search never saw."""

from __future__ import annotations

import optuna
import pytest
import yaml

from evaluators.config import missing_packages
from evaluators.sources import austen_missing
from search.driver.run import HELDOUT

NAME = "pressroom:smollm2-135m"

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(missing_packages(NAME) is not None, reason=str(missing_packages(NAME))),
    pytest.mark.skipif(austen_missing() is not None, reason=str(austen_missing())),
]


def smollm2_search(cache_dir: str) -> dict:
    """EvoPress at 70 % Wanda sparsity, sized for 2 CPUs: 4 generations of 6 offspring, the best
    2 re-run on 1,024 calibration tokens against the parent, which starts at the uniform profile."""
    return {
        "model": {"name": NAME},
        "task": "causal-lm",
        "compression": {"scheme": "sparsity", "target": 0.7, "compressor": "wanda", "levels": {"max_levels": 5}},
        "data": {
            "source": "default",
            "heldout_source": "austen",
            "seq_len": 128,
            "calibration_tokens": 4096,
            "heldout_tokens": 4096,
            "stats_tokens": 1024,
        },
        "algorithm": {
            "name": "evopress",
            "params": {"generations": 4, "offspring": 6, "stages": [[2, 256], [1, 1024]]},
        },
        "workers": {"count": 2, "cpus_per_worker": 1, "torch_threads": 1, "timeout_s": 600},
        "mlflow": {"enabled": False},
        "cache_dir": cache_dir,
        "seed": 0,
    }


def test_a_short_search_on_smollm2_beats_uniform_on_held_out_austen(cache_dir, ray_head, run_cli, tmp_path):
    spec = tmp_path / "smollm2.yaml"
    spec.write_text(yaml.safe_dump(smollm2_search(str(cache_dir))))
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    args = ["search", str(spec), "--storage", storage, "--ray-address", ray_head.address, "--study", "smollm2"]
    run = run_cli(*args, timeout=900)
    assert run.returncode == 0, run.stderr
    heldout = optuna.load_study(study_name="smollm2", storage=storage).user_attrs[HELDOUT]
    uniform, best = heldout["uniform"], heldout["best"]
    assert uniform["error"] is None and best["error"] is None
    assert uniform["average"] == pytest.approx(0.7) and best["average"] == pytest.approx(0.7)
    # KL to the dense model on Austen. The margin is thin at this size (measured on 2 CPUs: seed 0,
    # 2.7573 against uniform's 2.7692, -0.4 %; seed 1, 2.8725 against 2.8778, -0.2 %): a search
    # this short barely leaves the uniform start (docs/benchmarks.md, the SmolLM2 table).
    assert best["fitness"] < uniform["fitness"], heldout
