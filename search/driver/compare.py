"""`pressroom compare`: several methods on one evaluator and one budget of forwarded tokens.

Every method runs as its own search (its own study, named ``NAME-METHOD-sSEED``) on one shared
pool of workers, so every method sees the same model, database and minibatches; seeds vary only
the methods' own randomness, so a method that has none (uniform, OWL, the DP, DASS without
Gumbel noise: `Algorithm.seeded`) runs once and that run stands for every seed (same study).
Each run's incumbent is recorded whenever it changes, and up to `points` incumbents per run are
measured on the held-out split afterwards, which gives the curve "held-out fitness against
forwarded tokens". The table and the figure are stored in a summary study (attribute
`pressroom.compare`, artifacts) and in one MLflow run.

Example:
    >>> rows = compare(spec, ["evopress", "random", "uniform"], budget_tokens=500_000, seeds=3)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from spaces import Fidelity, Space
from workers.runner import task_payload

from ..algorithms import MAX_COUNT, EvoPressConfig, owl_problem
from ..algorithms.base import Algorithm, Candidate, Result
from ..spec.config import Spec
from .run import SearchError, Workers, run_search

logger = logging.getLogger(__name__)

#: What `--methods` accepts, and the registry name each stands for.
METHODS = {
    "evopress": "evopress",
    "evopress-dp": "evopress",  # warm-started from the additive DP's profile
    "evopress-owl": "evopress",  # warm-started from OWL's profile
    "random": "random",
    "random-sh": "random-sh",
    "dass": "dass",
    "uniform": "uniform",
    "owl": "owl",
    "dp": "additive-dp",
    "tpe": "optuna-tpe",
    "cmaes": "optuna-cmaes",
}
COMPARE = "pressroom.compare"
# as many generations as a config allows: the token budget ends the search long before
UNLIMITED_GENERATIONS = MAX_COUNT


def parse_methods(text: str) -> list[str]:
    """``"evopress,random"`` -> the list, checked.

    Raises:
        ValueError: an unknown method (the message lists the allowed ones).
    """
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"--methods: unknown {unknown or 'empty list'}; allowed: {', '.join(METHODS)}")
    return methods


def schedule(spec: Spec) -> EvoPressConfig:
    """EvoPress's configuration in the spec, or the small-CPU preset when the spec names another method."""
    if spec.algorithm.name == "evopress":
        config: EvoPressConfig = spec.algorithm.config()
        return config
    return EvoPressConfig.preset("cpu-small")


def inapplicable(method: str, space: Space) -> str | None:
    """Why `method` cannot search `space` (None: it can); `compare` skips it with this reason."""
    if method == "uniform" and space.uniform() is None:
        return "this space has no uniform profile"
    if method in ("owl", "evopress-owl"):
        return owl_problem(space)
    return None


