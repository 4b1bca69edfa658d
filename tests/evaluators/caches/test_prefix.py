"""Prefix reuse: only blocks from the first changed one run again, with the same results."""

from __future__ import annotations

import numpy as np
import pytest

from spaces import Fidelity

MODELS = ["pressroom:tiny-llama", "pressroom:tiny-gpt2", "pressroom:tiny-bert"]


def _late_switch(space, levels, rng, from_block):
    """A budget-keeping switch between two units whose layers all sit in blocks >= from_block."""
    late = [i for i, unit in enumerate(space.units) if unit.block >= from_block]
    for _ in range(200):
        up, down = rng.choice(late, size=2, replace=False)
        if space.can_switch(levels, int(up), int(down)):
            return space.switch(levels, int(up), int(down))
    raise AssertionError("no late switch found")


@pytest.mark.parametrize("model", MODELS)
def test_reused_prefixes_give_the_same_fitness_as_full_forwards(make_evaluator, model):
    sections = {"model": {"name": model}, "compression": {"target": 0.5, "compressor": "magnitude"}}
    reusing = make_evaluator(**sections)
    full = make_evaluator(**sections, data={"prefix_cache_mb": 0})
    space = reusing.space
    rng = np.random.default_rng(0)
    levels = space.to_array(space.sample(rng))
    fidelity = Fidelity(700, (3, 0))  # a cut last block and several chunks' worth of rows
    reusing.evaluate(space.from_array(levels), fidelity)
    shares = []
    for step in range(6):
        levels = _late_switch(space, levels, rng, from_block=2 + step % 2)
        profile = space.from_array(levels)
        a, b = reusing.evaluate(profile, fidelity), full.evaluate(profile, fidelity)
        assert a.fitness == pytest.approx(b.fitness, rel=1e-9, abs=1e-12)
        assert b.reused == 0.0
        shares.append(a.reused)
    assert min(shares) >= 0.5  # blocks 0 and 1 of 4 came from the cache every time


def test_a_new_minibatch_or_an_early_change_recomputes_everything(make_evaluator):
    evaluator = make_evaluator(model={"name": "pressroom:tiny-llama"}, compression={"target": 0.5})
    space = evaluator.space
    profile = space.uniform()
    evaluator.evaluate(profile, Fidelity(256, (9, 0)))
    assert evaluator.evaluate(profile, Fidelity(256, (9, 0))).reused == 1.0  # nothing changed
    assert evaluator.evaluate(profile, Fidelity(256, (9, 1))).reused == 0.0  # another minibatch
    early = [i for i, unit in enumerate(space.units) if unit.block == 0]
    levels = space.to_array(profile)
    up, down = early[0], early[1]
    if not space.can_switch(levels, up, down):
        up, down = down, up
    changed = space.from_array(space.switch(levels, up, down))
    assert evaluator.evaluate(changed, Fidelity(256, (9, 1))).reused == 0.0  # block 0 changed


def test_the_cache_respects_its_memory_bound(make_evaluator):
    evaluator = make_evaluator(
        model={"name": "pressroom:tiny-llama"}, compression={"target": 0.5}, data={"prefix_cache_mb": 1}
    )
    profile = evaluator.space.uniform()
    big = Fidelity(4096, (1, 1))  # 4096 tokens x 64 hidden x 4 bytes x 4 blocks = 4 MiB > 1 MiB
    evaluator.evaluate(profile, big)
    assert evaluator.evaluate(profile, big).reused == 0.0
