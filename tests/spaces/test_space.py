"""`Space`: exact uniform sampling, exact projection, budget-keeping switches, decoding."""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare
from spaces_strategies import (
    SIZES,
    brute_force,
    independent_budget,
    independent_cost,
    independent_feasible,
    llama_like_layers,
    random_scores,
    score_of,
    slow_best_value,
    spaces,
    unit_cost,
)

from spaces import BitwidthScheme, DropScheme, LayerInfo, Space, SparsityScheme

SMALL = settings(max_examples=60, deadline=None)

# Chi-square: each test compares one space's sample counts with the uniform distribution. The
# examples are derandomized and the seed fixed, so the outcome is the same on every run; ALPHA
# is small enough that a correct sampler passes all of them (a Bonferroni bound over the
# examples leaves well under a 1 % chance that any one fails), while the biased-sampler test
# below shows that the same sample sizes reject a plausible wrong sampler by a wide margin.
ALPHA = 1e-4
PER_CELL = 30
CHI_EXAMPLES = 15
MIN_DRAWS = 600


def _sample_counts(space: Space, draws: int, seed: int) -> Counter[tuple[int, ...]]:
    rng = np.random.default_rng(seed)
    return Counter(tuple(int(v) for v in space.sample_array(rng)) for _ in range(draws))


# --- sampling -----------------------------------------------------------------------------


@SMALL
@given(spaces(max_layers=12, max_levels=8, max_profiles=None, min_units=1), st.integers(0, 2**32 - 1))
def test_sample_yields_only_feasible_profiles(space, seed):
    rng = np.random.default_rng(seed)
    for _ in range(10):
        profile = space.sample(rng)
        assert space.is_feasible(profile)
        levels = space.to_array(profile)
        assert independent_feasible(space, levels.tolist())
        assert profile.model == space.model and profile.granularity == space.granularity
        assert dict(profile.scheme) == space.scheme.to_dict()


@pytest.mark.parametrize("kind", ["sparsity", "bitwidth-exact", "bitwidth-upper", "drop"])
@settings(max_examples=CHI_EXAMPLES, deadline=None, derandomize=True)
@given(data=st.data())
def test_sample_is_exactly_uniform_over_the_enumerated_feasible_set(kind, data):
    sizes = st.sampled_from((2, 3, 4, 6, 8, 12)) if kind == "bitwidth-exact" else SIZES  # equal sizes swap
    space = data.draw(spaces(kinds=[kind], min_units=2, max_layers=5, max_levels=3, max_profiles=600, sizes=sizes))
    feasible = brute_force(space)
    assert feasible, "a constructed space has at least one feasible profile"
    assert space.log_size() == pytest.approx(math.log(len(feasible)), abs=1e-9)
    # Enumerated and counted above; sampled only where every cell gets PER_CELL draws quickly.
    assume(2 <= len(feasible) <= 80)
    event(f"{space.scheme.name}/{space.granularity}/exact={space.exact}")
    _assert_uniform(space, feasible, seed=zlib.crc32(repr((space.levels, space.costs)).encode()))


def _assert_uniform(space: Space, feasible: list[tuple[int, ...]], seed: int) -> None:
    draws = max(PER_CELL * len(feasible), MIN_DRAWS)
    counts = _sample_counts(space, draws, seed=seed)
    assert set(counts) <= set(feasible), "sampled an infeasible profile"
    observed = np.array([counts[combo] for combo in feasible])
    result = chisquare(observed)
    assert result.pvalue > ALPHA, (len(feasible), observed.tolist())


