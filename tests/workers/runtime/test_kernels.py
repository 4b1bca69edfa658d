"""Kernel backends: the registry's probes, every CPU backend against dense within its gate, the
pure conversions, the model walker, the compiled model's weight swaps; CUDA backends on a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spaces import BitwidthScheme, DropScheme, LayerInfo, Space
from workers.runtime.kernels import (
    BACKENDS,
    CompiledModel,
    LayerSetting,
    RecompileError,
    available_backends,
    get_backend,
    kernel_settings,
    probe,
    relative_error,
    restore_linears_,
    sample_layer,
    swap_linears_,
)
from workers.runtime.kernels.convert import (
    bsr_block,
    is_two_four,
    pack_int4_pairs,
    quantize_fp8,
    quantize_groups_int4,
    quantize_rows_int8,
    to_bsr,
)
from workers.runtime.kernels.modules import Fp8Linear, Int4WeightOnlyLinear, Int8WeightOnlyLinear

CPU_BACKENDS = ["dense", "csr", "bsr", "int8-dynamic"]
CUDA_BACKENDS = ["dense", "csr", "bsr", "semi-structured", "int8-weight-only", "int4-weight-only", "fp8"]
MINILM_SHAPES = [(384, 384), (1536, 384), (384, 1536)]

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


# --- the registry ---------------------------------------------------------------------------------


def test_registry_is_explicit_and_names_match():
    assert set(CPU_BACKENDS) | set(CUDA_BACKENDS) == set(BACKENDS)
    for name, backend in BACKENDS.items():
        assert backend.name == name and backend.devices and backend.dtypes and backend.summary
        assert get_backend(name) is backend


def test_unknown_backend_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown kernel backend 'sparse24'.*'csr'"):
        get_backend("sparse24")


@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_cpu_backends_pass_their_probe(name):
    found = probe(name, "cpu", torch.float32)
    assert found.available, found.reason
    assert found.error is not None and found.error <= get_backend(name).gate(torch.float32)
    assert probe(name, "cpu", torch.float32) is found  # remembered


def test_cpu_lists_exactly_the_cpu_backends():
    assert available_backends("cpu") == CPU_BACKENDS


@pytest.mark.parametrize("name", sorted(set(CUDA_BACKENDS) - set(CPU_BACKENDS)))
def test_cuda_only_backends_say_why_they_are_missing_on_cpu(name):
    found = probe(name, "cpu")
    assert not found.available and "not cpu" in found.reason and found.error is None


def test_a_dtype_a_kernel_lacks_is_unavailable_with_the_reason():
    found = probe("csr", "cpu", torch.bfloat16)  # MKL's sparse addmm takes float32 only
    assert not found.available and "BFloat16" in found.reason
    assert not probe("int8-dynamic", "cpu", torch.float16).available


def test_gates_grow_with_the_format_and_reject_unknown_dtypes():
    assert get_backend("csr").gate(torch.float32) < get_backend("int8-dynamic").gate(torch.float32)
    assert get_backend("fp8").gate(torch.bfloat16) < get_backend("int4-weight-only").gate(torch.bfloat16)
    with pytest.raises(ValueError, match=r"no error gate for dtype torch\.float64"):
        get_backend("dense").gate(torch.float64)


def test_accepts_follows_the_setting_and_the_shape():
    sparse, bits8, bits4 = LayerSetting(sparsity=0.6), LayerSetting(bits=8), LayerSetting(bits=4)
    two_four = LayerSetting(sparsity=0.5, structure="2:4")
    assert get_backend("csr").accepts((384, 384), sparse) and not get_backend("csr").accepts((384, 384), bits8)
    assert not get_backend("csr").accepts((384, 384), LayerSetting())
    assert get_backend("bsr").accepts((384, 384), sparse) and not get_backend("bsr").accepts((30, 30), sparse)
    assert get_backend("int8-dynamic").accepts((384, 384), bits4)
    assert not get_backend("int8-dynamic").accepts((384, 384), LayerSetting(bits=16))
    assert get_backend("int4-weight-only").accepts((384, 1536), bits4)
    assert not get_backend("int4-weight-only").accepts((384, 1536), bits8)
    assert get_backend("semi-structured").accepts((384, 384), two_four)
    assert not get_backend("semi-structured").accepts((384, 384), sparse)
    assert all(get_backend("dense").accepts((3, 5), s) for s in (sparse, bits4, two_four))


def test_layer_setting_rejects_nonsense():
    with pytest.raises(ValueError, match="sparsity must be in"):
        LayerSetting(sparsity=1.5)
    with pytest.raises(ValueError, match="bits must be in"):
        LayerSetting(bits=0)
    with pytest.raises(ValueError, match="structure '1:8'"):
        LayerSetting(structure="1:8")


# --- CPU correctness ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [*MINILM_SHAPES, (48, 40)])
@pytest.mark.parametrize("name", CPU_BACKENDS)
def test_cpu_backend_matches_dense_within_its_gate(name, shape):
    backend = get_backend(name)
    for sparsity in (0.5, 0.9) if backend.sparse else (0.7,):
        weight, bias, x, setting = sample_layer(backend, shape, rows=64, sparsity=sparsity, seed=3)
        if not backend.accepts(shape, setting):
            assert name == "bsr" and bsr_block(shape) is None
            continue
        module = backend.build(weight, bias)
        assert relative_error(module, weight, bias, x) <= backend.gate(torch.float32)
        x3 = x.reshape(4, 16, shape[1])  # (B, S, in): leading dimensions survive
        with torch.no_grad():
            assert module(x3).shape == (4, 16, shape[0])
        assert relative_error(module, weight, bias, x3) <= backend.gate(torch.float32)


@pytest.mark.parametrize("name", ["csr", "bsr", "int8-dynamic"])
def test_cpu_backend_without_bias(name):
    backend = get_backend(name)
    weight, _, x, _ = sample_layer(backend, (64, 96), rows=16)
    assert relative_error(backend.build(weight, None), weight, None, x) <= backend.gate(torch.float32)


def test_int8_rows_round_trip():
    weight = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    q, scale = quantize_rows_int8(weight)
    assert q.dtype == torch.int8 and scale.shape == (64,) and int(q.abs().max()) == 127
    error = (q.float() * scale[:, None] - weight).abs()
    assert bool((error <= scale[:, None] / 2 + 1e-6).all())  # at most half a step per weight


def test_int4_groups_follow_the_tinygemm_formula():
    weight = torch.randn(32, 256, generator=torch.Generator().manual_seed(2))
    q, scales_and_zeros = quantize_groups_int4(weight, 64)
    assert q.dtype == torch.int32 and int(q.min()) >= 0 and int(q.max()) <= 15
    assert scales_and_zeros.shape == (4, 32, 2)
    scale = scales_and_zeros[:, :, 0].t().repeat_interleave(64, dim=1)  # (out, in)
    zero = scales_and_zeros[:, :, 1].t().repeat_interleave(64, dim=1)
    restored = (q.float() - 8) * scale + zero
    assert bool(((restored - weight).abs() <= scale / 2 + 1e-5).all())
    with pytest.raises(ValueError, match="must be >= 2 and divide in_features 256"):
        quantize_groups_int4(weight, 96)


def test_int4_pairs_put_the_even_column_high():
    q = torch.tensor([[1, 2, 15, 0]], dtype=torch.int32)
    assert pack_int4_pairs(q).tolist() == [[0x12, 0xF0]]


def test_int4_module_on_the_cpu_kernel():
    # The CUDA backend's module; torch's CPU tinygemm takes the same scales and zeros.
    weight, bias, x, _ = sample_layer(get_backend("int4-weight-only"), (128, 256), rows=24)
    module = Int4WeightOnlyLinear(*quantize_groups_int4(weight, 128), 128, bias, torch.float32)
    assert relative_error(module, weight, bias, x) <= get_backend("int4-weight-only").gate(torch.float32)


def test_fp8_module_on_the_cpu_scaled_mm():
    weight, bias, x, _ = sample_layer(get_backend("fp8"), (128, 256), rows=24)
    q, scale = quantize_fp8(weight)
    assert q.dtype == torch.float8_e4m3fn and scale.dim() == 0
    module = Fp8Linear(q, scale, bias)
    assert relative_error(module, weight, bias, x) <= get_backend("fp8").gate(torch.float32)


def test_int8_weight_only_module_math_on_cpu():
    weight, bias, x, _ = sample_layer(get_backend("int8-weight-only"), (96, 128), rows=8)
    module = Int8WeightOnlyLinear(*quantize_rows_int8(weight), bias)
    assert relative_error(module, weight, bias, x) <= get_backend("int8-weight-only").gate(torch.float32)


def test_two_four_detection_and_bsr_blocks():
    weight, *_ = sample_layer(get_backend("semi-structured"), (32, 64))
    assert is_two_four(weight)
    weight[0, :3] = 1.0
    assert not is_two_four(weight) and not is_two_four(torch.zeros(4, 6))
    assert bsr_block((384, 1536)) == 32 and bsr_block((48, 40)) == 8 and bsr_block((30, 30)) is None
    with pytest.raises(ValueError, match="no BSR block"):
        to_bsr(torch.zeros(30, 30))
    with pytest.raises(ValueError, match="must be 2-D"):
        quantize_rows_int8(torch.zeros(3))


# --- the walker -----------------------------------------------------------------------------------


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64)).eval()
    with torch.no_grad():  # a stitched model: layer 0 at 80 % sparsity
        weight = model[0].weight
        weight[weight.abs() < weight.abs().flatten().kthvalue(int(0.8 * weight.numel())).values] = 0
    return model


def test_swap_runs_the_backends_and_restore_puts_the_modules_back():
    model = _mlp()
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        expected = model(x)
    first, second = model[0], model[2]
    settings = {"0": LayerSetting(sparsity=0.8), "2": LayerSetting(bits=8)}
    originals = swap_linears_(model, {"0": "csr", "2": "int8-dynamic"}, settings)
    assert set(originals) == {"0", "2"} and type(model[0]).__name__ == "SparseLinear"
    with torch.no_grad():
        got = model(x)
    assert float((got - expected).norm() / expected.norm()) <= get_backend("int8-dynamic").gate(torch.float32)
    restore_linears_(model, originals)
    assert model[0] is first and model[2] is second


def test_dense_in_a_plan_leaves_the_layer():
    model = _mlp()
    assert swap_linears_(model, {"0": "dense"}) == {} and isinstance(model[0], nn.Linear)


@pytest.mark.parametrize(
    ("plan", "settings", "message"),
    [
        ({"9": "csr"}, None, "model has no module '9'"),
        ({"1": "csr"}, None, "module '1' is a GELU, not a linear layer"),
        ({"0": "nope"}, None, "unknown kernel backend 'nope'"),
        ({"0": "fp8"}, None, r"backend 'fp8' runs on \['cuda'\]; layer '0' is on cpu"),
        ({"0": "int8-dynamic"}, {"0": LayerSetting(sparsity=0.8)}, "does not accept layer '0'"),
        ({"0": "csr"}, {}, "layer '0' is in the plan but has no setting"),
    ],
)
def test_swap_refuses_bad_plans_and_leaves_the_model_as_it_was(plan, settings, message):
    model = _mlp()
    before = dict(model.named_children())
    with pytest.raises(ValueError, match=message):
        swap_linears_(model, {"2": "csr", **plan}, None if settings is None else {"2": LayerSetting(0.1), **settings})
    assert dict(model.named_children()) == before  # the layer swapped before the error is back


def test_kernel_settings_from_a_space(make_evaluator):
    evaluator = make_evaluator(
        model={"name": "pressroom:tiny-bert"}, compression={"target": 0.7, "compressor": "magnitude"}
    )
    space = evaluator.space
    settings = kernel_settings(space, space.uniform())
    assert list(settings) == [layer.name for layer in space.layers]
    weights = sum(layer.numel for layer in space.layers)
    average = sum(settings[layer.name].sparsity * layer.numel for layer in space.layers) / weights
    assert average == pytest.approx(0.7, abs=1e-3) and all(s.bits == 16 for s in settings.values())


def test_kernel_settings_for_bits_and_not_for_drop():
    layers = [LayerInfo("h.0.attn", (8, 8), 64, 0, "attn"), LayerInfo("h.0.mlp", (8, 8), 64, 0, "mlp")]
    bits = Space(layers, BitwidthScheme(4, (2, 4, 8)))
    assert kernel_settings(bits, bits.uniform()) == {"h.0.attn": LayerSetting(bits=4), "h.0.mlp": LayerSetting(bits=4)}
    drop = Space(layers, DropScheme(0.5))
    with pytest.raises(ValueError, match="not 'drop'"):
        kernel_settings(drop, drop.sample(np.random.default_rng(0)))


# --- the compiled model ---------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_model_takes_weight_swaps_without_recompiling():
    model = _mlp().append(nn.Dropout(0.5)).eval()  # eval: the identity; train: a guard dynamo checks
    compiled = CompiledModel(model, max_signatures=1)
    x = torch.randn(8, 64)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), rtol=1e-4, atol=1e-5)
        generator = torch.Generator().manual_seed(4)
        for step in range(3):  # what the Evaluator does: write new values into the same tensors
            if step % 2:
                compiled.load_({"0.weight": torch.randn(128, 64, generator=generator)})
            else:
                model[2].weight.copy_(torch.randn(64, 128, generator=generator))
            assert torch.allclose(compiled(x), model(x), rtol=1e-4, atol=1e-5)
        assert compiled.graphs == 1
        with pytest.raises(RecompileError, match="past which dynamo silently runs eagerly"):
            compiled(torch.randn(9, 64))  # a second signature is over this model's limit
        model.train()  # a guard fails: dynamo would recompile the signature it already has
        with pytest.raises(RecompileError, match="would recompile for inputs it was compiled for"):
            compiled(x)
    assert compiled.graphs == 1
    with pytest.raises(ValueError, match="no parameter or buffer 'nope'"):
        compiled.load_({"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        compiled.load_({"0.weight": torch.zeros(2, 2)})


def test_compiled_model_limits_must_fit_dynamos():
    with pytest.raises(ValueError, match="max_signatures must be in"):
        CompiledModel(_mlp(), max_signatures=10_000)


# --- CUDA (skipped without a GPU) -----------------------------------------------------------------


def _cuda_probe(name: str, dtype: torch.dtype):
    found = probe(name, "cuda", dtype)
    if not found.available and "compute capability" in found.reason:
        pytest.skip(found.reason)  # the GPU is too old for this kernel: a missing resource
    return found


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("name", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_backend_matches_dense_within_its_gate(name, dtype):
    backend = get_backend(name)
    if dtype not in backend.dtypes:
        assert not probe(name, "cuda", dtype).available
        return
    found = _cuda_probe(name, dtype)
    assert found.available, found.reason
    for shape in MINILM_SHAPES:
        weight, bias, x, setting = sample_layer(backend, shape, rows=2048, device="cuda", dtype=dtype)
        assert backend.accepts(shape, setting)
        assert relative_error(backend.build(weight, bias), weight, bias, x) <= backend.gate(dtype)


@pytest.mark.cuda
@needs_cuda
def test_cuda_swap_of_a_two_four_model():
    _cuda_probe("semi-structured", torch.float16)
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256)).cuda().half().eval()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            groups = layer.weight.view(-1, 4)
            groups.scatter_(1, groups.abs().argsort(dim=1)[:, :2], 0.0)
    x = torch.randn(4, 128, 256, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        expected = model(x)
    two_four = LayerSetting(sparsity=0.5, structure="2:4")
    swap_linears_(model, {"0": "semi-structured", "2": "semi-structured"}, {"0": two_four, "2": two_four})
    with torch.no_grad():
        got = model(x)
    assert float((got.float() - expected.float()).norm() / expected.float().norm()) < 1e-2
