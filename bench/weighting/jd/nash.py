"""Nash-MTL's own solver: the Nash bargaining weights of the task gradients, without cvxpy.

Nash-MTL (Navon et al., ICML 2022) updates along d = Σ_i α_i g_i, where α > 0 solves the bargaining equations

    G α = 1 / α        (G = J Jᵀ, the T × T Gramian of the task gradients; elementwise: g_i·d = 1/α_i)

so that every task's directional derivative is inversely proportional to its weight. Their positive solution is the
unique minimiser of the strictly convex

    f(α) = ½ αᵀGα − Σ_i log α_i        (∇f = Gα − 1/α,  ∇²f = G + diag(1/α²) ≻ 0)

and it exists exactly when f is bounded below, i.e. when no convex combination of the task gradients is zero (the
gradients are not Pareto-stationary; a zero row is the plainest such case). :func:`bargain` minimises f by Newton's
method with a backtracking (Armijo) line search that keeps α > 0 (global convergence on a convex f, quadratic near
the solution), on the Gramian of the unit task gradients (the equations are invariant under α_i → α_i·‖g_i‖, so the
solve sees no spread of the gradient norms; the weights scale back by 1/‖g_i‖). It starts from the previous step's
weights (the warm start), or from the diagonal guess α_i = 1/‖g_i‖ where that is better (the first step), each
first rescaled by the multiple that minimises f along it (closed form). One T × T solve an iteration, 0-6
iterations from a warm start; it stops when max_i |α_i (Gα)_i − 1| ≤ 1e-9.

The paper (and torchjd 0.18's ``NashMTL``) reaches the same point by a sequence of convex approximations solved
with cvxpy/ECOS, which recompiles its (non-DPP) problem at every solve: 30-130 ms a step whatever the model
(docs/performance.md). :class:`NashWeighting` keeps torchjd's semantics around the solve: the clip of ‖Jᵀα‖ to
``max_norm``, a solve every ``update_weights_every`` steps (the weights of the last solve in between), the warm start
kept across steps (and, as plain attributes, across a resume), and on a failed solve the previous weights (ones
before the first success: the clipped sum). It reports a failed solve as ``fallback`` and an iteration cap hit by a
solvable problem as ``not_converged`` (docs/weightings.md, "When a method degenerates").

Example (two conflicting gradients; the equations hold):
    >>> import numpy as np
    >>> G = np.array([[1.0, -0.5], [-0.5, 2.0]])
    >>> out = bargain(G, np.ones(2), max_iter=20)
    >>> out.event is None, bool(np.allclose(out.alpha * (G @ out.alpha), 1.0))
    (True, True)
    >>> bargain(np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones(2), max_iter=20).event  # a zero row: no solution
    'fallback'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bench.weighting.jd.degenerate import FALLBACK, NOT_CONVERGED, stationary

#: the solve stops when max_i |α_i (Gα)_i − 1| is at most this
TOL = 1e-9
_ARMIJO, _MIN_STEP, _QUADRATIC = 0.25, 1e-12, 0.25**2


@dataclass(frozen=True)
class Bargain:
    """One solve: the weights for G (``alpha``), the Newton iterations it took, the residual max_i |α_i (Gα)_i − 1|
    it reached, and its degeneracy event (None when the equations were solved)."""

    alpha: np.ndarray
    iters: int
    residual: float
    event: str | None = None


def _f(G: np.ndarray, a: np.ndarray) -> float:
    return float(0.5 * a @ G @ a - np.log(a).sum())


def _start(G: np.ndarray, warm: np.ndarray) -> np.ndarray:
    """The better of the warm start and ones (the diagonal guess, exact for T = 2 and for orthogonal gradients),
    each rescaled by s = √(T / cᵀGc), the minimiser of f(s·c) over s > 0."""
    n = len(G)
    best = None
    for c in (warm, np.ones(n)):
        q = float(c @ G @ c)
        if not np.isfinite(q) or q <= 0 or not (c > 0).all():
            continue
        c = c * np.sqrt(n / q)
        if best is None or _f(G, c) < _f(G, best):
            best = c
    return best if best is not None else np.ones(n)


def bargain(G: np.ndarray, start: np.ndarray, max_iter: int, tol: float = TOL) -> Bargain:
    """Solve G α = 1/α (α > 0) for a T × T Gramian ``G`` from ``start`` (the previous weights) in at most
    ``max_iter`` Newton iterations. Without a solution (a zero row, non-finite or Pareto-stationary gradients) the
    result is ``start`` with the event ``fallback``; a solvable problem still off ``tol`` at the cap returns its last
    iterate with ``not_converged``."""
    G = 0.5 * (G + G.T)
    diag = np.diag(G)
    if not np.isfinite(G).all() or not (diag > 0).all():  # a zero row: g_i·d = 1/α_i > 0 is impossible
        return Bargain(start, 0, float("nan"), FALLBACK)
    # α = β / √G_ii turns the equations into the same ones for the unit-diagonal Gn = D G D (D = diag(1/√G_ii)):
    # the solve sees unit gradients, whatever the spread of their norms
    root = np.sqrt(diag)
    Gn = G / np.outer(root, root)
    a = _start(Gn, start * root)
    k, residual = 0, float("inf")
    for k in range(max_iter + 1):  # noqa: B007 (k is the count of iterations taken)
        Ga = Gn @ a
        residual = float(np.abs(a * Ga - 1.0).max())
        if residual <= tol or k == max_iter:
            break
        grad = Ga - 1.0 / a
        step = -np.linalg.solve(Gn + np.diag(1.0 / a**2), grad)
        slope, fa, t = float(grad @ step), _f(Gn, a), 1.0
        # near the solution (Newton decrement λ = √(−slope) < 1/4; f is self-concordant) the full step stays in the
        # domain and converges quadratically: take it, as f's decrease there is below its rounding. Elsewhere,
        # backtrack until α stays positive and f decreases enough (Armijo); a stalled search ends the solve
        while t >= _MIN_STEP and ((a + t * step <= 0).any() or (
                -slope >= _QUADRATIC and _f(Gn, a + t * step) > fa + _ARMIJO * t * slope)):
            t *= 0.5
        if t < _MIN_STEP:
            break
        a = a + t * step
    if residual <= tol:
        return Bargain(a / root, k, residual)
    if stationary(G):  # no solution: the iterates run off to infinity along a zero combination of the gradients
        return Bargain(start, k, residual, FALLBACK)
    return Bargain(a / root, k, residual, NOT_CONVERGED)


class _Composed(nn.Module):
    """``weighting(fn(matrix))``: what torchjd's ``GramianWeightedAggregator`` builds with ``weighting << fn``."""

    def __init__(self, weighting: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.weighting, self.fn = weighting, fn

    def forward(self, matrix: torch.Tensor) -> torch.Tensor:
        return self.weighting(self.fn(matrix))


class NashWeighting(nn.Module):
    """Nash-MTL's weights from the Gramian (a torchjd Gramian weighting: ``GramianWeightedAggregator(NashWeighting(
    ...))`` is the aggregator). Its state (``step``, the warm start ``prvs_alpha`` for the unscaled Gramian) is made
    of plain attributes, which the adapter keeps across a resume. ``on_event`` receives each solve's degeneracy
    event (the balancer's ``flag``)."""

    def __init__(self, n_tasks: int, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20,
                 on_event: Callable[[str], None] | None = None):
        super().__init__()
        self.n_tasks, self.max_norm = n_tasks, max_norm
        self.update_weights_every, self.optim_niter = update_weights_every, optim_niter
        self._on_event = on_event
        self.reset()

    def reset(self) -> None:
        """Forget the warm start (torchjd's initial state: ones, step 0)."""
        self.step = 0
        self.prvs_alpha = np.ones(self.n_tasks)

    def forward(self, gramian: torch.Tensor) -> torch.Tensor:
        if self.step % self.update_weights_every == 0:
            out = bargain(gramian.detach().to("cpu", torch.float64).numpy(), self.prvs_alpha, self.optim_niter)
            if out.event is not None and self._on_event is not None:
                self._on_event(out.event)
            self.prvs_alpha = out.alpha  # a fallback returns the previous weights: the state is unchanged
        self.step += 1
        alpha = torch.tensor(self.prvs_alpha, device=gramian.device, dtype=gramian.dtype)  # a copy, not the state
        if self.max_norm > 0:  # ‖Jᵀα‖ from the Gramian; a factor ≤ 1 instead of a branch: no device sync
            norm = (alpha @ gramian @ alpha).clamp(min=0).sqrt()
            alpha = alpha * (self.max_norm / norm).clamp(max=1.0)
        return alpha

    def __lshift__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
        return _Composed(self, fn)
