"""The multi-task methods of the literature, through torchjd (Jacobian descent for PyTorch).

Two adapters turn a torchjd object into a registered ``bench`` balancer; each method below is a few lines naming its
torchjd class, its paper and its validated hyper-parameters.

* :class:`JDAggregator` (gradient level: MGDA, PCGrad, UPGrad, Nash-MTL, ...). Two ways to get the Jacobian:

  - ``via=features`` (the default on single-input suites, where every head reads one shared representation z):
    the Jacobian of the T losses with respect to z (T small backward passes through the heads only), aggregated
    into one gradient for z, which one backward carries through the backbone. For aggregators whose update is a
    weighted sum of the task gradients this is Sener & Koltun's MGDA-UB: the weights come from the Gramian of
    ∂L/∂z, and the backbone gets ∇(Σ w_i L_i). Cost: about one backward pass.
  - ``via=params`` (multi-input suites, where each task has its own batch, or on request): torchjd's
    ``autojac.backward`` builds the full T × P Jacobian over the backbone's shared parameters and ``jac_to_grad``
    aggregates it. Cost: T backward passes (vectorised) and T × P memory.

  Heads are task-specific, so each head receives its own task's gradient unweighted (torchjd's ``mtl_backward``
  convention); only the shared update is aggregated.
* :class:`JDScalarizer` (loss level: DWA, FAMO, GLS, IMTL-L, RLW, STCH): ``combine`` applies torchjd's scalarizer
  to the vector of losses; the engine's epoch boundary drives DWA's history, and FAMO's logit update reads the
  losses recomputed after the step.

Both record the weights they applied as the stage's trajectory: an aggregator's weights (the mean over each logging
interval; none for aggregators that are not weighted sums, GradDrop and ConFIG), a scalarizer's effective weights
∂L/∂L_i.

Example:
    >>> from bench.config import TaskConfig
    >>> from bench.weighting import build_weighting
    >>> tasks = [TaskConfig(name=t, input="vector", target="regression") for t in "ab"]
    >>> w = build_weighting("pcgrad", tasks)
    >>> type(w.agg).__name__, w.via_for(features=1)
    ('PCGrad', 'features')
"""

from __future__ import annotations

import copy
import warnings
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn

from bench.config import Frozen, TaskConfig
from bench.errors import BenchError
from bench.weighting.base import Aggregator, Step, Weighting, register_weighting

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


