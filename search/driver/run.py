"""`run_search`: a whole search from a spec: storage, Ray workers, algorithm, coordinator, report.

Order matters for bad input: the storage is reached and the study's spec checked first (fast,
and nothing is written if the study belongs to another spec), then the MLflow server answers a
check, then Ray and the workers, and only then are the MLflow run and the study created; so an
unknown Ray address leaves no study and no MLflow run behind.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from evaluators.startup import StartTimer
from spaces import Fidelity, Profile, Space
from workers.routing import PrefixDistance
from workers.runner import task_payload

from ..algorithms.base import Algorithm
from ..algorithms.constraint import Constraint, ConstraintError
from ..cluster.raycluster import loopback_only, reachable, stop_on_sigterm, use_token_auth
from ..results.best import layers_from_records, record_space
from ..results.dashboard import attach_figures
from ..secrets import redact_text, url_secrets
from ..spec.config import Spec, algorithm_registry
from ..storage.lease import Lease
from ..storage.study import BEST, HELDOUT, METRIC, SPACE, SPEC, SearchStudy, StorageError, check_fingerprint, connect
from ..storage.writer import StorageWriteError, TrialWriter
from ..tracking.tracker import MlflowTracker, TrackingError
from .coordinator import Coordinator, Listener
from .latency_search import LATENCY, LatencyError, LatencyModel
from .progress import LiveView
from .warm import check_start_file, prefer_start, start_file_read

logger = logging.getLogger(__name__)


class SearchError(RuntimeError):
    """A search could not start or finish; the message is for the user and holds no secret."""


@dataclass
class SearchOutcome:
    """What a finished search found."""

    study: str
    best: Profile
    best_fitness: float
    heldout: dict[str, dict[str, Any]]
    evaluations: int
    replayed: int


def space_from_info(spec: Spec, infos: Sequence[dict[str, Any]]) -> Space:
    """The search space the workers hold; all workers must hold the same model.

    Raises:
        SearchError: two workers loaded different models.
    """
    fingerprints = {info["model"] for info in infos}
    if len(fingerprints) != 1:
        raise SearchError(f"workers loaded different models (fingerprints {sorted(fingerprints)}); check their files")
    layers = layers_from_records(infos[0]["layers"])
    info = infos[0]["space"]
    return Space(layers, spec.compression.level_scheme(), granularity=info["granularity"], model=infos[0]["model"])


def start_ray(address: str | None) -> bool:
    """Connect to Ray (or start a local one); returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if address and not reachable(address):
        raise SearchError(f"cannot connect to Ray at {address}: nothing answers there (is the head node up?)")
    use_token_auth()  # a new local Ray, too, requires the token: other users of the machine cannot connect
    try:
        with contextlib.nullcontext() if address else loopback_only():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a new local cluster"
        raise SearchError(f"cannot connect to Ray at {where}: {exc}") from None
    stop_on_sigterm()
    return True


