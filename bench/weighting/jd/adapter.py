"""The adapters that turn a torchjd object into a registered ``bench`` balancer.

* :class:`JDAggregator` (gradient level): a torchjd aggregator decides the shared update from the per-task Jacobian,
  which the step computes (:meth:`bench.weighting.Step.jacobian`, ``via=features`` or ``via=params``:
  :mod:`bench.weighting.jacobian`) and into which the update is written back (``Step.set_shared_grad``). When the
  update is a weighting of the Gramian and ``via=params`` in one process, it takes the Gramian path instead
  (:class:`bench.weighting.gramian.GramianPath`: no T × P Jacobian).
* :class:`JDScalarizer` (loss level): ``combine`` applies a torchjd scalarizer to the vector of losses.

Both keep the torchjd object's Python-level state across a resume (:class:`_Wrapped`) and record the weights they
applied as the stage's trajectory.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from bench.config import Frozen, TaskConfig
from bench.errors import BenchError
from bench.weighting.base import Aggregator, Step, Weighting
from bench.weighting.gramian import GramianPath

if TYPE_CHECKING:
    from torchjd import aggregation as A
    from torchjd import scalarization as S

_MODULE_FIELDS = set(vars(nn.Module()))


# torchjd's modules are imported at first use: importing them imports cvxpy and scipy.stats (about 1.4 s), which
# every ``bench`` command would otherwise pay
def _aggregation():
    from torchjd import aggregation

    return aggregation


def _scalarization():
    from torchjd import scalarization

    return scalarization


def _plain_state(module: nn.Module) -> dict[str, dict[str, Any]]:
    """The Python-level state of a torchjd object and its submodules (EMAs, counters, histories, optimisers), which
    ``state_dict`` does not hold, so that a resumed run continues with it. Solver objects are rebuilt, not saved."""
    out: dict[str, dict[str, Any]] = {}
    for path, mod in module.named_modules():
        state = {}
        for k, v in vars(mod).items():
            if k in _MODULE_FIELDS:
                continue
            if isinstance(v, torch.optim.Optimizer):
                state[k] = {"optimizer_state": v.state_dict()}
            elif isinstance(v, (torch.Tensor, np.ndarray, int, float, bool, str, type(None))) or (
                    isinstance(v, list) and all(isinstance(x, torch.Tensor) for x in v)):
                state[k] = copy.deepcopy(v)
        out[path] = state
    return out


def _load_plain_state(module: nn.Module, saved: dict[str, dict[str, Any]]) -> None:
    mods = dict(module.named_modules())
    for path, state in saved.items():
        mod = mods[path]
        for k, v in state.items():
            if isinstance(v, dict) and "optimizer_state" in v:
                opt = getattr(mod, k, None)
                if opt is not None:
                    opt.load_state_dict(v["optimizer_state"])
            else:
                setattr(mod, k, v)


def _to_device(module: nn.Module, model: nn.Module, f64: bool = False) -> None:
    """Move a torchjd object to the model's device, plain tensor attributes (preference vectors) included; with
    ``f64``, a float64 model's float attributes become float64 (an aggregator's Jacobian and Gramian stay float64)."""
    p = next(iter(model.parameters()), None)
    if p is None:
        return
    module.to(p.device)
    for mod in module.modules():
        for k, v in list(vars(mod).items()):
            if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and k not in _MODULE_FIELDS:
                cast = f64 and v.is_floating_point() and p.dtype == torch.float64
                setattr(mod, k, v.to(p.device, torch.float64) if cast else v.to(p.device))


_WSUM, _WN = "__weights_sum", "__weights_n"  # keys of _Wrapped's own state beside the torchjd object's


class _Wrapped:
    """What both adapters share: the wrapped torchjd object's state for resuming, and the weights it applied.

    The weights are averaged since the trajectory last read them (they change every step)."""

    inner: nn.Module  # the torchjd object
    _wsum: torch.Tensor | None = None
    _wn = 0

    def get_extra_state(self) -> dict[str, Any]:
        # the weights averaged since the trajectory last read them: a resume cutting a logging interval continues it
        wsum = self._wsum if self._wsum is not None else torch.zeros(0)
        return {**_plain_state(self.inner), _WSUM: wsum, _WN: self._wn}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        state = dict(state)
        wsum, wn = state.pop(_WSUM, None), state.pop(_WN, 0)
        _load_plain_state(self.inner, state)
        self._wsum = wsum if isinstance(wsum, torch.Tensor) and wsum.numel() else None
        self._wn = int(wn)
        # solver objects are rebuilt, not saved: one that torchjd builds at its first step (Nash-MTL's cvxpy
        # problem) is built now, from the restored warm start
        for mod in self.inner.modules():
            if getattr(mod, "step", 0) and hasattr(mod, "_init_optim_problem") and getattr(mod, "prob", None) is None:
                mod._init_optim_problem()
            # GradVac keys its similarity EMA by (tasks, dtype), a tuple that is not saved: without it the first step
            # after a resume would reset the restored EMA to zero. Rebuilt from the EMA itself
            phi = getattr(mod, "_phi_t", None)
            if isinstance(phi, torch.Tensor) and hasattr(mod, "_state_key") and mod._state_key is None:
                mod._state_key = (phi.shape[0], phi.dtype)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # torchjd registers some buffers at the first step (GradVac's similarity EMA): adopt them before loading
        own, mods = self.state_dict(), dict(self.named_modules())
        for key, value in state_dict.items():
            path, _, name = key.rpartition(".")
            if key not in own and name != "_extra_state" and path in mods:
                mods[path].register_buffer(name, value.clone())
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _track(self, w: torch.Tensor) -> None:
        w = w.detach().float().reshape(-1)
        self._wsum = w if self._wsum is None else self._wsum + w
        self._wn += 1

    def _read(self) -> dict[str, float]:
        if not self._wn:
            return dict.fromkeys(self.task_names, float("nan"))
        mean = (self._wsum / self._wn).tolist()
        self._wsum, self._wn = None, 0
        return dict(zip(self.task_names, mean))


# ------------------------------------------------------------------------------------------------ gradient level

class ViaParams(Frozen):
    #: where the Jacobian is taken: the shared features (single-input suites) or the shared parameters
    via: Literal["auto", "features", "params"] = "auto"


class JDAggregator(_Wrapped, Aggregator):
    """Adapter: a torchjd aggregator decides the shared update from the per-task gradients."""

    Params: ClassVar[type[Frozen]] = ViaParams
    uses_features = True  # via=auto reads how many shared representations the step has
    family = "gradient"  # what the report groups its rows by (an Aggregator's default, stated where it is used)

    def __init__(self, tasks: list[TaskConfig], params: Frozen | None = None):
        super().__init__(tasks, params)
        self.agg = self.make(len(self.task_names))
        # a weighted sum of the task gradients: record the weights it applied (ConFIG's update is one too, computed
        # from the Gramian, but it is not a torchjd WeightedAggregator: no weights recorded, docs/weightings.md)
        self.weighted = isinstance(self.agg, _aggregation().WeightedAggregator)
        if self.weighted:  # a Gramian weighting is hooked itself: the Gramian path calls it without the Jacobian
            weighting = getattr(self.agg, "gramian_weighting", self.agg.weighting)
            weighting.register_forward_hook(lambda mod, args, out: self._track(out))

    @property
    def inner(self) -> nn.Module:
        return self.agg

    @abstractmethod
    def make(self, n_tasks: int) -> A.Aggregator:
        """The torchjd aggregator, built from ``self.params``."""

    def setup(self, model: nn.Module) -> None:
        _to_device(self, model, f64=True)
        # the Gramian path's hooks, when its update is a weighting of the Gramian and via may be params (not a
        # submodule: the balancer's state_dict stays its own)
        old = self.__dict__.get("_gramian")
        if old is not None and old.taker is not None:  # set up again (another model): the old hooks go
            old.taker.close()
        gramian = hasattr(self.agg, "gramian_weighting") and self.params.via != "features"
        self.__dict__["_gramian"] = GramianPath(model) if gramian else None

    def via_for(self, features: int) -> str:
        """``auto`` resolves to ``features`` when one shared representation feeds every head (single input)."""
        via = self.params.via
        return ("features" if features == 1 else "params") if via == "auto" else via

    def backward(self, losses: dict[str, torch.Tensor], step: Step) -> None:
        present = [t for t in self.task_names if t in losses]  # the engine sends every task it can (sampling=all)
        via = self.via_for(len(step.features or []))
        if via == "features" and (not step.features or len(step.features) != 1):
            raise BenchError("via=features needs one shared representation read by every head (a single-input "
                             "suite); use strategy.weighting_params.via=params")
        # a task with no label in this step's batch (partial labels) is absent: the update aggregates the present
        # tasks' gradients with an aggregator of that many tasks (a fresh one: no state of the full one is used,
        # and its weights are not in the trajectory)
        agg = self.agg if len(present) == len(self.task_names) else self._subset(tuple(present))
        gramian: GramianPath | None = self.__dict__.get("_gramian")
        if gramian is not None and gramian.backward({t: losses[t] for t in present}, step, agg, via):
            return
        J = step.jacobian({t: losses[t] for t in present}, via)  # fp16: scaled before the Jacobian
        step.mark("weighting")
        step.set_shared_grad(agg(J))

    def _subset(self, present: tuple[str, ...]) -> A.Aggregator:
        """One aggregator per set of present tasks, so a stateful one (GradVac's EMA, Nash-MTL's warm start) never
        mixes the state of two different subsets (it is not kept across a resume)."""
        cache = self.__dict__.setdefault("_subsets", {})
        if present not in cache:
            cache[present] = self.make(len(present))
        return cache[present]

    def current(self) -> dict[str, float]:
        """The weights applied to the task gradients, averaged since the last read (NaN: not a weighted sum)."""
        return self._read()


# ------------------------------------------------------------------------------------------------ loss level

class JDScalarizer(_Wrapped, Weighting):
    """Adapter: a torchjd scalarizer turns the vector of task losses (in suite order) into the scalar to backprop."""

    needs_all_tasks = True  # the scalarizers take a fixed-length vector of every task's loss
    family = "loss"  # a weighting of the losses (DWA, GLS, RLW, IMTL-L, STCH, FAMO), not of per-task gradients
    #: True when the scalarizer's parameters are trained by the network's optimiser (IMTL-L's scales)
    trained_with_model: ClassVar[bool] = False

    def __init__(self, tasks: list[TaskConfig], params: Frozen | None = None):
        super().__init__(tasks, params)
        self.scalarizer = self.make(len(self.task_names))

    @property
    def inner(self) -> nn.Module:
        return self.scalarizer

    @abstractmethod
    def make(self, n_tasks: int) -> S.Scalarizer:
        """The torchjd scalarizer, built from ``self.params``."""

    def setup(self, model: nn.Module) -> None:
        _to_device(self, model)

    def _vector(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The losses in suite order. A task with no label in this step's batch (partial labels) enters with its last
        observed loss, detached: the scalarizer keeps its T inputs and no gradient reaches the absent task."""
        if not losses:
            raise BenchError("weighting got no task loss in a step; use train.sampling=all")
        last = self.__dict__.setdefault("_last", {})
        for t, v in losses.items():
            last[t] = v.detach().float()
        fill = torch.stack(list(last.values())).mean()  # a task never seen yet: the mean of those seen
        return torch.stack([losses[t].float() if t in losses else last.get(t, fill) for t in self.task_names])

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.scalarizer(self._vector(losses))

    def backward(self, losses: dict[str, torch.Tensor], step: Step) -> None:
        vec = self._vector(losses)
        total = self.scalarizer(vec)
        # the effective weights ∂L/∂L_i: a backward through the scalarizer only (T numbers), for the trajectory
        (w,) = torch.autograd.grad(total, vec, retain_graph=True)
        self._track(w)
        step.mark("weighting")
        step.backward(total)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        if not self.trained_with_model:
            return []
        return [{"params": list(self.scalarizer.parameters()), "weight_decay": 0.0}]

    def current(self) -> dict[str, float]:
        """The effective weight ∂L/∂L_i of each task, averaged since the last read."""
        return self._read()
