"""Score against a cost (throughput, memory): points coloured by family, the Pareto front labelled."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.report.leaderboard import Leaderboard
from bench.report.plots.common import LABEL_SIZE, family_handles, save
from bench.report.plots.forest import short_name
from bench.report.style import Styles, family_style

LABEL_ALL_UP_TO = 8  # rows; past that only the front and the baselines get a label
COST_LABELS = {"train_samples_per_s": "training throughput (samples/s)", "peak_memory_mb": "peak memory (MB)"}


def pareto_front(xs: np.ndarray, ys: np.ndarray, x_better: str) -> np.ndarray:
    """Boolean mask of points no other point beats on both axes (y: higher is better; x: ``max``/``min``)."""
    sign = 1.0 if x_better == "max" else -1.0
    front = np.zeros(len(xs), dtype=bool)
    for i in range(len(xs)):
        if math.isnan(xs[i]) or math.isnan(ys[i]):
            continue
        dominated = ((sign * xs >= sign * xs[i]) & (ys >= ys[i]) & ((sign * xs > sign * xs[i]) | (ys > ys[i])))
        front[i] = not dominated.any()
    return front


def compared_front(variants: list[str], xs: np.ndarray, ys: np.ndarray, x_better: str, styles: Styles) -> np.ndarray:
    """The Pareto front among the rows compared with the baseline (every row but the baselines, which are
    labelled anyway): when separate beats every multi-task row on both axes, the trade-off among those rows is
    still drawn. Without such rows, the front of all rows."""
    others = np.array([styles.family(v) != "baseline" for v in variants], dtype=bool)
    if not others.any():
        return pareto_front(xs, ys, x_better)
    front = np.zeros(len(xs), dtype=bool)
    front[others] = pareto_front(xs[others], ys[others], x_better)
    return front


def staircase(xs: np.ndarray, ys: np.ndarray, pre: bool, per_segment: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Points spaced along the staircase through ``xs, ys`` (sorted by x; ``pre``: matplotlib's ``steps-pre``, the
    vertical step first), for the labels to avoid."""
    corners = []
    for (x0, y0), (x1, y1) in zip(zip(xs[:-1], ys[:-1]), zip(xs[1:], ys[1:])):
        corners += [(x0, y0), (x0, y1) if pre else (x1, y0)]
    corners = np.asarray(corners + [(xs[-1], ys[-1])], dtype=float)
    t = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    points = np.concatenate([a + t * (b - a) for a, b in zip(corners[:-1], corners[1:])] + [corners[-1:]])
    return points[:, 0], points[:, 1]


def _place_labels(fig: Figure, ax, labels: list[tuple[float, float, str]], xs: np.ndarray, ys: np.ndarray) -> None:
    """Label points without collisions: the figure is laid out first (constrained layout, legend beside the axes),
    then the labels are added and moved off each other and off every point (adjustText), with a thin leader line
    to their point. Adding them after the layout keeps a label that starts past the axes' edge from shrinking the
    axes."""
    if not labels:
        return
    from adjustText import adjust_text
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)  # adjustText measures the texts with the canvas's renderer
    fig.canvas.draw()
    fig.set_layout_engine("none")  # keep that layout while the labels move
    # each label starts just up and right of its point (clear of the marker), the leader line goes to the point
    points = np.array([(x, y) for x, y, _ in labels], dtype=float)
    starts = ax.transData.inverted().transform(ax.transData.transform(points) + np.array([6.0, 5.0]))
    texts = [ax.text(sx, sy, text, fontsize=LABEL_SIZE - 0.5, zorder=4, ha="left", va="bottom",
                     bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 0.6})
             for (sx, sy), (_, _, text) in zip(starts, labels)]  # a light backing keeps a label legible
    adjust_text(texts, x=xs, y=ys, target_x=points[:, 0], target_y=points[:, 1], ax=ax, expand=(1.3, 1.7),
                force_text=(0.4, 0.7), force_static=(0.6, 1.0), min_arrow_len=8, iter_lim=500,
                arrowprops={"arrowstyle": "-", "color": "0.4", "linewidth": 0.6})


