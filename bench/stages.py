"""The four stages strategies are made of: ``finetune``, ``fuse``, ``joint``, ``evaluate`` (plus ``init``, θ0).

Each stage is cached in the store under a hash of everything that changes its output (its config, the keys of its
inputs, the data fingerprint, the content hash of the pre-trained weights, the seed, the stage's implementation
version), so ``separate`` and ``fuse_then_joint`` share their fine-tunes and a fusion-weight search re-fuses cached
checkpoints instead of re-training them. Every stage that evaluates keeps its per-example predictions
(``predictions.npz``) and every ``stage.json`` records the code and library versions that produced it.

Seeds are *paired*: seed s gives every joint training the same head initialisation and batch order whatever its
weighting, so two strategies differ at one seed only by what they do differently.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import checkpoint as C
from bench.backbones import Preprocessor, build_backbone
from bench.config import SPEED_KNOBS, SuiteConfig, TaskConfig, TrainConfig
from bench.data.base import SuiteData, load_suite_data
from bench.encode import encode_suite
from bench.engine import (
    LEGACY_RESUME_FILE,
    RESUME_FILE,
    Data,
    FitResult,
    Trainer,
    evaluate,
    make_feeder,
    optimise,
    resolve_device,
    seed_everything,
)
from bench.errors import BenchError
from bench.model import MultiTaskModel
from bench.record import Row
from bench.store import STAGE_MARKER, Store, atomic_write, content_hash, now_iso, provenance, read_json, write_json
from bench.track.base import Tracking, track_stage
from bench.weighting import build_weighting

# Bump a stage's number when its semantics change, so old cache entries are not reused (and records say which
# implementation made each stage). 2: paired seeds, kept predictions, matched budgets, weights hash in init's key.
STAGE_VERSIONS = {"init": 2, "finetune": 2, "fuse": 2, "joint": 2, "evaluate": 2}
STAGE_VERSION = max(STAGE_VERSIONS.values())  # part of a cell's hash
PREDICTIONS = "predictions.npz"
_NOT_IN_KEY = {*SPEED_KNOBS, "eval_batch_size", "device"}  # changes speed or placement, not the result


@dataclass(frozen=True)
class Checkpoint:
    """A stage output on disk: a backbone and the heads of ``tasks``."""

    stage: str
    key: str
    path: Path
    tasks: tuple[str, ...]


@dataclass
class Outcome:
    """What a stage produced: its checkpoint (if any) and its ``stage.json`` (metrics, telemetry, trajectories)."""

    ckpt: Checkpoint | None
    info: dict[str, Any]
    reused: bool = False


@dataclass
class SuiteContext:
    """A loaded suite: config, fixed data, encoded tensors and the pristine backbone (copied for every model)."""

    suite: SuiteConfig
    data: SuiteData
    pre: Preprocessor
    template: torch.nn.Module
    encoded: Data
    train: TrainConfig
    tasks: list[TaskConfig] = field(default_factory=list)
    sample: Any = None  # a few raw training inputs: the factory sizes the backbone from them
    weights_hash: str = ""  # content hash of the backbone's weights as built (pre-trained files or seeded init)

    @classmethod
    def load(cls, suite: SuiteConfig, store: Store | None = None) -> SuiteContext:
        data = load_suite_data(suite)
        tasks = [suite.task(n) for n in data.task_names]
        first = data.splits[tasks[0].name]["train"]
        sample = first.inputs[:8]
        torch.manual_seed(0)  # a randomly initialised template is then the same in every process (and its hash)
        template, pre = build_backbone(suite.backbone, tasks[0].input, sample)
        cache = store.cache_dir if store is not None else None
        encoded = encode_suite(suite, data, pre, suite.train, cache)
        return cls(suite, data, pre, template, encoded, suite.train, tasks, sample, weights_hash(template))

    def task(self, name: str) -> TaskConfig:
        return self.suite.task(name)


def _train_key(train: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in train.model_dump().items() if k not in _NOT_IN_KEY}


def frozen_names(backbone: torch.nn.Module, freeze: str | list[str] | None) -> set[str]:
    """The backbone parameters a ``freeze=`` spec names: ``"backbone"`` (all of them: a linear probe), or
    ``fnmatch`` patterns over parameter names (``"embeddings.*"``, ``["encoder.layer.[0-5].*"]``). A pattern that
    matches nothing is a one-line error (a typo must not silently train everything)."""
    import fnmatch

    if not freeze:
        return set()
    names = [n for n, _ in backbone.named_parameters()]
    if freeze == "backbone":
        return set(names)
    out: set[str] = set()
    for pattern in [freeze] if isinstance(freeze, str) else list(freeze):
        hits = fnmatch.filter(names, str(pattern))
        if not hits:
            raise BenchError(f"freeze={pattern!r} matches no backbone parameter; give 'backbone' or a pattern "
                             f"such as {names[0].split('.')[0]}.* (parameters: {', '.join(names[:4])}, ...)")
        out.update(hits)
    return out


def _freeze(model: MultiTaskModel, names: set[str]) -> None:
    for name, p in model.backbone.named_parameters():
        if name in names:
            p.requires_grad_(False)


def _plugin_source(cls: type) -> str:
    from bench.strategy import plugin_source  # the strategy room imports this one

    return plugin_source(cls)


def weights_hash(module: torch.nn.Module) -> str:
    """A content hash of a module's parameters and buffers (names, shapes, dtypes, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        # flattened first: 0-dim buffers (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_predictions(folder: Path, kept: dict[str, dict[str, dict[str, np.ndarray]]]) -> dict[str, list[str]]:
    """Write (or extend) ``folder/predictions.npz`` with ``kept[split][task] = {pred, target, id}``; returns which
    splits and tasks the file holds."""
    path = folder / PREDICTIONS
    arrays: dict[str, np.ndarray] = {}
    if path.exists():
        with np.load(path) as old:
            arrays.update({k: old[k] for k in old.files})
    for split, per_task in kept.items():
        for task, parts in per_task.items():
            for part, values in parts.items():
                arrays[f"{split}/{task}/{part}"] = values
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    held: dict[str, list[str]] = {}
    for k in sorted(arrays):
        split, task, _ = k.split("/")
        if task not in held.setdefault(split, []):
            held[split].append(task)
    return held


