"""Learned fusion coefficients (:func:`bench.report.records.fusion_coefficients`): a layer × task heatmap (or bars,
for task-wise coefficients) per fuse configuration."""

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

from bench.report.leaderboard import TRANSDUCTIVE_MARK
from bench.report.plots.common import save
from bench.report.style import Styles


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


def coefficient_groups(coefficients: dict[str, list[dict]], styles: Styles) -> list[list[str]]:
    """Variants grouped by identical coefficients (same seeds, same numbers): each group is one fuse stage.

    Every row built on a fuse stage carries that stage's coefficients (a strategy's fused row and the row it
    fine-tunes from it; two configurations that differ only after fusion reuse the cached stage), so grouping on
    the content draws each fuse configuration once without knowing which strategies or rows share stages.
    Variants are in leaderboard order (``styles``); the first names the figure."""
    groups: dict[str, list[str]] = {}
    for variant in sorted(coefficients, key=styles.sort_key):
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


def _coefficient_bars(matrix: CoefficientMatrix, colour: str) -> Figure:
    """Task-wise coefficients (one per task): bars of the mean in the row's ``colour``, error bars ± std over
    seeds."""
    tasks = matrix.tasks
    fig = Figure(figsize=(max(4.0, 1.4 + 0.6 * len(tasks)), 3.4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(tasks))
    yerr = matrix.std[0] if matrix.n > 1 else None
    bars = ax.bar(x, matrix.mean[0], yerr=yerr, capsize=3, color=colour, edgecolor="white")
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


def coefficient_figure(suite: str, group: list[str], runs: list[dict], styles: Styles) -> Figure:
    """The figure of one fuse configuration (``group``: the variants that share it, ``runs``: its seeds): a heatmap
    for layer-wise coefficients, bars for task-wise ones (a single row, ``layers == ["all"]``) in the colour
    ``styles`` gives the first variant."""
    matrix = coefficient_matrix(runs)
    fig = (_coefficient_bars(matrix, styles.colour(group[0])) if len(matrix.layers) == 1
           else _coefficient_heatmap(matrix))
    _set_coefficient_title(fig, suite, group, runs, matrix)
    return fig


def plot_coefficients(coefficients: dict[str, list[dict]], out_dir: Path, suite: str,
                      styles: Styles) -> dict[str, Path]:
    """One figure per fuse configuration with learned coefficients: ``coefficients_<first variant>.{png,pdf}``.

    Variants that carry the same coefficients (one fuse stage) share one figure (:func:`coefficient_groups`);
    variants without coefficients (data-free or closed-form fusion) have none."""
    paths: dict[str, Path] = {}
    for group in coefficient_groups(coefficients, styles):
        stem = "coefficients_" + _slug(group[0])
        if stem + "_png" in paths:  # two names that slug alike: keep both figures
            stem += f"_{zlib.crc32(group[0].encode()):08x}"
        paths |= save(coefficient_figure(suite, group, coefficients[group[0]], styles), out_dir, stem)
    return paths
