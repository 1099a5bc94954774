"""The loss-level methods of the literature through torchjd: each names its scalarizer, paper and parameters."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from bench.config import Frozen
from bench.weighting.base import Step, register_weighting
from bench.weighting.jd.adapter import JDScalarizer, _scalarization


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
