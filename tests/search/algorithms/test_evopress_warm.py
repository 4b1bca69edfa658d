"""EvoPress warm starts (`EvoPressConfig.start`): from the uniform profile, OWL's, the additive
DP's, or a given profile.

The start is the first parent and competes in every last stage, so on the search's minibatches
EvoPress never returns anything worse than it; the driver compares the two on held-out data
(`search.driver.run.prefer_start`), so the answer is never worse there either. A given start
must meet the budget and the constraint, and a warm search resumes from a checkpoint exactly.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import yaml

from search.algorithms import AdditiveDP, EvoPress, EvoPressConfig
from search.algorithms.constraint import Constraint
from search.driver.warm import check_start_file, prefer_start, start_file_read
from spaces import Fidelity
from tests.search.algorithms.test_methods_tiny import SPACES, TINY, TINY_LLAMA, EvaluatorWorker
from tests.search.harness import (
    STATS_TOKENS,
    Driver,
    additive_problem,
    bits_space,
    resume_in_lockstep,
    run,
    sparsity_space,
    strict_json,
)

SMALL = EvoPressConfig.preset("cpu-small", generations=6)


def a_feasible_profile(space, seed: int) -> dict[str, int]:
    return dict(space.from_array(space.sample_array(np.random.default_rng(seed))))


# --- the parameter -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["auto", "uniform", "owl", "dp", "runs/best.json", "best.YAML", {"l0": 3}])
def test_start_accepts_names_files_and_profiles(value: object) -> None:
    assert EvoPressConfig(start=value).start == value


@pytest.mark.parametrize("value", ["owll", "best.txt", "", {}, {"l0": True}, {"l0": "3"}, {1: 2}, 3, None, ["dp"]])
def test_start_refuses_anything_else_naming_the_value(value: object) -> None:
    with pytest.raises(ValueError, match=r"EvoPressConfig.start = .* is not allowed: one of \['auto', 'uniform'"):
        EvoPressConfig(start=value)


def test_a_start_that_does_not_fit_the_space_is_refused_in_one_line() -> None:
    space = sparsity_space(12)
    uniform = dict(space.uniform())
    over = {**uniform, space.names[0]: space.levels[0][-1]}  # one unit more compressed: over budget
    cases = [
        (over, r"average sparsity is 0\.6\d* \(cost \d+\), but the target 0.6 allows a cost of exactly 0"),
        ({**uniform, "nowhere": 0}, r"EvoPress start: the profile's units do not match this model's: unknown"),
        ({**uniform, space.names[0]: 12345}, r"level 12345 of .* is not allowed"),
        ("best.json", r"is a profile file, which the driver reads"),
    ]
    for start, message in cases:
        with pytest.raises(ValueError, match=message) as caught:
            EvoPress(space, EvoPressConfig(start=start))
        assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="has no uniform profile"):
        EvoPress(bits_space(8, 3.75), EvoPressConfig(start="uniform"))
    with pytest.raises(ValueError, match="start 'owl' sets per-block sparsities; this space is 'bitwidth'"):
        EvoPress(bits_space(8), EvoPressConfig(start="owl"))


def at_profile(space, profile, limit: float) -> Constraint:
    """A "latency" that counts the units at `profile`'s level: every other profile is faster."""
    levels = space.to_array(profile)
    values = [[float(level == levels[i]) for level in unit_levels] for i, unit_levels in enumerate(space.levels)]
    return Constraint.for_space(space, values, limit=limit, name="latency")


def test_a_given_start_must_meet_the_constraint() -> None:
    space = sparsity_space(12)
    start = space.uniform()
    n = len(space)
    with pytest.raises(ValueError, match=rf"its latency estimate {n} is over the limit {n - 0.5:g}"):
        EvoPress(space, EvoPressConfig(start=dict(start)), constraint=at_profile(space, start, n - 0.5))
    algo = EvoPress(space, replace(SMALL, start=dict(start)), constraint=at_profile(space, start, n))
    run(algo, additive_problem(space))
    assert algo.start is not None and algo.start[0] == start


