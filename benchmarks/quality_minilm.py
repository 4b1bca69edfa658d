"""Quality on the real all-MiniLM-L6-v2: every method at one token budget, per compression target.

For each target (60 % and 70 % average sparsity with SparseGPT levels; 3 and 4 average bits
with GPTQ levels) it runs `pressroom compare` and prints the table: held-out fitness
(1 - cosine similarity of the sentence embeddings to the dense model's; lower is better), its
spread over seeds, wall time and evaluations.

    .venv/bin/python benchmarks/quality_minilm.py [--targets sparsity:0.7] [--methods evopress,random,uniform,owl]
        [--budget 400000] [--seeds 3] [--smoke]

`--smoke` is the smallest setting, for CI: one seed, fewer levels (2 each way; 2-4 bits), a
one-generation schedule on 256 and 512 tokens (8 offspring), 4,096 tokens per method, smaller
data splits; the same methods and targets, the same table.
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
COMPRESSOR = {"sparsity": "sparsegpt", "bitwidth": "gptq"}
DATA = {"seq_len": 128, "calibration_tokens": 65536, "heldout_tokens": 16384, "stats_tokens": 8192}
ALGORITHM = {"name": "evopress", "preset": "cpu-small"}
SMOKE_DATA = {"seq_len": 128, "calibration_tokens": 4096, "heldout_tokens": 1024, "stats_tokens": 1024}
SMOKE_ALGORITHM = {"name": "evopress", "params": {"generations": 1, "offspring": 8, "stages": [[2, 256], [1, 512]]}}


def spec_for(scheme: str, target: float, smoke: bool) -> dict[str, object]:
    if scheme == "sparsity":
        levels: dict[str, object] = {"max_levels": 2 if smoke else 4}
    else:
        levels = {"choices": [2, 3, 4] if smoke else [2, 3, 4, 5, 6], "group_size": 128}
    return {
        "model": {"name": "pressroom:minilm"},
        "task": "encoder",
        "compression": {"scheme": scheme, "target": target, "compressor": COMPRESSOR[scheme], "levels": levels},
        "data": SMOKE_DATA if smoke else DATA,
        "algorithm": SMOKE_ALGORITHM if smoke else ALGORITHM,
        "workers": {"count": 2, "cpus_per_worker": 1, "torch_threads": 1},
        "mlflow": {"enabled": False},
        "cache_dir": str(CACHE),
        "study": f"minilm-{scheme}-{target:g}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="sparsity:0.6,sparsity:0.7,bitwidth:3,bitwidth:4")
    parser.add_argument("--methods", default="evopress,random,random-sh,uniform,owl,dp")
    parser.add_argument("--budget", type=int, default=400_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.budget, args.seeds = 4096, 1
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.targets.split(","):
            scheme, target = item.split(":")
            methods = args.methods
            if scheme != "sparsity":  # OWL is defined for sparsity only
                methods = ",".join(m for m in methods.split(",") if m != "owl")
            path = Path(tmp) / f"{scheme}-{target}.yaml"
            path.write_text(json.dumps(spec_for(scheme, float(target), args.smoke)))
            table = Path(tmp) / f"{scheme}-{target}.json"
            command = [
                str(Path(sys.executable).with_name("pressroom")), "compare", str(path), "--methods", methods,
                "--budget-tokens", str(args.budget), "--seeds", str(args.seeds),
                "--storage", f"sqlite:///{tmp}/compare.db", "-o", str(table),
            ]  # fmt: skip
            subprocess.run(command, check=True)
            results[item] = json.loads(table.read_text())
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
