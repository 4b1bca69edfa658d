"""`EvaluatorActor`: a thin Ray actor around `EvaluatorRunner`, and how to place it.

One actor holds one model replica. Where the cluster has GPUs, each actor asks for a whole GPU
and runs on "cuda"; on CPU-only clusters it asks for CPUs only. Actors are never restarted by
Ray (`max_restarts=0`): a restarted actor would silently lose the task it was running, while the
`WorkerPool` notices a dead one, re-queues its task and asks its factory for a replacement.

Example:
    >>> import ray  # doctest: +SKIP
    >>> actors = make_actors(spec, count=2, num_cpus=1.0)  # doctest: +SKIP
    >>> pool = WorkerPool(actors, actor_factory=lambda: make_actors(spec, 1, 1.0)[0])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import ray
from ray.actor import ActorHandle

from evaluators import EvaluatorSpec
from evaluators.startup import start_line

from .runner import DeviceChoice, EvaluatorRunner, pick_device

logger = logging.getLogger(__name__)


def gpus_per_actor(num_gpus: float | Literal["auto"], cluster: Mapping[str, float]) -> float:
    """The GPUs one actor asks for.

    Args:
        num_gpus: "auto" (one whole GPU per actor where the cluster has any, none otherwise)
            or an explicit amount.
        cluster: the cluster's total resources, as `ray.cluster_resources()` returns them.

    Returns:
        The ``num_gpus`` actor option.

    Raises:
        ValueError: a negative amount, or a string other than "auto".

    Example:
        >>> gpus_per_actor("auto", {"CPU": 16.0, "GPU": 4.0}), gpus_per_actor("auto", {"CPU": 2.0})
        (1.0, 0.0)
    """
    if num_gpus == "auto":
        return 1.0 if cluster.get("GPU", 0) > 0 else 0.0
    if isinstance(num_gpus, str) or num_gpus < 0:
        raise ValueError(f"num_gpus must be 'auto' or a non-negative number, got {num_gpus!r}")
    return float(num_gpus)


def actor_options(
    num_cpus: float,
    num_gpus: float | Literal["auto"] = "auto",
    *,
    cluster: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Ray options for one evaluator actor.

    Args:
        num_cpus: CPUs the actor reserves (fractions let several share a core).
        num_gpus: see `gpus_per_actor`.
        cluster: the cluster's resources; None asks the running Ray (`ray.cluster_resources()`).

    Returns:
        ``{"num_cpus": ..., "num_gpus": ..., "max_restarts": 0}`` for ``Actor.options(**...)``.

    Raises:
        ValueError: a non-positive CPU count or a bad GPU amount.

    Example:
        >>> actor_options(0.5, cluster={"CPU": 2.0})
        {'num_cpus': 0.5, 'num_gpus': 0.0, 'max_restarts': 0}
    """
    if num_cpus <= 0:
        raise ValueError(f"num_cpus must be positive, got {num_cpus}")
    resources = ray.cluster_resources() if cluster is None else cluster  # type: ignore[no-untyped-call]
    return {"num_cpus": float(num_cpus), "num_gpus": gpus_per_actor(num_gpus, resources), "max_restarts": 0}


def resolve_device(choice: str, gpu_ids: Sequence[int | str]) -> str:
    """The torch device an actor uses, given the GPUs Ray assigned to it.

    Args:
        choice: "auto" (CUDA when a GPU is assigned, else CPU), "cpu" or "cuda".
        gpu_ids: `ray.get_gpu_ids()` inside the actor.

    Returns:
        "cuda" or "cpu". Ray restricts CUDA_VISIBLE_DEVICES to the assigned GPUs, so "cuda"
        is always the actor's own GPU.

    Raises:
        ValueError: an unknown choice, or "cuda" without an assigned GPU.

    Example:
        >>> resolve_device("auto", []), resolve_device("auto", [3])
        ('cpu', 'cuda')
    """
    return pick_device(choice, bool(gpu_ids), "Ray assigned this actor no GPU (num_gpus=0)")


def threads_for(cpus: float) -> int:
    """Torch threads for an actor that reserved `cpus` CPUs: one per whole CPU, at least one.

    Example:
        >>> threads_for(0.5), threads_for(4.0)
        (1, 4)
    """
    return max(1, int(cpus))


