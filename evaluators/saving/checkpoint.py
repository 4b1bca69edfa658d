"""A profile written as a checkpoint a serving engine loads: compressed-tensors, or a shallower model.

A bitwidth profile becomes a ``pack-quantized`` compressed-tensors checkpoint written by the
`compressed-tensors` library itself: integer weights packed into int32 with per-group scales and
zero points (none for a symmetric grid), one config group per distinct (bits, group size,
symmetry) whose targets are the layers' full module names, everything else listed under
``ignore``, and the ``quantization_config`` in ``config.json``. The integers are those of the
evaluator's own grid (`evaluators.compressors.rtn`'s min-max grid, asymmetric or symmetric as
``levels.symmetric`` says, which GPTQ shares), recovered from the stored dequantised weights, so
the checkpoint decompresses to the weights the search measured.

A drop profile that removes whole blocks becomes a smaller model of the same architecture: the
dropped blocks are deleted and the config's layer count and per-layer lists shortened.

Example:
    >>> evaluator = compressed_evaluator(spec, profile)  # doctest: +SKIP
    >>> save_compressed_tensors(evaluator, profile, Path("out/tiny-llama-ct"))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spaces import Profile

from ..caches import find_blocks
from ..config import CompressionSpec
from ..evaluator import DENSE_BITS, Evaluator

logger = logging.getLogger(__name__)

#: Bit widths the pack-quantized format packs into int32 words.
PACKED_BITS = range(1, 9)
#: The format name `pressroom apply --format` takes for this export.
FORMAT = "compressed-tensors"
#: How far, in grid steps, a float32 weight may sit from its recovered grid point (float rounding);
#: half-precision weights get their rounding on top, up to 2^bits - 1 steps times their epsilon.
GRID_TOLERANCE = 1e-3


def recover_grid(
    weight: torch.Tensor, bits: int, group_size: int, symmetric: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-row, per-group grid a fake-quantised weight lies on: (scale, zero), each (out, groups).

    The weight holds ``scale * (q - zero)`` with integers ``q, zero`` in ``[0, 2^bits - 1]`` (RTN's
    and GPTQ's grid, whose range always holds 0; symmetric: ``zero = 2^(bits-1)``). GPTQ need not
    use a group's end points, so the step is searched: the widest grid of at most ``2^bits`` points
    through min(w, 0) and max(w, 0) (symmetric: through the largest magnitude, with q - zero in
    ``[-2^(bits-1), 2^(bits-1) - 1]``) on which every value lies reproduces the weights exactly.

    Raises:
        ValueError: a group whose values lie on no such grid (the weight was not quantised to
            `bits` with this group size and symmetry).
    """
    maxq = 2**bits - 1
    tolerance = GRID_TOLERANCE + maxq * torch.finfo(weight.dtype).eps
    if tolerance >= 0.25:
        raise ValueError(
            f"{bits}-bit weights stored in {weight.dtype} are rounded too coarsely to find their grid; "
            f"search with model dtype float32 to export {bits}-bit layers"
        )
    rows, cols = weight.shape
    size = cols if group_size >= cols else group_size
    groups = -(-cols // size)
    w = weight.detach().to(torch.float64)
    padded = torch.nn.functional.pad(w, (0, groups * size - cols)).view(rows, groups, size)  # pads with 0: on grid
    half = 2 ** (bits - 1)
    if symmetric:  # the step is the largest magnitude over a whole number of steps, at most 2^(bits-1)
        low = torch.zeros_like(padded[..., 0])
        span, candidates = padded.abs().amax(dim=-1), range(half, 0, -1)
    else:
        low = padded.amin(dim=-1).clamp(max=0)
        span, candidates = padded.amax(dim=-1).clamp(min=0) - low, range(maxq, 0, -1)  # (rows, groups)
    steps = torch.zeros_like(span)  # 0 = not found yet
    for k in candidates:
        todo = steps == 0
        if not todo.any():
            break
        scaled = (padded - low.unsqueeze(-1)) / (span / k).clamp(min=1e-300).unsqueeze(-1)
        fits = ((scaled - scaled.round()).abs() <= tolerance).all(dim=-1)
        if symmetric:  # signed integers in [-2^(bits-1), 2^(bits-1) - 1]
            fits &= (scaled.amax(dim=-1) <= half - 1 + tolerance) & (scaled.amin(dim=-1) >= -half - tolerance)
        steps[todo & fits] = k
    empty = span == 0
    if not bool((empty | (steps > 0)).all()):
        bad = int((~empty & (steps == 0)).nonzero()[0, 0])
        kind = "symmetric " if symmetric else ""
        raise ValueError(f"row {bad} of the weight lies on no {kind}{bits}-bit grid of group size {group_size}")
    scale = torch.where(empty, torch.ones_like(span), span / steps.clamp(min=1))
    zero = torch.full_like(scale, half) if symmetric else torch.round(-low / scale)
    return scale, zero


def _quantization_config(groups: dict[tuple[int, int, bool], list[str]], ignore: list[str]) -> Any:
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme

    schemes = {}
    for index, ((bits, size, symmetric), targets) in enumerate(sorted(groups.items())):
        args = QuantizationArgs(
            num_bits=bits, type="int", symmetric=symmetric, strategy="group", group_size=size, observer=None
        )
        schemes[f"group_{index}"] = QuantizationScheme(targets=sorted(targets), weights=args)
    return QuantizationConfig(config_groups=schemes, ignore=ignore, format="pack-quantized")


def _quantized_model(evaluator: Evaluator, profile: Profile) -> nn.Module:
    """A copy of the evaluator's model holding `profile`, with each quantised layer's grid attached."""
    from compressed_tensors.quantization import apply_quantization_config

    evaluator.apply(profile)
    group_size = int(evaluator.spec.compression.levels.group_size)
    symmetric = evaluator.spec.compression.levels.symmetric
    settings = evaluator.settings()
    quantized_bits = {bits for bits in settings.values() if bits is not None and bits < DENSE_BITS}
    unsupported = sorted(quantized_bits - set(PACKED_BITS))
    if unsupported:
        raise ValueError(
            f"the profile uses {unsupported} bits, which pack-quantized cannot store; allowed: "
            f"{PACKED_BITS.start}..{PACKED_BITS.stop - 1} (and {DENSE_BITS}, kept dense)"
        )
    model = copy.deepcopy(evaluator.model)
    groups: dict[tuple[int, int, bool], list[str]] = defaultdict(list)
    grids = {}
    for name, bits in settings.items():
        if bits is None or bits >= DENSE_BITS:
            continue
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"layer {name!r} is a {type(module).__name__}; compressed-tensors packs nn.Linear only")
        cols = module.weight.shape[1]
        size = cols if group_size >= cols else group_size
        if cols % size:
            raise ValueError(
                f"layer {name!r} has {cols} input columns, not a multiple of group_size {group_size}; "
                f"compressed-tensors (and vLLM) need whole groups: search with a group_size dividing {cols}"
            )
        grids[name] = (bits, *recover_grid(module.weight.data, bits, group_size, symmetric))
        groups[(bits, size, symmetric)].append(name)
    quantized = {name for names in groups.values() for name in names}
    ignore = sorted(n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in quantized)
    config = _quantization_config(groups, ignore)
    apply_quantization_config(model, config, show_progress=False)
    for name, (bits, scale, zero) in grids.items():
        module = model.get_submodule(name)
        offset = 2 ** (bits - 1)  # our integers are 0..2^b-1; compressed-tensors' are signed
        module.weight_scale.data.copy_(scale.to(module.weight_scale.dtype))
        if not symmetric:  # a symmetric grid's zero is 0 in signed integers, and not stored
            module.weight_zero_point.data.copy_((zero - offset).to(module.weight_zero_point.dtype))
    return model


