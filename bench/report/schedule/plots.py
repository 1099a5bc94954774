"""The schedule report's figures (matplotlib ``Figure`` objects, PNG + PDF through the report's ``save``):

* :func:`arrival_figure` (``schedule_arrival``): one panel per row, x = step, y = every task's score R[k][i] after
  each step, one line per task starting at the step it arrived (a ▲ there) and ending where it is retired (an ✕ at
  the retirement step, at the task's last score), its interval as a thin bar, one colour per task in every panel;
* :func:`cost_figure` (``schedule_cost``): the final-step average with its interval against the total training
  samples (left) and wall time (right), one point per row in its strategy's colour, ``retrain`` ringed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report.plots.common import LABEL_SIZE, save
from bench.report.plots.pareto import _place_labels as place_labels
from bench.report.style import OKABE_ITO, Styles

#: task colours: Okabe–Ito without black (black is the retrain reference's in the cost figure)
TASK_COLOURS = tuple(c for name, c in OKABE_ITO.items() if name != "black")
ARRIVAL, RETIRED = "^", "X"


def task_colours(tasks: list[str]) -> dict[str, str]:
    return {t: TASK_COLOURS[i % len(TASK_COLOURS)] for i, t in enumerate(tasks)}


def arrival_figure(scores: pd.DataFrame, rows: list[str], unit: str = "score (points, higher is better)") -> Figure:
    """The task-arrival figure of ``scores`` (:func:`bench.report.schedule.tables.score_table`), panels in
    ``rows`` order; each panel's task lines are labelled with the task's name."""
    tasks = list(dict.fromkeys(scores["task"]))
    colours = task_colours(tasks)
    cols = min(3, len(rows))
    n_rows = math.ceil(len(rows) / cols)
    steps = int(scores["step"].max())
    fig = Figure(figsize=(3.4 * cols, 2.6 * n_rows + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, cols, sharex=True, sharey=True, squeeze=False).ravel()
    dodge = {t: 0.04 * (j - (len(tasks) - 1) / 2) for j, t in enumerate(tasks)}  # intervals side by side
    for ax, row in zip(axes, rows):
        part = scores[scores["variant"] == row]
        for task in tasks:
            mine = part[part["task"] == task].sort_values("step")
            served = mine[mine["event"] != "retired"]
            if served.empty:
                continue
            x, y = served["step"].to_numpy(float), served["score"].to_numpy(float)
            ax.plot(x, y, color=colours[task], linewidth=1.4, label=task, zorder=3)
            lo, hi = served.get("score:lo"), served.get("score:hi")
            if lo is not None and hi is not None:
                ax.vlines(x + dodge[task], lo.to_numpy(float), hi.to_numpy(float), color=colours[task], alpha=0.35,
                          linewidth=3, zorder=2)
            arrived = served[served["event"] == "arrived"]
            ax.scatter(arrived["step"], arrived["score"], marker=ARRIVAL, s=36, color=colours[task], zorder=4)
            for step in mine[mine["event"] == "retired"]["step"]:
                last = served[served["step"] < step]
                if not last.empty:
                    ax.scatter([step], [last["score"].iloc[-1]], marker=RETIRED, s=40, color=colours[task], zorder=4)
        ax.set_title(row, fontsize=LABEL_SIZE + 1)
        ax.set_xticks(range(1, steps + 1))
        ax.set_xlim(0.7, steps + 0.3)
        ax.grid(axis="y", color="0.9", linewidth=0.6)
        ax.tick_params(labelsize=LABEL_SIZE)
    for ax in axes[len(rows):]:
        ax.set_visible(False)
    for i, ax in enumerate(axes[:len(rows)]):
        if i + cols >= len(rows):  # no panel below it: its own step axis (a shared one hides inner labels)
            ax.tick_params(labelbottom=True)
            ax.set_xlabel("step", fontsize=LABEL_SIZE)
    for ax in axes[::cols]:
        ax.set_ylabel(unit, fontsize=LABEL_SIZE)
    handles = [Line2D([], [], color=colours[t], linewidth=1.4, label=t) for t in tasks]
    handles.append(Line2D([], [], color="0.3", marker=ARRIVAL, linestyle="", label="arrives"))
    if (scores["event"] == "retired").any():
        handles.append(Line2D([], [], color="0.3", marker=RETIRED, linestyle="", label="retired"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=LABEL_SIZE,
               frameon=False)
    fig.suptitle("Task arrival: every task's test score after each step", fontsize=LABEL_SIZE + 2)
    return fig


def cost_figure(table: pd.DataFrame, styles: Styles) -> Figure:
    """Final-step average (with its interval) against total samples and wall time, one point per row."""
    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = table["final"].to_numpy(float)
    lo, hi = table.get("final:lo"), table.get("final:hi")
    low = np.where(np.isnan(lo.to_numpy(float)), 0.0, y - lo.to_numpy(float)) if lo is not None else np.zeros(len(y))
    high = np.where(np.isnan(hi.to_numpy(float)), 0.0, hi.to_numpy(float) - y) if hi is not None else np.zeros(len(y))
    for ax, key, label in ((axes[0], "train_samples_seen", "training samples seen (all steps)"),
                           (axes[1], "wall_time_s", "wall time of the steps' stages (s)")):
        x = table[key].to_numpy(float)
        for i, (variant, row) in enumerate(table.iterrows()):
            colour = styles.colour(variant)
            ax.errorbar([x[i]], [y[i]], yerr=[[max(low[i], 0.0)], [max(high[i], 0.0)]], fmt="o", color=colour,
                        markersize=6, capsize=2, linewidth=1.0, zorder=3)
            if row["strategy"] == "retrain":
                ax.scatter([x[i]], [y[i]], s=180, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
        ax.set_xlabel(label, fontsize=LABEL_SIZE)
        ax.tick_params(labelsize=LABEL_SIZE)
        ax.grid(color="0.92", linewidth=0.6)
    axes[0].set_ylabel("final-step average (points)", fontsize=LABEL_SIZE)
    ring = Line2D([], [], marker="o", markersize=11, markerfacecolor="none", markeredgecolor="black", linestyle="",
                  label="retrain (the reference)")
    fig.legend(handles=[ring], loc="outside lower center", fontsize=LABEL_SIZE, frameon=False)
    fig.suptitle("Cost against the final-step score (interval: two-level t)", fontsize=LABEL_SIZE + 2)
    for ax, key in zip(axes, ("train_samples_seen", "wall_time_s")):  # after the layout: labels off the points
        x = table[key].to_numpy(float)
        place_labels(fig, ax, [(a, b, v) for a, b, v in zip(x, y, table.index)], x, y)
    return fig


def write_plots(table: pd.DataFrame, scores: pd.DataFrame, styles: Styles, out_dir: Path) -> dict[str, Path]:
    """``schedule_arrival.{png,pdf}`` and ``schedule_cost.{png,pdf}``."""
    paths = save(arrival_figure(scores, list(table.index)), out_dir, "schedule_arrival")
    return paths | save(cost_figure(table, styles), out_dir, "schedule_cost")
