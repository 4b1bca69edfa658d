"""Models and their layer inventory: built-ins offline, content fingerprints, tasks, patterns, drop units."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evaluators import BUILTINS, CompressionSpec, ModelSpec, build_space, load_model, take_inventory
from evaluators.inventory import weight_view
from evaluators.models import minilm_path

PRESSROOM = str(Path(sys.executable).with_name("pressroom"))


@pytest.fixture(scope="module")
def models():
    """Load each built-in once for the module."""
    loaded = {}

    def get(name: str):
        if name not in loaded:
            loaded[name] = load_model(ModelSpec(name=name))
        return loaded[name]

    return get


def _compression(**spec: object) -> CompressionSpec:
    return CompressionSpec.model_validate(spec)


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("pressroom:minilm", "encoder"),
        ("pressroom:tiny-llama", "causal-lm"),
        ("pressroom:tiny-gpt2", "causal-lm"),
        ("pressroom:tiny-bert", "encoder"),
    ],
)
def test_every_built_in_loads_offline_with_its_task_detected(models, name, task):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # tests/conftest.py: nothing may come from a hub
    loaded = models(name)
    assert (loaded.task, loaded.source) == (task, name)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    ids = loaded.tokenizer("Compression keeps what matters.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = loaded.model(input_ids=ids)
    assert out[0].shape[:2] == ids.shape
    # every built-in is loaded here, but SmolLM2 (a 30 s conversion): test_smollm2.py loads it, marked slow
    builtins = {name.removeprefix("pressroom:") for name in BUILTINS} - {"smollm2-135m"}
    assert builtins == {"minilm", "tiny-llama", "tiny-gpt2", "tiny-bert"}


def test_fingerprints_are_deterministic_and_tell_models_apart(models):
    again = load_model(ModelSpec(name="pressroom:tiny-llama"))
    assert again.fingerprint == models("pressroom:tiny-llama").fingerprint
    assert torch.equal(again.model.lm_head.weight, models("pressroom:tiny-llama").model.lm_head.weight)
    prints = {models(f"pressroom:{name}").fingerprint for name in BUILTINS}
    assert len(prints) == len(BUILTINS)
    assert all(len(p) == 16 and int(p, 16) >= 0 for p in prints)


def test_the_fingerprint_depends_on_content_not_on_where_the_model_was_loaded(models, tmp_path):
    copy = Path(shutil.copytree(minilm_path(), tmp_path / "my-minilm"))
    assert load_model(ModelSpec(name=str(copy))).fingerprint == models("pressroom:minilm").fingerprint

    # One changed weight in the file: a bias small enough that the fingerprint reads all of it
    # (it reads the first and last 4 KiB of each tensor, which covers every byte of this one).
    weights = load_file(copy / "model.safetensors")
    key = next(k for k in sorted(weights) if k.endswith("layer.2.attention.output.dense.bias"))
    assert weights[key].numel() * weights[key].element_size() <= 4096
    weights[key][7] += 0.01
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    edited = load_model(ModelSpec(name=str(copy)))
    assert edited.fingerprint != models("pressroom:minilm").fingerprint


def test_a_task_the_model_cannot_serve_fails_before_the_weights_load(monkeypatch):
    with pytest.raises(ValueError, match=r"^task 'causal-lm' does not fit model 'pressroom:tiny-bert', whose task "):
        load_model(ModelSpec(name="pressroom:tiny-bert"), task="causal-lm")
    with pytest.raises(ValueError, match=r"whose task is 'causal-lm'; use 'causal-lm' or 'auto'$"):
        load_model(ModelSpec(name="pressroom:tiny-gpt2"), task="encoder")

    import transformers

    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded for a model whose task does not fit")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    with pytest.raises(
        ValueError, match=r"^task 'causal-lm' does not fit model 'pressroom:minilm', whose task is 'enc"
    ):
        load_model(ModelSpec(name="pressroom:minilm"), task="causal-lm")


def test_an_unknown_built_in_names_the_built_ins():
    with pytest.raises(ValueError, match=r"^unknown built-in model pressroom:tiny-t5; allowed: \[.*'tiny-llama'"):
        load_model(ModelSpec(name="pressroom:tiny-t5"))


@pytest.mark.parametrize("name", ["/nonexistent/model-folder", "no-such-org/no-such-model"])
def test_a_model_that_cannot_be_found_offline_is_one_clear_error(name):
    with pytest.raises(ValueError) as caught:
        load_model(ModelSpec(name=name))
    message = str(caught.value)
    assert message.startswith(f"model.name {name!r} is neither a built-in ['pressroom:minilm', ")
    assert "\n" not in message


def _minilm_without_tokenizer(folder: Path) -> Path:
    copy = Path(shutil.copytree(minilm_path(), folder))
    for path in copy.iterdir():
        if path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            path.unlink()
    return copy


def test_a_model_folder_without_tokenizer_files_is_refused_before_its_weights_load(tmp_path):
    folder = _minilm_without_tokenizer(tmp_path / "no-tokenizer")
    with pytest.raises(ValueError) as caught:
        load_model(ModelSpec(name=str(folder)))
    message = str(caught.value)
    assert message.startswith(f"model.name {str(folder)!r}: the folder {folder} holds no tokenizer; expected one of [")
    assert "'tokenizer.json'" in message and "'vocab.txt'" in message and "\n" not in message


def test_a_tokenizer_with_an_empty_vocabulary_is_refused(tmp_path):
    # transformers reads an empty vocab.txt as special tokens only: every word would be [UNK]
    folder = _minilm_without_tokenizer(tmp_path / "empty-vocab")
    (folder / "vocab.txt").write_text("")
    with pytest.raises(ValueError, match=r"has a tokenizer without a vocabulary \(special tokens only\); expected"):
        load_model(ModelSpec(name=str(folder)))


def _names(inventory) -> list[str]:
    return [layer.name for layer in inventory.layers]


def test_llama_inventory_is_every_block_linear_keyed_by_module_name(models):
    model = models("pressroom:tiny-llama").model
    inventory = take_inventory(model, _compression())
    projections = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
    projections += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert _names(inventory) == [f"model.layers.{b}.{p}" for b in range(4) for p in projections]
    modules = dict(model.named_modules())
    for layer in inventory.layers:
        assert inventory.modules[layer.name] is modules[layer.name]
        assert layer.block == int(layer.name.split(".")[2])
        assert layer.kind == ("attn" if ".self_attn." in layer.name else "mlp")
        assert layer.shape == tuple(modules[layer.name].weight.shape)
        assert layer.numel == modules[layer.name].weight.numel()
    assert "lm_head" not in inventory.modules  # heads and embeddings stay dense
    assert len(inventory) == 28


def test_gpt2_conv1d_layers_are_seen_through_a_transposed_view(models):
    model = models("pressroom:tiny-gpt2").model
    inventory = take_inventory(model, _compression())
    parts = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert _names(inventory) == [f"transformer.h.{b}.{p}" for b in range(4) for p in parts]
    shapes = {layer.name.split(".", 3)[3]: layer.shape for layer in inventory.layers if layer.block == 0}
    assert shapes == {"attn.c_attn": (192, 64), "attn.c_proj": (64, 64), "mlp.c_fc": (256, 64), "mlp.c_proj": (64, 256)}
    module = inventory.modules["transformer.h.1.mlp.c_fc"]
    assert tuple(module.weight.shape) == (64, 256)  # Conv1D stores (in, out)
    view = weight_view(module)
    assert view.shape == (256, 64)
    before = module.weight[3, 5].item()
    try:
        view[5, 3] = 42.0  # writing through the view changes the layer
        assert module.weight[3, 5].item() == 42.0
    finally:
        module.weight.data[3, 5] = before
    assert [layer.block for layer in inventory.layers] == [b for b in range(4) for _ in parts]


def test_bert_inventory_leaves_the_pooler_alone(models):
    model = models("pressroom:tiny-bert").model
    inventory = take_inventory(model, _compression())
    parts = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]
    parts += ["intermediate.dense", "output.dense"]
    assert _names(inventory) == [f"encoder.layer.{b}.{p}" for b in range(4) for p in parts]
    assert [layer.kind for layer in inventory.layers[:6]] == ["attn"] * 4 + ["mlp"] * 2
    assert not any("pooler" in name for name in inventory.modules)


def test_minilm_inventory_has_six_blocks(models):
    inventory = take_inventory(models("pressroom:minilm").model, _compression())
    assert len(inventory) == 36
    assert sorted({layer.block for layer in inventory.layers}) == list(range(6))


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (["model.layers.0.*", "model.layers.1.*"], [], {(b, k) for b in (0, 1) for k in ("attn", "mlp")}),
        (["*"], ["*.mlp.*"], {(b, "attn") for b in range(4)}),
        (["*.q_proj", "*.down_proj"], ["model.layers.3.*"], {(b, k) for b in range(3) for k in ("attn", "mlp")}),
    ],
)
def test_include_and_exclude_are_globs_on_module_names(models, include, exclude, expected):
    model = models("pressroom:tiny-llama").model
    inventory = take_inventory(model, _compression(include=include, exclude=exclude))
    assert {(layer.block, layer.kind) for layer in inventory.layers} == expected
    spec = _compression(include=include, exclude=exclude)
    assert all(spec.selects(name) for name in inventory.modules)
    assert not any(spec.selects(n) for n, m in model.named_modules() if n not in inventory.modules and "proj" in n)


def test_patterns_that_match_nothing_are_a_clear_error(models):
    with pytest.raises(ValueError, match=r"^no compressible layer matches include=\['decoder\.\*'\] exclude=\[\];"):
        take_inventory(models("pressroom:tiny-llama").model, _compression(include=["decoder.*"]))
    with pytest.raises(ValueError, match=r"exclude=\['\*'\]"):
        take_inventory(models("pressroom:tiny-llama").model, _compression(exclude=["*"]))


@pytest.mark.parametrize(
    ("model", "attn", "mlp"),
    [
        ("pressroom:tiny-llama", "model.layers.{}.self_attn.o_proj", "model.layers.{}.mlp.down_proj"),
        ("pressroom:tiny-gpt2", "transformer.h.{}.attn.c_proj", "transformer.h.{}.mlp.c_proj"),
        ("pressroom:tiny-bert", "encoder.layer.{}.attention.output.dense", "encoder.layer.{}.output.dense"),
    ],
)
def test_drop_units_are_the_output_projections(models, model, attn, mlp):
    module = models(model).model
    for unit, want in [("block", (attn, mlp)), ("sub-block", (attn, mlp)), ("attn", (attn,)), ("mlp", (mlp,))]:
        spec = _compression(scheme="drop", target=0.25, drop_unit=unit)
        inventory = take_inventory(module, spec)
        assert _names(inventory) == [pattern.format(b) for b in range(4) for pattern in want]
        space = build_space(inventory, spec, "fp")
        assert len(space) == (4 if unit == "block" else len(inventory))


def test_build_db_prints_where_the_database_is(tmp_path, cache_dir):
    spec = {
        "model": {"name": "pressroom:tiny-llama"},
        "compression": {"scheme": "sparsity", "target": 0.5, "compressor": "magnitude", "levels": {"max_levels": 2}},
        "data": {"seq_len": 64, "calibration_tokens": 4096, "heldout_tokens": 1024, "stats_tokens": 1024},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [PRESSROOM, "build-db", str(path), "--cache-dir", str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # rich wraps the path at the console width when stdout is not a terminal; join it back.
    found = re.search(r"database ready: (.+?)\n  compressor magnitude, 28 layers, ", result.stdout, re.DOTALL)
    assert found is not None, result.stdout
    root = Path(found.group(1).replace("\n", ""))
    assert root.is_relative_to(cache_dir / "db")
    assert (root / "manifest.json").is_file()
    # the start's steps, timed, in the log (stderr)
    for step in ("loaded model", "prepared data", "built the dense teacher", "opened the compression database"):
        assert re.search(rf"INFO evaluators\.evaluator: start: {step} in \d+\.\d s \(", result.stderr), step
