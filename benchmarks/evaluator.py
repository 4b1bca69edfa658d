"""How much an evaluation costs over a plain dense forward of the same tokens.

One evaluation = switch the layers that differ from the profile the model holds, draw the
minibatch, look up the dense teacher, forward, compare. The candidates follow EvoPress's
pattern (a parent and children one to three level switches away), so the switching work is
what a real search pays. Timings are interleaved (dense, evaluation, dense, ...) and the ratio
of medians is reported, so machine drift affects both sides alike.

    .venv/bin/python benchmarks/evaluator.py [--model pressroom:minilm] [--tokens 2048] [--repeats 15] [--smoke]

`--smoke` is the smallest setting (256 tokens, 2 timed repeats), for CI: same path, same table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluators import Evaluator, EvaluatorSpec
from spaces import Fidelity


def children(evaluator: Evaluator, count: int, rng: np.random.Generator) -> list:
    """Profiles one to three budget-keeping switches away from the uniform profile."""
    space = evaluator.space
    parent = space.to_array(space.uniform())
    group = space.switch_groups[0]
    out = []
    while len(out) < count:
        levels = parent.copy()
        for _ in range(int(rng.integers(1, 4))):
            up, down = rng.choice(group, size=2, replace=False)
            if space.can_switch(levels, int(up), int(down)):
                levels = space.switch(levels, int(up), int(down))
        out.append(space.from_array(levels))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pressroom:minilm")
    parser.add_argument("--compressor", default="wanda")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.tokens, args.repeats = 256, 2
    torch.set_num_threads(args.threads)
    seq_len = 128 if "minilm" in args.model or "bert" in args.model else 64
    spec = EvaluatorSpec.model_validate(
        {
            "model": {"name": args.model},
            "compression": {"target": 0.6, "compressor": args.compressor, "levels": {"max_levels": 4}},
            "data": {
                "seq_len": seq_len,
                "calibration_tokens": 8 * args.tokens,
                "heldout_tokens": 1024,
                "stats_tokens": 2048,
            },
        }
    )
    evaluator = Evaluator(spec)
    fidelity = Fidelity(args.tokens, (1, 0))
    batch = evaluator.data.batch(fidelity)
    rng = np.random.default_rng(0)
    candidates = children(evaluator, args.repeats + 3, rng)

    def dense_forward() -> float:
        start = time.perf_counter()
        with torch.no_grad():
            for chunk in batch.chunks(evaluator.chunk_rows()):
                evaluator.teacher_model(input_ids=chunk.input_ids, attention_mask=chunk.attention_mask)
        return time.perf_counter() - start

    def evaluation(profile) -> tuple[float, int]:
        start = time.perf_counter()
        result = evaluator.evaluate(profile, fidelity)
        return time.perf_counter() - start, result.switched

    for profile in candidates[:3]:  # warm-up: caches, the teacher for this minibatch, allocator
        evaluation(profile)
        dense_forward()
    dense, evals, switched = [], [], []
    for profile in candidates[3:]:
        dense.append(dense_forward())
        seconds, count = evaluation(profile)
        evals.append(seconds)
        switched.append(count)
    ratio = statistics.median(evals) / statistics.median(dense)
    cache = evaluator.teacher_cache
    print(f"model {args.model}, compressor {args.compressor}, {args.tokens} tokens, {args.threads} torch threads")
    print(f"{'dense forward (median)':<34} {statistics.median(dense) * 1e3:8.1f} ms")
    print(f"{'one evaluation (median)':<34} {statistics.median(evals) * 1e3:8.1f} ms")
    print(f"{'layers switched per evaluation':<34} {statistics.median(switched):8.1f}")
    print(f"{'evaluation / dense forward':<34} {ratio:8.3f}   (goal: at most 1.15)")
    print(f"{'teacher cache':<34} {cache.bytes / 2**20:8.2f} MiB in {len(cache)} minibatch(es), bound "
          f"{cache.max_bytes / 2**20:.0f} MiB")  # fmt: skip
    if evaluator.task == "causal-lm":
        per_token = 6 * spec.data.teacher_topk
        print(
            f"{'teacher bytes per token (top-K)':<34} {per_token:8d}"
            f"   (K = {spec.data.teacher_topk}: fp16 value + int32 id)"
        )
    else:
        hidden = int(evaluator.model.config.hidden_size)
        print(f"{'teacher bytes per sequence':<34} {4 * hidden:8d}   (one fp32 embedding of {hidden})")


if __name__ == "__main__":
    main()
