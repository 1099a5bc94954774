"""A task's split as batches on a device, for strategies and data-aware methods (:meth:`Stages.batches`): a
sequence whose item ``i`` is a pure function of ``i``, so a loop over it resumes exactly."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from bench.engine import Data


class Batches(Sequence[dict[str, Any]]):
    """One task's split as a sequence of batches on a device: ``{"inputs": {...}, "targets": {task: tensor}}``
    (on a single-input suite the targets of every task that labels these inputs).

    ``len()`` is one pass; ``batches[i]`` for any ``i >= 0`` is batch ``i mod len`` of pass ``i // len``, and with
    ``shuffle`` every pass has its own seeded order, so ``batches[step]`` is a pure function of ``step`` (what a
    resumable loop needs). ``limit`` keeps the first ``limit`` examples of the split's fixed order.
    """

    def __init__(self, data: Data, collate, task: str, split: str, batch_size: int, device: torch.device,
                 shuffle: bool, limit: int | None, seed: int):
        self.es = data[task][split]
        self.task, self.split, self.collate, self.device = task, split, collate, device
        self.n = min(len(self.es), limit) if limit else len(self.es)
        self.bs, self.shuffle, self.seed = max(1, min(batch_size, self.n)), shuffle, seed
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return math.ceil(self.n / self.bs)

    def _pass_order(self, p: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        if self._order is None or self._order[0] != p:
            self._order = (p, np.random.default_rng([self.seed, p]).permutation(self.n))
        return self._order[1]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        p, j = divmod(int(i), len(self))
        idx = self._pass_order(p)[j * self.bs:(j + 1) * self.bs]
        x = self.collate(self.es.encoded, idx)
        rows = torch.as_tensor(idx)
        return {"inputs": {k: v.to(self.device) for k, v in x.items()},
                "targets": {t: y[rows].to(self.device) for t, y in self.es.targets.items()}}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

