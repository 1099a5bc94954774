"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

Each task learns s_i = log σ_i² (initialised to 0, i.e. σ_i² = 1) and contributes

* regression (Gaussian likelihood):       ½ · e^{−s_i} · L_i + ½ · s_i
* classification (scaled softmax):          e^{−s_i} · L_i + ½ · s_i

The form is chosen from the likelihood of each task's kind (:mod:`bench.tasks`: squared error is Gaussian;
cross-entropy, per-token and per-label BCE/CE are categorical or Bernoulli; every other likelihood, as the L1 of
depth (Laplace) and the cosine loss of normals (von Mises-Fisher), takes the second form); LibMTL, Nash-MTL and
torchjd apply the regression form to every task, which halves the effective weight of classification losses.
Learning s rather than σ or σ² keeps the loss finite for every value of the parameter (no log of a non-positive
number, no division by zero).

At the optimum of the regression term, ∂/∂s = −½ e^{−s} L + ½ = 0 gives σ² = e^{s} = L: for an MSE loss the learned
σ_i² is the task's residual variance. (For the classification form the fixed point is σ² = 2L.)

The total may be negative (½·s_i < 0 once a task fits well): never select checkpoints on it.

Example:
    >>> import torch
    >>> from bench.config import TaskConfig
    >>> tasks = [TaskConfig(name="a", input="vector", target="regression"),
    ...          TaskConfig(name="b", input="vector", target="classification", num_classes=3)]
    >>> w = Uncertainty(tasks, UncertaintyParams())
    >>> w.combine({"a": torch.tensor(2.0), "b": torch.tensor(2.0)}).item()  # s = 0: ½·2 + 1·2
    3.0
    >>> w.current()
    {'a': 1.0, 'b': 1.0}
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from bench.config import Frozen, TaskConfig
from bench.tasks import task_kind
from bench.weighting.base import Weighting, register_weighting

#: Default learning rate of the s_i, chosen by experiment (docs/budgets.md, "Uncertainty weighting's learning rate"):
#: with the network's rate (1e-4 on the text suite) σ² stayed within 1.000–1.001 over the default budget, i.e. the
#: method was naive MTL; at 3e-2 σ² moves 1.3–1.4× there, and on the synthetic suite it reaches its fixed point
#: (σ² = L, or 2L for classification) within 2 % on four of five tasks, without 1e-1's overshoot; validation
#: accuracy was flat across 1e-4…1e-1 on both suites.
DEFAULT_LR = 3e-2


class UncertaintyParams(Frozen):
    #: learning rate of the s_i (Adam's steps move s by about this much per update); None: the network's
    lr: float | None = Field(DEFAULT_LR, gt=0)


@register_weighting("uncertainty")
class Uncertainty(Weighting):
    """Kendall et al. 2018: learned s_i = log σ_i²; ½e^{−s}L + ½s (regression), e^{−s}L + ½s (classification)."""

    Params = UncertaintyParams
    weights_label = r"uncertainty weight (from $\sigma_t^2$)"

    def __init__(self, tasks: list[TaskConfig], params: UncertaintyParams | None = None):
        super().__init__(tasks, params)
        # One scalar Parameter per task, not one vector: in a multi-input step that samples one task, the absent
        # tasks' s_i then have no gradient at all (None), so Adam skips them instead of drifting on momentum.
        self.log_vars = nn.ParameterList([nn.Parameter(torch.zeros(())) for _ in self.task_names])
        self._index = {t: i for i, t in enumerate(self.task_names)}
        # ½ for a Gaussian likelihood (squared error), 1 for a categorical or Bernoulli one (softmax / sigmoid with
        # temperature σ²): each task's kind says which its loss is
        self._scale = {t.name: (0.5 if task_kind(t).likelihood == "gaussian" else 1.0) for t in self.tasks}
        self._scale_cache: dict[tuple, torch.Tensor] = {}

    def setup(self, model: nn.Module) -> None:
        # live on the model's device; Module.to keeps the Parameter objects, so optimiser groups stay valid
        p = next(iter(model.parameters()), None)
        if p is not None:
            self.to(p.device)

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ over the tasks present in this step (any subset) of scale_i·e^{−s_i}·L_i + ½·s_i."""
        names = tuple(losses)
        s = torch.stack([self.log_vars[self._index[t]] for t in names])
        # one vector expression, not a handful of scalar ops per task: the cost must not grow with T
        return (self._scales(names, s) * torch.exp(-s) * torch.stack(list(losses.values())) + 0.5 * s).sum()

    def _scales(self, names: tuple[str, ...], like: torch.Tensor) -> torch.Tensor:
        """The per-task scales of ``names`` as a tensor on ``like``'s device, made once per task subset."""
        key = (names, like.device)
        if key not in self._scale_cache:
            self._scale_cache[key] = torch.tensor([self._scale[t] for t in names], dtype=like.dtype, device=like.device)
        return self._scale_cache[key]

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        # weight decay would pull s towards 0 (σ² towards 1), biasing every learned variance: always off
        return [{"params": list(self.log_vars), "lr": self.params.lr or lr, "weight_decay": 0.0}]

    def current(self) -> dict[str, float]:
        """σ_i² = e^{s_i} per task."""
        return {t: float(torch.exp(self.log_vars[i].detach())) for t, i in self._index.items()}