def _units(*sizes: int, per_block: int = 1) -> list[LayerInfo]:
    return [LayerInfo(f"l{i}", (n,), n, block=i // per_block) for i, n in enumerate(sizes)]


@pytest.mark.parametrize(
    ("layers", "scheme", "granularity", "count"),
    [
        (_units(100, 100, 100, 100), SparsityScheme(0.5, step=10, max_levels=2), "layer", 85),
        (_units(40, 100, 300), SparsityScheme(0.3, step=4, max_levels=3, max_sparsity=0.5), "layer", None),
        (_units(30, 50, 70, 90, 110, 130, per_block=2), SparsityScheme(0.6, max_levels=3), "block", None),
        (_units(8, 8, 8, 8), BitwidthScheme(3.5, choices=(2, 3, 4, 5)), "layer", 44),
        (_units(4, 4, 8, 8, 6), BitwidthScheme(4.0, choices=(2, 4, 8)), "layer", None),
        (_units(4, 6, 8, 4), BitwidthScheme(3.0, choices=(2, 3, 4, 6), exact_budget=False), "layer", None),
        (_units(4, 6, 6, 4, 5, 5, 7, 3, per_block=2), BitwidthScheme(3.0, choices=(2, 3, 4)), "block", 19),
        (_units(*[5] * 6), DropScheme(0.5), "layer", 20),
        (_units(*[5] * 12, per_block=2), DropScheme(0.5), "block", 20),
    ],
)
def test_sample_is_uniform_on_fixed_spaces(layers, scheme, granularity, count):
    space = Space(layers, scheme, granularity=granularity)
    feasible = brute_force(space)
    if count is not None:
        assert len(feasible) == count
    assert 10 <= len(feasible) <= 150
    assert space.log_size() == pytest.approx(math.log(len(feasible)), abs=1e-9)
    _assert_uniform(space, feasible, seed=len(feasible))


def _naive_sample(feasible: list[tuple[int, ...]], rng: np.random.Generator) -> tuple[int, ...]:
    """A plausible but biased sampler: each unit uniform over levels that can still be completed."""
    picks: tuple[int, ...] = ()
    while len(picks) < len(feasible[0]):
        options = sorted({f[len(picks)] for f in feasible if f[: len(picks)] == picks})
        picks = (*picks, int(rng.choice(options)))
    return picks


def test_chi_square_has_the_power_to_reject_a_biased_sampler():
    layers = [LayerInfo(f"l{i}", (100,), 100, block=i) for i in range(4)]
    space = Space(layers, SparsityScheme(0.5, step=10, max_levels=2))
    feasible = brute_force(space)
    assert len(feasible) == 85  # 4 levels in -2..2 summing to 0
    draws = PER_CELL * len(feasible)
    rng = np.random.default_rng(7)
    naive = Counter(_naive_sample(feasible, rng) for _ in range(draws))
    assert chisquare([naive[c] for c in feasible]).pvalue < ALPHA * 1e-6
    exact = _sample_counts(space, draws, seed=7)
    assert chisquare([exact[c] for c in feasible]).pvalue > ALPHA


@SMALL
@given(spaces(max_layers=5, max_levels=3, max_profiles=3000, min_units=1))
def test_log_size_counts_the_feasible_profiles(space):
    feasible = brute_force(space)
    assert space.log_size() == pytest.approx(math.log(len(feasible)), abs=1e-9)
    assert space.summary()["log10_profiles"] == pytest.approx(math.log10(len(feasible)), abs=1e-9)


def test_log_size_of_a_large_space_is_finite_and_consistent():
    space = Space(llama_like_layers(), SparsityScheme(0.6))
    size = space.log_size()
    # Between one profile per feasible level sum and every combination of levels.
    assert 0 < size < sum(math.log(len(levels)) for levels in space.levels)
    assert math.isfinite(size)


# --- projection ---------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(spaces(max_layers=5, max_levels=3, max_profiles=3000), st.integers(0, 2**32 - 1), st.sampled_from([0, 0.2, 0.5]))
def test_project_matches_brute_force(space, seed, forbid):
    rng = np.random.default_rng(seed)
    scores = random_scores(rng, space, forbid=forbid)
    candidates = [(score_of(space, scores, combo), combo) for combo in brute_force(space)]
    best = max((s for s, _ in candidates), default=-math.inf)
    if best == -math.inf:
        with pytest.raises(ValueError, match="forbid"):
            space.project(scores)
        return
    profile = space.project(scores)
    levels = space.to_array(profile).tolist()
    assert space.is_feasible(profile) and independent_feasible(space, levels)
    got = score_of(space, scores, levels)
    assert got > -math.inf, "projection used a forbidden level"
    assert got == pytest.approx(best, rel=1e-12, abs=1e-12)


@SMALL
@given(spaces(max_layers=4, max_levels=3, max_profiles=1000), st.integers(0, 2**32 - 1))
def test_project_with_ties_and_a_single_allowed_level(space, seed):
    rng = np.random.default_rng(seed)
    # All-zero scores: any feasible profile is optimal.
    assert space.is_feasible(space.project([np.zeros(len(lv)) for lv in space.levels]))
    # Forbid everything but one feasible profile: projection must find exactly it.
    feasible = brute_force(space)
    chosen = feasible[int(rng.integers(len(feasible)))]
    scores = [
        [0.0 if level == pick else -math.inf for level in levels]
        for levels, pick in zip(space.levels, chosen, strict=True)
    ]
    assert tuple(space.to_array(space.project(scores)).tolist()) == chosen


def test_project_rejects_misaligned_or_nan_scores():
    layers = [LayerInfo(f"l{i}", (100,), 100, block=i) for i in range(3)]
    space = Space(layers, SparsityScheme(0.5, step=10, max_levels=2))
    good = [np.zeros(len(lv)) for lv in space.levels]
    with pytest.raises(ValueError, match="expected scores for 3 units, got 2"):
        space.project(good[:2])
    with pytest.raises(ValueError, match=r"'l1'.*one value per level \(5\)"):
        space.project([good[0], np.zeros(4), good[2]])
    with pytest.raises(ValueError, match=r"'l2'.*NaN"):
        space.project([good[0], good[1], np.array([0, 0, math.nan, 0, 0])])


def _best_switch(space: Space, levels: list[int], scores: list[list[float]]) -> tuple[float, int, int]:
    """The best (gain, up, down) one-step switch that keeps the cost (by the scheme's costs).

    For bitwidth only units of equal size trade; vectorised by cost delta.
    """
    best = (0.0, -1, -1)
    ups: dict[tuple[int, int], list[tuple[float, int]]] = {}
    downs: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for i, allowed in enumerate(space.levels):
        k = allowed.index(levels[i])
        size = space.units[i].numel if space.scheme.name == "bitwidth" else 0
        if k + 1 < len(allowed):
            delta = unit_cost(space, i, allowed[k + 1]) - unit_cost(space, i, allowed[k])
            ups.setdefault((size, delta), []).append((scores[i][k + 1] - scores[i][k], i))
        if k > 0:
            delta = unit_cost(space, i, allowed[k]) - unit_cost(space, i, allowed[k - 1])
            downs.setdefault((size, delta), []).append((scores[i][k - 1] - scores[i][k], i))
    for key, up in ups.items():
        top_up = sorted(up, reverse=True)[:2]
        top_down = sorted(downs.get(key, []), reverse=True)[:2]
        for gain_up, i in top_up:
            for gain_down, j in top_down:
                if i != j and gain_up + gain_down > best[0]:
                    best = (gain_up + gain_down, i, j)
    return best


def _hill_climb(space: Space, levels: list[int], scores: list[list[float]]) -> list[int]:
    levels = list(levels)
    for _ in range(10_000):
        gain, i, j = _best_switch(space, levels, scores)
        if gain <= 1e-12:
            return levels
        levels[i] = space.levels[i][space.levels[i].index(levels[i]) + 1]
        levels[j] = space.levels[j][space.levels[j].index(levels[j]) - 1]
    raise AssertionError("hill climbing did not converge")


LARGE_SCHEMES = [
    pytest.param(SparsityScheme(0.6), "layer", id="sparsity-layer"),
    pytest.param(SparsityScheme(0.5, max_levels=4, min_sparsity=0.2, max_sparsity=0.8), "block", id="sparsity-block"),
    pytest.param(BitwidthScheme(4.0, choices=(2, 3, 4, 5, 6)), "layer", id="bitwidth-contiguous-exact"),
    pytest.param(BitwidthScheme(3.5, choices=(2, 3, 4, 8)), "layer", id="bitwidth-noncontiguous-exact"),
    pytest.param(BitwidthScheme(3.3, choices=(2, 4, 8, 16), exact_budget=False), "layer", id="bitwidth-upper"),
    pytest.param(DropScheme(0.25), "layer", id="drop"),
]


@pytest.mark.parametrize(("scheme", "granularity"), LARGE_SCHEMES)
def test_project_is_exact_at_224_layers(scheme, granularity):
    space = Space(llama_like_layers(), scheme, granularity=granularity, model="llama-like")
    assert len(space.layers) == 224
    rng = np.random.default_rng(11)
    scores = random_scores(rng, space)
    profile = space.project(scores)
    levels = space.to_array(profile).tolist()
    assert space.is_feasible(profile) and independent_feasible(space, levels)
    best = score_of(space, scores, levels)
    # Better than (or as good as) many random feasible profiles...
    for _ in range(60):
        other = space.sample_array(rng).tolist()
        assert score_of(space, scores, other) <= best + 1e-9
    # ...no switch that keeps the budget improves it...
    gain, _, _ = _best_switch(space, levels, scores)
    assert gain <= 1e-9
    # ...and greedy improvement from random starts never beats it.
    for _ in range(3):
        climbed = _hill_climb(space, space.sample_array(rng).tolist(), scores)
        assert independent_feasible(space, climbed)
        assert score_of(space, scores, climbed) <= best + 1e-9


@settings(max_examples=25, deadline=None)
@given(
    spaces(max_layers=24, max_levels=4, max_profiles=None, sizes=st.sampled_from((3, 4, 6, 8, 12, 16, 24))),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0, 0.3]),
)
def test_project_matches_an_independent_slow_dp_at_medium_size(space, seed, forbid):
    rng = np.random.default_rng(seed)
    scores = random_scores(rng, space, forbid=forbid)
    expected = slow_best_value(space, scores)
    if expected == -math.inf:
        with pytest.raises(ValueError, match="forbid"):
            space.project(scores)
        return
    levels = space.to_array(space.project(scores)).tolist()
    assert independent_feasible(space, levels)
    assert score_of(space, scores, levels) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_project_at_224_layers_respects_forbidden_levels():
    space = Space(llama_like_layers(), SparsityScheme(0.7), model="llama-like")
    rng = np.random.default_rng(3)
    scores = random_scores(rng, space, forbid=0.3)
    for levels, row in zip(space.levels, scores, strict=True):
        zero = levels.index(0)  # keep level 0 allowed, so the uniform profile stays feasible
        if row[zero] == -math.inf:
            row[zero] = 0.0
    assert any(-math.inf in row for row in scores)
    levels = space.to_array(space.project(scores)).tolist()
    assert math.isfinite(score_of(space, scores, levels))
    assert sum(levels) == 0
    # No allowed switch improves it (a forbidden level scores -inf, so no switch reaches one).
    finite = [[s if math.isfinite(s) else -1e300 for s in row] for row in scores]
    assert _best_switch(space, levels, finite)[0] <= 1e-9


