"""The summary parameters that stand for a profile on the dashboard."""

from __future__ import annotations

import numpy as np
import pytest

from search.results.summary import MAX_PARAMS, ProfileSummary, layer_type
from spaces import BitwidthScheme, LayerInfo, Space, SparsityScheme

TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _layers(blocks: int, types: tuple[str, ...] = TYPES) -> list[LayerInfo]:
    return [
        LayerInfo(f"model.layers.{b}.{'mlp' if 'p_' in t or 'down' in t else 'self_attn'}.{t}", (64, 64), 4096, b)
        for b in range(blocks)
        for t in types
    ]


def test_block_groups_and_layer_types_in_model_order():
    space = Space(_layers(8), SparsityScheme(0.5), model="m")
    summary = ProfileSummary(space)
    names = list(summary.distributions)
    assert names[:4] == ["sparsity blocks 0-1", "sparsity blocks 2-3", "sparsity blocks 4-5", "sparsity blocks 6-7"]
    assert names[4:] == [f"sparsity {t}" for t in TYPES]
    uniform = summary.params(space.to_array(space.uniform()))
    assert uniform == pytest.approx(dict.fromkeys(names, 0.5), abs=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):
        for name, value in summary.params(space.sample_array(rng)).items():
            assert summary.distributions[name]._contains(value)


def test_too_many_layer_types_fall_back_to_attention_and_mlp():
    types = tuple(f"proj{i}" for i in range(10))
    layers = [LayerInfo(f"b{b}.{t}", (8, 8), 64, b, kind="attn" if i < 4 else "mlp")
              for b in range(3) for i, t in enumerate(types)]  # fmt: skip
    summary = ProfileSummary(Space(layers, BitwidthScheme(4.0, choices=(2, 4, 8)), model="m"))
    assert list(summary.distributions) == ["bits block 0", "bits block 1", "bits block 2", "bits attn", "bits mlp"]
    assert len(summary.distributions) <= MAX_PARAMS


def test_block_granularity_has_block_groups_only():
    space = Space(_layers(2), SparsityScheme(0.5), granularity="block", model="m")
    assert list(ProfileSummary(space).distributions) == ["sparsity block 0", "sparsity block 1"]


def test_layer_type_is_the_last_name_component():
    assert layer_type("model.layers.3.mlp.up_proj") == "up_proj" and layer_type("fc") == "fc"
