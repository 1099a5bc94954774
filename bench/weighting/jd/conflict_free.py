"""ConFIG (Liu et al., ICLR 2025) from the Gramian: torchjd's update, without an SVD of the T × P Jacobian.

torchjd's ``ConFIG`` normalises the rows of J (``U = D^{-1/2} J``, ``D = diag(J Jᵀ)``, a zero row stays zero), takes
``b = pinv(U) w`` (w: the preference vector, or ones), and returns ``(1ᵀ J u) u`` with ``u = b / ‖b‖``. Since
``pinv(U) = Uᵀ (U Uᵀ)⁺`` and ``U Uᵀ = D^{-1/2} G D^{-1/2}``, the direction is ``Jᵀ c`` with ``c = D^{-1/2} (U Uᵀ)⁺ w``,
and the update is the weighted sum of the task gradients

    Jᵀ c · (1ᵀ G c) / (cᵀ G c):

a function of the T × T Gramian G alone (:class:`ConFIGWeighting`). So it runs on the Gramian path
(:mod:`bench.weighting.gramian`), and ``via=params`` costs a T × T eigendecomposition instead of a T × P SVD.

The pseudo-inverse drops the eigenvalues of ``U Uᵀ`` below √ε of the largest (ε: the dtype's machine epsilon), i.e.
singular values of U below ε^¼ (f64: 1.2e-4; f32: 0.019) of the largest: above the rounding of a Gramian summed over
millions of parameters (1e-14 relative in f64 at P = 6e5, 1e-5 in f32), so an exactly rank-deficient J (a repeated
task) is treated as such. torchjd's SVD drops singular values below ``max(T, P) ε`` of the largest, which depends on
P (in f32 at P = 6e5: 0.07). The two agree to rounding wherever U is better conditioned than both thresholds
(tests/test_gramian_path.py: ≤ 1e-8 relative in f64 on well-conditioned and rank-deficient J, ≤ 1e-4 in f32).

Example (two orthogonal unit gradients: the bisector, scaled so that its projection sums the two):
    >>> G = torch.eye(2, dtype=torch.float64)
    >>> ConFIGWeighting()(G).tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchjd.aggregation import Aggregator
from torchjd.aggregation._weighting_bases import Weighting

from bench.errors import BenchError


class ConFIGWeighting(Weighting):
    """The weights of ConFIG's update from the Gramian (the preference vector ``pref``: None for ones)."""

    def __init__(self, pref: Tensor | None = None):
        super().__init__()
        self.pref = pref

    def forward(self, gramian: Tensor, /) -> Tensor:
        T, dtype = gramian.shape[0], gramian.dtype
        if self.pref is not None and len(self.pref) != T:
            raise BenchError(f"config pref_vector has {len(self.pref)} values for {T} tasks; give one per task")
        w = torch.ones(T, dtype=dtype, device=gramian.device) if self.pref is None else self.pref.to(gramian)
        norms = gramian.diagonal().clamp(min=0).sqrt()
        inv = torch.where(norms > 0, 1 / norms, torch.zeros_like(norms))  # a zero gradient stays a zero unit row
        units = inv[:, None] * gramian * inv[None, :]  # U Uᵀ
        c = inv * (torch.linalg.pinv(units, hermitian=True, rtol=torch.finfo(dtype).eps ** 0.5) @ w)
        Gc = gramian @ c
        # torch.nn.functional.normalize's floor on ‖Jᵀ c‖ (1e-12), as torchjd's normalisation of the direction
        return c * Gc.sum() / (c @ Gc).clamp(min=1e-24)


class GramianConFIG(Aggregator):
    """torchjd's ``ConFIG`` computed through :class:`ConFIGWeighting`: ``gramian_weighting`` is what the Gramian
    path calls; on a Jacobian, ``forward`` applies it to ``J Jᵀ`` and combines the rows. It is not a torchjd
    ``WeightedAggregator`` on purpose: ConFIG's weights are not recorded in the trajectory (docs/weightings.md)."""

    def __init__(self, pref_vector: Tensor | None = None):
        super().__init__()
        self.pref_vector = pref_vector
        self.gramian_weighting = ConFIGWeighting(pref_vector)

    def forward(self, matrix: Tensor, /) -> Tensor:
        return self.gramian_weighting(matrix @ matrix.T) @ matrix
