"""The Tracker interface: where a computed stage's curves, final metrics and configuration are also sent
(TensorBoard, Weights & Biases, MLflow, or a plug-in), so a run can be watched and compared in a familiar UI.

Trackers watch, they never decide. Nothing they are given enters a stage key, a cell hash or a result, and a stage
read from the store is not tracked again (it was logged when it was computed, under the cell that computed it). A
tracker opens one *run* per computed stage: :meth:`Tracker.start` when the stage starts computing,
:meth:`Tracker.log` at every logging interval of its training loop (every ``train.log_every`` steps) and after every
epoch's validation, :meth:`Tracker.finish` with the stage's final metrics, or with ``ok=False`` when it failed.

Example (a plug-in tracker; ``@register_tracker("print")`` on it, in any imported module such as a strategy file,
makes ``tracker=print`` work):

    >>> from pathlib import Path
    >>> class Print(Tracker):
    ...     '''Print every scalar (a tracker for the terminal).'''
    ...     def start(self, run):
    ...         print("start", run.group, run.name)
    ...     def log(self, step, scalars):
    ...         print(step, dict(scalars))
    ...     def finish(self, metrics, ok=True):
    ...         print("finish", dict(metrics), ok)
    >>> run = StageRun(suite="synthetic", root=Path("results/synthetic"), seed=0, cell="3f2a9c1b7d", label="naive_mtl",
    ...                stage="joint", key="8d7e6f5a4b", tasks=("clean", "cls2"), inputs={"weighting": "equal"})
    >>> t = Print()
    >>> t.start(run)
    start naive_mtl_s0_3f2a9c1b joint[equal]_8d7e6f5a
    >>> t.log(10, {"loss/total": 1.5})
    10 {'loss/total': 1.5}
    >>> t.finish({"test/clean/mse": 0.1})
    finish {'test/clean/mse': 0.1} True
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.errors import BenchError
from bench.plugins.registry import Registry


def register_tracker(name: str) -> Callable[[type[Tracker]], type[Tracker]]:
    """Class decorator: ``tracker=name`` logs to this class (one instance per computed stage; the registry sets
    ``cls.name``)."""
    return TRACKERS.register(name)


def _safe(text: str) -> str:
    """A path component (and a readable run name): anything but letters, digits and ``_.,=+-[]`` becomes ``_``."""
    return re.sub(r"[^\w.,=+\-\[\]]", "_", text)


@dataclass(frozen=True)
class StageRun:
    """One stage being computed, as a tracker sees it: which cell it belongs to, what it is, where local logs go."""

    suite: str
    root: Path  # results/<suite>/: local trackers write under it (tensorboard/, wandb/, mlflow/)
    seed: int
    stage: str  # init, finetune, fuse, joint, evaluate, or a strategy's own (stages.custom)
    key: str  # the stage's key in the store (stages/<stage>/<key>/)
    tasks: tuple[str, ...]
    inputs: Mapping[str, Any] = field(default_factory=dict)  # what the key hashes (its configuration)
    cell: str = ""  # the cell's hash ("" when stages run outside a cell)
    label: str = ""  # the cell's label (the leaderboard row it feeds)
    config: Mapping[str, Any] = field(default_factory=dict)  # the cell's resolved configuration

    @property
    def group(self) -> str:
        """The cell, readable: ``<label>_s<seed>_<cell hash[:8]>`` (TensorBoard folder, W&B group, MLflow tag)."""
        return _safe("_".join(p for p in (self.label, f"s{self.seed}", self.cell[:8]) if p))

    @property
    def name(self) -> str:
        """The stage, readable: ``finetune[clean]_<key[:8]>``, ``joint[pcgrad]_…``, ``fuse[ties]_…``."""
        what = self.tasks[0] if len(self.tasks) == 1 else self.inputs.get("weighting") or self.inputs.get("method")
        short = self.key[:8]
        return _safe(f"{self.stage}[{what}]_{short}" if isinstance(what, str) else f"{self.stage}_{short}")

    def full_config(self) -> dict[str, Any]:
        """What a tracker records as the run's configuration: the cell's, and this stage's identity and key inputs."""
        config = {**self.config, "suite": self.config.get("suite", self.suite), "seed": self.seed, "cell": self.cell,
                  "label": self.label, "stage": {"name": self.stage, "key": self.key, "tasks": list(self.tasks),
                                                 "inputs": dict(self.inputs)}}
        return json.loads(json.dumps(config, default=str))  # plain JSON types: every backend can store them


