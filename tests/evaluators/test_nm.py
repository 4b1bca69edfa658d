"""N:M pruning: exact patterns from magnitude, Wanda and SparseGPT, stored and applied by the Evaluator."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluators.compressors import magnitude_ranking, sparsegpt_prune
from evaluators.compressors.nm import magnitude_nm_mask, nm_mask, nm_weight, sparsegpt_nm_prune, wanda_nm_mask
from evaluators.inventory import weight_view
from evaluators.stats import collect_stats
from spaces import Fidelity, MixedScheme


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread: the column sweep issues many small ops (see test_compressors.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def groups_nonzero(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Non-zeros in every group of m consecutive inputs: (out, in / m)."""
    return (weight.reshape(weight.shape[0], -1, m) != 0).sum(-1)


def reconstruction_error(weight: torch.Tensor, pruned: torch.Tensor, hessian: torch.Tensor) -> float:
    """tr((W - Wc) H (W - Wc)^T) / tr(W H W^T)."""
    diff = (weight - pruned).double()
    h = hessian.double()
    return float(((diff @ h) * diff).sum() / ((weight.double() @ h) * weight.double()).sum())


# --- masks -------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    pattern=st.sampled_from([(1, 2), (2, 4), (1, 4), (3, 4), (4, 8), (2, 8)]),
    rows=st.integers(1, 6),
    groups=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_a_mask_keeps_exactly_the_n_largest_of_every_group(pattern, rows, groups, seed, ties):
    n, m = pattern
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(rows, groups * m, generator=gen)
    if ties:  # few distinct values: the lower column wins a tie
        scores = scores.round()
    mask = nm_mask(scores, n, m)
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    assert (mask.reshape(rows, groups, m).sum(-1) == n).all()
    for r in range(rows):
        for g in range(groups):
            values = scores[r, g * m : (g + 1) * m].tolist()
            expected = sorted(range(m), key=lambda j: (-values[j], j))[:n]
            assert sorted(torch.nonzero(mask[r, g * m : (g + 1) * m]).flatten().tolist()) == sorted(expected)


def test_magnitude_and_wanda_masks_score_as_their_unstructured_rankings():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 16, generator=gen)
    norms = torch.rand(16, generator=gen) * 10
    assert torch.equal(magnitude_nm_mask(weight, 2, 4), nm_mask(weight.abs(), 2, 4))
    assert torch.equal(wanda_nm_mask(weight, norms, 2, 4), nm_mask(weight.abs() * norms.sqrt(), 2, 4))
    # With equal input norms Wanda is magnitude; a large norm protects its column.
    assert torch.equal(wanda_nm_mask(weight, torch.ones(16), 2, 4), magnitude_nm_mask(weight, 2, 4))
    loud = torch.ones(16)
    loud[::4] = 1e6
    assert wanda_nm_mask(weight, loud, 1, 4)[:, ::4].all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda w: nm_mask(w, 2, 3), "in_features divisible by 3, got 8"),
        (lambda w: nm_mask(w, 4, 4), r"n must be in \[1, 3\], got 4"),
        (lambda w: nm_mask(w, 0, 4), r"n must be in \[1, 3\], got 0"),
        (lambda w: nm_mask(w, 1, 1), "m must be >= 2, got 1"),
        (lambda w: wanda_nm_mask(w, torch.ones(7), 2, 4), r"shape \(in_features,\) = \(8,\)"),
        (lambda w: sparsegpt_nm_prune(w, torch.eye(8), 2, 4, blocksize=6), "blocksize must be a multiple of m = 4"),
        (lambda w: sparsegpt_nm_prune(w, torch.eye(4), 2, 4), r"hessian must have shape"),
    ],
)
def test_bad_patterns_name_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call(torch.randn(3, 8))


def test_a_stored_level_becomes_a_weight():
    dense = torch.tensor([[1.0, -2.0, 3.0, 4.0]])
    mask = torch.tensor([[True, False, False, True]])
    assert torch.equal(nm_weight(mask, dense), torch.tensor([[1.0, 0.0, 0.0, 4.0]]))
    stored = torch.tensor([[0.5, 0.0, 0.0, 4.5]], dtype=torch.float64)
    assert nm_weight(stored, dense).dtype == torch.float32 and torch.equal(nm_weight(stored, dense), stored.float())


# --- SparseGPT ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m", "blocksize"), [(2, 4, 128), (2, 4, 8), (1, 4, 16), (4, 8, 64)])
def test_sparsegpt_nm_prunes_exactly_the_pattern(n, m, blocksize):
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(12, 64, generator=gen)
    inputs = torch.randn(400, 64, generator=gen) @ torch.randn(64, 64, generator=gen)
    inputs[:, 5] = 0.0  # a dead input: pruned first, and at no cost
    hessian = inputs.T @ inputs
    pruned = sparsegpt_nm_prune(weight, hessian, n, m, blocksize=blocksize)
    assert pruned.shape == weight.shape and pruned.dtype == weight.dtype
    assert (groups_nonzero(pruned, m) == n).all()  # exactly m - n zeros per group, kept weights non-zero
    assert (pruned[:, 5] == 0).all()  # the dead input's weights go first, whatever n
    # Compensation makes it better than masking alone, with the same pattern.
    masked = weight * (pruned != 0)
    assert reconstruction_error(weight, pruned, hessian) < reconstruction_error(weight, masked, hessian)


