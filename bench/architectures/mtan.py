"""``mtan`` (Liu et al. 2019, the architecture of the NYUv2 tables): task attention over the shared features.

On feature maps m_1..m_S (shallow to deep) task t computes, stage by stage,

    a_1 = g_1(m_1) ⊙ m_1,    a_i = g_i([m_i, f_{i-1}(a_{i-1})]) ⊙ m_i   (i > 1)

where g_i is the attention mask (1x1 conv, BN, ReLU, 1x1 conv, BN, sigmoid: hidden width C_i // ``reduction``) and
f_i a 3x3 conv, BN and ReLU to the next stage's channels, max-pooled to the next stage's size. The task's head reads
(a_1, ..., a_S): the backbone's maps, each scaled by the task's mask, so the view's shape is the backbone's.

The original shares f across tasks, downstream of the task-specific masks: then no cut z exists (a shared
parameter downstream of a task's own module). Here f is each task's own by default, so every MTAN module is in a
tower and z is a tap of the backbone's maps (``shared_f=true`` restores the original: f then counts as shared and
z is None, so gradient balancers need ``via=params``). docs/architectures.md gives the parameter cost.

On a pooled or token vector (a head that reads one) the attention is the single-stage case, a feature-wise mask:
a = σ(W_2 ReLU(W_1 x)) ⊙ x (the 1x1 convs of g on a 1x1 map are linear layers; no BN on vectors).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from bench.architectures.base import Architecture, register_architecture
from bench.architectures.blocks import fit, parts, tap
from bench.backbones.base import FeatureMaps, ViewShape
from bench.config import Frozen


class MTANParams(Frozen):
    reduction: int = Field(4, ge=1)  # g's hidden width = channels // reduction (4: LibMTL's ResNet-50 NYUv2 setup)
    shared_f: bool = False  # true: f shared by every task, as in the original (no cut z: via=params only)


def mask(c_in: int, c_out: int, reduction: int) -> nn.Module:
    """g: the attention mask on a map (as LibMTL's ``_att_layer``), values in (0, 1)."""
    hidden = max(1, c_out // reduction)
    return nn.Sequential(nn.Conv2d(c_in, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(),
                         nn.Conv2d(hidden, c_out, 1), nn.BatchNorm2d(c_out), nn.Sigmoid())


def shared_block(c_in: int, c_out: int) -> nn.Module:
    """f: the attention path's 3x3 conv to the next stage's channels (the original MTAN's ``conv_layer``)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


def f_blocks(channels: tuple[int, ...]) -> nn.ModuleList:
    return nn.ModuleList(shared_block(a, b) for a, b in zip(channels[:-1], channels[1:]))


class MapAttention(nn.Module):
    """One task's attention over the stage maps: its masks g (and its f, unless f is shared)."""

    def __init__(self, channels: tuple[int, ...], reduction: int, own_f: bool):
        super().__init__()
        self.g = nn.ModuleList(mask(c if i == 0 else 2 * c, c, reduction) for i, c in enumerate(channels))
        self.f = f_blocks(channels) if own_f else None

    def forward(self, maps: FeatureMaps, f: nn.ModuleList | None = None) -> FeatureMaps:
        f = self.f if self.f is not None else f
        out, a = [], None
        for i, m in enumerate(maps.maps):
            x = m if a is None else torch.cat([m, fit(a, m)], dim=1)
            att = self.g[i](x) * m
            out.append(att)
            if i < len(maps.maps) - 1:
                a = f[i](att)
        return FeatureMaps(tuple(out), maps.size)


class VectorAttention(nn.Module):
    """One task's feature-wise attention on a pooled or token vector."""

    def __init__(self, dim: int, reduction: int):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.g = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim), nn.Sigmoid())

    def forward(self, x: torch.Tensor, f: Any = None) -> torch.Tensor:
        return self.g(x) * x


@register_architecture("mtan")
class MTAN(Architecture):
    """MTAN: per-task attention masks over the shared features, stage by stage (Liu et al. 2019)."""

    Params = MTANParams

    def __init__(self, shapes: dict[str, ViewShape], kinds: dict[str, Any], params: MTANParams):
        super().__init__(shapes, kinds, params)
        maps = shapes.get("maps")
        if params.shared_f and maps is not None and "maps" in self.reads.values():
            self.f = f_blocks(maps.channels)
        for t, v in self.reads.items():
            self.towers[t] = MapAttention(shapes[v].channels, params.reduction, not params.shared_f) \
                if v == "maps" else VectorAttention(shapes[v].dim, params.reduction)

    def forward(self, views: dict[str, Any], tasks: list[str]) -> tuple[dict[str, Any], Any]:
        out: dict[str, Any] = {}
        z: list = []
        f = getattr(self, "f", None)
        for v in sorted({self.reads[t] for t in tasks}):
            entry = tap(views[v])  # every task reads the backbone's view through this tap, a part of z
            z += list(parts(entry))
            for t in (t for t in tasks if self.reads[t] == v):
                out[t] = self.towers[t](entry, f)
        # with a shared f downstream of each task's masks there is no cut
        return out, (None if f is not None and "maps" in {self.reads[t] for t in tasks} else tuple(z))