class Workers:
    """A pool of evaluators for one model, reusable by several searches: Ray actors, or with
    ``workers.backend: local`` one evaluator in this process (Ray is then never imported).

    Args:
        spec: the spec whose model, compression, data and workers to use.

    Raises:
        SearchError: Ray cannot be reached, or the workers cannot start.
    """

    def __init__(self, spec: Spec) -> None:
        self._started_ray = False
        self.pool: Any = None
        if spec.workers.backend == "local":
            self._start_local(spec)
            return
        import ray

        from workers import ResourceError, WorkerPool, actor_options, check_fits, make_actors, wait_ready

        timer = StartTimer(logger)
        with timer.step("started Ray"):
            self._started_ray = start_ray(spec.workers.ray_address)
        w = spec.workers

        def start(count: int) -> list[Any]:
            return make_actors(spec.evaluator_spec(), count, w.cpus_per_worker, w.gpus_per_worker, w.torch_threads)

        try:
            try:
                check_fits(w.count, actor_options(w.cpus_per_worker, w.gpus_per_worker))
            except ResourceError as exc:
                if self._started_ray:  # pressroom's own local Ray: nothing will add resources
                    raise SearchError(f"workers.count {w.count} does not fit: {exc}") from None
                logger.warning("%s; waiting up to workers.start_timeout_s for the cluster to scale up", exc)
            with timer.step(f"started {w.count} worker{'' if w.count == 1 else 's'}"):
                actors = start(w.count)
                try:
                    infos = wait_ready(actors, w.start_timeout_s)
                except TimeoutError as exc:
                    raise SearchError(
                        f"the workers did not start: {exc} (workers.start_timeout_s); the cluster lacks resources "
                        "for them, or loading the model takes longer"
                    ) from None
                except ray.exceptions.RayError as exc:
                    raise SearchError(f"the workers could not start: {_cause(exc)}") from None
            for info in infos:  # a worker's own log is not watched: say it here
                for repair in info.get("repairs", []):
                    logger.warning(
                        "worker %s on %s repaired its compression database: %s",
                        info["worker"],
                        info["hostname"],
                        repair,
                    )
            self.space = space_from_info(spec, infos)
            self.pool = WorkerPool(
                actors,
                actor_factory=lambda: start(1)[0],
                timeout_s=w.timeout_s,
                distance=PrefixDistance([unit.block for unit in self.space.units]),
                max_in_flight_per_actor=w.in_flight,
            )
        except BaseException:
            self.close()
            raise

    def _start_local(self, spec: Spec) -> None:
        from workers import EvaluatorRunner, LocalPool, local_device

        try:
            device = local_device(spec.workers.device)
            with StartTimer(logger).step(f"started the local worker on {device}"):
                pool = LocalPool(
                    EvaluatorRunner(spec.evaluator_spec(), device=device, torch_threads=spec.workers.torch_threads)
                )
        except ValueError as exc:
            raise SearchError(f"the local worker could not start: {exc}") from None
        self.space = space_from_info(spec, [pool.workers_info()[0]["info"]])
        self.pool = pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_search(
    spec: Spec,
    console: Console | None = None,
    listeners: Sequence[Listener] = (),
    workers: Workers | None = None,
) -> SearchOutcome:
    """Run (or resume) the search a spec describes, to the end.

    Args:
        spec: the search.
        console: where the live view draws.
        listeners: more coordinator listeners.
        workers: workers to reuse (their model must be the spec's); None starts and stops its own.

    Raises:
        SearchError: bad input discovered while starting (storage, Ray, MLflow, workers), with the reason.
        KeyboardInterrupt: after in-flight trials were marked FAIL and writes finished.
    """
    began = time.perf_counter()
    console = console or Console(stderr=True)
    url = spec.storage_url()
    secrets = url_secrets(url)
    try:
        storage = connect(url)
        exists = check_fingerprint(storage, spec.study_name, spec.fingerprint())
    except StorageError as exc:
        raise SearchError(str(exc)) from None
    try:  # a missing start profile file, before the workers load models
        check_start_file(spec.algorithm.config())
    except ValueError as exc:
        raise SearchError(f"algorithm.params.start: {exc}") from None

    own = None
    writer = None
    lease = None  # one coordinator per study: taken before anything else, at once if the study exists
    observers: list[Any] = []  # the MLflow run and the dashboard's figures; closed at the end
    try:
        if exists:
            lease = Lease.take(storage, spec.study_name)
        if spec.mlflow.enabled:  # before the workers load models: a wrong tracking URI fails fast
            MlflowTracker.check(spec)
        if workers is None:
            workers = own = Workers(spec)
        if spec.mlflow.enabled:  # only once Ray and the storage answered: no orphan run
            observers.append(MlflowTracker.start(spec))
        pool, space = workers.pool, workers.space
        attrs = {SPEC: spec.public_dict(), SPACE: record_space(space)}
        latency = None
        if spec.latency is not None:  # one worker times the layers before the search (or the study has it)
            latency = LatencyModel.prepare(spec, storage, pool, space)
            attrs[LATENCY] = latency.record()
        algorithm = build_algorithm(spec, space, None if latency is None else latency.constraint)
        study = SearchStudy.open(
            storage,
            spec.study_name,
            fingerprint=spec.fingerprint(),
            attrs=attrs,
            metrics=(METRIC,) if latency is None else latency.metrics,
        )
        lease = lease or Lease.take(storage, spec.study_name)
        writer = TrialWriter(study, guard=lease.check)
        objectives = None if latency is None else latency.objectives
        coordinator = Coordinator(algorithm, space, pool, study, writer, objectives=objectives, began=began)
        view = LiveView(console, coordinator.counters, f"pressroom: {spec.study_name}")
        observers.append(attach_figures(spec, study.study, space))
        coordinator.listeners = [view, *observers, *listeners]
        if coordinator.restore():
            console.print(f"resuming study {spec.study_name}", markup=False, highlight=False)
        try:
            coordinator.run()
        finally:
            view.close()
        best = algorithm.best
        if best is None:
            raise SearchError(f"{algorithm.name} finished without a single successful evaluation")
        profile, fitness = best
        measured = None
        if latency is not None:  # the returned profile's measured latency must meet the constraint
            profile, fitness, measured = latency.finish(pool, study, writer, best, algorithm.name)
            console.print(_latency_line(measured), markup=False, highlight=False)
        # a warm start competes on held-out data too (not after a latency measurement chose)
        start = algorithm.start if measured is None else None
        heldout = heldout_report(pool, space, profile, spec.data.heldout_tokens, start=start)
        if measured is not None:
            heldout["best"]["latency"] = measured["chosen"]
        if prefer_start(heldout, start) is not None:
            assert start is not None
            profile, fitness = start
            levels = [int(v) for v in space.to_array(profile)]
            writer.study_attr(BEST, {"levels": levels, "fitness": fitness, "algorithm": algorithm.name})
        writer.study_attr(HELDOUT, heldout)  # through the writer, retried while the database is away
        for observer in observers:
            if isinstance(observer, MlflowTracker):
                observer.log_heldout(heldout)
        if not writer.close(timeout=120):
            raise SearchError("the storage took no writes for 120 s; rerun the same command once it is back")
        return SearchOutcome(
            spec.study_name, profile, fitness, heldout, coordinator.counters.evaluations, coordinator.counters.replayed
        )
    except LatencyError as exc:
        raise SearchError(str(exc)) from None
    except StorageError as exc:
        raise SearchError(redact_text(str(exc), secrets)) from None
    except TrackingError as exc:
        raise SearchError(str(exc)) from None
    finally:
        for observer in observers:
            observer.close()
        if writer is not None and not writer.closed:
            with contextlib.suppress(StorageWriteError):  # the body raised it, or is raising another error
                if not writer.close(timeout=120):
                    logger.error("some trial writes could not be finished; the checkpoint lets a rerun redo them")
        if lease is not None:
            lease.release()
        if own is not None:
            own.close()


