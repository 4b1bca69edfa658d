"""`run_job`: the statistics jobs an `Evaluator` answers, by `spaces.Job`.

A baseline asks for model statistics instead of evaluations (`search.algorithms.Candidate` with
a job other than ``evaluate``); the worker runs them here on its evaluator and returns JSON-able
data. ``evaluate`` and ``latency`` are the worker's own (`workers.EvaluatorRunner`).

Example:
    >>> from spaces import Fidelity
    >>> run_job(evaluator, "owl_scores", {"M": 5.0}, Fidelity(256))["ratios"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from spaces import Fidelity, Job, LayerErrorsParams, OwlParams, RelaxParams, job_params

from .evaluator import Evaluator
from .relaxation import relax

#: Job -> what computes its data from the evaluator, the job's parameters and fidelity.
HANDLERS: Mapping[Job, Callable[[Evaluator, Any, Fidelity], dict[str, Any]]] = {
    Job.LAYER_ERRORS: lambda evaluator, params, fidelity: {"errors": evaluator.layer_errors()},
    Job.OWL_SCORES: lambda evaluator, params, fidelity: {"ratios": evaluator.owl_ratios(params.M)},
    Job.RELAX: relax,
}


def run_job(
    evaluator: Evaluator,
    job: str,
    params: Mapping[str, Any] | LayerErrorsParams | OwlParams | RelaxParams,
    fidelity: Fidelity,
) -> dict[str, Any]:
    """Run a statistics job a baseline asked for.

    Args:
        evaluator: the worker's evaluator; it holds the same profile afterwards.
        job: a `Job` (or its name) in `HANDLERS`.
        params: the job's parameters, typed or in their JSON form (`spaces.job_params`).
        fidelity: the tokens the job may use (the relaxation's tokens per step).

    Returns:
        JSON-able data: ``{"errors": ...}``, ``{"ratios": ...}`` or the relaxation's logits.

    Raises:
        ValueError: a job the evaluator does not run, or parameters the job does not take.
    """
    if job not in HANDLERS:
        raise ValueError(f"unknown job {str(job)!r}; allowed: {[kind.value for kind in HANDLERS]}")
    kind = Job(job)
    return HANDLERS[kind](evaluator, job_params(kind, params), fidelity)
