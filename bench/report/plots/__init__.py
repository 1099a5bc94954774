"""Plots of a leaderboard (matplotlib, Agg via plain ``Figure`` objects, PNG + PDF); docs/figures.md shows each.

* :func:`plot_forest` (``forest_<split>``): Δm% and Avg, one line per row with its interval and the table's marks,
  rows grouped and coloured by **family** (:meth:`bench.report.style.Styles.family`: declared by the strategies
  and weightings; the board carries its ``styles``) and sorted by the score within each family;
* :func:`plot_bars` (``bars_<split>``): every task's primary metric per row, row names on the axis, same order;
* :func:`plot_pareto` (``pareto_throughput``, ``pareto_memory``): score against a cost, points coloured by family,
  the Pareto front and the baselines labelled (placed by adjustText), the legend beside the axes;
* :func:`plot_trajectories` (``trajectories``, ``loss_curves``): task weights and losses over training steps, one
  panel per row in its strategy's colour;
* :func:`plot_coefficients` (``coefficients_<row>``): learned fusion coefficients, a layer × task heatmap per fuse
  configuration;
* :func:`plot_dense` (``dense_<split>``, dense suites only): the first test images, each dense task's ground truth
  and every row's predicted map side by side.
"""

from __future__ import annotations

from pathlib import Path

from bench.report.leaderboard import Leaderboard
from bench.report.plots.bars import plot_bars
from bench.report.plots.coefficients import (
    CoefficientMatrix,
    coefficient_figure,
    coefficient_groups,
    coefficient_matrix,
    plot_coefficients,
    short_layer_names,
    tick_step,
)
from bench.report.plots.common import Mark, error_bars, figure_order, marks, variant_index
from bench.report.plots.dense import dense_figure, plot_dense
from bench.report.plots.forest import plot_forest
from bench.report.plots.pareto import compared_front, pareto_front, plot_pareto
from bench.report.plots.training import plot_trajectories
from bench.report.previews import Previews

__all__ = ["CoefficientMatrix", "Mark", "coefficient_figure", "coefficient_groups", "coefficient_matrix",
           "compared_front", "dense_figure", "error_bars", "figure_order", "marks", "pareto_front", "plot_bars",
           "plot_coefficients", "plot_dense", "plot_forest", "plot_pareto", "plot_trajectories", "short_layer_names",
           "tick_step", "variant_index", "write_plots"]


def write_plots(lb: Leaderboard, trajectories: dict[str, list[dict]], out_dir: Path,
                coefficients: dict[str, list[dict]] | None = None,
                previews: Previews | None = None) -> dict[str, Path]:
    """All plots of one leaderboard; returns name -> path (``forest_test_png``, ``pareto_memory_pdf``...).

    ``coefficients`` (:func:`bench.report.records.fusion_coefficients`) adds the fusion-coefficient figures of the
    rows shown; ``previews`` (:func:`bench.report.previews.dense_previews`, dense suites) the dense figure."""
    paths = plot_forest(lb, out_dir)
    paths |= plot_bars(lb, out_dir)
    paths |= plot_pareto(lb, out_dir, "train_samples_per_s", "max")
    paths |= plot_pareto(lb, out_dir, "peak_memory_mb", "min")
    shown = {v: t for v, t in trajectories.items() if v in lb.table.index}
    paths |= plot_trajectories(shown, out_dir, lb.suite, "weights", styles=lb.styles)
    paths |= plot_trajectories(shown, out_dir, lb.suite, "loss", styles=lb.styles)
    shown_coefficients = {v: c for v, c in (coefficients or {}).items() if v in lb.table.index}
    paths |= plot_coefficients(shown_coefficients, out_dir, lb.suite, lb.styles)
    paths |= plot_dense(lb, previews, out_dir)
    return paths
