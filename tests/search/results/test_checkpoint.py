"""`pressroom apply --format compressed-tensors`: checkpoints plain transformers loads in a fresh process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from evaluators.compressors import gptq_quantize, rtn_quantize
from evaluators.config import missing_packages
from evaluators.saving.checkpoint import FORMAT, recover_grid, save_compressed_tensors
from spaces import Profile

#: Logits of the loaded checkpoint may differ from the evaluator's by float32 rounding of
#: scale * (q - zero), recomputed in another order: well below any quantisation error.
LOGITS_ATOL = 1e-4
#: The same rounding through SmolLM2's 30 blocks (logits of magnitude about 20).
SMOLLM2_ATOL = 1e-3
SMOLLM2 = "pressroom:smollm2-135m"
BITWIDTH = {  # group_size 16 divides the tiny Llama's 64 and 176 input columns
    "scheme": "bitwidth",
    "target": 4.0,
    "compressor": "rtn",
    "levels": {"choices": [2, 3, 4, 8, 16], "group_size": 16},
}
DROP = {"scheme": "drop", "target": 0.5}
TOKENS = [[5, 17, 42, 99, 3, 7, 11, 64, 23, 8, 1, 50]]

# Each runs in a fresh interpreter, with nothing of pressroom imported. Plain transformers:
PLAIN = """
import json, sys, torch, transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
"""
# compressed-tensors' own decompression, as transformers runs it but on real (not meta) modules, for
# asymmetric grids: compressed-tensors 0.20.1 compresses the meta model transformers builds without
# packing zero points (`PackedQuantizationCompressor.compress` returns early on meta), so plain
# `from_pretrained` refuses their packed shape (vllm-project/llm-compressor#1618; docs/results.md).
LIBRARY = """
import json, sys, torch, transformers
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
from safetensors.torch import load_file
config = transformers.AutoConfig.from_pretrained(sys.argv[1])
found = config.quantization_config
del config.quantization_config
model = transformers.AutoModelForCausalLM.from_config(config).eval()
fields = {k: v for k, v in found.items() if k in QuantizationConfig.model_fields}
quantization = QuantizationConfig.model_validate(fields)
apply_quantization_config(model, quantization)
compressor = ModelCompressor(quantization_config=quantization)
compressor.compress_model(model)  # the packed layout, to load the checkpoint into
model.load_state_dict(load_file(sys.argv[1] + "/model.safetensors"), strict=True)
compressor.decompress_model(model)
"""
FORWARD = """
with torch.no_grad():
    logits = model(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits
quantized = {
    name: module.quantization_scheme.weights.num_bits
    for name, module in model.named_modules() if getattr(module, "quantization_scheme", None) is not None
}
found = {"logits": logits, "layers": model.config.num_hidden_layers, "class": type(model).__name__}
torch.save({**found, "quantized": quantized}, sys.argv[3])
"""


def _load_elsewhere(folder: Path, tmp_path: Path, loader: str = PLAIN) -> dict[str, Any]:
    result_file = tmp_path / "loaded.pt"
    done = subprocess.run(
        [sys.executable, "-c", loader + FORWARD, str(folder), json.dumps(TOKENS), str(result_file)],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(result_file)


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor(TOKENS), use_cache=False).logits


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("quantize", ["rtn", "gptq"])
def test_recover_grid_gives_back_the_integers_of_rtn_and_gptq(quantize, symmetric):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 80, generator=generator)
    inputs = torch.randn(512, 80, generator=generator)
    for bits in (2, 3, 4, 8):
        if quantize == "rtn":
            fake = rtn_quantize(weight, bits, group_size=32, symmetric=symmetric)
        else:
            fake = gptq_quantize(weight, inputs.T @ inputs, [bits], group_size=32, symmetric=symmetric)[0]
        scale, zero = recover_grid(fake, bits, 32, symmetric)
        assert scale.shape == zero.shape == (16, 3)
        assert bool(((zero >= 0) & (zero <= 2**bits - 1)).all())
        if symmetric:
            assert bool((zero == 2 ** (bits - 1)).all())  # signed integers, no zero point to store
        per_column = scale.repeat_interleave(32, dim=1)[:, :80], zero.repeat_interleave(32, dim=1)[:, :80]
        q = torch.round(fake / per_column[0]) + per_column[1]
        assert bool(((q >= 0) & (q <= 2**bits - 1)).all())
        torch.testing.assert_close((per_column[0] * (q - per_column[1])).float(), fake, rtol=0, atol=1e-6)


def test_a_symmetric_grid_is_signed_around_zero():
    weight = torch.tensor([[-1.0, 0.1, 0.45, 0.7]])
    # 2 bits: the step is 2 * 1.0 / 3, integers -2..1 around zero
    torch.testing.assert_close(
        rtn_quantize(weight, 2, group_size=-1, symmetric=True), torch.tensor([[-4.0, 0, 2, 2]]) / 3
    )
    with pytest.raises(ValueError, match="lies on no symmetric 2-bit grid"):
        # asymmetric: 0, 0, 0.4, 0.8 (integers 0..2 of step 0.4), no signed 2-bit grid holds them
        recover_grid(rtn_quantize(torch.tensor([[-0.2, 0.1, 0.45, 1.0]]), 2, group_size=-1), 2, 4, symmetric=True)


def test_half_precision_weights_are_recovered_where_their_rounding_allows():
    weight = torch.randn(8, 64, generator=torch.Generator().manual_seed(2))
    fake = rtn_quantize(weight, 4, group_size=32).to(torch.bfloat16)
    scale, zero = recover_grid(fake, 4, 32)
    q = torch.round(fake.double() / scale.repeat_interleave(32, dim=1)) + zero.repeat_interleave(32, dim=1)
    dequantised = scale.repeat_interleave(32, dim=1) * (q - zero.repeat_interleave(32, dim=1))
    torch.testing.assert_close(dequantised.to(torch.bfloat16), fake, rtol=2**-7, atol=0)
    with pytest.raises(ValueError, match=r"8-bit weights stored in torch\.bfloat16 are rounded too coarsely"):
        recover_grid(rtn_quantize(weight, 8, group_size=32).to(torch.bfloat16), 8, 32)


def test_a_weight_off_every_grid_is_refused():
    with pytest.raises(ValueError, match="lies on no 2-bit grid"):
        recover_grid(torch.randn(4, 32, generator=torch.Generator().manual_seed(1)), 2, 32)


def _check_bitwidth_checkpoint(
    evaluator: Any, profile: Profile, out: Path, loaded: dict[str, Any], atol: float
) -> None:
    """The loaded checkpoint's logits are the evaluator's; each quantised layer has its profile's bits in one
    config group with the spec's group size and symmetry; the weight bytes are parameters x bits / 8 plus grids."""
    levels = evaluator.spec.compression.levels
    evaluator.apply(profile)
    torch.testing.assert_close(loaded["logits"], _logits(evaluator.model), rtol=0, atol=atol)

    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    bits_of = evaluator.settings()
    seen: dict[str, int] = {}
    for group in config["config_groups"].values():
        for target in group["targets"]:
            assert target not in seen, f"{target} is in two config groups"
            seen[target] = group["weights"]["num_bits"]
        assert group["weights"]["group_size"] == levels.group_size
        assert group["weights"]["symmetric"] is levels.symmetric
    assert seen == {name: bits for name, bits in bits_of.items() if bits < 16}  # full names, the profile's bits
    assert set(config["ignore"]) >= {"lm_head", *(name for name, bits in bits_of.items() if bits == 16)}
    assert loaded["quantized"] == seen  # the loaded model's own modules carry the profile's bits

    # packed integers, scales (and zero points): about parameters x bits / 8 plus the grids, the rest dense
    stored = quantized = 0.0
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open has no __contains__
            if key.rsplit(".", 1)[0] in seen:
                tensor = handle.get_tensor(key)
                stored += tensor.numel() * tensor.element_size()
    for name, bits in seen.items():
        weight = evaluator.model.get_submodule(name).weight
        groups = weight.shape[0] * weight.shape[1] // levels.group_size
        zero_bytes = 0 if levels.symmetric else bits / 8
        quantized += weight.numel() * bits / 8 + groups * (weight.element_size() + zero_bytes)
    assert abs(stored - quantized) <= 0.1 * quantized, (stored, quantized)


@pytest.mark.parametrize(("compressor", "symmetric"), [("rtn", True), ("gptq", True), ("rtn", False), ("gptq", False)])
def test_a_bitwidth_profile_loads_as_compressed_tensors_with_the_evaluators_logits(
    compressor, symmetric, make_evaluator, tmp_path
):
    levels = {**BITWIDTH["levels"], "symmetric": symmetric}
    compression = {**BITWIDTH, "compressor": compressor, "levels": levels}
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression=compression)
    space = evaluator.space
    cycle = [2, 3, 4, 8, 16]
    profile = space.from_array([cycle[index % len(cycle)] for index in range(len(space.units))])
    out = save_compressed_tensors(evaluator, profile, tmp_path / "ct")
    # symmetric grids load with plain from_pretrained; asymmetric ones through the library (see LIBRARY)
    loaded = _load_elsewhere(out, tmp_path, PLAIN if symmetric else LIBRARY)
    assert loaded["class"] == "LlamaForCausalLM"
    _check_bitwidth_checkpoint(evaluator, profile, out, loaded, LOGITS_ATOL)


