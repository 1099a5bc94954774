"""MGDA's two solvers of the min-norm point of the convex hull of the task gradients, as torchjd Gramian weightings.

Both find the weights α on the simplex that minimise ‖αᵀJ‖² = αᵀGα, from the T × T Gramian G = J Jᵀ only (so any
path that produces a Gramian serves them), and both are :class:`torchjd.aggregation.Weighting` objects on PSD
matrices, wrapped in a ``GramianWeightedAggregator`` by :mod:`bench.weighting.jd.mgda`:

* :class:`ExactMinNorm` (the default, ``solver=exact``): Wolfe's (1976) minimum-norm-point algorithm, an active-set
  method on the simplex (:func:`min_norm_weights`). It keeps a support S of affinely independent gradients, solves
  the equality-constrained problem on S exactly (its KKT system), lets the task with the most negative KKT multiplier
  enter and drops those whose weight would turn negative. It stops at a duality gap at the rounding of float64:
  the direction is within 1e-6 of the exact one, relatively (see :data:`REL_GAP`).
* :class:`FrankWolfe` (``solver=frank_wolfe``): torchjd 0.18's ``MGDAWeighting`` (Sener & Koltun's Algorithm 2), bit
  for bit, which also counts the calls that ran out of iterations. At its default ε = 1e-3 it stops several percent
  away from the min-norm point.

Each counts the calls that stopped at their iteration cap (:meth:`_Counted.take_misses`), which the MGDA balancer
flags as ``not_converged``. Importing this module imports torchjd (about a second), so the balancer imports it when
it builds its aggregator.

Example (two conflicting gradients: the min-norm point of the segment between (1, 0) and (-1, 1) is (0.2, 0.4)):
    >>> import torch
    >>> J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    >>> w = min_norm_weights(J @ J.T).weights
    >>> [round(float(x), 12) for x in w], [round(float(x), 12) for x in w @ J]
    ([0.6, 0.4], [0.2, 0.4])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchjd.aggregation import MGDAWeighting, Weighting

#: stop when the duality gap ‖d‖² − min_i g_i·d is at most REL_GAP·‖d‖²: then ‖d − d*‖ ≤ √REL_GAP·‖d‖ = 1e-6‖d‖
#: (for any d in the hull, ‖d − d*‖² ≤ d·(d − d*) ≤ the gap)
REL_GAP = 1e-12
#: ... plus ROUNDING times the size of the terms of g_j·d and ‖d‖² (Σ_k |g_j·g_k| α_k + ‖d‖²), which bounds their
#: rounding in float64 (about 45 machine epsilons): at a Pareto-stationary point (d* = 0) the gap cannot go below
#: it. Relative to the gradients involved, not to the largest one, so that tasks whose gradient norms differ by
#: decades keep the relative accuracy
ROUNDING = 1e-14
#: the cap on the major steps of one call (each lets one task enter the support; the minor steps between two of them
#: drop at most one task each). The algorithm ends after finitely many, in practice T or fewer; a call that reaches
#: the cap is counted as not converged
MAX_ITERS = 1000


class MinNorm(NamedTuple):
    """The weights found (on the simplex, in the Gramian's dtype and device), and whether the solver met its gap."""

    weights: Tensor
    converged: bool


def _affine_min_norm(G: np.ndarray) -> np.ndarray:
    """The weights β (Σβ = 1, any sign) of the min-norm point of the affine hull of the points whose Gramian is G:
    the KKT system [G 1; 1ᵀ 0] [β; ν] = [0; 1]. LU keeps the small weights of gradients whose norms differ by
    decades accurate (least squares by the SVD loses them, at 1e-6); a singular system (affinely dependent
    gradients, which the algorithm avoids up to rounding) is solved by least squares."""
    k = G.shape[0]
    kkt = np.block([[G, np.ones((k, 1))], [np.ones((1, k)), np.zeros((1, 1))]])
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    try:
        beta = np.linalg.solve(kkt, rhs)[:k]
    except np.linalg.LinAlgError:
        beta = np.full(k, np.nan)
    if not np.isfinite(beta).all():
        beta = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:k]
    return beta / beta.sum()


