"""One training loop for single-task and joint training, and per-task evaluation.

The loop knows nothing about strategies: it trains a :class:`MultiTaskModel` on the tasks it is given, combines
their losses with a :class:`Weighting`, selects the best epoch on the validation split only, and can resume from its
last epoch checkpoint. Multi-input suites draw task batches with a sampler; single-input suites compute every head on
each batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from tqdm.auto import tqdm

from bench import metrics as M
from bench import safestate
from bench.batches import BatchSpec, Feeder, auto_workers
from bench.config import TaskConfig, TrainConfig
from bench.encode import EncodedSplit
from bench.errors import BenchError, CellFailed
from bench.model import MultiTaskModel, predict, task_loss
from bench.store import atomic_write
from bench.weighting.base import Balancer, Step

Data = dict[str, dict[str, EncodedSplit]]  # task -> split -> encoded
RESUME_FILE = "resume.safetensors"  # a training stage's state after its last finished epoch (bench.safestate)
LEGACY_RESUME_FILE = "resume.pt"  # the pickle earlier versions wrote: deleted unread


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"train.device={name!r} but no CUDA device is visible; use train.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


PROGRESS_INTERVAL_S = 20.0  # seconds between plain progress lines (BENCH_PROGRESS_INTERVAL overrides it)


def live_bar() -> bool:
    """The live tqdm bar: on a terminal only (stdout and stderr both), unless ``BENCH_PROGRESS=0``."""
    return os.environ.get("BENCH_PROGRESS") != "0" and sys.stderr.isatty() and sys.stdout.isatty()


class ProgressLines:
    """Plain progress lines inside a cell when stdout is not a terminal (a file, a pipe, CI, ``nohup``, SLURM).

    A training loop calls :meth:`due` after every step (one clock read) and, when it says so, :meth:`emit` one line:
    the cell, the stage, epoch and step of total, the recent loss (summed over the stage's tasks) and samples/s, and
    the ETA of the stage, the cell and the run. The throttle is time-based and shared by every stage of the process,
    so short stages do not flood a log: a line at most every ``BENCH_PROGRESS_INTERVAL`` seconds (default
    :data:`PROGRESS_INTERVAL_S`), i.e. at least every interval + one step while training runs. ``BENCH_PROGRESS=0``
    silences them, as it does the bar. ``bench run`` tells it which cell runs (:meth:`start_cell`) and how long the
    cells finished so far took; until one has finished the cell and run ETAs print as ``?``.

    Example (the first cell of a run: no cell has finished yet, so only the stage has an ETA):
        >>> import io
        >>> lines, out = ProgressLines(), io.StringIO()
        >>> lines.start_cell("[1/2] a cell", expected_s=None, rest_s=None)
        >>> lines.emit("joint s0", "epoch 1/2, step 3/10", 0.25, 640.0, 7.0, out=out)
        >>> print(out.getvalue(), end="")
        [1/2] a cell | joint s0: epoch 1/2, step 3/10, loss 0.2500, 640 samples/s | ETA stage 0m07s, cell ?, run ?
    """

    def __init__(self) -> None:
        self.last: float | None = None  # perf_counter of the last line (or of the cell's start)
        self.tag = ""
        self.started: float | None = None
        self.expected_s: float | None = None  # the cell's expected duration, from finished cells of this run
        self.rest_s: float | None = None  # the run's time after this cell

    @staticmethod
    def interval() -> float:
        raw = os.environ.get("BENCH_PROGRESS_INTERVAL")
        try:
            return max(0.0, float(raw)) if raw else PROGRESS_INTERVAL_S
        except ValueError:
            return PROGRESS_INTERVAL_S

    @staticmethod
    def enabled() -> bool:
        return os.environ.get("BENCH_PROGRESS") != "0" and not sys.stdout.isatty()

    def start_cell(self, tag: str, expected_s: float | None, rest_s: float | None) -> None:
        self.tag, self.expected_s, self.rest_s = tag, expected_s, rest_s
        self.started = self.last = time.perf_counter()

    def due(self) -> bool:
        now = time.perf_counter()
        if self.last is None:  # a worker process that was not told about its cell: count from its first step
            self.last = now
        return now - self.last >= self.interval()

    def emit(self, stage: str, where: str, loss: float | None, rate: float | None, stage_eta: float | None,
             out=None) -> None:
        """Print one line (to ``out``, default the current ``sys.stdout``)."""
        from bench.launch.base import fmt_duration

        now = time.perf_counter()
        self.last = now
        eta = lambda s: "?" if s is None or not math.isfinite(s) else fmt_duration(max(0.0, s))  # noqa: E731
        cell = None
        if self.expected_s is not None and self.started is not None:
            cell = max(self.expected_s - (now - self.started), stage_eta or 0.0)
        run = cell + self.rest_s if cell is not None and self.rest_s is not None else None
        parts = [where]
        if loss is not None and math.isfinite(loss):
            parts.append(f"loss {loss:.4f}")
        if rate is not None and math.isfinite(rate):
            parts.append(f"{rate:,.0f} samples/s")
        head = f"{self.tag} | " if self.tag else ""
        print(f"{head}{stage}: {', '.join(parts)} | ETA stage {eta(stage_eta)}, cell {eta(cell)}, run {eta(run)}",
              file=out or sys.stdout, flush=True)


progress = ProgressLines()  # this process's throttle and cell context (bench.runner sets the cell)


class MemoryMeter:
    """Peak memory of a stage: CUDA max allocated/reserved on GPU, sampled process RSS on the host."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.proc = psutil.Process(os.getpid())
        self.peak_rss = self.proc.memory_info().rss
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        self.device = device

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def report(self) -> dict[str, Any]:
        self.sample()
        out: dict[str, Any] = {"peak_rss_mb": self.peak_rss / 2**20}
        if self.cuda:
            out["peak_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            out["peak_reserved_mb"] = torch.cuda.max_memory_reserved(self.device) / 2**20
            out["memory_kind"] = "cuda_max_allocated"
        else:
            out["peak_memory_mb"] = out["peak_rss_mb"]
            out["memory_kind"] = "host_rss"
        return out


class TaskSampler:
    """Which tasks a multi-input step trains on: proportional (∝|D_i|), temperature (∝|D_i|^{1/τ}),
    round_robin, or all (one batch from every task per step; forced when the weighting needs every loss)."""

    def __init__(self, sizes: dict[str, int], mode: str, temperature: float, rng: np.random.Generator):
        self.names = list(sizes)
        self.mode = mode
        self.rng = rng
        n = np.array([sizes[t] for t in self.names], dtype=float)
        p = n ** (1.0 / temperature) if mode == "temperature" else n
        self.p = p / p.sum()
        self.i = 0

    def next(self) -> list[str]:
        if self.mode == "all" or len(self.names) == 1:
            return self.names
        if self.mode == "round_robin":
            t = self.names[self.i % len(self.names)]
            self.i += 1
            return [t]
        return [self.names[int(self.rng.choice(len(self.names), p=self.p))]]


class IndexStream:
    """An endless stream of shuffled indices over one training split (reshuffled every pass)."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n, self.rng = n, rng
        self.perm = rng.permutation(n)
        self.pos = 0

    def next(self, b: int) -> np.ndarray:
        if self.pos + b > self.n:
            self.perm, self.pos = self.rng.permutation(self.n), 0
        idx = self.perm[self.pos:self.pos + b]
        self.pos += b
        return idx


class PhaseTimer:
    """Where a step's time goes, without a host sync per step.

    On the CPU phases are timed with ``perf_counter``; on a GPU each phase boundary records a CUDA event, and the
    events are read (one synchronisation) only when :meth:`flush` runs at the end of an epoch.
    """

    def __init__(self, device: torch.device, totals: dict[str, float]):
        self.cuda = device.type == "cuda"
        self.totals = totals
        self.pending: list[tuple[str, Any, Any, dict[str, float]]] = []  # phase, start, end, the totals it adds to
        self.last: Any = None

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        self.last = self._now()

    def mark(self, phase: str) -> None:
        now = self._now()
        if self.cuda:
            self.pending.append((phase, self.last, now, self.totals))
        else:
            self.totals[phase] += now - self.last
        self.last = now

    def checkpoint(self) -> Any:
        """Where the totals stand now, for :meth:`set_aside` (on a GPU: how many phases are pending)."""
        return len(self.pending) if self.cuda else dict(self.totals)

    def set_aside(self, point: Any, aside: dict[str, float]) -> None:
        """Move the phases timed since ``point`` from the totals to ``aside`` (a step that compiled)."""
        if self.cuda:
            self.pending[point:] = [(phase, a, b, aside) for phase, a, b, _ in self.pending[point:]]
        else:
            for phase, before in point.items():
                aside[phase] = aside.get(phase, 0.0) + self.totals[phase] - before
                self.totals[phase] = before

    def flush(self) -> None:
        if self.pending:
            self.pending[-1][2].synchronize()
            for phase, a, b, totals in self.pending:
                totals[phase] = totals.get(phase, 0.0) + a.elapsed_time(b) / 1000
            self.pending.clear()


# dense peak FLOP/s by device and precision, for model FLOP utilisation (MFU)
_PEAK = {("H200", "bf16"): 989e12, ("H100", "bf16"): 989e12, ("A100", "bf16"): 312e12,
         ("H200", "fp32"): 67e12, ("H100", "fp32"): 67e12, ("A100", "fp32"): 19.5e12}


class CompiledForward:
    """``model``'s own forward with its backbone compiled (``train.compile``), for the training steps.

    Only the backbone: a whole compiled :class:`MultiTaskModel` guards on the task names its heads are looked up by,
    so a multi-input suite compiled one graph per task (and per ``features=`` / grad mode variant, soon past Dynamo's
    recompile limit of 8, where it silently runs eagerly); the backbone does not see them, and the heads are small.
    ``dynamic=True``: text batches are padded to their longest row, so every new length would recompile. Duck sizing
    is off (see :meth:`settings`). Evaluation keeps the uncompiled model (``evaluate`` calls ``model``)."""

    def __init__(self, model: MultiTaskModel):
        self.model = model
        self.backbone = torch.compile(model.backbone, dynamic=True)

    def __call__(self, *args, **kwargs):
        modules = self.model._modules
        plain = modules["backbone"]
        modules["backbone"] = self.backbone  # for this call only: state_dict keys and evaluation stay as they are
        try:
            return self.model(*args, **kwargs)
        finally:
            modules["backbone"] = plain

    @staticmethod
    @contextlib.contextmanager
    def settings():
        """torch.compile settings for a whole training step (forward, the balancer's backward(s), FAMO's recompute),
        restored after it. No duck sizing: with it a first batch whose length equals the batch size (16 × 16) ties
        the two sizes into one symbol, and the next batch recompiles. No donated buffers: a compiled backward that
        frees its saved tensors fails the balancers that backpropagate through the graph more than once (GradNorm,
        ``retain_graph=True``); the flag is read when the graph compiles and again at every backward."""
        from torch._functorch import config as functorch_config
        from torch.fx.experimental import _config as fx_config

        with fx_config.patch(use_duck_shape=False), functorch_config.patch(donated_buffer=False):
            yield


def compile_events() -> int:
    """A count of torch.compile's work in this process so far: the frames Dynamo converted (a first call, and every
    recompilation after a guard failed: a new shape, grad mode, argument) plus the FX graphs it compiled. A Python
    counter (``torch._dynamo.utils.counters``): reading it costs a dict lookup and no device sync, so the training
    loop reads it around every step to tell the steps that compiled from the steady ones."""
    from torch._dynamo.utils import counters

    return counters["frames"]["total"] + counters["stats"]["unique_graphs"]


def peak_flops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    prec = "bf16" if precision in ("bf16", "fp16") else "fp32"
    for (gpu, p), v in _PEAK.items():
        if gpu in name and p == prec:
            return v
    return None


@dataclass
class TrainResult:
    best_epoch: int
    history: list[dict[str, Any]]
    trajectories: dict[str, Any]
    telemetry: dict[str, Any]
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # split -> task -> metric


def selection_score(task_cfgs: dict[str, TaskConfig], val: dict[str, dict[str, float]]) -> float:
    """Mean primary validation metric, sign-flipped for lower-is-better metrics (used for best-epoch selection)."""
    vals = []
    for t, m in val.items():
        p = task_cfgs[t].primary_metric
        vals.append(m[p] if M.direction(p) == "max" else -m[p])
    return float(np.mean(vals))


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_feeder(data: Data, collate, device: torch.device, workers: int | None) -> Feeder:
    """Workers as configured (``None``: :func:`~bench.batches.auto_workers`); pinned host memory when they feed a
    GPU, so the copy to the device overlaps the previous step."""
    n = auto_workers(device) if workers is None else workers
    return Feeder(data, collate, workers=n, pin=n > 0 and device.type == "cuda")


@torch.no_grad()
def evaluate(model: MultiTaskModel, tasks: list[TaskConfig], data: Data, split: str, batch_size: int,
             device: torch.device, precision: str, feeder: Feeder, keep: dict[str, dict[str, np.ndarray]] | None = None,
             ) -> tuple[dict[str, dict[str, float]], int]:
    """Per-task metrics on ``split``; batches sorted by length so padding is minimal. Returns (metrics, samples).

    ``keep`` (optional) receives the per-example predictions and targets, ``keep[task] = {"pred", "target", "id"}``
    in the split's fixed order, so that intervals and paired tests can be computed later."""
    model.eval()
    out, seen = {}, 0
    for task in tasks:
        es = data[task.name].get(split)
        if es is None:
            continue
        n = len(es)
        order = np.argsort(es.lengths, kind="stable") if es.lengths is not None else np.arange(n)
        # predictions stay on the device until the task is done: no host sync per batch
        preds = torch.empty(n, dtype=torch.float32 if task.target == "regression" else torch.int64, device=device)
        specs = [BatchSpec(task.name, split, order[s:s + batch_size]) for s in range(0, n, batch_size)]
        for spec, batch in feeder.run(specs):
            with _autocast(device, precision):
                y = model(_to(batch["inputs"], device), [task.name])[task.name]
            preds[torch.from_numpy(spec.idx).to(device)] = predict(task, y).to(preds.dtype)
        seen += n
        p = preds.cpu().numpy().astype(np.float64 if task.target == "regression" else np.int64)
        y = es.targets[task.name].numpy()
        out[task.name] = M.compute(task.metric_names, y, p)
        if keep is not None:
            keep[task.name] = {"pred": p, "target": y, "id": np.arange(n, dtype=np.int64)}
    return out, seen


class Trainer:
    """Trains ``model`` on ``tasks``, balanced by ``weighting`` (any :class:`~bench.weighting.Balancer`); best epoch
    chosen on validation only.

    ``work_dir`` (optional) receives ``resume.safetensors`` after every epoch so that a killed run continues where it
    stopped.
    """

    def __init__(self, model: MultiTaskModel, tasks: list[TaskConfig], data: Data, weighting: Balancer,
                 cfg: TrainConfig, seed: int, collate, single_input: bool, work_dir: Path | None = None,
                 desc: str = "train", on_epoch=None, max_steps: int | None = None, on_log=None):
        """``max_steps``: train for exactly this many optimiser steps instead of ``cfg.epochs`` epochs (a matched
        budget); the last epoch is then cut short, and validation still runs at every epoch's end. ``on_log(step,
        scalars)``: called at every logging interval and after every epoch's validation (experiment trackers,
        :mod:`bench.track`); it receives values the loop has already computed and changes nothing."""
        self.model, self.tasks, self.data, self.w, self.cfg = model, tasks, data, weighting, cfg
        self.max_steps = max_steps
        self.task_cfgs = {t.name: t for t in tasks}
        self.seed, self.collate, self.single_input = seed, collate, single_input
        self.work_dir, self.desc = work_dir, desc
        self.on_epoch = on_epoch  # e.g. an Optuna pruning callback: (epoch, validation score) -> None or raise
        self.on_log = on_log
        self._tick: tuple[float, int, int] | None = None  # (time, samples, epoch) at on_log's last throughput point
        self.device = resolve_device(cfg.device)
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
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.cfg.lr, momentum=0.9, weight_decay=self.cfg.weight_decay)
        for g in groups:  # weightings may set their own weight_decay (uncertainty: none)
            g.setdefault("weight_decay", self.cfg.weight_decay)
        return torch.optim.AdamW(groups, lr=self.cfg.lr)

    def _steps_per_epoch(self) -> int:
        sizes = [len(self.data[t.name]["train"]) for t in self.tasks]
        if self.single_input:
            return max(1, math.ceil(sizes[0] / self.cfg.batch_size))
        per_step = self.cfg.batch_size * (len(sizes) if self._sampling() == "all" else 1)
        return max(1, math.ceil(sum(sizes) / per_step))

    def _sampling(self) -> str:
        return "all" if self.w.needs_all_tasks else self.cfg.sampling

    # -- main loop ---------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Build optimiser, schedule, samplers and state (and restore them from ``resume.safetensors`` when present)."""
        cfg, device, model = self.cfg, self.device, self.model
        model.to(device)
        self.w.to(device)
        self.w.setup(model)
        self.opt = self._optimizer()
        self.steps_per_epoch = self._steps_per_epoch()
        total = self.total_steps = self.max_steps or self.steps_per_epoch * cfg.epochs
        self.n_epochs = math.ceil(total / self.steps_per_epoch)
        warm = int(cfg.warmup_ratio * total)

        def lr_lambda(step: int) -> float:
            if warm and step < warm:
                return (step + 1) / warm
            if cfg.schedule == "linear":
                return max(0.0, (total - step) / max(1, total - warm))
            return 1.0

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.rng = np.random.default_rng(self.seed)
        self.names = names = [t.name for t in self.tasks]
        if self.single_input:
            self.streams = {"*": IndexStream(len(self.data[names[0]]["train"]), self.rng)}
        else:
            self.streams = {t: IndexStream(len(self.data[t]["train"]), self.rng) for t in names}
        self.sampler = TaskSampler({t: len(self.data[t]["train"]) for t in names}, self._sampling(),
                                   cfg.temperature, self.rng)
        self.fwd = CompiledForward(model) if cfg.compile else model
        self.feeder = make_feeder(self.data, self.collate, device, cfg.num_workers)
        self.batches = self._batches()
        self.state = {"epoch": 0, "step": 0, "best_score": -math.inf, "best_epoch": -1, "best_state": None,
                      "history": [], "traj": {"step": [], "weights": {t: [] for t in names},
                                              "loss": {t: [] for t in names}},
                      "train_time": 0.0, "samples": 0, "tokens": 0, "bad_epochs": 0,
                      # the steps during which torch.compile compiled (inside train_time): see step()
                      "compile_time": 0.0, "compile_steps": 0, "compile_samples": 0, "compile_tokens": 0,
                      "compile_timers": {},
                      "timers": {"data": 0.0, "forward": 0.0, "weighting": 0.0, "backward": 0.0, "optimizer": 0.0}}
        # the weights a weighting starts from (σ² = 1, w = 1), so a trajectory shows where they moved from; a resumed
        # run replaces the state, this point included
        start = self.w.current()
        self.state["traj"]["step"].append(0)
        for t in names:
            self.state["traj"]["weights"][t].append(float(start.get(t, float("nan"))))
            self.state["traj"]["loss"][t].append(float("nan"))
        self.resume = self.work_dir / RESUME_FILE if self.work_dir else None
        ck = self._read_resume()
        if ck is not None:
            model.load_state_dict(ck["model"])
            self.w.load_state_dict(ck["weighting"])
            self.opt.load_state_dict(ck["opt"])
            self.sched.load_state_dict(ck["sched"])
            self.rng.bit_generator.state = ck["rng"]
            torch.set_rng_state(ck["torch_rng"])
            for k, st in ck["streams"].items():
                self.streams[k].perm, self.streams[k].pos = st
            self.sampler.i = ck["sampler_i"]
            self.state = ck["state"]
            for k, v in (("compile_time", 0.0), ("compile_steps", 0), ("compile_samples", 0), ("compile_tokens", 0),
                         ("compile_timers", {})):
                self.state.setdefault(k, v)  # a resume state written before these were counted
            print(f"[{self.desc}] resumed after epoch {self.state['epoch']}", file=sys.stderr)
        self.mem = MemoryMeter(device)
        self.timer = PhaseTimer(device, self.state["timers"])
        self.loss_acc = {t: torch.zeros((), device=device) for t in names}
        self.loss_cnt = dict.fromkeys(names, 0)
        self.epoch_acc = {t: torch.zeros((), device=device) for t in names}  # the balancer's end_epoch reads them
        self.epoch_cnt = dict.fromkeys(names, 0)
        if ck is not None and "loss_acc" in ck:  # a logging interval that an epoch boundary cut in two
            for t in names:
                self.loss_acc[t] += ck["loss_acc"][t].to(device)
                self.loss_cnt[t] = int(ck["loss_cnt"][t])
        # what a balancer may touch: the backbone's declared shared parameters and each task's head
        self.shared = [p for p in model.shared_parameters() if p.requires_grad]
        self.heads = {t: [p for p in model.heads[t].parameters() if p.requires_grad] for t in names}

    def _draw(self) -> list[BatchSpec]:
        """The batches of one step, from the seeded task sampler and index streams."""
        b = self.cfg.batch_size
        if self.single_input:
            return [BatchSpec(self.names[0], "train", self.streams["*"].next(b), tuple(self.names))]
        return [BatchSpec(t, "train", self.streams[t].next(b), (t,)) for t in self.sampler.next()]

    def _batches(self):
        """Endless ``[(spec, batch), ...]`` per step. A whole epoch is drawn before its first step, so the
        generators' state saved at an epoch boundary does not depend on how far the workers read ahead."""
        while True:
            plan = [self._draw() for _ in range(self.steps_per_epoch)]
            stream = self.feeder.run([spec for step in plan for spec in step])
            for step in plan:
                yield [next(stream) for _ in step]

    def step(self) -> None:
        """One optimisation step: next batches, forward, the balancer's backward, clip, update.

        Under ``train.compile`` a step during which torch.compile compiled something (the first steps, a
        recompilation) is timed on the host (compiling blocks it) and counted apart, with its samples and tokens:
        :meth:`telemetry` reports throughput over the other, steady steps and the compile time separately."""
        if self.fwd is self.model:
            self._step()
            return
        state = self.state
        before, point = compile_events(), self.timer.checkpoint()
        samples, tokens = state["samples"], state["tokens"]
        t0 = time.perf_counter()
        with self.fwd.settings():
            self._step()
        if compile_events() != before:
            if self.device.type == "cuda":  # rare: the compiled step's own kernels belong to its window too
                torch.cuda.synchronize(self.device)
            state["compile_time"] += time.perf_counter() - t0
            state["compile_steps"] += 1
            state["compile_samples"] += state["samples"] - samples
            state["compile_tokens"] += state["tokens"] - tokens
            self.timer.set_aside(point, state["compile_timers"])

    def _step(self) -> None:
        cfg, device, state, timer = self.cfg, self.device, self.state, self.timer
        timer.start()
        batches = [(spec, _to(b["inputs"], device), _to(b["targets"], device)) for spec, b in next(self.batches)]
        timer.mark("data")
        feats: list[torch.Tensor] | None = [] if self.w.uses_features else None
        losses = self._losses(batches, feats)
        for spec, _, _ in batches:
            state["samples"] += len(spec.idx)
            lengths = self.data[spec.task][spec.split].lengths
            if lengths is not None:
                state["tokens"] += int(lengths[spec.idx].sum())
        timer.mark("forward")
        if device.type == "cpu":  # free on the CPU; on a GPU the check waits for the logging interval
            self._check_finite(losses, state["step"])
        step = Step(self.shared, self.heads, feats, self.scaler, lambda: self._recompute(batches), timer.mark)
        self.opt.zero_grad(set_to_none=True)
        self.w.backward(losses, step)  # outside autocast, as torch's AMP recipe (and torchjd's) asks
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
        timer.mark("optimizer")
        for t, l in losses.items():
            d = l.detach()
            self.loss_acc[t] += d
            self.loss_cnt[t] += 1
            self.epoch_acc[t] += d
            self.epoch_cnt[t] += 1
        state["step"] += 1
        if state["step"] % cfg.log_every == 0:
            self._log(state, self.loss_acc, self.loss_cnt, self.mem)

    def _losses(self, batches, feats: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Each task's loss on its batch, the forward under autocast; ``feats`` (when given) collects the shared
        representation of every forward."""
        losses = {}
        for spec, x, ys in batches:
            with _autocast(self.device, self.cfg.precision):
                if feats is None:
                    out = self.fwd(x, list(spec.targets))
                else:
                    out, f = self.fwd(x, list(spec.targets), features=True)
                    feats.append(f)
            for t in spec.targets:
                losses[t] = task_loss(self.task_cfgs[t], out[t], ys[t])
        return losses

    @torch.no_grad()
    def _recompute(self, batches) -> dict[str, torch.Tensor]:
        """This step's losses again, after the update (FAMO's signal); no graph, same batches."""
        return self._losses(batches)

    def _end_epoch(self) -> None:
        """Tell the balancer the epoch's mean training loss of every task (one host sync per epoch)."""
        means = {t: (self.epoch_acc[t] / self.epoch_cnt[t]).item() for t in self.names if self.epoch_cnt[t]}
        for t in self.names:
            self.epoch_acc[t].zero_()
            self.epoch_cnt[t] = 0
        self.w.end_epoch(self.state["epoch"], means)

    def fit(self) -> TrainResult:
        self.prepare()
        try:
            return self._fit()
        finally:  # also when pruned, interrupted or failed: no worker outlives its trainer
            self.close()

    def _fit(self) -> TrainResult:
        cfg, device, model, state = self.cfg, self.device, self.model, self.state
        bar = tqdm(total=self.total_steps, initial=state["step"], desc=self.desc, unit="step",
                   leave=False, mininterval=0.5, disable=not live_bar())
        lines = ProgressLines.enabled()
        self._line_start = self._line_at = (time.perf_counter(), state["step"], state["samples"])
        while state["epoch"] < self.n_epochs:
            model.train()
            t_epoch = time.perf_counter()
            self._tick = (t_epoch, state["samples"], state["epoch"])  # on_log's throughput leaves validation out
            for _ in range(min(self.steps_per_epoch, self.total_steps - state["step"])):
                self.step()
                bar.update(1)
                if lines and progress.due():
                    self._progress_line()
            self.timer.flush()
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # once per epoch, so the epoch's train time is real
            state["train_time"] += time.perf_counter() - t_epoch
            state["epoch"] += 1
            self._end_epoch()
            val, _ = evaluate(model, self.tasks, self.data, "validation", cfg.eval_batch_size, device,
                              cfg.precision, self.feeder)
            score = selection_score(self.task_cfgs, val)
            state["history"].append({"epoch": state["epoch"], "score": score, "validation": val})
            self._emit_epoch(val, score)
            if score > state["best_score"]:
                state["best_score"], state["best_epoch"] = score, state["epoch"]
                state["best_state"] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                state["bad_epochs"] = 0
            else:
                state["bad_epochs"] += 1
            self.mem.sample()
            if self.on_epoch is not None:
                self.on_epoch(state["epoch"], score)
            stop = cfg.patience is not None and state["bad_epochs"] >= cfg.patience
            if self.resume is not None and state["epoch"] < self.n_epochs and not stop:
                self._save_resume()
            if stop:
                break
        bar.close()
        self._log(state, self.loss_acc, self.loss_cnt, self.mem)
        model.load_state_dict(state["best_state"])
        return TrainResult(state["best_epoch"], state["history"], state["traj"] if state["traj"]["step"] else {},
                           self.telemetry())

    def _progress_line(self) -> None:
        """One plain progress line (:class:`ProgressLines`): epoch and step of total, the loss summed over the
        stage's tasks since the last logging interval (one host sync, at most once per line), samples/s since the
        previous line of this stage, and the stage's ETA from its steps so far."""
        state, now = self.state, time.perf_counter()
        losses = []
        for t in self.names:
            if self.loss_cnt[t]:
                losses.append((self.loss_acc[t] / self.loss_cnt[t]).item())
            else:
                last = [v for v in self.state["traj"]["loss"][t] if math.isfinite(v)]
                if last:
                    losses.append(last[-1])
        t0, step0, _ = self._line_start
        t1, _, samples1 = self._line_at
        rate = (state["samples"] - samples1) / (now - t1) if now > t1 else None
        stage_eta = (now - t0) / (state["step"] - step0) * (self.total_steps - state["step"]) \
            if state["step"] > step0 else None
        self._line_at = (now, state["step"], state["samples"])
        where = f"epoch {state['epoch'] + 1}/{self.n_epochs}, step {state['step']}/{self.total_steps}"
        progress.emit(self.desc, where, sum(losses) if losses else None, rate, stage_eta)

    def telemetry(self) -> dict[str, Any]:
        """Throughput, step time and MFU over the steady steps: under ``train.compile`` the steps that compiled are
        left out (their time, samples and tokens) and reported as ``compile_*``; ``train_time_s`` is the whole
        training time. Without compile every step is steady and nothing is left out."""
        state, timers = self.state, self.state["timers"]
        excl = self.cfg.compile and state["step"] > state["compile_steps"]
        c_time, c_steps = (state["compile_time"], state["compile_steps"]) if excl else (0.0, 0)
        c_samples, c_tokens = (state["compile_samples"], state["compile_tokens"]) if excl else (0, 0)
        time_s, steps = state["train_time"] - c_time, state["step"] - c_steps
        if self.cfg.compile and not excl:  # no steady step: the phases of the compiling steps count too
            timers = {k: v + state["compile_timers"].get(k, 0.0) for k, v in timers.items()}
        tel = {
            "train_time_s": state["train_time"],
            "train_samples": state["samples"],
            "train_samples_per_s": (state["samples"] - c_samples) / max(time_s, 1e-9),
            "steps": state["step"],
            "epochs_run": state["epoch"],
            # fractional when a matched budget cuts the last epoch short
            "epochs": state["step"] / self.steps_per_epoch,
            "step_time_ms": 1000 * time_s / max(1, steps),
            "step_breakdown_ms": {k: 1000 * v / max(1, steps) for k, v in timers.items()},
            "trainable_params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "precision": self.cfg.precision,
            **self.mem.report(),
        }
        if self.cfg.compile:
            tel.update(compile_time_s=state["compile_time"], compile_steps=state["compile_steps"],
                       compile_samples=state["compile_samples"], throughput_excludes_compile=excl)
            if state["tokens"]:
                tel["compile_tokens"] = state["compile_tokens"]
        if state["tokens"]:
            tel["train_tokens_per_s"] = (state["tokens"] - c_tokens) / max(time_s, 1e-9)
            peak = peak_flops(self.device, self.cfg.precision)
            if peak:
                # training FLOPs ≈ 6 × parameters × tokens (Kaplan et al.); backbone parameters only
                n = sum(p.numel() for p in self.model.backbone.parameters())
                tel["mfu"] = 6 * n * tel["train_tokens_per_s"] / peak
        return tel

    def close(self) -> None:
        """Stop the batch workers (``fit`` does this itself; call it after driving :meth:`step` by hand)."""
        self.batches.close()
        self.feeder.close()

    # -- helpers -----------------------------------------------------------------------------------------------
    def _check_finite(self, losses: dict[str, torch.Tensor], step: int) -> None:
        for t, l in losses.items():
            if not torch.isfinite(l):
                raise CellFailed(f"loss of task {t!r} became {l.item()} at step {step}; "
                                 "lower train.lr or check the data")

    def _log(self, state, loss_acc, loss_cnt, mem) -> None:
        traj = state["traj"]
        if traj["step"] and traj["step"][-1] == state["step"]:
            return
        cur = self.w.current()
        for t, acc in loss_acc.items():
            if loss_cnt[t]:
                v = (acc / loss_cnt[t]).item()  # the only host sync: once per logging interval
                if not math.isfinite(v):
                    raise CellFailed(f"loss of task {t!r} became {v} before step {state['step']}; lower train.lr")
                traj["loss"][t].append(v)
            else:
                traj["loss"][t].append(float("nan"))
            acc.zero_()
            loss_cnt[t] = 0
            traj["weights"][t].append(float(cur.get(t, float("nan"))))
        traj["step"].append(state["step"])
        mem.sample()
        if self.on_log is not None:
            self._emit_step(state, cur)

    def _emit_step(self, state, cur: dict[str, float]) -> None:
        """The logging interval that just closed, for ``on_log``: each task's mean loss and their sum over the tasks
        that had one (``loss/total``), the weights λ, the backbone's learning rate, and samples/s over the interval's
        steps in this epoch (none when it spans a validation pass). Reads only values already on the host."""
        traj, now = state["traj"], time.perf_counter()
        losses = {t: traj["loss"][t][-1] for t in self.names}
        scalars = {f"loss/{t}": v for t, v in losses.items()}
        seen = [v for v in losses.values() if math.isfinite(v)]
        if seen:
            scalars["loss/total"] = sum(seen)
        scalars.update({f"weight/{t}": float(cur.get(t, float("nan"))) for t in self.names})
        scalars["lr"] = float(self.sched.get_last_lr()[0])
        tick = self._tick
        if tick is not None and tick[2] == state["epoch"] and now > tick[0] and state["samples"] > tick[1]:
            scalars["throughput/samples_per_s"] = (state["samples"] - tick[1]) / (now - tick[0])
        self._tick = (now, state["samples"], state["epoch"])
        self.on_log(state["step"], scalars)

    def _emit_epoch(self, val: dict[str, dict[str, float]], score: float) -> None:
        """An epoch's validation for ``on_log``: the selection score and every metric (``epoch_validation/...``),
        and the stage's mean samples/s so far (training time only, validation left out)."""
        if self.on_log is None:
            return
        state = self.state
        scalars = {"epoch": float(state["epoch"]), "epoch_validation/score": score}
        if state["train_time"] > 0:
            scalars["throughput/mean_samples_per_s"] = state["samples"] / state["train_time"]
        scalars.update({f"epoch_validation/{t}/{m}": v for t, ms in val.items() for m, v in ms.items()})
        self.on_log(self.state["step"], scalars)

    def _save_resume(self) -> None:
        ck = {"model": self.model.state_dict(), "weighting": self.w.state_dict(), "opt": self.opt.state_dict(),
              "sched": self.sched.state_dict(), "rng": self.rng.bit_generator.state,
              "torch_rng": torch.get_rng_state(), "streams": {k: (s.perm, s.pos) for k, s in self.streams.items()},
              "sampler_i": self.sampler.i, "state": self.state, "loss_acc": self.loss_acc, "loss_cnt": self.loss_cnt}
        safestate.save(ck, self.resume, "resume")

    def _read_resume(self) -> dict[str, Any] | None:
        """The state :meth:`_save_resume` left, or None (start from the beginning). Tensors in safetensors, the rest
        in JSON: nothing is unpickled. A ``resume.pt`` of an older version (a pickle) is deleted unread, and a file
        that cannot be read is ignored: the stage restarts, which gives the same result."""
        if self.resume is None:
            return None
        legacy = self.resume.with_name(LEGACY_RESUME_FILE)
        if legacy.exists():
            legacy.unlink(missing_ok=True)
            if not self.resume.exists():
                print(f"[{self.desc}] ignoring {LEGACY_RESUME_FILE} of an older version (never unpickled); "
                      "the stage restarts", file=sys.stderr)
        if not self.resume.exists():
            return None
        try:
            return safestate.load(self.resume, "resume")
        except safestate.StateError as e:
            print(f"[{self.desc}] ignoring unreadable resume state ({e}); the stage restarts", file=sys.stderr)
            self.resume.unlink(missing_ok=True)
            return None


