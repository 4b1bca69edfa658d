"""`pressroom export --format llm-compressor` recipes, run by llm-compressor's own `oneshot`.

llm-compressor cannot share pressroom's environment (its pins are older), so this runs it in a
side virtualenv that `benchmarks.llmc.side.side_python` creates once and caches (3 to 17 minutes
the first time, from the package registry, by the machine's load). Each recipe is applied to the
tiny Llama, saved with `save_pretrained`, with 8 random calibration sequences; the checkpoint
llm-compressor writes must hold the profile: each layer's bits (packed words, group scales) or
its sparsity. SmolLM2 took 48 minutes on 2 heavily shared CPU cores, so it is
`benchmarks/llmc_oneshot.py` (docs/results.md).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from benchmarks.llmc.side import LLMCOMPRESSOR, READY, TORCH, check_recipe
from evaluators import build_space, load_model, take_inventory
from evaluators.config import CompressionSpec, ModelSpec
from search.results.exports import LLMC_MODIFIERS, write_profile

ROOT = Path(__file__).resolve().parents[3]
BITS = [2, 3, 4, 8, 16]
#: (compressor, compression section): GPTQ grouped by 16 (divides the 64 and 176 input widths);
#: RTN grouped by 88, so the 64-wide layers are one group per row (the ``channel`` strategy).
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "gptq": ("gptq", {"scheme": "bitwidth", "target": 4.0, "levels": {"choices": BITS, "group_size": 16}}),
    "rtn-channel": ("rtn", {"scheme": "bitwidth", "target": 4.0, "levels": {"choices": BITS, "group_size": 88}}),
    "sparsegpt": ("sparsegpt", {"scheme": "sparsity", "target": 0.5, "levels": {"max_levels": 4}}),
    "wanda": ("wanda", {"scheme": "sparsity", "target": 0.5, "levels": {"max_levels": 4}}),
}


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The tiny Llama saved as a model folder, and the loaded model (for its layers)."""
    loaded = load_model(ModelSpec(name="pressroom:tiny-llama"), "auto")
    folder = tmp_path_factory.mktemp("llmc") / "tiny-llama"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder, loaded


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_llm_compressor_oneshot_applies_the_exported_recipe_as_the_profile_says(case, tiny_llama, tmp_path):
    folder, loaded = tiny_llama
    compressor, compression = CASES[case]
    spec = CompressionSpec.model_validate({**compression, "compressor": compressor})
    space = build_space(take_inventory(loaded.model, spec), spec, loaded.fingerprint)
    if spec.scheme == "bitwidth":  # every bitwidth on some layers, 16 (dense) on others
        profile = space.from_array([BITS[index % len(BITS)] for index in range(len(space.units))])
    else:
        profile = space.sample(np.random.default_rng(0))
    check_recipe(folder, space, profile, compressor, tmp_path)  # raises where oneshot or the checkpoint differ
    assert LLMC_MODIFIERS[compressor] in (tmp_path / "recipe.yaml").read_text()


#: Calls `side_python` with the cache folder argv[1] and pip replaced by a note in argv[2] (the
#: real installs take minutes): what two racing test processes do on a new machine.
RACE = """
import sys, time
from pathlib import Path
import benchmarks.llmc.side as side
side.VENVS = Path(sys.argv[1])
def install(python, *args):
    with open(sys.argv[2], "a") as log:
        log.write(" ".join(args) + "\\n")
    time.sleep(1)
side._pip = install
print(side.side_python())
"""


@pytest.mark.slow
def test_two_processes_creating_the_side_virtualenv_at_once_create_it_once(tmp_path):
    log = tmp_path / "installs.txt"
    command = [sys.executable, "-c", RACE, str(tmp_path / "venvs"), str(log)]
    racing = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(2)]
    found = [process.communicate(timeout=600)[0].strip() for process in racing]
    assert [process.returncode for process in racing] == [0, 0]
    assert found[0] == found[1] and Path(found[0]).is_file()  # the same virtualenv's python
    assert log.read_text().splitlines() == [TORCH, LLMCOMPRESSOR]  # installed once, torch first
    assert (Path(found[0]).parents[1] / READY).is_file()


@pytest.mark.parametrize("case", ["gptq", "rtn-channel"])
def test_the_recipe_config_groups_are_valid_compressed_tensors_schemes(case, tiny_llama):
    """The schema check that needs no side virtualenv: llm-compressor builds each config group
    into compressed-tensors' `QuantizationScheme`, which pressroom's environment has (0.20)."""
    from compressed_tensors.quantization import QuantizationScheme

    _, loaded = tiny_llama
    compressor, compression = CASES[case]
    spec = CompressionSpec.model_validate({**compression, "compressor": compressor})
    space = build_space(take_inventory(loaded.model, spec), spec, loaded.fingerprint)
    profile = space.from_array([BITS[index % len(BITS)] for index in range(len(space.units))])
    recipe = yaml.safe_load(write_profile(profile, space, "llm-compressor", compressor=compressor))
    modifier = recipe["pressroom_stage"]["quantization_modifiers"][LLMC_MODIFIERS[compressor]]
    for group in modifier["config_groups"].values():
        scheme = QuantizationScheme.model_validate(group)
        assert scheme.weights is not None and scheme.weights.strategy in ("group", "channel")
        assert scheme.weights.group_size in (compression["levels"]["group_size"], None)
