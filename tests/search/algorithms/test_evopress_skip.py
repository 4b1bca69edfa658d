"""EvoPress's skip margin (`EvoPressConfig.skip_margin`): the parent also runs in the first stage,
and a generation whose parent beats every child there by the margin ends at that stage.

None keeps the reference schedule; a margin no child can meet changes only the extra stage-0
evaluation of the parent; margin 0 from the additive optimum skips every later stage; the
answer is never worse than the parent on the search data, and a search resumes exactly.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from search.algorithms import AdditiveDP, EvoPress, EvoPressConfig
from tests.search.harness import Driver, additive_problem, resume_in_lockstep, run, sparsity_space, strict_json

BASE = EvoPressConfig.preset("cpu-small", generations=8)
STAGE0 = BASE.stages[0][1]


@pytest.mark.parametrize("value", [-0.1, "0.1", True, float("nan"), float("inf")])
def test_a_bad_skip_margin_is_one_line_naming_it(value: object) -> None:
    with pytest.raises(ValueError, match=r"EvoPressConfig\.skip_margin"):
        EvoPressConfig(skip_margin=value)  # type: ignore[arg-type]


def test_a_margin_no_child_meets_changes_only_the_parents_first_stage_run() -> None:
    space = sparsity_space(20)
    problem = additive_problem(space, 1, noise=0.2)
    reference = EvoPress(space, BASE, seed=4)
    asked_reference = run(reference, problem)
    wide = EvoPress(space, replace(BASE, skip_margin=1e9), seed=4)
    asked_wide = run(wide, problem)
    assert wide.best == reference.best
    extra = [c for c in asked_wide if c.stage == 0 and c.generation >= 1 and c.profile is not None]
    assert len(extra) == len([c for c in asked_reference if c.stage == 0 and c.generation >= 1]) + BASE.generations
    assert wide.tokens_asked == reference.tokens_asked + BASE.generations * STAGE0
    assert not any(record.get("decided_at_stage_0") for record in wide.history)


def test_from_the_optimum_every_generation_ends_at_stage_0_and_keeps_it() -> None:
    space = sparsity_space(16)
    problem = additive_problem(space, 2)  # noise-free and additive: the DP's profile is optimal
    dp = AdditiveDP(space)
    run(dp, problem)
    assert dp.best is not None
    algo = EvoPress(space, replace(BASE, start=dict(dp.best[0]), skip_margin=0.0), seed=0)
    asked = run(algo, problem)
    assert algo.best is not None and algo.best[0] == dp.best[0]
    assert {c.stage for c in asked} == {0}
    assert algo.tokens_asked == BASE.generations * (BASE.offspring + 1) * STAGE0
    assert all(r["decided_at_stage_0"] and not r["replaced"] for r in algo.history)
    assert algo.history[0]["fitness"] == algo.history[0]["parent_fitness"]  # no last-stage value yet


def test_from_uniform_some_generations_skip_and_the_parent_never_gets_worse() -> None:
    space = sparsity_space(8)
    problem = additive_problem(space, 3)
    cold = EvoPress(space, replace(BASE, generations=40), seed=1)
    run(cold, problem)
    algo = EvoPress(space, replace(BASE, generations=40, skip_margin=0.0), seed=1)
    asked = run(algo, problem)
    decided = [r["generation"] for r in algo.history if r.get("decided_at_stage_0")]
    full = [r["generation"] for r in algo.history if not r.get("decided_at_stage_0")]
    assert decided and full
    for generation in decided:  # nothing past the first stage
        assert {c.stage for c in asked if c.generation == generation} == {0}
    values = [r["fitness"] for r in algo.history]
    assert values == sorted(values, reverse=True)  # noise-free: the incumbent only improves
    assert algo.best is not None and cold.best is not None
    uniform = problem.true(space.to_array(space.uniform()))
    assert problem.true(space.to_array(algo.best[0])) < uniform
    assert algo.tokens_asked < cold.tokens_asked


def test_the_budget_counts_the_parents_stage_0_run() -> None:
    space = sparsity_space(12)
    problem = additive_problem(space, 4, noise=0.3)
    config = replace(BASE, generations=1000, budget_tokens=100_000, skip_margin=1e9)
    algo = EvoPress(space, config, seed=0)
    run(algo, problem)
    per_generation = (BASE.offspring + 1) * STAGE0 + (BASE.stages[0][0] + 1) * BASE.stages[1][1]
    assert 100_000 - per_generation < algo.tokens_asked <= 100_000


@pytest.mark.parametrize("steps", [0, 1, 5, 30])
def test_a_search_with_a_skip_margin_resumes_exactly(steps: int) -> None:
    space = sparsity_space(10, 3)
    problem = additive_problem(space, 3, noise=0.3)
    config = replace(BASE, generations=6, skip_margin=0.0)
    original = EvoPress(space, config, seed=11)
    driver = Driver(problem, seed=steps, chunk=3)
    driver.run(original, steps=steps)
    restored = EvoPress(space, config, seed=999)
    resume_in_lockstep(original, restored, driver)
    assert restored.finished and restored.best == original.best
    assert strict_json(restored.state_dict()) == strict_json(original.state_dict())
