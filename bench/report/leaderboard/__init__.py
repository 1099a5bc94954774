"""Leaderboards: records -> one pandas table per split -> Markdown, LaTeX, rich, CSV and JSON.

One module per concern: :mod:`.options` (the report options), :mod:`.build` (records -> a :class:`Leaderboard`),
:mod:`.baselines` (each row's Δm% reference), :mod:`.notes` and :mod:`.captions` (what the numbers mean),
:mod:`.cells` (displayed text and winner marks), one renderer each (:mod:`.render_md`, :mod:`.render_tex`,
:mod:`.render_csv`, :mod:`.render_json`, :mod:`.render_terminal`), :mod:`.write` (the four files) and
:mod:`.compare` (two rows side by side).

Units and statistics (all documented in the outputs' captions; the protocol is in docs/statistics.md):

* scores are in *points*: metrics whose direction is ``max`` (fractions: accuracy, F1, correlations) are multiplied
  by 100; ``min`` metrics (mse) stay raw;
* point estimates are means over seeds; ``n`` is the number of seeds of the row; ``:std`` (ddof=1) is kept in the
  CSV/JSON and shown for rows without predictions;
* rows with per-example predictions (schema-2 records) get a ``level`` two-level t interval per column (seed
  variance plus the test-set covariance between seeds, :mod:`bench.twolevel`) and a test against their Δm%
  baseline, corrected over the table's markable tests (Holm by default): ``*`` marks a significant difference;
  rows with too few seeds or another budget than their baseline get no mark (:mod:`bench.report.marks`);
* ``Avg`` is, per seed, the mean of the tasks' primary scores, then the mean over seeds; it is left empty when a
  primary metric is lower-is-better (points and raw units do not average);
* ``Δm%`` (Maninis et al., 2019) over the metrics ``delta_m`` selects (``primary``: the primary metrics the table
  shows; ``all``: every metric, all shown): Δm = (100/T) Σ_t (1/M_t) Σ_m (−1)^{l_tm} (N_tm − B_tm) / |B_tm| on the
  seed means, B = the row's baseline: the ``separate`` row with the same data and budget fingerprints (none: empty,
  with a note), l = 1 for ``min`` metrics; metrics with B = 0 are left out; positive = better; separate itself is 0;
* winners: the best of a score column is bold only when a two-level t test says it beats every other markable
  row; rows it does not beat after the correction are marked tied (≈ / underlined); cost columns keep plain
  best-in-bold;
* transductive rows (fusion coefficients adapted on unlabeled test inputs, ``fusion.transductive`` in the record)
  carry ``†`` after their name in Markdown, LaTeX and the terminal, a ``transductive`` column in the CSV/JSON, and a
  caption sentence; a board without such rows is unchanged;
* rows whose balancer degenerated in some step (a fallback, a bound, a solver stopped short: ``Balancer.flag``) carry
  ``§`` after their name and a note saying which event, in how many of their optimiser steps and seeds
  (:mod:`.degenerate`), and ``degenerate:<event>`` columns in the CSV/JSON; a board without such rows is unchanged.
"""

from __future__ import annotations

from bench.report.leaderboard.board import (
    COST_COLUMNS,
    TELEMETRY_COLUMNS,
    TRANSDUCTIVE_MARK,
    TRANSDUCTIVE_NOTE,
    Leaderboard,
)
from bench.report.leaderboard.build import build_leaderboard, split_tasks
from bench.report.leaderboard.captions import caption
from bench.report.leaderboard.cells import cell_text, columns, ranks
from bench.report.leaderboard.compare import compare_markdown, compare_rows
from bench.report.leaderboard.options import ReportOptions, report_options
from bench.report.leaderboard.render_csv import to_frame
from bench.report.leaderboard.render_json import to_json
from bench.report.leaderboard.render_md import to_markdown
from bench.report.leaderboard.render_terminal import to_rich
from bench.report.leaderboard.render_tex import to_latex
from bench.report.leaderboard.write import write_tables

_board_tasks = split_tasks  # the name scripts/aa_check.py imports

__all__ = ["COST_COLUMNS", "TELEMETRY_COLUMNS", "TRANSDUCTIVE_MARK", "TRANSDUCTIVE_NOTE", "Leaderboard",
           "ReportOptions", "build_leaderboard", "caption", "cell_text", "columns", "compare_markdown",
           "compare_rows", "ranks", "report_options", "split_tasks", "to_frame", "to_json", "to_latex",
           "to_markdown", "to_rich", "write_tables"]
