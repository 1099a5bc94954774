"""A/A check on real predictions: split one row's seeds into disjoint groups and test group A against group B.

Two groups of seeds of one configuration differ only by training noise, so the leaderboard's test should mark them
in at most α of the splits. This script takes a row with many seeds from a store (e.g. ``bench run suite=synthetic
strategy=naive_mtl seeds=24``), draws random disjoint pairs of k-seed groups, and runs the leaderboard's own
estimates (:class:`bench.report.inference.Inference`) on them: per column (each task's primary metric, Avg, and Δm%
of A against B) the rate of raw p < α, and the rate of splits with at least one column marked after Holm.

    python scripts/aa_check.py results_dir=/tmp/aa suite=synthetic row=naive_mtl k=3 splits=300
"""

from __future__ import annotations

import sys

import numpy as np

from bench import stats
from bench.report.inference import Entry, Inference, RowInfo, row_infos
from bench.report.leaderboard import _board_tasks
from bench.report.records import load_records, metrics_frame


def main(argv: list[str]) -> int:
    opts = dict(a.split("=", 1) for a in argv)
    records = load_records(opts.get("results_dir", "results"), opts.get("suite", "synthetic"))
    row, k, splits = opts.get("row", "naive_mtl"), int(opts.get("k", 3)), int(opts.get("splits", 300))
    alpha = float(opts.get("alpha", 0.05))
    info = row_infos(records)[row]
    board_tasks, _ = _board_tasks(records, metrics_frame(records), "test")
    main_tasks = [t for t, bt in board_tasks.items() if not bt.extra]
    primaries = [(t, board_tasks[t].spec["primary"]) for t in main_tasks]
    averaged = all(board_tasks[t].spec["metrics"][m] == "max" for t, m in primaries)
    columns = [f"{t}/{m}" for t, m in primaries] + (["avg"] if averaged else []) + ["delta_m"]
    rng = np.random.default_rng(int(opts.get("seed", 0)))
    entries = info.entries
    if 2 * k > len(entries):
        print(f"row {row} has {len(entries)} seeds; k={k} needs {2 * k}", file=sys.stderr)
        return 2
    marks = {c: 0 for c in columns}
    any_mark = 0
    for _ in range(splits):
        pick = rng.permutation(len(entries))[: 2 * k]
        group_a = sorted((entries[i] for i in pick[:k]), key=lambda e: e.seed)
        group_b = sorted((entries[i] for i in pick[k:]), key=lambda e: e.seed)
        infos = {"A": RowInfo("A", "A", info.strategy, [Entry(e.seed, e.record, e.row) for e in group_a]),
                 "B": RowInfo("B", "B", info.strategy, [Entry(e.seed, e.record, e.row) for e in group_b])}
        inference = Inference(infos, board_tasks, ["B", "A"], main_tasks if averaged else None, primaries,
                              {"A": "B", "B": "B"}, 1 - alpha)
        ps = [inference.difference("A", "B", c).p for c in columns]
        for c, p in zip(columns, ps):
            marks[c] += p < alpha
        any_mark += bool(np.any(stats.holm(ps) < alpha))
    print(f"{row}: {len(entries)} seeds, {splits} random splits into two disjoint groups of k={k}")
    print(" | ".join(f"{c} {marks[c] / splits:.3f}" for c in columns) + f" | any (Holm) {any_mark / splits:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
