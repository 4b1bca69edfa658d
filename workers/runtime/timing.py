"""Timing primitives: interleaved rounds, their summary, and a dense-against-compressed report.

Every measurement here is interleaved (dense, compressed, dense, ... so drift hits both sides).

Example:
    >>> import torch
    >>> samples = time_interleaved({"a": lambda: torch.ones(8).sum(), "b": lambda: None}, repeats=3)
    >>> sorted(samples), len(samples["a"])
    (['a', 'b'], 3)
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


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


def synchronizer(device: torch.device) -> Callable[[], None] | None:
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
        {"dense": dense, "compressed": compressed}, warmup=warmup, repeats=repeats, synchronize=synchronizer(where)
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