def _drop_blocks(evaluator: Evaluator, profile: Profile) -> nn.Module:
    """A copy of the evaluator's model without the blocks `profile` drops whole."""
    settings = evaluator.space.layer_settings(profile)
    gone: dict[int, set[str]] = defaultdict(set)  # block -> the kinds of sub-block it loses
    for layer in evaluator.inventory.layers:
        if settings[layer.name]:
            gone[layer.block].add(layer.kind)
    partial = sorted(block for block, kinds in gone.items() if kinds != {"attn", "mlp"})
    if partial:
        raise ValueError(
            f"the profile drops parts of blocks {partial}; only whole-block drops make a smaller model "
            f"(save it without --format, which zeroes the dropped sub-blocks)"
        )
    dropped = set(gone)
    model = copy.deepcopy(evaluator.model)
    blocks = find_blocks(model, [layer.name for layer in evaluator.inventory.layers])
    path = next(n for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and list(m) == blocks)
    owner, _, attribute = path.rpartition(".")
    kept = [block for index, block in enumerate(blocks) if index not in dropped]
    for index, block in enumerate(kept):
        for sub in block.modules():
            if hasattr(sub, "layer_idx"):  # the KV cache slot of an attention module
                sub.layer_idx = index  # type: ignore[assignment]  # a plain int attribute
    setattr(model.get_submodule(owner), attribute, nn.ModuleList(kept))
    config = model.config
    total = len(blocks)
    for key, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == total:  # per-layer lists (layer_types, ...)
            setattr(config, key, [v for index, v in enumerate(value) if index not in dropped])
    config.num_hidden_layers = len(kept)
    return model


