"""The TIES family: ``ties`` (trim, elect sign, disjoint merge) and ``dare_ties`` (DARE's drop, then TIES).

Each follows one of three reference implementations (``convention``), each reproduced to float rounding on the
fixtures in ``tests/fixtures/fusion`` (made by ``scripts/make_fusion_fixtures.py`` with the real libraries);
docs/fusion.md tabulates what differs. The trims select by magnitude with :mod:`bench.fusion.magnitude`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import torch
from pydantic import Field

from bench.config import Frozen
from bench.fusion.base import FusionMethod, TensorSource, _name_of, chunk_ranges, register_fusion
from bench.fusion.dare import DareMixin
from bench.fusion.magnitude import Convention, Cut, Mags, check_fraction, keep_count, top_cut


class TiesParams(Frozen):
    #: fraction of each task vector's entries kept by magnitude, in (0, 1] (0.2 = the top 20 %)
    k: float = Field(0.2, gt=0)
    #: scaling λ applied to the merged task vector, after the disjoint mean
    lam: float = 1.0
    #: whose rules: the TIES authors' code, FusionBench 0.2.33's TiesMergingAlgorithm, or mergekit 0.1.5's ``ties``
    convention: Convention = "paper"
    #: disjoint mean or disjoint sum of the agreeing entries; None: the convention's default (see Ties.MERGE)
    merge: Literal["mean", "sum"] | None = None
    #: DARE drop probability applied to each τ_i before the trim (0: off); dare_ties is ties with this set
    dare: float = Field(0.0, ge=0, lt=1)
    seed: int = 0


@register_fusion("ties")
class Ties(DareMixin, FusionMethod):
    """TIES-merging (Yadav et al. 2023): trim, elect sign, disjoint merge; θ = θ0 + λ·τ_m.

    1. **Trim** each τ_i to its largest magnitudes (compared in float32, as the libraries do on float32 models):
       * ``paper`` / ``fusionbench``: over the whole flattened task vector (every fused float tensor; buffers and
         integer tensors excluded), keep |τ_i| ≥ t_i with t_i the (⌊k·d⌋ + 1)-th largest magnitude: ⌊k·d⌋ + 1 entries,
         plus every entry tied at t_i (:func:`keep_count`);
       * ``mergekit``: within each tensor, exactly max(1, ⌊k·numel⌋) entries; among entries tied at the cut the lowest
         flat indices are kept (see docs/fusion.md: mergekit's unstable argsort picks the same ones on tensors of at
         most 16 entries or when no non-zero magnitudes tie at the cut, and an unspecified subset otherwise).
    2. **Elect** γ = sign(Σ_i τ̂_i). Where the sum is exactly 0:
       * ``paper`` / ``fusionbench``: γ = the majority sign, sign(Σ_entries γ) over the whole task vector (then, as in
         the paper's ``disjoint_merge``, γ ≤ 0 selects the negative entries);
       * ``mergekit``: γ = +1 (``get_mask``: Σ ≥ 0 → +1).
    3. **Disjoint merge** over the tasks whose τ̂_i has the sign γ (zeros never count): their mean (``merge="mean"``),
       or their sum (``"sum"``). Default (:attr:`MERGE`): mean for ``paper`` (the authors' ``dis-mean``) and
       ``mergekit`` (``normalize=True``: divide by the summed weights of agreeing entries, weights 1), sum for
       ``fusionbench`` (its shipped config's ``merge_func: sum``; with ``merge="mean"`` it is exactly ``paper``).
    4. θ = θ0 + λ·τ_m: λ (FusionBench's ``scaling_factor``, mergekit's ``lambda``) scales after the merge.

    FusionBench copies the paper's ``topk_values_mask``/``resolve_sign``/``disjoint_merge`` verbatim, so
    ``fusionbench`` differs from ``paper`` only in that default merge. Both libraries compute in the checkpoint's
    dtype (float32 on the fixtures), bench in float64: outputs agree to ~1e-7.

    The thresholds are found exactly by a streaming radix select (:func:`kth_largest`), one chunk at a time: no pass
    holds a whole task vector, so global trimming costs reads, not memory.

    Example (mergekit, per tensor, k = 0.5, λ = 1):
        >>> import torch
        >>> ties = Ties(TiesParams(k=0.5, convention="mergekit"), n=2)
        >>> base = torch.zeros(4)
        >>> ties.fuse("w", base, [torch.tensor([3., -1., 2., 0.5]), torch.tensor([-1., -2., 4., 0.])]).tolist()
        [3.0, -2.0, 3.0, 0.0]
    """

    Params = TiesParams
    needs_base = True
    #: the disjoint merge each convention's library uses by default
    MERGE: dict[str, str] = {"paper": "mean", "fusionbench": "sum", "mergekit": "mean"}

    def __init__(self, params: TiesParams | None = None, n: int = 1):
        super().__init__(params, n)
        self.global_cuts: list[Cut] | None = None  # set by prepare() (paper, fusionbench)
        self.zero_sign = 1.0 if self.params.convention == "mergekit" else None  # paper: the majority, from prepare()
        self._cuts: list[Cut] = []  # cuts of the tensor being fused
        self._cuts_name: str | None = None

    @property
    def is_global(self) -> bool:
        return self.params.convention != "mergekit"

    @property
    def merge_rule(self) -> str:
        return self.params.merge or self.MERGE[self.params.convention]

    def validate(self) -> None:
        check_fraction(_name_of(type(self)), "k", self.params.k)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "merge": self.merge_rule}

    # ---- passes before the merge
    def _mags(self, i: int, names: list[str], base: TensorSource, src: TensorSource) -> Mags:
        def gen() -> Iterable[torch.Tensor]:
            for k in names:
                for s, e in chunk_ranges(base.numel(k)):
                    yield self.task_vector(i, k, src.flat(k, s, e), base.flat(k, s, e), s).abs().float()
        return gen

    def prepare(self, names: list[str], base: TensorSource | None, tasks: list[TensorSource]) -> None:
        if not self.is_global:
            return
        assert base is not None
        d = sum(base.numel(k) for k in names)
        keep = keep_count(self.params.k, d, self.params.convention)
        self.global_cuts = [top_cut(self._mags(i, names, base, src), d, keep, "all") for i, src in enumerate(tasks)]
        # the paper's resolve_zero_signs: the majority sign is the sign of Σ γ over the whole task vector
        votes = 0
        for k in names:
            for s, e in chunk_ranges(base.numel(k)):
                trimmed = self._trimmed(k, base.flat(k, s, e), [src.flat(k, s, e) for src in tasks], s,
                                        self.global_cuts)
                votes += int(torch.sign(_summed(trimmed)).sum())
        self.zero_sign = float((votes > 0) - (votes < 0))

    def begin_tensor(self, name: str, base: TensorSource | None, tasks: list[TensorSource]) -> None:
        assert base is not None
        if self.is_global:
            if self.global_cuts is None:
                raise RuntimeError(f"ties with convention={self.params.convention!r} trims the whole task vector "
                                   "and needs prepare() (fuse_files calls it)")
            self._cuts = self.global_cuts
        else:
            self.begin_dare(name, base, tasks)
            numel = base.numel(name)
            keep = keep_count(self.params.k, numel, "mergekit")
            offsets = [s for s, _ in chunk_ranges(numel)]
            self._cuts = [top_cut(self._mags(i, [name], base, src), numel, keep, "first", offsets)
                          for i, src in enumerate(tasks)]
        self._cuts_name = name

    # ---- the merge, one chunk at a time
    def _trimmed(self, name: str, base: torch.Tensor, tensors: Sequence[torch.Tensor], offset: int,
                 cuts: list[Cut]) -> Callable[[], Iterable[torch.Tensor]]:
        def gen() -> Iterable[torch.Tensor]:
            for i, t in enumerate(tensors):
                tau = self.task_vector(i, name, t, base, offset)
                yield tau.mul_(cuts[i].select(tau.abs().float(), offset))
        return gen

    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        assert base is not None
        if self._cuts_name != name:  # a direct call on whole in-memory tensors (fuse_files calls begin_tensor)
            if self.is_global:
                raise RuntimeError(f"ties with convention={self.params.convention!r} trims the whole task vector "
                                   "and needs prepare() (fuse_files calls it)")
            if offset != 0:
                raise RuntimeError("a direct call of fuse needs whole tensors (offset 0); fuse_files streams chunks")
            self.begin_tensor(name, InMemory(base), [InMemory(t) for t in tensors])
        assert self.zero_sign is not None
        merged = disjoint_merge(self._trimmed(name, base, tensors, offset, self._cuts), self.zero_sign,
                                self.merge_rule)
        return base.to(merged.dtype) + self.params.lam * merged


def _summed(tensors: Callable[[], Iterable[torch.Tensor]]) -> torch.Tensor:
    total: torch.Tensor | None = None
    for t in tensors():
        total = t if total is None else total.add_(t)
    assert total is not None
    return total


def disjoint_merge(trimmed: Callable[[], Iterable[torch.Tensor]], zero_sign: float, merge: str) -> torch.Tensor:
    """TIES's elect and disjoint-merge steps on one chunk (``trimmed()`` restarts the stream of the N trimmed τ̂_i).

    γ = sign(Σ_i τ̂_i), ``zero_sign`` where that sum is 0; τ_m = Σ_{i: τ̂_i agrees with γ} τ̂_i, divided by the
    number of agreeing tasks (at least 1) for ``merge="mean"``. "Agrees" is the paper's ``torch.where(γ > 0, τ̂ > 0,
    τ̂ < 0)``, which is mergekit's ``sign(τ̂) == γ`` for γ = ±1.
    """
    elected = torch.sign(_summed(trimmed))
    elected.masked_fill_(elected == 0, zero_sign)
    positive = elected > 0
    num = torch.zeros_like(elected)
    cnt = torch.zeros_like(elected)
    for tr in trimmed():
        agree = torch.where(positive, tr > 0, tr < 0)
        num.add_(tr * agree)
        cnt.add_(agree)
    return num.div_(cnt.clamp_(min=1)) if merge == "mean" else num


class InMemory:
    """A :class:`TensorSource` stand-in over one in-memory tensor, for direct calls of ``fuse`` on whole tensors."""

    def __init__(self, t: torch.Tensor):
        self.t = t.reshape(-1)

    def flat(self, name: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.t[start:stop]

    def numel(self, name: str) -> int:
        return self.t.numel()


class DareTiesParams(TiesParams):
    #: DARE drop probability p (mergekit's density is 1 − p; FusionBench's sparsity_ratio is p)
    dare: float = Field(0.5, ge=0, lt=1)
    #: fraction kept by the magnitude trim after the drop; 1 = no trim (as mergekit's dare_ties; FusionBench trims)
    k: float = Field(1.0, gt=0)


@register_fusion("dare_ties")
class DareTies(Ties):
    """DARE then TIES (Yu et al. 2024): drop each entry of τ_i with probability p and rescale the rest, then
    (optionally) trim to the top k, elect signs and merge disjointly; θ = θ0 + λ·τ_m.

    The drop, its seed and its rescale are :class:`DareMixin`'s; the rest is :class:`Ties` under the same
    ``convention``. Reproduces:

    * ``fusionbench``: FusionBench 0.2.33's ``DareTiesMerging`` (``rand_like > p`` drop, ÷(1 − p), then the paper's
      global top-k trim with ``threshold`` = k and ``merge_func``, default sum);
    * ``mergekit``: mergekit 0.1.5's ``dare_ties`` (bernoulli(1 − p) drop, per-tensor L1 rescale, no magnitude trim,
      Σ ≥ 0 → +1, ``normalize=False`` by default: a disjoint *sum*; set ``merge="mean"`` for ``normalize: true``);
    * ``paper``: bench's own DARE draw (as task_arithmetic's) followed by the TIES authors' rules.

    With p = 0 it is exactly ``ties`` with the same k, convention and merge.
    """

    Params = DareTiesParams
    MERGE = {"paper": "mean", "fusionbench": "sum", "mergekit": "sum"}
