"""What a board displays: its columns (:class:`Column`), each cell's text (point estimate, ``*``, interval or ± std,
``≈``) and which cells are bold or tied for best (:func:`ranks`, from the winner marks of
:mod:`bench.report.marks`). Shared by the Markdown, LaTeX and terminal renderers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import pandas as pd

from bench.report.groups import key as group_key
from bench.report.leaderboard.board import Leaderboard
from bench.report.leaderboard.escape import tex


@dataclass(frozen=True)
class Column:
    """One displayed column: where its mean/std live, its headers, digits, and which direction is better."""

    key: str
    header: str
    latex: str
    digits: int = 1
    std: str | None = None
    better: str | None = None  # "max" / "min"; None: not ranked
    kind: str = "float"  # float | signed | count | int | params
    score: bool = False  # ranked by tests (bold = significant winner, ties marked); else plain best-in-bold


#: the direction mark of a metric column's header: higher (max) or lower (min) is better
ARROWS = {"max": "↑", "min": "↓"}
TEX_ARROWS = {"max": r"$\uparrow$", "min": r"$\downarrow$"}


def columns(lb: Leaderboard) -> list[Column]:
    cols = [Column("n", "n", "$n$", kind="count")]
    for task in lb.tasks:
        for metric in lb.shown_metrics(task):
            if f"{task}/{metric}" not in lb.table:
                continue
            direction = lb.tasks[task]["metrics"].get(metric, "max")
            unit = " (%)" if direction == "max" else ""
            cols.append(Column(f"{task}/{metric}", f"{task} {metric} {ARROWS[direction]}{unit}",
                               tex(f"{task} {metric}") + f" {TEX_ARROWS[direction]}" + unit.replace("%", r"\%"),
                               digits=1 if direction == "max" else 3, std=f"{task}/{metric}:std", better=direction,
                               score=True))
    if lb.table["avg"].notna().any():
        cols.append(Column("avg", "Avg ↑ (%)", r"Avg $\uparrow$ (\%)", std="avg:std", better="max", score=True))
    cols.append(Column("delta_m", "Δm% ↑", r"$\Delta_m$ (\%) $\uparrow$", digits=2, better="max", kind="signed",
                       score=True))
    for group in lb.groups:  # Δm% over one group's tasks (boards whose tasks fall in several groups)
        cols.append(Column(group_key(group), f"Δm% {group} ↑", rf"$\Delta_m$ {tex(group)} (\%) $\uparrow$", digits=2,
                           better="max", kind="signed", score=True))
    if lb.options.components and lb.has_intervals:  # which term a claim rests on: seeds or the test set
        key = lb.score_column
        label = "Δm%" if key == "delta_m" else "Avg"
        cols += [Column(f"{key}:seed_sd", f"{label} seed SD", f"{tex(label)} seed SD", digits=2),
                 Column(f"{key}:test_se", f"{label} test SE", f"{tex(label)} test SE", digits=2)]
    if lb.options.columns == "scores":  # a paper's table: costs stay in the CSV/JSON
        return cols
    cols += [
        Column("train_samples_seen", "Samples seen", "Samples seen", digits=0, kind="int"),
        Column("train_samples_per_s", "Train (samples/s)", "Train (samples/s)", digits=0,
               std="train_samples_per_s:std", better="max"),
        Column("peak_memory_mb", f"Peak mem (MB, {lb.memory_kind})", f"Peak mem (MB, {tex(lb.memory_kind)})",
               digits=0, better="min"),
    ]
    # split by the rows' stage provenance where the records have it (docs/records.md, "Cost columns"); older records
    # keep the totals: wall time over every stage used, parameters trained over every training stage
    if known(lb, "wall_own_s"):
        cols += [Column("wall_own_s", "Wall own (s)", "Wall own (s)", digits=1),
                 Column("wall_shared_s", "Wall shared (s)", "Wall shared (s)", digits=1)]
    else:
        cols.append(Column("wall_time_s", "Wall (s)", "Wall (s)", digits=1, better="min"))
    if known(lb, "deployed_params"):
        cols += [Column("deployed_params", "Params deployed", "Params deployed", kind="params"),
                 Column("trainable_params", "Params trained", "Params trained", kind="params")]
    else:
        cols.append(Column("trainable_params", "Params", "Params", kind="params"))
    return cols


def known(lb: Leaderboard, key: str) -> bool:
    return key in lb.table and lb.table[key].notna().any()


def number(value: float, col: Column) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if col.kind == "count":
        return str(int(value))
    if col.kind == "int":
        return f"{value:,.0f}"
    if col.kind == "params":
        for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= div:
                return f"{value / div:.1f}{suffix}"
        return f"{int(value)}"
    if col.kind == "signed":
        return f"{value:+.{col.digits}f}"
    return f"{value:,.{col.digits}f}"


def ranks(lb: Leaderboard) -> pd.DataFrame:
    """Per displayed column: 1 = bold, 2 = tied for best (≈ / underlined), 0 otherwise.

    Score columns: from the tests (``<col>:mark``): bold only for a significant winner. Cost columns: the best value
    as displayed (rounded; ties share it) is bold.
    """
    out = pd.DataFrame(0, index=lb.table.index, columns=[c.key for c in columns(lb)])
    for col in columns(lb):
        if col.score:
            marks = lb.table.get(col.key + ":mark")
            if marks is not None:
                out.loc[marks == "best", col.key] = 1
                out.loc[marks == "tie", col.key] = 2
            continue
        if col.better is None:
            continue
        values = lb.table[col.key].round(col.digits)
        if len(values.dropna()) < 2:
            continue
        best = values.max() if col.better == "max" else values.min()
        if (values.dropna() == best).all():  # every row ties: nothing stands out
            continue
        out.loc[values == best, col.key] = 1
    return out


def _significant(lb: Leaderboard, variant: str, key: str) -> bool:
    p = lb.table.loc[variant].get(key + ":p_adj", math.nan)
    return isinstance(p, float) and not math.isnan(p) and p < lb.options.alpha


def cell_text(lb: Leaderboard, latex: bool = False, markdown: bool = False) -> pd.DataFrame:
    """The displayed strings, one column per :func:`columns` entry: ``95.3* [92.0, 97.9] ≈``.

    The point estimate, ``*`` when it differs significantly from the row's baseline, the interval (brackets or
    ± half width) or, for rows without predictions, ± std over seeds, and ``≈`` when tied for best (LaTeX: the cell
    is underlined instead, see :func:`ranks`)."""
    pm = lb.options.interval == "pm"
    sd_words = pm and lb.has_intervals  # "± x" already means a half width: say "sd" for the std
    rows = {}
    for variant, row in lb.table.iterrows():
        cells = []
        for col in columns(lb):
            value = row[col.key]
            text = number(value, col)
            digits = replace(col, kind="signed" if col.kind == "signed" else "float")
            lo, hi = row.get(col.key + ":lo", math.nan), row.get(col.key + ":hi", math.nan)
            if col.score and _significant(lb, variant, col.key):
                text += r"$^{*}$" if latex else (r"\*" if markdown else "*")
            if col.score and not is_nan(lo) and not is_nan(hi) and not is_nan(value):
                if pm:
                    half = number((hi - lo) / 2, replace(col, kind="float"))
                    text += rf"{{\scriptsize\,$\pm$\,{half}}}" if latex else f" ± {half}"
                else:
                    span = f"[{number(lo, digits)}, {number(hi, digits)}]"
                    text += rf"{{\scriptsize\,{span}}}" if latex else f" {span}"
            elif col.std and not is_nan(value) and not is_nan(row[col.std]):
                std_text = number(row[col.std], replace(col, kind="float"))
                if latex:
                    text += (rf"{{\scriptsize\,(sd\,{std_text})}}" if sd_words
                             else rf"{{\scriptsize\,$\pm$\,{std_text}}}")
                else:
                    text += f" (sd {std_text})" if sd_words else f" ± {std_text}"
            if col.score and not latex and row.get(col.key + ":mark") == "tie":
                text += " ≈"
            if latex:
                text = text.replace("—", "--")
                text = re.sub(r"(?<![\w$.])-(?=\d)", "$-$", text)
            cells.append(text)
        rows[variant] = cells
    headers = [c.latex if latex else c.header for c in columns(lb)]
    return pd.DataFrame.from_dict(rows, orient="index", columns=headers)


def is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
