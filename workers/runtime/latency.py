"""Latency of a compression profile on this worker's hardware, and a table to estimate it.

Two measurements, both interleaved (dense, compressed, dense, ... so drift hits both sides):

- `measure_latency`: the end-to-end forward of a dense and a compressed model on the same
  tokens; the report gives medians, their spread and the speedup.
- `build_table`: per layer shape, backend and sparsity, the median time of one layer next to
  the dense layer of that shape. `LatencyTable.estimate` then predicts a candidate's latency
  without running it, as the dense model's latency minus the sum of its layers' savings, and
  `LatencyTable.plan` picks for each layer the fastest backend (dense where nothing pays).

`profile_latency` ties these to an `Evaluator`; `latency_job` is what a worker runs for the
"latency" task payload. Nothing here needs Ray.

Example:
    >>> import torch
    >>> samples = time_interleaved({"a": lambda: torch.ones(8).sum(), "b": lambda: None}, repeats=3)
    >>> sorted(samples), len(samples["a"])
    (['a', 'b'], 3)
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evaluators import Batch, Evaluator
from evaluators.inventory import weight_view
from spaces import Fidelity, Job, LatencyParams, job_params

from .kernels import (
    BACKENDS,
    LayerSetting,
    get_backend,
    kernel_settings,
    probe,
    restore_linears_,
    sample_layer,
    swap_linears_,
)

logger = logging.getLogger(__name__)

TABLE_VERSION = 1
#: The sparsities at which a table times the sparse backends, by default.
SPARSITIES = (0.5, 0.7, 0.9)

Shape = tuple[int, int]


# --- timing -------------------------------------------------------------------------------------


def time_interleaved(
    calls: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 2,
    repeats: int = 15,
    number: int = 1,
    synchronize: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Time several calls in rounds: each round runs every call once, and each round starts at
    the next call, so no call always follows the same one and drift reaches all alike.

    Args:
        calls: name -> a call without arguments.
        warmup: untimed rounds first (allocations, caches, lazy initialisation).
        repeats: timed rounds.
        number: back-to-back calls per sample, for calls too short to time one by one.
        synchronize: waits for the device (``torch.cuda.synchronize``) around each sample.

    Returns:
        Name -> `repeats` wall times of one call in seconds, in round order (so index i of
        two names belongs to the same round).

    Raises:
        ValueError: no calls, or `repeats` < 1, `warmup` < 0 or `number` < 1.
    """
    if not calls:
        raise ValueError("time_interleaved needs at least one call")
    if repeats < 1 or warmup < 0 or number < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, number >= 1; got {repeats}, {warmup}, {number}")
    names = list(calls)
    sync = synchronize or (lambda: None)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            call = calls[name]
            sync()
            start = time.perf_counter()
            for _ in range(number):
                call()
            sync()
            if round_ >= warmup:
                samples[name].append((time.perf_counter() - start) / number)
    return samples


@dataclass(frozen=True)
class Timing:
    """A summary of timed samples, in seconds.

    Attributes:
        median: the median.
        low: the first quartile.
        high: the third quartile.
        samples: how many samples.
    """

    median: float
    low: float
    high: float
    samples: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Timing:
        """Summarise samples (at least one)."""
        if not samples:
            raise ValueError("Timing.of needs at least one sample")
        values = sorted(samples)
        if len(values) == 1:
            return cls(values[0], values[0], values[0], 1)
        low, _, high = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), low, high, len(values))

    @property
    def spread(self) -> float:
        """The interquartile range relative to the median."""
        return (self.high - self.low) / self.median if self.median > 0 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class LatencyReport:
    """Dense against compressed, on the same inputs, interleaved.

    Attributes:
        dense: the dense model's timing.
        compressed: the compressed model's timing.
        speedup: ``dense.median / compressed.median``.
        ratios: quartiles of the per-round ratios dense_i / compressed_i (the spread of the
            speedup, with drift between rounds cancelled).
        device: where it ran.
        threads: torch's intra-op threads.
        tokens: rows of tokens forwarded per call.
        plan: layer -> backend (layers not named stay dense).
        estimated: the latency a `LatencyTable` predicted for the compressed model, if asked.
    """

    dense: Timing
    compressed: Timing
    speedup: float
    ratios: Timing
    device: str
    threads: int
    tokens: int = 0
    plan: Mapping[str, str] = field(default_factory=dict)
    estimated: float | None = None

    @property
    def estimate_error(self) -> float | None:
        """(estimated - measured) / measured, when there is an estimate."""
        if self.estimated is None:
            return None
        return (self.estimated - self.compressed.median) / self.compressed.median

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return {
            "dense": self.dense.to_dict(),
            "compressed": self.compressed.to_dict(),
            "speedup": self.speedup,
            "ratios": self.ratios.to_dict(),
            "device": self.device,
            "threads": self.threads,
            "tokens": self.tokens,
            "plan": dict(self.plan),
            "estimated": self.estimated,
            "estimate_error": self.estimate_error,
        }


def _synchronizer(device: torch.device) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.type == "cuda" else None


