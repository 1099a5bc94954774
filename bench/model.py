"""The multi-task model: one shared backbone, one head per task (shape from the task's target kind)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import TaskConfig


class MultiTaskModel(nn.Module):
    """``forward(batch, tasks)`` runs the backbone once and the named heads on its features.

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
        self.heads = nn.ModuleDict({t.name: nn.Linear(backbone.out_dim, t.out_dim) for t in tasks})
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch: dict[str, torch.Tensor], tasks: list[str], features: bool = False):
        """Outputs of the named heads; with ``features=True`` also the shared representation they read,
        ``(outputs, features)`` (what gradient-level balancers differentiate through)."""
        feats = self.dropout(self.backbone(**batch))
        out = {}
        for t in tasks:
            y = self.heads[t](feats)
            out[t] = y.squeeze(-1) if self.task_cfgs[t].target == "regression" else y
        return (out, feats) if features else out

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task shares: the backbone's own declaration (all of its parameters by default)."""
        return list(self.backbone.shared_parameters()) if hasattr(self.backbone, "shared_parameters") \
            else list(self.backbone.parameters())


def task_loss(task: TaskConfig, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classification, mean squared error for regression (computed in fp32)."""
    if task.target == "classification":
        return F.cross_entropy(output.float(), target)
    return F.mse_loss(output.float(), target.float())


def predict(task: TaskConfig, output: torch.Tensor) -> torch.Tensor:
    return output.argmax(-1) if task.target == "classification" else output.float()
