"""Hypothesis strategies for random spaces, and slow oracles that do not use `spaces`' own DPs.

The oracles (`independent_cost`, `independent_budget`, `brute_force`, `slow_best_value`) compute
costs and budgets from the scheme's definition (the level schemes' docstrings in `spaces`), not
from `Space.cost` or the tables of `spaces._dp`, so that the tests compare two implementations
rather than one with itself.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, note, reject
from hypothesis import strategies as st

from spaces import (
    BitwidthScheme,
    DropScheme,
    LayerInfo,
    LevelScheme,
    Space,
    SparsityScheme,
    make_units,
)

KINDS = ("sparsity", "bitwidth", "drop")

# Sizes that repeat often (so bitwidth spaces have equal-size groups) mixed with arbitrary ones.
SIZES = st.one_of(st.sampled_from((4, 6, 8, 12, 16, 24, 64, 96)), st.integers(1, 300))


def _shapes(numel: int) -> list[tuple[int, ...]]:
    divisors = [d for d in range(1, math.isqrt(numel) + 1) if numel % d == 0]
    return [(numel,), *((d, numel // d) for d in divisors[-2:])]


@st.composite
def layer_lists(
    draw: st.DrawFn,
    *,
    min_layers: int = 1,
    max_layers: int = 5,
    max_per_block: int = 3,
    sizes: st.SearchStrategy[int] = SIZES,
) -> list[LayerInfo]:
    """Layers in model order, grouped into blocks of 1..max_per_block layers."""
    count = draw(st.integers(min_layers, max_layers))
    layers: list[LayerInfo] = []
    block = draw(st.integers(0, 2))  # block indices need not start at 0
    while len(layers) < count:
        per_block = draw(st.integers(1, min(max_per_block, count - len(layers))))
        for j in range(per_block):
            # Often repeat an earlier size: equal sizes are what exact bitwidth swaps need.
            reuse = bool(layers) and draw(st.booleans())
            numel = draw(st.sampled_from([layer.numel for layer in layers])) if reuse else draw(sizes)
            shape = draw(st.sampled_from(_shapes(numel)))
            kind = draw(st.sampled_from(("attn", "mlp", "linear")))
            layers.append(LayerInfo(f"model.layers.{block}.{kind}.w{j}", shape, numel, block=block, kind=kind))
        block += draw(st.integers(1, 2))
    return layers


@st.composite
def sparsity_schemes(
    draw: st.DrawFn, *, min_levels: int = 1, max_levels: int = 3, max_step: int = 40, edges: bool = True
) -> SparsityScheme:
    """Targets anywhere in (0, 1), automatic or fixed steps, and ranges that with `edges` may
    touch the target (hypothesis favours those bounds, which leave few profiles)."""
    if edges:
        target = draw(st.floats(0.05, 0.95))
        min_sparsity = draw(st.one_of(st.just(0.0), st.floats(0.0, target)))
        max_sparsity = draw(st.one_of(st.just(0.99), st.floats(target, 0.99)))
    else:
        target = draw(st.floats(0.1, 0.9))
        min_sparsity = draw(st.one_of(st.just(0.0), st.floats(0.0, target / 2)))
        max_sparsity = draw(st.one_of(st.just(0.99), st.floats((target + 0.99) / 2, 0.99)))
    levels = draw(st.integers(min_levels, max_levels))
    step = draw(st.one_of(st.none(), st.integers(1, max_step)))
    return SparsityScheme(target, step=step, max_levels=levels, min_sparsity=min_sparsity, max_sparsity=max_sparsity)


@st.composite
def bit_choices(draw: st.DrawFn, *, max_choices: int = 4) -> tuple[int, ...]:
    """Contiguous (``range(lo, hi)``) or non-contiguous sets of bitwidths in [1, 16]."""
    if draw(st.booleans()):
        lo = draw(st.integers(1, 8))
        return tuple(range(lo, lo + draw(st.integers(2, max_choices))))
    picked = draw(st.lists(st.integers(1, 16), min_size=2, max_size=max_choices, unique=True))
    return tuple(draw(st.permutations(picked)))  # any order: the scheme sorts them


@st.composite
def bitwidth_schemes(
    draw: st.DrawFn,
    layers: Sequence[LayerInfo],
    granularity: str,
    *,
    max_choices: int = 4,
    exact: bool | None = None,
) -> BitwidthScheme:
    """A bitwidth scheme whose target is a short decimal or the average of some profile.

    A decimal target makes many exact budgets infeasible; an achieved average never does.
    """
    choices = draw(bit_choices(max_choices=max_choices))
    lo, hi = min(choices), max(choices)
    exact = draw(st.booleans()) if exact is None else exact
    # A seeded generator spreads targets evenly; hypothesis' own draws favour the lowest choice.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        target = round(float(rng.uniform(lo, hi)), 2)
    else:
        units = make_units(list(layers), granularity)
        bits = [int(rng.choice(sorted(choices))) for _ in units]
        total = sum(u.numel for u in units)
        target = min(max(sum(u.numel * b for u, b in zip(units, bits, strict=True)) / total, lo), hi)
    return BitwidthScheme(target, choices=choices, exact_budget=exact)


@st.composite
def drop_schemes(draw: st.DrawFn, layers: Sequence[LayerInfo], granularity: str) -> DropScheme:
    """A drop target that rounds to k in 1..units dropped units."""
    n_units = len(make_units(list(layers), granularity))
    k = draw(st.integers(1, n_units))
    jitter = draw(st.floats(-0.45, 0.45 if k < n_units else -0.05))
    return DropScheme(min(max((k + jitter) / n_units, 0.01), 0.99))


@st.composite
def schemes_for(
    draw: st.DrawFn, kind: str, layers: Sequence[LayerInfo], granularity: str, *, max_levels: int = 3
) -> LevelScheme:
    """`kind` is a scheme name; ``bitwidth-exact`` and ``bitwidth-upper`` fix the budget's kind."""
    if kind == "sparsity":
        return draw(sparsity_schemes(max_levels=max_levels, edges=False))
    if kind.startswith("bitwidth"):
        exact = {"bitwidth": None, "bitwidth-exact": True, "bitwidth-upper": False}[kind]
        return draw(bitwidth_schemes(layers, granularity, max_choices=max(2, min(max_levels + 1, 5)), exact=exact))
    return draw(drop_schemes(layers, granularity))


