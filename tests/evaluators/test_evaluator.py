"""The Evaluator on real and tiny models: fitness, switching, teacher."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluators.jobs import run_job
from spaces import Fidelity

TINY_LLAMA = {"model": {"name": "pressroom:tiny-llama"}}


def _weights(evaluator) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in evaluator.inventory.modules.items()}


@pytest.mark.parametrize("model", ["pressroom:tiny-llama", "pressroom:tiny-gpt2", "pressroom:tiny-bert"])
def test_dense_profile_has_zero_fitness(make_evaluator, model):
    evaluator = make_evaluator(model={"name": model})
    result = evaluator.evaluate(None, Fidelity(1000, (0, 0)))
    assert result.tokens == 1000
    assert abs(result.fitness) < 1e-6


def test_minilm_fitness_rises_with_uniform_sparsity(make_evaluator):
    values = []
    for target in (0.3, 0.5, 0.7):
        evaluator = make_evaluator(
            model={"name": "pressroom:minilm"},
            compression={"target": target, "compressor": "wanda", "levels": {"max_levels": 1}},
            data={"seq_len": 128, "stats_tokens": 1024},
        )
        fidelity = Fidelity(1024, (0, 0))
        assert abs(evaluator.evaluate(None, fidelity).fitness) < 1e-6
        values.append(evaluator.evaluate(evaluator.space.uniform(), fidelity).fitness)
    assert 0 < values[0] < values[1] < values[2], values


def _float64_kl(evaluator, profile, fidelity) -> float:
    """KL(dense || compressed) per token with both models run in float64 on the full vocabulary."""
    batch = evaluator.data.batch(fidelity)
    evaluator.apply(profile)
    student = copy.deepcopy(evaluator.model).double()
    teacher = copy.deepcopy(evaluator.teacher_model).double()
    with torch.no_grad():
        kw = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        logp = F.log_softmax(teacher(**kw).logits, -1)
        logq = F.log_softmax(student(**kw).logits, -1)
    keep = batch.attention_mask.bool()
    kl = (logp.exp() * (logp - logq)).sum(-1)[keep]
    return float(kl.mean())


def test_kl_equals_float64_reference_on_tiny_llama(make_evaluator):
    evaluator = make_evaluator(**TINY_LLAMA, compression={"target": 0.6, "compressor": "magnitude"})
    profile = evaluator.space.sample(np.random.default_rng(3))
    fidelity = Fidelity(700, (5, 1))
    reference = _float64_kl(evaluator, profile, fidelity)
    measured = evaluator.evaluate(profile, fidelity).fitness
    assert reference > 1e-4
    assert measured == pytest.approx(reference, rel=2e-3)


def test_topk_teacher_is_a_close_lower_bound(make_evaluator):
    exact = make_evaluator(**TINY_LLAMA, compression={"target": 0.6, "compressor": "magnitude"})
    approx = make_evaluator(
        **TINY_LLAMA, compression={"target": 0.6, "compressor": "magnitude"}, data={"teacher_topk": 64}
    )
    profile = exact.space.uniform()
    fidelity = Fidelity(512, (1, 0))
    full, top = exact.evaluate(profile, fidelity).fitness, approx.evaluate(profile, fidelity).fitness
    assert top <= full * (1 + 1e-6)
    assert top >= 0.5 * full


def test_switching_touches_only_differing_layers_and_matches_a_fresh_apply(make_evaluator):
    evaluator = make_evaluator(**TINY_LLAMA, compression={"target": 0.5, "compressor": "sparsegpt"})
    space = evaluator.space
    rng = np.random.default_rng(0)
    a = space.sample(rng)
    levels = space.to_array(a)
    for group in space.switch_groups:  # B = A with a few budget-keeping switches
        ups = [i for i in group if space.step(levels, i, +1) is not None]
        downs = [i for i in group if space.step(levels, i, -1) is not None]
        for up, down in zip(ups[:3], downs[-3:], strict=False):
            if space.can_switch(levels, up, down):
                levels = space.switch(levels, up, down)
    b = space.from_array(levels)
    settings_a, settings_b = space.layer_settings(a), space.layer_settings(b)
    differing = {name for name in settings_a if settings_a[name] != settings_b[name]}
    assert differing

    evaluator.apply(a)
    before = _weights(evaluator)
    switched = evaluator.apply(b)
    after = _weights(evaluator)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert switched == len(differing)
    assert changed == differing

    evaluator.apply(None)
    evaluator.apply(b)
    fresh = _weights(evaluator)
    assert all(torch.equal(fresh[name], after[name]) for name in fresh)


def test_sparsity_levels_have_exactly_their_planned_zeros(make_evaluator):
    for compressor in ("magnitude", "wanda", "sparsegpt"):
        evaluator = make_evaluator(**TINY_LLAMA, compression={"target": 0.6, "compressor": compressor})
        profile = evaluator.space.sample(np.random.default_rng(1))
        evaluator.apply(profile)
        for name, pruned in evaluator.space.layer_settings(profile).items():
            zeros = int((evaluator.inventory.modules[name].weight == 0).sum())
            assert zeros == pruned, (compressor, name)


def test_teacher_is_computed_once_per_minibatch(make_evaluator):
    evaluator = make_evaluator(**TINY_LLAMA, compression={"target": 0.5, "compressor": "magnitude"})
    rng = np.random.default_rng(2)
    fidelity = Fidelity(256, (42, 0))
    misses = evaluator.teacher_cache.misses
    for _ in range(3):
        evaluator.evaluate(evaluator.space.sample(rng), fidelity)
    assert evaluator.teacher_cache.misses == misses + 1


def test_heldout_reports_perplexity_for_causal_lms(make_evaluator):
    evaluator = make_evaluator(**TINY_LLAMA, compression={"target": 0.5, "compressor": "magnitude"})
    result = evaluator.heldout(evaluator.space.uniform())
    assert result.perplexity is not None and result.perplexity > 1
    assert result.tokens == 2048


def test_statistics_jobs(make_evaluator):
    evaluator = make_evaluator(**TINY_LLAMA, compression={"target": 0.5, "compressor": "wanda"})
    profile = evaluator.space.uniform()
    evaluator.apply(profile)
    errors = run_job(evaluator, "layer_errors", {}, Fidelity(64))["errors"]
    assert set(errors) == {layer.name for layer in evaluator.inventory.layers}
    for name, per_setting in errors.items():
        values = [per_setting[k] for k in sorted(per_setting, key=int)]
        assert values == sorted(values), name  # more pruning, more error (nested masks)
    ratios = run_job(evaluator, "owl_scores", {"M": 3}, Fidelity(64))["ratios"]
    assert set(ratios) == {str(b) for b in range(4)}
    assert all(0 <= r < 1 for r in ratios.values())
    assert evaluator.settings() == evaluator.space.layer_settings(profile)  # jobs restore the profile
    with pytest.raises(ValueError, match="unknown job"):
        run_job(evaluator, "nope", {}, Fidelity(64))


def test_encoder_metric_must_fit_the_task(make_evaluator):
    with pytest.raises(ValueError, match="does not fit"):
        make_evaluator(model={"name": "pressroom:tiny-bert"}, data={"metric": "kl"})


def test_seq_len_beyond_the_models_positions_is_one_clear_error(make_evaluator):
    expected = (
        r"^data.seq_len 1024 is more than model 'pressroom:tiny-gpt2' has positions for \(max_position_embeddings 512\)"
    )
    with pytest.raises(ValueError, match=expected):
        make_evaluator(model={"name": "pressroom:tiny-gpt2"}, data={"seq_len": 1024})


def test_statistics_jobs_do_not_depend_on_the_profile_held(make_evaluator):
    evaluator = make_evaluator(**TINY_LLAMA, compression={"target": 0.5, "compressor": "magnitude"})
    evaluator.apply(None)
    dense_ratios = evaluator.owl_ratios(5.0)
    dense_errors = evaluator.layer_errors()
    evaluator.apply(evaluator.space.sample(np.random.default_rng(4)))
    assert evaluator.owl_ratios(5.0) == dense_ratios
    assert evaluator.layer_errors() == dense_errors
