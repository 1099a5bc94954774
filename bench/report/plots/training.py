"""Training curves of a board's rows: per-task losses and task-weight trajectories, over epochs.

One panel per row. A row's curves come from every training stage it used, in order (``stages`` in the trajectory
dicts, :func:`bench.report.provenance.stage_curves`): a ``separate`` row shows each task's own fine-tune, a
``fuse_then_joint`` row its fine-tunes (epochs 0..E) and then its joint phase (E..2E, after a dashed line). The
x axis is epochs of each stage (steps / steps per epoch), so rows trained for the same epochs line up whatever their
batch counts; each task has one colour and marker in every panel, named once in the figure's legend. Trajectory dicts
without ``stages`` (older callers) are drawn as one stage over training steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from bench.report.plots.common import LINESTYLES, MARKERS, save
from bench.report.style import Styles

# Okabe–Ito without yellow (unreadable on white), then matplotlib's tab10: one colour per task
TASK_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8c564b", "#7f7f7f",
                "#bcbd22")
PHASE_NAMES = {"finetune": "fine-tunes", "joint": "joint", "train": ""}
MAX_MARKED_POINTS = 16  # up to this many logged points every one gets a marker, then about 8 per line


def _y_label(runs: list[dict], key: str) -> str:
    """The y label of a trajectory plot: for weights, what the weighting that logged them says they are."""
    if key == "loss":
        return "training loss"
    if key != "weights":
        return key
    labels = {r.get("weights_label") for r in runs} - {None}
    labels |= {c.get("weights_label") for r in runs for c in r.get("stages") or [] if len(c.get("tasks", [])) > 1}
    labels -= {None}
    return labels.pop() if len(labels) == 1 else r"task weight ($\lambda_t$, or the aggregator's)"


def _values(series) -> list[float]:
    return [v for v in series if isinstance(v, (int, float)) and v == v]  # NaN: nothing logged at that point


def _constant(curves: list[dict], key: str) -> bool:
    # NaN: no weight recorded (step 0, or an aggregator that is not a weighted sum, such as GradDrop)
    values = [v for c in curves for series in c[key].values() for v in _values(series)]
    # constant up to float noise (DualProj without conflict returns the mean's 1/T ± 1e-8): nothing to plot
    return not values or max(values) - min(values) < 1e-6 * max(1.0, max(abs(v) for v in values))


def _curves(run: dict, key: str) -> list[dict]:
    """The training-stage curves of one seed of a row that have ``key`` (weights: multi-task stages only, a
    single-task fine-tune's weight is 1 by construction)."""
    curves = run.get("stages")
    if not curves:  # a trajectory dict without per-stage curves: its own series, over steps
        curves = [{"stage": "train", "tasks": list(run.get(key) or {}), "step": run.get("step") or [],
                   "loss": run.get("loss") or {}, "weights": run.get("weights") or {}, "steps_per_epoch": None}]
    out = [c for c in curves if isinstance(c.get(key), dict) and c[key] and c.get("step")]
    if key == "weights":
        out = [c for c in out if len(c.get("tasks") or c[key]) > 1]
    return out


@dataclass
class Phase:
    """Consecutive training stages of one kind (a row's fine-tunes, its joint phase), per seed."""

    stage: str
    seeds: list[list[dict]] = field(default_factory=list)  # per seed, the phase's curves


def _phases(runs: list[dict], key: str) -> list[Phase]:
    """The row's phases, aligned over seeds by position (every seed of a row ran the same stages)."""
    phases: list[Phase] = []
    for run in runs:
        groups: list[tuple[str, list[dict]]] = []
        for curve in _curves(run, key):
            if groups and groups[-1][0] == curve["stage"]:
                groups[-1][1].append(curve)
            else:
                groups.append((curve["stage"], [curve]))
        for i, (stage, curves) in enumerate(groups):
            if i == len(phases):
                phases.append(Phase(stage))
            if phases[i].stage == stage:
                phases[i].seeds.append(curves)
    return phases


def _x(curve: dict, epochs: bool) -> np.ndarray:
    steps = np.asarray(curve["step"], dtype=float)
    return steps / curve["steps_per_epoch"] if epochs else steps


def _length(phase: Phase, epochs: bool) -> float:
    return max((float(_x(c, epochs)[-1]) for curves in phase.seeds for c in curves), default=0.0)


def plot_trajectories(trajectories: dict[str, list[dict]], out_dir: Path, suite: str,
                      key: str = "weights", *, styles: Styles) -> dict[str, Path]:
    """Per row, each task's ``key`` series over its training stages: mean over seeds, band = min..max.

    ``weights`` (λ / σ²-derived / GradNorm w, multi-task stages only) -> trajectories.{png,pdf}, skipping rows whose
    weights never move (equal weighting); ``loss`` -> loss_curves.{png,pdf}.
    """
    fig = trajectory_figure(trajectories, suite, key, styles=styles)
    if fig is None:
        return {}
    return save(fig, out_dir, "trajectories" if key == "weights" else "loss_curves")


def trajectory_figure(trajectories: dict[str, list[dict]], suite: str, key: str = "weights", *,
                      styles: Styles) -> Figure | None:
    """The figure :func:`plot_trajectories` saves (None: no row has ``key`` curves to draw), its panels in table
    order (``styles``). Each task's lines carry the task's name as their ``gid``."""
    panels = []
    for variant in sorted(trajectories, key=styles.sort_key):
        runs = [t for t in trajectories[variant] if _curves(t, key)]
        phases = _phases(runs, key)
        curves = [c for p in phases for seed in p.seeds for c in seed]
        if curves and not (key == "weights" and _constant(curves, key)):
            panels.append((variant, runs, phases))
    if not panels:
        return None
    every = [c for _, _, phases in panels for p in phases for seed in p.seeds for c in seed]
    epochs = all(c.get("steps_per_epoch") for c in every)  # one unit for the whole figure
    tasks = list(dict.fromkeys(t for c in every for t in c[key]))
    style = {t: (TASK_COLOURS[i % len(TASK_COLOURS)], MARKERS[i % len(MARKERS)],
                 LINESTYLES[(i // len(TASK_COLOURS)) % len(LINESTYLES)]) for i, t in enumerate(tasks)}
    values = [v for c in every for series in c[key].values() for v in _values(series)]
    log = key == "loss" and bool(values) and min(values) > 0 and max(values) / min(values) > 30

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.1 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=key == "loss").ravel()
    for ax, (variant, runs, phases) in zip(axes, panels):
        offset = 0.0
        for n, phase in enumerate(phases):
            if n:
                ax.axvline(offset, color="0.6", linestyle="--", linewidth=0.8, zorder=0)
            name = PHASE_NAMES.get(phase.stage, phase.stage)
            if name and len(phases) > 1:
                ax.annotate(name, (offset, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                            textcoords="offset points", ha="left", va="top", fontsize="x-small", color="0.35")
            for task in tasks:
                _draw(ax, phase, task, key, epochs, offset, style[task])
            offset += _length(phase, epochs)
        pad = 0.03 * max(offset, 1e-9)  # a point logged at the last step stays whole
        ax.set_xlim(-pad, offset + pad)
        ax.xaxis.set_major_locator(MaxNLocator(integer=offset >= 1 or not epochs))
        ax.set_title(f"{variant} (n={len(runs)})", fontsize="medium")
        ax.set_xlabel("epoch" if epochs else "training step")
        ax.set_ylabel(_y_label(runs, key))
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, marker=m, linestyle=ls, markersize=4, label=t)
               for t, (c, m, ls) in style.items()]
    fig.legend(handles=handles, title="task", loc="outside lower center", ncols=min(len(handles), 6),
               fontsize="small", title_fontsize="small", frameon=False)
    what = "task-weight trajectories" if key == "weights" else f"per-task {_y_label([], key)}"
    where = ("fine-tunes, then the joint phase after the dashed line" if any(len(p) > 1 for _, _, p in panels)
             else "every training stage")
    title = (f"{suite}: {what} over {'epochs' if epochs else 'steps'} of {where} "
             f"(mean over seeds, band = min..max)")
    points = max((len(_values(series)) for c in every for series in c[key].values()), default=0)
    if points <= 1:  # the trainer logs every train.log_every steps and at the end of a stage
        title += ("\none logged point per stage: every stage ran fewer steps than train.log_every; a lower "
                  "train.log_every (with force=true, which retrains) draws curves")
    fig.suptitle(title, fontsize="medium")
    return fig


def _draw(ax, phase: Phase, task: str, key: str, epochs: bool, offset: float, style: tuple) -> None:
    """One task's mean line (band = min..max over seeds) in one phase: from the stage of each seed that has it."""
    found = [next((c for c in curves if task in c[key]), None) for curves in phase.seeds]
    found = [c for c in found if c is not None]
    if not found:
        return
    series = [np.asarray([v if isinstance(v, (int, float)) else np.nan for v in c[key][task]], dtype=float)
              for c in found]
    length = min(min(len(s) for s in series), min(len(c["step"]) for c in found))
    x = offset + _x(found[0], epochs)[:length]
    stack = np.stack([s[:length] for s in series])
    colour, marker, linestyle = style
    shown = int(np.isfinite(stack).any(axis=0).sum())
    every = 1 if shown <= MAX_MARKED_POINTS else max(1, length // 8)
    valid = np.isfinite(stack)
    count = valid.sum(axis=0)
    mean = np.where(count > 0, np.where(valid, stack, 0.0).sum(axis=0) / np.maximum(count, 1), np.nan)
    ax.plot(x, mean, color=colour, linestyle=linestyle, marker=marker, markevery=every, markersize=4, linewidth=1.2,
            gid=task)
    if len(series) > 1:
        low = np.where(count > 0, np.where(valid, stack, np.inf).min(axis=0), np.nan)
        high = np.where(count > 0, np.where(valid, stack, -np.inf).max(axis=0), np.nan)
        ax.fill_between(x, low, high, color=colour, alpha=0.15, linewidth=0)
