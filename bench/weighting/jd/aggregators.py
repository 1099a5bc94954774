"""The gradient-level methods of the literature through torchjd: each names its aggregator, paper and parameters.

(MGDA, with its own exact solver, is in :mod:`bench.weighting.jd.mgda`.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from bench.errors import BenchError
from bench.weighting.base import Step, register_weighting
from bench.weighting.jd import degenerate as dg
from bench.weighting.jd.adapter import JDAggregator, ViaParams, _aggregation
from bench.weighting.jd.nash import NashWeighting


def _pref(v: list[float] | None) -> torch.Tensor | None:
    return None if v is None else torch.tensor(v, dtype=torch.float32)


def _cpu(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _watch(owner: JDAggregator, agg: Any, events: Callable[[np.ndarray, np.ndarray], list[str]]) -> Any:
    """``agg`` (a torchjd Gramian-weighted aggregator) with a hook on its Gramian weighting that flags on ``owner``
    the degeneracy events (:mod:`bench.weighting.jd.degenerate`) that ``events(G, w)`` names from the Gramian it was
    given and the weights it returned: T × T and T numbers copied to the CPU (these methods' solvers run there, so
    their step waits for the device already). A hook, so that it sees every path to the weighting."""
    def hook(module, args, weights):
        for event in events(_cpu(args[0]), _cpu(weights)):
            owner.flag(event)

    agg.gramian_weighting.register_forward_hook(hook)
    return agg


def _stationary_nonzero(G: np.ndarray, w: np.ndarray) -> list[str]:
    return [dg.STATIONARY_NONZERO] if dg.stationary_nonzero(G, w) else []


class PrefParams(ViaParams):
    #: preference vector over the tasks (one non-negative number each); None: uniform
    pref_vector: list[float] | None = None

    @field_validator("pref_vector")
    @classmethod
    def _nonneg(cls, v):
        if v is not None and (not v or min(v) < 0):
            raise ValueError("pref_vector must be non-negative numbers, one per task")
        return v


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
        # torchjd's ConFIG, computed from the Gramian (no SVD of the T x P Jacobian; equal to it in tests), so
        # via=params takes the Gramian path. Imported here: the module imports torchjd (CLI start-up)
        from bench.weighting.jd.conflict_free import GramianConFIG

        return GramianConFIG(pref_vector=_pref(self.params.pref_vector))


@register_weighting("fairgrad")
class FairGrad(JDAggregator):
    """FairGrad (Ban & Ji, ICML 2024): α-fair utility maximisation over the task gradients."""

    requires = ("scipy",)

    class Params(ViaParams):
        alpha: float = Field(1.0, gt=0)  # 1: proportional fairness; → ∞: max-min fairness
        max_iters: int | None = Field(None, ge=1)

    def make(self, n):
        alpha = self.params.alpha
        return _watch(self, _aggregation().FairGrad(alpha=alpha, max_iters=self.params.max_iters),
                      lambda G, w: dg.fairgrad_events(G, w, alpha))


@register_weighting("upgrad")
class UPGrad(JDAggregator):
    """UPGrad (Quinton & Rey, 2024): project the mean onto the dual cone of the task gradients (no conflict)."""

    Params = PrefParams
    requires = ("quadprog", "qpsolvers")  # torchjd's dual-cone projector

    def make(self, n):
        return _watch(self, _aggregation().UPGrad(pref_vector=_pref(self.params.pref_vector)), _stationary_nonzero)


@register_weighting("dualproj")
class DualProj(JDAggregator):
    """DualProj (Quinton & Rey, 2024): project the averaged gradient onto the dual cone of the task gradients."""

    Params = PrefParams
    requires = ("quadprog", "qpsolvers")

    def make(self, n):
        return _watch(self, _aggregation().DualProj(pref_vector=_pref(self.params.pref_vector)), _stationary_nonzero)


@register_weighting("cagrad")
class CAGrad(JDAggregator):
    """CAGrad (Liu et al., NeurIPS 2021): the best worst-task improvement within a ball of radius c around the mean."""

    requires = ("cvxpy",)

    class Params(ViaParams):
        c: float = Field(0.4, ge=0)  # radius of the ball around the average gradient (the paper's 0.4)
        norm_eps: float = Field(1e-4, gt=0)

    def make(self, n):
        return _watch(self, _aggregation().CAGrad(c=self.params.c, norm_eps=self.params.norm_eps),
                      lambda G, w: [dg.ZERO_UPDATE] if dg.zero_update(G, w) else [])


@register_weighting("nash_mtl")
class NashMTL(JDAggregator):
    """Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution of the tasks over the update direction."""

    version = 2  # 2: its own Newton solver by default (1 was torchjd's cvxpy solve): earlier cells recompute

    # only solver=cvxpy (torchjd's) needs them; kept so that the extra's check stays the same for every solver
    requires = ("cvxpy", "ecos")

    class Params(ViaParams):
        max_norm: float = Field(1.0, gt=0)  # clip of the aggregated update (the paper's default)
        update_weights_every: int = Field(1, ge=1)
        #: the cap on the solver's iterations (newton: Newton steps; cvxpy: convex approximations, ECOS solves)
        optim_niter: int = Field(20, ge=1)
        #: newton: bench.weighting.jd.nash (no cvxpy); cvxpy: torchjd 0.18's NashMTL, for comparison
        solver: Literal["newton", "cvxpy"] = "newton"

    def make(self, n):
        p = self.params
        if p.solver == "newton":
            return _aggregation().GramianWeightedAggregator(NashWeighting(
                n, p.max_norm, p.update_weights_every, p.optim_niter, on_event=self.flag))
        agg = _aggregation().NashMTL(n_tasks=n, max_norm=p.max_norm, update_weights_every=p.update_weights_every,
                                     optim_niter=p.optim_niter)
        _watch_cvxpy_nash(self, agg.weighting)
        return agg

    def backward(self, losses: dict[str, torch.Tensor], step: Step) -> None:
        with warnings.catch_warnings():  # cvxpy warns at every solve that it recompiles the (non-DPP) problem
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            super().backward(losses, step)


def _watch_cvxpy_nash(owner: NashMTL, weighting: Any) -> None:
    """Flag torchjd's Nash-MTL solves that missed the bargaining equations (by more than 1e-2, relatively): with its
    previous weights kept (a failed ECOS solve), ``fallback``; otherwise ``not_converged``."""
    before: dict[str, np.ndarray] = {}

    def pre(module, args):
        before["alpha"] = np.array(module.prvs_alpha, dtype=np.float64)

    def post(module, args, out):
        if (int(module.step) - 1) % module.update_weights_every:  # no solve at this step
            return
        J = args[0].detach().double()
        a, G = np.asarray(module.prvs_alpha, dtype=np.float64), _cpu(J @ J.T)
        if not np.abs(a * (G @ a) - 1).max() <= 1e-2:
            owner.flag(dg.FALLBACK if np.array_equal(a, before["alpha"]) else dg.NOT_CONVERGED)

    weighting.register_forward_pre_hook(pre)
    weighting.register_forward_hook(post)
