"""Figures of a search: the best profile per layer, the fitness per generation, layer sensitivity.

Every fitness in them is the search's own: measured on calibration minibatches, a fresh one per
generation, never on the held-out split (`pressroom search` and `best` report that one). Titles
and axes say so, since the two differ.

Drawn with matplotlib's object API (no pyplot, so no global figure state and no GUI backend),
which is safe on the background thread that redraws them during a search.

Example:
    >>> path = save_png(profile_figure(space, profile, fitness=0.012), Path("best-profile.png"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from spaces import Space

from ..algorithms import read_float
from .sensitivity import Sensitivity

PROFILE_PNG = "best-profile.png"
HISTORY_PNG = "fitness-history.png"
SENSITIVITY_PNG = "layer-sensitivity.png"
_KIND_COLOURS = {"attn": "#4c72b0", "mlp": "#dd8452", "linear": "#55a868"}
_MIXED_COLOUR = "#8172b3"  # a block unit: attention and MLP share one level
HISTORY_TITLE = "search fitness per generation (calibration minibatches, a fresh one each generation)"
HISTORY_AXIS = "search fitness on calibration data (lower is better)"
LOWEST_LABEL = "lowest seen (any generation)"
WINNER_LABEL = "winner = incumbent (this generation's data)"
PARENT_LABEL = "parent re-scored (this generation's data)"
_AXIS_LABELS = {"sparsity": "sparsity", "bitwidth": "bits per weight", "drop": "dropped (1) or kept (0)"}


def profile_figure(
    space: Space,
    profile: Mapping[str, int],
    *,
    fitness: float | None = None,
    title: str | None = None,
) -> Figure:
    """One bar per unit (its sparsity, bits or dropped), in model order, grouped by block.

    Blocks are told apart by shaded bands and labelled under the axis; bars are coloured by
    what the unit holds (attention, MLP, or both for a whole block).

    Args:
        space: the profile's space.
        profile: the profile to draw.
        fitness: shown in the title when given: the search fitness, on calibration data.
        title: replaces the default title.

    Raises:
        ValueError: the profile does not belong to `space`.
    """
    meanings = space.meanings(profile)
    scheme = space.scheme.name
    fig, ax = _figure(space)
    handles = _unit_bars(ax, space, [meanings[unit.name] for unit in space.units])
    ax.set_ylabel(_AXIS_LABELS.get(scheme, scheme))
    if scheme != "drop":
        handles.append(ax.axhline(space.scheme.target, color="#333333", linestyle="--", linewidth=1, label="target"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    average = space.average(profile)
    heading = title or f"best profile: average {scheme} {average:.4g} over {len(space.units)} units"
    if fitness is not None:
        heading += f", search fitness {fitness:.5g} (calibration data)"
    ax.set_title(heading)
    return fig


def sensitivity_figure(space: Space, estimate: Sensitivity) -> Figure:
    """Per unit, the fitness change of one step up its levels (`sensitivity.layer_sensitivity`),
    drawn as the best profile is: in model order, grouped by block, coloured by kind."""
    fig, ax = _figure(space)
    handles = _unit_bars(ax, space, [float(v) for v in estimate.effects])
    ax.axhline(0.0, color="#333333", linewidth=0.8)
    ax.set_ylabel("fitness change per level step up" + (", vs the average unit" if space.exact else ""))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_title(
        f"layer sensitivity: ridge fit over {estimate.evaluations} evaluations"
        f" in {estimate.groups} (generation, tokens) groups"
    )
    return fig


def _figure(space: Space) -> tuple[Figure, Any]:
    """A figure one bar per unit wide, and its axes."""
    width = min(16.0, max(6.0, 0.12 * len(space.units) + 2.5))
    fig = Figure(figsize=(width, 4.2), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _unit_bars(ax: Any, space: Space, values: Sequence[float]) -> list[Artist]:
    """One bar per unit in model order, blocks told apart by shaded bands and labelled under
    the axis, bars coloured by what the unit holds; returns the legend's handles."""
    blocks: dict[int, list[int]] = {}
    used: set[str] = set()
    mixed = False
    for i, unit in enumerate(space.units):
        blocks.setdefault(unit.block, []).append(i)
        kinds = {layer.kind for layer in unit.layers}
        if len(kinds) == 1:
            used |= kinds
        mixed = mixed or len(kinds) > 1
        colour = _KIND_COLOURS[next(iter(kinds))] if len(kinds) == 1 else _MIXED_COLOUR
        ax.bar(i, values[i], width=0.8, color=colour)
    ordered = sorted(blocks.items())
    for _, members in ordered[::2]:
        ax.axvspan(members[0] - 0.5, members[-1] + 0.5, color="#000000", alpha=0.05, linewidth=0)
    shown = ordered[:: max(1, math.ceil(len(ordered) / 32))]  # keep block labels legible on deep models
    ax.set_xticks([(m[0] + m[-1]) / 2 for _, m in shown], [str(b) for b, _ in shown])
    ax.set_xlim(-0.5, len(space.units) - 0.5)
    ax.set_xlabel("transformer block")
    handles: list[Artist] = [Patch(color=c, label=kind) for kind, c in _KIND_COLOURS.items() if kind in used]
    if mixed:
        handles.append(Patch(color=_MIXED_COLOUR, label="whole block"))
    return handles


def history_figure(history: Sequence[Mapping[str, Any]], *, title: str = HISTORY_TITLE) -> Figure:
    """Per generation: the winner (the new incumbent) and the parent, both on that generation's
    calibration minibatch, and the lowest winner value so far (values of different minibatches).

    Args:
        history: an algorithm's `history` (entries without a fitness are skipped).
        title: the figure's title.
    """
    fig = Figure(figsize=(8.0, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    series: dict[str, tuple[list[float], list[float]]] = {
        "best_fitness": ([], []),
        "fitness": ([], []),
        "parent": ([], []),
    }
    for index, entry in enumerate(history):
        step = float(entry.get("generation", index))
        for key, name in (("best_fitness", "best_fitness"), ("fitness", "fitness"), ("parent_fitness", "parent")):
            value = _finite(entry.get(key))
            if value is not None:
                series[name][0].append(step)
                series[name][1].append(value)
    if not series["fitness"][0]:
        ax.text(0.5, 0.5, "no generation has finished yet", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.step(*series["best_fitness"], where="post", color="#c44e52", linewidth=2, label=LOWEST_LABEL)
        ax.plot(*series["fitness"], "o", color="#4c72b0", markersize=4, label=WINNER_LABEL)
        if series["parent"][0]:
            ax.plot(*series["parent"], "x", color="#555555", markersize=5, label=PARENT_LABEL)
        values = [v for _, ys in series.values() for v in ys]
        if min(values) > 0 and max(values) / min(values) > 20:
            ax.set_yscale("log")
        ax.legend(fontsize="small")
    ax.set_xlabel("generation")
    ax.set_ylabel(HISTORY_AXIS)
    ax.set_title(title)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write the figure as a PNG; returns `path`."""
    fig.savefig(path, format="png")
    return path


def _finite(value: Any) -> float | None:
    number = read_float(value)
    return number if number is not None and math.isfinite(number) else None


__all__ = [
    "HISTORY_AXIS",
    "HISTORY_PNG",
    "HISTORY_TITLE",
    "LOWEST_LABEL",
    "PARENT_LABEL",
    "PROFILE_PNG",
    "SENSITIVITY_PNG",
    "WINNER_LABEL",
    "history_figure",
    "profile_figure",
    "save_png",
    "sensitivity_figure",
]
