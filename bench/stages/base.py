"""The :class:`Stages` a strategy composes: ``init`` (θ0), ``finetune``, ``fuse``, ``joint``, ``evaluate`` and
custom stages, bound to one suite, store and seed.

Each stage lives in its own module (:mod:`bench.stages.init`, :mod:`~bench.stages.finetune`, ...) as a function of
this object; the class holds what they share (the suite, the store, the seed, the splits evaluated, the trackers)
and the API that strategies and data-aware methods call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.engine import FitResult, optimise, resolve_device
from bench.errors import BenchError
from bench.model import MultiTaskModel
from bench.specs import FusionSpec, WeightingSpec
from bench.stages.assemble import run_assemble
from bench.stages.batches import Batches
from bench.stages.cache import discard, run_stage
from bench.stages.context import Checkpoint, Outcome, StageLog, SuiteContext
from bench.stages.evaluate import evaluate_model, run_evaluate
from bench.stages.evaluation import Evaluation, evaluate_ckpt
from bench.stages.finetune import run_finetune
from bench.stages.fuse import fused_model, run_fuse
from bench.stages.init import run_init
from bench.stages.joint import run_joint
from bench.stages.keys import STAGE_VERSIONS
from bench.stages.models import build_model, sub_seed
from bench.store import Store
from bench.track.base import Tracking


class Stages:
    """The stage functions a strategy composes, bound to one suite, store and seed."""

    def __init__(self, ctx: SuiteContext, store: Store, seed: int, force: bool = False,
                 eval_splits: tuple[str, ...] | None = None, on_epoch=None, trackers: list[str] | None = None,
                 cell: str = "", label: str = "", config: dict[str, Any] | None = None,
                 log: StageLog | None = None, source: str = "", scratch: bool = False):
        """``eval_splits``: the splits stages evaluate; by default every split the data has besides train
        (validation, test, and extra ones such as MNLI's ``test_mismatched``); a search passes ("validation",) so
        test is never read. ``on_epoch(epoch, validation_score)``: called after every training epoch (a search
        prunes from here). ``trackers``: names from :func:`bench.track.trackers_from`; every stage computed here
        (not read from the store) is logged to them, grouped by ``cell`` (its hash), ``label`` and the seed, with
        ``config`` (the cell's resolved configuration). Trackers are not in any key and change no result.

        ``log``: where the stages reused and computed are noted, shared by every cell of one run (``force=true``
        recomputes a stage once per run; a record counts its cell's share); a fresh one by default. ``source``: the
        source hash of the plug-in strategy composing these stages (its custom stages' keys hold it: editing the
        file invalidates them). ``scratch``: a search trial's stages, whose result is thrown away once scored, so a
        strategy may evaluate in memory what it would otherwise store."""
        self.ctx, self.store, self.seed, self.force = ctx, store, seed, force
        self.log = log if log is not None else StageLog()
        self.source, self.scratch = source, scratch
        #: the tasks a schedule step serves (:meth:`restrict`); None: every task of the suite
        self.active: tuple[str, ...] | None = None
        #: every stage outcome this object returned, in order (a schedule step's cost is the part new to it)
        self.outcomes: list[Outcome] = []
        #: "<kind>:<name>" -> source hash of each user plug-in a stage of this cell used (a weighting or fusion
        #: method, also one the strategy names in its code rather than its params): what the record lists
        self.plugins: dict[str, str] = {}
        if eval_splits is None:
            present = {s for per_task in ctx.encoded.values() for s in per_task if s != "train"}
            eval_splits = ("validation", "test", *sorted(present - {"validation", "test"}))
        self.eval_splits = tuple(eval_splits)
        self.on_epoch = on_epoch
        self.tracking = Tracking(trackers, suite=ctx.suite.name, root=store.root, seed=seed, cell=cell, label=label,
                                 config={"suite": ctx.suite.model_dump(mode="json"), **(config or {})}) \
            if trackers else None

    @property
    def task_names(self) -> list[str]:
        """The tasks strategies train and evaluate: the suite's, or a schedule step's (:meth:`restrict`)."""
        return list(self.active) if self.active is not None else [t.name for t in self.ctx.tasks]

    def restrict(self, tasks: tuple[str, ...] | list[str] | None) -> None:
        """Serve only ``tasks`` from now on (a schedule step's; None: the whole suite again): ``task_names``, and
        so the default tasks of ``joint`` and of every strategy's ``run``."""
        self.active = tuple(tasks) if tasks is not None else None

    # -- the public API for custom stages and data-aware methods ------------------------------------------------
    def custom(self, name: str, key: dict[str, Any], tasks: tuple[str, ...], compute: Callable[[Path], dict],
               version: int = 1) -> Outcome:
        """Run ``compute(folder)`` once and cache it like any stage: under ``stages/<name>/<hash>/``, where the hash
        covers ``name``, ``version`` and ``key`` (put everything that changes the output in it: input checkpoints'
        keys, params, ``self.seed``, data fingerprints). ``compute`` writes its files into ``folder`` and returns the
        stage's info (``metrics``, ``telemetry``, anything JSON); bump ``version`` when its semantics change.

        Example (magnitude pruning as a stage; a strategy's ``run`` is handed ``stages``, here it is built on the
        synthetic suite in a temporary results folder):
            >>> import tempfile
            >>> from bench import checkpoint as C
            >>> from bench.plan import build_suite
            >>> results = tempfile.TemporaryDirectory()
            >>> suite = build_suite({"suite": "synthetic"})
            >>> store = Store(results.name, suite.name)
            >>> stages = Stages(SuiteContext.load(suite, store), store, seed=0)
            >>> theta0 = stages.init()
            >>> def compute(folder):
            ...     model = stages.model(theta0, ["clean"])
            ...     with torch.no_grad():                                 # zero the smaller half of every tensor
            ...         for p in model.backbone.parameters():
            ...             p[p.abs() < p.abs().median()] = 0
            ...     C.save_model(model, folder)
            ...     return {"telemetry": {"ratio": 0.5}}
            >>> out = stages.custom("prune", {"init": theta0.key, "ratio": 0.5}, ("clean",), compute)
            >>> again = stages.custom("prune", {"init": theta0.key, "ratio": 0.5}, ("clean",), compute)
            >>> out.reused, again.reused, again.ckpt == out.ckpt                # the second call reads the store
            (False, True, True)
            >>> sorted(stages.evaluate(out.ckpt).info["metrics"])             # a checkpoint like any stage's
            ['test', 'validation']
            >>> results.cleanup()
        """
        if name in STAGE_VERSIONS:
            raise BenchError(f"custom stage name {name!r} is a built-in stage; pick another name")
        if self.source:  # the plug-in strategy that computes it: editing its file invalidates the stage
            key = {**key, "strategy_source": self.source}
        return run_stage(self, name, key, tasks, compute, version)

    def model(self, ckpt: Checkpoint | None = None, tasks: list[str] | None = None) -> MultiTaskModel:
        """A :class:`MultiTaskModel` with ``ckpt``'s backbone (θ0 when None) and the heads of ``tasks`` (default:
        ``ckpt``'s tasks; a task whose head the checkpoint lacks gets a seeded fresh one), on the CPU."""
        tasks = list(tasks if tasks is not None else (ckpt.tasks if ckpt is not None else self.task_names))
        return build_model(self.ctx, tasks, ckpt or self.init(), sub_seed(self.seed, "model", *tasks))

    def batches(self, task: str, split: str, batch_size: int | None = None, shuffle: bool = False,
                limit: int | None = None, seed: int = 0) -> Batches:
        """Batches of ``task``'s ``split`` (inputs and the task's targets) on the run's device; see
        :class:`Batches`. Never pass ``split="test"`` to anything that selects or fits."""
        if split not in self.ctx.encoded[task]:
            raise BenchError(f"task {task!r} has no split {split!r}; it has {sorted(self.ctx.encoded[task])}")
        return Batches(self.ctx.encoded, self.ctx.pre.collate, task, split, batch_size or self.ctx.train.batch_size,
                       self.device, shuffle, limit, sub_seed(self.seed, "batches", task, split, str(seed)))

    @property
    def device(self) -> torch.device:
        return resolve_device(self.ctx.train.device)

    def optimise(self, params: list[torch.Tensor], loss_at: Callable[[int], torch.Tensor], steps: int, lr: float,
                 folder: Path | None = None, desc: str = "optimise") -> FitResult:
        """Fit a small set of leaf tensors with the engine's loop (:func:`bench.engine.optimise`) on the run's device
        and precision; with ``folder`` (a stage's folder inside ``compute``) a killed run resumes there."""
        return optimise(params, loss_at, steps, lr=lr, device=self.device, precision=self.ctx.train.precision,
                        work_dir=folder, desc=f"{desc} s{self.seed}", log_every=self.ctx.train.log_every,
                        on_log=self.tracking.log if self.tracking is not None else None)

    def discard(self, ckpt: Checkpoint) -> None:
        """Delete a finished stage's files (a later request recomputes it). Waits for anyone computing it."""
        discard(self, ckpt)

    def _evaluate_ckpt(self, ckpt: Checkpoint, splits) -> Evaluation:
        """Metrics, throughput and predictions of a stored model (:func:`bench.stages.evaluation.evaluate_ckpt`)."""
        return evaluate_ckpt(self, ckpt, splits)

    # -- stages: each in its own module ------------------------------------------------------------------------
    def init(self) -> Checkpoint:
        """θ0: the backbone every fine-tune and joint run starts from (seeded for randomly initialised ones)."""
        return run_init(self)

    def finetune(self, task: str, init: Checkpoint | None = None, share: float = 1.0,
                 train: dict[str, Any] | None = None, freeze: str | list[str] | None = None) -> Outcome:
        """Fine-tune one copy of ``init`` (θ0 by default) on ``task`` alone.

        ``share``: the part of the reference budget this fine-tune may spend under ``budget.match`` (ignored
        otherwise; see :func:`bench.stages.training.budget_steps`). ``train``: this stage's own ``train.*`` settings
        over the suite's (e.g. ``{"epochs": 1, "lr": 1e-3}``); ``freeze``: backbone parameters left untouched (see
        :func:`frozen_names`), e.g. ``"backbone"`` for a linear probe. Both are part of the stage's key."""
        return run_finetune(self, task, init or self.init(), share, train, freeze)

    def fuse(self, parts: list[Checkpoint], fusion: FusionSpec | str = "mean", params: dict[str, Any] | None = None,
             base: Checkpoint | None = None) -> Outcome:
        """Fuse the backbones of ``parts`` (θ0 = ``base``) with ``fusion``, a strategy's checked reference
        (:class:`~bench.specs.FusionSpec`) or a method's name with its ``params``; each task keeps the head from its
        own checkpoint.

        A streaming method (:class:`~bench.fusion.FusionMethod`) fuses the files tensor by tensor; a model-based one
        (:class:`~bench.fusion.ModelFusion`: AdaMerging, Fisher, RegMean, ...) gets a
        :class:`~bench.fusion.FusionJob` and may read data, so its key also holds the data and the seed."""
        return run_fuse(self, parts, base or self.init(), FusionSpec.given(fusion, params))

    def fused_model(self, parts: list[Checkpoint], fusion: FusionSpec | str = "mean",
                    params: dict[str, Any] | None = None,
                    base: Checkpoint | None = None) -> tuple[MultiTaskModel, dict[str, Any]]:
        """A streaming fusion of ``parts`` as a model in memory, nothing written: what a fusion-weight search
        trial evaluates and throws away. Model-based methods go through :meth:`fuse` (a cached stage)."""
        return fused_model(self, parts, base or self.init(), FusionSpec.given(fusion, params))

    def evaluate_model(self, model: MultiTaskModel, splits: tuple[str, ...] | None = None) -> Evaluation:
        """``(metrics, throughput, predictions)`` of an in-memory model on ``splits`` (default: this run's
        evaluation splits), for the tasks it has heads for; nothing is stored."""
        return evaluate_model(self, model, splits)

    def joint(self, init: Checkpoint | None = None, tasks: list[str] | None = None,
              weighting: WeightingSpec | str = "equal", weighting_params: dict[str, Any] | None = None,
              share: float = 1.0, sampling: str | None = None, epochs: int | None = None,
              train: dict[str, Any] | None = None,
              freeze: str | list[str] | None = None, architecture: str = "hps",
              subset: dict[str, float] | None = None) -> Outcome:
        """Train every task at once from ``init`` (θ0 by default) with ``weighting``: a strategy's checked reference
        (:class:`~bench.specs.WeightingSpec`), or a weighting's name with its ``weighting_params``.

        ``sampling`` / ``epochs`` override the suite's ``train.sampling`` / ``train.epochs`` for this stage (the
        controls of a matched comparison); ``train``: any other ``train.*`` settings of this stage (``lr``, ...);
        ``freeze``: backbone parameters left untouched (:func:`frozen_names`); ``share``: the part of the reference
        budget this stage may spend under ``budget.match`` (which then decides the number of steps, and ``epochs``
        is ignored); ``architecture``: how the tasks share parameters (a strategy's checked
        :class:`~bench.specs.ArchitectureSpec`, whose ``raw`` holds its parameters, or a name; default ``hps``,
        hard sharing; docs/architectures.md): its modules start fresh unless ``init`` was saved with it;
        ``subset``: task -> the fraction of its training examples it may draw (a rehearsal buffer, fixed per task
        and seed; multi-input suites)."""
        init = init or self.init()
        return run_joint(self, init, list(tasks or self.task_names), WeightingSpec.given(weighting, weighting_params),
                         share, sampling, epochs, train, freeze, architecture, subset)

    def assemble(self, backbone: Checkpoint, heads: dict[str, Checkpoint]) -> Outcome:
        """One checkpoint with ``backbone``'s backbone (and architecture modules) and, for each task of ``heads``,
        the head from its checkpoint: nothing trained (a schedule strategy keeping old heads, or retiring one)."""
        return run_assemble(self, backbone, heads)

    def evaluate(self, ckpt: Checkpoint) -> Outcome:
        """Validation and test metrics of a stored model (e.g. the fused one, before joint training)."""
        return run_evaluate(self, ckpt)
