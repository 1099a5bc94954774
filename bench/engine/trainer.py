"""One training loop for single-task and joint training.

The loop knows nothing about strategies: it trains a :class:`MultiTaskModel` on the tasks it is given, lets a
:class:`~bench.weighting.Balancer` fill the gradients from their losses, selects the best epoch on the validation
split only, and can resume from its last epoch (:mod:`bench.engine.resume`). Multi-input suites draw task batches
with a sampler; single-input suites compute every head on each batch. Where the loop stands is a typed
:class:`~bench.engine.state.TrainState`; what it measures and logs is computed by :mod:`bench.engine.telemetry` and
:mod:`bench.engine.logs`.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

# torch's first optimiser step imports torch._dynamo, seconds on a CPU: paid here, once per process, not inside the
# wall time of whichever stage happens to train first
import torch._dynamo  # noqa: F401
from tqdm.auto import tqdm

from bench import distributed
from bench.augment import augment
from bench.augment import check as check_augment
from bench.batches import BatchSpec
from bench.config import TaskConfig, TrainConfig
from bench.engine import parallel, resume
from bench.engine.compiled import CompiledForward, run_counting_compiles
from bench.engine.console import ProgressLines, live_bar, progress
from bench.engine.device import autocast, resolve_device, to_device
from bench.engine.evaluation import Data, evaluate, make_feeder, selection_score
from bench.engine.logs import LossMeter, StageLines, TrackerFeed
from bench.engine.sampling import IndexStream, TaskSampler
from bench.engine.state import TrainState
from bench.engine.telemetry import MemoryMeter, PhaseTimer, stage_telemetry
from bench.errors import BenchError, CellFailed
from bench.model import MultiTaskModel
from bench.tasks import task_kind
from bench.weighting.base import Balancer, Step


@dataclass
class TrainResult:
    best_epoch: int
    history: list[dict[str, Any]]
    trajectories: dict[str, Any]
    telemetry: dict[str, Any]
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # split -> task -> metric


class Trainer:
    """Trains ``model`` on ``tasks``, balanced by ``weighting`` (any :class:`~bench.weighting.Balancer`); best epoch
    chosen on validation only.

    ``work_dir`` (optional) receives ``resume.safetensors`` after every epoch so that a killed run continues where it
    stopped.
    """

    def __init__(self, model: MultiTaskModel, tasks: list[TaskConfig], data: Data, weighting: Balancer,
                 cfg: TrainConfig, seed: int, collate, single_input: bool, work_dir: Path | None = None,
                 desc: str = "train", on_epoch=None, max_steps: int | None = None, on_log=None,
                 train_rows: dict[str, np.ndarray] | None = None):
        """``max_steps``: train for exactly this many optimiser steps instead of ``cfg.epochs`` epochs (a matched
        budget); the last epoch is then cut short, and validation still runs at every epoch's end. ``on_log(step,
        scalars)``: called at every logging interval and after every epoch's validation (experiment trackers,
        :mod:`bench.track`); it receives values the loop has already computed and changes nothing. ``train_rows``:
        task -> the rows of its training split this run may draw (a rehearsal buffer; multi-input suites), an epoch
        then being a pass over those rows; the other tasks draw from all of theirs."""
        self.model, self.tasks, self.data, self.w, self.cfg = model, tasks, data, weighting, cfg
        self.max_steps = max_steps
        self.train_rows = train_rows or {}
        self.task_cfgs = {t.name: t for t in tasks}
        self.kinds = {t.name: task_kind(t) for t in tasks}
        if cfg.augment != "none":  # before any work: only tasks that predict maps have labels that move
            check_augment(self.kinds)
        self.seed, self.collate, self.single_input = seed, collate, single_input
        self.work_dir, self.desc = work_dir, desc
        self.on_epoch = on_epoch  # e.g. an Optuna pruning callback: (epoch, validation score) -> None or raise
        self.on_log = on_log
        self.device = resolve_device(cfg.device)
        self.world = distributed.current()  # procs=N: this process's rank (bench.distributed)
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise BenchError("train.precision=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")

    # -- setup -------------------------------------------------------------------------------------------------
    def _optimizer(self) -> torch.optim.Optimizer:
        head_lr = self.cfg.head_lr or self.cfg.lr
        groups = [
            {"params": [p for p in self.model.backbone.parameters() if p.requires_grad], "lr": self.cfg.lr},
            {"params": list(self.model.heads.parameters()), "lr": head_lr},
            *self.w.param_groups(self.cfg.lr),
        ]
        arch = self.model.architecture
        if arch is not None:  # its shared modules learn as the backbone does, its per-task towers as the heads
            groups += [{"params": arch.shared_parameters(), "lr": self.cfg.lr},
                       {"params": list(arch.towers.parameters()), "lr": head_lr}]
            groups = [g for g in groups if g["params"]]
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.cfg.lr, momentum=0.9, weight_decay=self.cfg.weight_decay)
        for g in groups:  # weightings may set their own weight_decay (uncertainty: none)
            g.setdefault("weight_decay", self.cfg.weight_decay)
        return torch.optim.AdamW(groups, lr=self.cfg.lr)

    def _schedule(self, total: int) -> torch.optim.lr_scheduler.LambdaLR:
        cfg, warm, per_epoch = self.cfg, int(self.cfg.warmup_ratio * total), self.steps_per_epoch

        def lr_lambda(step: int) -> float:
            if cfg.schedule == "step":  # StepLR at epoch milestones (times the warmup ramp while it lasts)
                ramp = (step + 1) / warm if warm and step < warm else 1.0
                return ramp * cfg.gamma ** sum(step // per_epoch >= m for m in cfg.milestones)
            if warm and step < warm:
                return (step + 1) / warm
            if cfg.schedule == "linear":
                return max(0.0, (total - step) / max(1, total - warm))
            return 1.0

        return torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda)

    def _size(self, task: str) -> int:
        """Training examples ``task`` may draw from."""
        rows = self.train_rows.get(task)
        return len(rows) if rows is not None else len(self.data[task]["train"])

    def _steps_per_epoch(self) -> int:
        sizes = [self._size(t.name) for t in self.tasks]
        if self.single_input:
            return max(1, math.ceil(sizes[0] / self.cfg.batch_size))
        per_step = self.cfg.batch_size * (len(sizes) if self._sampling() == "all" else 1)
        return max(1, math.ceil(sum(sizes) / per_step))

    def _sampling(self) -> str:
        return "all" if self.w.needs_all_tasks else self.cfg.sampling

    def prepare(self) -> None:
        """Build optimiser, schedule, samplers and state (and restore them from ``resume.safetensors`` when present)."""
        cfg, device, model = self.cfg, self.device, self.model
        model.to(device)
        self.w.to(device)
        self.w.setup(model)
        self.opt = self._optimizer()
        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = self.max_steps or self.steps_per_epoch * cfg.epochs
        self.n_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.sched = self._schedule(self.total_steps)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.rng = np.random.default_rng(self.seed)
        self.names = names = [t.name for t in self.tasks]
        if self.single_input:
            self.streams = {"*": IndexStream(len(self.data[names[0]]["train"]), self.rng)}
        else:
            self.streams = {t: IndexStream(self._size(t), self.rng) for t in names}
        self.sampler = TaskSampler({t: self._size(t) for t in names}, self._sampling(),
                                   cfg.temperature, self.rng)
        self._absent: set[str] = set()  # tasks with no label in the current step's batch
        self.fwd = CompiledForward(model) if cfg.compile else model
        self.feeder = make_feeder(self.data, self.collate, device, cfg.num_workers)
        self.batches = self._batches()
        # a resumed run replaces this state, the trajectory's starting point included
        self.state = TrainState.start(names, self.w.current())
        self.resume = self.work_dir / resume.RESUME_FILE if self.work_dir else None
        ck = resume.read(self.resume, resume.LEGACY_RESUME_FILE, resume.TRAIN_KIND, self.desc)
        if ck is not None:
            self.state = resume.restore_training(ck, model=model, weighting=self.w, opt=self.opt, sched=self.sched,
                                                 rng=self.rng, streams=self.streams, sampler=self.sampler)
            print(f"[{self.desc}] resumed after epoch {self.state.epoch}", file=sys.stderr)
        self.mem = MemoryMeter(device)
        self.timer = PhaseTimer(device, self.state.timers)
        self.meter = LossMeter(names, device)
        if ck is not None and "loss_acc" in ck:  # a logging interval that an epoch boundary cut in two
            self.meter.restore(ck["loss_acc"], ck["loss_cnt"])
        self.tracker = TrackerFeed(self.on_log, names) if self.on_log is not None else None
        # what a balancer may touch: the shared parameters (backbone and architecture) and each task's own
        self.shared = [p for p in model.shared_parameters() if p.requires_grad]
        self.heads = {t: [p for p in model.task_parameters(t) if p.requires_grad] for t in names}

    # -- one step ----------------------------------------------------------------------------------------------
    def _draw(self) -> list[BatchSpec]:
        """The batches of one step, from the seeded task sampler and index streams."""
        b = self.cfg.batch_size
        if self.single_input:
            return [BatchSpec(self.names[0], "train", self.streams["*"].next(b), tuple(self.names))]
        return [BatchSpec(t, "train", self._rows(t, self.streams[t].next(b)), (t,)) for t in self.sampler.next()]

    def _rows(self, task: str, idx: np.ndarray) -> np.ndarray:
        rows = self.train_rows.get(task)
        return idx if rows is None else rows[idx]

    def _batches(self):
        """Endless ``[(spec, batch), ...]`` per step. A whole epoch is drawn before its first step, so the
        generators' state saved at an epoch boundary does not depend on how far the workers read ahead. With
        ``procs=N`` the spec is the global batch (what the step counts) and the batch this rank's slice of it."""
        while True:
            plan = [self._draw() for _ in range(self.steps_per_epoch)]
            flat = [spec for step in plan for spec in step]
            stream = self.feeder.run(parallel.local_specs(flat) if self.world.size > 1 else flat)
            for step in plan:
                yield [(spec, next(stream)[1]) for spec in step]

    def step(self) -> None:
        """One optimisation step: next batches, forward, the balancer's backward, clip, update (under
        ``train.compile`` a step that compiled is counted apart: :mod:`bench.engine.compiled`)."""
        if self.fwd is self.model:
            self._step()
        else:
            run_counting_compiles(self._step, self.state, self.timer, self.device)

    def _step(self) -> None:
        cfg, device, state, timer = self.cfg, self.device, self.state, self.timer
        timer.start()
        batches = [(spec, to_device(b["inputs"], device), to_device(b["targets"], device))
                   for spec, b in next(self.batches)]
        if cfg.augment != "none":  # train batches only, on the device; the crops seeded by (seed, step)
            batches = [(spec, *augment(x, ys, self.kinds, cfg.augment, self.seed, state.step, i))
                       for i, (spec, x, ys) in enumerate(batches)]
        timer.mark("data")
        feats: list[torch.Tensor] | None = [] if self.w.uses_features else None
        absent = set()
        for spec, _, _ in batches:
            state.samples += len(spec.idx)
            targets = self.data[spec.task][spec.split].targets
            for t in spec.targets:  # labelled examples, counted on the host copy: no device sync
                seen = int(self.kinds[t].labelled(targets[t][spec.idx]).sum())
                state.task_samples[t] = state.task_samples.get(t, 0) + seen
                if not seen:
                    absent.add(t)
            lengths = self.data[spec.task][spec.split].lengths
            if lengths is not None:
                state.tokens += int(lengths[spec.idx].sum())
        # a task with no label in this step's batch (partial labels) is absent from the step, as a task the
        # multi-input sampler did not draw is: the balancer never sees its loss (docs/weightings.md says what each
        # does then)
        self._absent = absent
        losses = self._losses(batches, feats)
        timer.mark("forward")
        if device.type == "cpu":  # free on the CPU; on a GPU the check waits for the logging interval
            self._check_finite(losses, state.step)
        step = Step(self.shared, self.heads, feats, self.scaler, lambda: self._recompute(batches), timer.mark,
                    forwards=len(batches), world=self.world.size, reduce=distributed.all_sum,
                    gather=distributed.all_gather, rank=self.world.rank)
        self.opt.zero_grad(set_to_none=True)
        if losses:  # no task labelled in the whole step: nothing to learn from, the optimiser step moves nothing
            self.w.backward(losses, step)  # outside autocast, as torch's AMP recipe (and torchjd's) asks
        if self.world.size > 1:  # before unscaling: an inf on one rank reaches every rank through the sum
            parallel.sync_grads(list(self.model.parameters()), step.synced)
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        timer.mark("backward")
        if cfg.grad_clip:  # after aggregation: clipping bounds the update the balancer chose
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.sched.step()
        self.w.after_step(step)
        for event in self.w.take_flags():  # steps where a fallback was taken, a bound hit: counted, never silent
            state.degenerate[event] = state.degenerate.get(event, 0) + 1
        timer.mark("optimizer")
        self.meter.add(losses)
        state.step += 1
        if state.step % cfg.log_every == 0:
            self._log()

    def _losses(self, batches, feats: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Each task's loss on its batch, the forward under autocast; ``feats`` (when given) collects the shared
        representation of every forward."""
        losses, share = {}, {}
        for spec, x, ys in batches:
            with autocast(self.device, self.cfg.precision):
                if feats is None:
                    out = self.fwd(x, list(spec.targets))
                else:
                    out, f = self.fwd(x, list(spec.targets), features=True)
                    feats.append(f)
            for t in spec.targets:
                if t in self._absent:
                    continue
                if self.world.size == 1:
                    losses[t] = self.kinds[t].loss(out[t], ys[t])
                    continue
                # procs=N: this rank's share of the global batch's loss (bench.engine.parallel)
                share[t] = float(parallel.shares(spec, t, self.data[spec.task][spec.split].targets[t],
                                                 self.kinds[t])[self.world.rank])
                losses[t] = self.kinds[t].loss(out[t], ys[t]) if share[t] else parallel.zero_loss(out[t])
        return parallel.global_losses(losses, share) if self.world.size > 1 else losses

    @torch.no_grad()
    def _recompute(self, batches) -> dict[str, torch.Tensor]:
        """This step's losses again, after the update (FAMO's signal); no graph, same batches."""
        return self._losses(batches)

    def _check_finite(self, losses: dict[str, torch.Tensor], step: int) -> None:
        for t, l in losses.items():
            if not torch.isfinite(l):
                raise CellFailed(f"loss of task {t!r} became {l.item()} at step {step}; "
                                 "lower train.lr or check the data")

    def _log(self) -> None:
        """Close the logging interval: the trajectory's point, a memory sample, the trackers' scalars."""
        state = self.state
        if state.traj.step and state.traj.step[-1] == state.step:
            return
        cur = self.w.current()
        self.meter.close_interval(state.traj, state.step, cur)
        self.mem.sample()
        if self.tracker is not None:
            self.tracker.interval(state, cur, float(self.sched.get_last_lr()[0]))

    # -- epochs ------------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        self.prepare()
        try:
            return self._fit()
        finally:  # also when pruned, interrupted or failed: no worker outlives its trainer
            self.close()

    def _fit(self) -> TrainResult:
        cfg, device, model, state = self.cfg, self.device, self.model, self.state
        bar = tqdm(total=self.total_steps, initial=state.step, desc=self.desc, unit="step",
                   leave=False, mininterval=0.5, disable=not live_bar())
        lines = StageLines(self.desc, self.n_epochs, self.total_steps, state) if ProgressLines.enabled() else None
        while state.epoch < self.n_epochs:
            model.train()
            t_epoch = time.perf_counter()
            if self.tracker is not None:
                self.tracker.start_epoch(state, t_epoch)
            for _ in range(min(self.steps_per_epoch, self.total_steps - state.step)):
                self.step()
                bar.update(1)
                if lines is not None and progress.due():
                    lines.emit(state, self.meter)
            self.timer.flush()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # once per epoch, so the epoch's train time is real
            state.train_time += time.perf_counter() - t_epoch
            state.epoch += 1
            self.w.end_epoch(state.epoch, self.meter.epoch_means())
            val, _ = evaluate(model, self.tasks, self.data, "validation", cfg.eval_batch_size, device,
                              cfg.precision, self.feeder)
            score = selection_score(self.task_cfgs, val)
            state.record_epoch(score, val, model.state_dict())
            if self.tracker is not None:
                self.tracker.epoch(state, val, score)
            self.mem.sample()
            if self.on_epoch is not None:
                self.on_epoch(state.epoch, score)
            stop = cfg.patience is not None and state.bad_epochs >= cfg.patience
            if self.resume is not None and state.epoch < self.n_epochs and not stop:
                self._save_resume()
            if stop:
                break
        bar.close()
        self._log()
        model.load_state_dict(state.best_state)
        return TrainResult(state.best_epoch, state.history, state.traj.to_dict() if state.traj.step else {},
                           self.telemetry())

    def telemetry(self) -> dict[str, Any]:
        """The stage's telemetry so far (:func:`~bench.engine.telemetry.stage_telemetry`)."""
        return stage_telemetry(self.state, self.cfg, self.model, self.device, self.mem, self.steps_per_epoch)

    def close(self) -> None:
        """Stop the batch workers (``fit`` does this itself; call it after driving :meth:`step` by hand)."""
        self.batches.close()
        self.feeder.close()

    def _save_resume(self) -> None:
        if not self.world.writer:  # rank 0 writes the one resume file every rank restarts from
            return
        resume.write(resume.training_snapshot(model=self.model, weighting=self.w, opt=self.opt, sched=self.sched,
                                              rng=self.rng, streams=self.streams, sampler=self.sampler,
                                              state=self.state, meter=self.meter), self.resume, resume.TRAIN_KIND)
