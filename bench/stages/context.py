"""What stages work on and produce: a loaded suite (:class:`SuiteContext`), a stage output on disk
(:class:`Checkpoint`), what a stage returns (:class:`Outcome`) and the run's log of what it reused and computed
(:class:`StageLog`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.backbones import Preprocessor, build_backbone
from bench.config import SuiteConfig, TaskConfig, TrainConfig
from bench.data.base import SuiteData, load_suite_data
from bench.encode import encode_suite
from bench.engine import Data
from bench.stages.keys import weights_hash
from bench.store import Store


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
class StageLog:
    """The stages one run served from the store (``reused``) and computed (``computed``), as ``stage/key`` in
    order: what a record counts, what ``force=true`` recomputes once per run, what a search forgets."""

    reused: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)


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
