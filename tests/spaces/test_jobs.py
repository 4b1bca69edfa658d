"""The worker job protocol: one spelling of each job, typed parameters that survive JSON."""

from __future__ import annotations

import json

import pytest

from spaces import Job, LatencyParams, OwlParams, RelaxParams, job_params, parse_job

RELAX = {
    "steps": 3, "lr": 0.1, "tau_start": 1.0, "tau_end": 0.1, "rho": 1.0,
    "init_logits": [[0.0, 1.0], [1.0, 0.0]], "target_cost": 2.0, "cost_scale": 1.0,
}  # fmt: skip


@pytest.mark.parametrize("job", list(Job))
def test_every_job_is_read_back_from_its_name(job):
    assert parse_job(job.value) is job
    assert parse_job(json.loads(json.dumps(job))) is job


@pytest.mark.parametrize("value", [None, "evaluate ", "EVALUATE", 3, ["relax"]])
def test_a_value_that_names_no_job_is_refused_with_the_jobs_listed(value):
    with pytest.raises(ValueError, match=r"is not one of \['evaluate', 'relax', 'layer_errors'"):
        parse_job(value)


@pytest.mark.parametrize(
    ("job", "data", "cls"),
    [
        (Job.OWL_SCORES, {"M": 5}, OwlParams),
        (Job.RELAX, RELAX, RelaxParams),
        (Job.LATENCY, {"repeats": 3}, LatencyParams),
    ],
)
def test_parameters_survive_their_json_form(job, data, cls):
    params = job_params(job, data)
    assert isinstance(params, cls)
    wire = json.loads(json.dumps(dict(params)))
    assert job_params(job.value, wire) == params


def test_missing_and_unknown_parameters_are_named_with_what_is_allowed():
    data = {key: value for key, value in RELAX.items() if key != "lr"} | {"bogus": 1}
    with pytest.raises(ValueError) as info:
        job_params(Job.RELAX, data)
    message = str(info.value)
    assert "missing ['lr']" in message and "unknown ['bogus']" in message and "allowed: [" in message


def test_a_bad_value_is_named():
    with pytest.raises(ValueError, match="steps"):
        job_params(Job.RELAX, RELAX | {"steps": "three"})