class Batches(Sequence[dict[str, Any]]):
    """One task's split as a sequence of batches on a device: ``{"inputs": {...}, "targets": {task: tensor}}``
    (on a single-input suite the targets of every task that labels these inputs).

    ``len()`` is one pass; ``batches[i]`` for any ``i >= 0`` is batch ``i mod len`` of pass ``i // len``, and with
    ``shuffle`` every pass has its own seeded order, so ``batches[step]`` is a pure function of ``step`` (what a
    resumable loop needs). ``limit`` keeps the first ``limit`` examples of the split's fixed order.
    """

    def __init__(self, data: Data, collate, task: str, split: str, batch_size: int, device: torch.device,
                 shuffle: bool, limit: int | None, seed: int):
        self.es = data[task][split]
        self.task, self.split, self.collate, self.device = task, split, collate, device
        self.n = min(len(self.es), limit) if limit else len(self.es)
        self.bs, self.shuffle, self.seed = max(1, min(batch_size, self.n)), shuffle, seed
        self._order: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return math.ceil(self.n / self.bs)

    def _pass_order(self, p: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        if self._order is None or self._order[0] != p:
            self._order = (p, np.random.default_rng([self.seed, p]).permutation(self.n))
        return self._order[1]

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        p, j = divmod(int(i), len(self))
        idx = self._pass_order(p)[j * self.bs:(j + 1) * self.bs]
        x = self.collate(self.es.encoded, idx)
        rows = torch.as_tensor(idx)
        return {"inputs": {k: v.to(self.device) for k, v in x.items()},
                "targets": {t: y[rows].to(self.device) for t, y in self.es.targets.items()}}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]


