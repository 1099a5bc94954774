"""``mmoe`` (Ma et al. 2018) and ``cgc`` (Tang et al. 2020, one level of PLE): experts mixed by per-task gates.

MMoE: E shared experts read the backbone's view; task t's view is Σ_e g_t,e(x) · expert_e(x), with g_t a softmax
gate of its own. CGC adds experts owned by one task: task t's gate mixes the shared experts and its own.

An expert is a light block on the view (:func:`bench.architectures.blocks.block`): a linear layer and a ReLU on
pooled or token vectors, a depthwise-separable conv block per stage map on feature maps (a dense head then reads
the mixed maps, stage by stage). A gate reads the vector (per token for tokens) or the deepest map averaged over
its pixels (LibMTL's gates read the flattened input image, and its experts are whole encoders: docs/architectures.md
says why these differ).

Shared: the shared experts. Task t's tower: its gate (and, for CGC, its own experts). The cut z: the shared
experts' stacked outputs and a tap of what the tower reads of the backbone's view (the gate's input; CGC's own
experts' input), so every path from a shared parameter to a head crosses z once.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from pydantic import Field
from torch import nn

from bench.architectures.base import Architecture, register_architecture
from bench.architectures.blocks import (
    Gate,
    View,
    add,
    block,
    block_shape,
    gate_dim,
    gate_input,
    mix,
    parts,
    stack,
    tap,
)
from bench.backbones.base import FeatureMaps, ViewShape
from bench.config import Frozen
from bench.errors import BenchError


class MMoEParams(Frozen):
    experts: int = Field(4, ge=1)  # shared experts
    width: int | None = Field(None, ge=1)  # vector experts' output width (None: the backbone's); maps keep theirs


class CGCParams(Frozen):
    shared_experts: int = Field(2, ge=0)  # experts every task's gate mixes
    task_experts: int = Field(1, ge=0)  # experts of each task's own (in its tower)
    width: int | None = Field(None, ge=1)


class _Experts(Architecture):
    """Shared experts per view the tasks read, a tower per task; the subclasses decide the tower."""

    def __init__(self, shapes: dict[str, ViewShape], kinds: dict[str, Any], params: Any, n_shared: int):
        super().__init__(shapes, kinds, params)
        self.n_shared = n_shared
        self.experts = nn.ModuleDict({
            v: nn.ModuleList(block(shapes[v], v == "maps", params.width) for _ in range(n_shared))
            for v in sorted(set(self.reads.values()))})

    def view_shape(self, task: str) -> ViewShape:
        v = self.reads[task]
        return block_shape(self.shapes[v], v == "maps", self.params.width)

    def forward(self, views: dict[str, Any], tasks: list[str]) -> tuple[dict[str, Any], Any]:
        out: dict[str, Any] = {}
        z: list = []
        for v in sorted({self.reads[t] for t in tasks}):
            x = views[v]
            shared = stack([e(x) for e in self.experts[v]]) if len(self.experts[v]) else None
            entry = self._entry(x)  # what the towers read of the backbone's view, a part of z
            z += [*(parts(shared) if shared is not None else ()), *parts(entry)]
            for t in (t for t in tasks if self.reads[t] == v):
                out[t] = self._task(t, shared, entry)
        return out, tuple(z)

    def _entry(self, x: View) -> View:
        """A tap of what the towers read: the gate's input (of maps, the deepest one only)."""
        return FeatureMaps((tap(x.maps[-1]),), x.size) if isinstance(x, FeatureMaps) else tap(x)

    @abstractmethod
    def _task(self, task: str, shared: View | None, entry: View) -> View:
        """Task ``task``'s view from the stacked shared experts (None: there are none) and the towers' entry."""


@register_architecture("mmoe")
class MMoE(_Experts):
    """MMoE: shared experts mixed by a softmax gate per task (Ma et al. 2018)."""

    Params = MMoEParams

    def __init__(self, shapes: dict[str, ViewShape], kinds: dict[str, Any], params: MMoEParams):
        super().__init__(shapes, kinds, params, params.experts)
        for t, v in self.reads.items():
            self.towers[t] = Gate(gate_dim(shapes[v], v == "maps"), params.experts)

    def _task(self, task: str, shared: View | None, entry: View) -> View:
        return mix(shared, self.towers[task](gate_input(entry)))


class _TaskTower(nn.Module):
    """CGC's per-task part: the task's own experts and its gate over shared + own experts."""

    def __init__(self, shape: ViewShape, maps: bool, width: int | None, n_shared: int, n_own: int):
        super().__init__()
        self.experts = nn.ModuleList(block(shape, maps, width) for _ in range(n_own))
        self.gate = Gate(gate_dim(shape, maps), n_shared + n_own)


@register_architecture("cgc")
class CGC(_Experts):
    """CGC (PLE's one level): each task's gate mixes shared experts and its own (Tang et al. 2020)."""

    Params = CGCParams

    def __init__(self, shapes: dict[str, ViewShape], kinds: dict[str, Any], params: CGCParams):
        if params.shared_experts + params.task_experts < 1:
            raise BenchError("architecture 'cgc' needs at least one expert: set shared_experts or task_experts >= 1")
        super().__init__(shapes, kinds, params, params.shared_experts)
        for t, v in self.reads.items():
            self.towers[t] = _TaskTower(shapes[v], v == "maps", params.width, params.shared_experts,
                                        params.task_experts)

    def _entry(self, x: View) -> View:
        # the task's own experts read the whole view: tap all of it (the gate reads the tap's deepest map)
        return tap(x) if self.params.task_experts else super()._entry(x)

    def _task(self, task: str, shared: View | None, entry: View) -> View:
        tower = self.towers[task]
        w = tower.gate(gate_input(entry))  # (B[, L], shared + own)
        s = self.n_shared
        out = mix(shared, w[..., :s]) if shared is not None else None
        if len(tower.experts):
            own = mix(stack([e(entry) for e in tower.experts]), w[..., s:])
            out = own if out is None else add(out, own)
        return out
