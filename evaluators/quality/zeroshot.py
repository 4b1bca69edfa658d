"""Zero-shot accuracy of a causal LM in memory through lm-evaluation-harness (`lm-eval`).

pressroom ships two small local tasks (`LOCAL_TASKS`: multiple-choice items in `evaluators/quality/tasks/`,
written for pressroom, Apache-2.0) that run offline; any other name is one of lm-eval's own tasks
(``arc_easy``, ``hellaswag``, ``piqa``, ``winogrande``...), whose datasets lm-eval downloads from
the Hugging Face Hub, or a task YAML under a folder given as `include_path`.

Example:
    >>> accuracy(model, tokenizer, ["pressroom_facts"])  # doctest: +SKIP
    {'pressroom_facts': {'acc': 0.52, 'acc_norm': 0.49}}
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from torch import nn

logger = logging.getLogger(__name__)

#: The folder of the shipped task YAMLs and their JSONL items.
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
#: The shipped tasks, which need no download.
LOCAL_TASKS = ("pressroom_facts", "pressroom_sequences")
#: How to install the harness.
INSTALL = 'pip install "lm-eval>=0.4.13,<0.5"'
#: The metrics reported, when a task has them.
METRICS = ("acc", "acc_norm")


def require_lm_eval() -> None:
    """Raises ValueError, naming the pip command, when lm-eval is not installed."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ValueError(f"pressroom eval needs lm-evaluation-harness; install it with: {INSTALL}") from None


def task_config(name: str) -> str | dict[str, Any]:
    """A shipped task's config with its data file's absolute path; any other name as it is."""
    if name not in LOCAL_TASKS:
        return name
    config = yaml.safe_load((TASKS_DIR / f"{name}.yaml").read_text())
    files = config["dataset_kwargs"]["data_files"]
    config["dataset_kwargs"]["data_files"] = {split: str(TASKS_DIR / file) for split, file in files.items()}
    return config


@functools.lru_cache(maxsize=4)
def task_manager(include_path: str | None = None) -> Any:
    """lm-eval's index of its tasks (and those under `include_path`), built once: it reads
    thousands of YAML files, seconds each time."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def check_tasks(tasks: Sequence[str], include_path: Path | None = None) -> Any:
    """lm-eval's task index, once every name in `tasks` is known to it or shipped.

    When every task is a shipped one, the Hugging Face libraries are told to stay offline
    (``HF_DATASETS_OFFLINE=1``, ``HF_HUB_OFFLINE=1``) unless the environment says otherwise; they
    read it when first imported, so this comes before lm-eval is.

    Raises:
        ValueError: lm-eval is missing, or names the tasks it does not know.
    """
    if all(name in LOCAL_TASKS for name in tasks):
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    require_lm_eval()
    manager = task_manager(None if include_path is None else str(include_path))
    unknown = [n for n in tasks if n not in LOCAL_TASKS and n not in manager.all_tasks]
    if unknown:
        raise ValueError(
            f"lm-eval knows no task {', '.join(unknown)}; shipped tasks: {', '.join(LOCAL_TASKS)} "
            "(or any lm-eval task name, e.g. arc_easy, hellaswag, piqa, winogrande)"
        )
    return manager


def accuracy(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    batch_size: int = 16,
    limit: int | None = None,
    include_path: Path | None = None,
) -> dict[str, dict[str, float]]:
    """Each task's accuracy metrics (`METRICS`) for `model` as it is now, zero-shot (offline for
    the shipped tasks: see `check_tasks`).

    Args:
        model: a `transformers` causal LM; it is evaluated where it is, in its dtype.
        tokenizer: its tokenizer.
        tasks: task names (see the module docstring).
        batch_size: requests per forward.
        limit: at most this many items per task (for quick checks).
        include_path: a folder of further task YAMLs for lm-eval to index.

    Raises:
        ValueError: lm-eval is missing, or a task is not known (with the reason).
    """
    manager = check_tasks(tasks, include_path)
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size)
    results = lm_eval.simple_evaluate(
        model=wrapped,
        tasks=[task_config(name) for name in tasks],
        task_manager=manager,
        limit=limit,
        log_samples=False,
        bootstrap_iters=0,
    )
    if results is None:  # only on a non-zero rank of a distributed run, which this is not
        raise ValueError("lm-eval returned no results")
    scores: dict[str, dict[str, float]] = {}
    for name in tasks:
        row = results["results"][name]
        scores[name] = {metric: float(row[f"{metric},none"]) for metric in METRICS if f"{metric},none" in row}
    return scores


__all__ = [
    "INSTALL",
    "LOCAL_TASKS",
    "METRICS",
    "TASKS_DIR",
    "accuracy",
    "check_tasks",
    "require_lm_eval",
    "task_config",
    "task_manager",
]