class Stages:
    """The stage functions a strategy composes, bound to one suite, store and seed."""

    def __init__(self, ctx: SuiteContext, store: Store, seed: int, force: bool = False,
                 eval_splits: tuple[str, ...] | None = None, on_epoch=None, trackers: list[str] | None = None,
                 cell: str = "", label: str = "", config: dict[str, Any] | None = None):
        """``eval_splits``: the splits stages evaluate; by default every split the data has besides train
        (validation, test, and extra ones such as MNLI's ``test_mismatched``); a search passes ("validation",) so
        test is never read. ``on_epoch(epoch, validation_score)``: called after every training epoch (a search
        prunes from here). ``trackers``: names from :func:`bench.track.trackers_from`; every stage computed here
        (not read from the store) is logged to them, grouped by ``cell`` (its hash), ``label`` and the seed, with
        ``config`` (the cell's resolved configuration). Trackers are not in any key and change no result."""
        self.ctx, self.store, self.seed, self.force = ctx, store, seed, force
        if eval_splits is None:
            present = {s for per_task in ctx.encoded.values() for s in per_task if s != "train"}
            eval_splits = ("validation", "test", *sorted(present - {"validation", "test"}))
        self.eval_splits = tuple(eval_splits)
        self.on_epoch = on_epoch
        self.tracking = Tracking(trackers, suite=ctx.suite.name, root=store.root, seed=seed, cell=cell, label=label,
                                 config={"suite": ctx.suite.model_dump(mode="json"), **(config or {})}) \
            if trackers else None
        self.source = ""  # the source hash of the plug-in strategy composing these stages (set by the runner)
        #: a search trial's stages: a strategy may evaluate in memory what it would otherwise store (its result is
        #: thrown away once scored)
        self.scratch = False

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.ctx.tasks]

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
        return self._run(name, key, tasks, compute, version)

    def model(self, ckpt: Checkpoint | None = None, tasks: list[str] | None = None) -> MultiTaskModel:
        """A :class:`MultiTaskModel` with ``ckpt``'s backbone (θ0 when None) and the heads of ``tasks`` (default:
        ``ckpt``'s tasks; a task whose head the checkpoint lacks gets a seeded fresh one), on the CPU."""
        tasks = list(tasks if tasks is not None else (ckpt.tasks if ckpt is not None else self.task_names))
        return self._model(tasks, ckpt or self.init(), self._sub_seed("model", *tasks))

    def batches(self, task: str, split: str, batch_size: int | None = None, shuffle: bool = False,
                limit: int | None = None, seed: int = 0) -> Batches:
        """Batches of ``task``'s ``split`` (inputs and the task's targets) on the run's device; see
        :class:`Batches`. Never pass ``split="test"`` to anything that selects or fits."""
        if split not in self.ctx.encoded[task]:
            raise BenchError(f"task {task!r} has no split {split!r}; it has {sorted(self.ctx.encoded[task])}")
        return Batches(self.ctx.encoded, self.ctx.pre.collate, task, split, batch_size or self.ctx.train.batch_size,
                       self.device, shuffle, limit, self._sub_seed("batches", task, split, str(seed)))

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

    # -- cache plumbing ----------------------------------------------------------------------------------------
    def _run(self, stage: str, key_obj: dict[str, Any], tasks: tuple[str, ...], compute,
             version: int | None = None, model_at: Checkpoint | None = None) -> Outcome:
        """``model_at``: where the stage's model lives when not in its own folder (an evaluate stage's input), for
        evaluating the splits a cached stage lacks."""
        version = STAGE_VERSIONS.get(stage, STAGE_VERSION) if version is None else version
        key = content_hash({"stage": stage, "v": version, **key_obj})
        folder = self.store.stage_dir(stage, key)
        ckpt = Checkpoint(stage, key, folder, tasks)
        # force=true recomputes a stage once per run: a fine-tune that separate just retrained serves fuse_then_joint
        fresh = f"{stage}/{key}" in self.store.computed
        reusable = lambda: self.store.done(folder) and (not self.force or fresh)
        if not reusable():
            with self.store.lock(folder):
                if not reusable():  # else another process finished it while we waited
                    return Outcome(ckpt, self._compute(stage, key, key_obj, tasks, folder, compute, version))
        self.store.reused.append(f"{stage}/{key}")
        return self._complete(Outcome(ckpt, read_json(folder / STAGE_MARKER), reused=True), model_at)

    def discard(self, ckpt: Checkpoint) -> None:
        """Delete a finished stage's files (a later request recomputes it). Waits for anyone computing it."""
        with self.store.lock(ckpt.path):
            Store.reset(ckpt.path)

    def _compute(self, stage, key, key_obj, tasks, folder: Path, compute, version: int) -> dict[str, Any]:
        """Run ``compute`` into ``folder`` (locked by the caller) and write the completion marker last."""
        if self.force and self.store.done(folder):
            Store.reset(folder)
        with track_stage(self.tracking, stage, key, key_obj, tasks) as run:  # a no-op without trackers
            t0 = time.perf_counter()
            info = compute(folder)
            info.setdefault("telemetry", {})["wall_time_s"] = time.perf_counter() - t0
            run.finish(info)
        info.update({"stage": stage, "key": key, "key_inputs": key_obj, "tasks": list(tasks), "seed": self.seed,
                     "created": now_iso(),
                     "provenance": {**provenance(), "impl_version": version}})
        for name in (RESUME_FILE, LEGACY_RESUME_FILE):
            (folder / name).unlink(missing_ok=True)
        write_json(folder / STAGE_MARKER, info)
        self.store.computed.append(f"{stage}/{key}")
        return info

    def _complete(self, out: Outcome, model_at: Checkpoint | None = None) -> Outcome:
        """A cached stage evaluated on fewer splits than asked (e.g. made by a search, which never reads test):
        evaluate the missing splits now (the model in ``model_at``, default the stage's own folder) and keep
        them with the stage."""
        if "metrics" not in out.info or out.ckpt is None:
            return out
        missing = [s for s in self.eval_splits if s not in out.info["metrics"]]
        if not missing:
            return out
        metrics, _, kept = self._evaluate_ckpt(model_at or out.ckpt, missing)
        with self.store.lock(out.ckpt.path):
            info = read_json(out.ckpt.path / STAGE_MARKER)
            info["metrics"].update(metrics)
            info["predictions"] = save_predictions(out.ckpt.path, kept)
            write_json(out.ckpt.path / STAGE_MARKER, info)
        return Outcome(out.ckpt, info, reused=True)

    def _evaluate_ckpt(self, ckpt: Checkpoint, splits) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
        tasks = list(ckpt.tasks)
        model = self._model(tasks, ckpt, self._sub_seed("eval"))
        device = self.device
        model.to(device)
        cfgs = [self.ctx.task(t) for t in tasks]
        return self._evaluate_splits(model, cfgs, splits, device)

    def _evaluate_splits(self, model: MultiTaskModel, cfgs: list[TaskConfig], splits, device,
                         ) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
        """Metrics per split, the evaluation throughput over all of them (samples/s; tokens/s for text), and the
        per-example predictions ``[split][task] = {pred, target, id}``."""
        train = self.ctx.train
        t0 = time.perf_counter()
        metrics, kept, n = {}, {}, 0
        with make_feeder(self.ctx.encoded, self.ctx.pre.collate, device, train.num_workers) as feeder:
            for split in splits:
                kept[split] = {}
                metrics[split], k = evaluate(model, cfgs, self.ctx.encoded, split, train.eval_batch_size, device,
                                             train.precision, feeder, keep=kept[split])
                n += k
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = max(time.perf_counter() - t0, 1e-9)
        rate = {"eval_samples_per_s": n / seconds}
        lengths = [self.ctx.encoded[t.name][s].lengths for t in cfgs for s in splits if s in self.ctx.encoded[t.name]]
        if lengths and all(x is not None for x in lengths):
            rate["eval_tokens_per_s"] = sum(int(x.sum()) for x in lengths) / seconds
        return metrics, rate, kept

    def _model(self, tasks: list[str], init: Checkpoint | None, seed: int) -> MultiTaskModel:
        seed_everything(seed)  # heads (and random backbones) start from the same weights for the same seed
        backbone = copy.deepcopy(self.ctx.template)
        model = MultiTaskModel(backbone, [self.ctx.task(t) for t in tasks], dropout=self.ctx.train.dropout)
        if init is not None:
            backbone.load_state_dict(C.load_state(init.path / C.BACKBONE_FILE))
            heads_file = init.path / C.HEADS_FILE
            if heads_file.exists():
                heads = C.load_state(heads_file)
                own = {k: v for k, v in heads.items() if k.split(".")[0] in tasks}
                model.heads.load_state_dict(own, strict=False)
        return model

    def _sub_seed(self, *parts: str) -> int:
        return zlib.crc32("/".join([str(self.seed), *parts]).encode()) % 2**31

    def _train(self, folder: Path, model: MultiTaskModel, tasks: list[str], weighting: str,
               weighting_params: dict[str, Any], seed: int, desc: str, train: TrainConfig | None = None,
               max_steps: int | None = None) -> dict[str, Any]:
        cfgs = [self.ctx.task(t) for t in tasks]
        w = build_weighting(weighting, cfgs, weighting_params)
        trainer = Trainer(model, cfgs, self.ctx.encoded, w, train or self.ctx.train, seed, self.ctx.pre.collate,
                          self.ctx.suite.kind == "single_input", work_dir=folder, desc=desc,
                          on_epoch=self.on_epoch, max_steps=max_steps,
                          on_log=self.tracking.log if self.tracking is not None else None)
        res = trainer.fit()
        metrics, rate, kept = self._evaluate_splits(model, cfgs, self.eval_splits, trainer.device)
        res.telemetry.update(rate)
        C.save_model(model.cpu(), folder)
        return {"metrics": metrics, "best_epoch": res.best_epoch, "history": res.history,
                "trajectories": res.trajectories, "weights_label": w.weights_label, "telemetry": res.telemetry,
                "predictions": save_predictions(folder, kept)}

    def _budget_steps(self, tasks: list[str], share: float, per_step_tasks: int, epochs: int) -> int | None:
        """Optimiser steps of a training stage under ``budget.match`` (None: train ``epochs`` epochs as usual).

        The reference is what naive MTL spends: one joint training over every task for ``train.epochs`` epochs,
        R steps of one batch. A stage on ``tasks`` receives ``share`` × R × the tasks' part of the data (their share
        of the training examples on multi-input suites, |tasks|/T on single-input ones), in samples (R × batch) or in
        steps, so T fine-tunes at share 1 add up to the reference, up to one batch per stage. ``per_step_tasks``:
        batches drawn per step (T when every task is in every step). A stage whose matched budget equals its own
        natural one keeps its natural cache entry."""
        match = self.ctx.suite.budget.match
        if match == "none":
            return None
        cfg, enc, b = self.ctx.train, self.ctx.encoded, self.ctx.train.batch_size
        sizes = {t: len(enc[t]["train"]) for t in self.task_names}
        if self.ctx.suite.kind == "single_input":
            total, part, per_step = sizes[self.task_names[0]], len(tasks) / len(sizes), 1
            natural = epochs * math.ceil(total / b)
        else:
            total, part, per_step = sum(sizes.values()), sum(sizes[t] for t in tasks) / sum(sizes.values()), \
                per_step_tasks
            natural = epochs * math.ceil(sum(sizes[t] for t in tasks) / (b * per_step))
        reference = cfg.epochs * math.ceil(total / b)  # steps of one batch each
        steps = max(1, round(share * part * reference / (per_step if match == "samples" else 1)))
        return None if steps == natural else steps

    # -- stages ------------------------------------------------------------------------------------------------
    def init(self) -> Checkpoint:
        """θ0: the backbone every fine-tune and joint run starts from (seeded for randomly initialised ones)."""

        def compute(folder: Path) -> dict[str, Any]:
            # build afresh under the seed: a randomly initialised backbone must not depend on what ran before
            seed_everything(self._sub_seed("init"))
            backbone, _ = build_backbone(self.ctx.suite.backbone, self.ctx.tasks[0].input, self.ctx.sample)
            model = MultiTaskModel(backbone, [])
            C.save_model(model, folder)
            return {"telemetry": {"trainable_params": sum(p.numel() for p in model.backbone.parameters())}}

        key = {"backbone": self.ctx.suite.backbone.model_dump(), "seed": self.seed,
               "input": self.ctx.tasks[0].input, "weights": self.ctx.weights_hash}
        out = self._run("init", key, (), compute)
        assert out.ckpt is not None
        return out.ckpt

    def finetune(self, task: str, init: Checkpoint | None = None, share: float = 1.0,
                 train: dict[str, Any] | None = None, freeze: str | list[str] | None = None) -> Outcome:
        """Fine-tune one copy of ``init`` (θ0 by default) on ``task`` alone.

        ``share``: the part of the reference budget this fine-tune may spend under ``budget.match`` (ignored
        otherwise; see :meth:`_budget_steps`). ``train``: this stage's own ``train.*`` settings over the suite's
        (e.g. ``{"epochs": 1, "lr": 1e-3}``); ``freeze``: backbone parameters left untouched (see
        :func:`frozen_names`), e.g. ``"backbone"`` for a linear probe. Both are part of the stage's key."""
        init = init or self.init()
        self.ctx.task(task)
        cfg = self._train_config(train, "finetune")
        steps = self._budget_steps([task], share, 1, cfg.epochs)
        frozen = frozen_names(self.ctx.template, freeze)

        def compute(folder: Path) -> dict[str, Any]:
            seed = self._sub_seed("finetune", task)
            model = self._model([task], init, seed)
            _freeze(model, frozen)
            return self._train(folder, model, [task], "equal", {}, seed, f"finetune {task} s{self.seed}",
                               train=cfg, max_steps=steps)

        key = {"task": task, "init": init.key, "train": _train_key(cfg),
               "data": self.ctx.data.task_fingerprints[task], "seed": self.seed}
        if steps is not None:
            key["steps"] = steps
        if frozen:
            key["frozen"] = sorted(frozen)
        return self._run("finetune", key, (task,), compute)

    def _train_config(self, train: dict[str, Any] | None, stage: str) -> TrainConfig:
        """The suite's ``train`` settings with a stage's own overrides, validated (one line on a bad key)."""
        if not train:
            return self.ctx.train
        from bench.config import validated

        return validated(TrainConfig, {**self.ctx.train.model_dump(), **train}, f"{stage}(train=...)")

    def fuse(self, parts: list[Checkpoint], method: str = "mean", params: dict[str, Any] | None = None,
             base: Checkpoint | None = None) -> Outcome:
        """Fuse the backbones of ``parts`` (θ0 = ``base``); each task keeps the head from its own checkpoint.

        A streaming method (:class:`~bench.fusion.FusionMethod`) fuses the files tensor by tensor; a model-based one
        (:class:`~bench.fusion.ModelFusion`: AdaMerging, Fisher, RegMean, ...) gets a
        :class:`~bench.fusion.FusionJob` and may read data, so its key also holds the data and the seed."""
        from bench.fusion import FusionJob, ModelFusion, build_fusion, fuse_files

        base = base or self.init()
        params = dict(params or {})
        fusion = build_fusion(method, params, len(parts))
        tasks = tuple(t for p in parts for t in p.tasks)
        model_based = isinstance(fusion, ModelFusion)
        if model_based:
            fusion.check(self.ctx.template, [self.ctx.task(t) for t in tasks])

        def compute(folder: Path) -> dict[str, Any]:
            folder.mkdir(parents=True, exist_ok=True)
            described = fusion.describe()
            summary = {"method": described.pop("method"), "params": described,
                       "transductive": bool(getattr(fusion.params, "transductive", False))}
            if model_based:
                t0 = time.perf_counter()
                job = FusionJob(self, parts, base, folder)
                res = fusion.fuse_model(job)
                C.save_state(job.complete(res.state), folder / C.BACKBONE_FILE, sorted(job.buffers))
                stats = {**res.telemetry, "seconds": time.perf_counter() - t0}
                summary.update(res.info)
            else:
                stats = fuse_files(base.path / C.BACKBONE_FILE, [p.path / C.BACKBONE_FILE for p in parts], fusion,
                                   folder / C.BACKBONE_FILE)
            C.save_state(self._heads_of(parts), folder / C.HEADS_FILE)
            return {"telemetry": {"fusion": stats}, "fusion": summary}

        key = {"parts": [p.key for p in parts], "base": base.key, "method": method, "params": params}
        source = _plugin_source(type(fusion))
        if source:  # a fusion method from a plug-in folder: editing it invalidates what it fused
            key["fusion_source"] = source
        if model_based:  # what the data it reads depends on
            key.update({"data": {t: self.ctx.data.task_fingerprints[t] for t in tasks}, "seed": self.seed,
                        "split": fusion.split, "precision": self.ctx.train.precision,
                        "samples": [self.ctx.train.max_train_samples, self.ctx.train.max_eval_samples]})
        return self._run("fuse", key, tasks, compute)

    def fused_model(self, parts: list[Checkpoint], method: str = "mean", params: dict[str, Any] | None = None,
                    base: Checkpoint | None = None) -> tuple[MultiTaskModel, dict[str, Any]]:
        """A streaming fusion of ``parts`` as a model in memory, nothing written: what a fusion-weight search
        trial evaluates and throws away. Model-based methods go through :meth:`fuse` (a cached stage)."""
        from bench.fusion import build_fusion
        from bench.fusion.base import fuse_state

        base = base or self.init()
        fusion = build_fusion(method, dict(params or {}), len(parts))
        tasks = [t for p in parts for t in p.tasks]
        model = self._model(tasks, None, self._sub_seed("eval"))
        with torch.no_grad():  # fused straight into the model's own tensors: no state dict to copy
            _, _, stats = fuse_state(base.path / C.BACKBONE_FILE, [p.path / C.BACKBONE_FILE for p in parts], fusion,
                                     into=model.backbone.state_dict(keep_vars=False))
        model.heads.load_state_dict(self._heads_of(parts), strict=False)
        return model, stats

    def evaluate_model(self, model: MultiTaskModel, splits: tuple[str, ...] | None = None,
                       ) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
        """``(metrics, throughput, predictions)`` of an in-memory model on ``splits`` (default: this run's
        evaluation splits), for the tasks it has heads for; nothing is stored."""
        device = self.device
        cfgs = [self.ctx.task(t) for t in model.heads]
        return self._evaluate_splits(model.to(device), cfgs, splits or self.eval_splits, device)

    @staticmethod
    def _heads_of(parts: list[Checkpoint]) -> dict[str, torch.Tensor]:
        """Each part's own task heads."""
        heads: dict[str, torch.Tensor] = {}
        for p in parts:
            for k, v in C.load_state(p.path / C.HEADS_FILE).items():
                if k.split(".")[0] in p.tasks:
                    heads[k] = v
        return heads

    def joint(self, init: Checkpoint | None = None, tasks: list[str] | None = None, weighting: str = "equal",
              weighting_params: dict[str, Any] | None = None, share: float = 1.0, sampling: str | None = None,
              epochs: int | None = None, train: dict[str, Any] | None = None,
              freeze: str | list[str] | None = None) -> Outcome:
        """Train every task at once from ``init`` (θ0 by default) with ``weighting``.

        ``sampling`` / ``epochs`` override the suite's ``train.sampling`` / ``train.epochs`` for this stage (the
        controls of a matched comparison); ``train``: any other ``train.*`` settings of this stage (``lr``, ...);
        ``freeze``: backbone parameters left untouched (:func:`frozen_names`); ``share``: the part of the reference
        budget this stage may spend under ``budget.match`` (which then decides the number of steps, and ``epochs``
        is ignored)."""
        init = init or self.init()
        tasks = list(tasks or self.task_names)
        wp = dict(weighting_params or {})
        w = build_weighting(weighting, [self.ctx.task(t) for t in tasks], wp)  # fail before any work
        overrides = {**(train or {}), **{k: v for k, v in (("sampling", sampling), ("epochs", epochs))
                                         if v is not None}}
        train_cfg = self._train_config(overrides, "joint")
        all_tasks = w.needs_all_tasks or train_cfg.sampling == "all"
        steps = self._budget_steps(tasks, share, len(tasks) if all_tasks else 1, train_cfg.epochs)
        frozen = frozen_names(self.ctx.template, freeze)

        def compute(folder: Path) -> dict[str, Any]:
            # the weighting's name stays out of the seed: seed s gives every weighting the same heads and batches
            seed = self._sub_seed("joint")
            model = self._model(tasks, init, seed)
            _freeze(model, frozen)
            return self._train(folder, model, tasks, weighting, wp, seed, f"joint[{weighting}] s{self.seed}",
                               train=train_cfg, max_steps=steps)

        key = {"tasks": tasks, "init": init.key, "weighting": weighting, "weighting_params": wp,
               "train": _train_key(train_cfg), "data": {t: self.ctx.data.task_fingerprints[t] for t in tasks},
               "seed": self.seed}
        source = _plugin_source(type(w))
        if source:  # a weighting from a plug-in folder: editing it invalidates what it trained
            key["weighting_source"] = source
        if steps is not None:
            key["steps"] = steps
        if frozen:
            key["frozen"] = sorted(frozen)
        return self._run("joint", key, tuple(tasks), compute)

    def evaluate(self, ckpt: Checkpoint) -> Outcome:
        """Validation and test metrics of a stored model (e.g. the fused one, before joint training)."""

        def compute(folder: Path) -> dict[str, Any]:
            metrics, rate, kept = self._evaluate_ckpt(ckpt, self.eval_splits)
            folder.mkdir(parents=True, exist_ok=True)
            return {"metrics": metrics, "telemetry": rate, "predictions": save_predictions(folder, kept)}

        key = {"ckpt": ckpt.key, "precision": self.ctx.train.precision,
               "max_eval_samples": self.ctx.train.max_eval_samples}
        return self._run("evaluate", key, ckpt.tasks, compute, model_at=ckpt)