# --- switches -----------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(spaces(max_layers=8, max_levels=4, max_profiles=None), st.integers(0, 2**32 - 1))
def test_switches_keep_the_cost_exactly(space, seed):
    rng = np.random.default_rng(seed)
    profile = space.sample(rng)
    levels = space.to_array(profile)
    cost = independent_cost(space, levels.tolist())
    pairs = set(space.switch_pairs(profile))
    group_of = {i: g for g, members in enumerate(space.switch_groups) for i in members}
    assert sorted(group_of) == list(range(len(space)))
    for i in range(len(space)):
        for j in range(len(space)):
            up, down = space.step(levels, i, +1), space.step(levels, j, -1)
            keeps = (
                i != j
                and up is not None
                and down is not None
                and unit_cost(space, i, up) - unit_cost(space, i, int(levels[i]))
                == unit_cost(space, j, int(levels[j])) - unit_cost(space, j, down)
            )
            assert space.can_switch(levels, i, j) == keeps
            if not keeps:
                assert (space.names[i], space.names[j]) not in pairs
                with pytest.raises(ValueError, match="changes the cost"):
                    space.switch(levels, i, j)
                continue
            switched = space.switch(levels, i, j)
            assert switched[i] == up and switched[j] == down
            assert np.array_equal(np.delete(switched, [i, j]), np.delete(levels, [i, j]))
            assert independent_cost(space, switched.tolist()) == cost
            assert space.is_feasible(switched)
            in_pairs = (space.names[i], space.names[j]) in pairs
            if space.scheme.name == "bitwidth":
                # Exact swaps only between units of equal size; every such swap is offered.
                assert in_pairs == (space.units[i].numel == space.units[j].numel)
            else:
                assert in_pairs
            assert in_pairs == (group_of[i] == group_of[j])
    for a, b in pairs:
        assert space.can_switch(levels, space.index[a], space.index[b])
        if space.scheme.name == "bitwidth":
            assert space.units[space.index[a]].numel == space.units[space.index[b]].numel
    assert levels.tolist() == space.to_array(profile).tolist(), "switch must not modify its input"


