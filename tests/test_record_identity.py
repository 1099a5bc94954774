"""Records that describe themselves: the typed row name (RowId), the schema-2 -> 3 renames (train, spent), plug-in
versions that never mix in a row, and `bench report`'s keys (plugin_dirs=, unknown keys refused)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.config import DEFAULT_STRATEGIES
from bench.record import Record, Row
from bench.report import build_leaderboards
from bench.report.records import load_records
from bench.rowid import RowId
from tests.conftest import run_cli
from tests.test_report_stats import SUITE, labels, with_correct, write_record

N = 200


def test_a_row_name_parses_and_prints_back_unchanged():
    for name in ("fused", "fused[fusion=ties]", "naive_mtl[weighting=pcgrad,train.lr=0.001]", "fused[my_run]",
                 "x[a=[1,2],b={\"c\":1,\"d\":2}]", "fused[my[odd]]", "odd[", "x[]"):
        assert str(RowId.parse(name)) == name
    rid = RowId.parse("fuse_then_joint[fusion=ties,weighting=mgda]")
    assert (rid.kind, rid.setting("weighting"), rid.setting("lr")) == ("fuse_then_joint", "mgda", None)
    assert str(RowId.parse("fused[fusion=ties]").with_params(["train.epochs=3"])) == "fused[fusion=ties,train.epochs=3]"


def test_a_schema_2_record_reads_its_budgets_under_their_new_names(tmp_path):
    record = write_record(tmp_path, label="naive_mtl", seed=0, preds={"a": labels(N)}, targets={"a": labels(N)})
    read = Record(**record)
    assert read.train == record["budget"] and read.rows["naive_mtl"].spent["train_samples_seen"] == 800
    assert "budget" not in read.dump() and "budget" not in read.dump()["rows"]["naive_mtl"]
    assert Row.of({"metrics": {"test": {}}, "spent": {"epochs": 1}}).spent == {"epochs": 1}


def _plugin_store(results: Path) -> None:
    """naive_mtl seeds 0-2 made with version A of a plug-in weighting, then seeds 0-1 again with version B."""
    target = labels(N)
    for seed in range(3):
        write_record(results, label="naive_mtl", seed=seed, preds={"a": with_correct(target, 150 + seed, seed)},
                     targets={"a": target}, created="2026-12-01T00:00:00Z")
        write_record(results, label="separate", seed=seed, preds={"a": with_correct(target, 140, seed)},
                     targets={"a": target})
    for path in (results / SUITE / "cells" / "naive_mtl").glob("*/record.json"):
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "plugins": {"weighting:mine": "aaaa"}}))
        if data["seed"] < 2:  # the edited plug-in's re-runs: a cell of their own (another cell hash)
            newer = path.parent.with_name(path.parent.name + "b")
            newer.mkdir()
            (newer / "record.json").write_text(json.dumps(
                {**data, "plugins": {"weighting:mine": "bbbb"}, "created": "2026-12-02T00:00:00Z"}))


def test_a_row_never_mixes_seeds_of_two_plugin_versions(results):
    _plugin_store(results)
    records = load_records(results, SUITE)
    mine = [r for r in records if r.label == "naive_mtl"]
    assert sorted(r.seed for r in mine) == [0, 1] and {r.plugins["weighting:mine"] for r in mine} == {"bbbb"}
    (note,) = records.left_out
    assert note.startswith("naive_mtl: seed(s) 0, 1, 2 made with an earlier version of weighting:mine left out")
    boards, _ = build_leaderboards(results, SUITE)
    assert boards[0].table.loc["naive_mtl", "n"] == 2 and note in boards[0].notes


def test_report_refuses_an_unknown_key_and_takes_the_plugin_folders(results, tmp_path, capsys):
    write_record(results, label="separate", seed=0, preds={"a": labels(N)}, targets={"a": labels(N)})
    out = tmp_path / "out"
    assert main(["report", f"suite={SUITE}", f"results_dir={results}", "bogus_key=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "bogus_key" in err and "valid keys: suite, results_dir" in err and "plugin_dirs" in err
    assert len(err.splitlines()) == 1
    for key in ("plugin_dirs", "strategy_dirs"):
        assert main(["report", f"suite={SUITE}", f"results_dir={results}", f"out={out}", "plots=false",
                     f"{key}=[{tmp_path}]"]) == 0
    assert (out / "leaderboard.md").is_file() and not list(out.glob("*.png"))


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "my_plugins"
    folder.mkdir()
    (folder / "two_stage.py").write_text('''
from bench.stages import make_row
from bench.strategy import Strategy, register_strategy


@register_strategy("zz_two_stage")
class TwoStage(Strategy):
    """Joint training from theta0 (a plug-in strategy for the report's tests)."""

    rows = ("zz_two_stage",)
    colours = {"zz_two_stage": "#123456"}
    families = {"zz_two_stage": "loss"}

    def run(self, stages, params):
        return {"zz_two_stage": make_row(stages.joint())}
''')
    return folder


@pytest.mark.slow
def test_report_reads_row_styles_from_the_records_with_the_plugin_folder_gone(tmp_path, plugin_dir):
    results = tmp_path / "results"
    code = main(["run", "suite=synthetic", f"results_dir={results}", "strategy=separate,zz_two_stage", "seeds=1",
                 f"plugin_dirs=[{plugin_dir}]", "report=false", "train.epochs=1"])
    assert code == 0
    (record,) = [json.loads(p.read_text()) for p in results.glob("synthetic/cells/zz_two_stage/*/record.json")]
    assert record["rows"]["zz_two_stage"]["style"] == {
        "kind": "zz_two_stage", "strategy": "zz_two_stage", "order": [len(DEFAULT_STRATEGIES), 0],
        "colour": "#123456", "family": "loss"}
    copy = tmp_path / "copy"
    shutil.copytree(results, copy)
    shutil.rmtree(plugin_dir)
    shutil.rmtree(results)
    # a fresh process: nothing registered in-process, the plug-in's folder gone; the report reads the records only
    probe = f"""
import sys
from bench.report import build_leaderboards
boards, _ = build_leaderboards({str(copy)!r}, "synthetic")
styles = boards[0].styles
print(list(boards[0].table.index), styles.colour("zz_two_stage"), styles.family("zz_two_stage"))
print(sorted(m for m in sys.modules if m.startswith(("bench.weighting", "bench.fusion", "bench.stages", "torch"))))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    rows, imported = done.stdout.strip().splitlines()
    assert rows == "['separate', 'zz_two_stage'] #123456 loss"
    assert imported == "[]"  # no strategy, weighting or fusion code (nor torch) behind a report
    report = run_cli("report", "suite=synthetic", f"results_dir={copy}", f"out={tmp_path / 'out'}", "plots=false",
                     cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert md.index("`separate`") < md.index("`zz_two_stage`")
