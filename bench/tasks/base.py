"""The task-kind seam: what a kind of task (classification, token tagging, multi-label, ...) decides, in one class.

A task's ``target:`` names its kind. The kind builds the task's head from what the backbone offers, computes its
loss (averaged over the labelled units only: examples, tokens or labels, so that partial labels need nothing
else), predicts, scores a split, says what ``predictions.npz`` keeps so that every metric can be recomputed and
resampled per example, and checks and reads its targets. Nothing in the trainer, the model or the data layer asks
which kind a task is; they call these methods.

A new kind is one file (``@register_task_kind("name")`` on a :class:`TaskKind` subclass) in a plug-in folder or an
installed plug-in package, exactly like a weighting (docs/plugins/task_kinds.md)::

    @register_task_kind("ordinal")
    class Ordinal(TaskKind):
        '''K ordered classes: cumulative logits.'''
        metrics = {"accuracy": "max", "mae": "min"}
        ...

Example:
    >>> from bench.config import TaskConfig
    >>> kind = task_kind(TaskConfig(name="a", input="vector", target="classification", num_classes=3))
    >>> kind.name, kind.metric_names, kind.primary, kind.direction("macro_f1")
    ('classification', ['accuracy', 'macro_f1'], 'accuracy', 'max')
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bench import metrics as M
from bench.augment import Crop, not_croppable
from bench.backbones.base import ViewShape
from bench.config import TaskConfig
from bench.errors import BenchError
from bench.plugins.discovery import HINT
from bench.plugins.registry import Registry
from bench.stats.ratios import recipes_of

Kept = dict[str, np.ndarray]  # what predictions.npz keeps of one task on one split: id, target, pred (, stats)


class TaskKind(ABC):
    """One kind of task, bound to one task's configuration (``self.task``).

    Class attributes a kind sets:

    * ``metrics``: its default metrics, name -> direction (``"max"`` when higher is better, ``"min"`` otherwise), in
      display order; the first is the primary one unless the suite names ``primary:``.
    * ``reads``: the backbone output its head reads: ``"pooled"`` (one vector per example), ``"tokens"`` (one
      vector per token) or ``"maps"`` (feature maps, for dense prediction); backbones list what they offer in
      ``outputs``.
    * ``likelihood``: the noise model behind its loss (``"gaussian"`` for squared error, ``"categorical"`` for
      cross-entropy, ``"bernoulli"`` for per-label BCE): uncertainty weighting scales the loss by it.
    * ``unit``: what one labelled unit is (``"example"``, ``"token"``, ``"label"``): the granularity of the
      missing-label mask, and what the bootstrap resamples (always whole examples: a sentence's tokens together).
    """

    name: ClassVar[str] = ""
    metrics: ClassVar[dict[str, str]] = {}
    reads: ClassVar[str] = "pooled"
    likelihood: ClassVar[str] = "categorical"
    unit: ClassVar[str] = "example"

    def __init__(self, task: TaskConfig):
        self.task = task

    # -- configuration -----------------------------------------------------------------------------------------
    def validate(self) -> None:  # noqa: B027  (optional: most kinds have nothing to check)
        """Refuse a configuration this kind cannot train (one line naming the field and the fix)."""

    @property
    def metric_names(self) -> list[str]:
        """The task's metrics: the suite's ``metrics:`` list, else the kind's defaults."""
        return list(self.task.metrics) if self.task.metrics else list(self.metrics)

    @property
    def primary(self) -> str:
        return self.task.primary or self.metric_names[0]

    def extra_metrics(self) -> list[str]:
        """Per-label or per-type results (``f1@<label>``) a kind reports beside its metrics: in the CSV and JSON
        boards, never in Avg, Δm% or marks."""
        return []

    def direction(self, metric: str) -> str:
        """'max' or 'min' for one of this task's metrics (the kind's own, else bench.metrics' table)."""
        if metric in self.metrics:
            return self.metrics[metric]
        return M.direction(metric)

    def record_spec(self) -> dict[str, Any]:
        """What a record says about the task, beyond its kind and metrics (e.g. ratio recipes of its metrics)."""
        return {}

    def ratio_values(self, stats: np.ndarray) -> dict[str, float]:
        """Every ratio-of-sums metric of :meth:`record_spec` on per-example ``stats`` [n, k]: the one definition
        the report resamples (:mod:`bench.stats.ratios`), so a kind's point values and intervals cannot disagree."""
        return {m: r.value(stats) for m, r in recipes_of(self.record_spec()).items()}

    # -- the model ---------------------------------------------------------------------------------------------
    @abstractmethod
    def head(self, dim: int) -> nn.Module:
        """The task's head on a backbone output of width ``dim`` (the output named by ``reads``)."""

    def build_head(self, shape: ViewShape) -> nn.Module:
        """The task's head on the view it reads, of shape ``shape`` (dense kinds read the ``maps`` view's channels
        and strides; the others need only its width: :meth:`head`)."""
        return self.head(shape.dim)

    def output(self, y: torch.Tensor) -> torch.Tensor:
        """The head's raw output as the loss and predictions read it (regression drops the last axis)."""
        return y

    @abstractmethod
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the labelled units of a batch (fp32); an exact 0 connected to ``output`` when none."""

    @abstractmethod
    def labelled(self, target: torch.Tensor) -> torch.Tensor:
        """A bool per example: whether it carries any label of this task (samples seen are counted by it)."""

    def entropy(self, output: torch.Tensor) -> torch.Tensor | None:
        """Mean predictive entropy of a batch (AdaMerging's unlabelled objective); None when the kind has none."""
        return None

    def sample(self, output: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        """A target drawn from the model's own predictive distribution (the "model" Fisher); None: use the data's."""
        return None

    def crop(self, target: torch.Tensor, crops: Sequence[Crop]) -> torch.Tensor:
        """A train batch's targets under the crops its images got (``train.augment``, :mod:`bench.augment`): each
        kind moves its own labels (dense kinds: nearest class, depth divided by the scale, normals' x negated when
        flipped). Only dense kinds have labels that move with the image."""
        raise not_croppable(self.task.name, self.name)

    # -- evaluation --------------------------------------------------------------------------------------------
    @abstractmethod
    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """Per-example predictions of a batch (what scoring reads), kept on the device until the split is done."""

    def assemble(self, pieces: list[tuple[np.ndarray, torch.Tensor]], n: int) -> np.ndarray:
        """The split's predictions in example order from ``(example indices, predictions)`` of each batch."""
        first = pieces[0][1]
        out = torch.empty((n, *first.shape[1:]), dtype=first.dtype, device=first.device)
        for idx, pred in pieces:
            out[torch.from_numpy(idx).to(out.device)] = pred
        return out.cpu().numpy()

    def calibrate(self, target: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
        """What scoring other splits takes from the validation split (a decision threshold); {} when nothing.
        Only validation is ever calibrated on: test scores stay held out."""
        return {}

    @abstractmethod
    def score(self, target: np.ndarray, pred: np.ndarray, fitted: dict[str, Any] | None = None,
              ) -> tuple[dict[str, float], Kept]:
        """(metrics, what predictions.npz keeps) of one split; ``target`` as encoded, ``pred`` from assemble,
        ``fitted`` what :meth:`calibrate` chose on validation."""

    # -- data --------------------------------------------------------------------------------------------------
    @abstractmethod
    def check_targets(self, y: Any, where: str) -> None:
        """Refuse malformed targets of a split a source returned (one line naming the value and the fix)."""

    @abstractmethod
    def unlabel(self, y: Any, idx: np.ndarray) -> Any:
        """A copy of targets ``y`` with examples ``idx`` unlabelled (the kind's missing value; ``unlabel:`` data
        option, a partial-label ablation)."""

    def check_inputs(self, inputs: Any, y: Any, where: str) -> None:  # noqa: B027  (optional, as validate)
        """Refuse targets that do not fit their inputs (a tag per word); most kinds have nothing to check."""

    def stratify(self, y: Any) -> np.ndarray | None:
        """Labels to stratify carved splits and subsamples by; None when the kind has none."""
        return None

    def from_column(self, values: Any, names: list[str] | None, where: str) -> np.ndarray:
        """Targets from a table column of a ``source: files`` suite (a missing cell is a missing label)."""
        raise BenchError(f"{where}: task kind {self.name!r} cannot read its targets from a table column")

    def encode_targets(self, y: Any, encoded: dict[str, Any]) -> torch.Tensor:
        """The targets as batches index them (token kinds align word labels to the preprocessor's tokens)."""
        return torch.from_numpy(np.array(y))  # an own, writable copy


TASK_KINDS: Registry[type[TaskKind]] = Registry("task kind", TaskKind, builtins=("bench.tasks",), plugins=True,
                                                hint=HINT)


def register_task_kind(name: str) -> Callable[[type[TaskKind]], type[TaskKind]]:
    """Register a :class:`TaskKind` subclass under ``name`` (what a task's ``target:`` says)."""
    return TASK_KINDS.register(name)


def task_kind(task: TaskConfig) -> TaskKind:
    """The kind of ``task``, bound to it (an unknown ``target:`` lists the registered kinds)."""
    return TASK_KINDS.get(task.target)(task)


def check_task(task: TaskConfig) -> TaskKind:
    """The kind of ``task``, validated: its name, its own configuration checks, and its metric names."""
    kind = task_kind(task)
    kind.validate()
    for m in kind.metric_names:
        if m not in kind.metrics and m not in M.METRICS:
            raise BenchError(f"task {task.name!r}: metric {m!r} is not one of {kind.name}'s "
                             f"({', '.join([*kind.metrics, *M.METRICS])}); fix metrics: in the suite")
    if task.primary is not None and task.primary not in kind.metric_names:
        raise BenchError(f"task {task.name!r}: primary {task.primary!r} is not among its metrics "
                         f"({', '.join(kind.metric_names)}); fix primary: in the suite")
    return kind


def directions(tasks: list[TaskConfig]) -> dict[tuple[str, str], str]:
    """(task, metric) -> 'max' | 'min' for every metric of ``tasks``, each as its kind says."""
    out = {}
    for t in tasks:
        kind = task_kind(t)
        out.update({(t.name, m): kind.direction(m) for m in kind.metric_names})
    return out


def primaries(tasks: list[TaskConfig]) -> dict[str, str]:
    """Task -> its primary metric."""
    return {t.name: task_kind(t).primary for t in tasks}
