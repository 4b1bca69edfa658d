"""Searches on a real Ray cluster with 2 CPU workers, recorded in the real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.storages._rdb import models
from optuna.trial import TrialState

from search.driver.run import run_search
from search.spec.config import load_spec
from search.storage.study import BEST, CHECKPOINT, EVALUATIONS

pytestmark = [pytest.mark.ray, pytest.mark.postgres, pytest.mark.slow]


class Recorder:
    """A coordinator listener that keeps every (candidate, result) and the algorithm."""

    def __init__(self, on_result: Any = None) -> None:
        self.results: list[tuple[Any, Any]] = []
        self.algorithm: Any = None
        self._hook = on_result

    def on_result(self, candidate, result, algorithm) -> None:
        self.results.append((candidate, result))
        if self._hook is not None:
            self._hook(self, candidate, result)

    def on_barrier(self, algorithm) -> None:
        pass

    def on_finish(self, algorithm) -> None:
        self.algorithm = algorithm


# About 7 s of search on 2 CPUs (~0.25 s a generation): a wide window to interrupt it in.
LONG_EVOPRESS = {"name": "evopress", "params": {"generations": 30, "offspring": 6, "stages": [[2, 1024], [1, 2048]]}}


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def _search(write_spec, postgres_url, ray_head, study, listeners=(), **overrides):
    path = write_spec(f"{study}.yaml", **overrides)
    spec = load_spec(path, {"storage": postgres_url, "study": study, "workers.ray_address": ray_head.address})
    return run_search(spec, listeners=listeners)


def _check_trials_match(url: str, study: str, recorder: Recorder) -> None:
    """Every evaluation is in its member's trial; states, values and pruned stages agree."""
    trials = _study(url, study).get_trials(deepcopy=False)
    by_member: dict[int, list[tuple[Any, Any]]] = defaultdict(list)
    for candidate, result in recorder.results:
        if candidate.job == "evaluate":
            by_member[candidate.member].append((candidate, result))
    live = [t for t in trials if t.state != TrialState.FAIL]
    assert sorted(t.user_attrs["member"] for t in live) == sorted(by_member), "one trial per member"
    for trial in live:
        evaluations = by_member[trial.user_attrs["member"]]
        assert trial.intermediate_values == {r.tokens: r.fitness for _, r in evaluations}
        finals = [r for c, r in evaluations if c.final]
        if finals:
            assert trial.state == TrialState.COMPLETE
            assert trial.value == finals[-1].fitness
        else:
            assert trial.state == TrialState.PRUNED
            assert max(c.stage for c, _ in evaluations) < 1  # dropped by the first stage
    for entry in recorder.algorithm.history:
        generation = entry["generation"]
        if generation >= 1:
            values = [
                t.value for t in live if t.state == TrialState.COMPLETE and t.user_attrs["generation"] == generation
            ]
            assert entry["fitness"] == min(values)  # the winner; parent_fitness is the parent's re-draw


def test_a_search_on_ray_records_every_evaluation_in_postgres(write_spec, postgres_url, ray_head, ray_session, caplog):
    recorder = Recorder()
    with caplog.at_level("INFO", logger="search.driver.coordinator"):
        outcome = _search(write_spec, postgres_url, ray_head, "integration", listeners=[recorder])
    first = [r.getMessage() for r in caplog.records if "the first evaluation" in r.getMessage()]
    assert len(first) == 1, first
    assert re.fullmatch(
        r"start: dispatched the first evaluation \d+\.\d s after the search began \(\d+\.\d CPU-s in this process\)",
        first[0],
    )
    algorithm = recorder.algorithm
    assert algorithm.finished
    _check_trials_match(postgres_url, "integration", recorder)
    trials = _study(postgres_url, "integration").get_trials(deepcopy=False)
    states = {s: sum(t.state == s for t in trials) for s in TrialState}
    assert states[TrialState.PRUNED] == 4 * (6 - 2)  # each generation's stage 0 keeps 2 of 6
    assert states[TrialState.COMPLETE] == 4 * 3  # 2 survivors + the parent, per generation
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers  # both workers took part
    # the CPU time each worker process spent on each evaluation, in the trial and in every record
    assert all(t.user_attrs["cpu_seconds"] > 0 for t in trials)
    assert all(r["cpu_seconds"] > 0 for t in trials for r in t.user_attrs[EVALUATIONS])
    attrs = _study(postgres_url, "integration").user_attrs
    assert attrs[BEST]["fitness"] == outcome.best_fitness == algorithm.best[1]
    assert set(outcome.heldout) == {"uniform", "best"}
    assert outcome.heldout["best"]["fitness"] > 0


