"""What optuna-dashboard shows of a pressroom study, made readable as it is served.

The storage keeps what resuming and `pressroom best` read: the spec, the space, the algorithm's
checkpoint (its random generator's state included) as JSON attributes, and each trial's profile
as a bare list of levels. The dashboard would show those as walls of JSON and numbers.
`readable_app` wraps the dashboard's WSGI app and rewrites two of its JSON answers, changing
nothing stored:

- a study's attributes (`/api/studies`, `/api/studies/<id>`) become one-line summaries, the
  progress and the best fitness first, the checkpoint last;
- a COMPLETE trial without a note of its own gets one: its profile per named unit (layer or
  block) with what each level means (sparsity 0.6, 4 bits, dropped), one row per block and one
  column per layer type where the model has that shape. A note a person saves wins.

optuna-dashboard 0.21 keeps the route of its former "Trials (Table)" page but draws nothing
there; that link is sent to Smart Selection, where the trial table is now. Every other request,
and any answer not shaped as expected, passes through untouched.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from optuna.storages import BaseStorage

from spaces import Space

from ..storage.study import BEST, CHECKPOINT, HELDOUT, PROGRESS, SPACE, SPEC
from .best import ResultsError, space_from_record
from .summary import MEASURES, layer_type

logger = logging.getLogger(__name__)

_STUDY = re.compile(r"/api/studies(?:/(\d+))?")
_TRIAL_TABLE = re.compile(r"(.*/studies/\d+)/trialTable")
FIRST = (PROGRESS, BEST, HELDOUT)  # shown first; everything else keeps its order, the checkpoint last
LONG = 200  # characters of JSON beyond which an attribute without a summary is not shown


def readable_app(app: Callable[..., Any], storage: BaseStorage) -> Callable[..., Any]:
    """The dashboard's WSGI `app`, with study attributes and trial notes made readable."""
    spaces: dict[int, Space | None] = {}  # by study id: a study's space never changes

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        table = _TRIAL_TABLE.fullmatch(environ.get("PATH_INFO", ""))
        if table is not None:  # 0.21 draws no page there; its trial table is on Smart Selection now
            start_response("302 Found", [("Location", f"{table.group(1)}/smartSelection"), ("Content-Length", "0")])
            return [b""]
        match = _STUDY.fullmatch(environ.get("PATH_INFO", ""))
        if match is None or environ.get("REQUEST_METHOD", "GET") != "GET":
            passed: Iterable[bytes] = app(environ, start_response)
            return passed
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            captured.update(status=status, headers=headers)
            return lambda _: None

        body = b"".join(app(environ, capture))
        status, headers = captured["status"], captured["headers"]
        plain = not any(k.lower() == "content-encoding" for k, _ in headers)
        if status.startswith("200") and plain:
            try:
                body = _rewrite(json.loads(body), match.group(1), storage, spaces)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not the shape this knows
                logger.debug("dashboard answer for %s left as it was: %s", environ["PATH_INFO"], exc)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]

    return wrapped


def _rewrite(data: dict[str, Any], study: str | None, storage: BaseStorage, spaces: dict[int, Space | None]) -> bytes:
    if study is None:  # the list of studies
        for summary in data["study_summaries"]:
            summary["user_attrs"] = readable_attrs(summary["user_attrs"], storage, int(summary["study_id"]))
        return json.dumps(data).encode()
    study_id = int(study)
    data["user_attrs"] = readable_attrs(data["user_attrs"], storage, study_id)
    trials = [t for t in (*data["trials"], *data["best_trials"]) if t["state"] == "Complete" and not t["note"]["body"]]
    if trials:
        if study_id not in spaces:
            spaces[study_id] = _space(storage, study_id)
        space = spaces[study_id]
        if space is not None:
            for trial in trials:
                levels = _levels(trial, storage)
                if levels is None:
                    continue
                try:
                    trial["note"]["body"] = profile_note(space, levels)
                except ValueError as exc:  # levels of another space: the trial keeps its empty note
                    logger.debug("trial %s: %s", trial["trial_id"], exc)
    return json.dumps(data).encode()


def readable_attrs(shown: list[dict[str, str]], storage: BaseStorage, study_id: int) -> list[dict[str, str]]:
    """The dashboard's list of study attributes, each pressroom one as a line a person reads."""
    stored = storage.get_study_user_attrs(study_id)
    out = []
    for item in shown:
        key = item["key"]
        value = stored.get(key)
        text = describe(key, value) if key in stored else item["value"]
        out.append({"key": key, "value": text})
    rank = {key: i for i, key in enumerate(FIRST)}
    return sorted(out, key=lambda item: (item["key"] == CHECKPOINT, rank.get(item["key"], len(FIRST))))