def build_algorithm(spec: Spec, space: Space, constraint: Constraint | None = None) -> Algorithm:
    """The spec's algorithm on `space`, honouring `constraint` when there is one.

    Raises:
        SearchError: a constraint no profile (or almost none) meets.
    """
    cls, _ = algorithm_registry()[spec.algorithm.name]
    try:
        args = (space, start_file_read(spec.algorithm.config(), space), spec.seed)
        algorithm: Algorithm = cls(*args) if constraint is None else cls(*args, constraint)
    except ConstraintError as exc:
        raise SearchError(f"latency.constraint: {exc}") from None
    except ValueError as exc:  # a start that does not apply to this space (EvoPress)
        raise SearchError(f"algorithm.params.start: {exc}") from None
    return algorithm


def _latency_line(measured: dict[str, Any]) -> str:
    chosen, tried = measured["chosen"], len(measured["tried"])
    limit = measured["constraint"]
    verdict = ""
    if limit is not None:
        how = "" if tried == 1 else f" by fallback {tried - 1}"
        verdict = f" (constraint {limit:g}: met{how})"
    return (
        f"latency of the returned profile: estimated {chosen['estimated']:.3f}, measured {chosen['measured']:.3f} "
        f"of the dense model's {1000 * chosen['dense_seconds']:.1f} ms on {measured['tokens']} tokens{verdict}"
    )


def heldout_report(
    pool: Any, space: Space, best: Profile, tokens: int, start: tuple[Profile, float] | None = None
) -> dict[str, dict[str, Any]]:
    """Held-out fitness (and perplexity) of the uniform profile, the warm start (if any) and the
    best one; a profile that is another's too is evaluated once."""
    profiles = {"uniform": space.uniform(), "start": None if start is None else start[0], "best": best}
    named = {name: profile for name, profile in profiles.items() if profile is not None}
    fidelity = Fidelity(tokens, (0,), "heldout")
    first: dict[tuple[int, ...], str] = {}  # levels -> the first name with them
    for name, profile in named.items():
        levels = tuple(int(v) for v in space.to_array(profile))
        if first.setdefault(levels, name) == name:
            pool.submit(("heldout", name), task_payload("evaluate", list(levels), fidelity))
    report: dict[str, dict[str, Any]] = {}
    while len(report) < len(first):  # arrival order varies; the report keeps `named`'s order
        for outcome in pool.collect(timeout=5.0):
            _, name = outcome.key
            value = outcome.value or {}
            report[name] = {
                "fitness": value.get("fitness"),
                "perplexity": value.get("perplexity"),
                "average": space.average(named[name]),
                "error": outcome.error,
            }
    for name, profile in named.items():
        report.setdefault(name, dict(report[first[tuple(int(v) for v in space.to_array(profile))]]))
    return {name: report[name] for name in named}


def _cause(exc: BaseException) -> str:
    text = str(exc)
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors[-1] if errors else lines[-1] if lines else repr(exc)).strip()[:500]


__all__ = [
    "SearchError",
    "SearchOutcome",
    "Workers",
    "build_algorithm",
    "heldout_report",
    "run_search",
]
