"""What a stage's cache key is made of: implementation versions, the training settings that change a result, the
frozen backbone parameters, the content hash of pre-trained weights. (The source hash of the plug-in file behind a
method, :func:`bench.plugins.hashing.plugin_source`, enters the key of what it computed too.)

Each stage is cached in the store under a hash of everything that changes its output, so a key must hold every
such input and nothing else (a setting that changes speed or placement only is left out).
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch

from bench.checkpoint import weights_hash  # noqa: F401 (a key's weights hash: bench.stages exports it)
from bench.config import SPEED_KNOBS, TrainConfig
from bench.errors import BenchError

# Bump a stage's number when its semantics change, so old cache entries are not reused (and records say which
# implementation made each stage). 2: paired seeds, kept predictions, matched budgets, weights hash in init's key.
STAGE_VERSIONS = {"init": 2, "finetune": 2, "fuse": 2, "joint": 2, "evaluate": 2, "assemble": 1}
STAGE_VERSION = max(STAGE_VERSIONS.values())  # part of a cell's hash
_NOT_IN_KEY = {*SPEED_KNOBS, "eval_batch_size", "device"}  # changes speed or placement, not the result


def train_key(train: TrainConfig) -> dict[str, Any]:
    """The ``train.*`` settings of a stage that change its result (its key's ``train`` entry)."""
    return {k: v for k, v in train.model_dump().items() if k not in _NOT_IN_KEY}


def frozen_names(backbone: torch.nn.Module, freeze: str | list[str] | None) -> set[str]:
    """The backbone parameters a ``freeze=`` spec names: ``"backbone"`` (all of them: a linear probe), or
    ``fnmatch`` patterns over parameter names (``"embeddings.*"``, ``["encoder.layer.[0-5].*"]``). A pattern that
    matches nothing is a one-line error (a typo must not silently train everything)."""
    if not freeze:
        return set()
    names = [n for n, _ in backbone.named_parameters()]
    if freeze == "backbone":
        return set(names)
    out: set[str] = set()
    for pattern in [freeze] if isinstance(freeze, str) else list(freeze):
        hits = fnmatch.filter(names, str(pattern))
        if not hits:
            raise BenchError(f"freeze={pattern!r} matches no backbone parameter; give 'backbone' or a pattern "
                             f"such as {names[0].split('.')[0]}.* (parameters: {', '.join(names[:4])}, ...)")
        out.update(hits)
    return out
