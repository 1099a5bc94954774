"""The no-code ``files`` source: tables and image folders from the suite file alone, and its one-line errors.

The worked example in docs/suites.md is executed here as written (its data script and its suite YAML).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench.config import DataSpec, SplitConfig, SuiteConfig, TaskConfig
from bench.data import files
from bench.data.base import MissingData, load_suite_data
from bench.errors import BenchError

DOC = Path(__file__).resolve().parent.parent / "docs" / "suites.md"


def _task(name="t", **kw) -> TaskConfig:
    kw.setdefault("target", "classification")
    if kw["target"] == "classification":
        kw.setdefault("num_classes", 2)
    return TaskConfig(name=name, input=kw.pop("input", "text"), **kw)


def _load(options: dict, task: TaskConfig | None = None):
    return files.files(DataSpec(source="files", options=options), [task or _task()], SplitConfig())


def _doc_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.mark.slow
def test_docs_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "make_data.py").write_text(_doc_blocks("python")[0])
    subprocess.run([sys.executable, "make_data.py"], check=True)
    raw = yaml.safe_load(_doc_blocks("yaml")[0])
    suite = SuiteConfig(**raw)
    data = load_suite_data(suite)
    verdict, similar = data.splits["verdict"], data.splits["similar"]
    assert {k: len(v) for k, v in verdict.items()} == {"train": 86, "validation": 10, "test": 24}
    assert set(np.unique(verdict["train"].targets["verdict"])) == {0, 1}
    assert similar["train"].inputs[0][0].startswith("I bought a ")  # pairs
    assert similar["test"].targets["similar"].dtype == np.float32 and len(similar["test"]) == 30
    assert "bench run suite=reviews" in _doc_blocks("bash")[0]


@pytest.mark.integration
def test_csv_string_labels_map_through_label_names(tmp_path):
    p = tmp_path / "a.csv"
    pd.DataFrame({"review": ["good", "bad", "fine"], "y": ["pos", "neg", "pos"]}).to_csv(p, index=False)
    out = _load({"path": str(p), "text": "review", "label": "y", "label_names": ["neg", "pos"]})
    assert set(out) == {"train"} and out["train"].inputs == ["good", "bad", "fine"]
    assert out["train"].targets["t"].tolist() == [1, 0, 1]


@pytest.mark.integration
def test_undeclared_string_labels_are_numbered_in_sorted_order(tmp_path):
    p = tmp_path / "a.csv"
    pd.DataFrame({"text": ["x", "y", "z"], "label": ["zebra", "ant", "zebra"]}).to_csv(p, index=False)
    assert _load({"path": str(p)})["train"].targets["t"].tolist() == [1, 0, 1]


@pytest.mark.integration
def test_jsonl_pairs_with_scores_and_per_split_files(tmp_path):
    for split in ("train", "test"):
        with open(tmp_path / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps({"a": f"{split} {i}", "b": "other", "score": i / 2}) + "\n" for i in range(4))
    out = _load({"train": str(tmp_path / "train.jsonl"), "test": "test.jsonl", "data_dir": str(tmp_path),
                 "text": "a", "text_pair": "b", "label": "score"},
                _task("sim", input="text_pair", target="regression"))
    assert set(out) == {"train", "test"} and out["test"].inputs[1] == ("test 1", "other")
    assert out["train"].targets["sim"].dtype == np.float32 and out["train"].targets["sim"][3] == 1.5


@pytest.mark.integration
def test_parquet_with_integer_labels(tmp_path):
    p = tmp_path / "a.parquet"
    pd.DataFrame({"text": ["a", "b"], "label": [0, 2]}).to_parquet(p)
    assert _load({"path": str(p)}, _task(num_classes=3))["train"].targets["t"].tolist() == [0, 2]


@pytest.mark.integration
def test_missing_label_column_names_the_file_and_the_columns(tmp_path):
    p = tmp_path / "reviews.csv"
    pd.DataFrame({"review": ["a"], "stars": [1]}).to_csv(p, index=False)
    with pytest.raises(BenchError) as err:
        _load({"path": str(p), "text": "review", "label": "verdict"})
    assert str(err.value) == (f"{p}: no label column 'verdict'; available columns: review, stars; "
                              "set the data option label: <column>")


@pytest.mark.integration
def test_label_outside_the_declared_classes(tmp_path):
    p = tmp_path / "reviews.csv"
    pd.DataFrame({"text": ["a", "b"], "label": ["positive", "neutral"]}).to_csv(p, index=False)
    with pytest.raises(BenchError, match=r"reviews.csv: column 'label': label 'neutral' is not a declared class "
                                         r"of task 't' \(negative, positive\); add it to label_names"):
        _load({"path": str(p), "label_names": ["negative", "positive"]})
    # integer ids beyond num_classes are caught by load_suite_data, naming the task and the fix
    q = tmp_path / "ids.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(20)], "label": [0, 1] * 9 + [0, 5]}).to_csv(q, index=False)
    suite = SuiteConfig(name="s", backbone={"source": "transformers"},
                        tasks=[_task(data=DataSpec(source="files", options={"path": str(q)}))])
    with pytest.raises(BenchError, match="label 5 is outside the declared classes 0..1"):
        load_suite_data(suite)


@pytest.mark.integration
def test_missing_file_and_missing_options(tmp_path):
    with pytest.raises(MissingData, match="nope.csv does not exist; fix the path"):
        _load({"path": str(tmp_path / "nope.csv")})
    with pytest.raises(BenchError, match="needs a data option path"):
        _load({"text": "x"})
    (tmp_path / "a.xlsx").write_text("")
    with pytest.raises(BenchError, match="unknown format '.xlsx'"):
        _load({"path": str(tmp_path / "a.xlsx")})


@pytest.mark.integration
def test_single_input_table_with_several_label_columns(tmp_path):
    p = tmp_path / "multi.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(30)], "topic": ["a", "b", "c"] * 10,
                  "urgent": [0, 1] * 15}).to_csv(p, index=False)
    options = {"path": str(p), "label_names": {"topic": ["c", "b", "a"]}}
    suite = SuiteConfig(name="s", kind="single_input", backbone={"source": "transformers"},
                        data=DataSpec(source="files", options=options),
                        tasks=[_task("topic", label="topic", num_classes=3), _task("urgent", label="urgent")])
    data = load_suite_data(suite)
    tr = data.splits["topic"]["train"]
    assert tr.targets["topic"].max() == 2 and set(tr.targets["urgent"]) == {0, 1}
    assert len(data.splits["topic"]["test"]) == 6


def _png(path: Path, value: int, size: int = 10, mode: str = "L") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(path)


@pytest.mark.integration
def test_image_folders_become_uint8_arrays(tmp_path):
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for cls, v in (("cat", 10), ("dog", 200)):
            for i in range(n):
                _png(tmp_path / split / cls / f"{i}.png", v, size=12 if i else 10)
    out = _load({"images": str(tmp_path), "image_size": 8}, _task("pets", input="image"))
    assert set(out) == {"train", "validation", "test"}
    tr = out["train"]
    assert tr.inputs.shape == (6, 8, 8) and tr.inputs.dtype == np.uint8
    assert tr.targets["pets"].tolist() == [0, 0, 0, 1, 1, 1] and tr.inputs[-1].mean() == 200
    with pytest.raises(BenchError, match="differ in size.*set the data option image_size"):
        _load({"images": str(tmp_path)}, _task("pets", input="image"))


@pytest.mark.integration
def test_rgb_image_folders_and_unknown_class_folder(tmp_path):
    for cls in ("a", "b"):
        _png(tmp_path / "train" / cls / "0.png", 50, mode="RGB")
    out = _load({"images": str(tmp_path)}, _task("x", input="image"))
    assert out["train"].inputs.shape == (2, 3, 10, 10)
    _png(tmp_path / "test" / "c" / "0.png", 50, mode="RGB")
    with pytest.raises(BenchError, match="class folder 'c' is not a declared class of task 'x' \\(a, b\\)"):
        _load({"images": str(tmp_path)}, _task("x", input="image"))
    with pytest.raises(MissingData, match="has no train/ subfolder"):
        _load({"images": str(tmp_path / "train")}, _task("x", input="image"))
