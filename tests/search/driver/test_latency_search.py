"""Latency-aware search: the estimate, the spec, the multi-objective study, the final check on MiniLM."""

from __future__ import annotations

import json
import math
import threading
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from search.algorithms import ALGORITHMS, EvoPressConfig, RandomSearchConfig, RandomSearchSHConfig
from search.driver.latency_search import (
    LATENCY,
    MEASURED,
    LatencyError,
    LatencyModel,
    Measurement,
    choose,
    unit_latencies,
)
from search.driver.run import run_search
from search.results.dashboard import make_server
from search.spec.config import LatencySpec, SpecError, load_spec, load_spec_text
from search.storage.study import BEST, SearchStudy, connect
from search.storage.study import Evaluation as StoredEvaluation
from search.storage.writer import TrialWriter
from spaces import BitwidthScheme, LayerInfo, MixedScheme, Space
from tests.conftest import free_port
from tests.search.harness import additive_problem, run
from workers.runtime import LatencyTable, LayerTiming
from workers.runtime.kernels import kernel_settings

MINILM_SHAPES = {"q": (384, 384), "k": (384, 384), "v": (384, 384), "o": (384, 384), "i": (1536, 384), "f": (384, 1536)}


def minilm_layers() -> list[LayerInfo]:
    return [
        LayerInfo(f"encoder.layer.{b}.{name}", shape, shape[0] * shape[1], b)
        for b in range(6)
        for name, shape in MINILM_SHAPES.items()
    ]


def synthetic_table() -> LatencyTable:
    """int8 about 3x faster than dense everywhere; CSR paying only from 80 % sparsity."""
    entries = []
    for shape, dense in (((384, 384), 1.7e-3), ((1536, 384), 6.7e-3), ((384, 1536), 6.3e-3)):
        entries.append(LayerTiming(shape, "dense", None, dense, dense))
        entries.append(LayerTiming(shape, "int8-dynamic", None, dense / 3.1, dense))
        for sparsity, ratio in ((0.5, 0.45), (0.7, 0.6), (0.9, 1.2)):
            entries.append(LayerTiming(shape, "csr", sparsity, dense / ratio, dense))
    return LatencyTable(512, "cpu", "torch.float32", 1, tuple(entries))


# --- the estimate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    [BitwidthScheme(12.0, choices=(8, 16)), MixedScheme(0.7, sparsities=(0.5, 0.8, 0.9)), BitwidthScheme(6, (4, 8))],
    ids=["bits", "mixed", "bits-no-16"],
)
def test_per_unit_values_add_up_to_the_tables_estimate(scheme):
    space = Space(minilm_layers(), scheme, model="minilm")
    table, dense = synthetic_table(), 0.148
    values, _ = unit_latencies(space, table, dense)
    assert [len(row) for row in values] == [len(levels) for levels in space.levels]
    model = LatencyModel(LatencySpec(constraint=0.85), space, table, dense)
    rng = np.random.default_rng(0)
    shapes = {layer.name: layer.shape for layer in space.layers}
    for _ in range(20):
        profile = space.sample(rng)
        settings = kernel_settings(space, profile)
        layers = {name: (shapes[name], settings[name]) for name in shapes}
        expected = table.estimate(dense, layers) / dense
        assert model.estimate(space.to_array(profile).tolist()) == pytest.approx(expected, rel=1e-12)
    assert model.constraint is model.estimator and model.constraint.limit == 0.85
    assert LatencyModel(LatencySpec(objective=True), space, table, dense).constraint is None


def test_on_bits_the_estimate_is_dense_at_16_bits_and_faster_at_8():
    space = Space(minilm_layers(), BitwidthScheme(12.0, choices=(8, 16)), model="minilm")
    model = LatencyModel(LatencySpec(constraint=0.85), space, synthetic_table(), 0.148)
    assert model.estimate([16] * 36) == pytest.approx(1.0)
    # Every layer on int8 saves (1 - 1/3.1) of the layers' dense time; the rest of the model stays.
    layers = 24 * 1.7e-3 + 6 * 6.7e-3 + 6 * 6.3e-3
    assert model.estimate([8] * 36) == pytest.approx(1.0 - (1 - 1 / 3.1) * layers / 0.148)
    half = [8 if i % 6 in (4, 5) else 16 for i in range(36)]  # the MLP layers: 2/3 of the weights
    assert model.estimate([16] * 36) > model.estimate(half) > model.estimate([8] * 36)


