"""Fused granularity (the projections serving engines fuse share a level) and the group-size rule."""

from __future__ import annotations

import numpy as np
import pytest
from spaces_strategies import llama_like_layers

from spaces import BitwidthScheme, LayerInfo, Space, make_units


def test_fused_units_tie_qkv_and_gate_up_of_each_block():
    layers = llama_like_layers(blocks=2)
    units = make_units(layers, "fused")
    assert [unit.name for unit in units[:4]] == [
        "model.layers.0.self_attn.q_proj+k_proj+v_proj",
        "model.layers.0.self_attn.o_proj",
        "model.layers.0.mlp.gate_proj+up_proj",
        "model.layers.0.mlp.down_proj",
    ]
    assert len(units) == 8
    assert [layer.name.rpartition(".")[2] for layer in units[0].layers] == ["q_proj", "k_proj", "v_proj"]
    assert units[0].numel == 3 * 4096 * 4096


def test_a_fused_profile_gives_one_level_to_every_tied_layer():
    layers = llama_like_layers(blocks=2)
    space = Space(layers, BitwidthScheme(4.0, choices=(2, 4, 8)), granularity="fused", model="demo")
    assert space.summary()["units"] == 8 and space.summary()["layers"] == 14
    rng = np.random.default_rng(0)
    for _ in range(20):
        profile = space.sample(rng)
        bits = space.layer_settings(profile)
        for b in range(2):
            prefix = f"model.layers.{b}."
            assert len({bits[prefix + f"self_attn.{p}_proj"] for p in "qkv"}) == 1
            assert bits[prefix + "mlp.gate_proj"] == bits[prefix + "mlp.up_proj"]
        # the cost counts every tied layer's weights
        assert space.cost(profile) == sum(layer.numel * bits[layer.name] for layer in layers)
        assert space.is_feasible(profile)


def test_layers_outside_the_fused_groups_keep_a_unit_each():
    layers = [LayerInfo(f"encoder.layer.0.attention.self.{n}", (8, 8), 64, 0) for n in ("query", "key", "value")]
    assert [u.name for u in make_units(layers, "fused")] == [u.name for u in make_units(layers, "layer")]


@pytest.mark.parametrize(("group_size", "ok"), [(16, True), (8, True), (176, True), (1024, True), (32, False)])
def test_the_group_size_must_divide_each_wider_layer(group_size, ok):
    layers = [
        LayerInfo("model.layers.0.self_attn.q_proj", (64, 64), 64 * 64, 0),
        LayerInfo("model.layers.0.mlp.down_proj", (64, 176), 64 * 176, 0),
    ]
    problem = BitwidthScheme(4.0, group_size=group_size).group_problem(layers)
    if ok:
        assert problem is None
    else:
        assert problem == (
            "group size 32 does not divide model.layers.0.mlp.down_proj's 176 input columns; use one that "
            "divides every wider layer's input width (here at most 16) or one of at least 176 (one group per row)"
        )
