"""One command's run, as an object passed explicitly: the plan, what it loaded (each suite's data and store) and
what it did (the stages it reused and computed, the cells it finished, its disk estimate, its progress).

``bench run`` makes one in :func:`bench.runner.execute` and hands it to every cell's job. A job that runs in
this process uses it as it is; a forked worker inherits it with the data loaded; a job pickled to another process
(a spawned worker, a cluster node) carries only the command line and plans it again there, once per process
(:meth:`RunContext.__reduce__`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

from bench.config import SuiteConfig
from bench.errors import StoreError
from bench.plan import Plan, make_plan
from bench.stages import StageLog, SuiteContext
from bench.store import Store, as_store_error, content_hash, suite_root


class RunProgress:
    """What the in-cell progress lines (:class:`bench.engine.ProgressLines`) need from the run: each cell's tag and
    label, and how long the cells finished so far took, for the cell's and the run's ETA. ``execute`` fills it;
    :func:`bench.runner.run_cell_job` reads it when a cell starts (in this process: ``workers=1``; a worker process
    has the tags it was forked with and no durations, so its lines in its log carry the stage's ETA only)."""

    def __init__(self) -> None:
        self.tags: dict[str, tuple[str, str]] = {}  # cell hash -> (tag, label)
        self.durations: dict[str, float] = {}  # cell hash -> seconds
        self.pending: list[str] = []  # cells of this run still to compute, in order

    def estimate(self, cell: str) -> tuple[float | None, float | None]:
        """(this cell's expected seconds, the seconds of the pending cells after it), or None where nothing has
        finished yet: the mean duration of this run's finished cells of the same label, else of all of them."""
        if not self.durations:
            return None, None
        mean = sum(self.durations.values()) / len(self.durations)
        by_label: dict[str, list[float]] = {}
        for c, seconds in self.durations.items():
            by_label.setdefault(self.tags.get(c, ("", ""))[1], []).append(seconds)

        def expected(c: str) -> float:
            same = by_label.get(self.tags.get(c, ("", ""))[1])
            return sum(same) / len(same) if same else mean

        rest = [c for c in self.pending if c != cell and c not in self.durations]
        return expected(cell), sum(expected(c) for c in rest)


class RunContext:
    """Everything one ``bench run`` command loaded and did in this process.

    ``args``: the command line without launcher keys (what another process plans again); ``plan``: made from it
    on first use unless given. One :class:`Store` and one :class:`StageLog` per suite: the log is what
    ``force=true`` recomputes once per run and what each record counts. ``planned``: the bytes the run was
    estimated to need per suite store; ``finished``: the cells whose records this process wrote, as
    ``"label seed=N"``; both go into the message of a failed write (:meth:`explain`).
    """

    def __init__(self, args: list[str], plan: Plan | None = None):
        self.args = list(args)
        self._plan = plan
        self.contexts: dict[str, SuiteContext] = {}  # suite config hash -> loaded suite
        self.stores: dict[str, Store] = {}  # suite name -> its store
        self.logs: dict[str, StageLog] = {}  # suite name -> the stages this run reused and computed there
        self.planned: dict[str, int] = {}  # absolute suite store -> bytes this run was estimated to need
        self.finished: list[str] = []
        self.progress = RunProgress()

    def __reduce__(self) -> tuple[Any, ...]:
        # another process gets the command line, not the loaded tensors and plug-in classes: it plans again
        return (RunContext, (self.args,))

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = make_plan(self.args)
        return self._plan

    def store(self, suite: str) -> Store:
        if suite not in self.stores:
            self.stores[suite] = Store(self.plan.results_dir, suite)
        return self.stores[suite]

    def log(self, suite: str) -> StageLog:
        return self.logs.setdefault(suite, StageLog())

    def context(self, suite: SuiteConfig, out: TextIO | None = None) -> SuiteContext:
        """The loaded suite (data, encoded tensors, backbone template), loaded once per configuration; with
        ``out``, its notes and load time are printed there."""
        key = content_hash(suite.model_dump(mode="json"))
        if key not in self.contexts:
            t0 = time.perf_counter()
            self.contexts[key] = SuiteContext.load(suite, self.store(suite.name))
            if out is not None:
                for note in self.contexts[key].data.notes:
                    print(f"note: {note}", file=out)
                print(f"loaded suite {suite.name!r} in {time.perf_counter() - t0:.1f}s "
                      f"(data fingerprint {self.contexts[key].data.fingerprint})", file=out, flush=True)
        return self.contexts[key]

    def explain(self, err: StoreError) -> StoreError:
        """``err`` restated with what this run knows: the space it was estimated to need and the cells it
        finished (a failed write deep in a stage knows neither)."""
        cause = err.__cause__
        if cause is None or not err.path:
            return err
        root = suite_root(Path(err.path))
        needed = None
        if root is not None:
            needed = next((self.planned[k] for k in (str(root), str(root.parent)) if k in self.planned), None)
        return as_store_error(cause, Path(err.path), needed, self.finished) or err
