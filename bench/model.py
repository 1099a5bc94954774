"""The multi-task model: one shared backbone, an optional architecture between it and the heads
(:mod:`bench.architectures`), one head per task (built by the task's kind, :mod:`bench.tasks`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.backbones.base import FeatureMaps
from bench.config import TaskConfig
from bench.errors import BenchError
from bench.tasks import task_kind


class MultiTaskModel(nn.Module):
    """``forward(batch, tasks)`` runs the backbone once and the named heads on the view each head reads.

    A head reads the backbone's pooled vector, its token sequence (token tagging) or its feature maps (dense
    prediction), as the task's kind asks; the backbone computes the richer views only when a requested task reads
    them. ``architecture`` (an :class:`~bench.architectures.Architecture`, built by the caller; None: hard sharing)
    routes the views to each task through modules of its own.

    Example:
        >>> from bench.backbones.simple import MLP
        >>> from bench.config import TaskConfig
        >>> t = TaskConfig(name="a", input="vector", target="classification", num_classes=3)
        >>> m = MultiTaskModel(MLP(4, 8, 1), [t])
        >>> m({"x": torch.zeros(2, 4)}, ["a"])["a"].shape
        torch.Size([2, 3])
    """

    def __init__(self, backbone: nn.Module, tasks: list[TaskConfig], dropout: float = 0.0,
                 architecture: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.task_cfgs = {t.name: t for t in tasks}
        self.kinds = {t.name: task_kind(t) for t in tasks}
        offered = tuple(getattr(backbone, "outputs", ("pooled",)))
        for t, kind in self.kinds.items():
            if kind.reads not in offered:
                raise BenchError(f"task {t!r} ({kind.name}) reads the backbone's {kind.reads!r} output, but "
                                 f"{type(backbone).__name__} offers {', '.join(offered)}; use a backbone with "
                                 f"{kind.reads} (transformers for tokens, timm or cnn for maps)")
        if architecture is not None:
            self.arch = architecture  # registered only when there is one: hard sharing keeps its state-dict keys
        shapes = backbone.view_shapes() if hasattr(backbone, "view_shapes") else None
        self.heads = nn.ModuleDict({t: self._head(t, kind, shapes) for t, kind in self.kinds.items()})
        self.dropout = nn.Dropout(dropout)
        # GradNorm's layer: the last shared one every head's gradient reaches (maps stop before a pooled head)
        self.shared_layer = getattr(backbone, "shared_layer", None)
        if self.kinds and all(k.reads == "maps" for k in self.kinds.values()):
            self.shared_layer = getattr(backbone, "maps_shared_layer", self.shared_layer)

    @property
    def architecture(self) -> nn.Module | None:
        return self._modules.get("arch")

    def _head(self, t: str, kind, shapes) -> nn.Module:
        if self.architecture is not None:
            return kind.build_head(self.architecture.view_shape(t))
        if shapes is None:  # a plain module as backbone (tests, plug-ins): its width is all a head needs
            return kind.head(self.backbone.out_dim)
        return kind.build_head(shapes[kind.reads])

    def forward(self, batch: dict[str, torch.Tensor], tasks: list[str], features: bool = False):
        """Outputs of the named heads; with ``features=True`` also the shared representation z they read,
        ``(outputs, z)``, what gradient-level balancers differentiate through (``via=features``): the pooled
        vector; the token sequence when a head reads tokens (the pooled vector is computed from it); the tuple of
        every feature map when all heads read maps; the architecture's own cut when there is one; None when the
        views have no common cut (pooled and maps: the pooled vector is computed past the maps)."""
        reads = {self.kinds[t].reads for t in tasks}
        if reads == {"pooled"}:
            shared = self.dropout(self.backbone(**batch))
            views: dict[str, Any] = {"pooled": shared}
        else:
            raw = self.backbone.features(**batch)
            if "maps" in reads:
                # the heads read taps of the maps (the same tensors through a new node): each map also feeds the
                # next stage, so the maps themselves are no cut, and a gradient taken at them would count the
                # deeper stages twice; the taps are read by the heads alone
                m = raw["maps"]
                raw = {**raw, "maps": FeatureMaps(tuple(t.view_as(t) for t in m.maps), m.size)}
            views = {k: self._drop(v) for k, v in raw.items() if k in reads}
            if reads == {"maps"}:
                shared = raw["maps"].maps
            elif "maps" in reads:
                shared = None
            else:
                shared = raw["tokens"]  # what every view is computed from (the pooled vector too), before dropout
        if self.architecture is not None:
            views, shared = self.architecture(views, tasks)
            out = {t: self.kinds[t].output(self.heads[t](views[t])) for t in tasks}
        else:
            out = {t: self.kinds[t].output(self.heads[t](views[self.kinds[t].reads])) for t in tasks}
        return (out, shared) if features else out

    def _drop(self, view: Any) -> Any:
        if isinstance(view, FeatureMaps):
            return FeatureMaps(tuple(self.dropout(m) for m in view.maps), view.size)
        return self.dropout(view)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task shares: the backbone's own declaration (all of its parameters by default)
        and the architecture's shared modules."""
        own = list(self.backbone.shared_parameters()) if hasattr(self.backbone, "shared_parameters") \
            else list(self.backbone.parameters())
        return own + (self.architecture.shared_parameters() if self.architecture is not None else [])

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters only ``task`` uses: its head and its tower in the architecture."""
        own = list(self.heads[task].parameters())
        return own + (self.architecture.task_parameters(task) if self.architecture is not None else [])


def task_loss(task: TaskConfig, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The task kind's loss, averaged over the labelled units of the batch (computed in fp32)."""
    return task_kind(task).loss(output, target)
