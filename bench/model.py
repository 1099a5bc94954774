"""The multi-task model: one shared backbone, one head per task (built by the task's kind, :mod:`bench.tasks`)."""

from __future__ import annotations

import torch
from torch import nn

from bench.config import TaskConfig
from bench.errors import BenchError
from bench.tasks import task_kind


class MultiTaskModel(nn.Module):
    """``forward(batch, tasks)`` runs the backbone once and the named heads on the output each head reads.

    A head reads the backbone's pooled vector, or its token sequence when the task's kind asks for it (token
    tagging); the backbone computes the token sequence only when a requested task reads it.

    Example:
        >>> from bench.backbones.simple import MLP
        >>> from bench.config import TaskConfig
        >>> t = TaskConfig(name="a", input="vector", target="classification", num_classes=3)
        >>> m = MultiTaskModel(MLP(4, 8, 1), [t])
        >>> m({"x": torch.zeros(2, 4)}, ["a"])["a"].shape
        torch.Size([2, 3])
    """

    def __init__(self, backbone: nn.Module, tasks: list[TaskConfig], dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.task_cfgs = {t.name: t for t in tasks}
        self.kinds = {t.name: task_kind(t) for t in tasks}
        offered = tuple(getattr(backbone, "outputs", ("pooled",)))
        for t, kind in self.kinds.items():
            if kind.reads not in offered:
                raise BenchError(f"task {t!r} ({kind.name}) reads the backbone's {kind.reads!r} output, but "
                                 f"{type(backbone).__name__} offers {', '.join(offered)}; use a backbone with "
                                 f"{kind.reads} (transformers for tokens)")
        self.heads = nn.ModuleDict({t: kind.head(backbone.out_dim) for t, kind in self.kinds.items()})
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch: dict[str, torch.Tensor], tasks: list[str], features: bool = False):
        """Outputs of the named heads; with ``features=True`` also the shared representation they read,
        ``(outputs, features)`` (what gradient-level balancers differentiate through): the pooled vector, or the
        token sequence when a head reads tokens (the pooled vector is computed from it)."""
        reads = {self.kinds[t].reads for t in tasks}
        if reads == {"pooled"}:
            shared = self.dropout(self.backbone(**batch))
            views = {"pooled": shared}
        else:
            raw = self.backbone.features(**batch)
            views = {k: self.dropout(v) for k, v in raw.items() if k in reads}
            shared = raw["tokens"]  # what every view is computed from (the pooled vector too), before dropout
        out = {t: self.kinds[t].output(self.heads[t](views[self.kinds[t].reads])) for t in tasks}
        return (out, shared) if features else out

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task shares: the backbone's own declaration (all of its parameters by default)."""
        return list(self.backbone.shared_parameters()) if hasattr(self.backbone, "shared_parameters") \
            else list(self.backbone.parameters())


def task_loss(task: TaskConfig, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The task kind's loss, averaged over the labelled units of the batch (computed in fp32)."""
    return task_kind(task).loss(output, target)