def test_a_killed_worker_leaves_its_candidate_to_another(write_spec, postgres_url, ray_head, ray_session):
    killed: list[int] = []

    def kill_once(recorder, candidate, result):
        if not killed and len(recorder.results) == 5:
            from ray.util.state import list_actors

            filters = [("class_name", "=", "EvaluatorActor"), ("state", "=", "ALIVE")]
            alive = list_actors(address=ray_head.address, filters=filters)
            os.kill(alive[0].pid, signal.SIGKILL)
            killed.append(alive[0].pid)

    recorder = Recorder(kill_once)
    data = {"seq_len": 64, "calibration_tokens": 8192, "heldout_tokens": 1024, "stats_tokens": 1024}
    algorithm = {"name": "evopress", "params": {"generations": 3, "offspring": 6, "stages": [[2, 1024], [1, 2048]]}}
    _search(write_spec, postgres_url, ray_head, "kill-worker", listeners=[recorder], data=data, algorithm=algorithm)
    assert killed
    assert recorder.algorithm.finished
    trials = _study(postgres_url, "kill-worker").get_trials(deepcopy=False)
    assert any(t.user_attrs.get("attempts", 1) > 1 for t in trials), "the killed worker's task ran again elsewhere"
    assert not any(t.state == TrialState.FAIL for t in trials)
    _check_trials_match(postgres_url, "kill-worker", recorder)


def test_a_postgres_restart_mid_search_loses_nothing(write_spec, postgres_url, ray_head, ray_session):
    restarted: list[float] = []

    def restart_once(recorder, candidate, result):
        if not restarted and len(recorder.results) == 8:
            cluster = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True, check=True)
            version = cluster.stdout.split()[0]
            started = time.monotonic()
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=120
            )
            restarted.append(time.monotonic() - started)

    recorder = Recorder(restart_once)
    _search(write_spec, postgres_url, ray_head, "pg-restart", listeners=[recorder])
    assert restarted
    _check_trials_match(postgres_url, "pg-restart", recorder)
    assert _study(postgres_url, "pg-restart").user_attrs[BEST]["fitness"] == recorder.algorithm.best[1]


def _count(engine: sqlalchemy.Engine, study: str, states: tuple[TrialState, ...] = tuple(TrialState)) -> int:
    """Trials of a study in these states, by one query cheap enough to poll often."""
    trials, studies = models.TrialModel.__table__, models.StudyModel.__table__
    statement = (
        sqlalchemy.select(sqlalchemy.func.count())
        .select_from(trials.join(studies))
        .where(studies.c.study_name == study, trials.c.state.in_(states))
    )
    try:
        with engine.connect() as connection:
            return int(connection.execute(statement).scalar_one())
    except sqlalchemy.exc.ProgrammingError:  # Optuna has not created its tables yet
        return 0


def _poll_until(url: str, proc: subprocess.Popen[str], reached: Callable[[sqlalchemy.Engine], bool]) -> None:
    """Poll every 20 ms until `reached` holds, the process ends, or 300 s pass."""
    engine = sqlalchemy.create_engine(url)
    deadline = time.monotonic() + 300
    try:
        while not reached(engine) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        engine.dispose()


def _complete(url: str, study: str) -> list[tuple[int, int, float]]:
    trials = _study(url, study).get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted((t.user_attrs["generation"], t.user_attrs["member"], t.value) for t in trials)


