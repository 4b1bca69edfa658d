"""The mixed scheme: dense, unstructured and N:M levels under a least-average-sparsity budget.

The oracles here compute kept weights from the per-layer settings (`decode`), not from
`Space.cost`, so feasibility is checked against the scheme's definition: a profile is feasible
when its units' kept weights, in grains rounded up, fit ``floor((1 - target) * weights / grain)``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from spaces import LayerInfo, MixedScheme, Profile, Space, make_units, scheme_from_dict

SMALL = settings(max_examples=60, deadline=None)


def _layer(name: str, out: int, inp: int, block: int) -> LayerInfo:
    return LayerInfo(name, (out, inp), out * inp, block)


def minilm_layers() -> list[LayerInfo]:
    """all-MiniLM-L6-v2's 36 linear layers (six blocks of q, k, v, o, fc1, fc2)."""
    shapes = {
        "q": (384, 384),
        "k": (384, 384),
        "v": (384, 384),
        "o": (384, 384),
        "fc1": (1536, 384),
        "fc2": (384, 1536),
    }
    return [_layer(f"encoder.layer.{b}.{name}", *shape, b) for b in range(6) for name, shape in shapes.items()]


# --- independent oracles ----------------------------------------------------------------------


def kept_weights(space: Space, levels: list[int]) -> list[int]:
    """Per unit, weights kept, from the per-layer settings alone."""
    out = []
    for unit, level in zip(space.units, levels, strict=True):
        settings_ = space.scheme.layer_settings(unit, level)
        pruned = sum(MixedScheme.decode(s)[0] for s in settings_.values())
        out.append(unit.numel - pruned)
    return out


def feasible_by_definition(space: Space, levels: list[int]) -> bool:
    scheme = space.scheme
    assert isinstance(scheme, MixedScheme) and scheme.grain is not None
    grains = sum(math.ceil(k / scheme.grain) for k in kept_weights(space, levels))
    total = sum(unit.numel for unit in space.units)
    return grains <= math.floor((1 - scheme.target) * total / scheme.grain + 1e-9)


def brute_force(space: Space) -> list[tuple[int, ...]]:
    return [combo for combo in itertools.product(*space.levels) if feasible_by_definition(space, list(combo))]