def describe(key: str, value: Any) -> str:
    """One line for a study attribute (the stored JSON unless it is long or a known record)."""
    text = value if isinstance(value, str) else json.dumps(value)
    kb = f"{len(text) / 1024:.1f} kB of JSON"
    try:
        if key == CHECKPOINT:
            state = json.loads(text)
            return (
                f"{state.get('algorithm', 'the algorithm')}'s state after {state.get('next_id', '?')} evaluations"
                f" asked, random generator included ({kb}); read when the search resumes"
            )
        if key == PROGRESS:
            updated = datetime.fromtimestamp(float(value["updated"]), UTC).strftime("%Y-%m-%d %H:%M UTC")
            best = "none yet" if value.get("best") is None else f"{value['best']:.6g}"
            return (
                f"{float(value['fraction']):.0%} done, generation {value.get('generation')}, best fitness {best},"
                f" {value.get('evaluations')} evaluations (updated {updated})"
            )
        if key == BEST:
            return (
                f"fitness {float(value['fitness']):.6g} by {value.get('algorithm')}, {len(value['levels'])} levels;"
                " the figure best-profile.png is under Study Artifacts"
            )
        if key == SPEC:
            c = value["compression"]
            return (
                f"model {value['model']['name']}, {c['scheme']} target {c['target']} with {c['compressor']},"
                f" {value['algorithm']['name']}, seed {value.get('seed')} ({kb}; the Note summarises it)"
            )
        if key == SPACE:
            scheme = value["scheme"]
            return (
                f"{len(value['units'])} units over {len(value['layers'])} layers at {value['granularity']} granularity,"
                f" {scheme['name']} target {scheme['target']}, about 10^{float(value['log10_profiles']):.0f}"
                f" feasible profiles ({kb})"
            )
        if key == HELDOUT:
            return "; ".join(
                f"{name}: fitness {float(entry['fitness']):.6g}" + _perplexity(entry) for name, entry in value.items()
            )
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # a record of another shape (an older pressroom): shown as stored, or by its size
    return text if len(text) <= LONG else f"{kb} (not shown; read it with Optuna's API)"


def _perplexity(entry: Mapping[str, Any]) -> str:
    value = entry.get("perplexity")
    return "" if value is None else f", perplexity {float(value):.4g}"


def profile_note(space: Space, levels: list[int]) -> str:
    """A trial's profile as Markdown: per unit (layer or block), what its level means."""
    meanings = space.meanings(space.from_array(levels))
    measure = MEASURES.get(space.scheme.name, space.scheme.name)
    lines = [f"### Profile: {measure} per {'block' if space.granularity == 'block' else 'layer'}", ""]
    grid: dict[int, dict[str, float]] = {}
    for unit in space.units:
        grid.setdefault(unit.block, {})[layer_type(unit.name)] = meanings[unit.name]
    columns = list(dict.fromkeys(t for row in grid.values() for t in row))
    if space.granularity != "block" and len(columns) > 1 and len(columns) * len(grid) == len(space.units):
        prefix = space.units[0].name.rsplit(".", 1)[0]
        lines.append(f"Rows are blocks, columns are layer types (e.g. `{prefix}.{columns[0]}`).")
        lines += ["", "| block | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for block, row in grid.items():
            lines.append(f"| {block} | " + " | ".join(_value(row[c]) for c in columns) + " |")
    else:
        lines += [f"| unit | {measure} |", "|---|---|"]
        lines += [f"| `{name}` | {_value(value)} |" for name, value in meanings.items()]
    lines += ["", f"Average {measure}: {_value(space.average(space.from_array(levels)))}."]
    return "\n".join(lines)


def _value(value: float) -> str:
    return f"{value:.3g}"


def _levels(trial: Mapping[str, Any], storage: BaseStorage) -> list[int] | None:
    """The trial's `levels` attribute: from the answer, or from storage where the dashboard cut it."""
    for item in trial["user_attrs"]:
        if item["key"] == "levels":
            try:
                return [int(v) for v in json.loads(item["value"])]
            except ValueError:  # longer than the dashboard shows
                levels = storage.get_trial(int(trial["trial_id"])).user_attrs.get("levels")
                return None if levels is None else [int(v) for v in levels]
    return None


def _space(storage: BaseStorage, study_id: int) -> Space | None:
    record = storage.get_study_user_attrs(study_id).get(SPACE)
    if record is None:
        return None
    try:
        return space_from_record(record, str(study_id))
    except (ResultsError, ValueError, KeyError, TypeError) as exc:
        logger.debug("study %d: no space to name its trials' levels by: %s", study_id, exc)
        return None


__all__ = ["describe", "profile_note", "readable_app", "readable_attrs"]
