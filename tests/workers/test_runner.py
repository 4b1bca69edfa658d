"""`EvaluatorRunner` without Ray: payloads in, JSON-able results out, same numbers as `Evaluator`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluators.jobs import run_job
from spaces import Fidelity
from workers import EvaluatorRunner, switch_distance, task_payload
from workers import runner as runner_module

TINY = {"model": {"name": "pressroom:tiny-llama"}, "compression": {"target": 0.5, "compressor": "magnitude"}}


@pytest.fixture(scope="module")
def evaluator(make_evaluator):
    return make_evaluator(**TINY)


@pytest.fixture(scope="module")
def runner(evaluator):
    return EvaluatorRunner(evaluator.spec)


def test_evaluate_matches_the_evaluator(evaluator, runner):
    rng = np.random.default_rng(5)
    for batch in [(0, 0), (1, 2)]:
        profile = evaluator.space.sample(rng)
        fidelity = Fidelity(512, batch)
        levels = evaluator.space.to_array(profile)
        result = runner.run(task_payload("evaluate", levels, fidelity))
        expected = evaluator.evaluate(profile, fidelity)
        assert json.loads(json.dumps(result)) == result  # JSON-able as it is
        assert result["fitness"] == expected.fitness
        assert result["tokens"] == 512 and result["data"] == {} and result["perplexity"] is None
        assert result["switched"] > 0 and result["seconds"] > 0 and result["cpu_seconds"] > 0
        host, pid = result["worker"].split(":")
        assert host and int(pid) > 0


def test_heldout_evaluation_reports_perplexity(evaluator, runner):
    uniform = evaluator.space.uniform()
    payload = task_payload("evaluate", evaluator.space.to_array(uniform), Fidelity(1024, (0,), "heldout"))
    result = runner.run(payload)
    expected = evaluator.heldout(uniform, 1024)
    assert result["fitness"] == expected.fitness
    assert result["perplexity"] == pytest.approx(expected.perplexity) and result["perplexity"] > 1


def test_a_heldout_evaluation_is_made_once(evaluator, runner, monkeypatch):
    rng = np.random.default_rng(11)
    first, other = (evaluator.space.to_array(evaluator.space.sample(rng)) for _ in range(2))
    heldout = Fidelity(768, (0,), "heldout")
    before = runner.run(task_payload("evaluate", first, heldout))
    runner.run(task_payload("evaluate", other, heldout))  # the model holds another profile now
    calls, real = [], runner.evaluator.evaluate
    monkeypatch.setattr(runner.evaluator, "evaluate", lambda *args: calls.append(args) or real(*args))
    again = runner.run(task_payload("evaluate", first, heldout))
    assert calls == [] and again["tokens"] == 0 and before["tokens"] == 768
    assert (again["fitness"], again["perplexity"]) == (before["fitness"], before["perplexity"])
    for fidelity in (Fidelity(1024, (0,), "heldout"), Fidelity(768)):  # other tokens or split: evaluated
        assert runner.run(task_payload("evaluate", first, fidelity))["tokens"] == fidelity.tokens
    assert len(calls) == 2


def test_statistics_jobs_go_to_run_job(evaluator, runner, monkeypatch):
    result = runner.run(task_payload("owl_scores", None, Fidelity(256), {"M": 5.0}))
    # The statistics pass forwards data.stats_tokens once (the tiny model's layers fit one group),
    # whatever the fidelity names, and the result says so: the coordinator charges it to the run.
    stats_tokens = runner.evaluator.spec.data.stats_tokens
    assert result["fitness"] is None and result["tokens"] == stats_tokens and result["switched"] == 0
    assert runner.run(task_payload("layer_errors", None, Fidelity(256)))["tokens"] == stats_tokens
    assert result["data"] == run_job(evaluator, "owl_scores", {"M": 5.0}, Fidelity(256))

    calls = []

    def fake_run_job(evaluator, job, params, fidelity):
        calls.append((job, params, fidelity))
        return {"logits": [[0.0]]}

    monkeypatch.setattr(runner_module, "run_job", fake_run_job)
    result = runner.run(task_payload("relax", None, Fidelity(128, (3,)), {"steps": 2}))
    assert calls == [("relax", {"steps": 2}, Fidelity(128, (3,)))]
    assert result["data"] == {"logits": [[0.0]]} and result["tokens"] == 0  # the stand-in forwarded nothing


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"job": "evaluate", "levels": None, "fidelity": {"tokens": 64}, "params": {}}, "needs 'levels'"),
        ({"job": "train", "levels": None, "fidelity": {"tokens": 64}}, "'train' is not one of"),
        ({"job": "owl_scores", "levels": None}, "has no 'fidelity'"),
        ({"job": "owl_scores", "fidelity": {"tokens": 64}, "extra": 1}, r"unknown keys \['extra'\]"),
    ],
)
def test_malformed_payloads_are_refused(runner, payload, message):
    with pytest.raises(ValueError, match=message):
        runner.run(payload)


def test_levels_that_do_not_fit_the_space_are_refused(runner):
    with pytest.raises(ValueError, match="expected 28 levels"):
        runner.run(task_payload("evaluate", [0, 0], Fidelity(64)))


def test_info_describes_the_worker(evaluator, runner):
    info = runner.info()
    assert json.loads(json.dumps(info)) == info
    assert info["device"] == "cpu" and info["node_id"] is None and info["torch_threads"] >= 1
    assert info["model"] == evaluator.loaded.fingerprint
    assert info["space"] == evaluator.space.summary()
    assert info["worker"] == f"{info['hostname']}:{info['pid']}"
    assert [layer["name"] for layer in info["layers"]] == [layer.name for layer in evaluator.space.layers]
    steps = ["loaded model", "prepared data", "built the dense teacher", "opened the compression database"]
    assert list(info["start"]) == steps
    assert all(len(times) == 2 and min(times) >= 0 for times in info["start"].values())


def test_task_payload_and_switch_distance():
    payload = task_payload("evaluate", np.array([1, -2, 0]), Fidelity(64, (1, 2)))
    assert payload == {
        "job": "evaluate",
        "levels": [1, -2, 0],
        "fidelity": {"tokens": 64, "batch": [1, 2], "split": "calibration"},
        "params": {},
    }
    assert json.loads(json.dumps(payload)) == payload
    with pytest.raises(ValueError, match="needs 'levels'"):
        task_payload("evaluate", None, Fidelity(64))
    assert switch_distance(np.array([1, 2, 3]), [1, 0, 0]) == 2
    with pytest.raises(ValueError, match="different shapes"):
        switch_distance([1, 2], [1, 2, 3])
