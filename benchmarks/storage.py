"""How to store a 224-layer profile in an Optuna trial: as 224 parameters, or one JSON attribute.

Creates trials both ways through Optuna's storage API on PostgreSQL and SQLite and reports the
time per trial, and the time to read all trials back (what `pressroom status`, `best` and the
dashboard pay).

    .venv/bin/python benchmarks/storage.py [--trials 20] [--layers 224] [--smoke]

`--smoke` is the smallest setting (2 trials each way), for CI: same path, same table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid

import optuna
import psycopg
from optuna.distributions import IntDistribution
from optuna.storages import RDBStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def measure(url: str, layers: int, trials: int) -> dict[str, float]:
    storage = RDBStorage(url)
    study = storage.create_new_study([StudyDirection.MINIMIZE], f"bench-{uuid.uuid4().hex[:8]}")
    names = [f"model.layers.{i // 7}.proj{i % 7}" for i in range(layers)]
    distributions = {name: IntDistribution(-8, 8) for name in names}
    levels = {name: (i % 17) - 8 for i, name in enumerate(names)}
    out = {}
    for label, template in (
        ("params", lambda: create_trial(state=TrialState.RUNNING, params=levels, distributions=distributions)),
        (
            "json attribute",
            lambda: create_trial(state=TrialState.RUNNING, user_attrs={"levels": list(levels.values())}),
        ),
    ):
        times = []
        for _ in range(trials):
            start = time.perf_counter()
            storage.create_new_trial(study, template_trial=template())
            times.append(time.perf_counter() - start)
        out[f"create ({label})"] = statistics.median(times)
    start = time.perf_counter()
    storage.get_all_trials(study, deepcopy=False)
    out[f"read all {2 * trials} trials"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--layers", type=int, default=224)
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.trials = 2
    database = f"pressroom_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory() as folder:
            results = {
                "PostgreSQL": measure(
                    f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}", args.layers, args.trials
                ),
                "SQLite": measure(f"sqlite:///{folder}/bench.db", args.layers, args.trials),
            }
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'")
            conn.execute(f'DROP DATABASE "{database}"')
    print(f"{args.layers} layers, {args.trials} trials each (median time per trial)")
    print(json.dumps({k: {m: f"{v * 1e3:.1f} ms" for m, v in r.items()} for k, r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
