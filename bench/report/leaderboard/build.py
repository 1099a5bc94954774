"""Records -> the numeric board of one split (:func:`build_leaderboard`): seed means and standard deviations in
points, Avg, Δm% against each row's baseline (:mod:`.baselines`), budgets and telemetry, the notes, and the
inference columns and winner marks of :mod:`bench.report.marks` (the statistics are described in the package's
docstring and docs/statistics.md)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench.metrics import delta_m
from bench.record import Record
from bench.report.groups import board_groups, is_group_key, restrict, task_groups
from bench.report.groups import key as group_key
from bench.report.inference import BoardTask, Inference, budget_means, group_rows, row_infos, scale
from bench.report.leaderboard.baselines import find_baselines
from bench.report.leaderboard.board import MEMORY_KINDS, TELEMETRY_COLUMNS, Leaderboard, seed_stats
from bench.report.leaderboard.degenerate import columns as degenerate_columns
from bench.report.leaderboard.degenerate import event_order, row_degeneracy
from bench.report.leaderboard.degenerate import footnote as degenerate_footnote
from bench.report.leaderboard.notes import identical_note, identical_rows, mixing_notes, prediction_notes
from bench.report.leaderboard.options import ReportOptions
from bench.report.marks import add_inference, budget_notes
from bench.report.records import (
    BUDGET_FIELDS,
    config_fingerprint,
    is_transductive,
    metrics_frame,
    per_label,
    task_specs,
    telemetry_frame,
)
from bench.report.style import Styles

BUDGET_KEYS = ("epochs", "max_steps", "max_train_samples", "batch_size", "lr")


def _budget(budget: dict) -> dict:
    """The budget fields a caption names (the set ones of BUDGET_KEYS; every set field when none of those is)."""
    chosen = {k: budget[k] for k in BUDGET_KEYS if budget.get(k) is not None}
    return chosen or {k: v for k, v in sorted(budget.items()) if v is not None}


def _caption_facts(records: list[Record]) -> dict:
    backbones = sorted({str(r.backbone or "") for r in records} - {""})
    budgets = {json.dumps(_budget(r.train)) for r in records}
    if len(budgets) == 1:
        budget = ", ".join(f"{k}={v}" for k, v in json.loads(budgets.pop()).items()) or "default"
    else:
        budget = "varies by row (see the row names)"
    return {"backbone": ", ".join(backbones), "seeds": tuple(sorted({r.seed for r in records})),
            "budget": budget}


def split_tasks(records: list[Record], metrics: pd.DataFrame, split: str) -> tuple[dict[str, BoardTask], pd.DataFrame]:
    """The board's tasks (each task of ``split``, followed by its extra splits such as ``test_mismatched``) and the
    long metrics frame of exactly those, extra-split tasks renamed ``<task>_<suffix>``."""
    specs = task_specs(records)
    frames = [metrics[metrics["split"] == split]]
    extras: dict[str, list[BoardTask]] = {}
    for extra in sorted(s for s in metrics["split"].unique() if s.startswith(split + "_")):
        part = metrics[metrics["split"] == extra].copy()
        suffix = extra[len(split):]
        for task in dict.fromkeys(part["task"]):
            if task in specs:
                spec = {**specs[task], "split": extra, "source": task, "extra": True}
                extras.setdefault(task, []).append(BoardTask(task + suffix, task, extra, spec, extra=True))
        part["task"] = part["task"] + suffix
        frames.append(part)
    frame = pd.concat(frames, ignore_index=True)
    present = set(frame["task"])
    tasks: dict[str, BoardTask] = {}
    for task, spec in specs.items():
        if task in present:
            tasks[task] = BoardTask(task, task, split, spec)
        for bt in extras.get(task, []):
            tasks[bt.name] = bt
    return tasks, frame[frame["task"].isin(list(tasks))]


def build_leaderboard(records: list[Record], split: str = "test", options: ReportOptions | None = None,
                      variants: list[str] | None = None, styles: Styles | None = None,
                      declared: dict[str, str] | None = None) -> Leaderboard:
    """The numeric leaderboard of ``split`` (module docstring): every row's numbers; tests, marks and the MDE over
    the rows in ``variants`` (all when None), which are the rows kept. Baselines may be rows left out. ``styles``
    orders the rows (default: what ``records`` say, :meth:`Styles.of`) and goes with the board to the figures.
    ``declared``: task -> group as the suite's YAML declares them now (:func:`bench.report.groups.declared_groups`);
    they win over what the records say."""
    options = options or ReportOptions()
    styles = styles if styles is not None else Styles.of(records)
    suite = records[0].suite
    board_tasks, frame = split_tasks(records, metrics_frame(records), split)
    tasks = {name: bt.spec for name, bt in board_tasks.items()}
    if frame.empty:  # e.g. no record reports this split: an empty board, which callers skip
        return Leaderboard(suite=suite, split=split, tasks=tasks, options=options, styles=styles,
                           table=pd.DataFrame(index=pd.Index([], name="variant")))
    present_rows = set(frame["variant"])
    infos = {name: info for name, info in row_infos(records).items() if name in present_rows}
    order = sorted(infos, key=styles.sort_key)
    shown = [v for v in order if variants is None or v in variants]
    stats_ = seed_stats(frame)
    directions = {(t, m): d for t, spec in tasks.items() for m, d in spec["metrics"].items()}

    table = pd.DataFrame(index=pd.Index(order, name="variant"))
    table["n"] = frame.groupby("variant")["seed"].nunique()
    present = set(zip(stats_.index.get_level_values("task"), stats_.index.get_level_values("metric")))
    for (task, metric), direction in directions.items():
        if (task, metric) not in present:
            continue
        column = f"{task}/{metric}"
        group = stats_.xs((task, metric), level=("task", "metric"))
        factor = scale(direction)
        table[column] = group["mean"] * factor
        table[column + ":std"] = group["std"] * factor
        table[column + ":n"] = group["n"]

    # Avg over the split's own tasks (extra splits are shown, not averaged)
    avg_tasks = [t for t, bt in board_tasks.items() if not bt.extra]
    primaries = {t: tasks[t]["primary"] for t in avg_tasks}
    averaged = all(tasks[t]["metrics"].get(m) == "max" for t, m in primaries.items())
    if averaged:
        primary = frame[[primaries.get(t) == m for t, m in zip(frame["task"], frame["metric"])]]
        per_seed = primary.pivot_table(index=["variant", "seed"], columns="task", values="value")
        per_seed = per_seed.reindex(columns=list(primaries)).mean(axis=1, skipna=False).mul(100.0)
        table["avg"] = per_seed.groupby(level="variant").mean()
        table["avg:std"] = per_seed.groupby(level="variant").std()
    else:
        table["avg"] = table["avg:std"] = math.nan

    # Δm% against each row's own baseline, on the seed means and per seed
    delta_metrics = [(t, m) for t in avg_tasks
                     for m in ([primaries[t]] if options.delta_m == "primary"
                               else [primaries[t], *(x for x in tasks[t]["metrics"]
                                                     if x != primaries[t] and not per_label(x))])]
    baselines, baseline_notes = find_baselines(infos, order, suite)
    means = stats_["mean"]
    per_seed_values = frame.groupby(["variant", "seed", "task", "metric"])["value"].mean()
    table["baseline"] = pd.Series({v: baselines[v] or "" for v in order})
    named_groups, group_notes = task_groups(records)  # Δm% per group: only where the tasks fall in 2+ groups
    if declared:
        named_groups, group_notes = {**named_groups, **declared}, []
    groups = board_groups(avg_tasks, named_groups)
    for column in ("delta_m", "delta_m_seed_mean", "delta_m_seed_std", "delta_m_seed_n",
                   *(group_key(g) for g in groups), *BUDGET_FIELDS):
        table[column] = math.nan
    for name in order:
        base = baselines[name]
        if base is None:
            continue
        table.loc[name, "delta_m"] = delta_m(means.loc[name].to_dict(), means.loc[base].to_dict(), delta_metrics,
                                             directions)
        for group, members in groups.items():
            table.loc[name, group_key(group)] = delta_m(means.loc[name].to_dict(), means.loc[base].to_dict(),
                                                        restrict(delta_metrics, members), directions)
        seeds = set(per_seed_values.loc[name].index.get_level_values("seed"))
        common = sorted(seeds & set(per_seed_values.loc[base].index.get_level_values("seed")))
        per_seed_dm = [delta_m(per_seed_values.loc[(name, s)].to_dict(),
                               per_seed_values.loc[(base, s)].to_dict(), delta_metrics, directions)
                       for s in common]
        per_seed_dm = [d for d in per_seed_dm if not math.isnan(d)]
        if per_seed_dm:
            table.loc[name, "delta_m_seed_mean"] = float(np.mean(per_seed_dm))
            table.loc[name, "delta_m_seed_std"] = float(np.std(per_seed_dm, ddof=1)) if len(per_seed_dm) > 1 \
                else math.nan
            table.loc[name, "delta_m_seed_n"] = len(per_seed_dm)

    # budgets and telemetry
    for name in order:
        for key, value in budget_means(infos[name]).items():
            table.loc[name, key] = value
    telemetry = telemetry_frame(records, shown)  # own vs shared wall time: shared with another row shown
    telemetry = telemetry[telemetry["variant"].isin(order)]
    by_variant = telemetry.groupby("variant")
    for column in TELEMETRY_COLUMNS:
        table[column] = by_variant[column].mean()
    table["train_samples_per_s:std"] = by_variant["train_samples_per_s"].std()
    table["code_versions"] = pd.Series({v: ", ".join(infos[v].code_versions) for v in order})
    table["config_fingerprint"] = pd.Series({v: config_fingerprint(infos[v].first) for v in order})
    kinds = sorted({MEMORY_KINDS.get(k, str(k)) for k in telemetry["memory_kind"].dropna()})

    transductive = tuple(v for v in shown if any(is_transductive(e.row) for e in infos[v].entries))
    notes = [baseline_notes[v] for v in shown if v in baseline_notes] + (group_notes if groups else [])
    notes += mixing_notes(infos, shown)
    inference = None
    if any(not infos[v].schema_1 for v in order):
        inference = Inference(infos, board_tasks, order, avg_tasks if averaged else None, delta_metrics, baselines,
                              options.level, groups)
    notes += budget_notes(table, inference, infos, baselines, shown, order, suite, options.budget_tolerance,
                          options.level)
    notes += prediction_notes(inference, infos, shown, board_tasks)
    notes += [f"rows {', '.join(rows)}: {text}" for rows, text in group_rows(
        (v, f"assembled from stages of code versions {', '.join(infos[v].code_versions)}")
        for v in shown if len(infos[v].code_versions) > 1)]
    identical = identical_rows(table, infos, shown, directions, split)
    notes += [identical_note(rows, why) for rows, why in identical]
    skipped = getattr(records, "skipped", [])  # record files load_records could not use (each named in a warning)
    if skipped:
        results_dir = Path(skipped[0]).parents[4]  # <results_dir>/<suite>/cells/<strategy>/<cell>/record.json
        where = "" if results_dir == Path("results") else f" results_dir={results_dir}"
        notes.append(f"{len(skipped)} record file(s) skipped as unusable (damaged, unreadable or of another schema), "
                     f"so their cells are missing here; run `python -m bench verify suite={suite}{where}` to list them")
    notes += getattr(records, "left_out", [])  # records of an earlier plug-in version (never mixed into a row)
    # rows whose balancer degenerated: a footnote each and the counts as columns (other boards keep their columns)
    per_seed = {v: [e.row for e in infos[v].entries] for v in order}
    degenerate = {v: d for v in shown if (d := row_degeneracy(per_seed[v])) is not None}
    notes += [degenerate_footnote(v, d) for v, d in degenerate.items()]
    if degenerate:
        events = list(event_order(e for d in degenerate.values() for e in d.counts))
        counts = pd.DataFrame.from_dict({v: degenerate_columns(per_seed[v], events) for v in order}, orient="index")
        table = table.join(counts)

    board = Leaderboard(
        suite=suite, split=split, tasks=tasks, table=table.loc[shown], full_table=table,
        memory_kind="/".join(kinds) or "host RSS",
        notes=notes, options=options, delta_metrics=tuple(delta_metrics), baselines=baselines, inference=inference,
        transductive=transductive, degenerate=tuple(degenerate),
        identical=tuple((tuple(rows), why) for rows, why in identical), groups=groups,
        examples=dict(inference.n_examples) if inference else {}, styles=styles, **_caption_facts(records))
    board = replace(board, table=_statistics_columns(board.table, board.score_keys()))
    if inference is not None and inference.any():
        keys = board.score_keys()
        directions_ = {k: "max" if k in ("avg", "delta_m") or is_group_key(k)
                       else tasks[k.rsplit("/", 1)[0]]["metrics"][k.rsplit("/", 1)[1]] for k in keys}
        marked, marking = add_inference(board.table, inference, infos, shown, keys, directions_, baselines, options)
        few = [(v, f"no *, bold or ≈: {why}") for v, why in marking.unmarked.items() if "seed" in why]
        if len(few) < len(shown):  # when no row has enough seeds the caption says so once
            notes = notes + [f"rows {', '.join(rows)}: {text}" for rows, text in group_rows(few)]
        board = replace(board, table=marked, marking=marking, notes=notes)
    return replace(board, table=board.table[_column_order(board.table.columns)])


STAT_SUFFIXES = ("", ":std", ":n", ":lo", ":hi", ":seed_sd", ":test_se", ":df", ":p", ":p_adj", ":test",
                 ":markable", ":mark", ":p_best", ":wilson_lo", ":wilson_hi")


def _statistics_columns(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The inference columns of every score column, empty (NaN / "") until :func:`_add_inference` fills them: the
    CSV/JSON have the same columns whether or not rows have predictions. Added at once: one insert per column
    fragments the frame (a pandas PerformanceWarning on boards with many metrics, e.g. a dense suite's nine)."""
    new: dict[str, object] = {"unmarked": ""}
    for key in keys:
        for suffix in (":lo", ":hi", ":seed_sd", ":test_se", ":df", ":p", ":p_adj", ":p_best"):
            new[key + suffix] = math.nan
        new[key + ":test"] = ""
        new[key + ":markable"] = False
        new[key + ":mark"] = ""
        if key.endswith("/accuracy"):
            new[key + ":wilson_lo"] = new[key + ":wilson_hi"] = math.nan
    kept = table.drop(columns=[c for c in new if c in table])
    return pd.concat([kept, pd.DataFrame(new, index=table.index)], axis=1)


def _column_order(columns) -> list[str]:
    """Each column followed by its statistics (``a/accuracy``, ``a/accuracy:std``, ``…:lo``, ``…:p``, …)."""
    bases = list(dict.fromkeys(c.split(":", 1)[0] for c in columns))
    rank = {suffix: i for i, suffix in enumerate(STAT_SUFFIXES)}
    out = []
    for base in bases:
        mine = [c for c in columns if c.split(":", 1)[0] == base]
        out += sorted(mine, key=lambda c: rank.get(c[len(base):], len(rank)))
    return out
