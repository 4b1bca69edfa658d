"""Quality on a small causal LM trained inside the benchmark, then compressed by each method.

A 4-block Llama-style model with a byte-level tokenizer is trained for a few minutes on the
offline corpus (the standard library's docstrings) so its layers hold real, unequal structure;
then `pressroom compare` runs the methods on it at one token budget, and the table gives
held-out KL to the dense model and held-out perplexity.

    .venv/bin/python benchmarks/quality_causal.py [--train-seconds 180] [--target 0.6] [--budget 200000] [--seeds 2]
        [--smoke]

`--smoke` is the smallest setting, for CI: 5 s of training, one seed, a one-generation schedule
on 256 and 512 tokens (8 offspring), 4,096 tokens per method, smaller data splits; the same
methods, the same table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "benchmarks" / ".cache"
DATA = {"seq_len": 128, "calibration_tokens": 65536, "heldout_tokens": 8192, "stats_tokens": 8192}
SCHEDULE = {"generations": 40, "offspring": 16, "stages": [[4, 1024], [1, 4096]]}
SMOKE_DATA = {"seq_len": 128, "calibration_tokens": 4096, "heldout_tokens": 1024, "stats_tokens": 1024}
SMOKE_SCHEDULE = {"generations": 1, "offspring": 8, "stages": [[2, 256], [1, 512]]}


def train(folder: Path, seconds: float, seed: int = 0) -> dict[str, float]:
    """Train the small LM for `seconds` and save it (model and tokenizer) to `folder`."""
    import transformers as tf

    from evaluators.data import stdlib_docstrings
    from evaluators.models import byte_tokenizer

    torch.manual_seed(seed)
    tokenizer = byte_tokenizer()
    config = tf.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=344, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    model = tf.LlamaForCausalLM(config)
    docs = stdlib_docstrings(CACHE)
    random.Random(seed).shuffle(docs)
    # the last 20 % of documents are never trained on; the evaluation data is drawn from all of them
    stream = [t for doc in docs[: int(0.8 * len(docs))] for t in tokenizer(doc)["input_ids"] + [tokenizer.eos_token_id]]
    data = torch.tensor(stream[: len(stream) // 128 * 128]).view(-1, 128)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    start, step, losses = time.monotonic(), 0, []
    model.train()
    while time.monotonic() - start < seconds:
        rows = torch.randint(0, data.shape[0], (16,))
        loss = model(input_ids=data[rows], labels=data[rows]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    final = sum(losses[-20:]) / len(losses[-20:])
    return {"steps": step, "train_loss": final, "train_perplexity": math.exp(final)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seconds", type=float, default=180)
    parser.add_argument("--target", type=float, default=0.6)
    parser.add_argument("--budget", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--methods", default="evopress,random,random-sh,uniform,owl,dp")
    parser.add_argument("--smoke", action="store_true", help="smallest setting (overrides the sizes), for CI")
    args = parser.parse_args()
    if args.smoke:
        args.train_seconds, args.budget, args.seeds = 5, 4096, 1
    CACHE.mkdir(parents=True, exist_ok=True)
    folder = CACHE / f"tiny-lm-{int(args.train_seconds)}s"
    if not (folder / "config.json").exists():
        facts = train(folder, args.train_seconds)
        print(f"trained {folder.name}: {facts['steps']} steps, train perplexity {facts['train_perplexity']:.2f}")
    spec = {
        "model": {"name": str(folder)},
        "task": "causal-lm",
        "compression": {"scheme": "sparsity", "target": args.target, "compressor": "sparsegpt",
                        "levels": {"max_levels": 4}},
        "data": SMOKE_DATA if args.smoke else DATA,
        "algorithm": {"name": "evopress", "params": SMOKE_SCHEDULE if args.smoke else SCHEDULE},
        "workers": {"count": 2, "cpus_per_worker": 1, "torch_threads": 1},
        "mlflow": {"enabled": False},
        "cache_dir": str(CACHE),
        "study": f"tiny-lm-{args.target:g}",
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(json.dumps(spec))
        table = Path(tmp) / "table.json"
        command = [
            str(Path(sys.executable).with_name("pressroom")), "compare", str(path), "--methods", args.methods,
            "--budget-tokens", str(args.budget), "--seeds", str(args.seeds),
            "--storage", f"sqlite:///{tmp}/compare.db", "-o", str(table),
        ]  # fmt: skip
        subprocess.run(command, check=True)
        print(json.dumps(json.loads(table.read_text()), indent=1))


if __name__ == "__main__":
    main()