@pytest.mark.parametrize("name", ["evopress", "random", "random-sh"])
def test_a_binding_latency_constraint_on_minilm_shapes_is_honoured(name):
    # At most 14 average bits (at least 25 % of the weights on int8), and at most 0.8 of the
    # dense latency, which takes more int8 layers than the bits do: the constraint binds.
    space = Space(minilm_layers(), BitwidthScheme(14.0, choices=(8, 16), exact_budget=False), model="minilm")
    model = LatencyModel(LatencySpec(constraint=0.8), space, synthetic_table(), 0.148)
    rng = np.random.default_rng(0)
    uniform = [model.estimate(space.sample_array(rng).tolist()) for _ in range(300)]
    assert 0.05 < np.mean([e <= 0.8 for e in uniform]) < 0.95
    configs = {
        "evopress": EvoPressConfig(generations=5, offspring=8, stages=((2, 64), (1, 256)), init_samples=6),
        "random": RandomSearchConfig(tokens=256, budget_tokens=256 * 12),
        "random-sh": RandomSearchSHConfig(samples=6, stages=((2, 64), (1, 256)), budget_tokens=3000),
    }
    cls, config = ALGORITHMS[name][0], configs[name]
    algorithm: Any = cls(space, config, 0, model.constraint)
    problem = additive_problem(space, 0)
    asked = run(algorithm, problem)
    estimates = [model.estimate(space.to_array(c.profile).tolist()) for c in asked]
    assert max(estimates) <= 0.8 and algorithm.best is not None
    assert model.estimate(space.to_array(algorithm.best[0]).tolist()) <= 0.8


def test_2_4_levels_reach_the_kernels_as_a_structure():
    space = Space(minilm_layers(), MixedScheme(0.5, sparsities=(0.5,)), model="minilm")
    nm = space.scheme.structured_level
    profile = space.from_array([nm] * 36)
    settings = kernel_settings(space, profile)
    assert {(s.sparsity, s.structure) for s in settings.values()} == {(0.5, "2:4")}
    unstructured = kernel_settings(space, space.from_array([1] * 36))
    assert {(s.sparsity, s.structure) for s in unstructured.values()} == {(0.5, None)}
    four_eight = Space(minilm_layers(), MixedScheme(0.5, sparsities=(0.5,), n=4, m=8), model="minilm")
    eight = kernel_settings(four_eight, four_eight.from_array([four_eight.scheme.structured_level] * 36))
    assert {s.structure for s in eight.values()} == {None}  # 4:8 is not a 2:4 pattern: only sparse


# --- choosing the returned profile ----------------------------------------------------------------


def _report(ratio: float) -> dict[str, Any]:
    return {"dense": {"median": 1.0}, "compressed": {"median": ratio}, "speedup": 1 / ratio, "plan": {}}


def test_the_best_profile_is_returned_when_its_measurement_meets_the_constraint():
    measured = []

    def measure(levels):
        measured.append(levels)
        return 0.80, _report(0.80)

    chosen, tried = choose([([1], 0.1, None), ([2], 0.2, 7)], measure, lambda levels: 0.78, 0.85, tries=3)
    assert measured == [[1]] and chosen == tried[0]
    assert (chosen.levels, chosen.estimated, chosen.measured, chosen.meets) == ([1], 0.78, 0.80, True)