# --- the start is the first parent, and never beaten on the search data by a worse answer ---


def test_a_given_start_is_the_first_parent_and_the_answer_is_never_worse_on_search_data() -> None:
    space = sparsity_space(24)
    problem = additive_problem(space, 1, noise=0.5)
    start = a_feasible_profile(space, 3)
    algo = EvoPress(space, replace(SMALL, start=start), seed=2)
    asked = run(algo, problem)
    first_parent = [c for c in asked if c.generation == 1 and c.final][-1]  # the elite comes last
    assert dict(first_parent.profile) == start
    assert algo.start is not None and dict(algo.start[0]) == start
    for record in algo.history:  # every winner beat (or was) the parent on the same minibatch
        assert record["fitness"] <= record["parent_fitness"]


@pytest.mark.parametrize("start", ["dp", "owl"])
def test_owl_and_dp_starts_ask_one_statistics_job_and_count_its_tokens(start: str) -> None:
    space = sparsity_space(16)
    problem = additive_problem(space, 2)
    algo = EvoPress(space, replace(SMALL, start=start), seed=0)
    [job] = algo.ask(10)
    assert job.job == ("layer_errors" if start == "dp" else "owl_scores")
    assert algo.ask(10) == []  # a barrier until the job is answered
    # The job is charged what its result reports it forwarded, not a figure fixed in advance.
    assert algo.tokens_asked == 0 and not algo.finished
    algo.tell([problem.respond(job)])
    assert algo.tokens_asked == STATS_TOKENS
    assert algo.history[0]["phase"] == "start"
    run(algo, problem)
    assert algo.start is not None
    if start == "dp":  # the same profile the additive-DP baseline picks from the same statistics
        baseline = AdditiveDP(space)
        run(baseline, problem)
        assert baseline.best is not None and algo.start[0] == baseline.best[0]
    cold = EvoPress(space, SMALL, seed=0)
    run(cold, problem)
    assert algo.tokens_asked == cold.tokens_asked + STATS_TOKENS


def test_a_derived_start_over_the_constraint_falls_back_to_random_profiles(caplog: pytest.LogCaptureFixture) -> None:
    space = sparsity_space(16)
    problem = additive_problem(space, 2)
    dp = AdditiveDP(space)
    run(dp, problem)
    assert dp.best is not None
    constraint = at_profile(space, dp.best[0], len(space) - 0.5)  # every profile but the DP's meets it
    algo = EvoPress(space, replace(SMALL, start="dp"), seed=0, constraint=constraint)
    run(algo, problem)
    assert "the dp start does not meet the constraints" in caplog.text
    assert algo.start is None and algo.best is not None and constraint.allows(space.to_array(algo.best[0]))


# --- held out: never worse than the start (the done-when) ------------------------------


@pytest.mark.parametrize("skip_margin", [None, 0.0])
def test_warm_evopress_is_never_worse_than_its_start_on_heldout_data(make_evaluator, skip_margin) -> None:
    evaluator = make_evaluator(model=TINY_LLAMA, compression=SPACES["sparsity"])
    space = evaluator.space
    heldout = Fidelity(512, (0,), "heldout")
    config: EvoPressConfig = TINY["evopress"]  # type: ignore[assignment]
    for seed in range(2):
        start = a_feasible_profile(space, seed)
        algo = EvoPress(space, replace(config, start=start, skip_margin=skip_margin), seed=seed)
        run(algo, EvaluatorWorker(evaluator))  # type: ignore[arg-type]
        assert algo.best is not None and algo.start is not None
        report = {
            name: {"fitness": evaluator.evaluate(profile, heldout).fitness}
            for name, profile in (("start", algo.start[0]), ("best", algo.best[0]))
        }
        chosen = prefer_start(report, algo.start) or algo.best[0]
        returned = evaluator.evaluate(chosen, heldout).fitness
        assert returned <= report["start"]["fitness"]
        assert report["best"]["fitness"] == returned
        assert report["best"]["source"] == ("start" if chosen == algo.start[0] else "search")


