"""`EvaluatorRunner`: one `Evaluator` and the task payloads it executes, without Ray.

A *task payload* is the JSON-able dict that travels from the coordinator to a worker::

    {"job": "evaluate" | "layer_errors" | "owl_scores" | "relax" | "latency",   # a `spaces.Job`
     "levels": [int, ...] | None,      # level values in `space` unit order ("evaluate", "latency")
     "fidelity": Fidelity.to_dict(),
     "params": {...}}                  # the job's parameters, as `spaces.job_params` reads them

and `EvaluatorRunner.run` answers it with a JSON-able dict (see `EvaluatorRunner.run`). The Ray
actor (`workers.actor.EvaluatorActor`) only delegates here, so tests exercise the whole worker
side in-process.

Example:
    >>> from spaces import Fidelity
    >>> task_payload("evaluate", [0, 1, -1], Fidelity(512))["levels"]
    [0, 1, -1]
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from evaluators import Evaluator, EvaluatorSpec
from evaluators.jobs import run_job
from spaces import Fidelity, Job, JobParams, parse_job

from .runtime import latency_job

logger = logging.getLogger(__name__)

#: Where a worker runs: "auto" (CUDA where there is a GPU for it, else CPU), "cpu" or "cuda".
DeviceChoice = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def pick_device(choice: str, has_gpu: bool, no_gpu: str) -> str:
    """The torch device for a worker's `choice` ("auto", "cpu" or "cuda"), given whether a GPU is
    there for it; `no_gpu` says why there is none, for the error.

    Raises:
        ValueError: an unknown choice, or "cuda" without a GPU.

    Example:
        >>> pick_device("auto", False, "no GPU"), pick_device("auto", True, "")
        ('cpu', 'cuda')
    """
    if choice not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {choice!r}")
    if choice == "cuda" and not has_gpu:
        raise ValueError(f"device 'cuda' was asked for, but {no_gpu}")
    if choice == "auto":
        return "cuda" if has_gpu else "cpu"
    return choice


PAYLOAD_KEYS = frozenset({"job", "levels", "fidelity", "params"})
#: How much of a Ray node id (56 hex digits) a worker label shows: enough to tell nodes apart.
NODE_LABEL_CHARS = 8


def task_payload(
    job: str,
    levels: Sequence[int] | npt.NDArray[np.integer[Any]] | None,
    fidelity: Fidelity,
    params: JobParams | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a task payload, checked the same way `EvaluatorRunner.run` checks it.

    Args:
        job: a `spaces.Job` (or its name). "evaluate" measures a profile; "latency" times a
            profile (levels, or None for dense) with real kernels on the worker; the others
            are statistics jobs `evaluators.jobs.run_job` answers.
        levels: level values in the space's unit order; required for "evaluate", else None.
        fidelity: the tokens to forward.
        params: the job's parameters, typed or JSON-able (checked on the worker).

    Returns:
        The JSON-able payload.

    Raises:
        ValueError: an unknown job, or levels missing for "evaluate".
    """
    payload = {
        "job": str(job),
        "levels": None if levels is None else [int(v) for v in levels],
        "fidelity": fidelity.to_dict(),
        "params": dict(params or {}),
    }
    _check_payload(payload)
    return payload


def switch_distance(a: Sequence[int] | npt.NDArray[Any], b: Sequence[int] | npt.NDArray[Any]) -> int:
    """How many units differ between two level arrays: the layers a worker holding `a` must
    rewrite to hold `b`. Meant as the `WorkerPool`'s `distance` over level-array routes.

    Args:
        a: level values in unit order.
        b: level values in the same unit order.

    Returns:
        The number of positions where they differ.

    Raises:
        ValueError: the arrays have different lengths.

    Example:
        >>> switch_distance([0, 1, -1], [0, 0, 0])
        2
    """
    left, right = np.asarray(a), np.asarray(b)
    if left.shape != right.shape:
        raise ValueError(f"level arrays of different shapes: {left.shape} and {right.shape}")
    return int(np.count_nonzero(left != right))


def _check_payload(payload: Mapping[str, Any]) -> None:
    unknown = sorted(set(payload) - PAYLOAD_KEYS)
    if unknown:
        raise ValueError(f"task payload has unknown keys {unknown}; allowed: {sorted(PAYLOAD_KEYS)}")
    try:
        job = parse_job(payload.get("job"))
    except ValueError as exc:
        raise ValueError(f"task payload {exc}") from None
    if "fidelity" not in payload:
        raise ValueError(f"task payload for job {job.value!r} has no 'fidelity'")
    if job is Job.EVALUATE and payload.get("levels") is None:
        raise ValueError("task payload for job 'evaluate' needs 'levels' (level values in unit order)")