@st.composite
def mixed_spaces(draw: st.DrawFn, max_units: int = 4) -> Space:
    """Small layers with input dimensions that m may or may not divide; grains from 1 to 16."""
    m = draw(st.sampled_from([2, 4, 8]))
    n = draw(st.integers(1, m - 1))
    count = draw(st.integers(2, max_units))
    layers = []
    for i in range(count):
        inp = draw(st.sampled_from([m, 2 * m, 3 * m, 7, 12]))
        out = draw(st.integers(2, 8))
        layers.append(_layer(f"blocks.{i // 2}.fc{i % 2}", out, inp, i // 2))
    sparsities = tuple(draw(st.lists(st.sampled_from([0.25, 0.5, 0.6, 0.75, 0.9]), max_size=3, unique=True)))
    target = draw(st.sampled_from([0.2, 0.4, 0.5, 0.6]))
    granularity = draw(st.sampled_from(["layer", "block"]))
    smallest = min(u.numel for u in make_units(layers, granularity))
    grain = draw(st.integers(1, max(1, smallest // 4)))
    scheme = MixedScheme(target, sparsities=sparsities, n=n, m=m, grain=grain)
    note(f"{scheme!r} {granularity} {[layer.shape for layer in layers]}")
    try:
        space = Space(layers, scheme, granularity=granularity, model="test-model")
    except ValueError as exc:  # too few prunable levels for the target, or a grain too coarse
        assume(False)
        raise AssertionError from exc
    assume(math.prod(len(levels) for levels in space.levels) <= 2000)
    return space


# --- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MixedScheme(0.0), "strictly between 0 and 1, got 0.0"),
        (lambda: MixedScheme(1.0), "strictly between 0 and 1, got 1.0"),
        (lambda: MixedScheme(0.5, sparsities=(0.5, 1.0)), r"sparsities must each lie .* got \[0.5, 1.0\]"),
        (lambda: MixedScheme(0.5, sparsities=(0.0,)), r"got \[0.0\]"),
        (lambda: MixedScheme(0.5, sparsities=(0.6, 0.6)), r"must not repeat, got \[0.6, 0.6\]"),
        (lambda: MixedScheme(0.5, n=4, m=4), "1 <= n < m, got n=4, m=4"),
        (lambda: MixedScheme(0.5, n=0, m=4), "n=0"),
        (lambda: MixedScheme(0.5, n=2.5, m=4), "n=2.5"),
        (lambda: MixedScheme(0.5, grain=0), "grain must be a positive whole number of weights, got 0"),
    ],
)
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_target_no_level_reaches_is_refused():
    layers = minilm_layers()
    with pytest.raises(ValueError, match=r"no profile meets the mixed target 0.9 within"):
        Space(layers, MixedScheme(0.9, sparsities=(0.5, 0.6)))


def test_a_grain_coarser_than_a_level_keeps_is_refused():
    with pytest.raises(
        ValueError, match=r"unit 'a' has 64 weights: at sparsity 0.9 it keeps less than one grain of 32"
    ):
        Space([_layer("a", 8, 8, 0), _layer("b", 8, 8, 1)], MixedScheme(0.5, sparsities=(0.9,), grain=32))


# --- levels, costs and settings -----------------------------------------------------------------


def test_levels_are_ordered_by_sparsity_with_the_pattern_after_an_equal_unstructured_level():
    scheme = MixedScheme(0.6, sparsities=(0.7, 0.5, 0.6))
    assert scheme.options() == ((0.0, False), (0.5, False), (0.5, True), (0.6, False), (0.7, False))
    assert scheme.structured_level == 2 and scheme.pattern == "2:4"
    assert [scheme.is_structured(level) for level in range(5)] == [False, False, True, False, False]
    assert MixedScheme(0.5, sparsities=(0.5,), n=1, m=4).options()[-1] == (0.75, True)
    assert (
        MixedScheme.decode(-8) == (8, True)
        and MixedScheme.decode(8) == (8, False)
        and MixedScheme.decode(0) == (0, False)
    )


def test_on_minilm_every_level_keeps_whole_grains_and_the_pattern_half():
    space = Space(minilm_layers(), MixedScheme(0.6), model="minilm")
    scheme = space.scheme
    assert isinstance(scheme, MixedScheme)
    assert scheme.grain == 147456 // 256 == 576
    assert space.budget == math.floor(0.4 * 10616832 / 576)
    assert not space.exact
    for unit, levels in zip(space.units, space.levels, strict=True):
        assert levels == (0, 1, 2, 3, 4, 5)  # 384 and 1536 inputs: 2:4 fits everywhere
        for level in levels:
            [(name, setting)] = scheme.layer_settings(unit, level).items()
            pruned, structured = MixedScheme.decode(setting)
            assert structured == (level == 2) and name == unit.name
            sparsity, _ = scheme.options()[level]
            assert pruned >= sparsity * unit.numel  # a level prunes at least its sparsity
            assert pruned / unit.numel - sparsity < scheme.grain / unit.numel
            assert space.scheme.meaning(unit, level) == pruned / unit.numel
            assert scheme.cost(unit, level) == math.ceil((unit.numel - pruned) / scheme.grain)
        assert scheme.layer_settings(unit, 2) == {unit.name: -unit.numel // 2}
    uniform = space.uniform()
    assert uniform is not None and set(uniform.values()) == {3}  # 60 % unstructured
    assert space.is_feasible(uniform) and space.average(uniform) >= 0.6


def test_units_whose_input_m_does_not_divide_have_no_pattern_level():
    layers = [_layer("blocks.0.a", 8, 12, 0), _layer("blocks.0.b", 8, 7, 0), _layer("blocks.1.c", 8, 16, 1)]
    space = Space(layers, MixedScheme(0.5, sparsities=(0.5,), grain=4), model="m")
    assert space.levels == ((0, 1, 2), (0, 1), (0, 1, 2))
    assert space.uniform() is not None and list(space.uniform().values()) == [1, 1, 1]
    # A block unit needs the pattern in every layer.
    blocks = Space(layers, MixedScheme(0.5, sparsities=(0.5,), grain=4), granularity="block", model="m")
    assert blocks.levels == ((0, 1), (0, 1, 2))
    pattern = blocks.scheme.layer_settings(blocks.units[1], 2)
    assert pattern == {"blocks.1.c": -64}
    # The uniform profile may be the pattern itself.
    only = Space([layers[0], layers[2]], MixedScheme(0.5, sparsities=(), grain=4), model="m")
    assert list(only.uniform().values()) == [2 - 1, 2 - 1]  # levels: dense 0, 2:4 1
    assert only.scheme.is_structured(1)
    assert Space(layers, MixedScheme(0.4, sparsities=(0.5,), grain=4), model="m").uniform() is None  # no 40 % level


def test_block_units_split_unstructured_counts_over_their_layers():
    layers = [_layer("blocks.0.a", 8, 12, 0), _layer("blocks.0.b", 24, 12, 0), _layer("blocks.1.c", 8, 16, 1)]
    space = Space(layers, MixedScheme(0.5, sparsities=(0.3, 0.7), grain=3), granularity="block", model="m")
    for unit, levels in zip(space.units, space.levels, strict=True):
        for level in levels:
            settings_ = space.scheme.layer_settings(unit, level)
            counts = [MixedScheme.decode(v)[0] for v in settings_.values()]
            assert sum(counts) == space.scheme.pruned(unit, level)
            assert all(0 <= c <= layer.numel for c, layer in zip(counts, unit.layers, strict=True))


def test_the_scheme_round_trips_through_json_and_profiles():
    space = Space(minilm_layers(), MixedScheme(0.55, sparsities=(0.5, 0.7), n=1, m=4), model="minilm")
    data = json.loads(json.dumps(space.scheme.to_dict()))
    assert data == {"name": "mixed", "target": 0.55, "sparsities": [0.5, 0.7], "n": 1, "m": 4, "grain": 576}
    assert scheme_from_dict(data) == space.scheme
    profile = space.sample(np.random.default_rng(0))
    again = Profile.from_json(profile.to_json())
    assert again == profile and space.is_feasible(again)
    space.check(again)


# --- sampling, projection, switches (property tests) ---------------------------------------------


@SMALL
@given(space=mixed_spaces(), seed=st.integers(0, 2**32 - 1))
def test_samples_are_feasible_and_at_least_the_target_sparsity(space, seed):
    rng = np.random.default_rng(seed)
    total = sum(unit.numel for unit in space.units)
    for _ in range(10):
        levels = space.sample_array(rng).tolist()
        assert space.is_feasible(space.from_array(levels))
        assert feasible_by_definition(space, levels)
        assert sum(kept_weights(space, levels)) <= (1 - space.scheme.target) * total + 1e-6
        assert space.average(space.from_array(levels)) >= space.scheme.target - 1e-9


@settings(max_examples=15, deadline=None, derandomize=True)
@given(space=mixed_spaces(max_units=3))
def test_sampling_is_uniform_over_the_enumerated_feasible_set(space):
    feasible = brute_force(space)
    assert space.log_size() == pytest.approx(math.log(len(feasible)), abs=1e-9)
    assume(2 <= len(feasible) <= 60)
    rng = np.random.default_rng(len(feasible))
    counts = Counter(tuple(int(v) for v in space.sample_array(rng)) for _ in range(max(30 * len(feasible), 600)))
    assert set(counts) <= set(feasible)
    assert chisquare([counts[combo] for combo in feasible]).pvalue > 1e-4


@SMALL
@given(space=mixed_spaces(), seed=st.integers(0, 2**32 - 1))
def test_project_is_the_best_feasible_profile(space, seed):
    rng = np.random.default_rng(seed)
    scores = [rng.normal(size=len(levels)) for levels in space.levels]
    best = space.project(scores)
    value = lambda combo: sum(scores[i][space.levels[i].index(v)] for i, v in enumerate(combo))  # noqa: E731
    feasible = brute_force(space)
    chosen = tuple(int(v) for v in space.to_array(best))
    assert chosen in feasible
    assert value(chosen) == pytest.approx(max(value(c) for c in feasible))


@SMALL
@given(space=mixed_spaces(), seed=st.integers(0, 2**32 - 1))
def test_switches_keep_the_cost(space, seed):
    rng = np.random.default_rng(seed)
    levels = space.sample_array(rng)
    cost = space.cost(levels)
    for up, down in space.switch_pairs(space.from_array(levels)):
        moved = space.switch(levels, space.index[up], space.index[down])
        assert space.cost(moved) == cost and space.is_feasible(moved)


def test_minilm_switches_stay_inside_equal_size_groups():
    space = Space(minilm_layers(), MixedScheme(0.6), model="minilm")
    sizes = [{space.units[i].numel for i in group} for group in space.switch_groups]
    assert sorted(len(s) for s in sizes) == [1, 1] and len(space.switch_groups) == 2
    uniform = space.uniform()
    pairs = space.switch_pairs(uniform)
    assert pairs  # 60 % unstructured <-> 50 % / 70 %: equal steps of one size
    for up, down in pairs:
        assert space.units[space.index[up]].numel == space.units[space.index[down]].numel
