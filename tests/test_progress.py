"""Progress inside a cell when output is not a terminal: a plain line per interval (here 0 s: every step), with the
cell, the stage, epoch and step of total, loss, samples/s and the ETAs; ``BENCH_PROGRESS=0`` silences them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from bench.cli import main
from tests.conftest import FAST, REPO

LINE = re.compile(r"^\[(\d)/2\] synthetic naive_mtl seed=(\d) \| joint\[equal\] s\d: epoch (\d)/2, step (\d+)/(\d+), "
                  r"loss \d+\.\d{4}, [\d,]+ samples/s \| ETA stage \d+m\d\ds, cell (\S+), run (\S+)$")


@pytest.mark.slow
def test_piped_run_prints_a_line_per_interval(tmp_path):
    """A real two-cell run with stdout in a file and the interval set to 0 s: one line per training step."""
    log = tmp_path / "out.log"
    env = {**os.environ, "BENCH_PROGRESS": "1", "BENCH_PROGRESS_INTERVAL": "0", "PYTHONUNBUFFERED": "1",
           "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        rc = subprocess.run([sys.executable, "-m", "bench", "run", *FAST, "strategy=naive_mtl", "seeds=2",
                             f"results_dir={tmp_path / 'results'}"], cwd=REPO, stdout=out, stderr=subprocess.PIPE,
                            text=True, env=env, timeout=300)
    text = log.read_text()
    assert rc.returncode == 0, rc.stderr + text
    lines = [m for m in map(LINE.match, text.splitlines()) if m]
    total = int(lines[0][5])
    for cell in ("1", "2"):
        steps = [int(m[4]) for m in lines if m[1] == cell]
        assert steps == list(range(1, total + 1)), steps  # every step of the stage, in order, of the right total
        epochs = {int(m[3]) for m in lines if m[1] == cell}
        assert epochs == {1, 2}
    first = [m for m in lines if m[1] == "1"]
    second = [m for m in lines if m[1] == "2"]
    assert {(m[6], m[7]) for m in first} == {("?", "?")}  # no cell has finished yet: nothing to estimate from
    assert all(re.fullmatch(r"\d+m\d\ds", m[6]) and re.fullmatch(r"\d+m\d\ds", m[7]) for m in second)
    assert text.index("[1/2] synthetic naive_mtl seed=0: done") < text.index(second[0][0])
    assert "\r" not in text  # no bar in a file


def _run_in_process(results, capsys, *extra: str) -> str:
    assert main(["run", *FAST, "strategy=naive_mtl", f"results_dir={results}", *extra]) == 0
    return capsys.readouterr().out


@pytest.mark.integration
def test_bench_progress_0_silences(results, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_PROGRESS", "0")
    monkeypatch.setenv("BENCH_PROGRESS_INTERVAL", "0")
    out = _run_in_process(results, capsys)
    assert "done in" in out and "| ETA stage" not in out


@pytest.mark.integration
def test_interval_throttles(results, capsys, monkeypatch):
    """The throttle is time-based: with an interval longer than the run, a cell of 20 steps prints no line; with
    the module default patched to 0 s (no environment variable), every step does."""
    from bench.engine import console

    monkeypatch.setenv("BENCH_PROGRESS", "1")
    monkeypatch.setenv("BENCH_PROGRESS_INTERVAL", "3600")
    assert "| ETA stage" not in _run_in_process(results, capsys)
    monkeypatch.delenv("BENCH_PROGRESS_INTERVAL")
    monkeypatch.setattr(console, "PROGRESS_INTERVAL_S", 0.0)
    out = _run_in_process(results, capsys, "force=true")
    assert len([line for line in out.splitlines() if "| ETA stage" in line]) >= 10
