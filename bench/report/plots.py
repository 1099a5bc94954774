"""Plots of a leaderboard (matplotlib, Agg via plain ``Figure`` objects, PNG + PDF).

Every plot colours a variant by its strategy (the name before ``[``) from the colour-blind-safe Okabe–Ito palette,
the same colour in every plot; tuned variants of one strategy share its colour and differ by hatch / marker.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bench.report.leaderboard import Leaderboard, sort_key
from bench.report.records import base_strategy

# Okabe & Ito (2008), "Color Universal Design".
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7"}
STRATEGY_COLOURS = {
    "separate": OKABE_ITO["black"],
    "naive_mtl": OKABE_ITO["orange"],
    "fused": OKABE_ITO["sky_blue"],
    "fuse_then_joint": OKABE_ITO["blue"],
    "uncertainty": OKABE_ITO["bluish_green"],
    "gradnorm": OKABE_ITO["vermillion"],
}
SPARE_COLOURS = (OKABE_ITO["reddish_purple"], OKABE_ITO["yellow"])
HATCHES = ("", "//", "..", "xx", "\\\\", "++")
MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--", ":", "-.")


def colour(variant: str) -> str:
    """The fixed colour of a variant's strategy (unknown strategies: a stable pick from the spare colours)."""
    base = base_strategy(variant)
    if base in STRATEGY_COLOURS:
        return STRATEGY_COLOURS[base]
    return SPARE_COLOURS[zlib.crc32(base.encode()) % len(SPARE_COLOURS)]


def variant_index(variant: str, variants: list[str]) -> int:
    """Position of ``variant`` among the variants of its strategy (0 for the plain one): picks hatch/marker."""
    same = sorted((v for v in variants if base_strategy(v) == base_strategy(variant)), key=sort_key)
    return same.index(variant) if variant in same else 0


def _save(fig: Figure, out_dir: Path, stem: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=metadata)
        paths[f"{stem}_{ext}"] = path
    return paths


def error_bars(lb: Leaderboard, column: str) -> tuple[np.ndarray, list[str]]:
    """Per variant (lower, upper) error-bar lengths of ``column`` and what each bar is: the bootstrap interval
    where the row has one (asymmetric), else ± std over seeds (0 when neither exists)."""
    table = lb.table
    n = len(table)
    bars = np.zeros((2, n))
    kinds = []
    means = table[column].to_numpy(dtype=float) if column in table else np.full(n, np.nan)
    lo = table[column + ":lo"].to_numpy(dtype=float) if column + ":lo" in table else np.full(n, np.nan)
    hi = table[column + ":hi"].to_numpy(dtype=float) if column + ":hi" in table else np.full(n, np.nan)
    std = table[column + ":std"].to_numpy(dtype=float) if column + ":std" in table else np.full(n, np.nan)
    for i in range(n):
        if not (math.isnan(lo[i]) or math.isnan(hi[i]) or math.isnan(means[i])):
            bars[:, i] = [max(0.0, means[i] - lo[i]), max(0.0, hi[i] - means[i])]
            kinds.append("interval")
        elif not math.isnan(std[i]):
            bars[:, i] = std[i]
            kinds.append("std")
        else:
            kinds.append("none")
    return bars, kinds


