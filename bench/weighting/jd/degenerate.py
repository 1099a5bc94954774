"""When a gradient-level method degenerates: the tests that name a step where it took a fallback, hit a bound or
returned what its definition does not promise (docs/weightings.md, "When a method degenerates").

Each test reads only the T × T Gramian G = J Jᵀ the method was given and the T weights w it returned (its update is
d = Jᵀw, so ‖d‖² = wᵀGw and g_i·d = (Gw)_i), in float64 on the CPU: no pass over the P columns of the Jacobian. The
balancer counts the event names it returns (:meth:`bench.weighting.base.Balancer.flag`).

*Pareto-stationary*, numerically: a task gradient is zero, or the min-norm point of the convex hull of the *unit*
task gradients ĝ_i = g_i/‖g_i‖ is no longer than :data:`TAU` (1e-3): min_{w ∈ simplex} ‖Σ w_i ĝ_i‖ ≤ TAU. Stationarity
(0 in the hull) does not depend on the gradients' lengths, so neither does the test: a task whose gradient is short
but points elsewhere does not make the point stationary. The min-norm point is computed exactly (MGDA's active-set
solver on the unit-diagonal Gramian), and only when a cheap certificate does not already rule stationarity out: for
any d, min_i ĝ_i·d ≤ ‖min-norm point‖ · ‖d‖, so a d with min_i ĝ_i·d > TAU · ‖d‖ shows the gradients are not stationary.

>>> import numpy as np
>>> stationary(np.array([[1.0, -1.0], [-1.0, 1.0]])), stationary(np.array([[1.0, 0.0], [0.0, 1e-9]]))
(True, False)
"""

from __future__ import annotations

import numpy as np
import torch

from bench.weighting.jd.min_norm import min_norm_weights

#: event names (bench.weighting.base.Balancer.flag); the report footnotes them
FALLBACK, WEIGHT_BOUND, ZERO_UPDATE = "fallback", "weight_bound", "zero_update"
STATIONARY_NONZERO, NOT_CONVERGED = "stationary_nonzero", "not_converged"

#: relative length under which the min-norm point of the hull (Pareto stationarity) or an update counts as zero
TAU = 1e-3
#: FairGrad: the bound on a weight of the scale-free problem (the Gramian divided by its mean diagonal)
FAIRGRAD_WEIGHT_BOUND = 1e3
#: FairGrad: the largest relative residual max_i |w_i^(1/α) (Gw)_i − 1| of its equations counted as solved
FAIRGRAD_RESIDUAL = 0.1


def hull_min_norm_sq(G: np.ndarray) -> float:
    """min over the simplex of wᵀĜw, Ĝ the Gramian of the unit gradients (unit diagonal; zero rows: 0): the squared
    length of the min-norm point of their hull, exactly (MGDA's active-set solver, :mod:`~bench.weighting.jd.min_norm`,
    which needs no positive-definite Ĝ)."""
    diag = np.diag(G)
    if not (diag > 0).all():
        return 0.0
    root = np.sqrt(diag)
    Gu = 0.5 * (G + G.T) / np.outer(root, root)
    w = min_norm_weights(torch.from_numpy(Gu)).weights.numpy()
    return max(float(w @ Gu @ w), 0.0)


def stationary(G: np.ndarray, w: np.ndarray | None = None) -> bool:
    """Pareto-stationary to :data:`TAU` (module docstring). ``w``: weights whose direction d = Jᵀw may certify
    the contrary without the QP."""
    diag = np.diag(G)
    if not (diag > 0).all():
        return True
    if w is not None:
        dd = float(w @ G @ w)
        if dd > 0 and float(((G @ w) / np.sqrt(diag)).min()) > TAU * np.sqrt(dd):
            return False
    return hull_min_norm_sq(G) <= TAU**2


def stationary_nonzero(G: np.ndarray, w: np.ndarray) -> bool:
    """UPGrad, DualProj: a non-zero update (‖d‖ > TAU × the longest gradient) at a Pareto-stationary point, where
    no direction improves every task and the method still moves (along the gradients outside the zero combination)."""
    top = float(np.diag(G).max())
    return top > 0 and float(w @ G @ w) > TAU**2 * top and stationary(G, w)


def zero_update(G: np.ndarray, w: np.ndarray) -> bool:
    """CAGrad: a zero update (‖d‖ ≤ TAU × the longest gradient) while the Jacobian is not zero. torchjd's CAGrad
    returns 0 when the norm of its worst-case direction is below ``norm_eps`` (0 in the hull of the gradients: a zero
    row, opposite gradients) and when the Gramian's trace is (gradients of total squared norm below 1e-4)."""
    top = float(np.diag(G).max())
    return top > 0 and float(w @ G @ w) <= TAU**2 * top


def fairgrad_events(G: np.ndarray, w: np.ndarray, alpha: float) -> list[str]:
    """FairGrad (Gw = w^(−1/α)): ``weight_bound`` when a weight of the scale-free problem exceeds
    :data:`FAIRGRAD_WEIGHT_BOUND` (for G = c·Ĝ with c = tr(G)/T the weights are ŵ = w·c^(α/(1+α))); ``not_converged``
    when scipy's least squares stopped with the equations off by more than :data:`FAIRGRAD_RESIDUAL` (a zero row: 1)."""
    n = len(G)
    c = float(np.trace(G)) / n
    events = []
    if c > 0 and float(w.max()) * c ** (alpha / (1 + alpha)) > FAIRGRAD_WEIGHT_BOUND:
        events.append(WEIGHT_BOUND)
    if alpha > 0 and (w > 0).all():
        residual = float(np.abs(w ** (1 / alpha) * (G @ w) - 1).max())
    else:
        residual = float("inf")
    if alpha > 0 and c > 0 and not residual <= FAIRGRAD_RESIDUAL:
        events.append(NOT_CONVERGED)
    return events
