"""What the kernel backends buy on this machine: per layer, and end to end on MiniLM.

Three parts, each timed interleaved with dense (dense, backend, dense, ... rounds) so drift hits
both sides; the figures are ratios of medians within one run:

1. `--forms`: the ways to call a CSR/BSR matmul (which operand first, where the bias goes,
   BSR block sizes), to pick the form `SparseLinear` uses.
2. Per layer: MiniLM's weight shapes (384x384, 1536x384, 384x1536) on a batch of 16 x 128
   tokens (`--sequences`), every backend available here, at 50/70/90 % unstructured sparsity and int8:
   speedup over the dense layer (> 1 = faster).
3. End to end: all-MiniLM-L6-v2 (`pressroom:minilm`) with representative non-uniform 60 % and
   70 % profiles (a seeded uniform sample of the exact-budget space, Wanda masks) and with int8
   everywhere, each layer on the backend the per-layer table says is fastest (dense where
   nothing pays), against dense; with the table's additive estimate and its error.

    .venv/bin/python benchmarks/kernel_speed.py [--forms] [--repeats 15] [--threads N] [--compile] [--smoke]

`--smoke` is the smallest setting (batches of 2 x 128 tokens, 2 timed rounds), for CI: every
part still runs and prints its table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evaluators import Evaluator, EvaluatorSpec
from spaces import Fidelity
from workers.runtime import build_table, profile_latency, time_interleaved
from workers.runtime.kernels import BACKENDS, CompiledModel, available_backends, get_backend, sample_layer

SHAPES = [(384, 384), (1536, 384), (384, 1536)]
SPARSITIES = (0.5, 0.7, 0.9)
SEQ_LEN = 128


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads{gpu}"


FORMS = [
    "sparse.mm(W,x^T)^T+b",
    "addmm(b,W,x^T)^T",
    "addmm(b,W,x^T)^T.contig",
    "x@W^T+b (csc)",
    "addmm(b,x,W^T csr)",
    *(f"bsr{b} addmm(b,W,x^T)^T" for b in (8, 16, 32, 64)),
]


def form_calls(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Dense, and each way of calling a sparse matmul for ``x W^T + b``, by name."""
    csr, column = weight.to_sparse_csr(), bias[:, None]
    transposed_csr = weight.t().contiguous().to_sparse_csr()
    calls: dict[str, Callable[[], object]] = {
        "dense": lambda: F.linear(x, weight, bias),
        FORMS[0]: lambda: torch.sparse.mm(csr, x.t()).t() + bias,
        FORMS[1]: lambda: torch.addmm(column, csr, x.t()).t(),
        FORMS[2]: lambda: torch.addmm(column, csr, x.t()).t().contiguous(),
        FORMS[3]: lambda: x @ csr.t() + bias,
        FORMS[4]: lambda: torch.addmm(bias, x, transposed_csr),
    }
    for block, name in zip((8, 16, 32, 64), FORMS[5:], strict=True):
        bsr = weight.to_sparse_bsr((block, block))
        calls[name] = lambda bsr=bsr: torch.addmm(column, bsr, x.t()).t()
    return calls


def forms(repeats: int, sequences: int) -> None:
    """Time the candidate call forms of a sparse linear layer against dense."""
    rows = sequences * SEQ_LEN
    print(f"\n## Sparse matmul call forms (rows {rows}, speedup over dense F.linear; > 1 = faster)\n")
    print(f"| shape | sparsity | {' | '.join(FORMS)} |")
    print("|---|---|" + "---|" * len(FORMS))
    for shape in SHAPES:
        for sparsity in SPARSITIES:
            weight, bias, x, _ = sample_layer(get_backend("csr"), shape, rows, sparsity=sparsity)
            calls = form_calls(weight, bias, x)
            reference = F.linear(x, weight, bias)
            for name, call in calls.items():  # every form must compute the same product
                got = call()
                assert isinstance(got, torch.Tensor)
                error = float((got - reference).norm() / reference.norm())
                assert error < 1e-5, f"{name} is wrong on {shape} at {sparsity}: {error:.3g}"
            with torch.no_grad():  # not inference_mode: transposing a CSR tensor bumps a version counter
                samples = time_interleaved(calls, warmup=2, repeats=repeats)
            dense = statistics.median(samples["dense"])
            cells = " | ".join(f"{dense / statistics.median(samples[n]):.2f}" for n in FORMS)
            print(f"| {shape[0]}x{shape[1]} | {sparsity:.0%} | {cells} |")


def per_layer(repeats: int, sequences: int) -> None:
    rows = sequences * SEQ_LEN
    names = [n for n in available_backends("cpu") if n != "dense"]
    table = build_table(SHAPES, backends=names, sparsities=SPARSITIES, rows=rows, repeats=repeats)
    print(f"\n## Per layer: speedup over the dense layer ({rows} rows = {sequences} x {SEQ_LEN} tokens)\n")
    columns = [(n, s) for n in names for s in (SPARSITIES if get_backend(n).sparse else (None,))]
    header = [n if s is None else f"{n} {s:.0%}" for n, s in columns]
    print(f"| shape | dense ms | {' | '.join(header)} |")
    print("|---|---|" + "---|" * len(columns))
    for shape in SHAPES:
        dense = table.dense_seconds(shape)
        assert dense is not None
        cells = []
        for name, sparsity in columns:
            found = [
                e.seconds
                for e in table.entries
                if e.shape == shape
                and e.backend == name
                and (sparsity is None or (e.sparsity is not None and abs(e.sparsity - sparsity) < 1e-3))
            ]
            cells.append(f"{dense / found[0]:.2f}" if found else "-")
        print(f"| {shape[0]}x{shape[1]} | {dense * 1e3:.2f} | {' | '.join(cells)} |")
    unavailable = sorted(set(BACKENDS) - set(available_backends("cpu")))
    print(f"\n(not on this machine: {', '.join(unavailable)}; see benchmarks/gpu_check.py)")