def test_prefer_start_keeps_the_search_answer_unless_the_start_is_better() -> None:
    space = sparsity_space(6)
    start = (space.uniform(), 1.0)
    report = {"start": {"fitness": 0.5}, "best": {"fitness": 0.4}}
    assert prefer_start(report, start) is None and report["best"] == {"fitness": 0.4, "source": "search"}
    report = {"start": {"fitness": 0.3}, "best": {"fitness": 0.4}}
    assert prefer_start(report, start) == start[0] and report["best"] == {"fitness": 0.3, "source": "start"}
    report = {"start": {"fitness": None}, "best": {"fitness": 0.4}}  # a failed held-out run changes nothing
    assert prefer_start(report, start) is None
    assert prefer_start({"best": {"fitness": 0.4}}, None) is None


# --- a profile file as the start -----------------------------------------------------------------


def test_a_profile_file_from_pressroom_best_is_read_by_the_driver(tmp_path) -> None:
    space = sparsity_space(8)
    profile = space.from_array(space.sample_array(np.random.default_rng(0)))
    (tmp_path / "best.json").write_text(profile.to_json())
    (tmp_path / "best.yaml").write_text(yaml.safe_dump(profile.to_dict(), sort_keys=False))
    for name in ("best.json", "best.yaml"):
        config = start_file_read(EvoPressConfig(start=str(tmp_path / name)), space)
        assert config.start == dict(profile)
    assert start_file_read(EvoPressConfig(start="dp"), space).start == "dp"
    missing = EvoPressConfig(start=str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match=r"missing.json: no such file \(give a profile `pressroom best -o` wrote\)"):
        check_start_file(missing)
    with pytest.raises(ValueError, match=r"cannot read .*missing.json: No such file"):
        start_file_read(missing, space)
    check_start_file(EvoPressConfig(start=str(tmp_path / "best.json")))
    check_start_file(EvoPressConfig(start="dp"))
    other = sparsity_space(9)
    with pytest.raises(ValueError, match=r"best.json: the profile's units do not match this model's"):
        start_file_read(EvoPressConfig(start=str(tmp_path / "best.json")), other)


# --- checkpoints ---------------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["dp", "owl", "given"])
@pytest.mark.parametrize("steps", [0, 1, 4, 25])
def test_a_warm_search_resumes_exactly(start: str, steps: int) -> None:
    space = sparsity_space(10, 3)
    problem = additive_problem(space, 3, noise=0.3)
    problem.fail = lambda c: c.id % 7 == 3  # retries, of the statistics job too
    value = a_feasible_profile(space, 5) if start == "given" else start
    config = EvoPressConfig.preset("cpu-small", generations=5, start=value)
    original = EvoPress(space, config, seed=11)
    driver = Driver(problem, seed=steps, chunk=3)
    driver.run(original, steps=steps)

    restored = EvoPress(space, config, seed=999)
    resume_in_lockstep(original, restored, driver)
    assert restored.finished
    assert restored.best == original.best and restored.start == original.start
    assert strict_json(restored.state_dict()) == strict_json(original.state_dict())


def test_a_checkpoint_from_before_warm_starts_resumes_as_a_cold_start() -> None:
    space = sparsity_space(10, 3)
    algo = EvoPress(space, SMALL, seed=1)
    algo.ask(5)
    state = strict_json(algo.state_dict())
    del state["start"]
    restored = EvoPress(space, SMALL, seed=1)
    restored.load_state_dict(state)
    assert restored.start is None and not restored.finished


def test_compare_runs_warm_evopress_at_the_same_budget() -> None:
    from search.driver.compare import METHODS, method_params, parse_methods

    assert parse_methods("evopress,evopress-dp,evopress-owl") == ["evopress", "evopress-dp", "evopress-owl"]
    for method, start in (("evopress", "auto"), ("evopress-dp", "dp"), ("evopress-owl", "owl")):
        params = method_params(method, SMALL, 300_000)
        config = EvoPressConfig(**params)  # what the compare run's spec builds
        assert METHODS[method] == "evopress"
        assert (config.start, config.budget_tokens, config.stages) == (start, 300_000, SMALL.stages)
