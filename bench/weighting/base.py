"""How a joint stage balances its tasks: the :class:`Balancer` interface and its two kinds.

The engine's step hands the per-task losses to the balancer and lets it fill the gradients::

    losses = {task: loss}                  # the tasks present in this step
    balancer.backward(losses, step)        # fills .grad of the shared parameters and the heads
    clip; optimizer.step()
    balancer.after_step(step)              # e.g. renormalise GradNorm's w, FAMO's logit update
    ...
    balancer.end_epoch(epoch, mean_losses) # once per epoch (DWA's loss history)

Two kinds implement it:

* :class:`Weighting` (loss level): ``combine(losses) -> scalar``, then one ``backward()`` of that scalar. Equal,
  static, uncertainty, GradNorm, DWA, FAMO, ... A new one is a ``combine`` of a few lines.
* :class:`Aggregator` (gradient level): sees every task's gradient (the Jacobian of the losses) and decides the
  update itself. PCGrad, MGDA, UPGrad, Nash-MTL, ... (``bench/weighting/jd.py`` adapts torchjd's).

The kind is also the balancer's ``family`` (``"loss"`` or ``"gradient"``, :data:`FAMILIES`), which the report's
figures colour and group rows by; a balancer may set it explicitly.

Both are registered with :func:`register_weighting` (the CLI key is ``strategy.weighting=``) and declare their
hyper-parameters as a frozen pydantic ``Params`` model, so a joint stage takes any of them. Parameters a balancer
wants trained *by the model's optimiser* (uncertainty's s_i) are returned by :meth:`Balancer.param_groups`.

Example (a loss-level weighting in a few lines):
    >>> import torch
    >>> @register_weighting("first_only_doc")
    ... class FirstOnly(Weighting):
    ...     '''Trains on the first task only (a toy).'''
    ...     def combine(self, losses):
    ...         return losses[self.task_names[0]] if self.task_names[0] in losses else 0 * sum(losses.values())
    >>> from bench.config import TaskConfig
    >>> w = build_weighting("first_only_doc", [TaskConfig(name=t, input="vector", target="regression") for t in "ab"])
    >>> x = torch.tensor(2.0, requires_grad=True)
    >>> w.backward({"a": 3 * x, "b": 5 * x}, Step()); x.grad
    tensor(3.)
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from bench.config import Frozen, NoParams, TaskConfig
from bench.errors import BenchError, CellFailed
from bench.plugins.discovery import HINT
from bench.plugins.registry import Registry
from bench.specs import WeightingSpec
from bench.weighting import jacobian
from bench.weighting.jacobian import Via


@dataclass
class Step:
    """What a balancer sees of one training step (everything optional, so a test can build one by hand).

    ``shared``: the backbone's shared parameters (:meth:`bench.backbones.base.Backbone.shared_parameters`);
    ``heads``: each task's head parameters; ``features``: the shared representations this step computed, one tensor
    per forward of the backbone (single-input suites: one, the input of every head), present only when the balancer
    asks for them (``uses_features``); ``scaler``: fp16's GradScaler or None; ``recompute``: the losses again on this
    step's batches, without a graph (FAMO measures how much the update lowered them); ``mark``: the engine's phase
    timer; ``forwards``: how many forwards of the backbone the step ran (one per task batch on a multi-input suite;
    0: as many as ``features``); ``world`` and ``reduce``: the processes of a data-parallel cell (one by default).

    A gradient-level balancer takes the per-task Jacobian with :meth:`jacobian` and writes the update it decides with
    :meth:`set_shared_grad` (:mod:`bench.weighting.jacobian`)::

        J = step.jacobian(losses, via="params")    # T × P, one row per task; each head got its own task's gradient
        step.set_shared_grad(J.mean(dim=0))        # the shared parameters' .grad (or, via="features", backpropagated)
    """

    shared: list[nn.Parameter] = field(default_factory=list)
    heads: dict[str, list[nn.Parameter]] = field(default_factory=dict)
    features: list[torch.Tensor] | None = None
    scaler: Any = None
    recompute: Callable[[], dict[str, torch.Tensor]] | None = None
    mark: Callable[[str], None] = lambda phase: None
    forwards: int = 0
    #: processes sharing this step's global batch (``procs=N``, :mod:`bench.distributed`); a shortcut that needs
    #: the whole Jacobian in one process (a Gramian taken without it) applies only at ``world == 1``
    world: int = 1
    #: the sum of a tensor over those processes (the identity in one process): what a balancer that reads more
    #: than the loss values (GradNorm's gradient norms) all-reduces
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    #: every process's copy of a tensor, in rank order, and this process's rank (``[t]`` and 0 in one process)
    gather: Callable[[torch.Tensor], list[torch.Tensor]] = lambda t: [t]
    rank: int = 0
    #: ids of the parameters whose ``.grad`` is already the whole batch's (written from a summed Jacobian): the
    #: trainer's sum over the processes leaves them out
    synced: set[int] = field(default_factory=set)
    _taken: tuple[str, Any, int] | None = field(default=None, init=False, repr=False, compare=False)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss as fp16 training backpropagates it (scaled by the GradScaler; unchanged otherwise)."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def backward(self, total: torch.Tensor) -> None:
        """One ordinary backward of a scalar (scaled under fp16): the default update."""
        self.scale(total).backward()

    def jacobian(self, losses: dict[str, torch.Tensor], via: Via = "params") -> torch.Tensor:
        """The T × P matrix of the task gradients, one row per entry of ``losses`` (in its order), each loss scaled as
        fp16 training backpropagates it. ``via="params"``: over the shared parameters (P: their total size, in
        ``shared`` order); ``via="features"``: over the one shared representation of a single-input step (the
        balancer sets ``uses_features = True``). Each task's head receives its own loss's gradient in ``.grad``;
        the shared update is the caller's to decide and to write with :meth:`set_shared_grad`."""
        tasks, L = list(losses), [self.scale(loss) for loss in losses.values()]
        if via == "features":
            if not self.features or len(self.features) != 1:
                raise BenchError("Step.jacobian(via='features') needs the one shared representation of a "
                                 "single-input step (uses_features = True on the balancer); use via='params'")
            if self.features[0] is None:
                raise BenchError("via=features needs one shared representation, but this step's heads read views "
                                 "with none in common (pooled vectors and feature maps); set "
                                 "strategy.weighting_params.via=params")
            J = jacobian.via_features(L, tasks, self.features[0], self.heads)
            self._taken = ("features", self.features[0], J.shape[1])
            # procs=N: the global representation is every rank's slice side by side, so is its Jacobian
            return torch.cat(self.gather(J), dim=1) if self.world > 1 else J
        if via != "params":
            raise BenchError(f"Step.jacobian(via={via!r}): via is 'params' or 'features'")
        shared = [p for p in self.shared if p.requires_grad]
        self._taken = ("params", shared, 0)
        per_task = (self.forwards or len(self.features or [])) > 1
        J = jacobian.via_params(L, tasks, shared, self.heads, per_task)
        if self.world > 1:  # procs=N: each rank's rows are its share of the global gradients; the update written
            self.synced.update(id(p) for p in shared)  # from their sum is the global one already
            return self.reduce(J)
        return J

    def set_shared_grad(self, direction: torch.Tensor) -> None:
        """Write the shared update ``direction`` (a vector of the Jacobian's P columns) back: into the shared
        parameters' ``.grad`` (accumulating, as ``backward()`` does) after ``via="params"``, or backpropagated from
        the shared representation through the backbone after ``via="features"``."""
        if self._taken is None:
            raise BenchError("Step.set_shared_grad needs a Jacobian first: call step.jacobian(losses, via=...)")
        via, target, width = self._taken
        if via == "features":
            if self.world > 1:  # this rank's slice of the representation gets its slice of the update
                direction = direction[self.rank * width:(self.rank + 1) * width]
            jacobian.write_features(direction, target)
        else:
            jacobian.write_params(direction, target)


