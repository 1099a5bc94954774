"""Plots of a leaderboard (matplotlib, Agg via plain ``Figure`` objects, PNG + PDF).

Every plot colours a variant by its strategy (the name before ``[``) from the colour-blind-safe Okabe–Ito palette,
the same colour in every plot; tuned variants of one strategy share its colour and differ by hatch / marker.
Learned fusion coefficients (:func:`bench.report.records.fusion_coefficients`) get a layer × task heatmap per fuse
configuration (:func:`plot_coefficients`).
"""

from __future__ import annotations

import json
import math
import re
import textwrap
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from bench.record import base_strategy
from bench.report.leaderboard import TRANSDUCTIVE_MARK, Leaderboard
from bench.report.style import colour, sort_key

HATCHES = ("", "//", "..", "xx", "\\\\", "++")
MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--", ":", "-.")


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
    return _save(fig, out_dir, "trajectories" if key == "weights" else "loss_curves")


# ----------------------------------------------------------------------------------------------- fusion coefficients


@dataclass(frozen=True)
class CoefficientMatrix:
    """One fuse configuration's learned coefficients over its seeds: ``mean`` and ``std`` are layers × tasks."""

    layers: list[str]
    tasks: list[str]
    mean: np.ndarray
    std: np.ndarray  # sample std over seeds (ddof=1, as in the leaderboards); NaN with one seed
    n: int


def coefficient_matrix(runs: list[dict]) -> CoefficientMatrix:
    """Mean and std over seeds of one variant's coefficient sets (one per seed, from ``fusion_coefficients``).

    Seeds are aligned by layer and task *name*, not position; a (layer, task) a seed lacks is missing for that seed
    (NaN), never a 0 that would drag the mean down."""
    layers = list(dict.fromkeys(layer for run in runs for layer in run["layers"]))
    tasks = list(dict.fromkeys(task for run in runs for task in run["tasks"]))
    row_of = {layer: i for i, layer in enumerate(layers)}
    col_of = {task: j for j, task in enumerate(tasks)}
    stack = np.full((len(runs), len(layers), len(tasks)), np.nan)
    for k, run in enumerate(runs):
        rows = [row_of[layer] for layer in run["layers"]]
        cols = [col_of[task] for task in run["tasks"]]
        stack[k][np.ix_(rows, cols)] = np.asarray(run["values"], dtype=float)
    with warnings.catch_warnings():  # all-NaN cells (a pair no seed has) stay NaN without a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(stack, axis=0)
        std = np.nanstd(stack, axis=0, ddof=1) if len(runs) > 1 else np.full(mean.shape, np.nan)
    return CoefficientMatrix(layers, tasks, mean, std, len(runs))


def _content_key(runs: list[dict]) -> str:
    ordered = sorted(runs, key=lambda r: str(r["seed"]))
    return json.dumps([[str(r["seed"]), r["layers"], r["tasks"], r["values"]] for r in ordered])


def coefficient_groups(coefficients: dict[str, list[dict]]) -> list[list[str]]:
    """Variants grouped by identical coefficients (same seeds, same numbers): each group is one fuse stage.

    Every row built on a fuse stage carries that stage's coefficients (a strategy's fused row and the row it
    fine-tunes from it; two configurations that differ only after fusion reuse the cached stage), so grouping on
    the content draws each fuse configuration once without knowing which strategies or rows share stages.
    Variants are in leaderboard order; the first names the figure."""
    groups: dict[str, list[str]] = {}
    for variant in sorted(coefficients, key=sort_key):
        if coefficients[variant]:
            groups.setdefault(_content_key(coefficients[variant]), []).append(variant)
    return list(groups.values())


def short_layer_names(layers: list[str], width: int = 32) -> list[str]:
    """Readable row labels for parameter names.

    The dotted prefix every name shares is dropped (``backbone.``), unless a block index would then start the label
    (``blocks.3.1.conv`` keeps ``blocks``). When any label is longer than ``width``, every label abbreviates the
    inner parts of its module path to 3 letters (parts longer than 4), keeping the top-level module, indices and
    the last two parts (module and parameter) whole, so the rows read alike:
    ``encoder.layer.11.attention.output.dense.weight`` -> ``encoder.lay.11.att.out.dense.weight``."""
    parts = [layer.split(".") for layer in layers]
    common = 0
    if len(parts) > 1:
        while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
            common += 1
        while common > 0 and any(p[common].isdigit() for p in parts):
            common -= 1
    parts = [p[common:] for p in parts]
    if any(len(".".join(p)) > width for p in parts):
        parts = [[q if i == 0 or q.isdigit() or len(q) <= 4 or i >= len(p) - 2 else q[:3] for i, q in enumerate(p)]
                 for p in parts]
    return [".".join(p) for p in parts]


