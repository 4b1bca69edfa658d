"""`pressroom compare`'s results for people and for other programs: the table and the figure.

The table (one row per method, from `search.driver.compare.summarize`) comes in three forms:
a rich table for the terminal, CSV (numbers unrounded, for programs) and Markdown (the terminal's
rounding, for reports). The figure draws held-out fitness against forwarded tokens: each seed's
curve, labelled, and per method the mean over seeds with a band from the lowest to the highest
seed. A curve is a step function (the incumbent measured when it changed holds until the next
change), so seeds measured at different token counts are averaged at every count any of them has,
over the seeds measured by then.

Example:
    >>> text = comparison_text(rows, "csv")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from rich.table import Table

#: What `--format` accepts for the table on stdout.
TABLE_FORMATS = ("table", "csv", "markdown")
#: One curve: (forwarded tokens, held-out fitness or None where its evaluation failed).
Curve = Sequence[tuple[int, float | None]]
BAND_LABEL = "min-max over seeds"
SEED_MARKERS = "os^Dv<>ph*"


def _number(digits: str) -> Callable[[Any], str]:
    return lambda value: "-" if value is None else format(value, digits)


#: The columns: header, key in a row, how the table and Markdown show the value.
COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("method", "method", str),
    ("held-out fitness (mean)", "heldout_mean", _number(".5g")),
    ("spread (sd)", "heldout_std", _number(".2g")),
    ("best seed", "heldout_min", _number(".5g")),
    ("seeds", "seeds", _number("d")),
    ("wall s", "seconds", _number(".0f")),
    ("evaluations", "evaluations", _number(".0f")),
    ("tokens", "tokens", _number(",.0f")),
    ("perplexity", "perplexity_mean", _number(".3f")),
)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, Callable[[Any], str]]]:
    """Every column, perplexity only when some method has one (a causal LM)."""
    causal = any(row.get("perplexity_mean") is not None for row in rows)
    return [c for c in COLUMNS if c[1] != "perplexity_mean" or causal]


def _ordered(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Best mean held-out fitness first; methods without one last."""
    return sorted(rows, key=lambda r: (r["heldout_mean"] is None, r["heldout_mean"] or 0.0))


def comparison_table(rows: Sequence[Mapping[str, Any]], title: str) -> Table:
    """The rich table (print it with `search.cli.common.show_table`, which keeps it whole when piped)."""
    table = Table(title=title)
    columns = _columns(rows)
    for header, _, _ in columns:
        table.add_column(header, justify="right")
    for row in _ordered(rows):
        table.add_row(*(show(row[key]) for _, key, show in columns))
    return table


def comparison_text(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """The table as CSV (unrounded numbers) or as a Markdown table (the terminal's rounding).

    Raises:
        ValueError: a format other than csv or markdown.
    """
    columns = _columns(rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow([header for header, _, _ in columns])
        for row in _ordered(rows):
            writer.writerow(["" if row[key] is None else row[key] for _, key, _ in columns])
        return buffer.getvalue()
    if fmt == "markdown":
        lines = [
            "| " + " | ".join(header for header, _, _ in columns) + " |",
            "| " + " | ".join("---" if key == "method" else "---:" for _, key, _ in columns) + " |",
        ]
        lines += ["| " + " | ".join(show(row[key]) for _, key, show in columns) + " |" for row in _ordered(rows)]
        return "\n".join(lines) + "\n"
    raise ValueError(f"table format {fmt!r} is not text; allowed: csv, markdown")


def _step_values(curve: Curve, grid: Sequence[int]) -> list[float | None]:
    """The curve's value at each token count of `grid` (None before its first measurement)."""
    points = sorted((t, v) for t, v in curve if v is not None and math.isfinite(v))
    out: list[float | None] = []
    k = -1
    for tokens in grid:
        while k + 1 < len(points) and points[k + 1][0] <= tokens:
            k += 1
        out.append(points[k][1] if k >= 0 else None)
    return out


def curve_figure(curves: Mapping[str, Sequence[Curve]], title: str) -> Figure:
    """Held-out fitness against forwarded tokens: per method a colour, its seeds' curves (thin,
    one marker per seed, labelled "METHOD seed K"), and the mean over seeds (thick) in a min-max band.

    Args:
        curves: method -> one curve per seed, in seed order.
        title: the figure's title.
    """
    import matplotlib

    fig = Figure(figsize=(9.5, 5.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    colours = matplotlib.colormaps["tab10"]
    for index, (method, seeds) in enumerate(curves.items()):
        colour = colours(index % 10)
        for seed, curve in enumerate(seeds):
            points = sorted((t, v) for t, v in curve if v is not None)
            if points:
                ts, ys = zip(*points, strict=True)
                marker = SEED_MARKERS[seed % len(SEED_MARKERS)]  # tells a method's seeds apart
                ax.plot(ts, ys, marker=marker, markersize=4, linewidth=0.8, alpha=0.5, color=colour,
                        drawstyle="steps-post", label=f"{method} seed {seed}")  # fmt: skip
        grid = sorted({t for curve in seeds for t, v in curve if v is not None})
        at = [
            [v for v in column if v is not None] for column in zip(*(_step_values(c, grid) for c in seeds), strict=True)
        ]
        kept = [(t, vs) for t, vs in zip(grid, at, strict=True) if vs]
        if not kept:
            continue
        xs = [t for t, _ in kept]
        ax.fill_between(xs, [min(vs) for _, vs in kept], [max(vs) for _, vs in kept], step="post",
                        color=colour, alpha=0.15, linewidth=0)  # fmt: skip
        means = [sum(vs) / len(vs) for _, vs in kept]
        ax.step(xs, means, where="post", color=colour, linewidth=2.2, label=f"{method} mean ({BAND_LABEL})")
    ax.set_xlabel("forwarded tokens")
    ax.set_ylabel("held-out fitness of the incumbent (lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="x-small")
    return fig


__all__ = ["BAND_LABEL", "COLUMNS", "TABLE_FORMATS", "Curve", "comparison_table", "comparison_text", "curve_figure"]
