"""The report of a task-schedule run (docs/dynamic_tasks.md): per row the score matrix R[k][i] of every task after
every step, backward transfer, forgetting and forward transfer with two-level intervals, the cost of every step next
to ``retrain``'s, a task-arrival figure and a cost-against-score figure.

One module per concern: :mod:`.rows` (records -> schedule rows and the per-seed scores of every step),
:mod:`.transfer` (BWT, forgetting, FWT, final average and their intervals), :mod:`.costs` (samples and wall time
per step, ratios to retrain), :mod:`.tables` (the numeric tables), :mod:`.render` (Markdown, LaTeX, JSON),
:mod:`.plots` (the figures) and :mod:`.write` (the files). The ordinary leaderboard of such a run shows the final
step (a schedule row's metrics are its last step's).
"""

from __future__ import annotations

from bench.report.schedule.rows import has_schedule, schedule_rows
from bench.report.schedule.write import write_schedule

__all__ = ["has_schedule", "schedule_rows", "write_schedule"]
