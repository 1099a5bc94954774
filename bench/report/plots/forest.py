"""The forest plot: one line per row with its point estimate and interval, Δm% and Avg side by side."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report.leaderboard import Leaderboard
from bench.report.plots.common import (
    LABEL_SIZE,
    ROW_INCHES,
    column,
    family_handles,
    family_separators,
    figure_order,
    mark_note,
    marks,
    row_positions,
    save,
    value_label,
)
from bench.report.style import family_style

UNMARKED = "0.5"  # the value of a row that may carry no mark: grey
PANELS = {"delta_m": ("Δm% vs separate (%)", "signed"), "avg": ("Avg of the tasks' primary scores (%)", "percent")}


def short_name(name: str, width: int = 48) -> str:
    """A row name for an axis: whole up to ``width`` characters, else its start and end around an ellipsis."""
    if len(name) <= width:
        return name
    keep = width - 1
    return name[:keep - keep // 3] + "…" + name[-(keep // 3):]


def baseline_values(lb: Leaderboard, column_name: str) -> list[float]:
    """``column_name`` of the baselines the shown rows are compared with (one per budget and data)."""
    names = {b for b in lb.table.get("baseline", []) if isinstance(b, str) and b}
    full = lb.full_table if lb.full_table is not None else lb.table
    values = []
    for name in sorted(names):
        table = lb.table if name in lb.table.index else full
        if name in table.index and column_name in table:
            value = float(table.loc[name, column_name])
            if not math.isnan(value):
                values.append(value)
    return sorted(set(values))


def draw_rows(ax, lb: Leaderboard, rows: list[str], ys: np.ndarray, column_name: str) -> None:
    """Points (family colour and marker, ringed when best, hollow when the row may carry no mark) and interval lines
    of ``column_name``; a row without an interval shows its point only."""
    table = lb.table
    value, lo, hi = (dict(zip(table.index, column(table, column_name + s))) for s in ("", ":lo", ":hi"))
    row_marks = marks(lb, column_name)
    for variant, y in zip(rows, ys):
        style = family_style(lb.styles.family(variant))
        if math.isnan(value[variant]):
            continue
        if not (math.isnan(lo[variant]) or math.isnan(hi[variant])):
            ax.plot([lo[variant], hi[variant]], [y, y], color=style.colour, linewidth=1.6, zorder=2,
                    solid_capstyle="butt")
        best = row_marks[variant].status == "best"
        ax.plot(value[variant], y, marker=style.marker, color=style.colour, markersize=7 if best else 5.5,
                markeredgecolor="black" if best else style.colour, markeredgewidth=1.4 if best else 1.0,
                markerfacecolor=style.colour if row_marks[variant].markable else "white", linestyle="none",
                zorder=3)


def forest_figure(lb: Leaderboard) -> Figure:
    """Δm% (when a separate baseline exists) and Avg, one line per row with its
    point estimate and interval, rows grouped and coloured by family and sorted by the board's score within each
    family; the value, ``*`` (significant against the baseline) and ≈ / bold (tied / best) beside each line, as
    in the table."""
    score = lb.score_column
    panels = [c for c in ("delta_m", "avg") if c in lb.table and lb.table[c].notna().any()] or ["avg"]
    rows = figure_order(lb, score)
    ys = row_positions(rows, lb.styles)
    span = ys[0] - ys[-1] + 1 if len(ys) else 1
    label_inches = 0.066 * max((len(short_name(v)) for v in rows), default=8)
    value_inches = 1.55
    fig = Figure(figsize=(label_inches + len(panels) * (3.0 + value_inches) + 0.3, ROW_INCHES * span + 2.2),
                 layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False).ravel()
    ylim = (ys[-1] - 0.8, ys[0] + 0.8) if len(ys) else (-1, 1)
    for ax, name in zip(axes, panels):
        label, kind = PANELS[name]
        draw_rows(ax, lb, rows, ys, name)
        references = [0.0] if name == "delta_m" else baseline_values(lb, name)
        for x in references:
            ax.axvline(x, color="0.35", linestyle="--", linewidth=0.9, zorder=1)
        family_separators(ax, rows, ys, lb.styles)
        ax.set_ylim(*ylim)
        ax.tick_params(axis="y", length=0)
        ax.set_xlabel(label + ", higher is better", fontsize="small")
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize="small")
        ax.margins(x=0.06)
        # the value column: the table's cell of each row, as tick labels of a twin axis (laid out, never clipped)
        table = lb.table
        value, lo, hi = (dict(zip(table.index, column(table, name + s))) for s in ("", ":lo", ":hi"))
        row_marks = marks(lb, name)
        twin = ax.twinx()
        twin.set_ylim(*ylim)
        twin.set_yticks(ys, [value_label(value[v], lo[v], hi[v], row_marks[v], kind) for v in rows],
                        fontsize=LABEL_SIZE - 1, family="DejaVu Sans Mono")
        twin.tick_params(axis="y", length=0, pad=3)
        for text, variant in zip(twin.get_yticklabels(), rows):
            if row_marks[variant].status == "best":
                text.set_fontweight("bold")
            if not row_marks[variant].markable:
                text.set_color(UNMARKED)
    axes[0].set_yticks(ys, [short_name(v) for v in rows], fontsize=LABEL_SIZE)
    axes[0].tick_params(axis="y", length=0)
    handles = family_handles(rows, lb.styles) + [Line2D([], [], color="0.35", linestyle="--", linewidth=0.9,
                                             label="reference: Δm% = 0 / the baseline's Avg")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize="small",
               frameon=False, title=mark_note(lb, "hollow point, grey value"), title_fontsize="x-small")
    level = f"{100 * lb.options.level:g}%"
    by = "Δm%" if score == "delta_m" else "Avg"
    fig.suptitle(f"{lb.suite} ({lb.split}): rows by family, sorted by {by} within each\n"
                 f"point: mean over seeds; line: {level} interval as in the table (none: point only)",
                 fontsize="medium")
    return fig


def plot_forest(lb: Leaderboard, out_dir: Path) -> dict[str, Path]:
    """:func:`forest_figure` saved as ``forest_<split>.{png,pdf}``."""
    return save(forest_figure(lb), out_dir, f"forest_{lb.split}")
