"""The multi-task methods of the literature, through torchjd (Jacobian descent for PyTorch).

Two adapters (:mod:`bench.weighting.jd.adapter`) turn a torchjd object into a registered ``bench`` balancer; each
method is a few lines naming its torchjd class, its paper and its validated hyper-parameters.

* :class:`JDAggregator` (gradient level: MGDA, PCGrad, UPGrad, Nash-MTL, ...; :mod:`~bench.weighting.jd.aggregators`,
  MGDA's exact solver in :mod:`~bench.weighting.jd.mgda`).
  Two ways to get the Jacobian (:mod:`bench.weighting.jacobian`, through ``Step.jacobian``):

  - ``via=features`` (the default on single-input suites, where every head reads one shared representation z):
    the Jacobian of the T losses with respect to z (T small backward passes through the heads only), aggregated
    into one gradient for z, which one backward carries through the backbone. For aggregators whose update is a
    weighted sum of the task gradients this is Sener & Koltun's MGDA-UB: the weights come from the Gramian of
    ∂L/∂z, and the backbone gets ∇(Σ w_i L_i). Cost: about one backward pass.
  - ``via=params`` (multi-input suites, where each task has its own batch, or on request): the full T × P Jacobian
    over the backbone's shared parameters (torchjd's ``autojac.backward`` on a single input), aggregated and written
    back as torchjd's ``jac_to_grad`` does. Cost: T backward passes (vectorised) and T × P memory. When the update
    is a weighting of the Gramian (all but GradDrop), only the T × T Gramian is summed, module by module, and the
    update is one backward of Σ w_i L_i (:mod:`bench.weighting.gramian`; one process only).

  Heads are task-specific, so each head receives its own task's gradient unweighted (torchjd's ``mtl_backward``
  convention); only the shared update is aggregated.
* :class:`JDScalarizer` (loss level: DWA, FAMO, GLS, IMTL-L, RLW, STCH; :mod:`~bench.weighting.jd.scalarizers`):
  ``combine`` applies torchjd's scalarizer to the vector of losses; the engine's epoch boundary drives DWA's
  history, and FAMO's logit update reads the losses recomputed after the step.

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

from bench.weighting.jd.adapter import JDAggregator, JDScalarizer, ViaParams
from bench.weighting.jd.aggregators import (
    IMTLG,
    AlignedMTL,
    CAGrad,
    ConFIG,
    DualProj,
    FairGrad,
    GradDrop,
    GradVac,
    NashMTL,
    PCGrad,
    PrefParams,
    UPGrad,
)
from bench.weighting.jd.mgda import MGDA
from bench.weighting.jd.scalarizers import DWA, FAMO, GLS, IMTLL, RLW, STCH

__all__ = ["DWA", "FAMO", "GLS", "IMTLG", "IMTLL", "MGDA", "RLW", "STCH", "AlignedMTL", "CAGrad", "ConFIG", "DualProj",
           "FairGrad", "GradDrop", "GradVac", "JDAggregator", "JDScalarizer", "NashMTL", "PCGrad", "PrefParams",
           "UPGrad", "ViaParams"]
