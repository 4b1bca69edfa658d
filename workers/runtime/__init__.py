"""The inference runtime: compressed layers on real kernels, and what a profile's latency is.

`kernels` runs a compressed linear layer with a real kernel (sparse, int8, fp8, 2:4, ...);
`timing` holds the timing primitives, `table` the per-layer table that estimates a profile's
latency and plans its kernels, `latency` the end-to-end measurement of a profile. Nothing
here needs Ray: the worker runs it for the "latency" job, benchmarks and tests run it directly.
See docs/kernels.md.

Example:
    >>> from workers.runtime import build_table
    >>> table = build_table([(32, 32)], backends=["csr"], sparsities=[0.9], rows=8, repeats=2)
    >>> sorted(e.backend for e in table.entries)
    ['csr', 'dense']
"""

from .latency import latency_job, profile_latency
from .table import SPARSITIES, LatencyTable, LayerTiming, build_table
from .timing import LatencyReport, Timing, measure_latency, time_interleaved

__all__ = [
    "SPARSITIES",
    "LatencyReport",
    "LatencyTable",
    "LayerTiming",
    "Timing",
    "build_table",
    "latency_job",
    "measure_latency",
    "profile_latency",
    "time_interleaved",
]
