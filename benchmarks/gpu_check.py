"""Every CUDA kernel backend's correctness check and timing, in one go, for when a GPU is at hand.

For each backend that runs on CUDA and each activation dtype it takes: the registry's probe,
then the relative error against the dense product on MiniLM's and a 7B model's layer shapes
(checked against the backend's gate), then the per-layer speedup over dense (interleaved
rounds, ratio of medians) at 2,048 rows and at 16 rows (decoding). Last, `CompiledModel` on the
GPU: one compilation across weight swaps. Exit status 1 if a check fails; 0 with a "no CUDA,
skipped" line and nothing run on a machine without CUDA.

    .venv/bin/python benchmarks/gpu_check.py [--repeats 20] [--smoke]

`--smoke` is the smallest setting (2 timed rounds), for CI: every check still runs.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from workers.runtime import build_table
from workers.runtime.kernels import BACKENDS, CompiledModel, get_backend, probe, relative_error, sample_layer

SHAPES = [(384, 384), (1536, 384), (384, 1536), (4096, 4096), (11008, 4096), (4096, 11008)]
ROWS = (2048, 16)
SPARSITIES = (0.5, 0.7, 0.9)


def check_backend(name: str, dtype: torch.dtype) -> list[str]:
    """Probe and check one backend on every shape; returns the failures."""
    backend = get_backend(name)
    found = probe(name, "cuda", dtype)
    label = f"{name:<17} {str(dtype).removeprefix('torch.'):<9}"
    if not found.available:
        # missing hardware, a dtype the backend does not take, or a kernel torch lacks: facts
        # to report; a crash or a missed gate is a failure
        expected = any(k in found.reason for k in ("compute capability", "activations, not", "NotImplementedError"))
        print(f"{label} {'unavailable' if expected else 'FAILED PROBE'}: {found.reason}")
        return [] if expected else [f"{name}/{dtype}: {found.reason}"]
    failures = []
    worst = 0.0
    for shape in SHAPES:
        weight, bias, x, setting = sample_layer(backend, shape, 256, device="cuda", dtype=dtype)
        if not backend.accepts(shape, setting):
            continue
        error = relative_error(backend.build(weight, bias), weight, bias, x)
        worst = max(worst, error)
        if not error <= backend.gate(dtype):
            failures.append(f"{name}/{dtype} on {shape}: relative error {error:.3g} > gate {backend.gate(dtype):.3g}")
    print(f"{label} ok, worst relative error {worst:.2e} (gate {backend.gate(dtype):.0e})")
    return failures


def time_backends(names: list[str], dtype: torch.dtype, repeats: int) -> None:
    for rows in ROWS:
        table = build_table(SHAPES, backends=names, sparsities=SPARSITIES, rows=rows, device="cuda", dtype=dtype,
                            repeats=repeats)  # fmt: skip
        print(f"\nspeedup over dense, {str(dtype).removeprefix('torch.')}, {rows} rows (> 1 = faster)")
        for shape in SHAPES:
            dense = table.dense_seconds(shape)
            cells = [
                f"{e.backend}{'' if e.sparsity is None else f'@{e.sparsity:.0%}'} {dense / e.seconds:.2f}"
                for e in table.entries
                if e.shape == shape and e.backend != "dense" and dense is not None
            ]
            print(f"  {shape[0]:>5}x{shape[1]:<5} dense {dense * 1e6 if dense else 0:8.1f} us | " + ", ".join(cells))


def check_compiled() -> list[str]:
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256)).cuda().eval()
    compiled = CompiledModel(model, max_signatures=1)
    x = torch.randn(64, 256, device="cuda")
    failures = []
    with torch.no_grad():
        for _ in range(3):
            got, expected = compiled(x), model(x)
            if not torch.allclose(got, expected, rtol=1e-3, atol=1e-4):
                failures.append("CompiledModel output differs from eager after a weight swap")
            compiled.load_({"0.weight": torch.randn(512, 256, device="cuda")})
    if compiled.graphs != 1:
        failures.append(f"CompiledModel compiled {compiled.graphs} graphs for one input signature")
    print(f"\nCompiledModel on CUDA: {compiled.graphs} graph(s) across 3 weight swaps")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 2
    if not torch.cuda.is_available():
        print("no CUDA, skipped: nothing to check here (run this where a GPU is available)")
        return 0
    major, minor = torch.cuda.get_device_capability()
    print(f"{torch.cuda.get_device_name()} (sm_{major}{minor}), torch {torch.__version__}, CUDA {torch.version.cuda}")
    cuda_backends = [name for name, backend in BACKENDS.items() if "cuda" in backend.devices]
    failures: list[str] = []
    for dtype in (torch.float16, torch.bfloat16):
        for name in cuda_backends:
            failures += check_backend(name, dtype)
    for dtype in (torch.float16, torch.bfloat16):
        usable = [n for n in cuda_backends if n != "dense" and probe(n, "cuda", dtype).available]
        if usable:
            time_backends(usable, dtype, args.repeats)
    failures += check_compiled()
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nall CUDA checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