@ray.remote
class EvaluatorActor:
    """A Ray actor holding one `EvaluatorRunner`; every method delegates to it.

    Args:
        spec: the evaluator spec.
        device: "auto", "cpu" or "cuda" (see `resolve_device`).
        torch_threads: torch intra-op threads; None uses the actor's reserved CPU count.

    Raises:
        ValueError: (when the actor starts) a bad device choice or spec; the actor then dies and
            its calls raise `ray.exceptions.ActorDiedError` naming the cause.
    """

    def __init__(self, spec: EvaluatorSpec, device: DeviceChoice = "auto", torch_threads: int | None = None) -> None:
        context = ray.get_runtime_context()
        cpus = float(context.get_assigned_resources().get("CPU", 1.0))  # type: ignore[no-untyped-call]
        self._gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]
        self._node_id = context.get_node_id()
        self._runner = EvaluatorRunner(
            spec,
            device=resolve_device(device, self._gpu_ids),
            torch_threads=torch_threads if torch_threads is not None else threads_for(cpus),
            node_id=self._node_id,
        )

    def run(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Execute one task payload (`EvaluatorRunner.run`)."""
        return self._runner.run(payload)

    def info(self) -> dict[str, Any]:
        """`EvaluatorRunner.info` plus the Ray node id, the assigned GPU ids, and ``repairs``: what
        this actor found broken in the compression database and rebuilt (for the driver to show)."""
        repairs = list(self._runner.evaluator.db.repairs)
        return {**self._runner.info(), "node_id": self._node_id, "gpu_ids": self._gpu_ids, "repairs": repairs}


class ResourceError(ValueError):
    """The actors asked for do not fit the cluster's resources; the message says how many fit."""


def check_fits(count: int, options: Mapping[str, Any], *, available: Mapping[str, float] | None = None) -> None:
    """Check that `count` actors with `options` fit the resources the cluster has free now.

    Args:
        count: how many actors.
        options: from `actor_options` (its ``num_cpus`` and ``num_gpus`` are counted).
        available: free resources; None asks the running Ray (`ray.available_resources()`).

    Raises:
        ResourceError: one line naming what is needed, what is free, and how many actors fit.

    Example:
        >>> check_fits(8, {"num_cpus": 1.0, "num_gpus": 0.0}, available={"CPU": 2.0})
        Traceback (most recent call last):
        ...
        workers.actor.ResourceError: 8 actors x 1 CPU need 8 CPU, but the cluster has 2 CPU free: 2 actors fit
    """
    free = ray.available_resources() if available is None else available  # type: ignore[no-untyped-call]
    short = []
    fit = count
    for resource, key in (("CPU", "num_cpus"), ("GPU", "num_gpus")):
        each = float(options.get(key) or 0.0)
        have = float(free.get(resource, 0.0))
        if each > 0 and count * each > have + 1e-9:
            short.append(f"{count} actors x {each:g} {resource} need {count * each:g} {resource}, "
                         f"but the cluster has {have:g} {resource} free")  # fmt: skip
            fit = min(fit, int(have / each + 1e-9))
    if short:
        raise ResourceError(f"{'; '.join(short)}: {fit} actor{'' if fit == 1 else 's'} fit")


def wait_ready(actors: Sequence[ActorHandle[Any]], timeout_s: float) -> list[dict[str, Any]]:
    """Every actor's `info` once all are placed and built, logging the slowest time of each
    start-up step (`slowest_start`); on a timeout or a failed start, every one of them is killed
    (a pending actor would otherwise hold its place in Ray's queue).

    Raises:
        TimeoutError: not all were ready within `timeout_s` (the message says how many were).
        ray.exceptions.RayError: an actor failed to start.
    """
    refs: list[Any] = [actor.info.remote() for actor in actors]
    try:
        infos = list(ray.get(refs, timeout=timeout_s))
    except ray.exceptions.GetTimeoutError:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        _kill(actors)
        raise TimeoutError(f"{len(ready)} of {len(actors)} evaluator actors were ready after {timeout_s:g} s") from None
    except ray.exceptions.RayError:
        _kill(actors)
        raise
    for line in slowest_start(infos):  # the workers' own logs are not watched: say it here
        logger.info("%s", line)
    return infos


def slowest_start(infos: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per start-up step (`evaluators.startup`): the slowest worker's time for it.

    Example:
        >>> slowest_start([{"worker": "a", "start": {"loaded model": [2.0, 1.5]}},
        ...                {"worker": "b", "start": {"loaded model": [3.1, 1.2]}}])
        ['start: loaded model in 3.1 s (1.2 CPU-s) on b, the slowest of 2 workers']
    """
    steps = dict.fromkeys(step for info in infos for step in info.get("start", {}))
    lines = []
    for step in steps:
        timed = [info for info in infos if step in info.get("start", {})]
        slowest = max(timed, key=lambda info: info["start"][step][0])
        seconds, cpu = slowest["start"][step]
        slower = f", the slowest of {len(infos)} workers" if len(infos) > 1 else ""
        lines.append(f"{start_line(step, seconds, cpu)} on {slowest['worker']}{slower}")
    return lines


def _kill(actors: Sequence[ActorHandle[Any]]) -> None:
    for actor in actors:
        ray.kill(actor)


def make_actors(
    spec: EvaluatorSpec,
    count: int,
    num_cpus: float = 1.0,
    num_gpus: float | Literal["auto"] = "auto",
    torch_threads: int | None = None,
) -> list[ActorHandle[Any]]:
    """Start `count` evaluator actors on the running Ray cluster.

    They build their evaluators concurrently; calls made before one is ready queue on it. Ray
    places them with the SPREAD strategy: one per node before two on any node, where resources allow.

    Args:
        spec: the evaluator spec every actor builds.
        count: how many actors.
        num_cpus: CPUs per actor.
        num_gpus: GPUs per actor, or "auto" (see `gpus_per_actor`).
        torch_threads: torch threads per actor; None uses `num_cpus`.

    Returns:
        The actor handles.

    Raises:
        ValueError: a negative count or bad resources.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    # SPREAD puts the replicas on different nodes where it can, so a generation's evaluations
    # use the whole cluster instead of filling the first node that has room.
    options = {**actor_options(num_cpus, num_gpus), "scheduling_strategy": "SPREAD"}
    logger.info("starting %d evaluator actors with %s", count, options)
    return [EvaluatorActor.options(**options).remote(spec, "auto", torch_threads) for _ in range(count)]  # type: ignore[attr-defined]
