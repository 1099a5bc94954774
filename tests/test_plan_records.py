"""One plan, typed records, plug-ins out of the core and failing alone (bench/plan.py, bench/record.py).

Every run here is the synthetic suite at one epoch (a second or two per cell), in-process through the real CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.errors import BenchError
from tests.conftest import REPO, records

FAST = ["suite=synthetic", "train.epochs=1", "train.max_train_samples=300", "report=false"]
pytestmark = pytest.mark.usefixtures("one_thread")


def run(results: Path, *args: str) -> int:
    return main(["run", *FAST, f"results_dir={results}", *args])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------------------------------------ typed records

@pytest.mark.integration
def test_custom_label_keeps_every_row_of_the_strategy_in_the_summary(results, capsys):
    # the old summary named rows by label.replace(strategy, variant): label=mine folded `fused` and
    # `fuse_then_joint` into one line. Summary and report now share bench.record.variant_name.
    assert run(results, "strategy=fuse_then_joint", "label=mine") == 0
    out = capsys.readouterr().out
    summary = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert summary == ["fused[mine]", "mine"]
    # one seed: a mean without a spread (never "± 0.0000"), and the command that gives the intervals
    assert "(n=1)" in out and "± 0.0000" not in out
    assert f"python -m bench report suite=synthetic results_dir={results}" in out
    from bench.report.records import load_records

    (record,) = load_records(results, "synthetic")
    assert sorted(record.variant(r) for r in record.rows) == ["fused[mine]", "mine"]


@pytest.mark.integration
def test_a_schema_1_record_is_migrated_and_a_newer_schema_is_skipped_with_its_reason(results, capsys):
    from bench.record import SCHEMA_VERSION, Record

    assert run(results, "strategy=naive_mtl") == 0
    (path,) = results.glob("synthetic/cells/*/*/record.json")
    data = json.loads(path.read_text())
    old = {k: v for k, v in data.items() if k not in ("config", "config_fingerprint", "budget_fingerprint")}
    old["schema_version"] = 1
    migrated = Record(**old)
    assert migrated.config["params"] == data["params"] and migrated.config_fingerprint.startswith("v1-")
    # a record from a future bench: one line naming the file and the reason; the report skips only that record
    future = path.parent.parent / "future" / "record.json"
    future.parent.mkdir()
    unsealed = {k: v for k, v in data.items() if k != "integrity"}  # a hand-written record carries no seal
    future.write_text(json.dumps({**unsealed, "schema_version": SCHEMA_VERSION + 1, "label": "from_the_future"}))
    capsys.readouterr()
    from bench.report.records import RecordWarning

    with pytest.warns(RecordWarning) as caught:
        assert main(["report", "suite=synthetic", f"results_dir={results}", "plots=false"]) == 0
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"skipping record {future}: record: written by a newer bench (schema_version "
                              f"{SCHEMA_VERSION + 1}; this one reads 1 to {SCHEMA_VERSION}): upgrade bench to report "
                              "it"), message
    out = capsys.readouterr().out
    assert "from_the_future" not in out and "naive_mtl" in out
    # alone in the store it leaves nothing to report: exit 2, and the reason was said
    path.unlink()
    assert main(["report", "suite=synthetic", f"results_dir={results}"]) == 2
    assert "no records for suite 'synthetic'" in capsys.readouterr().err


@pytest.mark.integration
def test_a_row_with_a_non_number_metric_is_refused_in_one_line():
    from bench.record import Row

    with pytest.raises(BenchError, match=r"^row: metrics.test.t.accuracy=True: Input should be a valid number$"):
        Row.of({"metrics": {"test": {"t": {"accuracy": True}}}})


# ------------------------------------------------------------------------------------------------ one plan

@pytest.mark.integration
def test_strategy_params_go_only_to_the_strategies_that_have_them():
    from bench.plan import make_plan

    plan = make_plan([*FAST, "strategy=naive_mtl,separate", "strategy.weighting=pcgrad"])
    naive, separate = plan.variants
    assert naive.params.weighting == "pcgrad" and separate.label == "separate"
    with pytest.raises(BenchError, match="strategy.bogus is a parameter of none of naive_mtl, separate"):
        make_plan([*FAST, "strategy=naive_mtl,separate", "strategy.bogus=1"])


@pytest.mark.integration
@pytest.mark.parametrize("args, message", [
    (["seed=[]"], "seed=[] is empty: name at least one, e.g. seed=[0,1,2]"),
    (["strategy=[]"], "strategy=[] is empty: name at least one, e.g. strategy=separate"),
    (["tasks=[]"], "tasks=[] is empty: name at least one, e.g. tasks=[clean,medium]"),
    (["seed=[1,1]"], "seed=[1, 1] names a seed twice"),
    (["strategy=naive_mlt"], "did you mean 'naive_mtl'?); valid: "),
    (["strategy=mine"], "; strategies in another folder need plugin_dirs=[folder]"),
])
def test_empty_or_unknown_lists_fail_before_any_work(results, capsys, args, message):
    assert run(results, *args) == 2
    assert message in one_line_error(capsys)
    assert not results.exists()


@pytest.mark.integration
def test_absent_optional_task_gives_one_task_list_that_everything_sizes_from(tmp_path):
    """The vision suite without Fashion-MNIST: 2 tasks for λ, fusion weights and the search's simplex."""
    from bench.plan import make_plan
    from bench.search.config import load_config

    empty = tmp_path / "no_fashion"
    empty.mkdir()
    # point the optional task at an empty folder: the same as a machine without the Debian package
    suite = yaml.safe_load((REPO / "suites" / "vision.yaml").read_text())
    suite["tasks"][2]["data"]["options"] = {"path": str(empty)}
    path = tmp_path / "vision.yaml"
    path.write_text(yaml.safe_dump(suite))
    plan = make_plan([f"suite={path}", "strategy=naive_mtl", "strategy.weights=[1,2]"])
    (variant,) = plan.variants
    assert variant.suite.task_names == ["mnist", "digits"]
    assert any("skipped optional task 'fashion'" in n for n in plan.notes + variant.notes)
    with pytest.raises(BenchError, match=r"strategy.weights=\[1.0, 2.0, 3.0\] must be 2 non-negative numbers"):
        make_plan([f"suite={path}", "strategy=naive_mtl", "strategy.weights=[1,2,3]"])
    cfg = load_config([f"suite={path}", "strategy=fuse_then_joint", "space=fusion_weights", "trials=1",
                       f"results_dir={tmp_path / 'r'}"])
    assert cfg.tasks == ["mnist", "digits"]
    import optuna

    trial = optuna.trial.FixedTrial(cfg.space.default_trial(cfg.tasks))
    assert cfg.space.suggest(trial, cfg.tasks)["strategy.fusion_params.weights"] == pytest.approx([0.5, 0.5])


