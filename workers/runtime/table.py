"""The per-layer latency table: per layer shape, backend and sparsity, the median time of one
layer next to the dense layer of that shape, timed interleaved (`timing`).

`LatencyTable.estimate` predicts a candidate's latency without running it, as the dense model's
latency minus the sum of its layers' savings, and `LatencyTable.plan` picks for each layer the
fastest backend (dense where nothing pays).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .kernels import BACKENDS, LayerSetting, get_backend, probe, sample_layer
from .timing import synchronizer, time_interleaved

logger = logging.getLogger(__name__)

TABLE_VERSION = 1
#: The sparsities at which a table times the sparse backends, by default.
SPARSITIES = (0.5, 0.7, 0.9)

Shape = tuple[int, int]


@dataclass(frozen=True)
class LayerTiming:
    """One layer shape run by one backend, next to the dense layer of that shape.

    Attributes:
        shape: the weight's ``(out, in)``.
        backend: the backend's name ("dense" for the reference itself).
        sparsity: the weight's sparsity, for backends whose speed depends on it; else None
            (the time holds for every setting the backend accepts).
        seconds: median time of one call on the table's rows.
        dense_seconds: median time of the dense layer, in the same rounds.
    """

    shape: Shape
    backend: str
    sparsity: float | None
    seconds: float
    dense_seconds: float


@dataclass(frozen=True)
class LatencyTable:
    """Per-layer latencies on one device, for one number of input rows.

    Attributes:
        rows: input rows per call (tokens per forward).
        device: where it was measured.
        dtype: the activation dtype.
        threads: torch's intra-op threads.
        entries: the measurements.
    """

    rows: int
    device: str
    dtype: str
    threads: int
    entries: tuple[LayerTiming, ...]

    def dense_seconds(self, shape: Shape) -> float | None:
        """The dense layer's time for `shape`, or None if the table never measured it."""
        times = [e.dense_seconds for e in self.entries if e.shape == shape]
        return statistics.median(times) if times else None

    def seconds(self, shape: Shape, backend: str, setting: LayerSetting) -> float | None:
        """What one layer of `shape` holding `setting` costs on `backend`.

        Sparse backends are interpolated linearly between the measured sparsities and held
        flat above the highest (they only get faster); below the lowest measured sparsity the
        table does not say (None). None also when the backend does not accept the layer or
        was not measured for this shape.
        """
        if backend == "dense":
            return self.dense_seconds(shape)
        if not get_backend(backend).accepts(shape, setting):
            return None
        measured = [e for e in self.entries if e.shape == shape and e.backend == backend]
        fixed = [e.seconds for e in measured if e.sparsity is None]
        if fixed:
            return fixed[0]
        points = sorted((e.sparsity, e.seconds) for e in measured if e.sparsity is not None)
        if not points or setting.sparsity < points[0][0]:
            return None
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if x0 <= setting.sparsity <= x1:
                return y0 + (y1 - y0) * (setting.sparsity - x0) / (x1 - x0) if x1 > x0 else min(y0, y1)
        return points[-1][1]

    def best(self, shape: Shape, setting: LayerSetting) -> tuple[str, float] | None:
        """The fastest backend for a layer and its time, dense when nothing beats it; None
        when the table never measured this shape."""
        dense = self.dense_seconds(shape)
        if dense is None:
            return None
        choice = ("dense", dense)
        for name in sorted({e.backend for e in self.entries if e.shape == shape}):
            seconds = self.seconds(shape, name, setting)
            if seconds is not None and seconds < choice[1]:
                choice = (name, seconds)
        return choice

    def plan(self, layers: Mapping[str, tuple[Shape, LayerSetting]]) -> dict[str, str]:
        """Layer -> its fastest backend (only layers where a backend beats dense).

        Args:
            layers: name -> (shape ``(out, in)``, setting).
        """
        out: dict[str, str] = {}
        for name, (shape, setting) in layers.items():
            found = self.best(shape, setting)
            if found is not None and found[0] != "dense":
                out[name] = found[0]
        return out

    def estimate(self, dense_seconds: float, layers: Mapping[str, tuple[Shape, LayerSetting]]) -> float:
        """A candidate's latency without running it: the dense model's measured latency minus
        every layer's saving under its fastest backend (the additive assumption; layers of
        shapes the table lacks save nothing).

        Args:
            dense_seconds: the dense model's latency on the table's rows.
            layers: name -> (shape, setting) of every compressible layer.

        Returns:
            Seconds.

        Example:
            >>> table = LatencyTable(4, "cpu", "torch.float32", 1, (LayerTiming((8, 8), "csr", 0.5, 1.0, 3.0),))
            >>> table.estimate(10.0, {"a": ((8, 8), LayerSetting(sparsity=0.6)), "b": ((8, 8), LayerSetting())})
            8.0
        """
        saving = 0.0
        for shape, setting in layers.values():
            found = self.best(shape, setting)
            dense = self.dense_seconds(shape)
            if found is not None and dense is not None:
                saving += dense - found[1]
        return dense_seconds - saving

    def to_dict(self) -> dict[str, Any]:
        """Versioned, JSON-able."""
        return {
            "version": TABLE_VERSION,
            "rows": self.rows,
            "device": self.device,
            "dtype": self.dtype,
            "threads": self.threads,
            "entries": [{**dataclasses.asdict(e), "shape": list(e.shape)} for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        """The inverse of `to_dict`.

        Raises:
            ValueError: another version, or a malformed entry.
        """
        if data.get("version") != TABLE_VERSION:
            raise ValueError(f"latency table version {data.get('version')!r} is not {TABLE_VERSION}")
        try:
            entries = tuple(
                LayerTiming(
                    (int(e["shape"][0]), int(e["shape"][1])),
                    str(e["backend"]),
                    None if e["sparsity"] is None else float(e["sparsity"]),
                    float(e["seconds"]),
                    float(e["dense_seconds"]),
                )
                for e in data["entries"]
            )
            return cls(int(data["rows"]), str(data["device"]), str(data["dtype"]), int(data["threads"]), entries)
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"malformed latency table: {exc!r}") from None


def build_table(
    shapes: Sequence[Shape],
    *,
    backends: Sequence[str] | None = None,
    sparsities: Sequence[float] = SPARSITIES,
    rows: int = 2048,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    warmup: int = 2,
    repeats: int = 10,
) -> LatencyTable:
    """Time every (shape, backend, sparsity) against the dense layer of that shape.

    Each shape's variants and its dense layer run interleaved in the same rounds, on seeded
    random weights (pruned by magnitude for sparse backends) and random input rows.

    Args:
        shapes: weight shapes ``(out, in)``; repeats are measured once.
        backends: backend names; default every registered one. Those that fail their probe on
            this device and dtype are left out (and logged).
        sparsities: the grid for sparse backends, each in (0, 1).
        rows: input rows per call (tokens per forward).
        device: where to measure.
        dtype: the activation dtype.
        warmup: untimed rounds.
        repeats: timed rounds.

    Returns:
        The `LatencyTable`.

    Raises:
        ValueError: an unknown backend, or a sparsity outside (0, 1).

    Example:
        >>> table = build_table([(32, 32)], backends=["csr"], sparsities=[0.9], rows=8, repeats=2)
        >>> sorted(e.backend for e in table.entries)
        ['csr', 'dense']
    """
    if any(not 0.0 < s < 1.0 for s in sparsities):
        raise ValueError(f"sparsities must lie in (0, 1), got {list(sparsities)}")
    where = torch.device(device)
    usable = []
    for name in backends if backends is not None else BACKENDS:
        found = probe(name, where, dtype)
        if found.available:
            usable.append(get_backend(name))
        else:
            logger.debug("latency table leaves out %s: %s", name, found.reason)
    dense = get_backend("dense")
    entries: list[LayerTiming] = []
    for shape in dict.fromkeys((int(s[0]), int(s[1])) for s in shapes):
        weight, bias, x, _ = sample_layer(dense, shape, rows, device=where, dtype=dtype)
        calls = {"dense": _forward(dense.build(weight, bias), x)}
        grids: dict[str, float | None] = {"dense": None}
        for backend in usable:
            if backend.name == "dense":
                continue
            for sparsity in sparsities if backend.sparse else [None]:
                w, b, _, setting = sample_layer(
                    backend, shape, rows, sparsity=sparsity or 0.0, device=where, dtype=dtype
                )
                if backend.accepts(shape, setting):
                    key = backend.name if sparsity is None else f"{backend.name}@{setting.sparsity:.4f}"
                    calls[key] = _forward(backend.build(w, b), x)
                    grids[key] = None if sparsity is None else setting.sparsity
        sync = synchronizer(where)
        number = _calls_per_sample(calls["dense"], sync)
        samples = time_interleaved(calls, warmup=warmup, repeats=repeats, number=number, synchronize=sync)
        dense_seconds = statistics.median(samples["dense"])
        for key, sparsity in grids.items():
            name = key.split("@")[0]
            entries.append(LayerTiming(shape, name, sparsity, statistics.median(samples[key]), dense_seconds))
        logger.info("latency table: %s timed on %d variants", shape, len(calls))
    return LatencyTable(rows, str(where), str(dtype), torch.get_num_threads(), tuple(entries))


def _calls_per_sample(call: Callable[[], object], sync: Callable[[], None] | None, target: float = 2e-3) -> int:
    """How many back-to-back calls make a sample of about `target` seconds: one small layer
    takes microseconds, below the timer's and the scheduler's resolution."""
    once = time_interleaved({"call": call}, warmup=1, repeats=1, synchronize=sync)["call"][0]
    return max(1, min(1000, math.ceil(target / max(once, 1e-9))))


def _forward(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return module(x)

    return run