class Balancer(nn.Module, ABC):
    """Decides the update of a joint step from the per-task losses. Subclasses declare ``Params``."""

    name: ClassVar[str] = ""  # the registered name (set by :func:`register_weighting`)
    Params: ClassVar[type[Frozen]] = NoParams
    #: True when a step must contain every task's loss: multi-input suites then draw one batch from every task per
    #: step (``sampling=all``) instead of sampling one task
    needs_all_tasks: ClassVar[bool] = False
    #: True when :meth:`backward` wants ``step.features`` (the engine then keeps the backbone's outputs)
    uses_features: ClassVar[bool] = False
    #: modules this balancer imports only when built, and the pip extra that installs them
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = "full"
    #: what :meth:`current` logs, as the y label of the report's weight-trajectory plot
    weights_label: ClassVar[str] = r"task weight ($\lambda_t$, or the aggregator's)"
    #: the family the report's figures group and colour this balancer's rows by (docs/figures.md): ``"loss"`` for
    #: a weighting that combines the task losses into one scalar, ``"gradient"`` for an aggregator of per-task
    #: gradients (every :class:`Aggregator`)
    family: ClassVar[str] = "loss"
    #: bumped when the method's numbers change on purpose (a new default solver): cells and stages computed with
    #: an earlier version are then recomputed, not served from the store (:func:`bench.plugins.plugin_source`)
    version: ClassVar[int] = 1

    def __init__(self, tasks: list[TaskConfig], params: Frozen | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.task_names = [t.name for t in tasks]
        self.params = params if params is not None else self.Params()

    def setup(self, model: nn.Module) -> None:
        """Called once with the multi-task model before training (GradNorm finds its shared layer here)."""

    @abstractmethod
    def backward(self, losses: dict[str, torch.Tensor], step: Step) -> None:
        """Fill ``.grad`` of every trainable parameter the losses reach (accumulating, as ``backward()`` does)."""

    def after_step(self, step: Step | None = None) -> None:
        """Called after the optimiser step."""

    def end_epoch(self, epoch: int, mean_losses: dict[str, float]) -> None:
        """Called at the end of every training epoch with each task's mean training loss over that epoch."""

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups for parameters trained with the network (none by default)."""
        return []

    def current(self) -> dict[str, float]:
        """The effective weight of each task now (λ_i, σ_i², w_i), logged as a trajectory."""
        return {t: 1.0 for t in self.task_names}

    def flag(self, event: str, n: int = 1) -> None:
        """Count a step where the method degenerated: it took a fallback, hit a bound, or its solver stopped short
        (``"fallback"``, ``"weight_bound"``, ``"zero_update"``, ``"stationary_nonzero"``, ``"not_converged"``; the
        report has a phrase for each and prints any other name as it is). The trainer counts the *steps* where each
        event happened, per stage (``telemetry["degenerate"]``; ``n`` > 1 within one step still counts one step), and
        the leaderboard footnotes the rows where one happened, so that a row whose method silently became another
        method says so. ``event`` is a short snake_case name."""
        flags = self.__dict__.setdefault("_flags", {})
        flags[event] = flags.get(event, 0) + n

    def take_flags(self) -> dict[str, int]:
        """The events :meth:`flag` counted since the last call (the trainer calls it after every step)."""
        return self.__dict__.pop("_flags", None) or {}


class Weighting(Balancer):
    """Loss level: combines the per-task losses into one scalar, which is backpropagated once."""

    @abstractmethod
    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar to backpropagate through the network."""

    def backward(self, losses: dict[str, torch.Tensor], step: Step) -> None:
        total = self.combine(losses)
        # the task losses were finite (the trainer checked): a non-finite total is the weighting's. Checked where
        # it is free, as the trainer's own per-step check: on the CPU (a GPU check would sync every step)
        if total.device.type == "cpu" and not torch.isfinite(total):
            import inspect

            where = f"{inspect.getsourcefile(type(self))}:{inspect.getsourcelines(type(self).combine)[1]}"
            raise CellFailed(f"weighting {type(self).__name__}.combine returned {total.item()} from finite task "
                             f"losses {', '.join(f'{t}={v.item():.4g}' for t, v in losses.items())} ({where}); "
                             "a bug or a bad parameter of the weighting, not the data")
        step.mark("weighting")
        step.backward(total)


class Aggregator(Balancer):
    """Gradient level: turns the per-task gradients into one update; every step carries every task's loss."""

    needs_all_tasks = True
    family = "gradient"


#: the values ``Balancer.family`` may take
FAMILIES = ("loss", "gradient")

#: every balancer: the built-in modules of :mod:`bench.weighting` and the plug-ins register here
WEIGHTINGS: Registry[type[Balancer]] = Registry("weighting", Balancer, builtins=("bench.weighting",), plugins=True,
                                                hint=HINT)


def register_weighting(name: str) -> Callable[[type[Balancer]], type[Balancer]]:
    """Register a :class:`Weighting` or an :class:`Aggregator` under ``name`` (``strategy.weighting=name``; the
    registry sets ``cls.name``)."""
    return WEIGHTINGS.register(name)


def check_requirements(name: str, cls: type[Balancer]) -> None:
    """A one-line error naming the extra when a balancer's optional dependencies are not installed."""
    missing = []
    for module in cls.requires:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise BenchError(f"weighting {name!r} needs {', '.join(missing)}, which is not installed; "
                         f"pip install 'mtbench[{cls.extra}]'")


def build_weighting(name: str, tasks: list[TaskConfig], params: dict[str, Any] | None = None) -> Balancer:
    """Validate ``params`` against the balancer's ``Params``, check its optional dependencies, and build it (a
    strategy names its weighting with a :class:`~bench.specs.WeightingSpec`, which does this once)."""
    return WeightingSpec.of(name, params).build(tasks)


def check_weighting(name: str, params: dict[str, Any], task_names: list[str]) -> None:
    """Fail at plan time, before any data or model is loaded, on a bad weighting name, parameter or missing extra.
    (What needs a built model, such as GradNorm's layer, is checked when the stage starts.) A ``WeightingSpec``
    field of a strategy's ``Params`` is checked so by the plan: strategies need not call this."""
    WeightingSpec.of(name, params).check(task_names)