@dataclass
class FitResult:
    """What :func:`optimise` did: the mean loss of every logging interval and the run's telemetry."""

    losses: list[float]
    telemetry: dict[str, Any]


def optimise(params: list[torch.Tensor], loss_at: Callable[[int], torch.Tensor], steps: int, *, lr: float,
             device: torch.device, precision: str = "fp32", work_dir: Path | None = None, desc: str = "optimise",
             log_every: int = 10, save_every: int = 50, on_log=None) -> FitResult:
    """Minimise ``loss_at(step)`` over the leaf tensors ``params`` with Adam for ``steps`` steps.

    The engine's loop for a *small* set of parameters (fusion coefficients, a gating network): the forward runs under
    the configured autocast precision, the backward outside it; a non-finite loss stops with one line; telemetry
    matches :class:`Trainer`'s (step time, peak memory, device). ``loss_at`` must be a function of the step index
    alone (draw batch ``step`` of a fixed sequence), so that a run resumed from ``work_dir/resume_fit.pt``, written
    every ``save_every`` steps, continues exactly where it stopped. No weight decay: a coefficient whose gradient is
    zero stays where it started. ``on_log(step, {"loss/total": mean})`` sees every logging interval (trackers).

    Example (a least-squares fit):
        >>> w = torch.zeros(2, requires_grad=True)
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, -2.0])
        >>> r = optimise([w], lambda step: ((x @ w - y) ** 2).sum(), 300, lr=0.1, device=torch.device("cpu"))
        >>> [round(v, 2) for v in w.tolist()]
        [1.0, -2.0]
    """
    opt = torch.optim.Adam(params, lr=lr)
    resume = Path(work_dir) / "resume_fit.pt" if work_dir is not None else None
    start, losses, train_time = 0, [], 0.0
    if resume is not None and resume.exists():
        # tensors, numbers and lists only: never unpickle code from a results folder
        ck = torch.load(resume, weights_only=True)
        with torch.no_grad():
            for p, v in zip(params, ck["params"]):
                p.copy_(v)
        opt.load_state_dict(ck["opt"])
        start, losses, train_time = int(ck["step"]), list(ck["losses"]), float(ck["train_time"])
        print(f"[{desc}] resumed at step {start}", file=sys.stderr)
    mem = MemoryMeter(device)
    bar = tqdm(total=steps, initial=start, desc=desc, unit="step", leave=False, mininterval=0.5,
               disable=not live_bar())
    lines = ProgressLines.enabled()
    acc, cnt = torch.zeros((), device=device), 0
    t0 = time.perf_counter()
    for step in range(start, steps):
        with _autocast(device, precision):
            loss = loss_at(step)
        if not torch.isfinite(loss):
            raise CellFailed(f"[{desc}] loss became {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
        acc += loss.detach().float()
        cnt += 1
        bar.update(1)
        if lines and progress.due():
            now, done = time.perf_counter(), step + 1 - start
            recent = (acc / cnt).item() if cnt else (losses[-1] if losses else None)
            progress.emit(desc, f"step {step + 1}/{steps}", recent, None, (now - t0) / done * (steps - step - 1))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            losses.append((acc / cnt).item())  # one host sync per logging interval
            acc.zero_()
            cnt = 0
            mem.sample()
            if on_log is not None:
                on_log(step + 1, {"loss/total": losses[-1]})
        if resume is not None and (step + 1) % save_every == 0 and step + 1 < steps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            ck = {"params": [p.detach().cpu() for p in params], "opt": opt.state_dict(), "step": step + 1,
                  "losses": losses, "train_time": train_time + time.perf_counter() - t0}
            with atomic_write(resume) as tmp:
                torch.save(ck, tmp)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time += time.perf_counter() - t0
    bar.close()
    if resume is not None:
        resume.unlink(missing_ok=True)
    done = max(1, steps)
    return FitResult(losses, {"steps": steps, "train_time_s": train_time, "step_time_ms": 1000 * train_time / done,
                              "optimised_params": sum(p.numel() for p in params), "device": str(device),
                              "precision": precision, **mem.report()})
