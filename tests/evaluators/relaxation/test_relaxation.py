"""The DASS-style relaxed model and its gradient loop (`evaluators.relaxation`) on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from evaluators.jobs import run_job
from evaluators.relaxation import RelaxedModel
from search.algorithms import DASS, DASSConfig, Result
from spaces import Fidelity

TINY_LLAMA = {"name": "pressroom:tiny-llama"}
#: Few, cheap steps; enough for the augmented Lagrangian to settle on the tiny model.
RELAX = DASSConfig(steps=80, tokens_per_step=128, final_tokens=512)


def _weights(evaluator) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in evaluator.inventory.modules.items()}


@pytest.fixture(params=["magnitude", "sparsegpt"])
def evaluator(request, make_evaluator):
    """A tiny causal LM with a nested (magnitude) or a stored-levels (SparseGPT) database."""
    return make_evaluator(model=TINY_LLAMA, compression={"target": 0.6, "compressor": request.param})


def test_relax_meets_the_budget_and_leaves_the_evaluator_as_it_was(evaluator):
    space = evaluator.space
    held = space.sample(np.random.default_rng(7))
    check = Fidelity(512, (3,))
    before_fitness = evaluator.evaluate(held, check).fitness
    before_weights, before_settings = _weights(evaluator), evaluator.settings()
    flags = [p.requires_grad for p in evaluator.model.parameters()]

    algo = DASS(space, RELAX)
    [job] = algo.ask(1)
    data = run_job(evaluator, job.job, dict(job.params), job.fidelity)

    json.dumps(data, allow_nan=False)  # travels back from a worker as JSON
    assert [len(row) for row in data["logits"]] == [len(levels) for levels in space.levels]
    assert len(data["trace"]) == RELAX.steps
    assert data["target_cost"] == space.budget

    algo.tell([Result(job.id, None, data=data)])
    [final] = algo.ask(1)
    assert final.profile is not None
    assert space.cost(final.profile) == space.budget
    choose = algo.history[-1]
    assert choose["rounded_cost"] == space.budget
    # The relaxed expected average sparsity ends within 1 % of the target.
    assert abs(choose["relative_gap"]) <= 0.01, (choose, data["trace"][-5:])

    after = _weights(evaluator)
    assert all(torch.equal(before_weights[name], after[name]) for name in after)
    assert evaluator.settings() == before_settings
    assert [p.requires_grad for p in evaluator.model.parameters()] == flags
    assert all(p.grad is None for p in evaluator.model.parameters())
    assert all(p.grad is None for p in evaluator.teacher_model.parameters())
    assert evaluator.evaluate(held, check).fitness == before_fitness


def test_gradients_flow_into_the_logits_only(evaluator):
    relaxed = RelaxedModel(evaluator, DASS(evaluator.space).init_logits())
    probs = relaxed.probabilities(0.5)
    weights = relaxed.weights(probs)
    batch = evaluator.data.batch(Fidelity(128, (11,)))
    logits = torch.func.functional_call(evaluator.model, weights, args=(), kwargs={"input_ids": batch.input_ids})
    logits.logits.square().mean().backward()

    assert all(p.grad is None for p in evaluator.model.parameters())
    for name, a in zip(evaluator.space.names, relaxed.logits, strict=True):
        assert a.grad is not None and torch.isfinite(a.grad).all(), name
        assert a.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("model", "compression"),
    [
        (TINY_LLAMA, {"target": 0.6, "compressor": "magnitude"}),
        (TINY_LLAMA, {"target": 0.6, "compressor": "sparsegpt"}),
        # GPT-2: Conv1D layers store their weight transposed; the drop scheme also zeroes biases.
        ({"name": "pressroom:tiny-gpt2"}, {"target": 0.6, "compressor": "wanda"}),
        ({"name": "pressroom:tiny-gpt2"}, {"scheme": "drop", "target": 0.25}),
        (
            TINY_LLAMA,
            {
                "scheme": "bitwidth",
                "target": 4.0,
                "compressor": "rtn",
                "levels": {"choices": [2, 4, 16], "group_size": 16},
            },
        ),
    ],
)
def test_a_one_hot_relaxation_is_the_discrete_model(make_evaluator, model, compression):
    """Logits peaked on one profile: the relaxed forward is exactly that profile's evaluation."""
    evaluator = make_evaluator(model=model, compression=compression)
    space = evaluator.space
    profile = space.sample(np.random.default_rng(5))
    peaked = [
        [0.0 if level == profile[name] else -50.0 for level in levels]
        for name, levels in zip(space.names, space.levels, strict=True)
    ]
    algo = DASS(space, DASSConfig(steps=1, lr=1e-9, tau_start=1.0, tau_end=1.0, rho=0.0))
    [job] = algo.ask(1)
    params = {**job.params, "init_logits": peaked}
    forwarded = evaluator.statistics_forwarded
    data = run_job(evaluator, "relax", params, Fidelity(256, (9,)))
    assert evaluator.statistics_forwarded - forwarded == 256  # one step of 256 tokens, reported to the run
    expected = evaluator.evaluate(profile, Fidelity(256, (9, 0))).fitness
    assert data["trace"][0]["fitness"] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert data["expected_cost"] == pytest.approx(space.cost(profile), abs=1e-6 * max(1.0, algo.cost_scale))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": None}, r"missing \['steps'\]"),
        ({"bogus": 1}, r"unknown \['bogus'\]"),
        ({"init_logits": [[0.0]]}, r"init_logits must hold one list per unit \(28\)"),
        ({"lr": 0.0}, r"lr must be positive"),
    ],
)
def test_bad_params_name_the_key(make_evaluator, change, message):
    evaluator = make_evaluator(model=TINY_LLAMA, compression={"target": 0.6, "compressor": "magnitude"})
    [job] = DASS(evaluator.space, RELAX).ask(1)
    params = {**job.params, **change}
    params = {k: v for k, v in params.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        run_job(evaluator, "relax", params, job.fidelity)


def test_a_wrong_logits_row_names_the_unit_and_its_levels(make_evaluator):
    evaluator = make_evaluator(model=TINY_LLAMA, compression={"target": 0.6, "compressor": "magnitude"})
    [job] = DASS(evaluator.space, RELAX).ask(1)
    logits = [list(row) for row in job.params["init_logits"]]
    logits[3] = [0.0, float("nan")]
    with pytest.raises(ValueError, match=r"init_logits\[3\] must be 17 finite numbers"):
        run_job(evaluator, "relax", {**job.params, "init_logits": logits}, job.fidelity)
