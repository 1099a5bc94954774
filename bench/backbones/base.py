"""The backbone and preprocessor interfaces, and the factory."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.config import BackboneConfig, InputKind
from bench.registry import Registry


class Backbone(nn.Module):
    """A shared encoder: ``forward(**batch) -> (B, out_dim)`` features (the pooled vector).

    ``outputs`` names what it can give a head: ``"pooled"`` always; ``"tokens"`` (B, L, out_dim) for sequence
    encoders, from :meth:`features` (a task kind's ``reads`` picks one, :mod:`bench.tasks`).

    ``shared_layer`` names the last shared layer (a submodule path) whose gradients GradNorm measures; a suite may
    override it with ``strategy.last_shared_layer``. :meth:`shared_parameters` declares what every task shares: the
    parameters gradient-level balancers take per-task gradients of.
    """

    out_dim: int
    shared_layer: str
    outputs: tuple[str, ...] = ("pooled",)

    def features(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output of ``outputs`` from one pass (a sequence encoder overrides this to add ``"tokens"``)."""
        return {"pooled": self(**batch)}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters all tasks share (default: every trainable parameter of the backbone)."""
        return [p for p in self.parameters() if p.requires_grad]


class Preprocessor(ABC):
    """Turns raw inputs of one split into model-ready arrays once (cached), and rows of them into batches.

    ``key`` identifies the transform (tokenizer and max length, image size and normalisation) for the on-disk cache.
    """

    key: str

    @abstractmethod
    def encode(self, inputs: Any) -> dict[str, Any]:
        """Raw inputs -> a dict of equal-length per-example arrays (lists of ragged arrays allowed for text)."""

    @abstractmethod
    def collate(self, encoded: dict[str, Any], idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows ``idx`` of ``encoded`` -> a batch of tensors (text: padded to the longest row in the batch)."""

    def lengths(self, encoded: dict[str, Any]) -> np.ndarray | None:
        """Per-example cost for length-sorted evaluation (text); None when every example costs the same."""
        return None


BackboneFactory = Callable[[BackboneConfig, InputKind, Any], tuple[Backbone, Preprocessor]]
BACKBONES: Registry[BackboneFactory] = Registry("backbone source")


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    return BACKBONES.register(name)


def build_backbone(cfg: BackboneConfig, input_kind: InputKind, sample: Any) -> tuple[Backbone, Preprocessor]:
    """Build the backbone named by ``cfg`` for inputs like ``sample`` (a few raw training inputs)."""
    return BACKBONES.get(cfg.source)(cfg, input_kind, sample)
