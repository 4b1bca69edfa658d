import json
from pathlib import Path

import pytest

from evaluators.models import build_tiny
from evaluators.quality.zeroshot import LOCAL_TASKS, TASKS_DIR, accuracy, task_config


@pytest.mark.parametrize("name", LOCAL_TASKS)
def test_shipped_tasks_are_well_formed(name):
    config = task_config(name)
    assert isinstance(config, dict) and config["task"] == name
    files = [Path(f) for f in config["dataset_kwargs"]["data_files"].values()]
    assert all(f.is_absolute() and f.parent == TASKS_DIR for f in files)
    items = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert len(items) >= 150
    assert len({item["question"] for item in items}) == len(items)  # one answer per question
    for item in items:
        assert len(set(item["choices"])) == 4 and 0 <= item["answer"] < 4


def test_other_task_names_go_to_lm_eval_as_they_are():
    assert task_config("arc_easy") == "arc_easy"


def test_an_unknown_task_is_named():
    model, tokenizer = build_tiny("tiny-llama")
    with pytest.raises(ValueError, match="lm-eval knows no task no_such_task; shipped tasks: pressroom_facts"):
        accuracy(model, tokenizer, ["pressroom_facts", "no_such_task"])
