"""Bad input: one line naming the bad value and the fix, exit code 2, no traceback, nothing run."""

from __future__ import annotations

import pytest

from bench.cli import main
from tests.conftest import run_cli


def _err(capsys, *args: str) -> str:
    code = main(["run", *args])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = [line for line in captured.err.strip().splitlines() if line]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_unknown_suite_lists_valid_ones(capsys):
    msg = _err(capsys, "suite=synthetc")
    assert "unknown suite 'synthetc'" in msg and "did you mean 'synthetic'" in msg and "valid:" in msg


def test_unknown_strategy(capsys):
    msg = _err(capsys, "suite=synthetic", "strategy=separate,naive_mlt")
    assert "unknown strategy 'naive_mlt'" in msg and "naive_mtl" in msg


def test_misspelled_key_suggests_the_right_one(capsys):
    msg = _err(capsys, "suite=synthetic", "train.epohcs=2")
    assert "train.epohcs" in msg and "did you mean 'train.epochs'" in msg


def test_unknown_top_level_key(capsys):
    msg = _err(capsys, "suite=synthetic", "sede=3")
    assert "unknown key 'sede'" in msg and "seed" in msg


@pytest.mark.parametrize("arg,needle", [("seeds=abc", "seeds='abc' must be a positive integer"),
                                        ("train.epochs=zero", "train.epochs='zero'"),
                                        ("train.lr=-1", "train.lr=-1"),
                                        ("report=maybe", "report='maybe' must be true or false, e.g. report=false")])
def test_wrong_types(capsys, arg, needle):
    assert needle in _err(capsys, "suite=synthetic", arg)


def test_malformed_suite_yaml_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbackbone: {source: mlp\ntasks:\n  - x\n")
    msg = _err(capsys, f"suite={bad}")
    assert str(bad) in msg and ":3" in msg


def test_unknown_target_kind(capsys, tmp_path):
    bad = tmp_path / "kind.yaml"
    bad.write_text("name: kind\nbackbone: {source: mlp}\ndata: {source: synthetic}\nkind: single_input\n"
                   "tasks:\n  - {name: a, input: vector, target: ranking}\n")
    msg = _err(capsys, f"suite={bad}")
    assert "unknown task kind 'ranking'" in msg and "classification" in msg and "token_classification" in msg


def test_strategy_param_of_no_strategy(capsys):
    msg = _err(capsys, "suite=synthetic", "strategy=naive_mtl", "strategy.fusoin=ties")
    assert "fusoin" in msg


def test_fusion_weights_checked_before_training(capsys):
    msg = _err(capsys, "suite=synthetic", "strategy=fuse_then_joint", "strategy.fusion=weighted",
               "strategy.fusion_params={weights:[0.5,0.5]}")
    assert "weights" in msg


@pytest.mark.slow
def test_subprocess_exit_code_and_no_traceback():
    proc = run_cli("run", "suite=nope")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: unknown suite 'nope'")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for cmd in ("run", "list", "search", "report", "check"):
        assert cmd in proc.stdout


def test_unknown_weighting_suggests_the_right_one(capsys):
    msg = _err(capsys, "suite=synthetic", "strategy=naive_mtl", "strategy.weighting=pcgard")
    assert "unknown weighting 'pcgard'" in msg and "did you mean 'pcgrad'" in msg


def test_wrong_weighting_hyper_parameter(capsys):
    msg = _err(capsys, "suite=synthetic", "strategy=naive_mtl", "strategy.weighting=cagrad",
               "strategy.weighting_params.c=-1")
    assert "weighting 'cagrad'" in msg and "c=-1" in msg and "greater than or equal to 0" in msg


def test_weighting_whose_extra_is_missing_names_the_extra(capsys, monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "cvxpy", None)  # as if `mtbench[full]` were not installed
    msg = _err(capsys, "suite=synthetic", "strategy=fuse_then_joint", "strategy.weighting=nash_mtl",
               f"results_dir={tmp_path}")
    assert "weighting 'nash_mtl' needs cvxpy" in msg and "pip install 'mtbench[full]'" in msg
    assert not any(tmp_path.iterdir())  # nothing ran


@pytest.mark.parametrize("args, message", [
    (["procs=2", "train.batch_size=63"], "procs=2 cannot split the train.batch_size=63 of suite synthetic_conflict "
                                         "into equal slices; use a batch size divisible by 2 (train.batch_size=64)"),
    (["procs=2", "workers=2"], "procs=2 with workers=2: a cell's processes are started by the command itself"),
    (["procs=0"], "procs=0 must be a positive integer"),
])
def test_a_procs_setting_that_cannot_work(capsys, tmp_path, args, message):
    """procs=N (one cell on N processes): one line before any data loads or process starts."""
    assert message in _err(capsys, "suite=synthetic_conflict", f"results_dir={tmp_path}", *args)
    assert not (tmp_path / "synthetic_conflict").exists()


def test_more_procs_than_cores(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    msg = _err(capsys, "suite=synthetic_conflict", f"results_dir={tmp_path}", "procs=3")
    assert msg == "error: procs=3 x workers=1 processes exceed the 2 cores of this machine; use procs=2 or fewer"
