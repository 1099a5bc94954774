"""Batches for the engine: chosen in the main process, gathered (and pinned) by DataLoader workers.

Which rows form which batch is decided by the trainer's seeded generators, in the main process, one epoch at a
time; workers only gather and pad the rows they are told to. So ``train.num_workers`` changes speed, never results,
and a run resumed at an epoch boundary replays exactly.

Example (rows 4 and 1, then row 0, of a six-row split; two worker processes gather the same batches):
    >>> from bench.backbones.simple import ArrayPreprocessor
    >>> from bench.encode import EncodedSplit
    >>> pre = ArrayPreprocessor("doc")
    >>> data = {"a": {"train": EncodedSplit(pre.encode(np.arange(12.0).reshape(6, 2)), {"a": torch.arange(6) % 2},
    ...                                     None)}}
    >>> specs = [BatchSpec("a", "train", np.array([4, 1]), ("a",)), BatchSpec("a", "train", np.array([0]), ("a",))]
    >>> for spec, batch in Feeder(data, pre.collate).run(specs):
    ...     print(batch["inputs"]["x"].tolist(), batch["targets"]["a"].tolist())
    [[8.0, 9.0], [2.0, 3.0]] [0, 1]
    [[0.0, 1.0]] [0]
    >>> with Feeder(data, pre.collate, workers=2) as feeder:
    ...     [batch["inputs"]["x"].tolist() for _, batch in feeder.run(specs)]
    [[[8.0, 9.0], [2.0, 3.0]], [[0.0, 1.0]]]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

Collate = Callable[[dict[str, Any], np.ndarray], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class BatchSpec:
    """Rows ``idx`` of task ``task``'s ``split``, with the targets of ``targets`` (several tasks on a shared input)."""

    task: str
    split: str
    idx: np.ndarray
    targets: tuple[str, ...] = ()


def auto_workers(device: torch.device) -> int:
    """Workers when ``train.num_workers`` is unset: none on the CPU, where they would take cores from the model's
    own threads; on a GPU enough to hide collation behind the previous step (batches are cheap slices)."""
    if device.type != "cuda":
        return 0
    return max(1, min(4, (os.cpu_count() or 2) // 2))


class _Rows(Dataset):
    """Map-style dataset whose keys are :class:`BatchSpec`: one item is one collated batch."""

    def __init__(self, data: dict[str, dict[str, Any]], collate: Collate):
        self.data, self.collate = data, collate

    def __getitem__(self, spec: BatchSpec) -> dict[str, Any]:
        es = self.data[spec.task][spec.split]
        idx = torch.from_numpy(np.asarray(spec.idx, dtype=np.int64))
        return {"inputs": self.collate(es.encoded, spec.idx),
                "targets": {t: es.targets[t][idx] for t in spec.targets}}

    def __len__(self) -> int:  # unused: the sampler decides what is read
        return 0


class _Plan(Sampler):
    """The specs of the current pass; replaced before each pass (it lives in the main process, so persistent
    workers see each new plan without restarting)."""

    def __init__(self) -> None:
        self.specs: list[BatchSpec] = []

    def __iter__(self) -> Iterator[BatchSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


class Feeder:
    """Turns lists of :class:`BatchSpec` into collated batches, in order, optionally in worker processes."""

    def __init__(self, data: dict[str, dict[str, Any]], collate: Collate, workers: int = 0, pin: bool = False):
        self.rows = _Rows(data, collate)
        self.plan = _Plan()
        self.loader = None
        if workers:
            # fork: workers inherit the encoded tensors instead of unpickling a copy of every split
            self.loader = DataLoader(self.rows, batch_size=None, sampler=self.plan, num_workers=workers,
                                     pin_memory=pin, persistent_workers=True, prefetch_factor=4,
                                     multiprocessing_context="fork")

    def run(self, specs: list[BatchSpec]) -> Iterator[tuple[BatchSpec, dict[str, Any]]]:
        """Yield ``(spec, batch)`` for every spec, in order."""
        if self.loader is None:
            for spec in specs:
                yield spec, self.rows[spec]
            return
        self.plan.specs = list(specs)
        yield from zip(self.plan.specs, self.loader)

    def close(self) -> None:
        """Stop the workers (they would otherwise live as long as this object)."""
        if self.loader is not None:
            it = getattr(self.loader, "_iterator", None)
            if it is not None:
                it._shutdown_workers()
            self.loader = None

    def __enter__(self) -> Feeder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
