"""Every search method end to end on a tiny causal LM, through the plain `Evaluator` (no Ray).

Each algorithm asks; the evaluator answers evaluations and statistics jobs (OWL's outlier
ratios, the additive DP's layer errors, DASS's gradient loop); the answer must be feasible. A
method that does not apply to a space (uniform without a uniform profile, OWL beyond sparsity)
must refuse it with a clear error instead.
"""

from __future__ import annotations

import math

import pytest

from evaluators.jobs import run_job
from search.algorithms import (
    ALGORITHMS,
    AdditiveDPConfig,
    Algorithm,
    Candidate,
    DASSConfig,
    EvoPressConfig,
    OWLConfig,
    RandomSearchConfig,
    RandomSearchSHConfig,
    Result,
    UniformConfig,
)
from search.optuna_samplers import OPTUNA_SAMPLERS, OptunaSamplerConfig
from tests.search.algorithms.test_algorithms_contract import HAS_CMAES, supports
from tests.search.harness import run

TINY_LLAMA = {"name": "pressroom:tiny-llama"}
SPACES = {
    "sparsity": {"target": 0.6, "compressor": "magnitude"},  # has a uniform profile
    "bits": {
        "scheme": "bitwidth",
        "target": 3.5,
        "compressor": "rtn",
        "levels": {"choices": [2, 3, 4, 5], "group_size": 16},
    },
}
# Small configurations: a few evaluations of a few hundred tokens each.
TINY: dict[str, object] = {
    "evopress": EvoPressConfig(
        generations=2, offspring=4, stages=((2, 128), (1, 256)), init_samples=3, init_tokens=128
    ),
    "random": RandomSearchConfig(tokens=256, budget_tokens=256 * 3),
    "random-sh": RandomSearchSHConfig(samples=4, stages=((2, 128), (1, 256)), budget_tokens=4 * 128 + 2 * 256),
    "dass": DASSConfig(steps=80, tokens_per_step=128, final_tokens=256),
    "uniform": UniformConfig(final_tokens=256),
    "owl": OWLConfig(statistics_tokens=512, final_tokens=256),
    "additive-dp": AdditiveDPConfig(statistics_tokens=512, final_tokens=256),
    "optuna-tpe": OptunaSamplerConfig(tokens=256, budget_tokens=256 * 4, startup_trials=2),
    "optuna-cmaes": OptunaSamplerConfig(tokens=256, budget_tokens=256 * 4, startup_trials=2),
}
REGISTRY = {**ALGORITHMS, **OPTUNA_SAMPLERS}
CASES = [
    pytest.param(space, name, marks=pytest.mark.skipif(name == "optuna-cmaes" and not HAS_CMAES, reason="needs cmaes"))
    for space in SPACES
    for name in REGISTRY
]


class EvaluatorWorker:
    """Answers candidates with an `Evaluator`, as a worker would (`harness.run` calls `respond`)."""

    def __init__(self, evaluator) -> None:
        self.evaluator = evaluator
        self.relax: list[dict] = []

    def respond(self, candidate: Candidate) -> Result:
        if candidate.job == "evaluate":
            result = self.evaluator.evaluate(candidate.profile, candidate.fidelity)
            return Result(candidate.id, result.fitness, tokens=result.tokens, seconds=result.seconds)
        forwarded = self.evaluator.statistics_forwarded
        data = run_job(self.evaluator, candidate.job, dict(candidate.params), candidate.fidelity)
        if candidate.job == "relax":
            self.relax.append(data)
        return Result(candidate.id, None, tokens=self.evaluator.statistics_forwarded - forwarded, data=data)


def test_every_method_has_a_tiny_configuration() -> None:
    assert set(TINY) == set(REGISTRY)


@pytest.mark.parametrize(("space_name", "name"), CASES)
def test_method_returns_a_feasible_profile(make_evaluator, space_name: str, name: str) -> None:
    evaluator = make_evaluator(model=TINY_LLAMA, compression=SPACES[space_name])
    space = evaluator.space
    cls: type[Algorithm] = REGISTRY[name][0]
    if not supports(name, space):  # uniform needs a uniform profile, OWL a sparsity space
        with pytest.raises(ValueError, match=space.scheme.name):
            cls(space, TINY[name], 0)  # type: ignore[call-arg]
        return
    algo = cls(space, TINY[name], 0)  # type: ignore[call-arg]
    worker = EvaluatorWorker(evaluator)

    run(algo, worker)  # type: ignore[arg-type]

    assert algo.finished
    assert algo.best is not None
    best, fitness = algo.best
    assert space.is_feasible(best)
    assert math.isfinite(fitness) and fitness > 0
    if name == "dass":
        [data] = worker.relax
        [choose] = [record for record in algo.history if record.get("phase") == "choose"]
        assert space.cost(best) == space.budget
        assert choose["rounded_cost"] == space.budget
        assert abs(choose["relative_gap"]) <= 0.01, data["trace"][-5:]
