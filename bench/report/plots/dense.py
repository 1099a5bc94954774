"""The dense suite's figure (``dense_<split>``): the first test images in rows; columns the input, then per dense task
its ground truth and each leaderboard row's prediction, side by side (the figure a dense multi-task paper shows).

How a map is coloured follows from its stored array, not from the kind's name, so a plug-in kind's maps are drawn
too: integer maps are class labels (a fixed palette, negative = ignored pixel in black), float maps with 3 channels
are unit vectors (surface normals, RGB = (n + 1) / 2, an all-zero or non-finite vector in black), any other float
map is a scalar (depth: one colour range per image row, the ground truth's valid range, so the ground truth and
every row's prediction of an image are comparable; 0 or NaN in the ground truth is an invalid pixel, black).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from bench.report.leaderboard import Leaderboard
from bench.report.plots.common import figure_order, save
from bench.report.previews import Previews, TaskPreview

CELL_INCHES = 0.95  # one image
SCALAR_MAP = "viridis"  # its darkest colour (dark violet) stays apart from the black of invalid pixels
IGNORED = np.zeros(3)


def _palette() -> np.ndarray:
    """20 class colours: tab20's ten saturated colours first, then their light partners, so that neighbouring
    class ids differ in hue; no black (the ignore colour)."""
    tab20 = np.asarray(colormaps["tab20"].colors, dtype=float)
    return np.concatenate([tab20[0::2], tab20[1::2]])


PALETTE = _palette()


# ----------------------------------------------------------------------------------------------- colour maps


def map_style(target: np.ndarray) -> str:
    """How a task's maps are coloured, from its ground truth (K, H, W) or (K, C, H, W): ``labels`` (integer
    class ids), ``vectors`` (3 float channels) or ``scalar`` (one float channel)."""
    if np.issubdtype(target.dtype, np.integer) or target.dtype == bool:
        return "labels"
    return "vectors" if target.ndim == 4 and target.shape[1] == 3 else "scalar"


def label_rgb(labels: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3): class c in ``PALETTE[c % 20]``, a negative id (ignored pixel) black."""
    labels = np.asarray(labels).astype(np.int64)
    rgb = PALETTE[np.mod(labels, len(PALETTE))]
    rgb[labels < 0] = IGNORED
    return rgb


