"""A plug-in package installed with pip adds a weighting with no flag: its ``bench.plugins`` entry point names a
module, which discovery imports. The package is written, built into a wheel and installed here, in the test."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")]

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "bench-halfsum"
version = "0.1.0"

[project.entry-points."bench.plugins"]
halfsum = "bench_halfsum.weighting"
halfsum_fusion = "bench_halfsum.fusion"

[tool.setuptools]
packages = ["bench_halfsum"]
"""

MODULE = '''\
from bench.api import Weighting, register_weighting


@register_weighting("half_sum")
class HalfSum(Weighting):
    """Half the sum of the task losses (a plug-in package's weighting)."""

    def combine(self, losses):
        return 0.5 * sum(losses.values())
'''


FUSION = '''\
from bench.api import FusionMethod, register_fusion


@register_fusion("first_of_all")
class FirstOfAll(FusionMethod):
    """Keeps the first checkpoint (a plug-in package's fusion method)."""

    def fuse(self, name, base, tensors, offset=0):
        return tensors[0].clone()
'''


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_a_pip_installed_plugin_package_is_listed_and_runs_with_no_flag(tmp_path):
    src = tmp_path / "bench-halfsum"
    (src / "bench_halfsum").mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "bench_halfsum" / "__init__.py").write_text("")
    (src / "bench_halfsum" / "weighting.py").write_text(MODULE)
    (src / "bench_halfsum" / "fusion.py").write_text(FUSION)  # a second entry point of the same package
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
          tmp_path / "dist", src], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("bench_halfsum-0.1.0-*.whl")
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", site, wheel],
         cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "BENCH_PROGRESS": "0"}
    work = tmp_path / "work"  # no ./strategies here: the plug-in can only come from the installed package
    work.mkdir()

    listed = _run([sys.executable, "-m", "bench", "list"], cwd=work, env=env).stdout
    line = next((ln for ln in listed.splitlines() if re.match(r"\s+half_sum\s", ln)), None)
    assert line is not None, listed
    assert "bench-halfsum 0.1.0" in line and "a plug-in package's weighting" in line
    assert re.search(r"^weightings", listed, re.M) and re.search(r"^\s+equal\s+built-in", listed, re.M)
    assert re.search(r"^\s+first_of_all\s+bench-halfsum 0\.1\.0\s", listed, re.M), listed

    results = tmp_path / "results"
    _run([sys.executable, "-m", "bench", "run", "suite=synthetic", "strategy=naive_mtl", "strategy.weighting=half_sum",
          "train.epochs=1", "train.max_train_samples=200", f"results_dir={results}", "report=false"], cwd=work, env=env)
    (record,) = results.rglob("record.json")
    data = json.loads(record.read_text())
    assert data["params"]["weighting"] == "half_sum" and "naive_mtl" in data["rows"]
    assert list(data["plugins"]) == ["weighting:half_sum"] and len(data["plugins"]["weighting:half_sum"]) == 16