def make_row(*outcomes: Outcome, metrics_from: list[Outcome] | None = None) -> Row:
    """A leaderboard row from the stages that produced it.

    Metrics come from ``metrics_from`` (default: every outcome that has metrics, merged per task); telemetry adds up
    wall time and parameters over every stage (a ``separate`` row costs T models), and takes the throughput and peak
    memory of the training stages.
    """
    src = metrics_from if metrics_from is not None else [o for o in outcomes if "metrics" in o.info]
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for o in src:
        for split, per_task in o.info["metrics"].items():
            metrics.setdefault(split, {}).update(per_task)
    trained = [o for o in outcomes if o.info.get("telemetry", {}).get("train_samples")]
    tel: dict[str, Any] = {"wall_time_s": sum(o.info.get("telemetry", {}).get("wall_time_s", 0.0) for o in outcomes)}
    if trained:
        samples = sum(o.info["telemetry"]["train_samples"] for o in trained)
        ttime = sum(o.info["telemetry"]["train_time_s"] for o in trained)

        def steady(t: dict[str, Any]) -> tuple[float, float]:
            """(samples, seconds) of a stage's steps that did not compile (torch.compile's time is not throughput)."""
            if t.get("throughput_excludes_compile"):
                return t["train_samples"] - t["compile_samples"], t["train_time_s"] - t["compile_time_s"]
            return t["train_samples"], t["train_time_s"]

        runs = [steady(o.info["telemetry"]) for o in trained]
        stime = sum(r[1] for r in runs)
        tel.update({
            "train_samples": samples,
            "train_time_s": ttime,
            "train_samples_per_s": sum(r[0] for r in runs) / max(stime, 1e-9),
            "trainable_params": sum(o.info["telemetry"]["trainable_params"] for o in trained),
            "peak_memory_mb": max(o.info["telemetry"]["peak_memory_mb"] for o in trained),
            "memory_kind": trained[0].info["telemetry"]["memory_kind"],
            "device": trained[0].info["telemetry"]["device"],
            "step_time_ms": sum(o.info["telemetry"]["step_time_ms"] * o.info["telemetry"]["steps"] for o in trained)
            / max(1, sum(o.info["telemetry"]["steps"] for o in trained)),
        })
        breakdowns = [o.info["telemetry"].get("step_breakdown_ms") for o in trained]
        if all(breakdowns):  # step-weighted over the training stages, like step_time_ms
            steps = [o.info["telemetry"]["steps"] for o in trained]
            tel["step_breakdown_ms"] = {k: sum(b[k] * n for b, n in zip(breakdowns, steps)) / max(1, sum(steps))
                                        for k in breakdowns[0]}
        reserved = [o.info["telemetry"].get("peak_reserved_mb") for o in trained]
        if all(r is not None for r in reserved):
            tel["peak_reserved_mb"] = max(reserved)
        mfu = [o.info["telemetry"].get("mfu") for o in trained]
        if all(m is not None for m in mfu):  # time-weighted over the training stages
            tel["mfu"] = sum(m * r[1] for m, r in zip(mfu, runs)) / max(stime, 1e-9)
        tok = [o.info["telemetry"].get("train_tokens_per_s") for o in trained]
        if all(tok):
            tel["train_tokens_per_s"] = sum(t * r[1] for t, r in zip(tok, runs)) / max(stime, 1e-9)
        compiled = [o.info["telemetry"] for o in trained if "compile_time_s" in o.info["telemetry"]]
        if compiled:  # reported beside the throughput it is excluded from
            tel["compile_time_s"] = sum(t["compile_time_s"] for t in compiled)
            tel["compile_steps"] = sum(t["compile_steps"] for t in compiled)
    for key in ("eval_samples_per_s", "eval_tokens_per_s"):
        evals = [o.info["telemetry"][key] for o in outcomes if key in o.info.get("telemetry", {})]
        if evals:
            tel[key] = sum(evals) / len(evals)
    tel["stages"] = [{"stage": o.ckpt.stage if o.ckpt else "?", "key": o.ckpt.key if o.ckpt else "?",
                      "reused": o.reused, **{k: v for k, v in o.info.get("telemetry", {}).items()
                                             if k in ("wall_time_s", "train_samples_per_s", "peak_memory_mb")}}
                     for o in outcomes]
    best = {f"{o.ckpt.stage}:{','.join(o.ckpt.tasks)}": o.info["best_epoch"] for o in outcomes
            if o.ckpt and "best_epoch" in o.info}
    with_traj = next((o for o in reversed(outcomes) if o.info.get("trajectories")), None)
    traj = with_traj.info["trajectories"] if with_traj else {}
    stages = [_stage_provenance(o) for o in outcomes if o.ckpt is not None]
    row = {"metrics": metrics, "best_epoch": best, "telemetry": tel, "trajectories": traj,
           "budget": _budget(trained), "predictions": _predictions(src), "stages": stages,
           "code_versions": sorted({s["code_version"] for s in stages})}
    fusion = next((o.info["fusion"] for o in outcomes if o.info.get("fusion")), None)
    if fusion is not None:  # how the row's weights were fused (learned coefficients for the report's heatmap)
        row["fusion"] = fusion
        fits = [o.info["telemetry"]["fusion"]["fit"] for o in outcomes
                if "fit" in o.info.get("telemetry", {}).get("fusion", {})]
        if fits:  # a learned fusion's optimiser steps (on validation data): part of the row's cost, not training
            row["budget"]["fusion_steps"] = sum(int(f["steps"]) for f in fits)
    if with_traj is not None and with_traj.info.get("weights_label"):
        row["weights_label"] = with_traj.info["weights_label"]
    return Row(**row)