# ------------------------------------------------------------------------------------------------ plug-ins

BROKEN_WEIGHTING = '''
import torch
from bench.weighting import Weighting, register_weighting


@register_weighting("broken_sum")
class BrokenSum(Weighting):
    """Raises on its third call, as a plug-in with a bug would."""

    calls = 0

    def combine(self, losses):
        BrokenSum.calls += 1
        if BrokenSum.calls > 2:
            raise ZeroDivisionError("lambda of an empty batch")
        return sum(losses.values())
'''


@pytest.mark.integration
def test_a_plugin_raising_inside_combine_fails_only_its_cell(results, tmp_path, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text(BROKEN_WEIGHTING)
    rc = run(results, "strategy=naive_mtl", "strategy.weighting=equal,broken_sum", f"strategy_dirs=[{plugins}]")
    out = capsys.readouterr().out
    assert rc == 1
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and "weighting=broken_sum" in failed[0]
    line = BROKEN_WEIGHTING.splitlines().index(next(x for x in BROKEN_WEIGHTING.splitlines() if "raise" in x)) + 1
    assert re.search(rf"ZeroDivisionError: lambda of an empty batch \(at {re.escape(str(plugins))}/broken.py:{line}\)",
                     failed[0]), failed[0]
    assert "1 cell(s) computed, 0 from the store, 1 failed" in out
    (failed_json,) = results.glob("synthetic/cells/naive_mtl/*/failed.json")
    assert f"broken.py:{line}" in json.loads(failed_json.read_text())["error"]
    assert [r["label"] for r in records(results)] == ["naive_mtl[weighting=equal]"]


@pytest.mark.integration
def test_a_plugin_that_fails_to_import_or_takes_a_name_is_one_line_before_any_work(results, tmp_path, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "typo.py").write_text("import torch\n\nx = torch.zeros(2) @ undefined_name\n")
    assert run(results, "strategy=naive_mtl", f"strategy_dirs=[{plugins}]") == 2
    err = one_line_error(capsys)
    assert f"plug-in {plugins}/typo.py failed to import: NameError: name 'undefined_name' is not defined " \
           f"(at {plugins}/typo.py:3)" in err
    (plugins / "typo.py").unlink()
    (plugins / "clash.py").write_text("from bench.weighting import register_weighting\n"
                                      "from bench.weighting.simple import Equal\n\n\n"
                                      "@register_weighting('equal')\nclass Mine(Equal):\n    '''Not the real one.'''\n")
    assert run(results, "strategy=naive_mtl", f"strategy_dirs=[{plugins}]") == 2
    err = one_line_error(capsys)
    assert "weighting 'equal' is registered twice" in err and "clash.py:5" in err and "rename one of them" in err
    assert not results.exists()


@pytest.mark.slow
def test_editing_a_plugin_recomputes_what_it_computed(results, tmp_path, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    code = BROKEN_WEIGHTING.replace("calls > 2", "calls < 0").replace("broken_sum", "plain_sum")
    (plugins / "plain.py").write_text(code)
    args = ["strategy=naive_mtl", "strategy.weighting=plain_sum", f"strategy_dirs=[{plugins}]"]
    assert run(results, *args) == 0
    assert run(results, *args) == 0
    assert "every cell came from the store" in capsys.readouterr().out
    # a subprocess: this process already imported the plug-in (a registry entry cannot be re-imported in place)
    (plugins / "plain.py").write_text(code + "\n# fixed a bug\n")
    done = subprocess.run([sys.executable, "-m", "bench", "run", *FAST, f"results_dir={results}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "1 cell(s) computed" in done.stdout
    joint = [r for r in records(results) if r["stages_computed"]]
    assert len(joint) == 2 and all(any(s.startswith("joint/") for s in r["stages_computed"]) for r in joint)


@pytest.mark.integration
def test_no_file_of_the_core_names_a_built_in_plugin():
    """Only the registries' own modules (where built-in weightings and fusion methods are defined) and the defaults
    in bench/config.py may name a built-in strategy or its rows: no string literal elsewhere in bench/ is one
    (docstrings and comments may mention them)."""
    import ast

    names = {"separate", "naive_mtl", "fuse_then_joint", "fused", "gradnorm", "uncertainty"}
    allowed = {"config.py", "weighting", "fusion", "_builtin"}
    hits = []
    for path in sorted((REPO / "bench").rglob("*.py")):
        rel = path.relative_to(REPO / "bench")
        if rel.parts[0] in allowed or rel.name in allowed:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                if node.value in names or node.value.split("[")[0] in names:
                    hits.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not hits, "\n".join(hits)


# ------------------------------------------------------------------------------------------------ stage overrides

@pytest.mark.integration
def test_a_frozen_backbone_is_untouched_and_stage_train_overrides_change_the_key(tmp_path):
    from bench import checkpoint as C
    from bench.plan import build_suite
    from bench.stages import Stages, SuiteContext
    from bench.store import Store

    suite = build_suite({"suite": "synthetic", "train.epochs": 1, "train.max_train_samples": 200})
    store = Store(tmp_path, suite.name)
    stages = Stages(SuiteContext.load(suite, store), store, seed=0)
    theta0 = C.load_state(stages.init().path / C.BACKBONE_FILE)
    probe = stages.finetune("clean", freeze="backbone")
    after = C.load_state(probe.ckpt.path / C.BACKBONE_FILE)
    assert all((after[k] == theta0[k]).all() for k in theta0)  # a linear probe: only the head moved
    assert probe.info["telemetry"]["trainable_params"] < stages.finetune("clean").info["telemetry"][
        "trainable_params"]
    longer = stages.finetune("clean", train={"epochs": 2, "lr": 1e-3})
    assert longer.ckpt.key not in {probe.ckpt.key, stages.finetune("clean").ckpt.key}
    assert longer.info["telemetry"]["epochs_run"] == 2
    with pytest.raises(BenchError, match=r"freeze='encoder.\*' matches no backbone parameter"):
        stages.joint(freeze="encoder.*")
    with pytest.raises(BenchError, match=r"finetune\(train=...\): unknown key 'epoch'"):
        stages.finetune("clean", train={"epoch": 2})


@pytest.mark.integration
def test_a_nan_from_a_weighting_is_blamed_on_the_weighting_not_the_data(results, tmp_path, capsys):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nan_sum.py").write_text(BROKEN_WEIGHTING.replace("broken_sum", "nan_sum").replace(
        'raise ZeroDivisionError("lambda of an empty batch")', 'return sum(losses.values()) * float("nan")'))
    assert run(results, "strategy=naive_mtl", "strategy.weighting=nan_sum", f"strategy_dirs=[{plugins}]") == 1
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "FAILED" in x]
    assert "weighting BrokenSum.combine returned nan from finite task losses" in line
    assert f"{plugins}/nan_sum.py:" in line and "not the data" in line and "check the data" not in line
