"""Write the schedule report (``schedule.{md,tex,csv,json}``, ``schedule_steps.csv``, ``schedule_scores.csv``
and the two figures) into the report folder, next to the leaderboard; `bench report` and `bench run` call
:func:`write_schedule` only when the store has rows made under a task schedule."""

from __future__ import annotations

from pathlib import Path

from bench.record import Record
from bench.report.schedule.plots import write_plots
from bench.report.schedule.render import latex, markdown, to_json
from bench.report.schedule.rows import StepScores, schedule_rows
from bench.report.schedule.tables import cost_table, schedule_table, score_table
from bench.report.style import Styles


def notes(table) -> list[str]:
    """What a reader must know to read the table: rows without a retrain row to divide by, rows without
    predictions (no intervals)."""
    out = []
    alone = [v for v, r in table.iterrows() if not r["retrain"]]
    if alone:
        out.append(f"rows {', '.join(alone)}: no retrain row with the same schedule, budget and data, so no "
                   f"× retrain; run the same command with strategy=retrain")
    bare = [v for v, r in table.iterrows() if r["final:lo"] != r["final:lo"]]  # NaN: no predictions to read
    if bare:
        out.append(f"rows {', '.join(bare)}: no interval (their step predictions are missing or unreadable)")
    return out


def write_schedule(records: list[Record], out_dir: Path, level: float, interval: str = "brackets",
                   plots: bool = True, styles: Styles | None = None,
                   variants: list[str] | None = None) -> dict[str, Path]:
    """The schedule tables (and, with ``plots``, figures) of the schedule rows of ``records`` (those in
    ``variants``, the leaderboard's rows, when given); name -> path. Nothing (an empty dict) without such rows."""
    rows = [r for r in schedule_rows(records) if variants is None or r.name in variants]
    if not rows:
        return {}
    styles = styles if styles is not None else Styles.of(records)
    rows = sorted(rows, key=lambda r: styles.sort_key(r.name))
    scores = StepScores(rows, records, level)
    table = schedule_table(rows, scores, level)
    costs, per_step = cost_table(rows), score_table(rows, scores, level)
    suite = records[0].suite
    said = notes(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"schedule_md": out_dir / "schedule.md", "schedule_tex": out_dir / "schedule.tex",
             "schedule_csv": out_dir / "schedule.csv", "schedule_steps_csv": out_dir / "schedule_steps.csv",
             "schedule_scores_csv": out_dir / "schedule_scores.csv", "schedule_json": out_dir / "schedule.json"}
    paths["schedule_md"].write_text(markdown(suite, table, costs, per_step, level, interval, said))
    paths["schedule_tex"].write_text(latex(suite, table, costs, level, interval))
    table.to_csv(paths["schedule_csv"])
    costs.to_csv(paths["schedule_steps_csv"], index=False)
    per_step.to_csv(paths["schedule_scores_csv"], index=False)
    paths["schedule_json"].write_text(to_json(suite, table, costs, per_step, level, said))
    if plots:
        paths |= write_plots(table, per_step, styles, out_dir)
    return paths