@SMALL
@given(spaces(max_layers=8, max_levels=5, max_profiles=None), st.integers(0, 2**32 - 1))
def test_step_and_step_cost(space, seed):
    levels = space.sample_array(np.random.default_rng(seed))
    for i, allowed in enumerate(space.levels):
        k = allowed.index(int(levels[i]))
        for direction in (-1, +1):
            j = k + direction
            if 0 <= j < len(allowed):
                assert space.step(levels, i, direction) == allowed[j]
                assert space.step_cost(levels, i, direction) == unit_cost(space, i, allowed[j]) - unit_cost(
                    space, i, allowed[k]
                )
            else:
                assert space.step(levels, i, direction) is None
                assert space.step_cost(levels, i, direction) is None
        assert not space.can_switch(levels, i, i)


def test_bitwidth_switch_groups_are_the_equal_size_groups():
    space = Space(llama_like_layers(4), BitwidthScheme(4.0, choices=(2, 3, 4, 8, 16)))
    groups = {frozenset(space.units[i].numel for i in g) for g in space.switch_groups}
    assert groups == {frozenset({4096 * 4096}), frozenset({4096 * 11008})}
    uniform = space.uniform()
    assert uniform is not None
    pairs = space.switch_pairs(uniform)
    # From 4 bits: up to 8 (+4 bits per weight), down to 3 (-1): no exact swap at all.
    assert pairs == []
    levels = space.to_array(uniform)
    levels[0], levels[1] = 3, 5  # not allowed: 5 bits is no choice
    assert not space.is_feasible(levels)