@pytest.mark.slow
@pytest.mark.skipif(missing_packages(SMOLLM2) is not None, reason=str(missing_packages(SMOLLM2)))
def test_a_symmetric_smollm2_profile_loads_with_plain_from_pretrained(make_evaluator, tmp_path):
    # RTN (no calibration statistics) at 4 bits only, on the first two of its 30 blocks: the cheapest
    # database and export on a real model (the model's conversion is cached for the session's other tests)
    levels = {"choices": [4, 16], "group_size": 64, "symmetric": True, "exact_budget": False}  # 64 divides 576, 1536
    include = ["model.layers.0.*", "model.layers.1.*"]
    compression = {"scheme": "bitwidth", "target": 8.0, "compressor": "rtn", "levels": levels, "include": include}
    evaluator = make_evaluator(model={"name": SMOLLM2}, compression=compression)
    units = len(evaluator.space.units)
    profile = evaluator.space.from_array([16 if index % 3 == 0 else 4 for index in range(units)])
    out = save_compressed_tensors(evaluator, profile, tmp_path / "ct")
    loaded = _load_elsewhere(out, tmp_path)
    assert loaded["class"] == "LlamaForCausalLM" and loaded["layers"] == 30
    _check_bitwidth_checkpoint(evaluator, profile, out, loaded, SMOLLM2_ATOL)


