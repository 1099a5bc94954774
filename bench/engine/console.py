"""What a training loop prints while it runs: the live tqdm bar on a terminal, plain progress lines elsewhere."""

from __future__ import annotations

import math
import os
import sys
import time

from bench.launch.base import fmt_duration

PROGRESS_INTERVAL_S = 20.0  # seconds between plain progress lines (BENCH_PROGRESS_INTERVAL overrides it)


def live_bar() -> bool:
    """The live tqdm bar: on a terminal only (stdout and stderr both), unless ``BENCH_PROGRESS=0``."""
    return os.environ.get("BENCH_PROGRESS") != "0" and sys.stderr.isatty() and sys.stdout.isatty()


class ProgressLines:
    """Plain progress lines inside a cell when stdout is not a terminal (a file, a pipe, CI, ``nohup``, SLURM).

    A training loop calls :meth:`due` after every step (one clock read) and, when it says so, :meth:`emit` one line:
    the cell, the stage, epoch and step of total, the recent loss (summed over the stage's tasks) and samples/s, and
    the ETA of the stage, the cell and the run. The throttle is time-based and shared by every stage of the process,
    so short stages do not flood a log: a line at most every ``BENCH_PROGRESS_INTERVAL`` seconds (default
    :data:`PROGRESS_INTERVAL_S`), i.e. at least every interval + one step while training runs. ``BENCH_PROGRESS=0``
    silences them, as it does the bar. ``bench run`` tells it which cell runs (:meth:`start_cell`) and how long the
    cells finished so far took; until one has finished the cell and run ETAs print as ``?``.

    Example (the first cell of a run: no cell has finished yet, so only the stage has an ETA):
        >>> import io
        >>> lines, out = ProgressLines(), io.StringIO()
        >>> lines.start_cell("[1/2] a cell", expected_s=None, rest_s=None)
        >>> lines.emit("joint s0", "epoch 1/2, step 3/10", 0.25, 640.0, 7.0, out=out)
        >>> print(out.getvalue(), end="")
        [1/2] a cell | joint s0: epoch 1/2, step 3/10, loss 0.2500, 640 samples/s | ETA stage 0m07s, cell ?, run ?
    """

    def __init__(self) -> None:
        self.last: float | None = None  # perf_counter of the last line (or of the cell's start)
        self.tag = ""
        self.started: float | None = None
        self.expected_s: float | None = None  # the cell's expected duration, from finished cells of this run
        self.rest_s: float | None = None  # the run's time after this cell

    @staticmethod
    def interval() -> float:
        raw = os.environ.get("BENCH_PROGRESS_INTERVAL")
        try:
            return max(0.0, float(raw)) if raw else PROGRESS_INTERVAL_S
        except ValueError:
            return PROGRESS_INTERVAL_S

    @staticmethod
    def enabled() -> bool:
        return os.environ.get("BENCH_PROGRESS") != "0" and not sys.stdout.isatty()

    def start_cell(self, tag: str, expected_s: float | None, rest_s: float | None) -> None:
        self.tag, self.expected_s, self.rest_s = tag, expected_s, rest_s
        self.started = self.last = time.perf_counter()

    def due(self) -> bool:
        now = time.perf_counter()
        if self.last is None:  # a worker process that was not told about its cell: count from its first step
            self.last = now
        return now - self.last >= self.interval()

    def emit(self, stage: str, where: str, loss: float | None, rate: float | None, stage_eta: float | None,
             out=None) -> None:
        """Print one line (to ``out``, default the current ``sys.stdout``)."""
        now = time.perf_counter()
        self.last = now
        eta = lambda s: "?" if s is None or not math.isfinite(s) else fmt_duration(max(0.0, s))  # noqa: E731
        cell = None
        if self.expected_s is not None and self.started is not None:
            cell = max(self.expected_s - (now - self.started), stage_eta or 0.0)
        run = cell + self.rest_s if cell is not None and self.rest_s is not None else None
        parts = [where]
        if loss is not None and math.isfinite(loss):
            parts.append(f"loss {loss:.4f}")
        if rate is not None and math.isfinite(rate):
            parts.append(f"{rate:,.0f} samples/s")
        head = f"{self.tag} | " if self.tag else ""
        print(f"{head}{stage}: {', '.join(parts)} | ETA stage {eta(stage_eta)}, cell {eta(cell)}, run {eta(run)}",
              file=out or sys.stdout, flush=True)


progress = ProgressLines()  # this process's throttle and cell context (bench.runner sets the cell)
