"""Shared test helpers: run the real CLI in-process or as a subprocess on a temporary results folder; test tiers.

Tiers (markers declared in pyproject.toml; the README's test command runs one pytest per tier):

* unmarked: fast units and the docstring examples under ``bench/``;
* ``integration``: trains or runs the CLI in this process on small real data (the synthetic suite, real backbones);
* ``slow``: starts processes (CLI subprocesses, launcher workers, submitit, PostgreSQL), sends signals, builds wheels;
* ``trackers``: needs the tracker packages (``pip install -e '.[trackers]'``), run with the slow tier, which installs
  them. Without them such a test is skipped with the reason, except under ``CI=true``, where it fails.

A test carries at most one tier marker, so that the tiers split the suite with no overlap.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# a small budget: every synthetic cell trains in about a second on 2 cores
FAST = ["suite=synthetic", "train.epochs=2", "train.max_train_samples=400", "report=false"]

os.environ.setdefault("BENCH_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


class Stop(Exception):
    """Raised by :func:`stop_at` to interrupt a training stage, as a kill would, after an epoch's resume file."""


def stop_at(epoch: int):
    """An ``on_epoch`` hook that stops the trainer once ``epoch`` is finished (and saved)."""

    def on_epoch(e, score):
        if e == epoch:
            raise Stop

    return on_epoch


def tiny_trainer(work_dir=None, on_epoch=None, **train):
    """A real Trainer on two 3-class tasks over random 8-d vectors (an MLP): a stage in milliseconds. ``train``
    overrides the TrainConfig (epochs=3, batch_size=16, lr=1e-2, num_workers=0 by default)."""
    import numpy as np

    from bench.backbones.simple import MLP, ArrayPreprocessor
    from bench.config import TaskConfig, TrainConfig
    from bench.encode import EncodedSplit
    from bench.engine import Trainer
    from bench.model import MultiTaskModel
    from bench.weighting import build_weighting

    tasks = [TaskConfig(name=f"t{i}", input="vector", target="classification", num_classes=3) for i in range(2)]
    rng = np.random.default_rng(0)
    pre = ArrayPreprocessor("bench")

    def split(n):
        x = rng.standard_normal((n, 8)).astype(np.float32)
        return EncodedSplit(pre.encode(x), {t.name: torch.as_tensor(rng.integers(0, 3, n)) for t in tasks}, None)

    shared = {"train": split(96), "validation": split(32)}
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(8, 16, 2), tasks)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 16, "lr": 1e-2, "num_workers": 0, **train})
    return Trainer(model, tasks, {t.name: shared for t in tasks}, build_weighting("equal", tasks), cfg, 0,
                   pre.collate, True, work_dir=work_dir, on_epoch=on_epoch)


#: a three-task multi-input suite on the synthetic source (a regression and two classifications of 300-750
#: examples; seconds per strategy): what tests of budgets and task schedules write to a YAML file and run
MULTI = """
name: multi
kind: multi_input
backbone: {source: mlp, options: {hidden: 32, depth: 1}}
tasks:
  - {name: a, input: vector, target: regression, data: {source: synthetic, options: {n: 300, seed: 1, tasks: {a: {noise: 0.1}}}}}
  - {name: b, input: vector, target: classification, num_classes: 3, data: {source: synthetic, options: {n: 450, seed: 2, tasks: {b: {noise: 0.5}}}}}
  - {name: c, input: vector, target: classification, num_classes: 2, data: {source: synthetic, options: {n: 750, seed: 3, tasks: {c: {noise: 0.5}}}}}
train: {epochs: 2, batch_size: 32, lr: 3.0e-3, log_every: 10}
"""


def cli_error(capsys, *args: str) -> str:
    """The one line ``bench run args`` refuses with (exit code 2, no traceback)."""
    from bench.cli import main

    code = main(["run", *args])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = [line for line in captured.err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*/cells/*/*/record.json"))]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def one_thread():
    """Tiny models run far faster on one thread than on two contended ones; the setting is restored afterwards.
    A test module opts in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TIERS = ("integration", "slow", "trackers")
#: the packages of the ``trackers`` extra (pyproject.toml), each a module to find
TRACKER_MODULES = ("tensorboard", "wandb", "mlflow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test in two tiers would run twice in CI (or its tier would be ambiguous): refuse it at collection."""
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid} is marked {' and '.join(tiers)}: give a test one tier marker")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A ``trackers`` test needs every tracker package: skip with the fix locally, fail under CI=true (the tier that
    runs it installed the trackers extra, so a missing package there is a broken install, not a choice)."""
    if item.get_closest_marker("trackers") is None:
        return
    missing = [m for m in TRACKER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"needs {', '.join(missing)}: pip install -e '.[trackers]'"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: the tier that runs tracker tests must install the trackers extra)",
                        pytrace=False)
        pytest.skip(reason)

