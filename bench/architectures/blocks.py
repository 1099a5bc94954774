"""What the built-in architectures are made of: views, private entry points (taps), light experts, gates, mixing.

A *view* is what a head reads: a vector (``pooled`` (B, D), or ``tokens`` (B, L, D): the modules act on the last
axis) or a :class:`~bench.backbones.base.FeatureMaps` (``maps``: the modules act on every stage map). The same
expert, gate and mixing code serves both, so every architecture works on pooled, token and map views alike.

**The cut z.** A gradient balancer with ``via=features`` takes each task's gradient with respect to z and
backpropagates one combined direction from z (:mod:`bench.weighting.jacobian`). That equals the true gradient only
when z is an *antichain of private entry points*: every path from a shared parameter to a head crosses exactly one
part of z, and no part of z is computed from another. A backbone map that the next stage also reads is not such a
part (its gradient would count the deeper stages twice); :func:`tap` makes one: the same values through a new
autograd node that only task-owned modules read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.backbones.base import FeatureMaps, ViewShape

View = torch.Tensor | FeatureMaps


def tap(view: View) -> View:
    """``view`` through a new autograd node (same storage, no copy), for task-owned modules only: a part of z."""
    if isinstance(view, FeatureMaps):
        return FeatureMaps(tuple(m.view_as(m) for m in view.maps), view.size)
    return view.view_as(view)


def parts(view: View) -> tuple[torch.Tensor, ...]:
    """The tensors of a view (or of a stack of views), as parts of z."""
    return tuple(view.maps) if isinstance(view, FeatureMaps) else (view,)


def gate_input(view: View) -> torch.Tensor:
    """What a gate reads: the vector itself (per token for tokens), or the deepest map averaged over its pixels."""
    if isinstance(view, FeatureMaps):
        return view.maps[-1].mean(dim=(-2, -1))
    return view


def gate_dim(shape: ViewShape, maps: bool) -> int:
    """The width of :func:`gate_input` for a view of this shape."""
    return shape.channels[-1] if maps else shape.dim


def stack(views: list[View]) -> View:
    """E views of one shape -> one view whose tensors have a leading expert axis: (E, B, ...)."""
    if isinstance(views[0], FeatureMaps):
        return FeatureMaps(tuple(torch.stack(ms) for ms in zip(*(v.maps for v in views))), views[0].size)
    return torch.stack(views)


def mix(stacked: View, weights: torch.Tensor) -> View:
    """Σ_e w_e · view_e. ``weights``: (E,) the same for every example (a cross-stitch unit's row), or (B, E) /
    (B, L, E) per example (a gate's softmax; per token for tokens)."""
    def one(t: torch.Tensor) -> torch.Tensor:
        w = weights if weights.dim() == 1 else weights.movedim(-1, 0)  # (E,) or (E, B[, L])
        w = w.reshape(*w.shape, *[1] * (t.dim() - w.dim()))
        return (t * w).sum(0)

    if isinstance(stacked, FeatureMaps):
        return FeatureMaps(tuple(one(m) for m in stacked.maps), stacked.size)
    return one(stacked)


def add(a: View, b: View) -> View:
    """The sum of two views of one shape."""
    if isinstance(a, FeatureMaps):
        return FeatureMaps(tuple(x + y for x, y in zip(a.maps, b.maps, strict=True)), a.size)
    return a + b


def fit(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``a`` at ``like``'s spatial size: max-pooled down (as MTAN's attention path is) or repeated up."""
    size = like.shape[-2:]
    if a.shape[-2:] == size:
        return a
    if a.shape[-2] >= size[0] and a.shape[-1] >= size[1]:
        return F.adaptive_max_pool2d(a, size)
    return F.interpolate(a, size=tuple(size), mode="nearest")


class VectorBlock(nn.Module):
    """A linear layer and a ReLU on the last axis: an MLP expert or a column layer on pooled or token vectors."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.linear(x))


class MapBlock(nn.Module):
    """One light conv block per stage map, channels kept (a depthwise 3x3 then a pointwise 1x1 conv and a ReLU: 9C +
    C² + C weights per stage, so an expert on EfficientNet-Lite0's maps costs 0.12M parameters, not the 1M of 3x3)."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.Conv2d(c, c, 1), nn.ReLU())
            for c in channels)

    def forward(self, maps: FeatureMaps) -> FeatureMaps:
        return FeatureMaps(tuple(block(m) for block, m in zip(self.stages, maps.maps, strict=True)), maps.size)


def block(shape: ViewShape, maps: bool, width: int | None, first: bool = True) -> nn.Module:
    """A light block on a view of ``shape``: :class:`MapBlock` on maps, :class:`VectorBlock` to ``width`` (None: the
    view's own) on vectors; ``first=False``: a block after another one (its input is already ``width`` wide)."""
    if maps:
        return MapBlock(shape.channels)
    out = width or shape.dim
    return VectorBlock(shape.dim if first else out, out)


def block_shape(shape: ViewShape, maps: bool, width: int | None) -> ViewShape:
    """The shape of what :func:`block` returns: maps keep theirs; vectors are ``width`` wide."""
    return shape if maps or not width else ViewShape(width)


class Gate(nn.Module):
    """A task's softmax over ``n`` experts from :func:`gate_input` (MMoE's and CGC's gate: one linear layer)."""

    def __init__(self, d_in: int, n: int):
        super().__init__()
        self.linear = nn.Linear(d_in, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)