def _wolfe(G: np.ndarray, max_iters: int) -> tuple[np.ndarray, bool]:
    """Wolfe's minimum-norm-point algorithm on a Gramian scaled to max_i G_ii = 1: the weights, and False when it
    stopped at the cap rather than on its gap (or on a step that the rounding of float64 cannot make)."""
    support = [int(np.argmin(np.diag(G)))]  # start at the shortest gradient
    alpha = np.ones(1)
    for _ in range(max_iters):
        Gd = G[:, support] @ alpha  # g_j · d for every task j
        dd = float(alpha @ Gd[support])  # ‖d‖²
        # how far each task is from optimality (its KKT multiplier, negated), beyond what rounding can explain
        excess = dd - Gd - REL_GAP * dd - ROUNDING * (np.abs(G[:, support]) @ alpha + dd)
        j = int(np.argmax(excess))
        if excess[j] <= 0 or j in support:
            return _full(G.shape[0], support, alpha), True  # d·g_j ≥ ‖d‖² for every j (up to rounding): optimal
        support, alpha = [*support, j], np.append(alpha, 0.0)
        while True:  # minor cycle: move towards the affine min-norm point of S until a weight reaches 0
            beta = _affine_min_norm(G[np.ix_(support, support)])
            if (beta > 0).all():
                alpha = beta
                break
            neg = np.flatnonzero(beta <= 0)
            gap = alpha[neg] - beta[neg]  # ≥ 0; 0 only where both are 0
            ratio = np.divide(alpha[neg], gap, out=np.zeros_like(gap), where=gap > 0)
            alpha = alpha + ratio.min() * (beta - alpha)
            keep = alpha > 0
            keep[neg[np.argmin(ratio)]] = False  # at least the weight that reached 0 leaves
            if not keep[-1] and ratio.min() == 0:  # the entering task leaves at once: optimal to rounding
                return _full(G.shape[0], support[:-1], alpha[:-1] / alpha[:-1].sum()), True
            support, alpha = [s for s, k in zip(support, keep) if k], alpha[keep] / alpha[keep].sum()
    return _full(G.shape[0], support, alpha), False


def _full(T: int, support: list[int], alpha: np.ndarray) -> np.ndarray:
    out = np.zeros(T)
    out[support] = alpha
    return out


def min_norm_weights(gramian: Tensor, max_iters: int = MAX_ITERS) -> MinNorm:
    """The weights α on the simplex of the min-norm point αᵀJ of the convex hull of the rows of J, from G = J Jᵀ.

    Solved in float64 on the CPU (T × T is tiny), on G scaled by its largest diagonal entry. All-zero (or
    non-finite) gradients: uniform weights, whose update is the zero (or non-finite) one any weights give."""
    G = gramian.detach().to(device="cpu", dtype=torch.float64).numpy()
    T, scale = G.shape[0], float(np.max(np.diag(G))) if G.size else 0.0
    if not np.isfinite(G).all() or scale <= 0:
        return MinNorm(torch.full((T,), 1.0 / T, dtype=gramian.dtype, device=gramian.device), True)
    G = (G + G.T) / (2 * scale)  # symmetric to the last bit, max diagonal 1
    alpha, converged = _wolfe(G, max_iters)
    return MinNorm(torch.as_tensor(alpha, dtype=gramian.dtype, device=gramian.device), converged)


class _Counted:
    """A solver that counts the calls that stopped at their iteration cap, for the balancer to flag."""

    misses: int = 0

    def take_misses(self) -> int:
        """The calls that stopped at the cap since the last call of this method."""
        n, self.misses = self.misses, 0
        return n


class ExactMinNorm(_Counted, Weighting):
    """Weighting[PSDMatrix]: the exact min-norm weights (:func:`min_norm_weights`)."""

    def __init__(self, max_iters: int = MAX_ITERS) -> None:
        super().__init__()
        self.max_iters = max_iters

    def forward(self, gramian: Tensor, /) -> Tensor:
        out = min_norm_weights(gramian, self.max_iters)
        self.misses += not out.converged
        return out.weights


class FrankWolfe(_Counted, MGDAWeighting):
    """torchjd's ``MGDAWeighting`` (its loop below is torchjd 0.18's, MIT licence, unchanged), counting the calls
    whose loop ran all ``max_iters`` iterations without a step below ``epsilon``."""

    def forward(self, gramian: Tensor, /) -> Tensor:
        device = gramian.device
        dtype = gramian.dtype

        alpha = torch.ones(gramian.shape[0], device=device, dtype=dtype) / gramian.shape[0]
        for _ in range(self.max_iters):
            t = torch.argmin(gramian @ alpha)
            e_t = torch.zeros(gramian.shape[0], device=device, dtype=dtype)
            e_t[t] = 1.0
            a = alpha @ (gramian @ e_t)
            b = alpha @ (gramian @ alpha)
            c = e_t @ (gramian @ e_t)
            if c <= a:
                gamma = 1.0
            elif b <= a:
                gamma = 0.0
            else:
                gamma = (b - a) / (b + c - 2 * a)
            alpha = (1 - gamma) * alpha + gamma * e_t
            if gamma < self.epsilon:
                break
        else:
            self.misses += 1
        return alpha