def plot_bars(lb: Leaderboard, out_dir: Path) -> dict[str, Path]:
    """One panel per task: the primary metric of every variant, error bars = the row's bootstrap interval
    (asymmetric) when it has predictions, else ± std over seeds; the title says which."""
    variants = list(lb.table.index)
    tasks = list(lb.tasks)
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    panel_width = max(3.0, 1.5 + 0.35 * len(variants))
    fig = Figure(figsize=(panel_width * cols, 3.2 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    x = np.arange(len(variants))
    shown_kinds: set[str] = set()
    for ax, task in zip(axes, tasks):
        metric = lb.tasks[task]["primary"]
        column = f"{task}/{metric}"
        means = lb.table[column].to_numpy(dtype=float) if column in lb.table else np.full(len(variants), np.nan)
        bars, kinds = error_bars(lb, column)
        shown_kinds |= set(kinds) - {"none"}
        for i, variant in enumerate(variants):
            ax.bar(x[i], means[i], yerr=bars[:, i:i + 1], capsize=3, color=colour(variant),
                   hatch=HATCHES[variant_index(variant, variants) % len(HATCHES)], edgecolor="white",
                   label=variant)
        unit = "%" if lb.tasks[task]["metrics"].get(metric) == "max" else "raw"
        ax.set_title(task)
        ax.set_ylabel(f"{lb.split} {metric} ({unit})")
        ax.set_xticks(x, [str(i + 1) for i in x])
        ax.set_xlabel("variant (see legend)")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, [f"{i + 1}: {v}" for i, v in enumerate(labels)], loc="outside lower center",
               ncols=min(3, len(labels)), fontsize="small", frameon=False)
    level = f"{100 * lb.options.level:g}%"
    if shown_kinds == {"interval"}:
        what = f"mean over seeds, error bars: {level} bootstrap interval"
    elif shown_kinds == {"interval", "std"}:
        what = f"mean over seeds, error bars: {level} bootstrap interval; rows without predictions: ± std"
    else:
        what = "mean ± std over seeds"
    fig.suptitle(f"{lb.suite}: primary metric per task ({lb.split}, {what})")
    return _save(fig, out_dir, f"bars_{lb.split}")


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


def plot_pareto(lb: Leaderboard, out_dir: Path, x_column: str, x_better: str) -> dict[str, Path]:
    """Score (Δm% when a separate row exists, else Avg) against a cost; the Pareto front marked."""
    score = lb.score_column
    table = lb.table[[score, x_column]].dropna()
    variants = list(lb.table.index)
    xs, ys = table[x_column].to_numpy(dtype=float), table[score].to_numpy(dtype=float)
    front = pareto_front(xs, ys, x_better)
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for (variant, row), on_front in zip(table.iterrows(), front):
        ax.scatter(row[x_column], row[score], s=70, color=colour(variant), label=variant, zorder=3,
                   marker=MARKERS[variant_index(variant, variants) % len(MARKERS)],
                   edgecolors="black" if on_front else "none", linewidths=1.5)
        ax.annotate(variant, (row[x_column], row[score]), textcoords="offset points", xytext=(5, 5),
                    fontsize="x-small")
    if front.any():
        order = np.argsort(xs[front])
        # the boundary of the region the front dominates: a staircase, not straight segments
        ax.plot(xs[front][order], ys[front][order], color="grey", linestyle="--", zorder=2, label="Pareto front",
                drawstyle="steps-pre" if x_better == "max" else "steps-post")
    labels = {"train_samples_per_s": "training throughput (samples/s)",
              "peak_memory_mb": f"peak memory (MB, {lb.memory_kind})"}
    ax.set_xlabel(labels.get(x_column, x_column))
    ax.set_ylabel("Δm% vs separate (%)" if score == "delta_m" else "average primary score (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", loc="best")
    dropped = sorted(set(variants) - set(table.index))
    title = f"{lb.suite}: score vs {labels.get(x_column, x_column).split(' (')[0]} ({lb.split})"
    ax.set_title(title + (f"\nnot shown (no value): {', '.join(dropped)}" if dropped else ""), fontsize="medium")
    stem = "pareto_throughput" if x_column == "train_samples_per_s" else "pareto_memory"
    return _save(fig, out_dir, stem)


def _y_label(variant: str, key: str) -> str:
    if key == "loss":
        return "training loss"
    if key != "weights":
        return key
    if "gradnorm" in variant:
        return "GradNorm weight $w_t$"
    if "uncertainty" in variant:
        return r"uncertainty weight (from $\sigma_t^2$)"
    return r"task weight ($\lambda_t$, or the aggregator's)"


def _constant(runs: list[dict], key: str) -> bool:
    # NaN: no weight recorded (step 0, or an aggregator that is not a weighted sum, such as GradDrop)
    values = [v for t in runs for series in t[key].values() for v in series if v is not None and v == v]
    # constant up to float noise (DualProj without conflict returns the mean's 1/T ± 1e-8): nothing to plot
    return not values or max(values) - min(values) < 1e-6 * max(1.0, max(abs(v) for v in values))


def plot_trajectories(trajectories: dict[str, list[dict]], out_dir: Path, suite: str,
                      key: str = "weights") -> dict[str, Path]:
    """Per variant, each task's ``key`` series over training steps: mean over seeds, band = min..max.

    ``weights`` (λ / σ²-derived / GradNorm w) -> trajectories.{png,pdf}, skipping constant ones (equal weighting);
    ``loss`` -> loss_curves.{png,pdf}.
    """
    panels = []
    for variant in sorted(trajectories, key=sort_key):
        runs = [t for t in trajectories[variant] if isinstance(t.get(key), dict) and t[key]]
        if runs and not (key == "weights" and _constant(runs, key)):
            panels.append((variant, runs))
    if not panels:
        return {}
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    tasks = sorted({task for _, runs in panels for t in runs for task in t[key]})
    for ax, (variant, runs) in zip(axes, panels):
        for task in [t for t in tasks if any(t in r[key] for r in runs)]:
            series = [np.asarray(r[key][task], dtype=float) for r in runs if task in r[key]]
            length = min(len(s) for s in series)
            steps = np.asarray(next(r["step"] for r in runs if task in r[key]), dtype=float)[:length]
            stack = np.stack([s[:length] for s in series])
            i = tasks.index(task)
            ax.plot(steps, stack.mean(axis=0), color=colour(variant), linestyle=LINESTYLES[i % len(LINESTYLES)],
                    marker=MARKERS[i % len(MARKERS)], markevery=max(1, length // 6), markersize=4, label=task)
            if len(series) > 1:
                ax.fill_between(steps, stack.min(axis=0), stack.max(axis=0), color=colour(variant),
                                alpha=0.15, linewidth=0)
        ax.set_title(f"{variant} (n={len(runs)})", fontsize="medium")
        ax.set_xlabel("training step")
        ax.set_ylabel(_y_label(variant, key))
        ax.grid(alpha=0.3)
        ax.legend(title="task", fontsize="x-small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    what = "task-weight trajectories" if key == "weights" else f"per-task {_y_label('', key)}"
    fig.suptitle(f"{suite}: {what} (mean over seeds, band = min..max)")
    return _save(fig, out_dir, "trajectories" if key == "weights" else "loss_curves")


def write_plots(lb: Leaderboard, trajectories: dict[str, list[dict]], out_dir: Path) -> dict[str, Path]:
    """All plots of one leaderboard; returns name -> path (``bars_test_png``, ``pareto_memory_pdf``...)."""
    paths = plot_bars(lb, out_dir)
    paths |= plot_pareto(lb, out_dir, "train_samples_per_s", "max")
    paths |= plot_pareto(lb, out_dir, "peak_memory_mb", "min")
    shown = {v: t for v, t in trajectories.items() if v in lb.table.index}
    paths |= plot_trajectories(shown, out_dir, lb.suite, "weights")
    paths |= plot_trajectories(shown, out_dir, lb.suite, "loss")
    return paths
