"""Latency measurement: the interleaving, the summaries, the per-layer table and its estimate, a
profile on an Evaluator, and the runner's "latency" job. Structures only: no wall-clock asserts."""

from __future__ import annotations

import json

import pytest
import torch

from spaces import Fidelity
from workers import EvaluatorRunner, task_payload
from workers.runtime import (
    LatencyReport,
    LatencyTable,
    LayerTiming,
    Timing,
    build_table,
    latency_job,
    measure_latency,
    profile_latency,
    time_interleaved,
)
from workers.runtime.kernels import LayerSetting

TINY_BERT = {"model": {"name": "pressroom:tiny-bert"}, "compression": {"target": 0.7, "compressor": "magnitude"}}
TINY_BITS = {
    "model": {"name": "pressroom:tiny-llama"},
    "compression": {
        "scheme": "bitwidth",
        "target": 4,
        "compressor": "rtn",
        "levels": {"choices": [2, 4, 8], "group_size": 16},
    },
}


# --- timing ---------------------------------------------------------------------------------------


def test_rounds_rotate_so_no_call_always_comes_first():
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "abc"}
    samples = time_interleaved(calls, warmup=1, repeats=5)
    assert {name: len(values) for name, values in samples.items()} == {"a": 5, "b": 5, "c": 5}
    assert all(value >= 0 for values in samples.values() for value in values)
    rounds = [order[i : i + 3] for i in range(0, len(order), 3)]
    assert len(rounds) == 6 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert [r[0] for r in rounds] == ["a", "b", "c", "a", "b", "c"]


def test_number_runs_each_call_that_many_times_per_sample():
    count = {"n": 0}
    samples = time_interleaved({"x": lambda: count.update(n=count["n"] + 1)}, warmup=0, repeats=2, number=7)
    assert count["n"] == 14 and len(samples["x"]) == 2


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}, {"number": 0}])
def test_bad_timing_arguments_raise(kwargs):
    with pytest.raises(ValueError, match="need repeats >= 1"):
        time_interleaved({"x": lambda: None}, **kwargs)
    with pytest.raises(ValueError, match="at least one call"):
        time_interleaved({})


def test_timing_summary():
    timing = Timing.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (timing.median, timing.low, timing.high, timing.samples) == (3.0, 2.0, 4.0, 5)
    assert timing.spread == pytest.approx(2.0 / 3.0)
    assert Timing.of([0.5]) == Timing(0.5, 0.5, 0.5, 1)
    with pytest.raises(ValueError, match="at least one sample"):
        Timing.of([])


def test_measure_latency_reports_both_sides_and_the_speedup():
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    report = measure_latency(lambda: a @ b, lambda: a + b, warmup=1, repeats=4)
    assert report.dense.samples == report.compressed.samples == report.ratios.samples == 4
    assert report.speedup == pytest.approx(report.dense.median / report.compressed.median)
    assert report.ratios.low <= report.ratios.median <= report.ratios.high
    assert report.device == "cpu" and report.threads == torch.get_num_threads() and report.estimate_error is None
    data = report.to_dict()
    assert json.loads(json.dumps(data)) == data and data["plan"] == {}


# --- the table ------------------------------------------------------------------------------------


def _table() -> LatencyTable:
    shape = (8, 8)
    entries = (
        LayerTiming(shape, "dense", None, 10.0, 10.0),
        LayerTiming(shape, "csr", 0.5, 12.0, 10.0),
        LayerTiming(shape, "csr", 0.7, 8.0, 10.0),
        LayerTiming(shape, "csr", 0.9, 4.0, 10.0),
        LayerTiming(shape, "int8-dynamic", None, 6.0, 10.0),
    )
    return LatencyTable(rows=16, device="cpu", dtype="torch.float32", threads=2, entries=entries)


def test_table_interpolates_sparse_backends_and_holds_the_rest():
    table = _table()
    assert table.dense_seconds((8, 8)) == 10.0 and table.dense_seconds((4, 4)) is None
    assert table.seconds((8, 8), "csr", LayerSetting(sparsity=0.6)) == pytest.approx(10.0)
    assert table.seconds((8, 8), "csr", LayerSetting(sparsity=0.95)) == 4.0  # flat above the grid
    assert table.seconds((8, 8), "csr", LayerSetting(sparsity=0.3)) is None  # below it: unknown
    assert table.seconds((8, 8), "csr", LayerSetting(bits=8)) is None  # csr does not take it
    assert table.seconds((8, 8), "int8-dynamic", LayerSetting(bits=4)) == 6.0
    assert table.seconds((8, 8), "bsr", LayerSetting(sparsity=0.9)) is None  # never measured


def test_table_plans_only_where_a_backend_pays_and_estimates_additively():
    table = _table()
    layers = {
        "slow": ((8, 8), LayerSetting(sparsity=0.55)),  # csr would cost 11 > dense 10
        "fast": ((8, 8), LayerSetting(sparsity=0.8)),  # csr 6
        "bits": ((8, 8), LayerSetting(bits=8)),  # int8 6
        "dense": ((8, 8), LayerSetting()),
        "unknown": ((4, 4), LayerSetting(sparsity=0.9)),
    }
    assert table.best((8, 8), LayerSetting(sparsity=0.55)) == ("dense", 10.0)
    assert table.best((4, 4), LayerSetting()) is None
    assert table.plan(layers) == {"fast": "csr", "bits": "int8-dynamic"}
    assert table.estimate(100.0, layers) == pytest.approx(100.0 - 4.0 - 4.0)