def measure_latency(
    dense: Callable[[], object],
    compressed: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 2,
    repeats: int = 15,
) -> LatencyReport:
    """Time a dense and a compressed forward, alternating, and compare them.

    Args:
        dense: runs the dense model once.
        compressed: runs the compressed model once on the same inputs.
        device: where they run (CUDA calls are synchronised around each timing).
        warmup: untimed rounds.
        repeats: timed rounds.

    Returns:
        A `LatencyReport` (no plan, no estimate: `profile_latency` adds them).

    Example:
        >>> report = measure_latency(lambda: torch.ones(64, 64) @ torch.ones(64, 64), lambda: None, repeats=3)
        >>> report.speedup > 0
        True
    """
    where = torch.device(device)
    samples = time_interleaved(
        {"dense": dense, "compressed": compressed}, warmup=warmup, repeats=repeats, synchronize=_synchronizer(where)
    )
    dense_t, compressed_t = Timing.of(samples["dense"]), Timing.of(samples["compressed"])
    ratios = [d / max(c, 1e-12) for d, c in zip(samples["dense"], samples["compressed"], strict=True)]
    return LatencyReport(
        dense=dense_t,
        compressed=compressed_t,
        speedup=dense_t.median / max(compressed_t.median, 1e-12),
        ratios=Timing.of(ratios),
        device=str(where),
        threads=torch.get_num_threads(),
    )


# --- the per-layer table ------------------------------------------------------------------------


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
        sync = _synchronizer(where)
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


# --- a profile on an Evaluator ------------------------------------------------------------------


def _shapes(evaluator: Evaluator) -> dict[str, Shape]:
    """Each compressible layer's weight shape ``(out, in)``."""
    return {
        name: (int(weight_view(module).shape[0]), int(weight_view(module).shape[1]))
        for name, module in evaluator.inventory.modules.items()
    }


def _model_call(model: nn.Module, batch: Batch) -> Callable[[], object]:
    def run() -> object:
        with torch.inference_mode():
            return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    return run


def profile_latency(
    evaluator: Evaluator,
    profile: Mapping[str, int] | None,
    fidelity: Fidelity,
    *,
    plan: Mapping[str, str] | None = None,
    table: LatencyTable | None = None,
    warmup: int = 2,
    repeats: int = 15,
) -> LatencyReport:
    """The latency of `profile` against the dense model on `fidelity`'s tokens, on the
    evaluator's device, with real kernels in the compressed layers.

    The evaluator's model is switched to `profile` (as `evaluate` would), the layers named in
    the plan are swapped for their backends' modules for the measurement and put back after;
    the dense side is the evaluator's dense teacher. The whole batch is one forward.

    Args:
        evaluator: holds the model, its dense twin and the data.
        profile: unit -> level; None measures dense against dense (a noise check).
        fidelity: which tokens, and how many.
        plan: layer -> backend; default `table.plan(...)` when a table is given, else
            every layer dense.
        table: per-layer latencies on this device for the same rows; also gives the report's
            `estimated` latency.
        warmup: untimed rounds.
        repeats: timed rounds.

    Returns:
        The `LatencyReport`, with the plan used and the table's estimate.

    Raises:
        ValueError: a profile that does not fit the space, a "drop" scheme, or a plan a
            layer's backend cannot take.
    """
    settings = (
        kernel_settings(evaluator.space, profile)
        if profile is not None
        else dict.fromkeys(evaluator.inventory.modules, LayerSetting())
    )
    layers = {name: (shape, settings[name]) for name, shape in _shapes(evaluator).items()}
    chosen = dict(plan) if plan is not None else (table.plan(layers) if table is not None else {})
    batch = evaluator.data.batch(fidelity).to(evaluator.device)
    evaluator.apply(profile)
    originals = swap_linears_(evaluator.model, chosen, settings)
    try:
        report = measure_latency(
            _model_call(evaluator.teacher_model, batch),
            _model_call(evaluator.model, batch),
            device=evaluator.device,
            warmup=warmup,
            repeats=repeats,
        )
    finally:
        restore_linears_(evaluator.model, originals)
    estimated = table.estimate(report.dense.median, layers) if table is not None else None
    return dataclasses.replace(report, tokens=int(batch.input_ids.numel()), plan=chosen, estimated=estimated)


def latency_job(
    evaluator: Evaluator,
    profile: Mapping[str, int] | None,
    fidelity: Fidelity,
    params: LatencyParams | Mapping[str, Any],
) -> dict[str, Any]:
    """What a worker runs for a "latency" payload: a table for the model's layer shapes on
    this worker (unless one is given), then the profile's measured and estimated latency.

    Args:
        evaluator: the worker's evaluator.
        profile: unit -> level, or None for dense.
        fidelity: the tokens of one forward.
        params: `spaces.LatencyParams` (or their JSON form): the table's ``backends`` (default
            all) and ``sparsities``, a ``table`` (a `LatencyTable.to_dict()` to reuse instead of
            measuring), a ``plan`` (layer -> backend, overriding the table's), ``warmup`` and
            ``repeats``.

    Returns:
        ``{"report": LatencyReport.to_dict(), "table": LatencyTable.to_dict()}``.

    Raises:
        ValueError: unknown parameters, or anything `profile_latency` or `build_table` refuse.
    """
    config = job_params(Job.LATENCY, params)
    assert isinstance(config, LatencyParams)
    rows = int(evaluator.data.batch(fidelity).input_ids.numel())
    if config.table is not None:
        table = LatencyTable.from_dict(config.table)
    else:
        table = build_table(
            list(_shapes(evaluator).values()),
            backends=config.backends,
            sparsities=config.sparsities if config.sparsities is not None else SPARSITIES,
            rows=rows,
            device=evaluator.device,
            dtype=next(evaluator.model.parameters()).dtype,
            warmup=config.warmup,
            repeats=config.repeats,
        )
    report = profile_latency(
        evaluator, profile, fidelity, plan=config.plan, table=table, warmup=config.warmup, repeats=config.repeats
    )
    return {"report": report.to_dict(), "table": table.to_dict()}