def test_sigkill_of_the_coordinator_then_rerun_resumes_exactly(write_spec, postgres_url, ray_head, run_cli):
    spec = write_spec("crash.yaml", algorithm=LONG_EVOPRESS)
    common = ["--storage", postgres_url, "--ray-address", ray_head.address]
    reference = run_cli("search", str(spec), "--study", "crash-reference", *common)
    assert reference.returncode == 0, reference.stderr

    proc = subprocess.Popen(
        [_pressroom(), "search", str(spec), "--study", "crash-resumed", *common],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    # Kill at the first COMPLETE trial, polled with one cheap query: the writer stores trials in
    # batches, and a slower poll could see the first COMPLETE trial only when the search is done.
    _poll_until(postgres_url, proc, lambda engine: _count(engine, "crash-resumed", (TrialState.COMPLETE,)) > 0)
    assert proc.poll() is None, "the search ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    before = _complete(postgres_url, "crash-resumed")
    assert 0 < len(before) < len(_complete(postgres_url, "crash-reference"))

    resumed = run_cli("search", str(spec), "--study", "crash-resumed", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming study crash-resumed" in resumed.stderr
    after = _complete(postgres_url, "crash-resumed")
    assert after == _complete(postgres_url, "crash-reference")  # nothing lost, nothing twice
    assert set(before) <= set(after)
    best = _study(postgres_url, "crash-resumed").user_attrs[BEST]
    assert best == _study(postgres_url, "crash-reference").user_attrs[BEST]
    states = {t.state for t in _study(postgres_url, "crash-resumed").get_trials(deepcopy=False)}
    assert TrialState.RUNNING not in states


def test_ctrl_c_marks_in_flight_trials_and_a_rerun_finishes(write_spec, postgres_url, ray_head, run_cli):
    spec = write_spec("interrupt.yaml", algorithm=LONG_EVOPRESS)
    common = ["--storage", postgres_url, "--ray-address", ray_head.address, "--study", "interrupted"]
    # Ctrl-C in a terminal: a test session started in the background (`cmd &` in a script) hands
    # its children SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    command = [sys.executable, "-c", _WITH_SIGINT, _pressroom(), "search", str(spec), *common]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _poll_until(postgres_url, proc, lambda engine: _count(engine, "interrupted") >= 10)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "run the same command to resume" in stderr
    study = _study(postgres_url, "interrupted")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert CHECKPOINT in study.user_attrs
    rerun = run_cli("search", str(spec), *common)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(study.user_attrs[CHECKPOINT])["algorithm"] == "evopress"


#: Runs argv[1:] with SIGINT at its default, which an exec keeps (a caught signal it would not).
_WITH_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
)


def _pressroom() -> str:
    return str(Path(sys.executable).with_name("pressroom"))


def test_a_warm_start_is_never_worse_than_the_answer_on_heldout_data(
    write_spec, postgres_url, ray_head, ray_session, tmp_path
):
    # From the additive DP's profile: the workers answer its statistics job, the report has a start row.
    warm = {"name": "evopress", "params": {**LONG_EVOPRESS["params"], "generations": 2, "start": "dp"}}
    outcome = _search(write_spec, postgres_url, ray_head, "warm-dp", algorithm=warm)
    heldout = outcome.heldout
    assert list(heldout) == ["uniform", "start", "best"]
    assert heldout["best"]["fitness"] <= heldout["start"]["fitness"]
    assert heldout["best"]["source"] in ("search", "start")
    attrs = _study(postgres_url, "warm-dp").user_attrs
    assert attrs[BEST]["fitness"] == outcome.best_fitness
    assert attrs[BEST]["levels"] == list(outcome.best.values())
    # From that answer, as `pressroom best -o` writes it.
    path = tmp_path / "profile.json"
    path.write_text(outcome.best.to_json())
    again = {"name": "evopress", "params": {**warm["params"], "generations": 1, "start": str(path)}}
    second = _search(write_spec, postgres_url, ray_head, "warm-file", algorithm=again)
    assert second.heldout["best"]["fitness"] <= second.heldout["start"]["fitness"]
    assert second.heldout["start"]["fitness"] == heldout["best"]["fitness"]  # the same profile, the same data