def test_fallbacks_are_measured_in_order_until_one_meets_and_are_bounded():
    ratios = {1: 0.90, 2: 0.88, 3: 0.84, 4: 0.80}
    candidates = [([k], 0.1 * k, k) for k in ratios]
    measure = lambda levels: (ratios[levels[0]], _report(ratios[levels[0]]))  # noqa: E731
    chosen, tried = choose(candidates, measure, lambda levels: 0.8, 0.85, tries=5)
    assert chosen is not None and chosen.levels == [3] and [m.levels for m in tried] == [[1], [2], [3]]
    assert [m.meets for m in tried] == [False, False, True]
    chosen, tried = choose(candidates, measure, lambda levels: 0.8, 0.85, tries=2)
    assert chosen is None and len(tried) == 2
    # Without a constraint only the answer is measured, and nothing can miss.
    chosen, tried = choose(candidates, measure, lambda levels: 0.8, None, tries=1)
    assert chosen is not None and chosen.meets is None and len(tried) == 1


def test_a_measurement_summary_is_json():
    m = Measurement([8, 16], 0.01, 3, 0.74, 0.76, True, {**_report(0.76), "plan": {"a": "int8-dynamic"}})
    data = json.loads(json.dumps(m.summary()))
    assert data["layers_swapped"] == 1 and data["measured"] == 0.76 and "report" not in data


class CannedPool:
    """Answers "latency" payloads with a measured ratio per profile (no timing, no Ray)."""

    def __init__(self, ratios: dict[tuple[int, ...], float]) -> None:
        self.ratios = ratios
        self.queue: list[tuple[Any, dict[str, Any]]] = []
        self.measured: list[tuple[int, ...]] = []

    def submit(self, key: Any, payload: dict[str, Any], route: Any = None) -> None:
        self.queue.append((key, payload))

    def collect(self, timeout: float | None = None) -> list[Any]:
        out = []
        for key, payload in self.queue:
            assert payload["job"] == "latency" and payload["params"]["table"]["version"] == 1
            levels = tuple(payload["levels"])
            self.measured.append(levels)
            report = {**_report(self.ratios[levels]), "estimated": None}
            out.append(SimpleNamespace(key=key, value={"data": {"report": report}}, error=None, worker="w0"))
        self.queue = []
        return out


def _bits_study(tmp_path, objective: bool) -> tuple[Space, LatencyModel, SearchStudy, TrialWriter]:
    space = Space(minilm_layers(), BitwidthScheme(14.0, choices=(8, 16), exact_budget=False), model="minilm")
    model = LatencyModel(LatencySpec(constraint=0.8, objective=objective, fallbacks=2), space, synthetic_table(), 0.148)
    study = SearchStudy.open(
        connect(f"sqlite:///{tmp_path / 'fallback.db'}"), "fallback", fingerprint="f", attrs={}, metrics=model.metrics
    )
    return space, model, study, TrialWriter(study)


def _record(writer: TrialWriter, member: int, levels: list[int], values: list[float]) -> None:
    writer.begin(member, {"member": member, "levels": levels})
    writer.finish(member, TrialState.COMPLETE, values)


@pytest.mark.parametrize("objective", [False, True])
def test_finish_falls_back_to_the_next_best_profile_that_meets_the_constraint_when_measured(tmp_path, objective):
    space, model, study, writer = _bits_study(tmp_path, objective)
    rng = np.random.default_rng(0)
    allowed = []
    while len(allowed) < 4:  # distinct profiles the estimate allows
        levels = space.sample_array(rng).tolist()
        if model.estimate(levels) <= 0.8 and levels not in allowed:
            allowed.append(levels)
    best, second, third, fourth = allowed
    for member, (levels, fitness) in enumerate([(best, 0.1), (third, 0.3), (second, 0.2), (fourth, 0.4)]):
        _record(writer, member, levels, [fitness, model.estimate(levels)][: 1 + objective])
    pool = CannedPool({tuple(best): 0.83, tuple(second): 0.81, tuple(third): 0.79, tuple(fourth): 0.7})
    profile, fitness, summary = model.finish(pool, study, writer, (space.from_array(best), 0.1), "evopress")
    assert writer.close(timeout=30) and writer.error is None
    # The best missed (0.83), then the recorded ones by fitness: 0.2 missed (0.81), 0.3 met.
    assert pool.measured == [tuple(best), tuple(second), tuple(third)]
    assert list(profile.values()) == third and fitness == 0.3
    assert [m["meets"] for m in summary["tried"]] == [False, False, True] and summary["chosen"]["measured"] == 0.79
    attrs = study.user_attrs()
    assert attrs[MEASURED] == summary and attrs[BEST]["levels"] == third and attrs[BEST]["latency"]["meets"]
    measured_trials = [t for t in study.trials() if "measured_from_trial" in t.user_attrs]
    assert len(measured_trials) == (3 if objective else 0)
    if objective:
        assert [t.values[1] for t in measured_trials] == [0.83, 0.81, 0.79]


