"""Figures of the cross-suite report (:mod:`bench.report.across`), PNG + PDF, drawn on plain matplotlib ``Figure``
objects (no pyplot state):

* ``across_iqm``: IQM and mean of the normalised scores per method with their stratified bootstrap intervals;
* ``across_profiles``: performance profiles (fraction of runs with score > τ) with their bands;
* ``across_improvement``: P(row > column) for every pair, or the two bars of ``compare=a,b``;
* ``across_cd``: the critical-difference diagram (scikit-posthocs) of the average ranks, with Demšar's CD.

Methods keep the colours of the leaderboard plots (the report's ``styles``,
:meth:`bench.report.style.Styles.colour`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from bench.report.plots.common import save
from bench.report.style import Styles

__all__ = ["write_figures"]

LINESTYLES = ("-", "--", "-.", ":")


def _colours(methods: list[str], styles: Styles) -> dict[str, str]:
    """The leaderboard colour of each method; methods of one row kind (``naive_mtl[...]``) that would share a
    colour keep it and differ by line style / marker in the figures that need it."""
    return {m: styles.colour(m) for m in methods}


def _linestyles(methods: list[str], styles: Styles) -> dict[str, str]:
    seen: dict[str, int] = {}
    out = {}
    for m in methods:
        c = styles.colour(m)
        out[m] = LINESTYLES[seen.get(c, 0) % len(LINESTYLES)]
        seen[c] = seen.get(c, 0) + 1
    return out


def plot_iqm(report) -> Figure:
    methods = report.methods
    table = report.summary.set_index("method").loc[methods]
    colours = _colours(methods, report.styles)
    pct = f"{report.level * 100:g}%"
    fig = Figure(figsize=(9, 0.5 * len(methods) + 1.6))
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(methods))[::-1]
    for ax, key, title in zip(axes, ("iqm", "mean"), ("IQM", "Mean")):
        point = table[key].to_numpy(float)
        lo, hi = table[f"{key}_lo"].to_numpy(float), table[f"{key}_hi"].to_numpy(float)
        for i, m in enumerate(methods):
            if math.isfinite(lo[i]) and math.isfinite(hi[i]):
                ax.barh(y[i], hi[i] - lo[i], left=lo[i], height=0.55, color=colours[m], alpha=0.35, lw=0)
            ax.plot([point[i]] * 2, [y[i] - 0.3, y[i] + 0.3], color=colours[m], lw=2.5)
        ax.axvline(1.0, color="0.4", ls="--", lw=1)
        ax.set_title(f"{title} ({pct} CI)")
        ax.set_xlabel(f"normalised score ({report.baseline} = 1)")
        ax.grid(axis="x", alpha=0.3)
        span = np.nanmax(np.r_[hi, point, 1.0]) - np.nanmin(np.r_[lo, point, 1.0])
        ax.set_xlim(np.nanmin(np.r_[lo, point, 1.0]) - 0.08 * span, np.nanmax(np.r_[hi, point, 1.0]) + 0.08 * span)
    axes[0].set_yticks(y, methods)
    axes[0].set_ylim(-0.6, len(methods) - 0.4)
    fig.suptitle(f"{' + '.join(report.suites)}: {len(report.strata)} tasks, runs = seeds", fontsize=10)
    fig.tight_layout()
    return fig


def plot_profiles(report) -> Figure:
    colours, styles = _colours(report.methods, report.styles), _linestyles(report.methods, report.styles)
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    for m in report.methods:
        prof = report.profiles[report.profiles["method"] == m]
        tau = prof["tau"].to_numpy(float)
        ax.fill_between(tau, prof["lo"].to_numpy(float), prof["hi"].to_numpy(float), color=colours[m], alpha=0.15,
                        lw=0, step="post")
        ax.step(tau, prof["fraction"].to_numpy(float), where="post", color=colours[m], ls=styles[m], lw=1.8,
                label=m)
    ax.axvline(1.0, color="0.4", ls="--", lw=1, label=f"{report.baseline} mean (τ = 1)")
    ax.set_xlim(report.profiles["tau"].min(), report.profiles["tau"].max())  # every run: nothing is hidden
    ax.set_xlabel(f"normalised score τ ({report.baseline} = 1)")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", frameon=True)
    ax.set_title(f"Performance profiles, {report.level * 100:g}% stratified bootstrap bands "
                 f"({len(report.strata)} tasks)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_improvement(report) -> Figure:
    table = report.improvement
    pct = f"{report.level * 100:g}%"
    if report.compare:
        fig = Figure(figsize=(7, 2.2))
        ax = fig.subplots()
        labels = [f"P({r.x} > {r.y})" for r in table.itertuples()]
        y = np.arange(len(table))[::-1]
        for yi, r in zip(y, table.itertuples()):
            ax.barh(yi, r.hi - r.lo, left=r.lo, height=0.5, color=report.styles.colour(r.x), alpha=0.35, lw=0)
            ax.plot([r.p] * 2, [yi - 0.3, yi + 0.3], color=report.styles.colour(r.x), lw=2.5)
            ax.text(1.03, yi, f"{r.p:.2f} [{r.lo:.2f}, {r.hi:.2f}]", va="center", fontsize=9)
        ax.axvline(0.5, color="0.4", ls="--", lw=1)
        ax.set_yticks(y, labels)
        ax.set_xlim(0, 1.42)
        ax.set_xticks(np.linspace(0, 1, 6))
        ax.set_xlabel("probability of improvement")
        ax.set_title(f"Probability of improvement ({pct} CI, {len(report.strata)} tasks)", fontsize=10)
        fig.tight_layout()
        return fig
    methods = report.methods
    k = len(methods)
    matrix = np.full((k, k), np.nan)
    text = [["" for _ in methods] for _ in methods]
    index = {m: i for i, m in enumerate(methods)}
    for r in table.itertuples():
        i, j = index[r.x], index[r.y]
        matrix[i, j] = r.p
        ci = f"\n[{r.lo:.2f}, {r.hi:.2f}]" if math.isfinite(r.lo) else ""
        text[i][j] = f"{r.p:.2f}{ci}"
    size = max(4.0, 1.1 * k + 2.5)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="RdBu", norm=TwoSlopeNorm(0.5, 0.0, 1.0))
    for i in range(k):
        for j in range(k):
            if i == j:
                ax.add_patch(_square(j, i))
                continue
            dark = abs(matrix[i, j] - 0.5) > 0.3
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=9 if k < 6 else (7.5 if k <= 8 else 6),
                    color="white" if dark else "black")
    ax.set_xticks(range(k), methods, rotation=30, ha="right")
    ax.set_yticks(range(k), methods)
    ax.set_xlabel("Y (column)")
    ax.set_ylabel("X (row)")
    ax.set_title(f"P(X > Y) with {pct} CI ({len(report.strata)} tasks; blue: the row wins more often)", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="P(X > Y)")
    fig.tight_layout()
    return fig


def _square(x: float, y: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, facecolor="0.85", edgecolor="none")


def plot_cd(report) -> Figure:
    import scikit_posthocs as sp

    ranks = report.ranks
    k, n = ranks.blocks.shape[1], ranks.blocks.shape[0]
    fig = Figure(figsize=(8, 1.6 + 0.3 * k))
    ax = fig.subplots()
    drawn = sp.critical_difference_diagram(ranks.average, ranks.nemenyi, alpha=report.alpha, ax=ax,
                                           color_palette=_colours(report.methods, report.styles),
                                           label_fmt_left="{label} ({rank:.2f})",
                                           label_fmt_right="({rank:.2f}) {label}", text_h_margin=0.03 * (k - 1))
    # Demšar's layout: the rank axis spans 1..k, the CD bar sits above it from rank 1 (the library would put it on
    # the tick labels of a short axis)
    ax.set_xlim(1 - 0.02 * (k - 1), k + 0.02 * (k - 1))
    ax.set_xticks(np.arange(1, k + 1))
    if k <= 4:
        ax.set_xticks(np.arange(1, k + 0.01, 0.25), minor=True)
    bottom = min(line.get_ydata().min() for line in drawn["elbows"]) - 0.6
    ax.set_ylim(bottom, 2.2)
    ax.plot([1, 1 + ranks.cd], [1.3, 1.3], color="black", lw=2, solid_capstyle="butt")
    for x in (1, 1 + ranks.cd):
        ax.plot([x, x], [1.15, 1.45], color="black", lw=1)
    ax.text(1 + ranks.cd / 2, 1.55, f"CD = {ranks.cd:.2f}", ha="center", va="bottom", fontsize=9)
    friedman = (f"Friedman χ²({k - 1}) = {ranks.friedman:.2f}, p = {ranks.friedman_p:.2g}"
                if math.isfinite(ranks.friedman) else "Friedman: needs 3 methods or more")
    ax.set_title(f"Average rank over {n} tasks (1 = best; joined: not significantly different)\n{friedman}; "
                 f"Nemenyi at α = {report.alpha:.2g}", fontsize=9)
    return fig


def write_figures(report, out_dir: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for stem, draw in (("across_iqm", plot_iqm), ("across_profiles", plot_profiles),
                       ("across_improvement", plot_improvement), ("across_cd", plot_cd)):
        paths |= save(draw(report), out_dir, stem)
    return paths
