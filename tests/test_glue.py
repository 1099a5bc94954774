"""The GLUE loader on small parquet files in the nyu-mll/glue schema (hub layout), written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.config import DataSpec, SplitConfig, SuiteConfig, TaskConfig
from bench.data import glue
from bench.data.base import MissingData, load_suite_data
from bench.errors import BenchError
from bench.tasks import task_kind

pytestmark = pytest.mark.integration

SUITE = Path(__file__).resolve().parent.parent / "suites" / "glue.yaml"


def _write(root: Path, task: str, split: str, rows: dict) -> None:
    (root / task).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(root / task / f"{split}-00000-of-00001.parquet")


def _pairs(n: int, a: str, b: str, labels) -> dict:
    return {a: [f"{a} number {i}" for i in range(n)], b: [f"{b} number {i}" for i in range(n)],
            "label": list(labels), "idx": list(range(n))}


@pytest.fixture
def glue_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    _write(tmp_path, "rte", "train", _pairs(40, "sentence1", "sentence2", np.arange(40) % 2))
    _write(tmp_path, "rte", "validation", _pairs(10, "sentence1", "sentence2", np.arange(10) % 2))
    _write(tmp_path, "rte", "test", _pairs(5, "sentence1", "sentence2", [-1] * 5))  # hidden labels: never read
    stsb = {"train": rng.uniform(0, 5, 40).astype(np.float32), "validation": np.float32([0.0, 2.5, 3.8, 5.0])}
    for split, y in stsb.items():
        _write(tmp_path, "stsb", split, _pairs(len(y), "sentence1", "sentence2", y))
    _write(tmp_path, "mnli", "train", _pairs(60, "premise", "hypothesis", np.arange(60) % 3))
    _write(tmp_path, "mnli", "validation_matched", _pairs(9, "premise", "hypothesis", np.arange(9) % 3))
    _write(tmp_path, "mnli", "validation_mismatched", _pairs(6, "premise", "hypothesis", [2, 1, 0, 0, 1, 2]))
    for split, n in (("train", 40), ("validation", 8)):
        _write(tmp_path, "cola", split, {"sentence": [f"s{i}" for i in range(n)], "label": np.arange(n) % 2,
                                         "idx": range(n)})
    return tmp_path


def _task(name: str, **kw) -> TaskConfig:
    kw.setdefault("target", "classification")
    kw.setdefault("num_classes", 2 if kw["target"] == "classification" else None)
    return TaskConfig(name=name, input=kw.pop("input", "text_pair"), **kw)


def _load(name: str, glue_dir: Path, **kw):
    return glue.glue(DataSpec(source="glue", options={"task": name, "data_dir": str(glue_dir)}), [_task(name, **kw)],
                     SplitConfig())


def test_pair_task_dev_set_becomes_test(glue_dir):
    out = _load("rte", glue_dir)
    assert set(out) == {"train", "test"}  # validation is carved from train by load_suite_data
    assert len(out["train"]) == 40 and len(out["test"]) == 10
    assert out["train"].inputs[3] == ("sentence1 number 3", "sentence2 number 3")
    assert out["test"].targets["rte"].dtype == np.int64


def test_stsb_is_a_float_regression_target(glue_dir):
    out = _load("stsb", glue_dir, target="regression")
    y = out["test"].targets["stsb"]
    assert y.dtype == np.float32 and y.tolist() == [0.0, 2.5, pytest.approx(3.8), 5.0]


def test_mnli_has_matched_and_mismatched_test_sets(glue_dir):
    out = _load("mnli", glue_dir, num_classes=3)
    assert set(out) == {"train", "test", "test_mismatched"}
    assert len(out["test"]) == 9 and out["test_mismatched"].targets["mnli"].tolist() == [2, 1, 0, 0, 1, 2]


def test_single_sentence_task_and_task_folder_as_path(glue_dir):
    out = glue.glue(DataSpec(source="glue", options={"path": str(glue_dir / "cola")}), [_task("cola", input="text")],
                    SplitConfig())
    assert out["train"].inputs[:2] == ["s0", "s1"]


def test_glue_suite_file_loads_a_subset_with_carved_validation(glue_dir):
    raw = yaml.safe_load(SUITE.read_text())
    raw["tasks"] = [t for t in raw["tasks"] if t["name"] in ("rte", "stsb", "mnli", "cola")]
    for t in raw["tasks"]:
        t["data"]["options"]["data_dir"] = str(glue_dir)  # what `bench run suite=glue data_dir=...` sets
    suite = SuiteConfig(**raw)
    data = load_suite_data(suite)
    rte = data.splits["rte"]
    assert {k: len(v) for k, v in rte.items()} == {"train": 36, "validation": 4, "test": 10}
    assert set(data.splits["mnli"]) == {"train", "validation", "test", "test_mismatched"}
    assert len(data.splits["stsb"]["validation"]) == 4 and data.splits["stsb"]["test"].targets["stsb"][-1] == 5.0
    assert load_suite_data(suite).fingerprint == data.fingerprint


def test_glue_suite_metrics_follow_the_glue_conventions():
    from bench import metrics

    suite = SuiteConfig(**yaml.safe_load(SUITE.read_text()))
    assert suite.backbone.name == "bert-base-uncased" and len(suite.tasks) == 8
    want = {"cola": ["mcc"], "sst2": ["accuracy"], "mrpc": ["f1", "accuracy"], "stsb": ["pearson", "spearman"],
            "qqp": ["f1", "accuracy"], "mnli": ["accuracy"], "qnli": ["accuracy"], "rte": ["accuracy"]}
    assert {t.name: task_kind(t).metric_names for t in suite.tasks} == want
    assert suite.task("stsb").target == "regression"
    for names in want.values():
        for n in names:
            metrics.direction(n)  # every name is a registered metric
    # MCC by hand: y=[1,1,0,0], p=[1,0,0,0]: TP=1 FN=1 TN=2 FP=0 -> (1*2 - 0*1)/sqrt(1*2*2*3) = 2/sqrt(12)
    got = metrics.compute(["mcc"], np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))["mcc"]
    assert got == pytest.approx(2 / np.sqrt(12))


def test_no_hub_and_no_local_copy_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv(glue.ENV_DIR, raising=False)
    monkeypatch.setattr(glue, "hub_reachable", lambda: False)
    with pytest.raises(MissingData) as err:
        glue.glue(DataSpec(source="glue", options={"task": "rte"}), [_task("rte")], SplitConfig())
    msg = str(err.value)
    assert "\n" not in msg and "data_dir=" in msg and "rte/train-*.parquet" in msg


def test_hub_reachable_honours_offline_env(monkeypatch):
    glue.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert glue.hub_reachable() is False
    glue.hub_reachable.cache_clear()


def test_bad_local_files_name_the_file_and_the_fix(glue_dir, tmp_path):
    with pytest.raises(MissingData, match=r"no .*qnli/train-\*\.parquet"):
        _load("qnli", glue_dir)
    _write(glue_dir, "qqp", "train", {"q1": ["a"], "q2": ["b"], "label": [0]})
    _write(glue_dir, "qqp", "validation", {"q1": ["a"], "q2": ["b"], "label": [0]})
    with pytest.raises(BenchError, match="missing column.*question1, question2.*available: q1, q2, label"):
        _load("qqp", glue_dir)
    with pytest.raises(BenchError, match="unknown GLUE task 'rtee'.*did you mean 'rte'"):
        _load("rtee", glue_dir)
