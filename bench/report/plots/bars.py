"""Per-task scores: one panel per task, a dot and its interval per row, row names on the shared y axis."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report.leaderboard import Leaderboard
from bench.report.leaderboard.cells import ARROWS
from bench.report.plots.common import (
    LABEL_SIZE,
    ROW_INCHES,
    column,
    error_bars,
    family_handles,
    family_separators,
    figure_order,
    mark_note,
    marks,
    row_positions,
    save,
)
from bench.report.plots.forest import baseline_values, short_name
from bench.report.style import family_style

PANELS_PER_LINE = 5


def bars_figure(lb: Leaderboard) -> Figure:
    """One panel per task (its primary metric), rows on a shared y axis in the forest plot's order (family groups,
    sorted by the board's score). A dot per row (family colour and marker; ringed when best, hollow when the row
    may carry no mark), its interval (the table's ``:lo``/``:hi``; dotted: ± std over seeds for rows without
    predictions), ``*`` / ≈ as in the table, and a dashed line at the baseline's score. The x range follows the
    data (scores of 90–99 are not drawn from 0)."""
    rows = figure_order(lb, lb.score_column)
    ys = row_positions(rows, lb.styles)
    span = ys[0] - ys[-1] + 1 if len(ys) else 1
    tasks = list(lb.tasks)
    cols = min(PANELS_PER_LINE, len(tasks))
    lines = math.ceil(len(tasks) / cols)
    label_inches = 0.066 * max((len(short_name(v)) for v in rows), default=8)
    fig = Figure(figsize=(label_inches + 2.3 * cols + 0.3, lines * (ROW_INCHES * span + 0.9) + 1.5),
                 layout="constrained")
    axes = fig.subplots(lines, cols, sharey=True, squeeze=False)
    for ax in axes.ravel()[len(tasks):]:
        ax.set_visible(False)
    position = {v: i for i, v in enumerate(lb.table.index)}
    shown_kinds: set[str] = set()
    ylim = (ys[-1] - 0.8, ys[0] + 0.8) if len(ys) else (-1, 1)
    for ax, task in zip(axes.ravel(), tasks):
        metric = lb.tasks[task]["primary"]
        name = f"{task}/{metric}"
        means = column(lb.table, name)
        bars, kinds = error_bars(lb, name)
        shown_kinds |= set(kinds) - {"none"}
        row_marks = marks(lb, name)
        for variant, y in zip(rows, ys):
            i = position[variant]
            if math.isnan(means[i]):
                continue
            style = family_style(lb.styles.family(variant))
            lo, hi = means[i] - bars[0, i], means[i] + bars[1, i]
            if kinds[i] != "none":
                ax.plot([lo, hi], [y, y], color=style.colour, linewidth=1.4, zorder=2, solid_capstyle="butt",
                        linestyle=":" if kinds[i] == "std" else "-")
            mark = row_marks[variant]
            best = mark.status == "best"
            ax.plot(means[i], y, marker=style.marker, color=style.colour, markersize=6.5 if best else 5,
                    markeredgecolor="black" if best else style.colour, markeredgewidth=1.3 if best else 1.0,
                    markerfacecolor=style.colour if mark.markable else "white", linestyle="none", zorder=3)
            text = ("*" if mark.significant else "") + ("≈" if mark.status == "tie" else "")
            if text:
                ax.annotate(text, (hi, y), xytext=(2, 0), textcoords="offset points", va="center", ha="left",
                            fontsize=LABEL_SIZE, annotation_clip=False, zorder=4,
                            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.3, "alpha": 0.8})
        for x in baseline_values(lb, name):
            ax.axvline(x, color="0.35", linestyle="--", linewidth=0.9, zorder=1)
        family_separators(ax, rows, ys, lb.styles)
        better = lb.tasks[task]["metrics"].get(metric, "max")
        unit = " (%)" if better == "max" else ""
        ax.set_title(task, fontsize="medium")
        # the direction as in the table's headers, spelled out where it is the unusual one
        ax.set_xlabel(f"{metric} {ARROWS[better]}{unit}" + (", lower is better" if better == "min" else ""),
                      fontsize="small")
        ax.tick_params(axis="x", labelsize="small")
        ax.margins(x=0.12)  # room for the marks right of the longest interval
        ax.grid(axis="x", alpha=0.3)
        ax.set_ylim(*ylim)
        ax.tick_params(axis="y", length=0)
    for line in axes:
        line[0].set_yticks(ys, [short_name(v) for v in rows], fontsize=LABEL_SIZE)
        line[0].tick_params(axis="y", length=0)
    level = f"{100 * lb.options.level:g}%"
    if shown_kinds == {"interval"}:
        what = f"line: {level} interval"
    elif shown_kinds == {"interval", "std"}:
        what = f"line: {level} interval; dotted: ± std (rows without predictions)"
    elif shown_kinds == {"std"}:
        what = "line: ± std over seeds"
    else:
        what = "no intervals"
    handles = family_handles(rows, lb.styles) + [Line2D([], [], color="0.35", linestyle="--", linewidth=0.9,
                                             label="the baseline's score")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize="small",
               frameon=False, title=mark_note(lb, "hollow point"), title_fontsize="x-small")
    by = "Δm%" if lb.score_column == "delta_m" else "Avg"
    fig.suptitle(f"{lb.suite} ({lb.split}): primary metric per task; point: mean over seeds, {what}\n"
                 f"rows by family, sorted by {by} within each (as in forest_{lb.split})", fontsize="medium")
    return fig


def plot_bars(lb: Leaderboard, out_dir: Path) -> dict[str, Path]:
    """:func:`bars_figure` saved as ``bars_<split>.{png,pdf}``."""
    return save(bars_figure(lb), out_dir, f"bars_{lb.split}")
