"""What the report's figures share: saving, row order, marks, family legends and value formats."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from bench.record import base_strategy
from bench.report.leaderboard import Leaderboard
from bench.report.style import Styles, family_order, family_style

HATCHES = ("", "//", "..", "xx", "\\\\", "++")
MARKERS = ("o", "s", "^", "D", "v", "P")
LINESTYLES = ("-", "--", ":", "-.")
ROW_INCHES = 0.24  # height of one row in the forest and per-task figures: 8 pt labels without overlap
LABEL_SIZE = 8.0  # points: row names and value columns


def variant_index(variant: str, variants: list[str], styles: Styles) -> int:
    """Position of ``variant`` among the variants of its strategy (0 for the plain one): picks hatch/marker."""
    same = sorted((v for v in variants if base_strategy(v) == base_strategy(variant)), key=styles.sort_key)
    return same.index(variant) if variant in same else 0


def save(fig: Figure, out_dir: Path, stem: str) -> dict[str, Path]:
    """``<stem>.png`` (150 dpi) and ``<stem>.pdf``, without the timestamps that would make reruns differ."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=metadata)
        paths[f"{stem}_{ext}"] = path
    return paths


def column(table: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as floats (NaN where the table has no such column)."""
    return table[name].to_numpy(dtype=float) if name in table else np.full(len(table), np.nan)


def error_bars(lb: Leaderboard, column_name: str) -> tuple[np.ndarray, list[str]]:
    """Per variant (lower, upper) error-bar lengths of ``column_name`` and what each bar is: the table's interval
    where the row has one (asymmetric), else ± std over seeds (0 when neither exists)."""
    table = lb.table
    n = len(table)
    bars = np.zeros((2, n))
    kinds = []
    means, lo, hi = (column(table, column_name + s) for s in ("", ":lo", ":hi"))
    std = column(table, column_name + ":std")
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


# ----------------------------------------------------------------------------------------------- marks


@dataclass(frozen=True)
class Mark:
    """What the table marks on one cell: ``*`` (adjusted p below α against the baseline) and the winner status
    (``best``: bold, ``tie``: ≈), both only where the row may carry a mark (``<col>:markable``)."""

    significant: bool = False
    status: str = ""
    markable: bool = True  # False: the table gives this row no mark in this column (its notes say why)


def _markable(value) -> bool:
    """``<col>:markable``: False when the row may not carry a mark (too few seeds, unequal budgets); a missing
    column or an empty cell means it may."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no")
    return bool(value)


def marks(lb: Leaderboard, column_name: str) -> dict[str, Mark]:
    """Row -> its :class:`Mark` in ``column_name`` (a score column: a task metric, ``avg`` or ``delta_m``)."""
    table = lb.table
    out = {}
    for variant in table.index:
        row = table.loc[variant]
        if not _markable(row.get(column_name + ":markable")):
            out[variant] = Mark(markable=False)
            continue
        p = row.get(column_name + ":p_adj", math.nan)
        try:
            p = float(p)
        except (TypeError, ValueError):
            p = math.nan
        status = row.get(column_name + ":mark", "")
        status = status if isinstance(status, str) and status in ("best", "tie") else ""
        out[variant] = Mark(not math.isnan(p) and p < lb.options.alpha, status)
    return out


def mark_note(lb: Leaderboard, unmarked: str = "") -> str:
    """The caption line that says what ``*``, bold and ≈ mean in the figures; ``unmarked``: how the figure shows
    rows that may carry no mark (said only when the board has such rows)."""
    from bench import stats

    correction = stats.CORRECTIONS.get(lb.options.correction, lb.options.correction)
    note = (f"* adjusted p < {lb.options.alpha:g} against the row's separate baseline ({correction}); "
            "bold / ringed: significantly best; ≈: tied for best (docs/statistics.md)")
    columns = [c for c in lb.table.columns if c.endswith(":markable")]
    if unmarked and any(not _markable(v) for c in columns for v in lb.table[c]):
        note += f"\n{unmarked}: no marks allowed (too few seeds or another budget than the baseline; table notes)"
    return note


# ----------------------------------------------------------------------------------------------- rows and families


def figure_order(lb: Leaderboard, column_name: str, higher_is_better: bool = True) -> list[str]:
    """The rows top to bottom: grouped by family (baseline, fusion, loss, gradient, others), each group sorted by
    ``column_name`` (best first; rows without a value last, in table order)."""
    values = dict(zip(lb.table.index, column(lb.table, column_name)))
    sign = -1.0 if higher_is_better else 1.0
    styles = lb.styles

    def key(variant: str) -> tuple:
        value, family = values[variant], styles.family(variant)
        return (family_order(family), family, math.isnan(value),
                0.0 if math.isnan(value) else sign * value, styles.sort_key(variant))

    return sorted(lb.table.index, key=key)


def row_positions(rows: list[str], styles: Styles, gap: float = 0.6) -> np.ndarray:
    """y of each row, top to bottom (the first row highest), with a gap between families."""
    ys, y, previous = [], 0.0, None
    for variant in rows:
        if previous is not None and styles.family(variant) != previous:
            y -= gap
        ys.append(y)
        y -= 1.0
        previous = styles.family(variant)
    return np.asarray(ys)


def family_separators(ax, rows: list[str], ys: np.ndarray, styles: Styles) -> None:
    """A thin line between the family groups of a row axis."""
    for i in range(1, len(rows)):
        if styles.family(rows[i]) != styles.family(rows[i - 1]):
            ax.axhline((ys[i] + ys[i - 1]) / 2, color="0.8", linewidth=0.6, zorder=0)


def family_handles(variants: list[str], styles: Styles) -> list[Line2D]:
    """Legend entries for the families present, in figure order."""
    present = sorted({styles.family(v) for v in variants}, key=lambda f: (family_order(f), f))
    handles = []
    for name in present:
        style = family_style(name)
        handles.append(Line2D([], [], color=style.colour, marker=style.marker, linestyle="-", linewidth=1.2,
                              markersize=6, label=style.label))
    return handles


def fmt(value: float, kind: str) -> str:
    """A number as the tables print it: Δm% signed with 2 decimals, scores in % with 1, raw metrics 3 digits."""
    if value is None or math.isnan(value):
        return "—"
    if kind == "signed":
        return f"{value:+.2f}"
    if kind == "percent":
        return f"{value:.1f}"
    return f"{value:.3g}"


def value_label(value: float, lo: float, hi: float, mark: Mark, kind: str) -> str:
    """``-8.84* [-11.01, -6.17]`` (``≈`` appended when tied for best), as the table's cell reads."""
    text = fmt(value, kind) + ("*" if mark.significant else "")
    if not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{fmt(lo, kind)}, {fmt(hi, kind)}]"
    return text + (" ≈" if mark.status == "tie" else "")