def pareto_figure(lb: Leaderboard, x_column: str, x_better: str) -> Figure:
    """Score (Δm% when a separate row exists, else Avg) against a cost, ``pareto_throughput`` /
    ``pareto_memory``: a point per row in its family's colour and marker, the front of the multi-task rows
    (:func:`compared_front`) ringed and joined by its staircase, the legend right of the axes. Labels (placed by
    adjustText): every row up to ``LABEL_ALL_UP_TO`` rows, else only the front and the baselines."""
    score = lb.score_column
    table = lb.table[[score, x_column]].dropna()
    variants = list(table.index)
    xs, ys = table[x_column].to_numpy(dtype=float), table[score].to_numpy(dtype=float)
    front = compared_front(variants, xs, ys, x_better, lb.styles)
    fig = Figure(figsize=(7.8, 4.6), layout="constrained")
    ax = fig.subplots()
    for variant, x, y, on_front in zip(variants, xs, ys, front):
        style = family_style(lb.styles.family(variant))
        ax.plot(x, y, marker=style.marker, color=style.colour, markersize=8 if on_front else 6.5, linestyle="none",
                markeredgecolor="black" if on_front else "white", markeredgewidth=1.3 if on_front else 0.6,
                zorder=3)
    avoid_x, avoid_y = xs, ys
    if front.any():
        order = np.argsort(xs[front])
        # the boundary of the region the front dominates: a staircase, not straight segments
        ax.plot(xs[front][order], ys[front][order], color="grey", linestyle="--", zorder=2,
                drawstyle="steps-pre" if x_better == "max" else "steps-post")
        path_x, path_y = staircase(xs[front][order], ys[front][order], pre=x_better == "max")
        avoid_x, avoid_y = np.r_[xs, path_x], np.r_[ys, path_y]  # labels keep off the staircase too
    if score == "delta_m":
        ax.axhline(0.0, color="0.35", linestyle=":", linewidth=0.9, zorder=1)
    cost = COST_LABELS.get(x_column, x_column)
    if x_column == "peak_memory_mb":
        cost = f"peak memory (MB, {lb.memory_kind})"
    ax.set_xlabel(cost + (", higher is better" if x_better == "max" else ", lower is better"))
    ax.set_ylabel("Δm% vs separate (%)" if score == "delta_m" else "Avg of the primary scores (%)")
    ax.grid(alpha=0.3)
    ax.margins(0.08)
    every = len(variants) <= LABEL_ALL_UP_TO
    labelled = [(xs[i], ys[i], short_name(v, 40)) for i, v in enumerate(variants)
                if every or front[i] or lb.styles.family(v) == "baseline"]
    handles = family_handles(variants, lb.styles) + [
        Line2D([], [], color="grey", linestyle="--", marker="o", markerfacecolor="none", markeredgecolor="black",
               label="Pareto front (of the rows\nother than the baseline)")]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small", frameon=False)
    dropped = sorted(set(lb.table.index) - set(table.index))
    title = f"{lb.suite}: score vs {cost.split(' (')[0]} ({lb.split})"
    if dropped:
        title += "\n" + textwrap.shorten(f"not shown (no value): {', '.join(dropped)}", 110)
    ax.set_title(title, fontsize="medium")
    _place_labels(fig, ax, labelled, avoid_x, avoid_y)
    return fig


def plot_pareto(lb: Leaderboard, out_dir: Path, x_column: str, x_better: str) -> dict[str, Path]:
    """:func:`pareto_figure` saved as ``pareto_throughput`` (x: ``train_samples_per_s``) or ``pareto_memory``."""
    stem = "pareto_throughput" if x_column == "train_samples_per_s" else "pareto_memory"
    return save(pareto_figure(lb, x_column, x_better), out_dir, stem)
