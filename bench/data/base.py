"""Sources, splits and fingerprints.

A *source* is a registered function ``(spec, tasks, split_cfg) -> {split_name: Split}`` that returns raw examples.
Multi-input suites call it once per task (``tasks`` has one element); single-input suites call it once for the
whole suite, and every task reads its own target column from the same :class:`Split` objects.

Splits that a source lacks are carved from its train split here, seeded and stratified, once: the split seed is a
property of the suite, not of the run, so every seed of every strategy sees the same examples.

Example (a source in five lines; it has only a train split, so test and validation are carved from it):
    >>> import numpy as np
    >>> @register_source("toy_doc")
    ... def toy(spec, tasks, split_cfg):
    ...     x = np.arange(40, dtype=np.float32).reshape(20, 2)
    ...     return {"train": Split(x, {tasks[0].name: np.arange(20) % 2})}
    >>> suite = SuiteConfig(name="toy", backbone={"source": "mlp"}, tasks=[
    ...     {"name": "odd", "input": "vector", "target": "classification", "num_classes": 2,
    ...      "data": {"source": "toy_doc"}}])
    >>> data = load_suite_data(suite)
    >>> {name: len(split) for name, split in data.splits["odd"].items()}  # test 0.2 of 20, validation 0.1 of 16
    {'train': 14, 'test': 4, 'validation': 2}
    >>> data.task_fingerprints == load_suite_data(suite).task_fingerprints  # the same examples every time
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.config import DataSpec, SplitConfig, SuiteConfig, TaskConfig
from bench.errors import BenchError
from bench.registry import Registry
from bench.tasks import task_kind

Source = Callable[[DataSpec, list[TaskConfig], SplitConfig], dict[str, "Split"]]
SOURCES: Registry[Source] = Registry("data source")
EVAL_SPLITS = ("validation", "test")


def register_source(name: str) -> Callable[[Source], Source]:
    return SOURCES.register(name)


class MissingData(BenchError):
    """The files behind a source are absent. Optional tasks are skipped with this message as the note."""


@dataclass
class Split:
    """Examples of one split.

    ``inputs``: ``list[str]`` (text), ``list[tuple[str, str]]`` (text pairs) or an ``np.ndarray`` of shape
    ``(N, ...)`` (vectors; images as ``(N, H, W)`` or ``(N, C, H, W)``, uint8 or float).
    ``targets``: task name -> ``(N,)`` array, int64 class ids or float32 scores.
    """

    inputs: Any
    targets: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, idx: np.ndarray) -> Split:
        idx = np.asarray(idx, dtype=np.int64)
        if isinstance(self.inputs, np.ndarray):
            inputs = self.inputs[idx]
        else:
            inputs = [self.inputs[i] for i in idx]
        return Split(inputs, {k: v[idx] for k, v in self.targets.items()})


@dataclass
class SuiteData:
    """The fixed splits of every task of a suite, with fingerprints.

    ``splits[task][split]`` is a :class:`Split`. Single-input suites share one Split object across tasks.
    """

    splits: dict[str, dict[str, Split]]
    task_fingerprints: dict[str, str]
    notes: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.task_fingerprints):
            h.update(f"{name}={self.task_fingerprints[name]};".encode())
        return h.hexdigest()[:16]

    @property
    def task_names(self) -> list[str]:
        return list(self.splits)


def fingerprint_split(split: Split, task: str) -> str:
    """A content hash of the inputs and this task's targets (order-sensitive: it pins the split too)."""
    h = hashlib.sha256()
    if isinstance(split.inputs, np.ndarray):
        h.update(str(split.inputs.shape).encode())
        h.update(str(split.inputs.dtype).encode())
        h.update(np.ascontiguousarray(split.inputs).tobytes())
    else:
        for item in split.inputs:  # text, a text pair, a tuple of words, or an (image, text) pair
            if isinstance(item, tuple) and item and isinstance(item[0], np.ndarray):
                h.update(f"{item[0].shape}{item[0].dtype}".encode() + np.ascontiguousarray(item[0]).tobytes())
                item = item[1:]
            h.update(("\x1f".join(item) if isinstance(item, tuple) else item).encode("utf-8", "replace"))
            h.update(b"\x1e")
    y = np.asarray(split.targets[task])
    h.update(str(y.dtype).encode())
    if y.dtype == object:  # ragged targets (a tag array per sentence): hash their contents, not their addresses
        for row in y:
            h.update(np.ascontiguousarray(row, dtype=np.int64).tobytes())
            h.update(b"\x1e")
    else:
        h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def stratified_carve(split: Split, fraction: float, seed: int, stratify: np.ndarray | None) -> tuple[Split, Split]:
    """Split off ``fraction`` of ``split`` (stratified by ``stratify`` when given). Returns (rest, carved)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(split))
    strat = stratify
    if strat is not None:
        _, counts = np.unique(strat, return_counts=True)
        if counts.min() < 2:  # a class with one example cannot be stratified
            strat = None
    rest, carved = train_test_split(idx, test_size=fraction, random_state=seed, shuffle=True, stratify=strat)
    return split.take(np.sort(rest)), split.take(np.sort(carved))


def _validate_targets(split: Split, task: TaskConfig, where: str) -> None:
    if task.name not in split.targets:
        raise BenchError(f"{where}: no target column for task {task.name!r}; add it to the data or fix 'label'")
    y = split.targets[task.name]
    if len(y) != len(split):
        raise BenchError(f"{where}: {len(y)} targets for {len(split)} inputs in task {task.name!r}")
    kind = task_kind(task)
    kind.check_targets(y, where)
    kind.check_inputs(split.inputs, y, where)


def _complete_splits(raw: dict[str, Split], tasks: list[TaskConfig], cfg: SplitConfig, where: str) -> dict[str, Split]:
    if "train" not in raw:
        raise BenchError(f"{where}: the source returned no 'train' split")
    first = task_kind(tasks[0])
    strat = lambda s: first.stratify(s.targets[first.task.name])  # noqa: E731
    out = dict(raw)
    if "test" not in out:
        out["train"], out["test"] = stratified_carve(out["train"], cfg.test, cfg.seed, strat(out["train"]))
    if "validation" not in out:
        out["train"], out["validation"] = stratified_carve(out["train"], cfg.validation, cfg.seed + 1,
                                                           strat(out["train"]))
    for name, split in out.items():
        for t in tasks:
            _validate_targets(split, t, f"{where} [{name}]")
    return out


def _without_unlabel(spec: DataSpec) -> tuple[DataSpec, dict[str, float]]:
    """The spec the source sees (the ``unlabel`` option is the base's, not the source's), and that option."""
    if "unlabel" not in spec.options:
        return spec, {}
    opts = dict(spec.options)
    unlabel = opts.pop("unlabel")
    if not isinstance(unlabel, dict) or not all(isinstance(v, (int, float)) and 0 <= v < 1 for v in unlabel.values()):
        raise BenchError(f"data option unlabel={unlabel!r}: give {{task: fraction}} with fractions in [0, 1)")
    return DataSpec(source=spec.source, options=opts), {str(k): float(v) for k, v in unlabel.items()}


def unlabel(splits: dict[str, Split], tasks: list[TaskConfig], fractions: dict[str, float], seed: int) -> None:
    """Remove the labels of a seeded ``fraction`` of each split's examples, per task (``unlabel: {task: fraction}``):
    a partial-label ablation on any suite. The examples stay (their inputs and other tasks' labels); which ones lose
    a label is fixed by the split seed and the task's name, so every run of the suite sees the same holes."""
    by_name = {t.name: t for t in tasks}
    for name, fraction in fractions.items():
        if name not in by_name:
            raise BenchError(f"data option unlabel names task {name!r}, not one of {', '.join(by_name)}; fix it")
        kind = task_kind(by_name[name])
        for split_name, split in sorted(splits.items()):
            key = int(hashlib.sha256(f"{seed}|{name}|{split_name}".encode()).hexdigest()[:8], 16)
            idx = np.sort(np.random.default_rng(key).permutation(len(split))[: round(fraction * len(split))])
            split.targets[name] = kind.unlabel(split.targets[name], idx)


def load_suite_data(suite: SuiteConfig) -> SuiteData:
    """Load every task of ``suite`` with fixed splits. Optional tasks whose files are absent are dropped with a note."""
    splits: dict[str, dict[str, Split]] = {}
    notes: list[str] = []
    if suite.kind == "single_input":
        assert suite.data is not None
        source = SOURCES.get(suite.data.source)
        spec, holes = _without_unlabel(suite.data)
        raw = source(spec, list(suite.tasks), suite.split)
        # single-input tasks read their own column: rename label -> task name
        raw = {k: Split(s.inputs, {t.name: s.targets[t.label or t.name] for t in suite.tasks
                                   if (t.label or t.name) in s.targets}) for k, s in raw.items()}
        shared = _complete_splits(raw, list(suite.tasks), suite.split, f"suite {suite.name!r} data")
        unlabel(shared, list(suite.tasks), holes, suite.split.seed)
        for t in suite.tasks:
            splits[t.name] = shared
    else:
        for t in suite.tasks:
            assert t.data is not None
            source = SOURCES.get(t.data.source)
            spec, holes = _without_unlabel(t.data)
            try:
                raw = source(spec, [t], suite.split)
            except MissingData as e:
                if t.optional:
                    notes.append(f"skipped optional task {t.name!r}: {e}")
                    continue
                raise
            splits[t.name] = _complete_splits(raw, [t], suite.split, f"task {t.name!r}")
            unlabel(splits[t.name], [t], holes, suite.split.seed)
    if not splits:
        raise BenchError(f"suite {suite.name!r}: no task has data; {'; '.join(notes)}")
    fps = {name: hashlib.sha256("".join(fingerprint_split(s[k], name) for k in sorted(s)).encode()).hexdigest()[:16]
           for name, s in splits.items()}
    return SuiteData(splits, fps, notes)


def subsample(split: Split, n: int | None, seed: int, stratify: np.ndarray | None = None) -> Split:
    """A fixed, seeded subset of at most ``n`` examples (stratified when labels are given)."""
    if n is None or n >= len(split):
        return split
    rest, carved = stratified_carve(split, n / len(split), seed, stratify)
    return carved
