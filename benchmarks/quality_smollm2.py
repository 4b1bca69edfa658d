"""Quality on the packaged pretrained LLM SmolLM2-135M: every method at one forwarded-token budget.

`pressroom compare` runs the methods at one unstructured-sparsity target (Wanda levels) on the
docstrings as calibration text, and the table gives each method's held-out KL to the dense model
and held-out perplexity on Jane Austen's novels (text no method sees while searching), over seeds.

    .venv/bin/python benchmarks/quality_smollm2.py [--target 0.7] [--methods uniform,owl,evopress]
        [--budget 16384] [--seeds 2] [--smoke]

`--smoke` is the smallest setting, for CI: one seed, a one-generation schedule on 128 and 256
tokens (4 offspring), 2,048 tokens per method, smaller data splits; the same methods, the same table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"
DATA = {"seq_len": 128, "calibration_tokens": 4096, "heldout_tokens": 4096, "stats_tokens": 1024}
SCHEDULE = {"generations": 4, "offspring": 6, "stages": [[2, 256], [1, 1024]]}  # `compare` stops at the budget
SMOKE_DATA = {"seq_len": 128, "calibration_tokens": 2048, "heldout_tokens": 512, "stats_tokens": 512}
SMOKE_SCHEDULE = {"generations": 1, "offspring": 4, "stages": [[2, 128], [1, 256]]}


def spec_for(target: float, smoke: bool) -> dict[str, object]:
    return {
        "model": {"name": "pressroom:smollm2-135m"},
        "task": "causal-lm",
        "compression": {"scheme": "sparsity", "target": target, "compressor": "wanda", "levels": {"max_levels": 5}},
        "data": {"source": "default", "heldout_source": "austen", **(SMOKE_DATA if smoke else DATA)},
        "algorithm": {"name": "evopress", "params": SMOKE_SCHEDULE if smoke else SCHEDULE},
        "workers": {"count": 2, "cpus_per_worker": 1, "torch_threads": 1},
        "mlflow": {"enabled": False},
        "cache_dir": str(CACHE),
        "study": f"smollm2-{target:g}",
    }


def markdown(rows: list[dict[str, object]], seeds: int) -> str:
    """The compare rows as a markdown table, best held-out KL first."""
    lines = [
        f"| method | held-out KL, mean of {seeds} seeds | sd | held-out perplexity | wall s per seed | tokens |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in sorted(rows, key=lambda r: float("inf") if r["heldout_mean"] is None else r["heldout_mean"]):
        ppl = "-" if row["perplexity_mean"] is None else f"{row['perplexity_mean']:.2f}"
        kl = "-" if row["heldout_mean"] is None else f"{row['heldout_mean']:.4f}"
        cells = [row["method"], kl, f"{row['heldout_std']:.4f}", ppl, f"{row['seconds']:.0f}", f"{row['tokens']:,.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--methods", default="uniform,owl,evopress")
    parser.add_argument("--budget", type=int, default=16_384)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.budget, args.seeds = 2048, 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(json.dumps(spec_for(args.target, args.smoke)))
        table = Path(tmp) / "table.json"
        command = [
            str(Path(sys.executable).with_name("pressroom")), "compare", str(path), "--methods", args.methods,
            "--budget-tokens", str(args.budget), "--seeds", str(args.seeds),
            "--storage", f"sqlite:///{tmp}/compare.db", "-o", str(table),
        ]  # fmt: skip
        subprocess.run(command, check=True)
        result = json.loads(table.read_text())
    print(json.dumps(result, indent=1))
    print(markdown(result["rows"], args.seeds))


if __name__ == "__main__":
    main()
