"""`pressroom status` says what it counts: evaluations, and the trials they form, by state."""

from __future__ import annotations

from optuna.trial import TrialState, create_trial

from search.cli.searches import STATUS_CAPTION, count_trials
from search.storage.study import EVALUATIONS, PROGRESS, SearchStudy, connect


def _evaluation(index: int, stage: int, fitness: float | None) -> dict[str, object]:
    return {"id": index, "stage": stage, "fitness": fitness, "tokens": 256 * (stage + 1), "seconds": 0.1, "worker": "w"}


def _trials() -> list[object]:
    """3 members that passed both stages, 4 dropped after the first, 1 whose only evaluation failed."""
    trials, index = [], 0
    for member in range(8):
        state = TrialState.COMPLETE if member < 3 else TrialState.PRUNED if member < 7 else TrialState.FAIL
        stages = 2 if state == TrialState.COMPLETE else 1
        records = []
        for stage in range(stages):
            records.append(_evaluation(index, stage, None if state == TrialState.FAIL else 0.1 * (member + 1)))
            index += 1
        value = records[-1]["fitness"] if state == TrialState.COMPLETE else None
        attrs = {"member": member, "generation": 1, EVALUATIONS: records}
        trials.append(create_trial(state=state, value=value, user_attrs=attrs))
    return trials


def test_counts_name_evaluations_and_trials_by_state():
    assert count_trials(_trials()) == ("11 (1 failed)", "8: 3 complete, 4 pruned at a stage, 1 failed")
    assert count_trials([]) == ("0", "0")


def test_status_shows_the_counts_whole_when_piped(run_cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    storage = connect(url)
    name = "a-study-name-long-enough-that-80-columns-would-cut-the-table-short"
    study = SearchStudy.open(storage, name, fingerprint="test", attrs={PROGRESS: {"fraction": 0.5, "generation": 3}})
    for trial in _trials():
        storage.create_new_trial(study.id, template_trial=trial)
    result = run_cli("status", name, "--storage", url)  # stdout is a pipe here
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if name in line]
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells == [name, "11 (1 failed)", "8: 3 complete, 4 pruned at a stage, 1 failed", "0.1", "50% (generation 3)"]
    assert " ".join(STATUS_CAPTION.split()) in " ".join(result.stdout.split())