def test_sparsity_switches_trade_one_step_between_any_two_units():
    space = Space(llama_like_layers(2), SparsityScheme(0.5))
    uniform = space.uniform()
    assert uniform is not None and all(v == 0 for v in uniform.values())
    pairs = space.switch_pairs(uniform)
    assert len(pairs) == len(space) * (len(space) - 1)
    assert len(space.switch_groups) == 1


# --- nearest ------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(spaces(max_layers=10, max_levels=5, max_profiles=None, min_units=1), st.data())
def test_nearest_is_always_feasible(space, data):
    targets = []
    for unit, levels in zip(space.units, space.levels, strict=True):
        meanings = [space.scheme.meaning(unit, lv) for lv in levels]
        spread = max(meanings) - min(meanings) + 1
        targets.append(data.draw(st.floats(min(meanings) - spread, max(meanings) + spread)))
    profile = space.nearest(targets)
    assert space.is_feasible(profile)
    assert independent_feasible(space, space.to_array(profile).tolist())


@SMALL
@given(spaces(max_layers=5, max_levels=3, max_profiles=2000), st.integers(0, 2**32 - 1))
def test_nearest_returns_a_feasible_profile_unchanged_and_minimises_distance(space, seed):
    rng = np.random.default_rng(seed)
    profile = space.sample(rng)
    meanings = space.meanings(profile)
    assert space.nearest([meanings[name] for name in space.names]) == profile
    wished = [float(m) + rng.normal(scale=0.3) for m in meanings.values()]

    def distance(combo):
        return sum(
            (space.scheme.meaning(unit, lv) - t) ** 2 for unit, lv, t in zip(space.units, combo, wished, strict=True)
        )

    got = distance(space.to_array(space.nearest(wished)).tolist())
    assert got == pytest.approx(min(distance(c) for c in brute_force(space)), rel=1e-9, abs=1e-12)


def test_nearest_rejects_misaligned_targets():
    space = Space([LayerInfo(f"l{i}", (8,), 8, block=i) for i in range(3)], DropScheme(0.34))
    with pytest.raises(ValueError, match="expected 3 values, got 2"):
        space.nearest([0.5, 0.5])
    assert sum(space.nearest([0.9, 0.1, 0.2]).values()) == 1
    assert space.nearest([0.9, 0.1, 0.2])["l0"] == 1


# --- profiles, arrays and what they mean ----------------------------------------------------


