"""The backbone and preprocessor interfaces, and the factory."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.config import BackboneConfig, InputKind
from bench.registry import Registry


@dataclass(frozen=True)
class FeatureMaps:
    """The ``maps`` view: a backbone's feature maps from one pass, shallow to deep, each ``(B, C_i, H_i, W_i)``, and
    ``size``, the ``(H, W)`` of the input as given (before any resize): the resolution of the label maps, at which
    a dense head predicts."""

    maps: tuple[torch.Tensor, ...]
    size: tuple[int, int]


@dataclass(frozen=True)
class ViewShape:
    """What a head is built on: ``dim``, the width of pooled and token vectors; for the ``maps`` view also each
    map's ``channels`` and ``strides`` (relative to the backbone's working resolution), shallow to deep."""

    dim: int
    channels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()


class Backbone(nn.Module):
    """A shared encoder: ``forward(**batch) -> (B, out_dim)`` features (the pooled vector).

    ``outputs`` names what it can give a head: ``"pooled"`` always; ``"tokens"`` (B, L, out_dim) for sequence
    encoders; ``"maps"`` (a :class:`FeatureMaps`; the backbone then sets ``map_channels`` and ``map_strides``) for
    image encoders with stages, all from one pass of :meth:`features` (a task kind's ``reads`` picks one,
    :mod:`bench.tasks`).

    ``shared_layer`` names the last shared layer (a submodule path) whose gradients GradNorm measures; a suite may
    override it with ``strategy.last_shared_layer``. :meth:`shared_parameters` declares what every task shares: the
    parameters gradient-level balancers take per-task gradients of.
    """

    out_dim: int
    shared_layer: str
    outputs: tuple[str, ...] = ("pooled",)
    map_channels: tuple[int, ...] = ()
    map_strides: tuple[int, ...] = ()

    def features(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output of ``outputs`` from one pass (a sequence encoder overrides this to add ``"tokens"``)."""
        return {"pooled": self(**batch)}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters all tasks share (default: every trainable parameter of the backbone)."""
        return [p for p in self.parameters() if p.requires_grad]

    def view_shapes(self) -> dict[str, ViewShape]:
        """The shape of every view in ``outputs``."""
        maps = ViewShape(self.out_dim, tuple(self.map_channels), tuple(self.map_strides))
        return {v: maps if v == "maps" else ViewShape(self.out_dim) for v in self.outputs}


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

    def for_input(self, kind: InputKind) -> Preprocessor:
        """The preprocessor of the tasks whose input is ``kind``. A backbone takes one input kind (itself); a
        cross-modal one (:mod:`bench.backbones.crossmodal`) returns its modality's view, whose encodings its
        :meth:`collate` tells apart by their keys. A suite whose tasks have several input kinds needs a backbone
        that overrides this."""
        return self


BackboneFactory = Callable[[BackboneConfig, InputKind, Any], tuple[Backbone, Preprocessor]]
BACKBONES: Registry[BackboneFactory] = Registry("backbone source")


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    return BACKBONES.register(name)


def build_backbone(cfg: BackboneConfig, input_kind: InputKind, sample: Any) -> tuple[Backbone, Preprocessor]:
    """Build the backbone named by ``cfg`` for inputs like ``sample`` (a few raw training inputs)."""
    return BACKBONES.get(cfg.source)(cfg, input_kind, sample)
