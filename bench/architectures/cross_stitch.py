"""``cross_stitch`` (Misra et al. 2016): one column of layers per task, mixed between layers by learned units.

On top of the shared backbone, each task has a column of ``layers`` light blocks (a linear layer and a ReLU on pooled
or token vectors; a depthwise-separable conv block per stage map on feature maps). After every block but the last,
a cross-stitch unit α (T × T) mixes the columns: the input of column t's next block is Σ_s α_ts · out_s. So column
s's blocks before the last unit shape every task's input: they are shared parameters; task t's tower is the last
unit's row α_t and its column's last block, which only task t reads. With ``layers=1`` there is no unit, and the
columns are independent per-task blocks (a tower each).

α starts at ``self_weight`` on the diagonal and shares the rest evenly off it (the paper's initialisation, a convex
mix near identity), not LibMTL's all-ones (docs/architectures.md).

The cut z: the columns' stacked outputs before the last unit (with ``layers=1``, a tap of the backbone's view).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from bench.architectures.base import Architecture, register_architecture
from bench.architectures.blocks import block, block_shape, mix, parts, stack, tap
from bench.backbones.base import ViewShape
from bench.config import Frozen


class CrossStitchParams(Frozen):
    layers: int = Field(2, ge=1)  # blocks per column; the last is the task's own
    width: int | None = Field(None, ge=1)  # vector blocks' width (None: the backbone's); maps keep theirs
    self_weight: float = Field(0.9, ge=0, le=1)  # α_tt at the start; the off-diagonal entries share the rest


def _initial(n: int, self_weight: float) -> torch.Tensor:
    if n == 1:
        return torch.ones(1, 1)
    off = (1 - self_weight) / (n - 1)
    return torch.full((n, n), off) + (self_weight - off) * torch.eye(n)


class _Tower(nn.Module):
    """Task t's own part: the last unit's row α_t (mixing the columns into its last block) and that block."""

    def __init__(self, row: torch.Tensor | None, last: nn.Module):
        super().__init__()
        self.alpha = nn.Parameter(row) if row is not None else None
        self.last = last


@register_architecture("cross_stitch")
class CrossStitch(Architecture):
    """Cross-stitch: a column of blocks per task, columns mixed by learned units between blocks (Misra et al. 2016)."""

    Params = CrossStitchParams

    def __init__(self, shapes: dict[str, ViewShape], kinds: dict[str, Any], params: CrossStitchParams):
        super().__init__(shapes, kinds, params)
        self.columns_of = {v: [t for t in kinds if self.reads[t] == v] for v in sorted(set(self.reads.values()))}
        n_shared = params.layers - 1
        # shared: columns[v][l][c], block l of column c (l < layers - 1), and units[v][l], the unit after it
        # (l < layers - 2: the unit after the last shared block is split into the towers' rows)
        self.columns = nn.ModuleDict()
        self.units = nn.ParameterDict()
        for v, tasks in self.columns_of.items():
            maps, n = v == "maps", len(tasks)
            self.columns[v] = nn.ModuleList(
                nn.ModuleList(block(shapes[v], maps, params.width, first=(l == 0)) for _ in tasks)
                for l in range(n_shared))
            if n_shared > 1:
                self.units[v] = nn.Parameter(torch.stack([_initial(n, params.self_weight)] * (n_shared - 1)))
            last_unit = _initial(n, params.self_weight) if n_shared else None
            for c, t in enumerate(tasks):
                last = block(shapes[v], maps, params.width, first=(n_shared == 0))
                self.towers[t] = _Tower(None if last_unit is None else last_unit[c].clone(), last)

    def view_shape(self, task: str) -> ViewShape:
        v = self.reads[task]
        return block_shape(self.shapes[v], v == "maps", self.params.width)

    def forward(self, views: dict[str, Any], tasks: list[str]) -> tuple[dict[str, Any], Any]:
        out: dict[str, Any] = {}
        z: list = []
        for v in sorted({self.reads[t] for t in tasks}):
            h = self._shared(v, views[v])  # (T, B, ...) stacked columns, or a tap of the view when there is none
            z += list(parts(h))
            for t in (t for t in tasks if self.reads[t] == v):
                tower = self.towers[t]
                out[t] = tower.last(h if tower.alpha is None else mix(h, tower.alpha))
        return out, tuple(z)

    def _shared(self, v: str, x: Any) -> Any:
        """Every column's output before the last unit, stacked (the columns all start from the backbone's view)."""
        if not len(self.columns[v]):
            return tap(x)
        cols = [col(x) for col in self.columns[v][0]]
        for l in range(1, len(self.columns[v])):
            h = stack(cols)
            alpha = self.units[v][l - 1]
            cols = [col(mix(h, alpha[c])) for c, col in enumerate(self.columns[v][l])]
        return stack(cols)
