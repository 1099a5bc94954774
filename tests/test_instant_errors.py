"""Instant errors: a mistake that needs no model is answered before torch and the rest of the training stack are
imported (bench/precheck.py, bench/plugins.py), with the very line the full plan gives."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.errors import BenchError
from bench.plan import make_plan
from bench.precheck import check_run

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "timm", "sklearn", "pandas", "scipy")
TYPO = ["run", "suite=synthetic", "strategy=naive_mtl", "trian.epochs=2"]


def _imported(stderr: str) -> set[str]:
    """Top-level module names in ``python -X importtime`` output."""
    return {m.group(1).split(".")[0] for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", stderr, re.M)}


@pytest.mark.slow
@pytest.mark.parametrize("args, needle", [
    (TYPO[1:], "unknown key 'trian.epochs' (did you mean 'train.epochs'?)"),
    (["suite=synthetic", "strategy=naive_mlt"], "unknown strategy 'naive_mlt'"),
    (["suite=synthetic", "strategy=naive_mtl", "strategy.weighting=pcgradd"], "unknown weighting 'pcgradd'"),
    (["suite=synthetic", "strategy=fuse_then_joint", "strategy.fusion=tiess"], "unknown fusion method 'tiess'"),
    (["suite=synthetc"], "unknown suite 'synthetc'"),
])
def test_a_typo_answers_before_torch_is_imported(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bench", "run", *args,
                           f"results_dir={tmp_path / 'results'}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and needle in errors[0], errors
    heavy = sorted(_imported(proc.stderr) & set(HEAVY))
    assert not heavy, f"imported before the error: {heavy}"
    assert "bench.plugins" in proc.stderr or "strategy" not in needle  # the plug-ins were read, not imported


@pytest.mark.slow
def test_bench_list_reads_plugins_without_the_training_stack(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mine.py").write_text(textwrap.dedent('''
        import torch

        from bench.config import Frozen
        from bench.stages import Stages, make_row
        from bench.strategy import Strategy, register_strategy
        from bench.weighting import Weighting, register_weighting


        @register_weighting("first_task")
        class FirstTask(Weighting):
            """Only the first task's loss."""

            def combine(self, losses):
                return next(iter(losses.values()))


        @register_strategy("mine")
        class Mine(Strategy):
            """A strategy from a plug-in folder."""

            def run(self, stages: Stages, params) -> dict:
                return {"mine": make_row(stages.joint(weighting="first_task"))}
    '''))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "bench", "list", f"strategy_dirs=[{plugins}]"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    heavy = sorted(_imported(proc.stderr) & set(HEAVY))
    assert not heavy, f"bench list imported {heavy}"
    listed = {m.group(1): m.group(2) for m in re.finditer(r"^\s+(\S+)\s+(built-in|\S*plugins)\s", proc.stdout, re.M)}
    assert listed["mine"].endswith("plugins") and listed["first_task"].endswith("plugins"), proc.stdout
    assert listed["naive_mtl"] == "built-in" and listed["pcgrad"] == "built-in" and listed["ties"] == "built-in"
    assert "A strategy from a plug-in folder." in proc.stdout


def test_the_scan_agrees_with_the_imported_registries():
    from bench.fusion import FUSIONS
    from bench.plugins import Scan
    from bench.strategy import STRATEGIES, discover, origin
    from bench.track import TRACKERS
    from bench.weighting import WEIGHTINGS

    discover()
    scan = Scan.of()
    for kind, reg in [("strategy", STRATEGIES), ("weighting", WEIGHTINGS), ("fusion method", FUSIONS),
                      ("tracker", TRACKERS)]:
        # the built-ins (other tests of a session may register plug-ins of their own; doctests register *_doc)
        real = {n: d for n, d in reg.describe().items() if origin(reg.get(n)) == "built-in" and not n.endswith("_doc")}
        assert real and set(real) <= set(scan.entries[kind]) <= set(reg.names()), kind
        assert {n: d for n, d in scan.describe(kind).items() if n in real} == real
        for name in scan.entries[kind]:
            assert scan.origin(kind, name) == origin(reg.get(name))
    for name in scan.entries["strategy"]:  # each Params read from the file validates like the imported one
        light, real = scan.params(name), STRATEGIES.get(name).Params
        assert light.model_json_schema() == real.model_json_schema(), name


def test_a_plugin_params_model_is_read_from_its_file(tmp_path):
    from bench.plugins import Entry, light_params

    file = tmp_path / "p.py"
    file.write_text(textwrap.dedent('''
        from __future__ import annotations
        from typing import Any, Literal
        import torch
        from pydantic import Field
        from bench.config import Frozen
        from bench.stages import Stages
        from bench.strategy import Strategy, register_strategy

        KINDS = ("a", "b")
        SCALE = torch.ones(1)  # left out: a call


        class Params(Frozen):
            kind: Literal["a", "b"] = "a"
            options: dict[str, Any] = Field(default_factory=dict)
            k: float = Field(0.2, gt=0, le=1)


        class Needs(Frozen):
            t: torch.Tensor | None = None  # needs torch: not built, so not pre-checked


        @register_strategy("p_light")
        class P(Strategy):
            Params = Params

            def run(self, stages: Stages, params: Params) -> dict:
                return {}


        @register_strategy("p_heavy")
        class Q(Strategy):
            Params = Needs

            def run(self, stages, params):
                return {}
    '''))
    model = light_params(Entry("strategy", "p_light", "", file, "P"))
    assert model is not None and model(k=0.5).k == 0.5
    with pytest.raises(Exception, match="less than or equal to 1"):
        model(k=2)
    assert light_params(Entry("strategy", "p_heavy", "", file, "Q")) is None
    assert "p_light" not in __import__("bench.strategy").strategy.STRATEGIES  # nothing was registered


BAD = [
    ["strategy=naive_mlt"],
    ["strategy=naive_mtl", "strategy.weighting=pcgradd"],
    ["strategy=fuse_then_joint", "strategy.fusion=tiess"],
    ["strategy=fuse_then_joint", "strategy.fusion=ties", "strategy.weighting=upgradd"],
    ["strategy=naive_mtl", "strategy.lrr=1"],
    ["strategy=naive_mtl,gradnorm", "strategy.lrr=1"],
    ["strategy=naive_mtl", "strategy.weights=[1,true,1,1,1]"],
    ["strategy=uncertainty", "strategy.sampling=some"],
    ["train.epohcs=2"],
    ["train.epochs=zero"],
    ["suite=synthetc"],
    ["tasks=[nope]"],
    ["seeds=0"],
    ["sample_scale=nan"],
    ["budget=4"],
    ["launcher=nope"],
    ["strategy_dirs=[/no/such/folder]"],
]


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) for a in BAD])
def test_the_precheck_gives_the_plans_own_line(tmp_path, args):
    args = ["suite=synthetic", *args, f"results_dir={tmp_path}"]
    with pytest.raises(BenchError) as light:
        check_run(args)
    with pytest.raises(BenchError) as plan:
        make_plan(args)
    assert str(light.value) == str(plan.value)


GOOD = [
    ["strategy=separate,naive_mtl,fuse_then_joint,uncertainty,gradnorm"],
    ["strategy=naive_mtl", "strategy.weighting=pcgrad,mgda", "train.lr=1e-3,3e-3"],
    ["strategy=fuse_then_joint", "strategy.fusion=ties", "strategy.fusion_params={k:0.2}"],
    ["strategy=naive_mtl,uncertainty", "strategy.sampling=all", "strategy.lr=0.01"],
    ["strategy=naive_mtl", "strategy.weights=[1,1,1,1,1]", "tasks=[clean,medium,noisy,cls3,cls2]"],
]


@pytest.mark.parametrize("args", GOOD, ids=[" ".join(a) for a in GOOD])
def test_the_precheck_passes_what_the_plan_accepts(tmp_path, args):
    args = ["suite=synthetic", *args, f"results_dir={tmp_path}"]
    make_plan(args)
    check_run(args)


def test_a_plugin_weighting_from_a_strategy_folder_passes_the_precheck(tmp_path):
    block = re.search(r"<!-- plugin-example -->\n```python\n(.*?)```\n<!-- /plugin-example -->",
                      (REPO / "README.md").read_text(), re.S)
    assert block
    plugins = tmp_path / "my_plugins"
    plugins.mkdir()
    (plugins / "unit_mean.py").write_text(block.group(1))
    name = re.search(r'register_weighting\("(\w+)"\)', block.group(1)).group(1)
    check_run(["suite=synthetic", "strategy=naive_mtl", f"strategy.weighting={name}", f"strategy_dirs=[{plugins}]"])
    from bench.plugins import Scan

    if name not in Scan.live("weighting"):  # not registered in this process by another test
        with pytest.raises(BenchError, match=f"unknown weighting '{name}'"):
            check_run(["suite=synthetic", "strategy=naive_mtl", f"strategy.weighting={name}"])