def minilm(spec_overrides: dict, sequences: int, seed: int = 0) -> Evaluator:
    """MiniLM with `spec_overrides` as its compression, calibrated on 8 batches of `sequences`."""
    spec = EvaluatorSpec.model_validate(
        {
            "model": {"name": "pressroom:minilm"},
            "compression": spec_overrides,
            "data": {
                "seq_len": SEQ_LEN,
                "calibration_tokens": 8 * sequences * SEQ_LEN,
                "heldout_tokens": 2048,
                "stats_tokens": 2048,
            },
            "seed": seed,
        }
    )
    return Evaluator(spec)


def end_to_end(repeats: int, sequences: int, compile_model: bool) -> None:
    fidelity = Fidelity(sequences * SEQ_LEN)
    print(f"\n## End to end: all-MiniLM-L6-v2, {sequences} x {SEQ_LEN} tokens per forward\n")
    print(
        "| profile | dense ms | compressed ms | speedup (IQR of paired ratios) | layers swapped | estimate ms | error |"
    )
    print("|---|---|---|---|---|---|---|")
    table = None
    rng = np.random.default_rng(0)
    int8 = {"scheme": "bitwidth", "target": 8, "compressor": "rtn", "levels": {"choices": [8]}}
    cases: list[tuple[str, dict, str]] = [
        ("60 % sparse, non-uniform", {"target": 0.6, "compressor": "wanda"}, "sample"),
        ("70 % sparse, non-uniform", {"target": 0.7, "compressor": "wanda"}, "sample"),
        ("70 % sparse, uniform", {"target": 0.7, "compressor": "wanda"}, "uniform"),
        ("int8 everywhere", int8, "uniform"),
    ]
    for label, compression, kind in cases:
        evaluator = minilm(compression, sequences)
        if table is None:
            shapes = sorted({tuple(m.weight.shape) for m in evaluator.inventory.modules.values()})
            rows = evaluator.data.batch(fidelity).input_ids.numel()
            table = build_table(shapes, sparsities=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95), rows=rows, repeats=repeats)
        profile = evaluator.space.sample(rng) if kind == "sample" else evaluator.space.uniform()
        report = profile_latency(evaluator, profile, fidelity, table=table, repeats=repeats)
        r = report.ratios
        assert report.estimated is not None and report.estimate_error is not None
        print(
            f"| {label} | {report.dense.median * 1e3:.1f} | {report.compressed.median * 1e3:.1f} | "
            f"{report.speedup:.2f} ({r.low:.2f}-{r.high:.2f}) | {len(report.plan)}/{len(evaluator.inventory)} "
            f"({', '.join(sorted(set(report.plan.values()))) or 'none'}) | {report.estimated * 1e3:.1f} | "
            f"{report.estimate_error:+.0%} |"
        )
    if compile_model:
        compiled_stitched(minilm(cases[0][1], sequences), fidelity, repeats)


def compiled_stitched(evaluator: Evaluator, fidelity: Fidelity, repeats: int) -> None:
    """torch.compile of the stitched model: compile once, switch profiles through copy_."""
    batch = evaluator.data.batch(fidelity)
    compiled = CompiledModel(evaluator.model)
    start = time.perf_counter()
    with torch.no_grad():
        compiled(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    compile_seconds = time.perf_counter() - start
    rng = np.random.default_rng(1)
    for _ in range(3):  # the evaluator writes each profile into the same tensors
        evaluator.apply(evaluator.space.sample(rng))
        with torch.no_grad():
            compiled(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    def eager() -> object:
        with torch.no_grad():
            return evaluator.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    def fast() -> object:
        with torch.no_grad():
            return compiled(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    samples = time_interleaved({"eager": eager, "compiled": fast}, warmup=2, repeats=repeats)
    eager_ms, compiled_ms = (statistics.median(samples[k]) * 1e3 for k in ("eager", "compiled"))
    print(
        f"\ntorch.compile of the stitched model: compiled in {compile_seconds:.0f} s, {compiled.graphs} graph(s) after "
        f"3 profile switches; eager {eager_ms:.1f} ms, compiled {compiled_ms:.1f} ms ({eager_ms / compiled_ms:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forms", action="store_true", help="also time the sparse matmul call forms")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the stitched model")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-layers", action="store_true", help="only the end-to-end part")
    parser.add_argument("--sequences", type=int, default=16, help=f"sequences of {SEQ_LEN} tokens per batch")
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.sequences = 2, 2
    torch.set_num_threads(args.threads)
    print(f"machine: {machine()}")
    if args.forms:
        forms(args.repeats, args.sequences)
    if not args.skip_layers:
        per_layer(args.repeats, args.sequences)
    end_to_end(args.repeats, args.sequences, args.compile)


if __name__ == "__main__":
    main()
