"""The dashboard's answers made readable: study attributes in one line each, trials' named profiles."""

from __future__ import annotations

import io
import json
import time
import warnings
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
from optuna.trial import TrialState, create_trial

from search.results.best import record_space
from search.results.readable import profile_note, readable_app
from search.storage.study import BEST, CHECKPOINT, PROGRESS, SPACE, SearchStudy, connect
from spaces import LayerInfo, Space, SparsityScheme

TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _space() -> Space:
    layers = [LayerInfo(f"model.layers.{b}.mlp.{t}", (64, 64), 4096, b) for b in range(3) for t in TYPES]
    return Space(layers, SparsityScheme(0.5), model="m")


def _get(app: Any, path: str) -> tuple[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    answer: dict[str, str] = {}
    body = b"".join(app(environ, lambda status, headers, exc_info=None: answer.update(status=status)))
    return answer["status"], json.loads(body)


def test_attributes_read_as_lines_and_a_complete_trial_names_its_profile(tmp_path):
    from optuna_dashboard import wsgi

    space = _space()
    storage = connect(f"sqlite:///{tmp_path / 'r.db'}")
    checkpoint = json.dumps({"algorithm": "evopress", "next_id": 40, "rng": {"state": list(range(300))}})
    progress = {"fraction": 1.0, "generation": 4, "best": 0.25, "evaluations": 40, "updated": time.time()}
    attrs = {SPACE: record_space(space), CHECKPOINT: checkpoint, PROGRESS: progress, "note": "short"}
    study = SearchStudy.open(storage, "readable", fingerprint="f", attrs=attrs)
    levels = [int(v) for v in space.to_array(space.uniform())]
    storage.set_study_user_attr(study.id, BEST, {"levels": levels, "fitness": 0.25, "algorithm": "evopress"})
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        trial = create_trial(state=state, value=0.25 if state == TrialState.COMPLETE else None,
                             user_attrs={"levels": levels})  # fmt: skip
        storage.create_new_trial(study.id, template_trial=trial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        app = readable_app(wsgi(storage), storage)

    status, detail = _get(app, f"/api/studies/{study.id}")
    assert status.startswith("200")
    shown = {item["key"]: item["value"] for item in detail["user_attrs"]}
    assert [item["key"] for item in detail["user_attrs"]][:2] == [PROGRESS, BEST]
    assert detail["user_attrs"][-1]["key"] == CHECKPOINT
    assert shown[CHECKPOINT].startswith("evopress's state after 40 evaluations asked, random generator included")
    assert shown[PROGRESS].startswith("100% done, generation 4, best fitness 0.25, 40 evaluations")
    assert shown[SPACE].startswith("21 units over 21 layers at layer granularity, sparsity target 0.5")
    assert shown["note"] == "short"
    complete, pruned = detail["trials"]
    assert complete["note"]["body"] == profile_note(space, levels)
    assert "| block | q_proj | k_proj |" in complete["note"]["body"] and "| 2 | 0.5 |" in complete["note"]["body"]
    assert pruned["note"]["body"] == ""

    status, listed = _get(app, "/api/studies")
    listed_attrs = {i["key"]: i["value"] for i in listed["study_summaries"][0]["user_attrs"]}
    assert listed_attrs[CHECKPOINT] == shown[CHECKPOINT]
    stored = storage.get_study_user_attrs(study.id)
    assert json.loads(stored[CHECKPOINT]) == json.loads(checkpoint)  # nothing stored changed
