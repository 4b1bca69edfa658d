"""Opening a compression database: the CPU a worker start spends on it, against a full hash.

Builds the database once (in a temporary cache), then opens it `--opens` times as a worker does
(`Evaluator.open_database`: the manifest, each file's existence and size) and hashes every file
`--opens` times as `pressroom verify-db` does (`CompressionDatabase.verify`), which is what every
open did before: it re-hashed each file against the manifest, under an exclusive lock. Prints
the CPU seconds of each (the process's, `time.process_time`) and the hashing rate, from which
the hash of a large database follows.

    .venv/bin/python benchmarks/db_open.py [--model pressroom:minilm] [--opens 20] [--smoke]

On all-MiniLM-L6-v2 the database (RTN, every bitwidth level) is about 200 MiB. `--smoke` is the
smallest setting (the tiny Llama's 3.5 MiB database, 2 opens), for CI: same path, same table.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluators import Evaluator, EvaluatorSpec


def cpu_per_call(call: object, times: int) -> float:
    """The mean CPU seconds of `call()` over `times` calls."""
    start = time.process_time()
    for _ in range(times):
        call()  # type: ignore[operator]
    return (time.process_time() - start) / times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pressroom:minilm")
    parser.add_argument("--opens", type=int, default=20, help="How many opens and full hashes to average.")
    parser.add_argument("--smoke", action="store_true", help="The smallest setting (tiny Llama, 2 opens).")
    args = parser.parse_args()
    model, opens = ("pressroom:tiny-llama", 2) if args.smoke else (args.model, args.opens)
    # the group size must divide every wider layer's input width: the tiny Llama's MLP is 176 wide
    levels = {"group_size": 16} if args.smoke else {}
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="pressroom-db-open-") as cache:
        spec = EvaluatorSpec.model_validate(
            {
                "model": {"name": model},
                "compression": {"scheme": "bitwidth", "target": 4, "compressor": "rtn", "levels": levels},
                "data": {"seq_len": 64, "calibration_tokens": 4096, "heldout_tokens": 1024, "stats_tokens": 1024},
                "cache_dir": cache,
            }
        )
        evaluator = Evaluator(spec)  # builds the database
        db = evaluator.db
        files = sorted(db.root.glob("*.safetensors"))
        size = sum(path.stat().st_size for path in files)
        evaluator.db.verify()  # the files are in the page cache for both measurements
        opened = cpu_per_call(evaluator.open_database, opens)
        hashed = cpu_per_call(db.verify, opens)
    rate = size / hashed if hashed > 0 else float("inf")
    print(f"database: {model}, RTN, {len(files)} files, {size / 2**20:.1f} MiB; mean of {opens} calls")
    print(f"{'':42} {'CPU ms':>10}")
    print(f"{'open (manifest, sizes)':42} {1000 * opened:10.2f}")
    print(f"{'full hash (verify-db; every open before)':42} {1000 * hashed:10.2f}")
    print(f"hashing rate: {rate / 2**30:.2f} GiB per CPU-s, so 100 GB costs {100e9 / rate:.0f} CPU-s per full hash")


if __name__ == "__main__":
    main()
