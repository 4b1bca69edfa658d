"""llm-compressor in a side virtualenv, to run pressroom's exported recipes through its `oneshot`.

llmcompressor 0.14.0.1 pins transformers 5.17 and compressed-tensors 0.19, older than
pressroom's (transformers 5.25, compressed-tensors 0.20), so it cannot go in pressroom's own
environment. `side_python` creates a virtualenv under ``~/.cache/pressroom/venvs/`` once (3 to
17 minutes from the package registry, by the machine's load: torch 2.13.0 first, a CPU wheel, so that llm-compressor's
plain ``torch`` requirement does not pull a CUDA build) and reuses it after; its folder is keyed
by the pinned versions and the Python version. Creation holds a file lock and marks the
virtualenv ready only once everything is installed, so two test processes never build it twice
or use half of one.

`run_oneshot` runs llm-compressor's `oneshot` there on a model folder with a recipe and a few
random calibration sequences (a `datasets.Dataset` built in memory: nothing is downloaded), and
saves what it writes; `mismatches` reads that checkpoint back in pressroom's environment and
says where it differs from the profile. Used by benchmarks/llmc_oneshot.py and
tests/search/results/test_llmc_oneshot.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from safetensors import safe_open

from evaluators.evaluator import DENSE_BITS
from search.results.exports import layer_values, write_profile
from spaces import Profile, Space

#: What the side virtualenv holds; torch is installed first, alone.
TORCH = "torch==2.13.0"
LLMCOMPRESSOR = "llmcompressor==0.14.0.1"
#: Written into the virtualenv when everything is installed (its `pip freeze`).
READY = "pressroom-ready.txt"
#: Where cached virtualenvs live (with pressroom's other caches, see evaluators/models.py).
VENVS = Path("~/.cache/pressroom/venvs").expanduser()
#: A layer's sparsity after `oneshot` may differ from the profile's by rounding to whole weights
#: per row (a row of 64 columns prunes in steps of 1/64; SparseGPT rounds up, Wanda down).
SPARSITY_ATOL = 1 / 32
#: The longest one pip step may take, in seconds.
INSTALL_TIMEOUT = 1800

#: Runs in the side virtualenv: argv = model folder, recipe file, output folder, samples, length.
ONESHOT = """
import sys, torch
from datasets import Dataset
from llmcompressor import oneshot
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, recipe, out, samples, length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(folder)
generator = torch.Generator().manual_seed(0)
ids = torch.randint(0, len(tokenizer), (samples, length), generator=generator).tolist()
data = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * length] * samples})
oneshot(model=model, tokenizer=tokenizer, dataset=data, recipe=recipe, max_seq_length=length,
        num_calibration_samples=samples, output_dir=out)
"""


def venv_folder() -> Path:
    """The cached virtualenv's folder, named by what it holds."""
    python = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return VENVS / f"{LLMCOMPRESSOR.replace('==', '-')}-{TORCH.replace('==', '-')}-{python}"


def _pip(python: Path, *args: str) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args],
        check=False, capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"pip install {' '.join(args)} failed in the side virtualenv:\n{done.stderr[-3000:]}")


def side_python() -> Path:
    """The Python of the llm-compressor virtualenv, created on the first call (see the module).

    Raises:
        RuntimeError: pip could not install the pinned packages (the message holds pip's error).
    """
    folder = venv_folder()
    python = folder / "bin" / "python"
    if (folder / READY).is_file():
        return python
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a racing process waits here, then finds it ready
        if not (folder / READY).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what an interrupted creation left
            subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
            _pip(python, TORCH)
            _pip(python, LLMCOMPRESSOR)
            frozen = subprocess.run([str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True)
            (folder / READY).write_text(frozen.stdout)
    return python


def run_oneshot(model: Path, recipe: Path, out: Path, *, samples: int = 8, length: int = 64) -> float:
    """Run llm-compressor's `oneshot` on `model` with `recipe`, saving to `out`; its wall seconds.

    Raises:
        RuntimeError: `oneshot` failed (the message ends with its error).
    """
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    environment.pop("PYTHONPATH", None)  # nothing of pressroom's environment in llm-compressor's
    command = [str(side_python()), "-c", ONESHOT, str(model), str(recipe), str(out), str(samples), str(length)]
    start = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=environment, timeout=7200)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"llm-compressor's oneshot refused {recipe.name}:\n{done.stderr[-4000:]}")
    return seconds


def stored_bits(out: Path) -> dict[str, int]:
    """Per quantised layer of a checkpoint `oneshot` saved: the bits its config says, checked
    against what is stored (int32 words holding the bits of each row's values, one scale per group).

    Raises:
        ValueError: a layer whose packed weight or scales do not match its config.
    """
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    bits: dict[str, int] = {}
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        for group in config["config_groups"].values():
            width = group["weights"]["num_bits"]
            for name in group["targets"]:
                _, cols = handle.get_tensor(f"{name}.weight_shape").tolist()
                size = group["weights"]["group_size"] or cols  # the channel strategy: one group per row
                words = handle.get_slice(f"{name}.weight_packed").get_shape()[1]
                groups = handle.get_slice(f"{name}.weight_scale").get_shape()[1]
                if words != -(-cols * width // 32) or groups != cols // size:
                    raise ValueError(f"{name}: {words} words and {groups} scales per row do not hold {cols} "
                                     f"{width}-bit values in groups of {size}")  # fmt: skip
                bits[name] = width
    return bits


def mismatches(out: Path, values: dict[str, float | int | str], scheme: str) -> list[str]:
    """Where the checkpoint `oneshot` saved differs from a profile's per-layer values
    (`search.results.exports.layer_values`): a layer of other bits, or of another sparsity
    (by more than `SPARSITY_ATOL`), or a 16-bit layer not stored dense.
    """
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        if scheme == "bitwidth":
            keys = set(handle.keys())
            found: dict[str, float | int | str] = dict(stored_bits(out))
            found.update({name: DENSE_BITS for name in values if f"{name}.weight" in keys})
            return [
                f"{name}: {found.get(name)} bits, not {bits}"
                for name, bits in values.items()
                if found.get(name) != bits
            ]
        problems = []
        for name, sparsity in values.items():
            zeros = float((handle.get_tensor(f"{name}.weight") == 0).float().mean())
            if abs(zeros - float(sparsity)) > SPARSITY_ATOL:
                problems.append(f"{name}: sparsity {zeros:.4f}, not {sparsity}")
        return problems


def check_recipe(model: Path, space: Space, profile: Profile, compressor: str, work: Path, **sizes: int) -> float:
    """Export `profile` as pressroom does (`export --format llm-compressor`), run it through
    `oneshot` on the model folder `model` into `work`, and compare; `oneshot`'s wall seconds.

    Raises:
        RuntimeError: `oneshot` refused the recipe.
        AssertionError: the checkpoint does not hold the profile (the message lists where).
    """
    work.mkdir(parents=True, exist_ok=True)
    recipe = work / "recipe.yaml"
    recipe.write_text(write_profile(profile, space, "llm-compressor", compressor=compressor))
    seconds = run_oneshot(model, recipe, work / "out", **sizes)
    problems = mismatches(work / "out", layer_values(space, profile), space.scheme.name)
    assert not problems, f"{len(problems)} layers differ from the profile: {problems[:5]}"
    return seconds
