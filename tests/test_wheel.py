"""A non-editable install ships the built-in suites and strategies and finds them from any working directory.

The wheel is built from a copy of the source tree (nothing is written into the checkout) and installed with
``--no-deps`` into a fresh venv; a ``.pth`` file there appends this interpreter's site-packages, so torch and the rest
resolve without a reinstall, while ``bench`` itself can only come from the wheel (the checkout's editable finder is
registered by a ``.pth`` file in that site-packages, and ``.pth`` files of an appended folder are not executed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "bench", "suites", "strategies")
BUILTIN_STRATEGIES = ("separate", "naive_mtl", "fuse_then_joint", "uncertainty", "gradnorm")
BUILTIN_SUITES = ("synthetic", "text")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="venv layout (bin/python) of POSIX")]


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist"], cwd=tmp)
    (whl,) = (tmp / "dist").glob("mtbench-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> tuple[Path, dict]:
    """(the fresh venv's python, the environment to run it in)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent)
    python = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
         cwd=root.parent)
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=root.parent).stdout.strip())
    # after the install, so that pip did not see this interpreter's mtbench (the editable one) as already installed
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (purelib / "_mtbench_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(BENCH_PROGRESS="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    return python, env


def _bench(venv: tuple[Path, dict], cwd: Path, *args: str, timeout: float = 180) -> str:
    python, env = venv
    return _run([python, "-m", "bench", *args], cwd=cwd, env=env, timeout=timeout).stdout


def _listed(out: str, section: str) -> dict[str, str]:
    """``bench list`` output -> {name: where} of one section (a title line, then indented rows)."""
    rows: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        if line.strip() and not line[0].isspace():
            current = line.strip()
        elif current == section and (m := re.match(r"^\s+(\S+)\s+(\S+)(\s|$)", line)):
            rows[m.group(1)] = m.group(2)
    return rows


def test_the_wheel_ships_every_module_and_the_builtins_inside_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"bench/{p.relative_to(REPO / 'bench')}" for p in (REPO / "bench").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    want |= {f"bench/_builtin/suites/{p.name}" for p in (REPO / "suites").glob("*.yaml")}
    want |= {f"bench/_builtin/strategies/{p.name}" for p in (REPO / "strategies").glob("*.py")}
    want |= {f"bench/_builtin/strategies/spaces/{p.name}" for p in (REPO / "strategies" / "spaces").glob("*.yaml")}
    missing = sorted(want - names)
    assert not missing, f"missing from the wheel (a new subpackage goes into [tool.setuptools] packages): {missing}"
    tops = {n.split("/")[0] for n in names if not n.startswith("mtbench-")}
    assert tops == {"bench"}, f"the wheel installs more top-level names than bench: {sorted(tops)}"


def test_the_installed_copy_is_used_not_the_checkout(venv, tmp_path):
    python, env = venv
    probe = (
        "import json, os, sys, sysconfig\n"
        "import bench, torch\n"
        "from bench.search.space import load_space\n"
        "from bench.strategy import default_dirs\n"
        "from bench.suites import builtin_dir\n"
        "print(json.dumps({'bench': bench.__file__, 'torch': torch.__file__, 'path': [os.path.realpath(p or '.') for p in sys.path],\n"
        "    'purelib': sysconfig.get_paths()['purelib'], 'editable': [m for m in sys.modules if 'editable' in m],\n"
        "    'finders': [type(f).__module__ for f in sys.meta_path], 'suites': str(builtin_dir('suites')),\n"
        "    'strategies': [str(d) for d in default_dirs()],\n"
        "    'space': load_space('lambda', 'naive_mtl', default_dirs()).name}))\n"
    )
    info = json.loads(_run([python, "-c", probe], cwd=tmp_path, env=env).stdout)
    site = Path(info["purelib"]).resolve()
    assert site.is_relative_to(Path(python).parent.parent)
    assert Path(info["bench"]).resolve() == site / "bench" / "__init__.py"
    assert Path(info["suites"]) == site / "bench" / "_builtin" / "suites"
    assert info["strategies"] == [str(site / "bench" / "_builtin" / "strategies")]
    assert info["space"] == "lambda"  # search spaces ship beside the strategies
    assert not info["editable"] and all("editable" not in f for f in info["finders"])
    assert str(REPO) not in info["path"] and str(tmp_path.resolve()) in info["path"]
    assert not Path(info["torch"]).resolve().is_relative_to(site)  # the dependencies were not reinstalled


def test_list_and_one_synthetic_cell_from_an_empty_directory(venv, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    out = _bench(venv, work, "list")
    suites, strategies = _listed(out, "suites"), _listed(out, "strategies")
    for name in BUILTIN_SUITES:
        assert suites.get(name) == "built-in", out
    for name in BUILTIN_STRATEGIES:
        assert strategies.get(name) == "built-in", out

    results = tmp_path / "results"
    _bench(venv, work, "run", "suite=synthetic", "strategy=naive_mtl", "train.epochs=1", "report=false",
           f"results_dir={results}")
    (record,) = results.rglob("record.json")
    assert "naive_mtl" in json.loads(record.read_text())["rows"]
    assert not any(work.iterdir()), "a run wrote into the working directory"


def test_working_directory_folders_come_first_then_strategy_dirs(venv, tmp_path):
    (tmp_path / "suites").mkdir()
    text = (REPO / "suites" / "synthetic.yaml").read_text()
    text, n = re.subn(r"(?m)^description:.*$", 'description: "my own synthetic"', text)
    assert n == 1
    (tmp_path / "suites" / "synthetic.yaml").write_text(text)
    strategy = ('from bench.strategy import Strategy, register_strategy\n\n\n'
                '@register_strategy("{name}")\nclass Mine(Strategy):\n    """{doc}"""\n\n'
                '    def run(self, stages, params):\n        return {{}}\n')
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "separate.py").write_text(strategy.format(name="separate", doc="my own separate"))
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "hello.py").write_text(strategy.format(name="hello", doc="from a plugin folder"))

    out = _bench(venv, tmp_path, "list", "strategy_dirs=[plugins]")
    suites, strategies = _listed(out, "suites"), _listed(out, "strategies")
    assert suites["synthetic"] == "./suites" and "my own synthetic" in out, out
    assert suites["text"] == "built-in"
    assert strategies["separate"] == "./strategies" and "my own separate" in out, out
    assert strategies["hello"] == "./plugins" and strategies["naive_mtl"] == "built-in", out
