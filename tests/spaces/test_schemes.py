"""Level schemes: parameters, level ranges, costs, per-layer settings; layers and units."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spaces_strategies import (
    bit_choices,
    brute_force,
    build_space,
    describe,
    layer_lists,
    sparsity_schemes,
)

from spaces import (
    GRANULARITIES,
    SCHEMES,
    BitwidthScheme,
    DropScheme,
    LayerInfo,
    Space,
    SparsityScheme,
    Unit,
    make_units,
    scheme_from_dict,
)

FAST = settings(max_examples=60, deadline=None)


def _layers(*sizes: int, per_block: int = 1) -> list[LayerInfo]:
    return [LayerInfo(f"l{i}", (n,), n, block=i // per_block) for i, n in enumerate(sizes)]


# --- bad parameters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "shown"),
    [
        (lambda: SparsityScheme(0.0), "0.0"),
        (lambda: SparsityScheme(1.0), "1.0"),
        (lambda: SparsityScheme(-0.2), "-0.2"),
        (lambda: SparsityScheme(1.5), "1.5"),
        (lambda: SparsityScheme(math.nan), "nan"),
        (lambda: SparsityScheme(0.5, min_sparsity=0.6), "0.6"),
        (lambda: SparsityScheme(0.5, max_sparsity=0.4), "0.4"),
        (lambda: SparsityScheme(0.5, min_sparsity=-0.1), "-0.1"),
        (lambda: SparsityScheme(0.5, max_sparsity=1.0), "1.0"),
        (lambda: SparsityScheme(0.5, max_levels=-1), "-1"),
        (lambda: SparsityScheme(0.5, step=0), "0"),
        (lambda: SparsityScheme(0.5, step=-7), "-7"),
        (lambda: SparsityScheme(0.5, step=2.5), "2.5"),  # type: ignore[arg-type]
        (lambda: SparsityScheme(0.5, max_levels=4.0), "4.0"),  # type: ignore[arg-type]
        (lambda: BitwidthScheme(3.0, choices=()), "empty"),
        (lambda: BitwidthScheme(3.0, choices=(0, 3, 4)), "0"),
        (lambda: BitwidthScheme(3.0, choices=(2, 3, 17)), "17"),
        (lambda: BitwidthScheme(3.0, choices=(2, 3, 3)), "3"),
        (lambda: BitwidthScheme(3.0, choices=(2, 2.5, 4)), "2.5"),
        (lambda: BitwidthScheme(1.5, choices=(2, 3, 4)), "1.5"),
        (lambda: BitwidthScheme(4.5, choices=(2, 3, 4)), "4.5"),
        (lambda: BitwidthScheme(math.nan, choices=(2, 3, 4)), "nan"),
        (lambda: BitwidthScheme(3.0, group_size=0), "0"),
        (lambda: DropScheme(0.0), "0.0"),
        (lambda: DropScheme(1.0), "1.0"),
        (lambda: DropScheme(-0.5), "-0.5"),
        (lambda: DropScheme(math.nan), "nan"),
    ],
)
def test_bad_scheme_parameters_raise_value_error_naming_the_value(make, shown):
    with pytest.raises(ValueError) as info:
        make()
    assert shown in str(info.value)


def test_scheme_from_dict_rejects_unknown_names_and_parameters():
    with pytest.raises(ValueError, match="unknown scheme 'pruning'"):
        scheme_from_dict({"name": "pruning", "target": 0.5})
    with pytest.raises(ValueError, match="unknown scheme None"):
        scheme_from_dict({"target": 0.5})
    with pytest.raises(ValueError, match=r"bad parameters for scheme 'sparsity'.*colour"):
        scheme_from_dict({"name": "sparsity", "target": 0.5, "colour": "red"})
    with pytest.raises(ValueError, match="bad parameters for scheme 'drop'"):
        scheme_from_dict({"name": "drop"})
    with pytest.raises(ValueError, match=r"1\.5"):
        scheme_from_dict({"name": "drop", "target": 1.5})


@st.composite
def any_scheme(draw):
    kind = draw(st.sampled_from(sorted(SCHEMES)))
    if kind == "sparsity":
        return draw(sparsity_schemes())
    if kind == "bitwidth":
        choices = draw(bit_choices())
        target = draw(st.floats(min(choices), max(choices)))
        return BitwidthScheme(
            target, choices=choices, group_size=draw(st.integers(1, 256)), exact_budget=draw(st.booleans())
        )
    return DropScheme(draw(st.floats(0.01, 0.99)))


@FAST
@given(any_scheme())
def test_scheme_dict_round_trip(scheme):
    data = scheme.to_dict()
    assert data["name"] == scheme.name
    assert scheme_from_dict(data) == scheme
    assert scheme_from_dict(data).to_dict() == data


def test_bitwidth_choices_are_sorted_and_listed_in_the_dict():
    scheme = BitwidthScheme(4.0, choices=(16, 2, 8, 4, 3))
    assert scheme.choices == (2, 3, 4, 8, 16)
    assert scheme.to_dict()["choices"] == [2, 3, 4, 8, 16]
    assert BitwidthScheme(3.0, choices=[4, 2, 3]).choices == (2, 3, 4)  # type: ignore[arg-type]
    from_numpy = BitwidthScheme(3.0, choices=tuple(np.array([4, 2, 3])))
    assert from_numpy.choices == (2, 3, 4) and all(type(b) is int for b in from_numpy.choices)
    from_numpy_step = SparsityScheme(0.5, step=np.int64(64), max_levels=np.int32(4))
    assert type(from_numpy_step.step) is int and type(from_numpy_step.max_levels) is int
    assert json.loads(json.dumps(from_numpy_step.to_dict()))["step"] == 64


# --- layers and units ---------------------------------------------------------------------


def test_layer_info_validation_names_the_layer():
    with pytest.raises(ValueError, match="non-empty"):
        LayerInfo("", (4,), 4, block=0)
    with pytest.raises(ValueError, match=r"'fc'.*positive.*0"):
        LayerInfo("fc", (), 0, block=0)
    with pytest.raises(ValueError, match=r"'fc'.*12.*\(3, 5\)"):
        LayerInfo("fc", (3, 5), 12, block=0)
    with pytest.raises(ValueError, match=r"'fc'.*-1"):
        LayerInfo("fc", (4,), 4, block=-1)


def test_make_units_errors():
    layers = _layers(4, 4)
    with pytest.raises(ValueError, match="'row'"):
        make_units(layers, "row")
    with pytest.raises(ValueError, match="at least one layer"):
        make_units([], "layer")
    with pytest.raises(ValueError, match=r"repeated: \['l0'\]"):
        make_units([*layers, LayerInfo("l0", (2,), 2, block=5)], "layer")
    assert GRANULARITIES == ("layer", "fused", "block")


@FAST
@given(layer_lists(max_layers=8))
def test_make_units_partition_the_layers(layers):
    per_layer = make_units(layers, "layer")
    assert [u.name for u in per_layer] == [layer.name for layer in layers]
    assert all(u.layers == (layer,) and u.numel == layer.numel for u, layer in zip(per_layer, layers, strict=True))
    per_block = make_units(layers, "block")
    blocks = sorted({layer.block for layer in layers})
    assert [u.name for u in per_block] == [f"block.{b}" for b in blocks]
    for unit, block in zip(per_block, blocks, strict=True):
        members = tuple(layer for layer in layers if layer.block == block)
        assert unit.layers == members  # model order kept inside the block
        assert unit.block == block
        assert unit.numel == sum(layer.numel for layer in members)


# --- sparsity -----------------------------------------------------------------------------


@FAST
@given(
    layer_lists(max_layers=6),
    sparsity_schemes(min_levels=0, max_levels=8, max_step=200),
    st.sampled_from(GRANULARITIES),
)
def test_sparsity_levels_are_the_full_clipped_range(layers, scheme, granularity):
    """Levels are contiguous around 0, within N steps, in [min, max], and as many as fit."""
    space = build_space(layers, scheme, granularity)
    if space is None:
        return
    resolved = space.scheme
    assert isinstance(resolved, SparsityScheme)
    step, cap = resolved.step, resolved.max_levels
    assert step is not None and step >= 1
    for unit, levels in zip(space.units, space.levels, strict=True):
        lo, hi = levels[0], levels[-1]
        assert levels == tuple(range(lo, hi + 1))
        assert lo <= 0 <= hi
        assert -cap <= lo and hi <= cap
        for level in levels:
            sparsity = resolved.meaning(unit, level)
            assert resolved.min_sparsity <= sparsity <= resolved.max_sparsity, (unit.name, level, sparsity)
            assert 0 <= resolved.pruned(unit, level) <= unit.numel
        # Maximal: one more step either way leaves the range or passes N.
        for beyond in (lo - 1, hi + 1):
            pruned = resolved.base(unit.numel) + beyond * step
            outside = not (resolved.min_sparsity <= pruned / unit.numel <= resolved.max_sparsity)
            assert abs(beyond) > cap or outside, (unit.name, beyond)
        # Level 0 is the unit's target count, rounded to the nearest weight where that fits.
        exact = Fraction(resolved.target) * unit.numel
        assert abs(resolved.base(unit.numel) - exact) < 1


@FAST
@given(
    layer_lists(max_layers=6),
    sparsity_schemes(min_levels=0, max_levels=8, max_step=200),
    st.sampled_from(GRANULARITIES),
)
def test_every_sparsity_step_moves_exactly_d_weights_in_every_unit(layers, scheme, granularity):
    space = build_space(layers, scheme, granularity)
    if space is None:
        return
    resolved = space.scheme
    assert isinstance(resolved, SparsityScheme)
    d = resolved.step
    assert d is not None
    for unit, levels in zip(space.units, space.levels, strict=True):
        sums = [sum(resolved.layer_settings(unit, level).values()) for level in levels]
        assert sums == [resolved.pruned(unit, level) for level in levels]
        assert all(b - a == d for a, b in itertools.pairwise(sums))
        assert resolved.pruned(unit, 0) == resolved.base(unit.numel)


def test_default_step_follows_the_reference_formula():
    layers = _layers(4096, 1000, 20000)
    for target, levels in [(0.5, 8), (0.7, 8), (0.2, 3), (0.9, 0)]:
        space = Space(layers, SparsityScheme(target, max_levels=levels))
        expected = max(1, int(0.5 * min(target, 1 - target) / max(levels, 1) * 1000))
        assert space.scheme.step == expected  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="unresolved"):
        SparsityScheme(0.5).levels(Unit("l0", tuple(layers[:1])))


def _largest_remainder_ok(unit: Unit, total: int, counts: dict[str, int]) -> None:
    assert list(counts) == [layer.name for layer in unit.layers]
    assert sum(counts.values()) == total
    quotas = {layer.name: Fraction(total * layer.numel, unit.numel) for layer in unit.layers}
    rounded_up = []
    for layer in unit.layers:
        count, quota = counts[layer.name], quotas[layer.name]
        assert math.floor(quota) <= count <= math.ceil(quota), (layer.name, count, quota)
        assert 0 <= count <= layer.numel
        if count > quota:
            rounded_up.append(quota - math.floor(quota))
    # Those rounded up have remainders at least as large as any of those rounded down.
    kept = [quotas[n] - math.floor(quotas[n]) for n in counts if counts[n] == math.floor(quotas[n])]
    if rounded_up and kept:
        assert min(rounded_up) >= max(kept)


@FAST
@given(
    layer_lists(min_layers=2, max_layers=8, max_per_block=4, sizes=st.integers(1, 5000)),
    sparsity_schemes(min_levels=0, max_levels=8, max_step=500),
)
def test_block_sparsity_shares_the_units_count_by_largest_remainder(layers, scheme):
    space = build_space(layers, scheme, "block")
    if space is None:
        return
    resolved = space.scheme
    assert isinstance(resolved, SparsityScheme)
    for unit, levels in zip(space.units, space.levels, strict=True):
        for level in levels:
            settings_ = resolved.layer_settings(unit, level)
            _largest_remainder_ok(unit, resolved.pruned(unit, level), settings_)
            # Each layer's own sparsity is within one weight of its block's.
            for layer in unit.layers:
                share = settings_[layer.name] / layer.numel
                assert abs(share - resolved.meaning(unit, level)) <= 1 / layer.numel + 1e-12


def test_largest_remainder_on_a_known_split():
    unit = Unit("block.0", tuple(_layers(3, 3, 3, per_block=3)))
    scheme = SparsityScheme(0.5, step=1)
    # 5 of 9 pruned (base round(4.5) = 4, level 1 adds 1): quotas 5/3 each -> 2, 2, 1 (ties by order).
    assert scheme.layer_settings(unit, 1) == {"l0": 2, "l1": 2, "l2": 1}
    assert scheme.layer_settings(unit, 0) == {"l0": 2, "l1": 1, "l2": 1}


def test_large_block_counts_add_up_exactly():
    """Quotas near 2**53 must not overshoot through float rounding."""
    big = 2**40 + 1
    layers = [LayerInfo(f"l{i}", (), big + i, block=0) for i in range(3)]
    unit = Unit("block.0", tuple(layers))
    scheme = SparsityScheme(0.5, step=12345)
    for level in range(-8, 9):
        counts = scheme.layer_settings(unit, level)
        _largest_remainder_ok(unit, scheme.pruned(unit, level), counts)


def test_sparsity_target_at_the_range_edge_stays_in_range():
    """Rounding S*n must not push level 0 past max_sparsity (or below min_sparsity)."""
    for numel in range(1, 400):
        unit = Unit("fc", (LayerInfo("fc", (numel,), numel, block=0),))
        top = SparsityScheme(0.99, step=1, max_sparsity=0.99)
        assert top.meaning(unit, 0) <= 0.99, numel
        assert abs(top.base(numel) - 0.99 * numel) < 1
        bottom = SparsityScheme(0.5, step=1, min_sparsity=0.5)
        assert bottom.meaning(unit, 0) >= 0.5, numel
        assert abs(bottom.base(numel) - 0.5 * numel) < 1


def test_a_unit_with_no_sparsity_inside_the_range_is_rejected():
    layers = [LayerInfo("tiny", (2,), 2, block=0), LayerInfo("big", (100,), 100, block=1)]
    with pytest.raises(ValueError, match=r"'tiny'.*\[0\.3, 0\.4\]"):
        Space(layers, SparsityScheme(0.35, step=1, min_sparsity=0.3, max_sparsity=0.4))


def test_sparsity_cost_and_budget():
    space = Space(_layers(100, 200, 300), SparsityScheme(0.5, step=10))
    assert space.budget == 0 and space.exact
    for i, unit in enumerate(space.units):
        assert space.costs[i] == space.levels[i]
        assert space.scheme.uniform_level(unit) == 0


# --- bitwidth -----------------------------------------------------------------------------


@FAST
@given(layer_lists(max_layers=6), bit_choices(), st.sampled_from(GRANULARITIES), st.booleans())
def test_bitwidth_levels_costs_and_settings(layers, choices, granularity, exact):
    scheme = BitwidthScheme(max(choices), choices=choices, exact_budget=exact)
    space = Space(layers, scheme, granularity=granularity)
    assert space.exact is exact
    assert space.budget == max(choices) * sum(layer.numel for layer in layers)
    for unit, levels, costs in zip(space.units, space.levels, space.costs, strict=True):
        assert levels == tuple(sorted(choices))
        assert costs == tuple(unit.numel * b for b in levels)
        for b in levels:
            assert scheme.layer_settings(unit, b) == {layer.name: b for layer in unit.layers}
            assert scheme.meaning(unit, b) == float(b)


def test_bitwidth_uniform_level_and_overhead():
    unit = Unit("fc", (LayerInfo("fc", (8, 8), 64, block=0),))
    assert BitwidthScheme(4.0, choices=(2, 4, 8)).uniform_level(unit) == 4
    assert BitwidthScheme(3.0, choices=(2, 4, 8)).uniform_level(unit) is None
    assert BitwidthScheme(3.5, choices=(2, 3, 4, 5)).uniform_level(unit) is None
    assert BitwidthScheme(4.0, group_size=128).overhead_bits() == pytest.approx(0.25)
    assert BitwidthScheme(4.0, group_size=64).overhead_bits(scale_bits=8) == pytest.approx(0.25)


def test_infeasible_exact_budgets_raise_at_construction():
    # 2*2 + 3*3 = 13 weight-bits is the most; 11 lies inside [10, 15] yet no profile costs it.
    layers = _layers(2, 3)
    with pytest.raises(ValueError, match=r"bitwidth target 2\.2 exactly.*upper bound"):
        Space(layers, BitwidthScheme(2.2, choices=(2, 3)))
    # Costs are multiples of 4 bits per weight step: 4 * 3.5 = 14 is not reachable.
    with pytest.raises(ValueError, match=r"target 3\.5 exactly"):
        Space(_layers(4), BitwidthScheme(3.5, choices=(2, 4, 8)))
    # As an upper bound both are fine.
    assert Space(layers, BitwidthScheme(2.2, choices=(2, 3), exact_budget=False)).log_size() == 0.0
    # A drop target that rounds to no unit names the smallest useful target.
    with pytest.raises(ValueError, match=r"rounds to 0 of 4 units.*0\.25"):
        Space(_layers(1, 1, 1, 1), DropScheme(0.1))


@settings(max_examples=120, deadline=None)
@given(
    layer_lists(max_layers=4, sizes=st.sampled_from((1, 2, 3, 4, 6, 8, 12, 64, 96))),
    bit_choices(max_choices=3),
    st.sampled_from(GRANULARITIES),
    st.data(),
)
def test_exact_bitwidth_space_constructs_iff_some_profile_meets_the_budget(layers, choices, granularity, data):
    target = data.draw(st.integers(min(choices) * 100, max(choices) * 100)) / 100
    scheme = BitwidthScheme(target, choices=choices, exact_budget=True)
    units = make_units(layers, granularity)
    total = sum(u.numel for u in units)
    budget = math.floor(Fraction(str(target)) * total)
    reachable = any(
        sum(u.numel * b for u, b in zip(units, combo, strict=True)) == budget
        for combo in itertools.product(sorted(choices), repeat=len(units))
    )
    note = describe(layers, scheme, granularity)
    if reachable:
        space = Space(layers, scheme, granularity=granularity)
        assert space.budget == budget, note
        assert brute_force(space), note
    else:
        with pytest.raises(ValueError, match="no profile meets the bitwidth target"):
            Space(layers, scheme, granularity=granularity)


# --- drop ---------------------------------------------------------------------------------


@FAST
@given(layer_lists(min_layers=2, max_layers=8), st.floats(0.01, 0.99), st.sampled_from(GRANULARITIES))
def test_drop_scheme_levels_and_budget(layers, target, granularity):
    units = make_units(layers, granularity)
    k = round(target * len(units))
    scheme = DropScheme(target)
    if k == 0:
        with pytest.raises(ValueError, match="rounds to 0"):
            Space(layers, scheme, granularity=granularity)
        return
    space = Space(layers, scheme, granularity=granularity)
    assert space.budget == k and space.exact
    assert all(levels == (0, 1) for levels in space.levels)
    assert space.uniform() is None
    for unit in space.units:
        assert scheme.layer_settings(unit, 1) == {layer.name: 1 for layer in unit.layers}
        assert scheme.layer_settings(unit, 0) == {layer.name: 0 for layer in unit.layers}
