"""One meaning per key: the top-level keys of every command are typed models (bench/options.py), a switch takes
true/false only everywhere, ``budget=`` is spelled ``sample_scale=`` now, and a weighting or fusion method named in a
strategy's parameters is a typed reference checked once (bench/specs.py)."""

from __future__ import annotations

import warnings

import pytest

import bench.specs as specs
from bench.cli import _note_aliases, main
from bench.errors import BenchError, BenchWarning
from bench.options import RunOptions
from bench.plan import make_plan
from bench.precheck import TOP_KEYS
from bench.search.config import RUN_KEYS
from bench.specs import FusionSpec, WeightingSpec
from tests.conftest import FAST


def _error(capsys, *args: str) -> str:
    assert main(list(args)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


@pytest.mark.parametrize("args, needle", [
    (["run", "suite=synthetic", "force=yes"], "force='yes' must be true or false, e.g. force=true"),
    (["run", "suite=synthetic", "report=1"], "report=1 must be true or false, e.g. report=false"),
    (["run", "suite=synthetic", "wait='true'"], "wait='true' must be true or false, e.g. wait=false"),
    (["check", "suite=synthetic", "require_all=yes"], "require_all='yes' must be true or false, e.g. require_all=true"),
    (["check", "suite=synthetic", "update=1"], "update=1 must be true or false, e.g. update=true"),
    (["check", "suite=synthetic", "require_all='true'"], "require_all='true' must be true or false"),
    (["verify", "suite=synthetic", "deep=yes"], "deep='yes' must be true or false, e.g. deep=true"),
])
def test_a_switch_is_true_or_false_in_every_command(capsys, tmp_path, args, needle):
    assert needle in _error(capsys, *args, f"results_dir={tmp_path}")


@pytest.mark.parametrize("command", [["run", "suite=synthetic"],
                                     ["search", "suite=synthetic", "strategy=naive_mtl", "space=lambda"]])
def test_budget_is_refused_with_its_new_name(capsys, tmp_path, command):
    line = _error(capsys, *command, "budget=4", f"results_dir={tmp_path}")
    assert line == ("error: budget=4 is now spelled sample_scale=4 (it scales the suite's sample caps; "
                    "budget.match= keeps its name)")


def test_sample_scale_scales_the_sample_caps_and_budget_match_keeps_its_name(tmp_path):
    plan = make_plan(["suite=synthetic", "strategy=separate", "train.max_train_samples=400", "sample_scale=0.5",
                      "budget.match=samples", f"results_dir={tmp_path}"])
    suite = plan.variants[0].suite
    assert suite.train.max_train_samples == 200 and suite.budget.match == "samples"


def test_every_top_level_key_is_a_run_option():
    assert TOP_KEYS == RunOptions.keys() | {"budget.match"}
    assert RUN_KEYS <= RunOptions.keys()
    assert "budget" not in TOP_KEYS and "sample_scale" in TOP_KEYS


def test_strategy_dirs_is_plugin_dirs_and_the_command_says_so_once():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _note_aliases(["suite=synthetic", "strategy_dirs=plugins"])
        for _ in range(2):  # a command validates its options again (pre-check, plan, jobs): no second line
            assert RunOptions.of({"strategy_dirs": "plugins"}).plugin_dirs == ["plugins"]
    said = [str(w.message) for w in seen if issubclass(w.category, BenchWarning)]
    assert said == ["strategy_dirs= is now spelled plugin_dirs= (it holds every kind of plug-in); strategy_dirs= "
                    "still works"]
    with pytest.raises(BenchError, match="give plugin_dirs= only"):
        RunOptions.of({"strategy_dirs": ["a"], "plugin_dirs": ["b"]})


def test_a_reference_dumps_as_its_name_so_records_and_hashes_do_not_change(tmp_path):
    plan = make_plan(["suite=synthetic", "strategy=naive_mtl,fuse_then_joint", "strategy.weighting=cagrad",
                      "strategy.weighting_params.c=0.3", "strategy.fusion=ties", f"results_dir={tmp_path}"])
    naive, ftj = plan.variants
    assert naive.params.model_dump(mode="json") == {"weighting": "cagrad", "weighting_params": {"c": 0.3},
                                                    "weights": None, "sampling": None, "epochs": None}
    assert ftj.params.model_dump(mode="json")["fusion"] == "ties"
    assert isinstance(naive.params.weighting, WeightingSpec) and naive.params.weighting == "cagrad"
    assert naive.params.weighting.params.c == 0.3  # validated by CAGrad's own Params
    assert isinstance(ftj.params.fusion, FusionSpec) and ftj.params.fusion.resolved


@pytest.mark.integration
def test_a_reference_is_validated_once_per_variant_and_built_without_validating_again(tmp_path, monkeypatch):
    calls: list[str] = []
    real = specs.validated

    def counting(model, params, where):
        calls.append(where)
        return real(model, params, where)

    monkeypatch.setattr(specs, "validated", counting)
    plan = make_plan([*FAST, "strategy=naive_mtl,fuse_then_joint", "strategy.weighting=cagrad", "strategy.fusion=ties",
                      f"results_dir={tmp_path}"])
    assert sorted(calls) == ["fusion 'ties'", "weighting 'cagrad'", "weighting 'cagrad'"]  # one per variant
    from bench.runner import execute

    assert execute(plan) == 0  # every stage builds from the validated references (a fine-tune's own equal aside)
    assert sorted(c for c in calls if "equal" not in c) == ["fusion 'ties'", "weighting 'cagrad'", "weighting 'cagrad'"]


@pytest.mark.parametrize("args, needle", [
    (["strategy=naive_mtl", "strategy.weighting=cagrad", "strategy.weighting_params.cc=1"],
     "weighting 'cagrad': unknown key 'cc' (did you mean 'c'?)"),
    (["strategy=naive_mtl", "strategy.weighting=3"], "weighting=3: must be the name of a weighting"),
    (["strategy=fuse_then_joint", "strategy.fusion=weighted", "strategy.fusion_params.weights=[1,2]"],
     "weights"),
])
def test_a_bad_reference_is_one_line_before_any_work(capsys, tmp_path, args, needle):
    assert needle in _error(capsys, "run", "suite=synthetic", *args, f"results_dir={tmp_path}")
