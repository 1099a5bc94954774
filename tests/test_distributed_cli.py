"""``bench run ... procs=2`` as a user runs it: a cell on two processes runs as two submitit tasks and writes the
record one process would; on torch's elastic launcher (gloo) it resumes after one of its ranks is killed and ends
where the uninterrupted run did. (A setting that cannot work is one line before anything trains:
tests/test_cli_errors.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUN = ["suite=synthetic_conflict", "strategy=naive_mtl", "train.epochs=2", "report=false"]
#: float32 sums of a batch in two halves instead of one: the tolerance on test metrics after the run
TOL = 1e-5

KILLER = textwrap.dedent('''
    import os, signal
    from pathlib import Path
    from bench import distributed
    from bench.weighting import register_weighting
    from bench.weighting.simple import Equal

    @register_weighting("kill_rank1")
    class KillRank1(Equal):
        """Equal weights; rank 1 kills itself once, at its 60th step (in the second epoch)."""

        def after_step(self, step=None):
            self.n = getattr(self, "n", 0) + 1
            marker = Path(os.environ["KILL_MARKER"])
            if distributed.current().rank == 1 and self.n == 60 and not marker.exists():
                marker.write_text("killed")
                os.kill(os.getpid(), signal.SIGKILL)
''')


def _bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "run", *args], capture_output=True, text=True,
                          env={**os.environ, "BENCH_PROGRESS": "0", **(env or {})}, timeout=600)


def _record(results: Path) -> dict:
    (path,) = results.glob("synthetic_conflict/cells/*/*/record.json")
    return json.loads(path.read_text())


def _metrics(record: dict) -> dict[str, float]:
    (row,) = record["rows"].values()
    return {f"{t}.{m}": v for t, ms in row["metrics"]["test"].items() for m, v in ms.items()}


def _close(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[k] - b[k]) for k in a)


@pytest.fixture(scope="module")
def procs2(tmp_path_factory) -> dict:
    """The record of the plain cell run on two processes (equal weights) as two submitit tasks: the uninterrupted
    two-process run every test here compares with (one two-process run serves all three; the elastic launcher's
    own run is the killed-and-resumed one)."""
    root = tmp_path_factory.mktemp("procs2")
    out = _bench(*RUN, f"results_dir={root}", "procs=2", "launcher=submitit_local")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return _record(root)


def test_procs2_as_two_submitit_tasks(procs2):
    assert procs2["runtime"]["procs"] == 2 and "SUBMITIT_LOCAL_JOB_ID" in procs2["runtime"]


def test_procs2_writes_the_record_of_one_process(tmp_path, procs2):
    one = _bench(*RUN, f"results_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    r1, r2 = _record(tmp_path / "one"), procs2
    assert r2["runtime"]["procs"] == 2 and "procs" not in r1["runtime"]
    assert r1["cell"] == r2["cell"]  # procs is where a cell runs, not what it computes
    assert _close(_metrics(r1), _metrics(r2)) <= TOL
    (row1,), (row2,) = r1["rows"].values(), r2["rows"].values()
    assert row1["telemetry"]["train_samples"] == row2["telemetry"]["train_samples"]  # the global batch is counted


def test_a_killed_rank_fails_the_cell_in_one_line_and_the_rerun_resumes(tmp_path, procs2):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "killer.py").write_text(KILLER)
    args = [*RUN, "strategy.weighting=kill_rank1", f"plugin_dirs=[{plugins}]", "procs=2"]
    env = {"KILL_MARKER": str(tmp_path / "killed")}
    first = _bench(*args, f"results_dir={tmp_path / 'k'}", env=env)
    assert first.returncode == 1
    assert "rank 1 of 2 died (killed by signal SIGKILL); the others were stopped; rerun the command to resume" \
        in first.stdout
    assert "Traceback" not in first.stdout
    (failed,) = (tmp_path / "k").glob("synthetic_conflict/cells/*/*/failed.json")
    assert "rank 1 of 2 died" in json.loads(failed.read_text())["error"]
    assert list((tmp_path / "k").glob("synthetic_conflict/stages/joint/*/resume.safetensors"))
    again = _bench(*args, f"results_dir={tmp_path / 'k'}", env=env)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    resumed = _record(tmp_path / "k")
    assert resumed["runtime"]["procs"] == 2 and "SUBMITIT_LOCAL_JOB_ID" not in resumed["runtime"]  # elastic launcher
    # the killer weights as equal does: the resumed cell ends where the uninterrupted one did, exactly (the resume
    # file restores every rank)
    assert _close(_metrics(resumed), _metrics(procs2)) == 0.0