def method_params(method: str, evo: EvoPressConfig, budget: int) -> dict[str, Any]:
    """Parameters that put `method` on the same evaluator fidelities and the same token budget.

    Single evaluations use EvoPress's last-stage tokens, so every method's values compare; budget
    methods stop at `budget` forwarded tokens; DASS takes as many gradient steps (on the first
    stage's tokens) as the budget pays for, at most its default. ``evopress-dp`` and
    ``evopress-owl`` are EvoPress warm-started from those baselines' profiles; their statistics
    pass counts against the budget. Where a space has no uniform profile (depth, fractional bits)
    EvoPress starts from the best of a few random profiles, each on the last stage's tokens, with
    at most a quarter of the budget.
    """
    last, first = evo.stages[-1][1], evo.stages[0][1]
    if method.startswith("evopress"):
        start = {"evopress": evo.start, "evopress-dp": "dp", "evopress-owl": "owl"}[method]
        budgeted = {"generations": UNLIMITED_GENERATIONS, "budget_tokens": budget, "start": start}
        init = {"init_samples": max(1, min(evo.init_samples, budget // (4 * last))), "init_tokens": last}
        return {**dataclasses.asdict(evo), **budgeted, **init}
    if method in ("random", "tpe", "cmaes"):
        return {"tokens": last, "budget_tokens": budget}
    if method == "random-sh":
        return {"samples": evo.offspring, "stages": evo.stages, "budget_tokens": budget}
    if method == "dass":
        return {"tokens_per_step": first, "final_tokens": last, "steps": max(1, min(200, (budget - last) // first))}
    return {"final_tokens": last}


@dataclass
class Trajectory:
    """A coordinator listener keeping each new incumbent with the tokens asked when it appeared
    (the search's answer from then on), the tokens asked by the last result (`end`), and whether
    the algorithm uses its seed (`seeded`)."""

    points: list[tuple[int, tuple[int, ...]]] = field(default_factory=list)
    end: int = 0
    seeded: bool = True

    def _note(self, algorithm: Algorithm) -> None:
        self.end, self.seeded = algorithm.tokens_asked, algorithm.seeded
        best = algorithm.best
        if best is None:
            return
        levels = tuple(int(v) for v in algorithm.space.to_array(best[0]))
        if not self.points or self.points[-1][1] != levels:
            self.points.append((algorithm.tokens_asked, levels))

    def on_result(self, candidate: Candidate, result: Result, algorithm: Algorithm) -> None:
        self._note(algorithm)  # a skip margin can settle a generation on a first-stage value

    def on_barrier(self, algorithm: Algorithm) -> None:
        self._note(algorithm)

    def on_finish(self, algorithm: Algorithm) -> None:
        self._note(algorithm)

    def close(self) -> None:
        pass

    def sampled(self, count: int) -> list[tuple[int, tuple[int, ...]]]:
        """At most `count` points, spread evenly over the tokens spent (the last always kept)."""
        if len(self.points) <= count:
            return list(self.points)
        end = self.points[-1][0]
        chosen = []
        for k in range(1, count + 1):
            limit = end * k / count
            chosen.append(max((p for p in self.points if p[0] <= limit), key=lambda p: p[0], default=self.points[0]))
        unique = dict.fromkeys(chosen)
        return list(unique)


@dataclass
class Run:
    """One method with one seed."""

    method: str
    seed: int
    study: str
    heldout: float | None
    perplexity: float | None
    seconds: float
    evaluations: int
    tokens: int
    curve: list[tuple[int, float | None]]


def heldout_values(
    workers: Workers, profiles: Sequence[tuple[int, ...]], tokens: int
) -> dict[tuple[int, ...], float | None]:
    """Held-out fitness of each level tuple, evaluated on the pool."""
    fidelity = Fidelity(tokens, (0,), "heldout")
    for index, levels in enumerate(profiles):
        workers.pool.submit(("curve", index), task_payload("evaluate", list(levels), fidelity))
    values: dict[int, float | None] = {}
    while len(values) < len(profiles):
        for outcome in workers.pool.collect(timeout=5.0):
            values[outcome.key[1]] = None if outcome.error else (outcome.value or {}).get("fitness")
    return {levels: values[i] for i, levels in enumerate(profiles)}


def compare(
    spec: Spec,
    methods: Sequence[str],
    *,
    budget_tokens: int,
    seeds: int,
    points: int = 6,
    console: Console | None = None,
    workers: Workers | None = None,
    on_run: Callable[[Run], None] | None = None,
) -> list[Run]:
    """Run every method `seeds` times on one pool at `budget_tokens` forwarded tokens each.

    Args:
        workers: workers to reuse (their model must be the spec's); None starts and stops its own.
        on_run: called with each run as soon as it ends (e.g. to write it down before the next).

    Raises:
        SearchError: a method's search could not run (with the reason).
    """
    evo = schedule(spec)
    if budget_tokens < evo.stages[-1][1]:
        raise SearchError(f"--budget-tokens {budget_tokens} is below one final evaluation ({evo.stages[-1][1]} tokens)")
    runs: list[Run] = []
    base = spec.model_copy(update={"mlflow": spec.mlflow.model_copy(update={"enabled": False})})
    with contextlib.nullcontext(workers) if workers is not None else Workers(spec) as pool:
        for method in methods:
            for k in range(seeds):
                reason = inapplicable(method, pool.space)
                if reason is not None:
                    logger.warning("skipping %s: %s", method, reason)
                    break
                study = f"{spec.study_name}-{method}-s{k}"
                algorithm = spec.algorithm.model_copy(
                    update={
                        "name": METHODS[method],
                        "preset": None,
                        "params": method_params(method, evo, budget_tokens),
                    }
                )
                run_spec = base.model_copy(update={"algorithm": algorithm, "study": study, "seed": spec.seed + k})
                trajectory = Trajectory()
                start = time.monotonic()
                outcome = run_search(run_spec, console=console, listeners=[trajectory], workers=pool)
                seconds = time.monotonic() - start
                sampled = trajectory.sampled(points)
                values = heldout_values(pool, [levels for _, levels in sampled], spec.data.heldout_tokens)
                curve = [(tokens, values[levels]) for tokens, levels in sampled]
                if curve and trajectory.end > curve[-1][0]:  # the last incumbent holds to the end
                    curve.append((trajectory.end, curve[-1][1]))
                run = Run(
                    method, k, study, outcome.heldout["best"]["fitness"], outcome.heldout["best"]["perplexity"],
                    seconds, outcome.evaluations, trajectory.end, curve,
                )  # fmt: skip
                # a method that does not use its seed would repeat this run exactly: it stands for the rest
                done = [run] if trajectory.seeded else [dataclasses.replace(run, seed=s) for s in range(k, seeds)]
                for each in done:
                    runs.append(each)
                    if on_run is not None:
                        on_run(each)
                if not trajectory.seeded:
                    logger.info("%s does not use its seed: one run stands for seeds %d-%d", method, k, seeds - 1)
                    break
    return runs


def summarize(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per method: held-out fitness mean and spread over seeds, wall time, evaluations."""
    rows = []
    for method in dict.fromkeys(run.method for run in runs):
        mine = [run for run in runs if run.method == method]
        values = [run.heldout for run in mine if run.heldout is not None]
        rows.append(
            {
                "method": method,
                "seeds": len(mine),
                "heldout_mean": statistics.fmean(values) if values else None,
                "heldout_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "heldout_min": min(values, default=None),
                "perplexity_mean": _mean([run.perplexity for run in mine]),
                "seconds": statistics.fmean(run.seconds for run in mine),
                "evaluations": statistics.fmean(run.evaluations for run in mine),
                "tokens": statistics.fmean(run.tokens for run in mine),
            }
        )
    return rows


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def record(spec: Spec, runs: Sequence[Run], budget_tokens: int, figure: Path) -> Path:
    """Draw the figure to `figure` (a PNG), and store it with the table and the runs in a
    summary study and an MLflow run; returns the figure's path."""
    import optuna

    from ..results.comparison import curve_figure
    from ..results.dashboard import ReplacingArtifactStore
    from ..results.figures import save_png
    from ..storage.study import connect

    rows = summarize(runs)
    name = f"{spec.study_name}-compare"
    curves = {
        method: [run.curve for run in runs if run.method == method] for method in dict.fromkeys(r.method for r in runs)
    }
    figure.parent.mkdir(parents=True, exist_ok=True)
    save_png(curve_figure(curves, f"{name}: {budget_tokens:,} tokens per run"), figure)
    storage = connect(spec.storage_url())
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    study.set_user_attr(
        COMPARE, {"budget_tokens": budget_tokens, "rows": rows, "runs": [dataclasses.asdict(r) for r in runs]}
    )
    artifacts = spec.artifacts_dir()
    artifacts.mkdir(parents=True, exist_ok=True)
    optuna.artifacts.upload_artifact(
        artifact_store=ReplacingArtifactStore(str(artifacts)), file_path=str(figure), study_or_trial=study
    )
    if spec.mlflow.enabled:
        from mlflow import MlflowClient

        from ..tracking.tracker import experiment_id

        client = MlflowClient(tracking_uri=spec.tracking_uri())
        run = client.create_run(experiment_id(client, spec.mlflow.experiment), run_name=name)
        for row in rows:
            for key in ("heldout_mean", "heldout_std", "seconds", "evaluations", "tokens"):
                if row[key] is not None:
                    client.log_metric(run.info.run_id, f"{row['method']}.{key}", float(row[key]))
        client.log_param(run.info.run_id, "budget_tokens", budget_tokens)
        client.log_artifact(run.info.run_id, str(figure))
        client.set_terminated(run.info.run_id)
    return figure


__all__ = ["METHODS", "Run", "compare", "method_params", "parse_methods", "record", "summarize"]