def test_finish_reports_every_measurement_when_none_meets_the_constraint(tmp_path):
    space, model, study, writer = _bits_study(tmp_path, objective=True)
    rng = np.random.default_rng(1)
    levels = next(lv for lv in (space.sample_array(rng).tolist() for _ in range(1000)) if model.estimate(lv) <= 0.8)
    pool = CannedPool({tuple(levels): 0.9})
    with pytest.raises(LatencyError, match=r"none of the 1 best profiles met the latency constraint 0.8 .*: 0.900"):
        model.finish(pool, study, writer, (space.from_array(levels), 0.1), "evopress")
    assert writer.close(timeout=30)
    assert study.user_attrs()[MEASURED]["chosen"] is None and len(study.user_attrs()[MEASURED]["tried"]) == 1
    assert BEST not in study.user_attrs()


def test_prepare_reuses_the_recorded_table_and_checks_backend_names(tmp_path):
    space = Space(minilm_layers(), BitwidthScheme(12.0, choices=(8, 16)), model="minilm")
    spec = load_spec_text("latency: {constraint: 0.85, backends: [int8-dynamic, warp-drive]}\nstudy: resumed")
    storage = connect(f"sqlite:///{tmp_path / 'prepare.db'}")
    with pytest.raises(LatencyError, match=r"latency.backends: unknown kernel backends \['warp-drive'\]; registered"):
        LatencyModel.prepare(spec, storage, None, space)
    recorded = LatencyModel(spec.latency, space, synthetic_table(), 0.148)
    SearchStudy.open(storage, "resumed", fingerprint="f", attrs={LATENCY: recorded.record()})
    again = LatencyModel.prepare(spec, storage, None, space)  # no worker asked: the pool is None
    assert again.constraint == recorded.constraint and again.dense_seconds == 0.148


