"""Coordinator and storage overhead, and speedup with 1, 2, 4 and 8 workers.

Workers are simulated Ray actors whose evaluation sleeps a fixed time (50 ms by default) and
returns a synthetic fitness, so everything else is real: the algorithm, the coordinator loop,
the Ray pool with routing, the background trial writer and PostgreSQL, on 224-layer profiles.
Ideal = evaluations x evaluation time / workers, with the evaluation time the actors measured
(a 50 ms sleep takes about 50.5 ms on this busy machine). Bound = the shortest time any coordinator
could take given the algorithm's barriers: each stretch between barriers of k evaluations takes
ceil(k / workers) evaluation times (for random search, which has none, bound = ideal; an EvoPress
generation's stages of 64, 8 and 3 candidates keep 8 workers waiting 0.6 evaluations per
generation). Overhead = wall time over the bound, with the final flush of the trial writer
included: what the coordinator, the storage and Ray add. Each row is the median of `--repeats`
runs by overhead. Speedup = throughput with N workers over throughput with 1. Driver CPU = CPU
time of this process (coordinator, trial writer, Ray driver) per evaluation.

    .venv/bin/python benchmarks/coordinator.py [--eval-ms 50] [--workers 1 2 4 8] [--in-flight 2] [--repeats 3]
        [--smoke]

`--smoke` is the smallest setting (5 ms evaluations, 1 and 2 workers, 10 evaluations per worker,
one run per row), for CI: same path, same table.
"""

from __future__ import annotations

import argparse
import math
import os
import time
import uuid
from typing import Any

import numpy as np
import psycopg
import ray

from search.algorithms import ALGORITHMS
from search.driver.coordinator import Coordinator
from search.storage.study import SearchStudy, connect
from search.storage.writer import TrialWriter
from spaces import LayerInfo, Space, SparsityScheme
from workers import WorkerPool
from workers.runner import switch_distance

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@ray.remote(num_cpus=0.1)
class SimulatedEvaluator:
    """Sleeps like an evaluation of fixed cost; fitness = a fixed linear function of the levels."""

    def __init__(self, seconds: float, weights: list[float]) -> None:
        self.seconds = seconds
        self.weights = np.asarray(weights)

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        time.sleep(self.seconds)
        fitness = float(self.weights @ np.asarray(payload["levels"])) + 100.0
        tokens = int(payload["fidelity"]["tokens"])
        seconds = time.perf_counter() - start  # a sleep overruns a little on a busy machine
        return {"fitness": fitness, "tokens": tokens, "seconds": seconds, "switched": 0,
                "perplexity": None, "data": {}, "worker": f"sim:{os.getpid()}"}  # fmt: skip

    def info(self) -> dict[str, Any]:
        return {"worker": f"sim:{os.getpid()}"}


class Barriers:
    """A coordinator listener that counts the evaluations between barriers."""

    def __init__(self) -> None:
        self.stretches = [0]

    def on_result(self, candidate: Any, result: Any, algorithm: Any) -> None:
        self.stretches[-1] += 1

    def on_barrier(self, algorithm: Any) -> None:
        self.stretches.append(0)

    def on_finish(self, algorithm: Any) -> None:
        pass

    def bound(self, workers: int, seconds: float) -> float:
        return sum(math.ceil(k / workers) for k in self.stretches) * seconds


def llama_like_space(layers: int) -> Space:
    shapes = [(4096, 4096), (1024, 4096), (1024, 4096), (4096, 4096), (14336, 4096), (14336, 4096), (4096, 14336)]
    infos = [
        LayerInfo(f"model.layers.{i // 7}.proj{i % 7}", shapes[i % 7], shapes[i % 7][0] * shapes[i % 7][1], i // 7)
        for i in range(layers)
    ]
    return Space(infos, SparsityScheme(0.7), model="simulated")


def run(
    url: str, space: Space, workers: int, seconds: float, algorithm: str, evaluations: int, in_flight: int
) -> dict[str, float]:
    cls, config_cls = ALGORITHMS[algorithm]
    if algorithm == "random":
        config = config_cls(tokens=2048, budget_tokens=2048 * evaluations)
    else:
        config = config_cls(
            generations=max(1, evaluations // 74), offspring=64, stages=((8, 256), (2, 1024), (1, 2048))
        )
    algo = cls(space, config, 0)
    weights = np.random.default_rng(1).normal(size=len(space)).tolist()
    actors = [SimulatedEvaluator.remote(seconds, weights) for _ in range(workers)]
    ray.get([a.info.remote() for a in actors])
    pool = WorkerPool(actors, distance=switch_distance, max_in_flight_per_actor=in_flight)
    storage = connect(url)
    study = SearchStudy.open(storage, f"bench-{workers}-{uuid.uuid4().hex[:6]}", fingerprint="bench", attrs={})
    writer = TrialWriter(study)
    barriers = Barriers()
    coordinator = Coordinator(algo, space, pool, study, writer, listeners=[barriers])
    start, cpu = time.perf_counter(), time.process_time()
    coordinator.run()
    writer.close()
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu
    pool.shutdown()
    done = coordinator.counters.evaluations
    mean = coordinator.counters.eval_seconds / done  # the evaluations' own time, as the actors measured it
    return {
        "evaluations": done, "seconds": total, "ideal": done * mean / workers,
        "bound": barriers.bound(workers, mean), "writes": writer.writes, "cpu": cpu,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--layers", type=int, default=224)
    parser.add_argument("--per-worker", type=int, default=200, help="evaluations per worker and run")
    parser.add_argument("--in-flight", type=int, default=1, help="tasks sent to one actor at a time")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row; the row shows the median run")
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.eval_ms, args.workers, args.per_worker, args.repeats = 5.0, [1, 2], 10, 1
    seconds = args.eval_ms / 1e3
    space = llama_like_space(args.layers)
    database = f"pressroom_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        print(
            f"{args.layers}-layer profiles, {args.eval_ms:.0f} ms evaluations, {args.in_flight} task(s) in flight "
            f"per actor, PostgreSQL, {os.cpu_count()} CPUs"
        )
        for algorithm in ("random", "evopress"):
            print(f"\n{algorithm}:")
            print(
                f"{'workers':>8} {'evals':>6} {'wall s':>8} {'ideal s':>8} {'bound s':>8} {'overhead':>9} "
                f"{'speedup':>8} {'writes':>7} {'driver CPU ms/eval':>19}"
            )
            base = None
            for n in args.workers:
                runs = [run(url, space, n, seconds, algorithm, args.per_worker * n, args.in_flight)
                        for _ in range(args.repeats)]  # fmt: skip
                r = sorted(runs, key=lambda x: x["seconds"] / x["bound"])[len(runs) // 2]
                throughput = r["evaluations"] / r["seconds"]
                base = base or throughput
                overhead = r["seconds"] / r["bound"] - 1
                cpu_ms = 1e3 * r["cpu"] / r["evaluations"]
                print(f"{n:>8} {r['evaluations']:>6.0f} {r['seconds']:>8.2f} {r['ideal']:>8.2f} {r['bound']:>8.2f} "
                      f"{overhead:>8.1%} {throughput / base:>8.2f} {r['writes']:>7.0f} {cpu_ms:>19.1f}")  # fmt: skip
    finally:
        ray.shutdown()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
            conn.execute(f'DROP DATABASE "{database}"')


if __name__ == "__main__":
    main()