def _to_device(module: nn.Module, model: nn.Module) -> None:
    """Move a torchjd object to the model's device, plain tensor attributes (preference vectors) included."""
    p = next(iter(model.parameters()), None)
    if p is None:
        return
    module.to(p.device)
    for mod in module.modules():
        for k, v in list(vars(mod).items()):
            if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter) and k not in _MODULE_FIELDS:
                setattr(mod, k, v.to(p.device))


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
    family = "gradient"  # what the report groups its rows by (an Aggregator's default, stated where it is used)

    def __init__(self, tasks: list[TaskConfig], params: Frozen | None = None):
        super().__init__(tasks, params)
        self.agg = self.make(len(self.task_names))
        # a weighted sum of the task gradients: record the weights it applied (ConFIG also holds a `weighting`, its
        # preference vector, but its update is not a weighted sum of the gradients)
        self.weighted = isinstance(self.agg, _aggregation().WeightedAggregator)
        if self.weighted:
            self.agg.weighting.register_forward_hook(lambda mod, args, out: self._track(out))

    @property
    def inner(self) -> nn.Module:
        return self.agg

    @abstractmethod
    def make(self, n_tasks: int) -> A.Aggregator:
        """The torchjd aggregator, built from ``self.params``."""

    def setup(self, model: nn.Module) -> None:
        _to_device(self, model)

    def via_for(self, features: int) -> str:
        """``auto`` resolves to ``features`` when one shared representation feeds every head (single input)."""
        via = self.params.via
        return ("features" if features == 1 else "params") if via == "auto" else via

    def backward(self, losses: dict[str, torch.Tensor], step: Step) -> None:
        missing = [t for t in self.task_names if t not in losses]
        if missing:
            raise BenchError(f"weighting needs every task's loss in each step but {missing} are missing; "
                             "use train.sampling=all (the engine does so for gradient-level weightings)")
        L = [step.scale(losses[t]) for t in self.task_names]  # fp16: scaled before the Jacobian
        via = self.via_for(len(step.features or []))
        if via == "features":
            if not step.features or len(step.features) != 1:
                raise BenchError("via=features needs one shared representation read by every head (a single-input "
                                 "suite); use strategy.weighting_params.via=params")
            self._via_features(L, step.features[0], step)
        else:
            self._via_params(L, step)

    def _via_features(self, L: list[torch.Tensor], z: torch.Tensor, step: Step) -> None:
        rows = []
        for t, li in zip(self.task_names, L):
            heads = step.heads.get(t, [])
            gz, *gh = torch.autograd.grad(li, [z, *heads], retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(z).reshape(-1) if gz is None else gz.reshape(-1))
            _accumulate(heads, gh)
        J = torch.stack(rows).float()
        step.mark("weighting")
        g = self.agg(J)
        z.backward(g.to(z.dtype).view_as(z))

    def _via_params(self, L: list[torch.Tensor], step: Step) -> None:
        heads = [p for t in self.task_names for p in step.heads.get(t, [])]
        if heads:  # each head is reached by its own task's loss only, so one backward of the sum serves them all
            _accumulate(heads, torch.autograd.grad(torch.stack(L).sum(), heads, retain_graph=True,
                                                   allow_unused=True))
        shared = [p for p in step.shared if p.requires_grad]
        if step.features is not None and len(step.features) > 1:
            # each task has its own batch: T plain backward passes, each through its own batch's graph only
            # (torchjd's vectorised backward would push every row through every task's graph: T² of them)
            rows = [torch.autograd.grad(li, shared, retain_graph=True, allow_unused=True) for li in L]
            for i, p in enumerate(shared):
                p.jac = torch.stack([r[i] if r[i] is not None else torch.zeros_like(p) for r in rows])
        else:
            from torchjd.autojac import backward

            backward(L, inputs=shared)
        step.mark("weighting")
        from torchjd.autojac import jac_to_grad

        jac_to_grad(shared, self.agg)

    def current(self) -> dict[str, float]:
        """The weights applied to the task gradients, averaged since the last read (NaN: not a weighted sum)."""
        return self._read()


def _accumulate(params: list[nn.Parameter], grads) -> None:
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


def _pref(v: list[float] | None) -> torch.Tensor | None:
    return None if v is None else torch.tensor(v, dtype=torch.float32)


class PrefParams(ViaParams):
    #: preference vector over the tasks (one non-negative number each); None: uniform
    pref_vector: list[float] | None = None

    @field_validator("pref_vector")
    @classmethod
    def _nonneg(cls, v):
        if v is not None and (not v or min(v) < 0):
            raise ValueError("pref_vector must be non-negative numbers, one per task")
        return v


@register_weighting("mgda")
class MGDA(JDAggregator):
    """MGDA (Désidéri 2012; Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of task gradients."""

    class Params(ViaParams):
        epsilon: float = Field(1e-3, gt=0)  # Frank-Wolfe stopping tolerance
        max_iters: int = Field(100, ge=1)

    def make(self, n):
        return _aggregation().MGDA(epsilon=self.params.epsilon, max_iters=self.params.max_iters)


@register_weighting("pcgrad")
class PCGrad(JDAggregator):
    """PCGrad (Yu et al., NeurIPS 2020): project each task gradient off the others it conflicts with, then sum."""

    def make(self, n):
        return _aggregation().PCGrad()


@register_weighting("graddrop")
class GradDrop(JDAggregator):
    """GradDrop (Chen et al., NeurIPS 2020): per coordinate, keep the gradients of one sign (sampled by purity)."""

    class Params(ViaParams):
        #: per-task leak (0: drop fully, 1: keep); None: no leak
        leak: list[float] | None = None

    def make(self, n):
        if self.params.leak is not None and len(self.params.leak) != n:
            raise BenchError(f"graddrop leak has {len(self.params.leak)} values for {n} tasks; give one per task")
        return _aggregation().GradDrop(leak=_pref(self.params.leak))


