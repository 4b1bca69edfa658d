"""Layer sensitivity fitted to the trials a search ran."""

from __future__ import annotations

import numpy as np
from optuna.trial import TrialState, create_trial

from search.results.figures import SENSITIVITY_PNG, save_png, sensitivity_figure
from search.results.sensitivity import layer_sensitivity
from spaces import LayerInfo, Space, SparsityScheme


def _space() -> Space:
    layers = [LayerInfo(f"model.layers.{b}.mlp.fc{i}", (32, 32), 1024, b) for b in range(4) for i in range(2)]
    return Space(layers, SparsityScheme(0.5, max_levels=4), model="m")


def _trial(levels: list[int], fitness: dict[int, float], generation: int) -> object:
    attrs = {"levels": levels, "generation": generation}
    return create_trial(state=TrialState.PRUNED, user_attrs=attrs, intermediate_values=fitness)


def test_the_fit_recovers_per_layer_effects_despite_a_shift_per_generation(tmp_path):
    space = _space()
    rng = np.random.default_rng(0)
    truth = np.linspace(-0.2, 0.5, len(space))
    trials = []
    for generation in range(6):
        shift = 10.0 * generation  # another minibatch: the whole generation's fitness moves
        for _ in range(12):
            array = space.sample_array(rng)
            steps = np.asarray([space.levels[i].index(int(v)) for i, v in enumerate(array)])
            fitness = {256: float(truth @ steps) + shift, 1024: float(truth @ steps) + 2 * shift}
            trials.append(_trial([int(v) for v in array], fitness, generation))
    trials.append(_trial([0], {256: 1.0}, 0))  # another space's trial is skipped
    estimate = layer_sensitivity(space, trials)
    assert estimate is not None and estimate.evaluations == 6 * 12 * 2 and estimate.groups == 12
    # an exact budget keeps the total level fixed, so only differences between units are measured
    assert np.allclose(estimate.effects - estimate.effects.mean(), truth - truth.mean(), atol=0.02)
    assert save_png(sensitivity_figure(space, estimate), tmp_path / SENSITIVITY_PNG).read_bytes()[:4] == b"\x89PNG"


def test_no_fit_without_two_evaluations_in_one_group():
    space = _space()
    levels = [int(v) for v in space.to_array(space.uniform())]
    assert layer_sensitivity(space, []) is None
    assert layer_sensitivity(space, [_trial(levels, {256: 1.0}, 0), _trial(levels, {256: 2.0}, 1)]) is None
    assert layer_sensitivity(space, [_trial(levels, {256: 1.0}, 0), _trial(levels, {256: 2.0}, 0)]) is None
