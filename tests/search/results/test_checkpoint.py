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
from evaluators.saving.checkpoint import FORMAT, recover_grid, save_compressed_tensors
from spaces import Profile

#: Logits of the loaded checkpoint may differ from the evaluator's by float32 rounding of
#: scale * (q - zero), recomputed in another order: well below any quantisation error.
LOGITS_ATOL = 1e-4
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
# compressed-tensors' own decompression, as transformers runs it but on real (not meta) modules:
# compressed-tensors 0.20.1 compresses the meta model transformers builds without packing
# asymmetric zero points, so plain `from_pretrained` refuses their packed shape
# (vllm-project/llm-compressor#1618; docs/results.md).
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
torch.save({"logits": logits, "layers": model.config.num_hidden_layers, "class": type(model).__name__}, sys.argv[3])
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


@pytest.mark.parametrize("quantize", ["rtn", "gptq"])
def test_recover_grid_gives_back_the_integers_of_rtn_and_gptq(quantize):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 80, generator=generator)
    inputs = torch.randn(512, 80, generator=generator)
    for bits in (2, 3, 4, 8):
        if quantize == "rtn":
            fake = rtn_quantize(weight, bits, group_size=32)
        else:
            fake = gptq_quantize(weight, inputs.T @ inputs, [bits], group_size=32)[0]
        scale, zero = recover_grid(fake, bits, 32)
        assert scale.shape == zero.shape == (16, 3)
        assert bool(((zero >= 0) & (zero <= 2**bits - 1)).all())
        per_column = scale.repeat_interleave(32, dim=1)[:, :80], zero.repeat_interleave(32, dim=1)[:, :80]
        q = torch.round(fake / per_column[0]) + per_column[1]
        assert bool(((q >= 0) & (q <= 2**bits - 1)).all())
        torch.testing.assert_close((per_column[0] * (q - per_column[1])).float(), fake, rtol=0, atol=1e-6)


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


@pytest.mark.parametrize("compressor", ["rtn", "gptq"])
def test_a_bitwidth_profile_loads_as_compressed_tensors_with_the_evaluators_logits(
    compressor, make_evaluator, tmp_path
):
    compression = {**BITWIDTH, "compressor": compressor}
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression=compression)
    space = evaluator.space
    cycle = [2, 3, 4, 8, 16]
    profile = space.from_array([cycle[index % len(cycle)] for index in range(len(space.units))])
    out = save_compressed_tensors(evaluator, profile, tmp_path / "ct")
    evaluator.apply(profile)
    expected = _logits(evaluator.model)
    loaded = _load_elsewhere(out, tmp_path, LIBRARY)
    assert loaded["class"] == "LlamaForCausalLM"
    torch.testing.assert_close(loaded["logits"], expected, rtol=0, atol=LOGITS_ATOL)

    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    bits_of = {name: bits for name, bits in evaluator.settings().items()}
    seen: dict[str, int] = {}
    for group in config["config_groups"].values():
        for target in group["targets"]:
            assert target not in seen, f"{target} is in two config groups"
            seen[target] = group["weights"]["num_bits"]
            assert group["weights"]["group_size"] == 16 and group["weights"]["symmetric"] is False
    assert seen == {name: bits for name, bits in bits_of.items() if bits < 16}  # full names, the profile's bits
    assert set(config["ignore"]) >= {"lm_head", *(name for name, bits in bits_of.items() if bits == 16)}

    # packed integers, scales and zero points: about parameters x bits / 8 plus the grids, and the rest dense
    stored = quantized = 0
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open has no __contains__
            tensor = handle.get_tensor(key)
            layer = key.rsplit(".", 1)[0]
            if layer in seen:
                stored += tensor.numel() * tensor.element_size()
    for name, bits in seen.items():
        weight = evaluator.model.get_submodule(name).weight
        groups = weight.shape[0] * weight.shape[1] // 16
        quantized += weight.numel() * bits / 8 + groups * (weight.element_size() + bits / 8)
    assert abs(stored - quantized) <= 0.1 * quantized, (stored, quantized)


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


@pytest.fixture(scope="module")
def bitwidth_checkpoint(make_evaluator, tmp_path_factory):
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression=BITWIDTH)
    profile = evaluator.space.from_array([4] * len(evaluator.space.units))
    return save_compressed_tensors(evaluator, profile, tmp_path_factory.mktemp("plain") / "ct")


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
