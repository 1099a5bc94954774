"""The report's statistics on a realistic table: 7 rows × 3 tasks × 3 seeds × 150 test examples, B = 2400 paired
bootstrap replicates (intervals, tests against separate, winner tests, MDE) for the test and validation splits.
B is the default 2000 raised to 4m/α for the table's m = 6 × 5 = 30 corrected tests, so that Holm can reject."""

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
    assert boards[0].options.bootstrap == 2400 and len(boards[0].table) == 7
    assert boards[0].table["t0/accuracy:lo"].notna().all()
    t0 = time.perf_counter()
    build()
    seconds = time.perf_counter() - t0
    report(benchmark, "report statistics, 7x3x3x150, B=2400", seconds / TARGET_S, f"<= 1 ({TARGET_S:.0f} s)",
           seconds=round(seconds, 2))
    assert seconds <= TARGET_S * 1.5, f"{seconds:.1f}s"
