"""The README's aggregator plugin, written to a folder outside the repository, runs through `plugin_dirs=`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.config import TaskConfig
from bench.weighting import WEIGHTINGS, Step, build_weighting

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> str:
    block = re.search(r"<!-- plugin-example -->\n```python\n(.*?)```\n<!-- /plugin-example -->", README.read_text(),
                      re.S)
    assert block, "README.md lost its plugin example"
    return block.group(1)


def test_readme_plugin_is_short_and_registers_an_aggregator_from_outside(tmp_path, capsys):
    code = _example()
    assert len(code.strip().splitlines()) < 40
    plugins = tmp_path / "my_plugins"
    plugins.mkdir()
    (plugins / "unit_mean.py").write_text(code)
    rc = main(["run", "suite=synthetic", "strategy=naive_mtl", "strategy.weighting=unit_mean", "train.epochs=1",
               f"plugin_dirs=[{plugins}]", f"results_dir={tmp_path / 'results'}", "report=false"])
    assert rc == 0, capsys.readouterr().err
    (record,) = (tmp_path / "results").rglob("record.json")
    row = json.loads(record.read_text())["rows"]["naive_mtl"]
    w = np.array(list(row["trajectories"]["weights"].values()))
    assert w.shape[0] == 5 and np.isfinite(w[:, 1:]).all() and (w[:, 1:] > 0).all()

    # its defining property: each task's gradient enters the shared update with norm 1/T
    agg = build_weighting("unit_mean", [TaskConfig(name=t, input="vector", target="regression") for t in "ab"])
    theta = torch.zeros(2, requires_grad=True)
    ha, hb = torch.ones((), requires_grad=True), torch.ones((), requires_grad=True)  # one-number heads
    agg.backward({"a": ha * (theta @ torch.tensor([3.0, 0.0])), "b": hb * (theta @ torch.tensor([0.0, -0.5]))},
                 Step(shared=[theta], heads={"a": [ha], "b": [hb]}))
    assert torch.allclose(theta.grad, torch.tensor([0.5, -0.5]))
    assert "unit_mean" in WEIGHTINGS