def test_table_round_trips_through_json_and_checks_its_version():
    table = _table()
    data = json.loads(json.dumps(table.to_dict()))
    assert LatencyTable.from_dict(data) == table
    with pytest.raises(ValueError, match="version 99 is not 1"):
        LatencyTable.from_dict({**data, "version": 99})
    with pytest.raises(ValueError, match="malformed latency table"):
        LatencyTable.from_dict({"version": 1, "rows": 4})


def test_build_table_times_each_backend_against_dense():
    table = build_table(
        [(32, 64), (32, 64), (48, 40)],
        backends=["dense", "csr", "int8-dynamic", "fp8"],
        sparsities=(0.5, 0.9),
        rows=16,
        warmup=1,
        repeats=2,
    )
    assert (table.rows, table.device, table.dtype) == (16, "cpu", "torch.float32")
    keys = sorted((e.shape, e.backend, None if e.sparsity is None else round(e.sparsity, 3)) for e in table.entries)
    assert keys == sorted(
        (shape, backend, sparsity)
        for shape in [(32, 64), (48, 40)]
        for backend, sparsity in [("dense", None), ("csr", 0.5), ("csr", 0.9), ("int8-dynamic", None)]
    )  # fp8 is CUDA-only: left out; a shape given twice is measured once
    for entry in table.entries:
        assert entry.seconds > 0 and entry.dense_seconds == table.dense_seconds(entry.shape)
    with pytest.raises(ValueError, match=r"sparsities must lie in \(0, 1\)"):
        build_table([(8, 8)], sparsities=(0.0,))
    with pytest.raises(ValueError, match="unknown kernel backend"):
        build_table([(8, 8)], backends=["nope"])


# --- a profile on an Evaluator --------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(make_evaluator):
    return make_evaluator(**TINY_BERT)


def test_profile_latency_swaps_measures_and_puts_the_layers_back(bert):
    modules = {name: bert.model.get_submodule(name) for name in bert.inventory.modules}
    profile = bert.space.uniform()
    expected = bert.evaluate(profile, Fidelity(256)).fitness
    plan = {name: "csr" for name in list(bert.inventory.modules)[:3]}
    report = profile_latency(bert, profile, Fidelity(256), plan=plan, warmup=1, repeats=3)
    assert isinstance(report, LatencyReport) and report.plan == plan and report.estimated is None
    assert report.tokens == bert.data.batch(Fidelity(256)).input_ids.numel()
    assert all(bert.model.get_submodule(name) is module for name, module in modules.items())
    assert bert.evaluate(profile, Fidelity(256)).fitness == expected


def test_profile_latency_with_a_table_plans_and_estimates(bert):
    table = build_table(
        [tuple(m.weight.shape) for m in bert.inventory.modules.values()],
        backends=["csr", "int8-dynamic"],
        rows=bert.data.batch(Fidelity(256)).input_ids.numel(),
        warmup=1,
        repeats=2,
    )
    profile = bert.space.uniform()
    report = profile_latency(bert, profile, Fidelity(256), table=table, warmup=1, repeats=3)
    assert set(report.plan) <= set(bert.inventory.modules) and set(report.plan.values()) <= {"csr"}
    assert report.estimated is not None and report.estimate_error is not None
    dense = profile_latency(bert, None, Fidelity(256), table=table, warmup=1, repeats=2)
    assert dense.plan == {} and dense.estimated == dense.dense.median  # nothing to save


def test_latency_job_checks_its_parameters(bert):
    with pytest.raises(ValueError, match=r"parameters \['tokens'\] are unknown"):
        latency_job(bert, None, Fidelity(256), {"tokens": 5})


# --- the runner's "latency" job -------------------------------------------------------------------


def test_runner_answers_a_latency_payload(make_evaluator):
    evaluator = make_evaluator(**TINY_BITS)
    runner = EvaluatorRunner(evaluator.spec)
    levels = runner.space.to_array(runner.space.uniform())
    params = {"backends": ["int8-dynamic"], "warmup": 1, "repeats": 2}
    result = runner.run(task_payload("latency", levels, Fidelity(256), params))
    assert json.loads(json.dumps(result)) == result
    assert result["fitness"] is None and result["worker"] == runner.worker
    report, table = result["data"]["report"], result["data"]["table"]
    assert set(report["plan"].values()) <= {"int8-dynamic"} and report["estimated"] is not None
    assert {e["backend"] for e in table["entries"]} == {"dense", "int8-dynamic"}

    # a coordinator may send the table back and force a plan: nothing is measured but the profile
    layer = runner.space.layers[0].name
    again = runner.run(
        task_payload("latency", levels, Fidelity(256), {"table": table, "plan": {layer: "int8-dynamic"}})
    )
    assert again["data"]["table"] == table and again["data"]["report"]["plan"] == {layer: "int8-dynamic"}
    dense = runner.run(task_payload("latency", None, Fidelity(256), {"table": table, "repeats": 2}))
    assert dense["data"]["report"]["plan"] == {}