def test_sparsegpt_nm_with_one_group_per_block_equals_any_blocksize():
    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(5, 32, generator=gen, dtype=torch.float64)
    inputs = torch.randn(200, 32, generator=gen, dtype=torch.float64)
    hessian = inputs.T @ inputs
    a = sparsegpt_nm_prune(weight, hessian, 2, 4, blocksize=4, dtype=torch.float64)
    b = sparsegpt_nm_prune(weight, hessian, 2, 4, blocksize=32, dtype=torch.float64)
    assert torch.allclose(a, b, atol=1e-10)  # lazy updates change the order of sums, not the result


def test_on_a_real_minilm_layer_sparsegpt_nm_beats_magnitude_and_wanda_nm(make_evaluator):
    layer = "encoder.layer.2.intermediate.dense"
    evaluator = make_evaluator(
        model={"name": "pressroom:minilm"},
        compression={"compressor": "magnitude", "include": [layer], "levels": {"max_levels": 1}},
        data={"seq_len": 128, "stats_tokens": 2048},
    )
    [stats] = [group[layer] for group in collect_stats(
        evaluator.model, evaluator.inventory.modules, evaluator.inventory.layers,
        evaluator.data.first(2048), hessian=True,
    )]  # fmt: skip
    assert stats.hessian is not None
    weight = weight_view(evaluator.inventory.modules[layer]).clone()  # (1536, 384)
    errors = {
        "magnitude": reconstruction_error(weight, weight * magnitude_nm_mask(weight, 2, 4), stats.hessian),
        "wanda": reconstruction_error(weight, weight * wanda_nm_mask(weight, stats.sq_norms, 2, 4), stats.hessian),
        "sparsegpt": reconstruction_error(weight, sparsegpt_nm_prune(weight, stats.hessian, 2, 4), stats.hessian),
    }
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors
    # The pattern costs quality: unstructured SparseGPT at the same 50 % does better.
    [unstructured] = sparsegpt_prune(weight, stats.hessian, [weight.numel() // 2])
    assert reconstruction_error(weight, unstructured, stats.hessian) < errors["sparsegpt"]
    # And magnitude N:M is worse than unstructured magnitude at 50 %.
    half = weight.clone().flatten()
    half[magnitude_ranking(weight)[: weight.numel() // 2]] = 0
    assert reconstruction_error(weight, half.reshape(weight.shape), stats.hessian) < errors["magnitude"]


# --- the Evaluator: stored, applied, switched ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "compressor"),
    [
        ("pressroom:tiny-llama", "magnitude"),
        ("pressroom:tiny-llama", "wanda"),
        ("pressroom:tiny-llama", "sparsegpt"),
        ("pressroom:tiny-gpt2", "magnitude"),  # GPT-2's Conv1D stores its weight transposed
    ],
)
def test_the_evaluator_applies_nm_levels_from_the_database(make_evaluator, model, compressor):
    evaluator = make_evaluator(
        model={"name": model},
        compression={"scheme": "mixed", "target": 0.5, "compressor": compressor, "levels": {"sparsities": [0.5, 0.7]}},
    )
    space = evaluator.space
    scheme = space.scheme
    assert isinstance(scheme, MixedScheme)
    assert evaluator.db.manifest["params"] == {"n": 2, "m": 4}
    structured = scheme.structured_level
    # Every unit that can takes the pattern, the others 70 % unstructured: at least 50 % sparse.
    levels = [structured if structured in allowed else allowed[-1] for allowed in space.levels]
    profile = space.from_array(levels)
    assert space.is_feasible(profile)
    result = evaluator.evaluate(profile, Fidelity(256, (0, 0)))
    assert result.fitness > 0 and result.switched == len(space.layers)
    patterned = 0
    for name, setting in space.layer_settings(profile).items():
        pruned, is_nm = MixedScheme.decode(setting)
        weight = weight_view(evaluator.inventory.modules[name])  # (out, in)
        assert int((weight == 0).sum()) == pruned
        if is_nm:
            patterned += 1
            assert (groups_nonzero(weight, 4) == 2).all()
            stored = evaluator.db.weight(name, setting)
            assert stored.dtype == (torch.bool if compressor != "sparsegpt" else weight.dtype)
    assert patterned > 0
    # Back to dense, then to an unstructured level of the same count: different masks.
    dense = evaluator.evaluate(None, Fidelity(256, (0, 0)))
    assert abs(dense.fitness) < 1e-6
    unit = next(i for i, allowed in enumerate(space.levels) if structured in allowed)
    half = list(levels)
    half[unit] = 1  # 50 % unstructured
    evaluator.apply(space.from_array(half))
    name = space.units[unit].layers[0].name
    weight = weight_view(evaluator.inventory.modules[name])
    assert int((weight == 0).sum()) == MixedScheme.decode(space.layer_settings(space.from_array(half))[name])[0]
    assert not (groups_nonzero(weight, 4) == 2).all()


def test_layer_errors_cover_the_nm_settings(make_evaluator):
    evaluator = make_evaluator(
        model={"name": "pressroom:tiny-llama"},
        compression={"scheme": "mixed", "target": 0.5, "compressor": "wanda", "levels": {"sparsities": [0.5]}},
    )
    errors = evaluator.layer_errors()
    for name, choices in evaluator.space.layer_choices().items():
        assert set(errors[name]) == {str(c) for c in choices}
        assert all(np.isfinite(v) and v >= 0 for v in errors[name].values())
        assert errors[name]["0"] == pytest.approx(0.0, abs=1e-12)  # dense
        nm = [c for c in choices if c < 0]
        assert all(errors[name][str(c)] > 0 for c in nm)
