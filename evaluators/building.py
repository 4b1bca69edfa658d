"""What building one layer of the compression database does, apart from the database itself.

A build gathers the input statistics once, then compresses every layer independently: a
`LayerJob` holds all that one layer needs (its dense weight, settings and statistics) and
`write_layer` compresses it and writes its file under a temporary name, renames it, and returns
the manifest entry (file name, size, SHA-256). An `Executor` runs the jobs: `in_process` one
after another here, `workers.build_executor` on Ray workers in parallel; the database writes its
manifest from the entries, in either case the same bytes, since compression is deterministic.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from . import compressors
from .compressors import nm
from .stats import LayerStats

NESTED = ("magnitude", "wanda")
NEEDS_HESSIAN = ("sparsegpt", "gptq")


@dataclass(frozen=True)
class LayerJob:
    """One layer to compress.

    Attributes:
        name: the layer's module name (its file is ``NAME.safetensors``).
        compressor: the compressor's name.
        weight: the dense weight, shape (out, in).
        settings: every setting to store (negative ones are N:M levels, see `spaces.MixedScheme`).
        stats: the layer's input statistics, or None for compressors that need none.
        params: the database's compressor parameters (group size, N and M).
    """

    name: str
    compressor: str
    weight: torch.Tensor
    settings: tuple[int, ...]
    stats: LayerStats | None
    params: Mapping[str, Any]


#: Runs the jobs (pulled from the iterable as it goes, so statistics are made as needed) with
#: `write_layer` into the folder, and yields (layer name, manifest entry) as each job ends.
Executor = Callable[[Path, Iterable[LayerJob]], Iterator[tuple[str, dict[str, Any]]]]


def sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_layer(root: Path, job: LayerJob) -> dict[str, Any]:
    """Compress the job's layer and write its file into `root` (a temporary name, then an atomic
    rename); returns its manifest entry: ``{"file": None}`` when there is nothing to store."""
    unstructured = [s for s in job.settings if s >= 0]
    tensors = compress(job.compressor, job.weight, unstructured, job.stats, job.params)
    tensors.update(compress_nm(job.compressor, job.weight, job.settings, job.stats, job.params))
    if not tensors:
        return {"file": None}
    file = f"{job.name}.safetensors"
    tmp = root / f".{file}.{os.getpid()}.tmp"
    save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, root / file)
    return {"file": file, "bytes": (root / file).stat().st_size, "sha256": sha256(root / file)}


def in_process(root: Path, jobs: Iterable[LayerJob]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The default `Executor`: each job here, one after another."""
    for job in jobs:
        yield job.name, write_layer(root, job)


def compress(
    compressor: str,
    weight: torch.Tensor,
    settings: Sequence[int],
    stats: LayerStats | None,
    params: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """The tensors stored for a layer's unstructured settings: one ranking for the nested
    compressors, one weight per setting for the others, none for drop."""
    if compressor == "drop":
        return {}
    if compressor in NESTED:
        if compressor == "wanda":
            assert stats is not None
            ranking = compressors.wanda_ranking(weight, stats.sq_norms)
        else:
            ranking = compressors.magnitude_ranking(weight)
        return {"ranking": ranking[: max(settings)].to(torch.int32)}
    if compressor == "sparsegpt":
        assert stats is not None and stats.hessian is not None
        pruned = compressors.sparsegpt_prune(weight, stats.hessian, list(settings))
        return {f"s{s}": w for s, w in zip(settings, pruned, strict=True)}
    group = int(params.get("group_size", 128))
    symmetric = bool(params.get("symmetric", False))
    bits = [b for b in settings if b < 16]
    if compressor == "rtn":
        return {f"s{b}": compressors.rtn_quantize(weight, b, group_size=group, symmetric=symmetric) for b in bits}
    assert stats is not None and stats.hessian is not None
    quantized = compressors.gptq_quantize(weight, stats.hessian, bits, group_size=group, symmetric=symmetric)
    return {f"s{b}": w for b, w in zip(bits, quantized, strict=True)}


def compress_nm(
    compressor: str,
    weight: torch.Tensor,
    settings: Sequence[int],
    stats: LayerStats | None,
    params: Mapping[str, Any],
) -> dict[str, torch.Tensor]:
    """The N:M levels among a layer's settings (negated pruned counts, see `spaces.MixedScheme`),
    each stored under its setting like any other: a keep-mask for magnitude and Wanda (their
    unstructured ranking says nothing about a pattern), the pruned weight for SparseGPT."""
    structured = [s for s in settings if s < 0]
    if not structured:
        return {}
    n, m = int(params["n"]), int(params["m"])
    if compressor == "magnitude":
        value = nm.magnitude_nm_mask(weight, n, m)
    elif compressor == "wanda":
        assert stats is not None
        value = nm.wanda_nm_mask(weight, stats.sq_norms, n, m)
    else:
        assert compressor == "sparsegpt" and stats is not None and stats.hessian is not None, compressor
        value = nm.sparsegpt_nm_prune(weight, stats.hessian, n, m)
    return {f"s{s}": value for s in structured}
