"""How long a typo waits for its one line: ``bench run ... trian.epochs=2`` against the floor any Python command
with bench's own validation pays, ``python -c pass`` plus ``python -c "import pydantic, yaml"`` (each a fresh
process, timed alternately with the typo, so the ratio holds on a loaded machine as on an idle one).

The bound, RATIO_MAX = 6: what the typo has to import beyond the floor is measured with ``-X importtime`` at about
3 floors (idle, 2 cores): hydra's override parser (the grammar, ~0.08 s), the launcher registry (submitit,
~0.04 s), bench's pydantic models (~0.06 s) and reading the plug-in files (bench/plugins.py, ~0.03 s); the floor
itself is ~0.08 s. So a typo answers in ~0.3-0.4 s idle, and 6 floors (~0.5 s idle) leaves room for noise while
staying well under the issue's 1 s. Before the pre-check it took ~60 floors (4-6 s: torch, sklearn, pandas, ...).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.conftest import paired, report

RATIO_MAX = 6.0
TYPO = [sys.executable, "-m", "bench", "run", "suite=synthetic", "strategy=naive_mtl", "trian.epochs=2"]


def _run(cmd: list[str], cwd: Path, code: int = 0) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr[-2000:]


def test_a_typo_answers_within_a_few_python_startups(benchmark, tmp_path):
    def typo() -> None:
        _run(TYPO + [f"results_dir={tmp_path / 'results'}"], tmp_path, code=2)

    def floor() -> None:
        _run([sys.executable, "-c", "pass"], tmp_path)
        _run([sys.executable, "-c", "import pydantic, yaml"], tmp_path)

    t_typo, t_floor = paired(typo, floor, rounds=7, warmup=1)
    benchmark.pedantic(typo, rounds=1, iterations=1)
    ratio = t_typo / t_floor
    report(benchmark, "typo answer / (python -c pass + import pydantic, yaml)", ratio, f"<= {RATIO_MAX:g}",
           typo_s=round(t_typo, 3), floor_s=round(t_floor, 3))
    assert ratio <= RATIO_MAX, f"a typo took {t_typo:.2f}s = {ratio:.1f}x the floor of {t_floor:.2f}s"