@SMALL
@given(spaces(max_layers=8, max_levels=4, max_profiles=None), st.integers(0, 2**32 - 1))
def test_arrays_costs_meanings_and_settings_agree(space, seed):
    rng = np.random.default_rng(seed)
    levels = space.sample_array(rng)
    assert levels.dtype == np.int64
    profile = space.from_array(levels)
    assert list(profile) == list(space.names)
    assert np.array_equal(space.to_array(profile), levels)
    assert space.from_array(levels.tolist()) == profile
    cost = space.cost(profile)
    assert cost == space.cost(levels) == independent_cost(space, levels.tolist())
    assert space.budget == independent_budget(space)

    settings_ = space.layer_settings(profile)
    assert set(settings_) == {layer.name for layer in space.layers}
    choices = space.layer_choices()
    assert set(choices) == {layer.name for layer in space.layers}
    for name, setting in settings_.items():
        assert setting in choices[name]
    meanings = space.meanings(profile)
    numel = {layer.name: layer.numel for layer in space.layers}
    total = sum(numel.values())
    if space.scheme.name == "sparsity":
        assert space.average(profile) == pytest.approx(sum(settings_.values()) / total)
        for unit in space.units:
            assert meanings[unit.name] == pytest.approx(
                sum(settings_[layer.name] for layer in unit.layers) / unit.numel
            )
    elif space.scheme.name == "bitwidth":
        assert space.average(profile) == pytest.approx(cost / total)
        assert all(settings_[n] == meanings[u.name] for u in space.units for n in (layer.name for layer in u.layers))
    else:
        assert space.average(profile) == pytest.approx(space.budget / len(space))
        dropped_layers = sum(settings_.values())
        assert dropped_layers == sum(len(u.layers) for u in space.units if meanings[u.name] == 1.0)
    one_hot = [
        [float(level == chosen) for level in levels] for levels, chosen in zip(space.levels, levels, strict=True)
    ]
    assert space.expected_average(one_hot) == pytest.approx(space.average(profile))
    summary = space.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["units"] == len(space) and summary["layers"] == len(space.layers)
    assert summary["budget"] == space.budget and summary["exact_budget"] == space.exact


def test_expected_average_mixes_the_levels_averages():
    layers = [LayerInfo(f"l{i}", (n,), n, block=i) for i, n in enumerate((100, 300))]
    bits = Space(layers, BitwidthScheme(4.0, choices=(2, 4, 8)))
    # l0: 2 or 8 bits with equal odds (5 expected); l1: always 4: (100 * 5 + 300 * 4) / 400
    assert bits.expected_average([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]) == pytest.approx(4.25)
    with pytest.raises(ValueError, match=r"unit 'l1': need 3 probabilities"):
        bits.expected_average([[1.0, 0.0, 0.0], [1.0]])
    with pytest.raises(ValueError, match=r"one row of probabilities per unit \(2\)"):
        bits.expected_average([[1.0, 0.0, 0.0]])


def test_uniform_profiles():
    layers = [LayerInfo(f"l{i}", (n,), n, block=i) for i, n in enumerate((64, 128, 256))]
    sparse = Space(layers, SparsityScheme(0.5, step=8), model="m")
    uniform = sparse.uniform()
    assert uniform is not None and dict(uniform) == {"l0": 0, "l1": 0, "l2": 0}
    assert sparse.average(uniform) == pytest.approx(0.5)
    bits = Space(layers, BitwidthScheme(4.0, choices=(2, 4, 8)))
    assert bits.uniform() is not None and set(bits.uniform().values()) == {4}  # type: ignore[union-attr]
    assert Space(layers, BitwidthScheme(3.0, choices=(2, 4), exact_budget=False)).uniform() is None
    assert Space(layers, DropScheme(0.4)).uniform() is None


def test_is_feasible_is_false_for_foreign_or_malformed_profiles():
    layers = [LayerInfo(f"l{i}", (100,), 100, block=i) for i in range(3)]
    space = Space(layers, SparsityScheme(0.5, step=10, max_levels=2), model="m")
    assert space.is_feasible(np.array([1, -1, 0]))
    assert not space.is_feasible(np.array([1, 1, 0]))  # budget broken
    assert not space.is_feasible(np.array([3, -3, 0]))  # level out of range
    assert not space.is_feasible(np.array([1, -1]))  # too few units
    assert not space.is_feasible(np.array([1, -1, 0, 0]))  # too many units
    assert not space.is_feasible({"l0": 0, "l1": 0})
    assert not space.is_feasible({"l0": 0, "l1": 0, "l2": 0, "l9": 0})
    with pytest.raises(ValueError, match="expected 3 levels, got 2"):
        space.cost(np.array([1, -1]))
    with pytest.raises(ValueError, match="expected 3 levels, got 4"):
        space.from_array([0, 0, 0, 0])


def test_a_budget_too_fine_for_the_table_is_refused_clearly():
    # Coprime sizes leave a common divisor of 1: the table would need billions of cells.
    layers = [LayerInfo(f"l{i}", (), 10_000_019 + 2 * i, block=i) for i in range(50)]
    with pytest.raises(ValueError, match=r"cells.*block granularity or fewer levels"):
        Space(layers, BitwidthScheme(4.0, choices=(2, 4, 8)))
