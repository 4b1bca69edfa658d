"""Building a compression database: in one process against 1 and 2 Ray workers (`build-db --workers`).

Loads the model once, then builds the SparseGPT database three times into an empty folder: in
this process with one torch thread (what each Ray task uses), and with `workers.build_executor`
at 1 and 2 workers on a local Ray (started here, all the machine's CPUs). Each build gathers
the statistics in the driver, as `pressroom build-db` does, so only the layers' compression is
spread. Prints each build's wall seconds, the speedup over the build in one process, and whether
the three manifests (every file's size and SHA-256) are the same bytes.

    .venv/bin/python benchmarks/db_build.py [--model pressroom:tiny-llama] [--smoke]

`--smoke` is the smallest setting (the tiny Llama, 2 levels per layer, 1024 statistics tokens
against 4096), for CI: same path, same table. The machine needs 2 CPUs for Ray to run 2 workers at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ray
import torch

from evaluators import Evaluator, EvaluatorSpec
from evaluators.building import Executor, in_process
from search.driver.run import start_ray
from workers import build_executor


def timed_build(evaluator: Evaluator, executor: Executor) -> tuple[float, bytes]:
    """Wall seconds of building the database from nothing, and its manifest's bytes."""
    shutil.rmtree(evaluator.db.root)
    start = time.perf_counter()
    db = evaluator.open_database(executor=executor)
    return time.perf_counter() - start, (db.root / "manifest.json").read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pressroom:tiny-llama")
    parser.add_argument("--smoke", action="store_true", help="The smallest setting (tiny Llama, 2 levels).")
    args = parser.parse_args()
    model = "pressroom:tiny-llama" if args.smoke else args.model
    logging.basicConfig(level=logging.WARNING)
    compression = {"target": 0.5, "compressor": "sparsegpt", **({"levels": {"max_levels": 2}} if args.smoke else {})}
    torch.set_num_threads(1)  # the build in one process computes as each Ray task does
    started = start_ray(None)
    try:
        with tempfile.TemporaryDirectory(prefix="pressroom-db-build-") as cache:
            spec = EvaluatorSpec.model_validate(
                {
                    "model": {"name": model},
                    "compression": compression,
                    "data": {"seq_len": 64, "calibration_tokens": 4096, "heldout_tokens": 1024,
                             "stats_tokens": 1024 if args.smoke else 4096},
                    "cache_dir": cache,
                }
            )  # fmt: skip
            evaluator = Evaluator(spec)  # loads the model and builds once (warms the page cache)
            size = sum(path.stat().st_size for path in evaluator.db.root.glob("*.safetensors"))
            rows = [("in process (1 thread)", in_process), ("Ray, 1 worker", build_executor(1))]
            rows.append(("Ray, 2 workers", build_executor(2)))
            results = [(label, *timed_build(evaluator, executor)) for label, executor in rows]
    finally:
        if started:
            ray.shutdown()
    layers, levels = len(evaluator.inventory), max(map(len, evaluator.space.layer_choices().values()))
    print(f"database: {model}, SparseGPT, {layers} layers, up to {levels} levels, {size / 2**20:.1f} MiB")
    print(f"{'':24} {'wall s':>8} {'speedup':>8}")
    for label, seconds, _ in results:
        print(f"{label:24} {seconds:8.2f} {results[0][1] / seconds:7.2f}x")
    same = len({manifest for _, _, manifest in results}) == 1
    print(f"same manifest (every file's size and SHA-256): {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