def sparsity_fits(scheme: SparsityScheme, numel: int) -> bool:
    """Whether some whole number of pruned weights puts a unit of `numel` weights in range."""
    return any(scheme.min_sparsity <= c / numel <= scheme.max_sparsity for c in range(numel + 1))


def build_space(layers: Sequence[LayerInfo], scheme: LevelScheme, granularity: str) -> Space | None:
    """The space, or None after checking that it is rightly refused (a unit no sparsity fits)."""
    units = make_units(list(layers), granularity)
    if isinstance(scheme, SparsityScheme) and not all(sparsity_fits(scheme, u.numel) for u in units):
        with pytest.raises(ValueError, match="no whole number of them gives a sparsity in"):
            Space(layers, scheme, granularity=granularity)
        return None
    return Space(layers, scheme, granularity=granularity, model="test-model")


def describe(layers: Sequence[LayerInfo], scheme: LevelScheme, granularity: str) -> str:
    sizes = [(layer.block, layer.numel) for layer in layers]
    return f"granularity={granularity} scheme={scheme!r} layers(block, numel)={sizes}"


@st.composite
def spaces(
    draw: st.DrawFn,
    *,
    kinds: Sequence[str] = KINDS,
    granularities: Sequence[str] = ("layer", "block"),
    max_layers: int = 5,
    max_levels: int = 3,
    max_profiles: int | None = 3000,
    sizes: st.SearchStrategy[int] = SIZES,
    min_units: int = 2,
) -> Space:
    """A constructible space; with `max_profiles`, small enough to enumerate every profile.

    `min_units` defaults to 2: a single unit leaves a sparsity or drop space one profile.
    """
    kind = draw(st.sampled_from(list(kinds)))
    granularity = draw(st.sampled_from(list(granularities)))
    min_layers = max(min_units, 2 if kind == "drop" and granularity == "layer" else 1)
    layers = draw(layer_lists(min_layers=min_layers, max_layers=max(max_layers, min_layers), sizes=sizes))
    if kind == "drop" and len(make_units(layers, granularity)) < 2:
        granularity = "layer"
        if len(layers) < 2:
            layers.append(LayerInfo("model.extra", (5,), 5, block=layers[-1].block + 1))
    scheme = draw(schemes_for(kind, layers, granularity, max_levels=max_levels))
    note(describe(layers, scheme, granularity))
    units = make_units(layers, granularity)
    if isinstance(scheme, SparsityScheme):
        assume(all(sparsity_fits(scheme, u.numel) for u in units))
    try:
        space = Space(layers, scheme, granularity=granularity, model="test-model")
    except ValueError as exc:
        # Only an exact bitwidth budget can be infeasible; test_schemes checks that this
        # happens exactly when brute force finds no profile.
        assert kind.startswith("bitwidth") and scheme.exact, exc
        reject()
    assume(len(space) >= min_units)
    if max_profiles is not None:
        assume(math.prod(len(levels) for levels in space.levels) <= max_profiles)
    return space


