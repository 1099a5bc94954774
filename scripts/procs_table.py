"""The procs=1 vs procs=2 table of docs/distributed.md: the same cells of a suite on one process and on two
(torch's elastic launcher, gloo), each into its own results folder; per method, the largest difference of any test
metric between the two records and the wall time of each.

    python scripts/procs_table.py                      # synthetic_conflict, the seven methods, seed 0
    python scripts/procs_table.py suite=synthetic       # any other override is passed to both runs
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = [["strategy=naive_mtl", "strategy.weighting=equal,mgda,pcgrad,nash_mtl,famo"],
        ["strategy=uncertainty,gradnorm"]]


def _run(root: Path, procs: int, extra: list[str]) -> float:
    t0 = time.perf_counter()
    for run in RUNS:
        args = [sys.executable, "-m", "bench", "run", "suite=synthetic_conflict", *run, *extra, "report=false",
                f"results_dir={root}", f"procs={procs}"]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "BENCH_PROGRESS": "0"})
    return time.perf_counter() - t0


def _records(root: Path) -> dict[str, dict]:
    out = {}
    for path in root.glob("*/cells/*/*/record.json"):
        r = json.loads(path.read_text())
        out[r["label"]] = r
    return out


def main() -> None:
    extra = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        walls = {p: _run(Path(tmp) / f"p{p}", p, extra) for p in (1, 2)}
        one, two = _records(Path(tmp) / "p1"), _records(Path(tmp) / "p2")
    print("| method | max \\|Δ test metric\\| | cell wall time procs=1 | procs=2 | train time procs=1 | procs=2 |")
    print("|---|---|---|---|---|---|")
    for label in sorted(one):
        a, b = one[label], two[label]
        (ra,), (rb,) = a["rows"].values(), b["rows"].values()
        diff = max(abs(ra["metrics"]["test"][t][m] - rb["metrics"]["test"][t][m])
                   for t in ra["metrics"]["test"] for m in ra["metrics"]["test"][t])
        print(f"| {label} | {diff:.1e} | {a['cell_wall_time_s']:.1f} s | {b['cell_wall_time_s']:.1f} s | "
              f"{ra['telemetry']['train_time_s']:.1f} s | {rb['telemetry']['train_time_s']:.1f} s |")
    print(f"\ncommands: {walls[1]:.0f} s with procs=1, {walls[2]:.0f} s with procs=2 (process starts included)")


if __name__ == "__main__":
    main()