class Tracker(ABC):
    """One run of one backend for one computed stage. ``requires`` names the module it imports and the pip
    requirement that provides it: :meth:`check` fails with that line before any work when the module is missing."""

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, str] | None] = None  # (module, pip requirement), e.g. ("wandb", "mtbench[wandb]")

    @classmethod
    def check(cls) -> None:
        """Fail with one line (``BenchError``) when this tracker cannot run here (its package is missing)."""
        if cls.requires is not None and importlib.util.find_spec(cls.requires[0]) is None:
            module, requirement = cls.requires
            raise BenchError(f"tracker={cls.name} needs the {module} package: pip install '{requirement}'")

    @abstractmethod
    def start(self, run: StageRun) -> None:
        """Open the run (its folder, its configuration)."""

    @abstractmethod
    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record ``scalars`` at optimiser step ``step`` (steps only grow within a run)."""

    @abstractmethod
    def finish(self, metrics: Mapping[str, float], ok: bool = True) -> None:
        """Record the stage's final metrics (``<split>/<task>/<metric>``, ``telemetry/<name>``) and close the run;
        ``ok=False``: the stage failed or was interrupted (``metrics`` is then empty)."""


#: every tracker: the built-in modules of :mod:`bench.track` and the plug-ins register here
TRACKERS: Registry[type[Tracker]] = Registry("tracker", Tracker, builtins=("bench.track",), plugins=True)


def final_scalars(info: Mapping[str, Any]) -> dict[str, float]:
    """A computed stage's ``stage.json`` content as flat scalars: ``<split>/<task>/<metric>`` for every metric,
    ``best_epoch``, and ``telemetry/<name>`` for its numeric telemetry (throughput, peak memory, wall time)."""
    out: dict[str, float] = {}
    for split, per_task in info.get("metrics", {}).items():
        for task, per_metric in per_task.items():
            for metric, value in per_metric.items():
                out[f"{split}/{task}/{metric}"] = float(value)
    if isinstance(info.get("best_epoch"), int):
        out["best_epoch"] = float(info["best_epoch"])
    for k, v in info.get("telemetry", {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"telemetry/{k}"] = float(v)
    return out


class _Run:
    """Every tracker's run of one stage. A tracker that raises is reported in one line and dropped for the rest of
    the stage: a logging side channel must not fail (or change) a computation."""

    def __init__(self, classes: Sequence[type[Tracker]], run: StageRun):
        self.run, self.trackers, self.finished = run, [], False
        for cls in classes:
            tracker = cls()
            if self._call(tracker, tracker.start, run):
                self.trackers.append(tracker)

    def _call(self, tracker: Tracker, fn, *args) -> bool:
        try:
            fn(*args)
            return True
        except Exception as e:  # noqa: BLE001 (reported, never raised: see the class docstring)
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(f"warning: tracker={tracker.name} failed on stage {self.run.name} ({type(e).__name__}: {msg}); "
                  "it stops logging this stage, the stage goes on", file=sys.stderr)
            return False

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        values = {k: float(v) for k, v in scalars.items() if v is not None and math.isfinite(float(v))}
        if values:
            self.trackers = [t for t in self.trackers if self._call(t, t.log, int(step), values)]

    def finish(self, info: Mapping[str, Any] | None, ok: bool = True) -> None:
        if self.finished:
            return
        self.finished = True
        metrics = final_scalars(info or {}) if ok else {}
        for t in self.trackers:
            self._call(t, t.finish, metrics, ok)


class _NoRun:
    """What a stage logs to when nothing tracks it."""

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        pass

    def finish(self, info: Mapping[str, Any] | None, ok: bool = True) -> None:
        pass


NO_RUN = _NoRun()


class Tracking:
    """The trackers of one :class:`~bench.stages.Stages` (one cell): opens a run of every tracker for each stage
    it computes and sends the training loop's scalars to the innermost stage being computed (a custom stage may
    compute another stage inside its own ``compute``)."""

    def __init__(self, names: Sequence[str], *, suite: str, root: Path, seed: int, cell: str = "", label: str = "",
                 config: Mapping[str, Any] | None = None):
        self.classes = [TRACKERS.get(str(n)) for n in names]
        self.suite, self.root, self.seed = suite, Path(root), seed
        self.cell, self.label, self.config = cell, label, dict(config or {})
        self._open: list[_Run] = []

    @contextlib.contextmanager
    def stage(self, stage: str, key: str, inputs: Mapping[str, Any], tasks: Sequence[str]) -> Iterator[_Run]:
        """The runs of a stage being computed; call ``.finish(info)`` with the stage's info when it is done. Leaving
        the block by an exception (a NaN loss, Ctrl-C) closes them as failed and re-raises."""
        run = _Run(self.classes, StageRun(self.suite, self.root, self.seed, stage, key, tuple(tasks), dict(inputs),
                                          self.cell, self.label, self.config))
        self._open.append(run)
        try:
            yield run
        except BaseException:
            run.finish(None, ok=False)
            raise
        finally:
            self._open.remove(run)
        run.finish(None)  # a no-op when the block called finish(info)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Scalars of the stage being computed (what the engine's ``on_log`` calls)."""
        if self._open:
            self._open[-1].log(step, scalars)


def track_stage(tracking: Tracking | None, stage: str, key: str, inputs: Mapping[str, Any],
                tasks: Sequence[str]) -> contextlib.AbstractContextManager:
    """``tracking.stage(...)``, or a block whose run logs nothing when ``tracking`` is None."""
    if tracking is None:
        return contextlib.nullcontext(NO_RUN)
    return tracking.stage(stage, key, inputs, tasks)
