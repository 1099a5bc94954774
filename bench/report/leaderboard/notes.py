"""The notes under a board that are about its rows: identical scores, one name from several configurations, rows
without per-example predictions."""

from __future__ import annotations

import pandas as pd

from bench.report.inference import OLD_RECORDS, BoardTask, Inference, RowInfo, group_rows
from bench.report.provenance import identical_groups


def identical_rows(table: pd.DataFrame, infos: dict[str, RowInfo], shown: list[str], directions: dict,
                    split: str) -> list[tuple[list[str], str]]:
    """Shown rows whose every task metric (mean over the same seeds) is identical to another row's, and why when the
    records say it (:func:`bench.report.provenance.identical_groups`)."""
    keys = [f"{t}/{m}" for t, m in directions if f"{t}/{m}" in table]
    if not keys:
        return []
    scores = {v: (tuple(infos[v].seeds), *table.loc[v, keys].tolist()) for v in shown}
    entries = {v: [(e.record, e.row) for e in infos[v].entries] for v in shown}
    return identical_groups(scores, entries, split)


def identical_note(rows: list[str] | tuple[str, ...], why: str) -> str:
    return f"rows {', '.join(rows)}: identical scores in every task column; {why}"


def mixing_notes(infos: dict[str, RowInfo], shown: list[str]) -> list[str]:
    """A note per row name whose records come from several configurations (split into rows, never mixed)."""
    by_origin: dict[str, list[str]] = {}
    for name, info in infos.items():
        by_origin.setdefault(info.origin, []).append(name)
    notes = []
    for origin, names in by_origin.items():
        mine = [n for n in shown if n in names]
        if len(names) > 1 and mine:
            notes.append(f"rows {', '.join(mine)}: records named {origin} come from {len(names)} configurations; "
                         f"one row each, never mixed")
    return notes


def prediction_notes(inference: Inference | None, infos: dict[str, RowInfo], shown: list[str],
                      board_tasks: dict[str, BoardTask]) -> list[str]:
    items = []
    for name in shown:
        reasons = inference.reasons.get(name, {}) if inference else {t: OLD_RECORDS for t in board_tasks}
        if not reasons:
            continue
        if len(reasons) == len(board_tasks) and len(set(reasons.values())) == 1:
            items.append((name, f"{next(iter(reasons.values()))}: no intervals"))
        else:
            items += [(name, f"{task}: {why}: no interval") for task, why in reasons.items()]
    return [f"rows {', '.join(rows)}: {text}" for rows, text in group_rows(items)]
