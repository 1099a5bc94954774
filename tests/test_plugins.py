"""The plug-in contract (bench/plugins): one Registry per kind, lazy discovery, and per-plug-in source hashes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.config import TaskConfig
from bench.errors import BenchError
from bench.plan import make_plan
from bench.weighting import WEIGHTINGS, Weighting, build_weighting, register_weighting

REPO = Path(__file__).resolve().parent.parent
TASKS = [TaskConfig(name=t, input="vector", target="regression") for t in "ab"]


def test_registering_sets_the_name_and_a_scope_restores_the_registry():
    before = WEIGHTINGS.names()
    with WEIGHTINGS.scope():
        @register_weighting("scoped_sum")
        class ScopedSum(Weighting):
            def combine(self, losses):
                return sum(losses.values())

        assert ScopedSum.name == "scoped_sum" and "scoped_sum" in WEIGHTINGS
        assert type(build_weighting("scoped_sum", TASKS)) is ScopedSum
    assert WEIGHTINGS.names() == before


def test_a_class_of_the_wrong_base_is_one_line_naming_both():
    class NotABalancer:
        pass

    with WEIGHTINGS.scope(), pytest.raises(BenchError) as e:
        register_weighting("wrong_base")(NotABalancer)
    assert str(e.value) == ("weighting 'wrong_base': class test_a_class_of_the_wrong_base_is_one_line_naming_both."
                            "<locals>.NotABalancer is not a subclass of Balancer; derive it from Balancer")


def test_a_name_registered_twice_names_both_files_and_lines():
    with WEIGHTINGS.scope():
        @register_weighting("twice")
        class First(Weighting):
            def combine(self, losses):
                return sum(losses.values())

        with pytest.raises(BenchError) as e:
            @register_weighting("twice")
            class Second(Weighting):
                def combine(self, losses):
                    return sum(losses.values())
    msg = str(e.value)
    assert msg.startswith("weighting 'twice' is registered twice: by ") and msg.endswith("; rename one of them")
    assert msg.count(f"{Path(__file__).resolve()}:") == 2 or msg.count("test_plugins.py:") == 2


def test_an_unknown_weighting_says_where_a_plugin_must_be():
    with pytest.raises(BenchError) as e:
        build_weighting("pcgard", TASKS)
    msg = str(e.value)
    assert msg.startswith("unknown weighting 'pcgard' (did you mean 'pcgrad'?); valid: ")
    assert msg.endswith("; a plug-in needs its folder in plugin_dirs=[folder] (or its package installed)")


@pytest.mark.slow  # a subprocess: a fresh interpreter, whose registries are not loaded yet
def test_plugins_of_the_working_directory_load_on_the_first_read(tmp_path):
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "lazy_w.py").write_text(textwrap.dedent('''
        from bench.api import Weighting, register_weighting

        @register_weighting("lazy_w")
        class LazyW(Weighting):
            def combine(self, losses):
                return sum(losses.values())
    '''))
    code = ("from bench.weighting import WEIGHTINGS\n"
            "print('lazy_w' in WEIGHTINGS.loaded(), 'lazy_w' in WEIGHTINGS, WEIGHTINGS.get('lazy_w').name)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "lazy_w"]


WEIGHTING = '''
from bench.api import Weighting, register_weighting


@register_weighting("{name}")
class W(Weighting):
    """A test weighting ({name})."""

    def combine(self, losses):
        return {scale} * sum(losses.values())
'''


def _hashes(plugins: Path, results: Path, a: str, b: str) -> dict[str, tuple[str, dict[str, str]]]:
    plan = make_plan(["suite=synthetic", "strategy=naive_mtl,separate", f"strategy.weighting={a},{b}",
                      f"plugin_dirs=[{plugins}]", f"results_dir={results}"])
    return {f"{v.label}": (v.cell_hash(0), v.plugins) for v in plan.variants}


def test_editing_one_plugin_rekeys_only_the_cells_that_use_it(tmp_path):
    a, b = "hash_a_w", "hash_b_w"
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "wa.py").write_text(WEIGHTING.format(name=a, scale=1.0))
    (plugins / "wb.py").write_text(WEIGHTING.format(name=b, scale=1.0))
    with WEIGHTINGS.scope():
        before = _hashes(plugins, tmp_path / "results", a, b)
        with_a, with_b = f"naive_mtl[weighting={a}]", f"naive_mtl[weighting={b}]"
        assert set(before[with_a][1]) == {f"weighting:{a}"} and set(before[with_b][1]) == {f"weighting:{b}"}
        separate = next(k for k in before if k.startswith("separate"))
        assert before[separate][1] == {}  # a built-in strategy that names no plug-in

        (plugins / "wa.py").write_text(WEIGHTING.format(name=a, scale=2.0))  # an edit of plug-in A only
        stat = (plugins / "wa.py").stat()
        os.utime(plugins / "wa.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        after = _hashes(plugins, tmp_path / "results", a, b)
    assert after[with_a][0] != before[with_a][0]  # the cell using A is re-keyed
    assert after[with_a][1][f"weighting:{a}"] != before[with_a][1][f"weighting:{a}"]
    assert after[with_b] == before[with_b]  # the cell using only B is not
    assert after[separate] == before[separate]


HARD_CODED = '''
from bench.api import Stages, Strategy, Weighting, make_row, register_strategy, register_weighting


@register_weighting("coded_w")
class CodedW(Weighting):
    """A weighting the strategy below names in its code, not in its params."""

    def combine(self, losses):
        return sum(losses.values())


@register_strategy("coded_s")
class CodedS(Strategy):
    """Joint training with a weighting fixed in the code."""

    def run(self, stages: Stages, params) -> dict:
        return {"coded_s": make_row(stages.joint(weighting="coded_w", epochs=1))}
'''


@pytest.mark.integration
def test_the_record_names_every_user_plugin_its_stages_used(tmp_path):
    from bench.cli import main
    from bench.record import Record
    from bench.strategy import STRATEGIES

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "coded.py").write_text(HARD_CODED)
    results = tmp_path / "results"
    with WEIGHTINGS.scope(), STRATEGIES.scope():
        assert main(["run", "suite=synthetic", "strategy=coded_s", "train.max_train_samples=200", "report=false",
                     f"plugin_dirs=[{plugins}]", f"results_dir={results}"]) == 0
    (path,) = results.rglob("record.json")
    record = Record.read(path)
    assert sorted(record.plugins) == ["strategy:coded_s", "weighting:coded_w"]
    assert len(set(record.plugins.values())) == 1  # one file defines both


CODED_WEIGHTING = '''
from bench.api import Weighting, register_weighting


@register_weighting("coded_w2")
class Coded(Weighting):
    """Half of each task loss."""

    def combine(self, losses):
        return sum(0.5 * v for v in losses.values())
'''
CODED_STRATEGY = '''
from bench.api import Strategy, make_row, register_strategy


@register_strategy("coded_s2")
class CodedStrategy(Strategy):
    """Names its weighting in code, not in a parameter."""

    def run(self, stages, params):
        return {"coded_s2": make_row(stages.joint(weighting="coded_w2", epochs=1))}
'''


@pytest.mark.integration
def test_a_finished_cell_is_recomputed_when_a_plugin_named_in_code_changes(tmp_path, capsys):
    from bench.cli import main
    from bench.record import Record
    from bench.strategy import STRATEGIES

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "coded_w2.py").write_text(CODED_WEIGHTING)
    (plugins / "coded_s2.py").write_text(CODED_STRATEGY)
    results = tmp_path / "results"
    args = ["run", "suite=synthetic", "strategy=coded_s2", "train.max_train_samples=200", "report=false",
            f"plugin_dirs=[{plugins}]", f"results_dir={results}"]
    with WEIGHTINGS.scope(), STRATEGIES.scope():
        assert main(args) == 0
        (path,) = results.rglob("record.json")
        before = Record.read(path).plugins["weighting:coded_w2"]
        assert main(args) == 0  # unchanged: reused
        assert "0 cell(s) computed, 1 from the store" in capsys.readouterr().out
        (plugins / "coded_w2.py").write_text(CODED_WEIGHTING + "# edited\n")
        assert main(args) == 0  # the cell's hash is the same (its params name no weighting): its record is stale
        assert "1 cell(s) computed" in capsys.readouterr().out
    (path,) = results.rglob("record.json")
    assert Record.read(path).plugins["weighting:coded_w2"] != before