@register_weighting("gradvac")
class GradVac(JDAggregator):
    """GradVac (Wang et al., ICLR 2021): align each pair of task gradients to an EMA of their cosine similarity."""

    class Params(ViaParams):
        beta: float = Field(0.5, ge=0, le=1)  # EMA rate of the target similarity
        eps: float = Field(1e-8, gt=0)

    def make(self, n):
        return _aggregation().GradVac(beta=self.params.beta, eps=self.params.eps)


@register_weighting("imtl_g")
class IMTLG(JDAggregator):
    """IMTL-G (Liu et al., ICLR 2021): weights that give the update equal projections on every unit task gradient."""

    def make(self, n):
        return _aggregation().IMTLG()


@register_weighting("aligned_mtl")
class AlignedMTL(JDAggregator):
    """Aligned-MTL (Senushkin et al., CVPR 2023): align the Jacobian's principal components (condition number 1)."""

    class Params(PrefParams):
        scale_mode: Literal["min", "median", "rmse"] = "min"

    def make(self, n):
        return _aggregation().AlignedMTL(pref_vector=_pref(self.params.pref_vector), scale_mode=self.params.scale_mode)


@register_weighting("config")
class ConFIG(JDAggregator):
    """ConFIG (Liu et al., ICLR 2025): the conflict-free direction with equal cosine to every task gradient."""

    Params = PrefParams

    def make(self, n):
        return _aggregation().ConFIG(pref_vector=_pref(self.params.pref_vector))


@register_weighting("fairgrad")
class FairGrad(JDAggregator):
    """FairGrad (Ban & Ji, ICML 2024): α-fair utility maximisation over the task gradients."""

    requires = ("scipy",)

    class Params(ViaParams):
        alpha: float = Field(1.0, gt=0)  # 1: proportional fairness; → ∞: max-min fairness
        max_iters: int | None = Field(None, ge=1)

    def make(self, n):
        return _aggregation().FairGrad(alpha=self.params.alpha, max_iters=self.params.max_iters)


@register_weighting("upgrad")
class UPGrad(JDAggregator):
    """UPGrad (Quinton & Rey, 2024): project the mean onto the dual cone of the task gradients (no conflict)."""

    Params = PrefParams
    requires = ("quadprog", "qpsolvers")  # torchjd's dual-cone projector

    def make(self, n):
        return _aggregation().UPGrad(pref_vector=_pref(self.params.pref_vector))


@register_weighting("dualproj")
class DualProj(JDAggregator):
    """DualProj (Quinton & Rey, 2024): project the averaged gradient onto the dual cone of the task gradients."""

    Params = PrefParams
    requires = ("quadprog", "qpsolvers")

    def make(self, n):
        return _aggregation().DualProj(pref_vector=_pref(self.params.pref_vector))


@register_weighting("cagrad")
class CAGrad(JDAggregator):
    """CAGrad (Liu et al., NeurIPS 2021): the best worst-task improvement within a ball of radius c around the mean."""

    requires = ("cvxpy",)

    class Params(ViaParams):
        c: float = Field(0.4, ge=0)  # radius of the ball around the average gradient (the paper's 0.4)
        norm_eps: float = Field(1e-4, gt=0)

    def make(self, n):
        return _aggregation().CAGrad(c=self.params.c, norm_eps=self.params.norm_eps)


