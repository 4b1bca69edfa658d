"""EvoPress's level switch: the group is drawn by size alone, whatever its units' levels."""

from __future__ import annotations

import numpy as np
from scipy.stats import chisquare

from search.algorithms import EvoPress, EvoPressConfig
from tests.search.harness import bits_space

DRAWS = 4000


def test_a_switch_picks_its_group_by_size_even_when_most_pairs_in_it_are_rejected() -> None:
    # Two groups of 8 units (the two layer shapes). In the first every unit sits at a level
    # bound, half at 2 bits and half at 6, so only a quarter of its (up, down) draws can switch;
    # the second sits at 4 bits, where every pair of distinct units can. The groups have the
    # same size, so each must be chosen half the time (re-drawing the group on a rejected
    # pair chose them 0.226 / 0.774).
    space = bits_space(16)
    bound, free = space.switch_groups
    levels = np.full(len(space), 4, dtype=np.int64)
    levels[list(bound)] = [2, 6] * 4
    algo = EvoPress(space, EvoPressConfig(generations=1), seed=7)
    counts = {bound: 0, free: 0}
    for _ in range(DRAWS):
        moved = tuple(int(u) for u in np.flatnonzero(algo._switch(levels) != levels))
        assert len(moved) == 2, moved
        group = bound if moved[0] in bound else free
        assert set(moved) <= set(group), moved
        counts[group] += 1
    test = chisquare([counts[bound], counts[free]], [DRAWS / 2, DRAWS / 2])
    assert test.pvalue > 1e-3, counts


def test_a_group_without_any_switch_is_set_aside() -> None:
    # Every unit of the first group at the lowest level: none can go down, so every switch
    # happens in the second group.
    space = bits_space(16)
    stuck, free = space.switch_groups
    levels = np.full(len(space), 4, dtype=np.int64)
    levels[list(stuck)] = 2
    algo = EvoPress(space, EvoPressConfig(generations=1), seed=3)
    for _ in range(200):
        moved = set(np.flatnonzero(algo._switch(levels) != levels).tolist())
        assert len(moved) == 2 and moved <= set(free), moved
