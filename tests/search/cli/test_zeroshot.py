import json
import os
import re

import numpy as np
import pytest

from evaluators.models import build_tiny
from evaluators.quality.zeroshot import LOCAL_TASKS, accuracy
from tests.search.conftest import tiny_search


@pytest.fixture
def profile_file(make_evaluator, cache_dir, tmp_path):
    spec = tiny_search(cache_dir)
    evaluator = make_evaluator(**{key: spec[key] for key in ("model", "compression", "data", "seed")})
    path = tmp_path / "profile.json"
    path.write_text(evaluator.space.sample(np.random.default_rng(5)).to_json())
    return path


def _errors(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_eval_reports_dense_and_compressed_accuracy_offline(profile_file, write_spec, run_cli, tmp_path):
    scores = tmp_path / "scores.json"
    result = run_cli(
        "eval", str(profile_file), "--spec", str(write_spec()), "--tasks", ",".join(LOCAL_TASKS), "-o", str(scores),
        env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "zero-shot accuracy" in result.stdout and "compressed" in result.stdout
    report = json.loads(scores.read_text())
    for name in ("dense", "compressed"):
        assert set(report[name]) == set(LOCAL_TASKS)
        for metrics in report[name].values():
            assert set(metrics) == {"acc", "acc_norm"} and all(0 <= v <= 1 for v in metrics.values())
    model, tokenizer = build_tiny("tiny-llama")  # the dense model is the built-in one, untouched
    assert report["dense"] == accuracy(model.eval(), tokenizer, list(LOCAL_TASKS))
    assert report["compressed"] != report["dense"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks", "no_such_task"], "lm-eval knows no task no_such_task"),
        (["--tasks", " , "], "--tasks names no task"),
        ([], "give the spec .* was searched with: --spec SPEC"),
    ],
)
def test_eval_errors_are_one_line(args, message, profile_file, write_spec, run_cli):
    spec = ["--spec", str(write_spec())] if args else []
    result = run_cli("eval", str(profile_file), *spec, *args)
    assert result.returncode == 2, result.stderr
    errors = _errors(result)
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr


def test_eval_of_an_unknown_study_is_a_clear_error(run_cli, tmp_path):
    result = run_cli("eval", "no-such-study", "--storage", f"sqlite:///{tmp_path / 'store.db'}")
    assert result.returncode == 2
    errors = _errors(result)
    assert len(errors) == 1 and "neither a profile file nor a study" in errors[0], result.stderr


def test_eval_without_lm_eval_names_the_pip_command(profile_file, write_spec, run_cli, tmp_path):
    shadow = tmp_path / "shadow" / "lm_eval"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    path = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    result = run_cli("eval", str(profile_file), "--spec", str(write_spec()), env={"PYTHONPATH": path})
    assert result.returncode == 2
    need = 'error: pressroom eval needs lm-evaluation-harness; install it with: pip install "lm-eval>=0.4.13,<0.5"'
    assert _errors(result) == [need]
