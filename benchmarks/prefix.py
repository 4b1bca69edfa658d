"""Prefix reuse: forwarded work and wall time per EvoPress generation, at identical fitness.

Runs the same EvoPress generations three times through one plain `Evaluator`: with prefix reuse
off (every candidate forwards every block, as the reference does), on with candidates in the
order the algorithm asks them, and on with each next candidate chosen as the worker pool routes
(the one whose first changed block is deepest, `workers.routing.PrefixDistance`). Fitness values
must be equal across the three runs; the table shows the share of block passes computed and the
seconds per generation.

    .venv/bin/python benchmarks/prefix.py [--model pressroom:minilm] [--generations 5] [--smoke]

`--smoke` is the smallest setting (one generation of 8 offspring on 256 tokens, the best 2 and
the parent on 512; 4,096 calibration tokens), for CI: same path, same table.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluators import Evaluator, EvaluatorSpec
from search.algorithms import EvoPress, EvoPressConfig
from search.algorithms.base import Result
from workers.routing import PrefixDistance


def generations(evaluator: Evaluator, config: EvoPressConfig, routed: bool) -> tuple[dict[int, float], float, float]:
    """Fitness per candidate id, seconds per generation, and the share of block passes run."""
    space = evaluator.space
    algorithm = EvoPress(space, config, seed=0)
    distance = PrefixDistance([unit.block for unit in space.units])
    held = space.to_array(space.uniform())
    values: dict[int, float] = {}
    reused, start = [], time.perf_counter()
    while not algorithm.finished:
        pending = algorithm.ask(1000)
        results = []
        while pending:
            pick = min(pending, key=lambda c: distance(held, space.to_array(c.profile))) if routed else pending[0]
            pending.remove(pick)
            outcome = evaluator.evaluate(pick.profile, pick.fidelity)
            held = space.to_array(pick.profile)
            values[pick.id] = outcome.fitness
            reused.append(outcome.reused)
            results.append(Result(pick.id, outcome.fitness, tokens=outcome.tokens, seconds=outcome.seconds))
        algorithm.tell(results)
    return values, (time.perf_counter() - start) / config.generations, 1.0 - float(np.mean(reused))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pressroom:minilm")
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        config = EvoPressConfig(generations=1, offspring=8, stages=((2, 256), (1, 512)))
    else:
        config = EvoPressConfig(generations=args.generations, offspring=16, stages=((4, 512), (1, 2048)))
    torch.set_num_threads(args.threads)
    seq_len = 128 if "minilm" in args.model or "bert" in args.model else 64
    sections = {
        "model": {"name": args.model},
        "compression": {"target": 0.6, "compressor": "wanda", "levels": {"max_levels": 4}},
        "data": {
            "seq_len": seq_len,
            "calibration_tokens": 4096 if args.smoke else 32768,
            "heldout_tokens": 1024,
            "stats_tokens": 2048,
        },
    }
    runs = {}
    for label, cache_mb, routed in (("off", 0, False), ("on, ask order", 1024, False), ("on, routed", 1024, True)):
        data = {**sections["data"], "prefix_cache_mb": cache_mb}
        evaluator = Evaluator(EvaluatorSpec.model_validate({**sections, "data": data}))
        runs[label] = generations(evaluator, config, routed)
    reference = runs["off"][0]
    (keep, first), (_, last) = config.stages
    print(
        f"{args.model}: {config.generations} EvoPress generation(s) ({config.offspring} offspring @ {first:,} -> "
        f"{keep} + parent @ {last:,} tokens)"
    )
    print(f"{'prefix reuse':<16} {'s / generation':>15} {'blocks run':>11} {'same fitness':>13}")
    for label, (values, seconds, share) in runs.items():
        same = values.keys() == reference.keys() and all(
            abs(values[i] - reference[i]) <= 1e-9 * abs(reference[i]) for i in values
        )
        print(f"{label:<16} {seconds:>15.2f} {share:>10.0%} {'yes' if same else 'NO':>13}")


if __name__ == "__main__":
    main()