# --- independent oracles --------------------------------------------------------------------


def unit_cost(space: Space, unit: int, level: int) -> int:
    """One unit's cost from the scheme's definition: its level, weights*bits, or 1 if dropped."""
    return space.units[unit].numel * int(level) if space.scheme.name == "bitwidth" else int(level)


def independent_cost(space: Space, levels: Sequence[int]) -> int:
    return sum(unit_cost(space, i, v) for i, v in enumerate(levels))


def independent_budget(space: Space) -> int:
    scheme = space.scheme
    if scheme.name == "sparsity":
        return 0
    if scheme.name == "drop":
        return round(scheme.target * len(space.units))
    total = sum(unit.numel for unit in space.units)
    # B * sum(n_i) for the decimal B the user wrote; a profile's integer cost meets its floor.
    return math.floor(Fraction(str(scheme.target)) * total + Fraction(1, 10**6))


def independent_feasible(space: Space, levels: Sequence[int]) -> bool:
    if any(int(v) not in allowed for v, allowed in zip(levels, space.levels, strict=True)):
        return False
    cost, budget = independent_cost(space, levels), independent_budget(space)
    return cost == budget if space.scheme.exact else cost <= budget


def all_profiles(levels: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    return list(itertools.product(*levels))


def brute_force(space: Space) -> list[tuple[int, ...]]:
    """Every feasible level tuple, by enumeration."""
    return [combo for combo in all_profiles(space.levels) if independent_feasible(space, combo)]


def score_of(space: Space, scores: Sequence[Sequence[float]], levels: Sequence[int]) -> float:
    return float(sum(scores[i][space.levels[i].index(int(v))] for i, v in enumerate(levels)))


def slow_best_value(space: Space, scores: Sequence[Sequence[float]]) -> float:
    """The best total score over feasible profiles by a plain dict DP over exact totals."""
    best: dict[int, float] = {0: 0.0}
    for i, levels in enumerate(space.levels):
        nxt: dict[int, float] = {}
        for total, value in best.items():
            for k, level in enumerate(levels):
                s = float(scores[i][k])
                if s == -math.inf:
                    continue
                key = total + unit_cost(space, i, level)
                if value + s > nxt.get(key, -math.inf):
                    nxt[key] = value + s
        best = nxt
    budget = independent_budget(space)
    if space.scheme.exact:
        return best.get(budget, -math.inf)
    return max((v for t, v in best.items() if t <= budget), default=-math.inf)


def random_scores(rng: np.random.Generator, space: Space, forbid: float = 0.0) -> list[list[float]]:
    """Per unit, a score per level; each level is forbidden (-inf) with probability `forbid`."""
    out = []
    for levels in space.levels:
        row = rng.normal(size=len(levels))
        if forbid:
            row[rng.random(len(levels)) < forbid] = -np.inf
        out.append(row.tolist())
    return out


def llama_like_layers(blocks: int = 32) -> list[LayerInfo]:
    """7 linear layers per block with Llama-2-7B's shapes: 224 layers for 32 blocks."""
    hidden, inner = 4096, 11008
    shapes = {
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.k_proj": (hidden, hidden),
        "self_attn.v_proj": (hidden, hidden),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (inner, hidden),
        "mlp.up_proj": (inner, hidden),
        "mlp.down_proj": (hidden, inner),
    }
    return [
        LayerInfo(f"model.layers.{b}.{name}", shape, shape[0] * shape[1], block=b, kind=name.split(".")[0])
        for b in range(blocks)
        for name, shape in shapes.items()
    ]