def _gpu_label(device: torch.device) -> str | None:
    """The physical GPU a CUDA device is, as CUDA_VISIBLE_DEVICES names it (Ray sets that
    variable per actor, so the in-process index is 0 on every worker and says nothing)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[index] if index < len(visible) else str(index)


class EvaluatorRunner:
    """Builds an `Evaluator` and executes task payloads on it.

    Args:
        spec: everything needed to build the evaluator.
        device: a torch device string ("cpu", "cuda", "cuda:1", ...).
        torch_threads: intra-op threads for torch in this process; None leaves torch's default.
        node_id: the Ray node this runner lives on (the actor passes it); its first
            `NODE_LABEL_CHARS` hex digits end the worker label.

    Raises:
        ValueError: a spec the model or data cannot satisfy (from `Evaluator`), or a thread
            count below 1.

    Example:
        >>> spec = EvaluatorSpec.model_validate({"model": {"name": "pressroom:tiny-llama"}})
        >>> runner = EvaluatorRunner(spec)  # doctest: +SKIP
        >>> levels = runner.space.to_array(runner.space.uniform())  # doctest: +SKIP
        >>> runner.run(task_payload("evaluate", levels, Fidelity(512)))["fitness"]  # doctest: +SKIP
    """

    def __init__(
        self, spec: EvaluatorSpec, *, device: str = "cpu", torch_threads: int | None = None, node_id: str | None = None
    ) -> None:
        if torch_threads is not None:
            if torch_threads < 1:
                raise ValueError(f"torch_threads must be at least 1, got {torch_threads}")
            torch.set_num_threads(torch_threads)
        start = time.perf_counter()
        self.evaluator = Evaluator(spec, device=device)
        self.space = self.evaluator.space
        #: held-out results by (levels, tokens): that split never changes, so a profile measured on
        #: it once (a search's answer, then the same profile as a curve point, the uniform profile
        #: of every run of a comparison) is answered from here, forwarding nothing.
        self._heldout: dict[tuple[tuple[int, ...], int] | None, dict[str, Any]] = {}
        gpu = _gpu_label(self.evaluator.device)
        self.node_id = node_id
        self.worker = f"{socket.gethostname()}:{os.getpid()}" + (f":{gpu}" if gpu is not None else "")
        if node_id is not None:  # several Ray nodes may share one host: say which node
            self.worker += f"@{node_id[:NODE_LABEL_CHARS]}"
        logger.info(
            "worker %s ready in %.1fs: %s on %s, %d units",
            self.worker,
            time.perf_counter() - start,
            spec.model.name,
            self.evaluator.device,
            len(self.space.units),
        )

    def run(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Execute one task payload.

        Args:
            payload: see the module docstring; `task_payload` builds one.

        Returns:
            ``{"fitness": float | None, "tokens": int, "seconds": float, "cpu_seconds": float,
            "switched": int, "perplexity": float | None, "data": {...},
            "worker": "<host>:<pid>[:<gpu>][@<node>]"}``; fitness, switched and perplexity come
            from the evaluation (None, 0, None for other jobs); ``tokens`` is what it forwarded
            (a statistics job's passes; 0 for a latency job, and for a held-out evaluation this
            runner already made: its result is kept and returned again); ``data`` is a statistics job's
            output ({} for evaluations), ``seconds`` is the wall time of the whole job on this
            worker and ``cpu_seconds`` the CPU time this process spent meanwhile, all its threads
            together (torch's intra-op pool included; an actor runs one task at a time, so it is
            this job's cost plus whatever Ray's own threads in the process did during it).

        Raises:
            ValueError: a malformed payload, levels that do not fit the space, or parameters
                the job does not take.
        """
        _check_payload(payload)
        job = Job(payload["job"])
        fidelity = Fidelity.from_dict(dict(payload["fidelity"]))
        start, cpu = time.perf_counter(), time.process_time()
        if job is Job.EVALUATE:
            key = (tuple(payload["levels"]), fidelity.tokens) if fidelity.split == "heldout" else None
            if key in self._heldout:  # the same data: nothing to forward
                seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
                return {**self._heldout[key], "tokens": 0, "seconds": seconds, "cpu_seconds": cpu_seconds}
            result = self.evaluator.evaluate(self.space.from_array(payload["levels"]), fidelity)
            answer: dict[str, Any] = {
                "fitness": float(result.fitness),
                "tokens": int(result.tokens),
                "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu,
                "switched": int(result.switched),
                "perplexity": None if result.perplexity is None else float(result.perplexity),
                "data": {},
                "worker": self.worker,
            }
            if key is not None:
                self._heldout[key] = {**answer, "switched": 0}
            return answer
        params = dict(payload.get("params") or {})
        forwarded = self.evaluator.statistics_forwarded
        if job is Job.LATENCY:
            levels = payload.get("levels")
            profile = None if levels is None else self.space.from_array(levels)
            data = latency_job(self.evaluator, profile, fidelity, params)
        else:
            data = run_job(self.evaluator, job, params, fidelity)
        return {
            "fitness": None,
            "tokens": self.evaluator.statistics_forwarded - forwarded,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu,
            "switched": 0,
            "perplexity": None,
            "data": data,
            "worker": self.worker,
        }

    def info(self) -> dict[str, Any]:
        """Who this worker is and what it holds.

        Returns:
            JSON-able: ``worker``, ``hostname``, ``pid``, ``node_id`` (the Ray node given at
            construction, None outside Ray), ``device``, ``torch_threads``, ``model`` (the model fingerprint) and
            ``space`` (`Space.summary()`), ``layers`` (the inventory, so a coordinator can
            build the same `Space` without loading the model) and ``start`` (each start-up
            step's [wall, CPU] seconds, `Evaluator.start`).
        """
        return {
            "worker": self.worker,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "node_id": self.node_id,
            "device": str(self.evaluator.device),
            "torch_threads": torch.get_num_threads(),
            "model": self.evaluator.loaded.fingerprint,
            "space": self.space.summary(),
            "layers": [{**dataclasses.asdict(layer), "shape": list(layer.shape)} for layer in self.space.layers],
            "start": {step: list(times) for step, times in self.evaluator.start.steps.items()},
        }