def tick_step(n_labels: int, axis_inches: float, fontsize: float = 6.0) -> int:
    """Label every k-th row so that labels of ``fontsize`` points do not overlap on an axis this tall."""
    fits = max(1, int(axis_inches * 72 / (1.25 * fontsize)))
    return max(1, math.ceil(n_labels / fits))


def _slug(name: str, limit: int = 100) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")
    if len(slug) > limit:  # many parameters in a row name: keep the start readable, the hash keeps it unique
        slug = f"{slug[:limit]}_{zlib.crc32(name.encode()):08x}"
    return slug


def _set_coefficient_title(fig: Figure, suite: str, group: list[str], runs: list[dict],
                           matrix: CoefficientMatrix) -> None:
    """Suptitle: method, the rows sharing this fuse stage, seeds, and the transductive warning on its own line;
    wrapped to the figure's width (about 13 characters per inch at the title's size)."""
    methods = ", ".join(sorted({str(r["method"]) for r in runs}))
    seeds = f"mean over {matrix.n} seeds" if matrix.n > 1 else "1 seed"
    shared = f"; same fuse stage as {', '.join(group[1:])}" if len(group) > 1 else ""
    width = max(40, int(13 * fig.get_figwidth()))
    lines = [textwrap.fill(f"{suite}: {methods} fusion coefficients of {group[0]} ({seeds}{shared})", width)]
    if any(r["transductive"] for r in runs):
        lines.append(textwrap.fill(f"{TRANSDUCTIVE_MARK} transductive: adapted on unlabeled test inputs", width))
    fig.suptitle("\n".join(lines), fontsize="medium")


def _coefficient_norm(values: np.ndarray) -> tuple[str, float, float]:
    """Colormap and limits: diverging and centred on 0 when coefficients change sign (a negative coefficient
    subtracts a task vector), else sequential over the observed range."""
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo < 0 < hi:
        bound = max(-lo, hi)
        return "RdBu_r", -bound, bound
    if hi - lo < 1e-12:  # all equal: a flat colour, but a valid colorbar
        lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
    return "viridis", lo, hi