def _budget(trained: list[Outcome]) -> dict[str, Any]:
    """What a row's training cost in data and updates, summed over every training stage it used (a ``separate``
    row trains T models; ``fuse_then_joint`` pays for its fine-tunes too)."""
    tels = [o.info["telemetry"] for o in trained]
    return {"train_samples_seen": sum(int(t.get("train_samples", 0)) for t in tels),
            "optimizer_steps": sum(int(t.get("steps", 0)) for t in tels),
            "epochs": sum(float(t.get("epochs", t.get("epochs_run", 0))) for t in tels)}


def _predictions(src: list[Outcome]) -> dict[str, dict[str, str]]:
    """``[split][task]`` -> the predictions file (relative to the suite's store) behind each reported metric; the
    same precedence as the metrics (a later outcome wins)."""
    out: dict[str, dict[str, str]] = {}
    for o in src:
        if o.ckpt is None:
            continue
        for split, tasks in o.info.get("predictions", {}).items():
            for task in tasks:
                out.setdefault(split, {})[task] = f"stages/{o.ckpt.stage}/{o.ckpt.key}/{PREDICTIONS}"
    return out


def _stage_provenance(o: Outcome) -> dict[str, Any]:
    assert o.ckpt is not None
    prov = o.info.get("provenance", {})
    return {"stage": o.ckpt.stage, "key": o.ckpt.key, "reused": o.reused,
            "code_version": prov.get("code_version", "unknown"), "impl_version": prov.get("impl_version"),
            "versions": prov.get("versions", {})}