def test_a_depth_profile_loads_as_a_smaller_model_with_the_dropped_models_outputs(make_evaluator, tmp_path):
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression=DROP)
    space = evaluator.space
    profile = space.from_array([0, 1, 1, 0])  # blocks 1 and 2 go
    out = save_compressed_tensors(evaluator, profile, tmp_path / "depth")
    evaluator.apply(profile)
    expected = _logits(evaluator.model)
    loaded = _load_elsewhere(out, tmp_path)
    assert loaded["layers"] == 2 and loaded["class"] == "LlamaForCausalLM"
    torch.testing.assert_close(loaded["logits"], expected, rtol=0, atol=LOGITS_ATOL)
    assert Profile.from_json((out / "pressroom-profile.json").read_text()) == profile


def test_drops_of_parts_of_blocks_and_other_schemes_are_refused(make_evaluator, tmp_path):
    mlp = {"scheme": "drop", "target": 0.25, "drop_unit": "mlp"}
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression=mlp)
    profile = evaluator.space.from_array([int(index == 0) for index in range(len(evaluator.space.units))])
    with pytest.raises(ValueError, match=r"drops parts of blocks \[0\]"):
        save_compressed_tensors(evaluator, profile, tmp_path / "partial")
    sparsity = {"scheme": "sparsity", "target": 0.5, "compressor": "magnitude", "levels": {"max_levels": 2}}
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression=sparsity)
    refused = "writes bitwidth and drop profiles, not 'sparsity' ones: compressed-tensors has no sparse format since"
    with pytest.raises(ValueError, match=re.escape(refused + " 0.15")):
        save_compressed_tensors(evaluator, evaluator.space.uniform(), tmp_path / "sparse")
    wide = {**BITWIDTH, "target": 8.0, "levels": {"choices": [4, 12, 16], "group_size": 16}}
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression=wide)
    profile = evaluator.space.from_array([12] * len(evaluator.space.units))
    with pytest.raises(ValueError, match=r"uses \[12\] bits, which pack-quantized cannot store; allowed: 1\.\.8"):
        save_compressed_tensors(evaluator, profile, tmp_path / "wide")
    assert not any((tmp_path / name).exists() for name in ("partial", "sparse", "wide"))


def test_the_apply_command_writes_a_smaller_model_and_names_its_formats(make_evaluator, write_spec, run_cli, tmp_path):
    space = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression=DROP).space
    (tmp_path / "profile.json").write_text(space.from_array([1, 0, 0, 1]).to_json())
    spec = str(write_spec(compression=DROP))
    out = tmp_path / "shallow"
    done = run_cli("apply", str(tmp_path / "profile.json"), "--spec", spec, "--out", str(out), "--format", FORMAT)
    assert done.returncode == 0, done.stderr
    shown = "".join(done.stdout.split())  # rich wraps long paths
    assert f"wrote{out}(compressed-tensors)" in shown and "AutoModelForCausalLM.from_pretrained" in shown
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    bad = run_cli("apply", str(tmp_path / "profile.json"), "--spec", spec, "--out", str(out), "--format", "gguf")
    assert bad.returncode == 2
    assert "--format 'gguf' is not known; allowed: dense, compressed-tensors" in " ".join(bad.stderr.split())
