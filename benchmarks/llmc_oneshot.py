"""pressroom's llm-compressor recipe through llm-compressor's own `oneshot`, on a real model.

Exports a bitwidth profile (a seeded sample of the exact-budget space) as
`pressroom export --format llm-compressor` writes it, runs llm-compressor 0.14's `oneshot` on the
model with it in a cached side virtualenv (`benchmarks/llmc/side.py`: llm-compressor's
pins conflict with pressroom's; created once, 3 to 17 minutes by the load), and checks that the checkpoint it
saves holds the profile's bits on every layer. Prints one line per model: its layers, how many
are quantised, `oneshot`'s wall seconds and whether every layer matches.

    .venv/bin/python benchmarks/llmc_oneshot.py [--model pressroom:smollm2-135m] [--compressor gptq]
        [--samples 8] [--smoke]

SmolLM2-135M with GPTQ took 48 minutes on 2 heavily shared CPU cores (docs/results.md), too long for CI, which runs
the same path on the tiny Llama (`--smoke`, and tests/search/results/test_llmc_oneshot.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from llmc.side import check_recipe

from evaluators import build_space, load_model, take_inventory
from evaluators.config import CompressionSpec, ModelSpec
from search.results.exports import layer_values

#: Bits vLLM's WNA16 kernels take, and dense.
CHOICES = [4, 8, 16]
#: Group sizes that divide every wider layer's input width: SmolLM2's 576 and 1536 (64, which
#: vLLM's Marlin kernels take), the tiny Llama's 64 and 176 (16).
GROUP_SIZE = {"pressroom:smollm2-135m": 64, "pressroom:tiny-llama": 16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pressroom:smollm2-135m")
    parser.add_argument("--compressor", default="gptq", choices=["gptq", "rtn"])
    parser.add_argument("--samples", type=int, default=8, help="Calibration sequences of 64 tokens.")
    parser.add_argument("--smoke", action="store_true", help="The smallest setting (tiny Llama, 2 samples).")
    args = parser.parse_args()
    model, samples = ("pressroom:tiny-llama", 2) if args.smoke else (args.model, args.samples)
    logging.basicConfig(level=logging.WARNING)
    loaded = load_model(ModelSpec(name=model, dtype="float32"), "causal-lm")
    levels = {"choices": CHOICES, "group_size": GROUP_SIZE.get(model, 128)}
    spec = CompressionSpec.model_validate(
        {"scheme": "bitwidth", "target": 6.0, "compressor": args.compressor, "levels": levels}
    )
    space = build_space(take_inventory(loaded.model, spec), spec, loaded.fingerprint)
    profile = space.sample(np.random.default_rng(0))
    quantised = sum(bits < 16 for bits in layer_values(space, profile).values())
    with tempfile.TemporaryDirectory(prefix="pressroom-llmc-") as work:
        folder = Path(work) / "model"
        loaded.model.save_pretrained(folder)
        loaded.tokenizer.save_pretrained(folder)
        seconds = check_recipe(folder, space, profile, args.compressor, Path(work), samples=samples)
    print("| model | compressor | layers | quantised | oneshot s | every layer's bits as the profile |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {model} | {args.compressor} | {len(space.layers)} | {quantised} | {seconds:.1f} | yes |")


if __name__ == "__main__":
    main()