def scalar_range(target: np.ndarray) -> tuple[float, float]:
    """The colour range of one image row: the ground truth's valid values (finite and not 0), min to max."""
    values = np.asarray(target, dtype=float)
    valid = values[np.isfinite(values) & (values != 0)]
    if valid.size == 0:
        return 0.0, 1.0
    lo, hi = float(valid.min()), float(valid.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def scalar_rgb(values: np.ndarray, lo: float, hi: float, invalid_zero: bool = False) -> np.ndarray:
    """(H, W) or (1, H, W) values -> (H, W, 3) through :data:`SCALAR_MAP` on [lo, hi] (clipped); non-finite pixels,
    and with ``invalid_zero`` (a ground truth) 0, black."""
    values = np.asarray(values, dtype=float).reshape(np.shape(values)[-2:])
    invalid = ~np.isfinite(values) | ((values == 0) if invalid_zero else False)
    scaled = np.clip((np.nan_to_num(values) - lo) / (hi - lo), 0.0, 1.0)
    rgb = colormaps[SCALAR_MAP](scaled)[..., :3]
    rgb[invalid] = IGNORED
    return rgb


def vector_rgb(normals: np.ndarray) -> np.ndarray:
    """(3, H, W) unit vectors -> (H, W, 3) = (n + 1) / 2 (clipped to [0, 1]); an all-zero or non-finite vector
    (an invalid pixel) black."""
    n = np.moveaxis(np.asarray(normals, dtype=float), 0, -1)
    invalid = ~np.isfinite(n).all(axis=-1) | (n == 0).all(axis=-1)
    rgb = np.clip((np.nan_to_num(n) + 1.0) / 2.0, 0.0, 1.0)
    rgb[invalid] = IGNORED
    return rgb


def input_rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) or (H, W) input -> (H, W, 3) in [0, 1]: uint8 / 255; floats as they are when in [0, 1], else
    stretched min to max (normalised inputs); one channel grey, more than 3: the first three."""
    x = np.asarray(image)
    x = x[None] if x.ndim == 2 else x
    x = x.astype(float) / 255.0 if np.issubdtype(x.dtype, np.integer) else x.astype(float)
    finite = x[np.isfinite(x)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        lo, hi = float(finite.min()), float(finite.max())
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    x = np.nan_to_num(np.clip(x, 0.0, 1.0))
    x = np.repeat(x[:1], 3, axis=0) if x.shape[0] < 3 else x[:3]
    return np.moveaxis(x, 0, -1)


def task_cells(tp: TaskPreview, rows: list[str], i: int) -> tuple[list[np.ndarray | str], str]:
    """Image row ``i`` of one task: its ground truth then each row's prediction as RGB (a row without maps keeps
    its reason), and the note under the ground truth (a scalar map's colour range)."""
    style = map_style(tp.target)
    target = tp.target[i]
    lo, hi = scalar_range(target) if style == "scalar" else (0.0, 1.0)

    def colour(m: np.ndarray, truth: bool) -> np.ndarray:
        if style == "labels":
            return label_rgb(m)
        if style == "vectors":
            return vector_rgb(m)
        return scalar_rgb(m, lo, hi, invalid_zero=truth)

    note = f"{lo:.3g} – {hi:.3g}" if style == "scalar" else ""
    cells: list[np.ndarray | str] = [colour(target, True)]
    for row in rows:
        pred = tp.preds.get(row, "no predictions")
        cells.append(pred if isinstance(pred, str) else colour(pred[i], False))
    return cells, note


# ----------------------------------------------------------------------------------------------- the figure


def column_title(name: str, width: int = 18) -> str:
    """A row name over a column: broken before ``[`` and after commas, then to ``width`` characters a line."""
    parts = re.sub(r",\s*", ",\n", name.replace("[", "\n[", 1)).split("\n")
    return "\n".join(line for part in parts for line in textwrap.wrap(part, width) or [""])


def dense_figure(previews: Previews, suite: str, rows: list[str] | None = None) -> Figure:
    """The figure (module docstring): ``rows`` the leaderboard rows in column order (default: as stored)."""
    rows = [r for r in (rows or previews.rows) if r in previews.rows]
    k = previews.images
    groups: list[tuple[str, float]] = [("input", 1.25)] if previews.inputs is not None else []  # + its y labels
    groups += [(tp.task, 1 + len(rows)) for tp in previews.tasks]
    columns = sum(n for _, n in groups)
    height, width = previews.tasks[0].target.shape[-2:]
    title_lines = max((column_title(r).count("\n") + 1 for r in rows), default=1)
    fig = Figure(figsize=(CELL_INCHES * columns + 0.4, (CELL_INCHES * height / width + 0.2) * k
                          + 0.16 * title_lines + 1.0), layout="constrained")
    subs = list(np.atleast_1d(fig.subfigures(1, len(groups), width_ratios=[n for _, n in groups], wspace=0.01)))
    missing: dict[str, str] = {}
    if previews.inputs is not None:
        sub = subs.pop(0)
        axes = sub.subplots(k, 1, squeeze=False)
        sub.suptitle(" ", fontsize="medium")  # keeps the rows level with the task groups
        for i in range(k):
            _image(axes[i, 0], input_rgb(previews.inputs[i]))
            axes[i, 0].set_ylabel(f"{previews.split} image {i + 1}", fontsize="small")
        axes[0, 0].set_title("input", fontsize="small")
    for tp, sub in zip(previews.tasks, subs):
        sub.suptitle(tp.task, fontsize="medium")
        axes = sub.subplots(k, 1 + len(rows), squeeze=False)
        for i in range(k):
            cells, note = task_cells(tp, rows, i)
            for j, cell in enumerate(cells):
                if isinstance(cell, str):
                    _empty(axes[i, j])
                    missing.setdefault(rows[j - 1], cell)
                else:
                    _image(axes[i, j], cell)
            if note:
                axes[i, 0].set_xlabel(note, fontsize="x-small", labelpad=1)
            if previews.inputs is None and tp is previews.tasks[0]:
                axes[i, 0].set_ylabel(f"{previews.split} image {i + 1}", fontsize="small")
        axes[0, 0].set_title("ground truth", fontsize="small")
        for j, row in enumerate(rows, start=1):
            axes[0, j].set_title(column_title(row), fontsize=6.5)
    seeds = sorted({previews.seeds[r] for r in rows})
    shown = f"seed {seeds[0]}" if len(seeds) == 1 else "each row's lowest seed"
    title = (f"{suite} ({previews.split}): the first {k} {previews.split} images, ground truth and each row's "
             f"prediction ({shown})")
    notes = [f"{r}: {why}" for r, why in missing.items()]
    if notes:
        title += "\nno maps: " + "; ".join(notes)
    fig.suptitle(title, fontsize="medium")
    return fig


def _image(ax, rgb: np.ndarray) -> None:
    ax.imshow(rgb, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _empty(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, "—", ha="center", va="center", transform=ax.transAxes, color="0.5")
    for spine in ax.spines.values():
        spine.set_color("0.8")


def plot_dense(lb: Leaderboard, previews: Previews | None, out_dir: Path) -> dict[str, Path]:
    """:func:`dense_figure` of the board's rows in the forest plot's order, saved as ``dense_<split>.{png,pdf}``;
    nothing when the suite has no dense task (``previews`` None)."""
    if previews is None or previews.images == 0 or not previews.rows:
        return {}
    rows = [r for r in figure_order(lb, lb.score_column) if r in previews.rows]
    return save(dense_figure(previews, lb.suite, rows), out_dir, f"dense_{previews.split}")