@register_weighting("nash_mtl")
class NashMTL(JDAggregator):
    """Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution of the tasks over the update direction."""

    requires = ("cvxpy", "ecos")

    class Params(ViaParams):
        max_norm: float = Field(1.0, gt=0)  # clip of the aggregated update (the paper's default)
        update_weights_every: int = Field(1, ge=1)
        optim_niter: int = Field(20, ge=1)

    def make(self, n):
        p = self.params
        return _aggregation().NashMTL(n_tasks=n, max_norm=p.max_norm, update_weights_every=p.update_weights_every,
                         optim_niter=p.optim_niter)

    def backward(self, losses: dict[str, torch.Tensor], step: Step) -> None:
        with warnings.catch_warnings():  # cvxpy warns at every solve that it recompiles the (non-DPP) problem
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            super().backward(losses, step)


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
        missing = [t for t in self.task_names if t not in losses]
        if missing:
            raise BenchError(f"weighting needs every task's loss in each step but {missing} are missing; "
                             "use train.sampling=all")
        return torch.stack([losses[t].float() for t in self.task_names])

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


class _Scaled(nn.Module):
    """``factor`` × another scalarizer (RLW's weights summing to T instead of 1, comparable with ``equal``)."""

    def __init__(self, inner: nn.Module, factor: float):
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, values: torch.Tensor, /) -> torch.Tensor:
        return self.factor * self.inner(values)


@register_weighting("dwa")
class DWA(JDScalarizer):
    """DWA (Liu, Johns & Davison, CVPR 2019): λ_i = T·softmax(r_i/τ), r_i the ratio of the last two epochs' losses."""

    class Params(Frozen):
        temperature: float = Field(2.0, gt=0)  # τ; the paper's 2

    def make(self, n):
        return _scalarization().DWA(temperature=self.params.temperature)

    def end_epoch(self, epoch: int, mean_losses: dict[str, float]) -> None:
        self.scalarizer.step()  # torchjd's DWA averaged the epoch's losses itself; roll its history


@register_weighting("gls")
class GLS(JDScalarizer):
    """GLS (Chennupati et al., CVPR-W 2019): the geometric mean of the task losses, (Π_i L_i)^{1/T}."""

    def make(self, n):
        return _scalarization().GeometricMean()


@register_weighting("rlw")
class RLW(JDScalarizer):
    """RLW (Lin et al., TMLR 2022): random loss weights each step, T·softmax(N(0, I)) (they sum to T, as equal's)."""

    def make(self, n):
        return _Scaled(_scalarization().Random(), float(n))


@register_weighting("imtl_l")
class IMTLL(JDScalarizer):
    """IMTL-L (Liu et al., ICLR 2021): learned loss scales e^{s_i} L_i − s_i, trained with the network."""

    trained_with_model = True

    def make(self, n):
        return _scalarization().IMTLL(n)


@register_weighting("stch")
class STCH(JDScalarizer):
    """STCH (Lin et al., ICML 2024): smooth Tchebycheff, μ·log Σ_i exp(L_i/μ) (a soft max of the losses)."""

    class Params(Frozen):
        mu: float = Field(1.0, gt=0)  # smoothing; → 0: the max of the losses, large: their mean + const

    def make(self, n):
        # preference λ_i = 1 (torchjd's default is 1/T): the value tends to max_i L_i and the weights sum to 1
        return _scalarization().STCH(mu=self.params.mu, weights=torch.ones(n))


@register_weighting("famo")
class FAMO(JDScalarizer):
    """FAMO (Liu et al., NeurIPS 2023): decrease every loss at an equal rate, from loss values only (O(1) per step)."""

    class Params(Frozen):
        gamma: float = Field(1e-3, ge=0)  # the paper's γ: weight decay of the task logits
        lr: float = Field(0.025, gt=0)  # the paper's β: learning rate of the task logits

    def make(self, n):
        famo = _scalarization().FAMO(n, lr=self.params.lr, weight_decay=self.params.gamma)
        # torchjd builds its Adam at the first update; build it now so a resumed run restores its moments
        famo._optimizer = torch.optim.Adam([famo._w], lr=famo.lr, weight_decay=famo.weight_decay)
        return famo

    def after_step(self, step: Step | None = None) -> None:
        """Move the logits by how much each loss fell over the step, on the same batch (losses recomputed)."""
        if step is not None and step.recompute is not None:
            self.scalarizer.update(self._vector(step.recompute()))
