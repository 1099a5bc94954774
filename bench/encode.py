"""Model-ready tensors for every task and split, cached on disk.

Raw inputs are turned into tensors once per (data fingerprint, preprocessor key, split) and reused by every stage,
cell and later run; text is stored ragged and padded per batch, images at their native size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import safestate
from bench.backbones.base import Preprocessor
from bench.config import SuiteConfig, TrainConfig
from bench.data.base import Split, SuiteData, subsample
from bench.store import sweep_partial
from bench.tasks import task_kind


@dataclass
class EncodedSplit:
    """One task's split, ready for batching: preprocessed inputs, targets, per-example lengths (text)."""

    encoded: dict[str, Any]
    targets: dict[str, torch.Tensor]
    lengths: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.targets.values())))


def _encode_cached(pre: Preprocessor, split: Split, cache: Path | None, tag: str) -> dict[str, Any]:
    """``pre.encode(split.inputs)``, read from or written to ``cache``: tensors and arrays in safetensors, the rest in
    its JSON header (:mod:`bench.safestate`), so reading a cache never unpickles anything. A file that cannot be read
    (torn, or a ``.pt`` pickle of an older version) is recomputed, never trusted; an encoding that holds something
    other than tensors, arrays, numbers and strings is used uncached."""
    if cache is None:
        return pre.encode(split.inputs)
    key = hashlib.sha256(f"{tag}|{pre.key}".encode()).hexdigest()[:20]
    path = cache / f"{key}.safetensors"
    writable = _writable(cache)  # a read-only store (an archive) still reads its cache, and never writes it
    old = cache / f"{key}.pt"
    if writable and old.exists():
        old.unlink(missing_ok=True)  # an older version's pickle: never read
    if path.exists():
        try:
            return safestate.load(path, "encoded", device="cpu")
        except safestate.StateError:
            if writable:
                path.unlink(missing_ok=True)
    enc = pre.encode(split.inputs)
    if not writable:
        return enc
    cache.mkdir(parents=True, exist_ok=True)
    sweep_partial(cache)  # encodings a killed run left half-written
    try:
        safestate.save(enc, path, "encoded")
    except (TypeError, ValueError):  # a plugin preprocessor's own objects: fine in memory, not storable without pickle
        pass
    return enc


def _writable(folder: Path) -> bool:
    """Whether ``folder`` (or its nearest existing parent, where it would be created) can be written."""
    import os

    folder = Path(folder)
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def encode_suite(suite: SuiteConfig, data: SuiteData, pre: Preprocessor, train: TrainConfig,
                 cache: Path | None) -> dict[str, dict[str, EncodedSplit]]:
    """Subsample to the budget (fixed, seeded by the split seed) and encode every split of every task."""
    out: dict[str, dict[str, EncodedSplit]] = {}
    shared: dict[int, dict[str, EncodedSplit]] = {}  # single-input suites encode the shared inputs once
    seed = suite.split.seed
    kinds = {t.name: task_kind(t) for t in suite.tasks}
    inputs = {t.name: t.input for t in suite.tasks}
    for name, splits in data.splits.items():
        key = id(splits)
        if key in shared:
            out[name] = shared[key]
            continue
        enc_splits = {}
        for split_name, split in splits.items():
            limit = train.max_train_samples if split_name == "train" else train.max_eval_samples
            sub = subsample(split, limit, seed + 7, kinds[name].stratify(split.targets[name]))
            tag = f"{data.task_fingerprints[name]}|{split_name}|{limit}"
            own = pre.for_input(inputs[name])  # the preprocessor itself unless the backbone is cross-modal
            enc = _encode_cached(own, sub, cache, tag)
            targets = {t: kinds[t].encode_targets(y, enc) for t, y in sub.targets.items() if t in kinds}
            enc_splits[split_name] = EncodedSplit(enc, targets, own.lengths(enc))
        shared[key] = enc_splits
        out[name] = enc_splits
    return out
