"""Training curves of a board's rows: task-weight trajectories and per-task losses over steps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bench.report.plots.common import LINESTYLES, MARKERS, save
from bench.report.style import colour, sort_key


def _y_label(runs: list[dict], key: str) -> str:
    """The y label of a trajectory plot: for weights, what the weighting that logged them says they are."""
    if key == "loss":
        return "training loss"
    if key != "weights":
        return key
    labels = {r.get("weights_label") for r in runs} - {None}
    return labels.pop() if len(labels) == 1 else r"task weight ($\lambda_t$, or the aggregator's)"


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
        ax.set_ylabel(_y_label(runs, key))
        ax.grid(alpha=0.3)
        ax.legend(title="task", fontsize="x-small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    what = "task-weight trajectories" if key == "weights" else f"per-task {_y_label([], key)}"
    fig.suptitle(f"{suite}: {what} (mean over seeds, band = min..max)")
    return save(fig, out_dir, "trajectories" if key == "weights" else "loss_curves")

