"""Partial labels: an example may lack some tasks' labels (-1 for classes, NaN for scores).

The defining property: a task whose labels are missing on half of the examples learns exactly what it learns from
the labelled half alone (losses average over labelled examples only), while the unlabelled examples still train
the other tasks; samples seen are counted per task; a task with no label in a step's batch is absent from that
step for every kind of balancer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.backbones.simple import MLP, ArrayPreprocessor
from bench.config import SplitConfig, SuiteConfig, TaskConfig, TrainConfig
from bench.data.base import load_suite_data
from bench.encode import EncodedSplit
from bench.engine import Trainer
from bench.engine.evaluation import evaluate, make_feeder
from bench.model import MultiTaskModel
from bench.weighting import build_weighting

from .conftest import records, run_cli

TASKS = [TaskConfig(name="a", input="vector", target="classification", num_classes=3),
         TaskConfig(name="b", input="vector", target="regression")]


def _data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = rng.standard_normal((n, 8)).astype(np.float32)
    w = rng.standard_normal(8)
    return x, (x @ w > 0).astype(np.int64) + (x[:, 0] > 1), (x @ w[::-1]).astype(np.float32)


def _train(x, ya, yb, tasks, val, test, batch_size):
    """Train a fresh, identically initialised MLP on (x, ya, yb) full-batch; test metrics and the model."""
    pre = ArrayPreprocessor("partial")
    names = [t.name for t in tasks]

    def enc(xs, a, b):
        return EncodedSplit(pre.encode(xs), {k: torch.as_tensor(v) for k, v in zip(["a", "b"], [a, b])
                                             if k in names}, None)

    data = {"train": enc(x, ya, yb), "validation": enc(*val), "test": enc(*test)}
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(8, 16, 2), tasks)
    cfg = TrainConfig(epochs=6, batch_size=batch_size, lr=1e-2, num_workers=0)
    trainer = Trainer(model, tasks, {t: data for t in names}, build_weighting("equal", tasks), cfg, 0, pre.collate,
                      True)
    result = trainer.fit()
    with make_feeder({t: data for t in names}, pre.collate, torch.device("cpu"), 0) as feeder:
        metrics, _ = evaluate(model, tasks, {t: data for t in names}, "test", 64, torch.device("cpu"), "fp32", feeder)
    return metrics, model, result, trainer


@pytest.mark.parametrize("task", ["a", "b"])
def test_half_the_labels_removed_learns_what_the_labelled_half_alone_learns(task):
    rng = np.random.default_rng(3)
    x, ya, yb = _data(rng, 96)
    val, test = _data(rng, 48), _data(rng, 48)
    labelled = np.sort(rng.permutation(96)[:48])
    missing = np.setdiff1d(np.arange(96), labelled)
    one = [t for t in TASKS if t.name == task]
    holes = (ya.copy(), yb.copy())
    if task == "a":
        holes[0][missing] = -1
    else:
        holes[1][missing] = np.nan
    # full batch: one step per epoch over every example; the loss of the task averages over its labelled half
    partial, m1, _, t1 = _train(x, *holes, one, val, test, batch_size=96)
    alone, m2, _, t2 = _train(x[labelled], ya[labelled], yb[labelled], one, val, test, batch_size=48)
    assert partial[task] == pytest.approx(alone[task], rel=1e-5, abs=1e-6)
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    # samples seen per task: every example of a step is seen, only the labelled ones carried the task's label
    assert t1.state.samples == 6 * 96 and t1.state.task_samples == {task: 6 * 48}
    assert t2.state.task_samples == {task: 6 * 48}


def test_unlabelled_examples_still_train_the_other_task_and_absent_tasks_skip_steps():
    rng = np.random.default_rng(4)
    x, ya, yb = _data(rng, 64)
    val, test = _data(rng, 32), _data(rng, 32)
    yb_holes = yb.copy()
    yb_holes[16:] = np.nan  # b is labelled on the first 16 examples only: many batches of 4 carry no b label
    pre = ArrayPreprocessor("partial")

    def enc(xs, a, b):
        return EncodedSplit(pre.encode(xs), {"a": torch.as_tensor(a), "b": torch.as_tensor(b)}, None)

    data = {"train": enc(x, ya, yb_holes), "validation": enc(*val), "test": enc(*test)}
    for weighting in ("equal", "mgda", "pcgrad", "famo", "gradnorm", "uncertainty"):
        torch.manual_seed(0)
        model = MultiTaskModel(MLP(8, 16, 2), TASKS)
        cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-2, num_workers=0)
        trainer = Trainer(model, TASKS, {"a": data, "b": data}, build_weighting(weighting, TASKS), cfg, 0,
                          pre.collate, True)
        result = trainer.fit()
        assert trainer.state.task_samples["a"] == 2 * 64 and trainer.state.task_samples["b"] == 2 * 16, weighting
        assert np.isfinite(result.history[-1]["score"]), weighting


def test_unlabel_option_removes_a_fixed_fraction_per_split():
    suite = SuiteConfig(name="p", kind="single_input", backbone={"source": "mlp"},
                        data={"source": "synthetic", "options": {"n": 400, "dim": 8, "rank": 2, "seed": 0,
                                                                 "tasks": {"r": {"noise": 0.1}, "c": {"noise": 0.5}},
                                                                 "unlabel": {"c": 0.5, "r": 0.25}}},
                        tasks=[{"name": "r", "label": "r", "input": "vector", "target": "regression"},
                               {"name": "c", "label": "c", "input": "vector", "target": "classification",
                                "num_classes": 2}],
                        split=SplitConfig(seed=7, validation=0.1, test=0.2))
    data = load_suite_data(suite)
    again = load_suite_data(suite)
    assert data.task_fingerprints == again.task_fingerprints
    for split, s in data.splits["c"].items():
        assert (s.targets["c"] == -1).sum() == round(0.5 * len(s)), split
        assert np.isnan(s.targets["r"]).sum() == round(0.25 * len(s)), split
    whole = SuiteConfig(**{**suite.model_dump(), "data": {"source": "synthetic", "options": {
        k: v for k, v in suite.data.options.items() if k != "unlabel"}}})
    full = load_suite_data(whole)
    # the same examples in the same splits: only labels were removed
    for split in ("train", "validation", "test"):
        assert np.array_equal(full.splits["c"][split].inputs, data.splits["c"][split].inputs)
        kept = data.splits["c"][split].targets["c"] >= 0
        assert np.array_equal(full.splits["c"][split].targets["c"][kept], data.splits["c"][split].targets["c"][kept])


@pytest.mark.integration
def test_a_run_with_half_the_labels_reports_samples_seen_per_task(results):
    out = run_cli("run", "suite=synthetic", "strategy=naive_mtl", "unlabel={cls3: 0.5}",
                  "train.epochs=1", f"results_dir={results}")
    assert out.returncode == 0, out.stderr[-2000:]
    by = {r["strategy"]: r for r in records(results)}
    spent = by["naive_mtl"]["rows"]["naive_mtl"]["spent"]
    seen = spent["train_samples_per_task"]
    assert spent["train_samples_seen"] == seen["clean"] and abs(seen["cls3"] - seen["clean"] / 2) <= 0.02 * seen["clean"]
    assert "cls3" in by["naive_mtl"]["rows"]["naive_mtl"]["metrics"]["test"]
