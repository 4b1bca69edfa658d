"""Latency of a compression profile on this worker's hardware.

`profile_latency` measures a profile end to end against the dense model on an `Evaluator`, with
real kernels in the compressed layers (`timing.measure_latency`), and estimates it from a
per-layer table (`table.LatencyTable`); `latency_job` is what a worker runs for the "latency"
task payload. Nothing here needs Ray.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from evaluators import Batch, Evaluator
from evaluators.inventory import weight_view
from spaces import Fidelity, Job, LatencyParams, job_params

from .kernels import LayerSetting, kernel_settings, restore_linears_, swap_linears_
from .table import SPARSITIES, LatencyTable, Shape, build_table
from .timing import LatencyReport, measure_latency

logger = logging.getLogger(__name__)


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