def _coefficient_bars(matrix: CoefficientMatrix, variant: str) -> Figure:
    """Task-wise coefficients (one per task): bars of the mean, error bars ± std over seeds."""
    tasks = matrix.tasks
    fig = Figure(figsize=(max(4.0, 1.4 + 0.6 * len(tasks)), 3.4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(tasks))
    yerr = matrix.std[0] if matrix.n > 1 else None
    bars = ax.bar(x, matrix.mean[0], yerr=yerr, capsize=3, color=colour(variant), edgecolor="white")
    ax.bar_label(bars, fmt="%.3g", padding=2, fontsize="x-small")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(x, tasks, rotation=45 if len(tasks) > 4 else 0, ha="right" if len(tasks) > 4 else "center")
    ax.set_ylabel("coefficient per task" + (" (± std over seeds)" if matrix.n > 1 else ""))
    ax.grid(axis="y", alpha=0.3)
    return fig


def _coefficient_heatmap(matrix: CoefficientMatrix) -> Figure:
    """Layer-wise coefficients: layers top to bottom (model order) × tasks; with several seeds, a second panel
    shows the std over seeds, so a pattern the seeds disagree on is visible as such."""
    n_layers, n_tasks = matrix.mean.shape
    with_std = matrix.n > 1
    labels = short_layer_names(matrix.layers)
    axis_height = min(max(1.4, 0.11 * n_layers), 13.5)  # ~8 pt per row up to ~120 layers, then ticks thin out
    panel = max(1.4, 0.45 * n_tasks)
    label_width = 0.06 * max(len(label) for label in labels)
    fig = Figure(figsize=(label_width + (panel + 1.0) * (2 if with_std else 1) + 0.4, axis_height + 1.6),
                 layout="constrained")
    axes = fig.subplots(1, 2 if with_std else 1, squeeze=False, sharey=True).ravel()
    cmap, vmin, vmax = _coefficient_norm(matrix.mean)
    image = axes[0].imshow(matrix.mean, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax)
    fig.colorbar(image, ax=axes[0], label="coefficient", fraction=0.08, pad=0.02)
    axes[0].set_title("mean over seeds" if with_std else "coefficients", fontsize="small")
    if n_layers * n_tasks <= 48:  # small enough to print the numbers
        for (i, j), value in np.ndenumerate(matrix.mean):
            if np.isfinite(value):
                shade = (value - vmin) / (vmax - vmin)  # white text on the colormap's dark ends
                dark = shade < 0.5 if cmap == "viridis" else abs(shade - 0.5) > 0.3
                axes[0].text(j, i, f"{value:.2g}", ha="center", va="center", fontsize="x-small",
                             color="white" if dark else "black")
    if with_std:
        finite = matrix.std[np.isfinite(matrix.std)]
        top = float(finite.max()) if finite.size else 0.0
        spread = axes[1].imshow(matrix.std, aspect="auto", interpolation="nearest", cmap="Greys", vmin=0.0,
                                vmax=top if top > 0 else 1.0)
        fig.colorbar(spread, ax=axes[1], label="std over seeds", fraction=0.08, pad=0.02)
        axes[1].set_title(f"std over {matrix.n} seeds (max {top:.2g})", fontsize="small")
    step = tick_step(n_layers, axis_height)
    axes[0].set_yticks(np.arange(0, n_layers, step), labels[::step], fontsize=6)
    axes[0].set_ylabel(f"layer ({n_layers}" + (f"; one label per {step} rows)" if step > 1 else ")"))
    for ax in axes:
        ax.set_xticks(np.arange(n_tasks), matrix.tasks, rotation=45 if n_tasks > 3 else 0,
                      ha="right" if n_tasks > 3 else "center", fontsize="small")
        ax.set_xlabel("task")
    return fig


def coefficient_figure(suite: str, group: list[str], runs: list[dict]) -> Figure:
    """The figure of one fuse configuration (``group``: the variants that share it, ``runs``: its seeds): a heatmap
    for layer-wise coefficients, bars for task-wise ones (a single row, ``layers == ["all"]``)."""
    matrix = coefficient_matrix(runs)
    fig = _coefficient_bars(matrix, group[0]) if len(matrix.layers) == 1 else _coefficient_heatmap(matrix)
    _set_coefficient_title(fig, suite, group, runs, matrix)
    return fig


def plot_coefficients(coefficients: dict[str, list[dict]], out_dir: Path, suite: str) -> dict[str, Path]:
    """One figure per fuse configuration with learned coefficients: ``coefficients_<first variant>.{png,pdf}``.

    Variants that carry the same coefficients (one fuse stage) share one figure (:func:`coefficient_groups`);
    variants without coefficients (data-free or closed-form fusion) have none."""
    paths: dict[str, Path] = {}
    for group in coefficient_groups(coefficients):
        stem = "coefficients_" + _slug(group[0])
        if stem + "_png" in paths:  # two names that slug alike: keep both figures
            stem += f"_{zlib.crc32(group[0].encode()):08x}"
        paths |= _save(coefficient_figure(suite, group, coefficients[group[0]]), out_dir, stem)
    return paths


def write_plots(lb: Leaderboard, trajectories: dict[str, list[dict]], out_dir: Path,
                coefficients: dict[str, list[dict]] | None = None) -> dict[str, Path]:
    """All plots of one leaderboard; returns name -> path (``bars_test_png``, ``pareto_memory_pdf``...).

    ``coefficients`` (:func:`bench.report.records.fusion_coefficients`) adds the fusion-coefficient figures of the
    rows shown."""
    paths = plot_bars(lb, out_dir)
    paths |= plot_pareto(lb, out_dir, "train_samples_per_s", "max")
    paths |= plot_pareto(lb, out_dir, "peak_memory_mb", "min")
    shown = {v: t for v, t in trajectories.items() if v in lb.table.index}
    paths |= plot_trajectories(shown, out_dir, lb.suite, "weights")
    paths |= plot_trajectories(shown, out_dir, lb.suite, "loss")
    shown_coefficients = {v: c for v, c in (coefficients or {}).items() if v in lb.table.index}
    paths |= plot_coefficients(shown_coefficients, out_dir, lb.suite)
    return paths