def loads_in_transformers(compression: CompressionSpec) -> bool:
    """Whether `save_compressed_tensors` writes, for this compression, a checkpoint that plain
    ``transformers`` ``from_pretrained`` loads: symmetric bitwidth grids (compressed-tensors 0.20.1
    packs no asymmetric zero point for the meta model transformers builds; docs/results.md) and
    whole-block drops. Sparsity, mixed and sub-block drops have no such checkpoint at all."""
    if compression.scheme == "bitwidth":
        return compression.levels.symmetric
    return compression.scheme == "drop" and compression.drop_unit == "block"


def save_compressed_tensors(evaluator: Evaluator, profile: Profile, out: Path) -> Path:
    """Write `profile` applied to the evaluator's model as a checkpoint serving engines load.

    Bitwidth profiles give a pack-quantized compressed-tensors checkpoint, whole-block drop
    profiles a smaller dense model; the evaluator's own model is left as it was.

    Raises:
        ValueError: `out` is not a new or empty folder; another scheme (sparsity and mixed
            profiles: compressed-tensors dropped its sparse formats in 0.15, docs/results.md); bits
            pack-quantized cannot store; drops of parts of blocks.
    """
    from .export import PROFILE_FILE

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not an empty folder; choose a new one")
    scheme = evaluator.spec.compression.scheme
    if scheme == "bitwidth":
        from compressed_tensors.compressors import ModelCompressor

        model = _quantized_model(evaluator, profile)
        compressor = ModelCompressor.from_pretrained_model(model, "pack-quantized")
        compressor.compress_model(model)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        compressor.update_config(str(out))
    elif scheme == "drop":
        model = _drop_blocks(evaluator, profile)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
    else:
        raise ValueError(
            f"--format {FORMAT} writes bitwidth and drop profiles, not {scheme!r} ones: compressed-tensors "
            f"has no sparse format since 0.15 (nor do transformers or vLLM load one); save {scheme} profiles "
            f"without --format (dense weights with zeros)"
        )
    evaluator.loaded.tokenizer.save_pretrained(out)
    (out / PROFILE_FILE).write_text(profile.to_json() + "\n")
    logger.info("saved %r as %s to %s", profile, FORMAT, out)
    return out


__all__ = ["FORMAT", "PACKED_BITS", "loads_in_transformers", "recover_grid", "save_compressed_tensors"]
