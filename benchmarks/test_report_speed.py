"""The report's statistics on a realistic table: 7 rows × 3 tasks × 3 seeds × 150 test examples: two-level t
intervals (jackknife pseudo-values per seed, task and row), tests against separate, winner tests and the MDE over
every pair of rows, for the test and validation splits."""

from __future__ import annotations

import time

from bench.report import build_leaderboards
from benchmarks.conftest import report
from tests.test_report_stats import SUITE, _three_rows_three_seeds

TARGET_S = 10.0  # "a few seconds" on one idle core; what a user waits for `bench report`


def test_seven_row_table_statistics(benchmark, tmp_path):
    results = tmp_path / "results"
    _three_rows_three_seeds(results, n=150, rows=7, tasks=3)

    def build():
        return build_leaderboards(results, SUITE)

    boards, _ = benchmark.pedantic(build, rounds=3, iterations=1)
    assert len(boards[0].table) == 7 and boards[0].marking.n_tests > 0
    assert boards[0].table["t0/accuracy:lo"].notna().all()
    t0 = time.perf_counter()
    build()
    seconds = time.perf_counter() - t0
    report(benchmark, "report statistics, 7x3x3x150, two-level t", seconds / TARGET_S, f"<= 1 ({TARGET_S:.0f} s)",
           seconds=round(seconds, 2))
    assert seconds <= TARGET_S * 1.5, f"{seconds:.1f}s"
