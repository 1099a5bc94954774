"""``bench run ... procs=2`` as a user runs it: a cell on two processes of this machine (torch's elastic launcher,
gloo) writes the record one process would, resumes after one of its ranks is killed, runs as two submitit tasks,
and a setting that cannot work is one line before anything trains."""

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


def test_procs2_writes_the_record_of_one_process(tmp_path):
    one, two = _bench(*RUN, f"results_dir={tmp_path / 'one'}"), _bench(*RUN, f"results_dir={tmp_path / 'two'}",
                                                                       "procs=2")
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    r1, r2 = _record(tmp_path / "one"), _record(tmp_path / "two")
    assert r2["runtime"]["procs"] == 2 and "procs" not in r1["runtime"]
    assert r1["cell"] == r2["cell"]  # procs is where a cell runs, not what it computes
    assert _close(_metrics(r1), _metrics(r2)) <= TOL
    (row1,), (row2,) = r1["rows"].values(), r2["rows"].values()
    assert row1["telemetry"]["train_samples"] == row2["telemetry"]["train_samples"]  # the global batch is counted
    # only rank 0 wrote: one stage folder per stage, no scratch left in the store
    assert not list((tmp_path / "two").rglob("*.tmp*"))


def test_a_killed_rank_fails_the_cell_in_one_line_and_the_rerun_resumes(tmp_path):
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
    whole = _bench(*args, f"results_dir={tmp_path / 'w'}", env=env)  # the marker exists: nobody is killed
    assert whole.returncode == 0, whole.stderr[-2000:]
    resumed, uninterrupted = _record(tmp_path / "k"), _record(tmp_path / "w")
    assert _close(_metrics(resumed), _metrics(uninterrupted)) == 0.0  # the resume file restores every rank exactly


def test_procs2_as_two_submitit_tasks(tmp_path):
    out = _bench(*RUN, f"results_dir={tmp_path}", "procs=2", "launcher=submitit_local")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    record = _record(tmp_path)
    assert record["runtime"]["procs"] == 2 and "SUBMITIT_LOCAL_JOB_ID" in record["runtime"]


@pytest.mark.parametrize("args, message", [
    (["procs=3"], "procs=3 x workers=1 processes exceed the"),
    (["procs=2", "train.batch_size=63"], "procs=2 cannot split the train.batch_size=63 of suite synthetic_conflict "
                                         "into equal slices; use a batch size divisible by 2 (train.batch_size=64)"),
    (["procs=2", "workers=2"], "procs=2 with workers=2: a cell's processes are started by the command itself"),
    (["procs=0"], "procs=0 must be a positive integer"),
])
def test_a_setting_that_cannot_work_is_one_line(tmp_path, args, message):
    if args == ["procs=3"] and (os.cpu_count() or 1) >= 3:
        args, message = [f"procs={os.cpu_count() + 1}"], f"procs={os.cpu_count() + 1} x workers=1 processes exceed"
    out = _bench(*RUN, f"results_dir={tmp_path}", *args)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "synthetic_conflict" / "stages").exists()  # nothing trained