# --- the spec ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "fragments"),
    [
        ("latency: {}", "latency", ["give a constraint", "objective: true"]),
        ("latency: {constraint: 1.5}", "latency.constraint", ["1.5", "less than or equal to 1"]),
        ("latency: {constraint: 0}", "latency.constraint", ["got 0", "greater than 0"]),
        ("latency: {constraint: 0.8, fallbacks: -1}", "latency.fallbacks", ["-1"]),
        ("latency: {constraint: 0.8, backends: []}", "latency.backends", ["at least 1 item"]),
        ("latency: {constraint: 0.8, backend: [csr]}", "latency.backend", ["unknown key", "'backends'"]),
        ("latency: {constraint: 0.8, tokens: 999999}", "latency.tokens", ["data.calibration_tokens (131072)"]),
        ("latency: {constraint: 0.8}\nalgorithm: {name: dass}", "latency.constraint", ["'dass'", "'evopress'"]),
        ("compression: {scheme: drop, target: 0.25}\nlatency: {objective: true}", "latency", ["dropped blocks"]),
        ("latency: 0.8", "latency", ["dictionary"]),
        ("compression: {scheme: mixed, target: 1.5}", "compression.target", ["average sparsity", "0 and 1"]),
        ("compression: {scheme: mixed, target: 0.5, levels: {nm: [4, 2]}}", "compression.levels.nm", ["1 <= n < m"]),
        ("compression: {scheme: mixed, target: 0.5, levels: {nm: 2:4}}", "compression.levels.nm", ["[2, 4]", "124"]),
        (
            "compression: {scheme: mixed, target: 0.5, levels: {sparsities: [0.5, 1.5]}}",
            "compression.levels.sparsities.1",
            ["less than 1", "1.5"],
        ),
        (
            "compression: {scheme: mixed, target: 0.5, levels: {sparsities: [0.6, 0.6]}}",
            "compression.levels",
            ["repeat"],
        ),
        (
            "compression: {scheme: mixed, target: 0.5, compressor: gptq}",
            "compression.compressor",
            ["'gptq'", "'wanda'"],
        ),
    ],
)
def test_a_bad_latency_or_mixed_spec_is_one_line_naming_its_key(text, key, fragments):
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, source="bad.yaml")
    assert len(caught.value.lines) == 1, caught.value.lines
    line = caught.value.lines[0]
    assert line.startswith(f"bad.yaml: {key}: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_the_latency_section_is_part_of_what_is_searched():
    base = load_spec_text("latency: {constraint: 0.85}")
    assert load_spec_text("").fingerprint() != base.fingerprint()
    assert load_spec_text("latency: {constraint: 0.8}").fingerprint() != base.fingerprint()
    assert load_spec_text("latency: {constraint: 0.85, repeats: 30, fallbacks: 9}").fingerprint() == base.fingerprint()
    spec = load_spec_text("compression: {scheme: mixed, target: 0.6, levels: {nm: '1:4', sparsities: [0.6]}}")
    assert spec.compression.level_scheme() == MixedScheme(0.6, sparsities=(0.6,), n=1, m=4)
    assert spec.compression.database_params() == {"n": 1, "m": 4}


# --- the multi-objective study ------------------------------------------------------------------------


def test_a_two_objective_study_stores_both_values_and_has_a_pareto_front(tmp_path):
    storage = connect(f"sqlite:///{tmp_path / 'mo.db'}")
    study = SearchStudy.open(storage, "mo", fingerprint="f", attrs={}, metrics=("fitness", "latency"))
    writer = TrialWriter(study)
    points = [(0.1, 0.9), (0.2, 0.7), (0.3, 0.8), (0.4, 0.6), (0.5, 0.95)]
    for member, (fitness, latency) in enumerate(points):
        writer.begin(member, {"member": member, "levels": [member]})
        writer.record(member, StoredEvaluation(member, member, 0, fitness, 256, 0.1, "w", TrialState.RUNNING), {})
        writer.finish(member, TrialState.COMPLETE, [fitness, latency])
    writer.finish(len(points), TrialState.PRUNED)
    assert writer.close(timeout=30) and writer.error is None
    loaded = optuna.load_study(study_name="mo", storage=storage)
    assert loaded.metric_names == ["fitness", "latency"] and len(loaded.directions) == 2
    complete = loaded.get_trials(states=(TrialState.COMPLETE,))
    assert [t.values for t in complete] == [list(p) for p in points]
    assert all(t.intermediate_values == {256: t.values[0]} for t in complete)
    assert sorted(t.values[0] for t in loaded.best_trials) == [0.1, 0.2, 0.4]  # (0.3, 0.8) and (0.5, .95) dominated


# --- a latency-constrained search on MiniLM, end to end ---------------------------------------------

CONSTRAINT = 0.85


@pytest.fixture(scope="module")
def minilm_search(tmp_path_factory, cache_dir, ray_head, ray_session) -> Iterator[dict[str, Any]]:
    """One EvoPress search on MiniLM with int8/dense layers at 12 average bits, its estimated
    latency both a constraint (0.85 of dense) and a second objective; one worker."""
    folder = tmp_path_factory.mktemp("latency-search")
    spec = {
        "model": {"name": "pressroom:minilm"},
        "compression": {"scheme": "bitwidth", "target": 12, "compressor": "rtn", "levels": {"choices": [8, 16]}},
        "data": {"seq_len": 128, "calibration_tokens": 16384, "heldout_tokens": 2048, "stats_tokens": 2048},
        "algorithm": {
            "name": "evopress",
            "params": {
                "generations": 3,
                "offspring": 4,
                "stages": [[2, 256], [1, 512]],
                "init_samples": 4,
                "init_tokens": 256,
            },
        },
        "workers": {"count": 1, "cpus_per_worker": 1, "torch_threads": 1, "timeout_s": 600},
        "latency": {
            "constraint": CONSTRAINT,
            "objective": True,
            "backends": ["int8-dynamic"],
            "tokens": 512,
            "repeats": 9,
            "warmup": 1,
            "fallbacks": 3,
        },
        "mlflow": {"enabled": False},
        "storage": f"sqlite:///{folder / 'search.db'}",
        "study": "minilm-latency",
        "artifacts": str(folder / "artifacts"),
        "cache_dir": str(cache_dir),
        "seed": 3,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    loaded = load_spec(path, {"workers.ray_address": ray_head.address})
    outcome = run_search(loaded)
    study = optuna.load_study(study_name="minilm-latency", storage=loaded.storage)
    yield {"spec": loaded, "outcome": outcome, "study": study, "storage": loaded.storage}


@pytest.mark.ray
@pytest.mark.slow
def test_a_latency_constrained_search_on_minilm_returns_a_profile_that_meets_it_when_measured(minilm_search):
    outcome, study = minilm_search["outcome"], minilm_search["study"]
    attrs = study.user_attrs
    measured = attrs[MEASURED]
    chosen = measured["chosen"]
    assert chosen["meets"] is True and chosen["measured"] <= CONSTRAINT  # measured with real kernels, median of 9
    assert chosen["layers_swapped"] > 0  # int8 kernels ran in the measured model
    assert chosen["levels"] == list(outcome.best.values())  # the returned profile is the measured one
    assert outcome.heldout["best"]["latency"] == chosen  # estimate vs measurement in the held-out report
    assert attrs[BEST]["latency"] == chosen and attrs[BEST]["levels"] == chosen["levels"]
    # Every candidate the search evaluated met the constraint by the table's estimate.
    record = attrs[LATENCY]
    assert record["constraint"] == CONSTRAINT and record["dense_seconds"] > 0
    searched = [t for t in study.trials if "measured_from_trial" not in t.user_attrs]
    estimates = [t.values[1] for t in searched if t.state == TrialState.COMPLETE]
    assert estimates and max(estimates) <= CONSTRAINT
    # Half the weights at int8: the estimate is well below dense.
    assert 0.3 < chosen["estimated"] < CONSTRAINT


@pytest.mark.ray
@pytest.mark.slow
def test_the_multi_objective_study_has_two_values_per_complete_trial_and_a_pareto_front(minilm_search):
    study = minilm_search["study"]
    assert study.metric_names == ["fitness", "latency"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete and all(len(t.values) == 2 and all(math.isfinite(v) for v in t.values) for t in complete)
    front = study.best_trials
    assert front and set(t.number for t in front) <= set(t.number for t in complete)
    # The measured profile has its own trial: the search fitness and the measured latency.
    measured = [t for t in complete if "measured_from_trial" in t.user_attrs]
    assert len(measured) == len(study.user_attrs[MEASURED]["tried"])
    assert measured[-1].values[1] == study.user_attrs[MEASURED]["chosen"]["measured"]
    # optuna-dashboard (as `pressroom dashboard` serves it) finds the same front.
    port = free_port()
    server = make_server(minilm_search["storage"], host="127.0.0.1", port=port, artifacts=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}/api/studies/{study._study_id}?after=0"
        with urllib.request.urlopen(url, timeout=30) as response:
            detail = json.loads(response.read())
    finally:
        server.shutdown()
        server.server_close()
    assert detail["directions"] == ["minimize", "minimize"] and detail["objective_names"] == ["fitness", "latency"]
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(t.number for t in front)
