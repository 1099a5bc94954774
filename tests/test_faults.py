"""Faults the store must survive: damaged entries (healed by a rerun, found by `bench verify`, skipped by the report
with a footnote) and a disk that is full or read-only (one line, exit 1, nothing half-written reads as complete).

Each section keeps its own tests; a fault is injected into a copy of one clean store the module makes once.
Further sections: stop signals (SIGTERM/SIGUSR2: exit 143/140 with one line, finished work kept, an exact resume),
no pickle (resume states and caches are safetensors + JSON; old pickles are never read) and bad input (one line,
exit 2, nothing written).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from bench import safestate
from bench import store as S
from bench.cli import main
from bench.errors import StoreError, StoreWarning
from bench.verify import verify
from tests.conftest import FAST, REPO, Stop, records, run_cli, stop_at

SUITE = "synthetic"
RUN = [*FAST, "strategy=naive_mtl,separate"]  # naive_mtl first: its cell finishes before separate's fine-tunes


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """A clean store of two cells (naive_mtl, separate), made once: every test damages a copy."""
    results = tmp_path_factory.mktemp("clean") / "results"
    assert main(["run", *RUN, f"results_dir={results}"]) == 0
    return results


def _copy(clean: Path, dest: Path) -> Path:
    shutil.copytree(clean, dest)
    return dest


def _metrics(results: Path) -> dict[str, dict]:
    """strategy -> {row: metrics} of every record in the store."""
    out = {}
    for path in sorted((results / SUITE / "cells").glob("*/*/record.json")):
        rec = json.loads(path.read_text())
        out[rec["strategy"]] = {name: row["metrics"] for name, row in rec["rows"].items()}
    return out


def _one(results: Path, pattern: str) -> Path:
    (hit,) = sorted((results / SUITE).glob(pattern))
    return hit


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# --- damage ----------------------------------------------------------------------------------------------------


def _damage(results: Path) -> dict[str, Path]:
    """The issue's three faults: a truncated record, a stage.json that is not JSON, an empty weights file."""
    record = _one(results, "cells/naive_mtl/*/record.json")
    record.write_bytes(record.read_bytes()[:300])
    joint = _one(results, "stages/joint/*")
    (joint / "stage.json").write_text("{not json\n")
    init = _one(results, "stages/init/*")
    (init / "backbone.safetensors").write_bytes(b"")
    return {"record": record.parent, "joint": joint, "init": init}


@pytest.mark.slow
def test_rerun_heals_damaged_entries_with_a_clean_runs_metrics(clean, tmp_path):
    results = _copy(clean, tmp_path / "results")
    damaged = _damage(results)
    truncated = (damaged["record"] / "record.json").read_bytes()

    found = {f.entry: f.problem for f in verify(results, SUITE).damaged}
    rel = {name: f"{SUITE}/{folder.relative_to(results / SUITE).as_posix()}" for name, folder in damaged.items()}
    assert set(found) == set(rel.values())
    assert found[rel["record"]].startswith("record.json is unreadable (JSONDecodeError: ")
    assert found[rel["joint"]].startswith("stage.json is unreadable (JSONDecodeError: ")
    size = (clean / SUITE / "stages/init" / damaged["init"].name / "backbone.safetensors").stat().st_size
    assert found[rel["init"]] == f"backbone.safetensors holds 0 bytes, stage.json recorded {size}"

    proc = run_cli("run", *RUN, f"results_dir={results}")  # the same command again
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning: damaged entry")]
    assert len(warned) == 3, proc.stderr
    for folder in damaged.values():
        (line,) = [w for w in warned if f"entry {folder} (" in w]
        assert f"moved to {results / SUITE / 'quarantine' / folder.relative_to(results / SUITE)}, recomputing it" \
            in line
    assert _metrics(results) == _metrics(clean)  # recomputed exactly

    quarantine = results / SUITE / "quarantine"
    assert (quarantine / "cells/naive_mtl" / damaged["record"].name / "record.json").read_bytes() == truncated
    assert (quarantine / "stages/joint" / damaged["joint"].name / "stage.json").read_text() == "{not json\n"
    assert (quarantine / "stages/init" / damaged["init"].name / "backbone.safetensors").stat().st_size == 0
    assert all((d / S.QUARANTINE_NOTE).exists() for d in quarantine.glob("*/*/*"))
    assert main(["verify", f"suite={SUITE}", f"results_dir={results}", "deep=true"]) == 0


@pytest.mark.integration
def test_verify_deep_finds_flipped_bytes_and_repair_makes_a_rerun_recompute_exactly_them(clean, tmp_path, capsys):
    results = _copy(clean, tmp_path / "results")
    joint = _one(results, "stages/joint/*")
    weights = joint / "backbone.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes: only a hash sees it
    weights.write_bytes(bytes(data))
    cell = _one(results, "cells/naive_mtl/*")

    assert main(["verify", f"suite={SUITE}", f"results_dir={results}"]) == 0  # cheap checks: sizes agree
    assert main(["verify", f"suite={SUITE}", f"results_dir={results}", "deep=true"]) == 1
    out = capsys.readouterr().out
    assert "repair=true" in out
    found = {f.entry: (f.status, f.problem) for f in verify(results, SUITE, deep=True).damaged}
    assert found == {
        f"{SUITE}/stages/joint/{joint.name}": ("damaged", "backbone.safetensors does not match its recorded blake2b "
                                               "hash (same size, different bytes)"),
        f"{SUITE}/cells/naive_mtl/{cell.name}": ("missing stage", f"made from the damaged stage joint/{joint.name}"),
    }

    assert main(["verify", f"suite={SUITE}", f"results_dir={results}", "deep=true", "repair=true"]) == 0
    quarantine = results / SUITE / "quarantine"
    assert (quarantine / "stages/joint" / joint.name / "backbone.safetensors").read_bytes() == bytes(data)
    assert (quarantine / "cells/naive_mtl" / cell.name / "record.json").exists()
    untouched = {p: p.stat().st_mtime_ns for p in (results / SUITE / "stages").glob("*/*/stage.json")}

    capsys.readouterr()
    assert main(["run", *RUN, f"results_dir={results}"]) == 0
    assert "1 cell(s) computed, 1 from the store" in capsys.readouterr().out  # naive_mtl again; separate untouched
    assert _metrics(results) == _metrics(clean)
    now = {p: p.stat().st_mtime_ns for p in (results / SUITE / "stages").glob("*/*/stage.json")}
    assert {p for p in now if now[p] != untouched.get(p)} == {joint / "stage.json"}  # exactly the repaired stage
    assert main(["verify", f"suite={SUITE}", f"results_dir={results}", "deep=true"]) == 0


@pytest.mark.slow
def test_report_skips_a_damaged_record_with_one_warning_and_a_footnote(clean, tmp_path):
    results = _copy(clean, tmp_path / "results")
    record = _one(results, "cells/naive_mtl/*/record.json")
    text = record.read_text()
    record.write_text(text.replace('"seed": 0', '"seed": 7', 1))  # parses, but no longer matches its own hash

    proc = run_cli("report", f"suite={SUITE}", f"results_dir={results}", f"out={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert warned == [f"warning: skipping record {record}: record.json does not match its own hash (edited or "
                      f"corrupted after it was written); `python -m bench verify suite={SUITE} results_dir={results} "
                      f"repair=true` moves it aside, then rerunning its `bench run` command recomputes it"]
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert f"- Note: 1 record file(s) skipped as unusable (damaged, unreadable or of another schema), so their " \
           f"cells are missing here; run `python -m bench verify suite={SUITE} results_dir={results}`" in board
    assert "`naive_mtl`" not in board and "`separate`" in board


@pytest.mark.integration
def test_markers_written_before_sealing_are_accepted(clean, tmp_path):
    results = _copy(clean, tmp_path / "results")
    markers = [*(results / SUITE / "stages").glob("*/*/stage.json"), *(results / SUITE / "cells").glob("*/*/*.json")]
    for marker in markers:  # what an older bench wrote: no integrity object
        data = json.loads(marker.read_text())
        data.pop(S.INTEGRITY)
        marker.write_text(json.dumps(data))
    assert all(S.Store.done(m.parent, m.name) for m in markers)
    verdict = verify(results, SUITE, deep=True)
    assert not verdict.damaged and verdict.unsealed == len(markers)
    init = _one(results, "stages/init/*")
    (init / "backbone.safetensors").write_bytes(b"")  # an unsealed entry's empty weights are still caught
    assert not S.Store.done(init)
    assert [f.problem for f in verify(results, SUITE).damaged] == ["backbone.safetensors is empty"]


@pytest.mark.slow
def test_verify_lists_leftovers_and_entries_in_use_without_calling_them_damage(clean, tmp_path, capsys):
    from filelock import FileLock

    results = _copy(clean, tmp_path / "results")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    joint = _one(results, "stages/joint/*")
    orphan = joint / f"backbone.safetensors.tmp{dead.pid}"
    orphan.write_bytes(b"torn")
    stopped = results / SUITE / "stages" / "joint" / "0123456789abcdef"  # a killed run's unfinished stage
    stopped.mkdir()
    (stopped / "resume.safetensors").write_bytes(b"state")
    init = _one(results, "stages/init/*")
    with FileLock(str(init / ".lock")):  # a running process computing or reading it
        verdict = verify(results, SUITE)
        assert main(["verify", f"suite={SUITE}", f"results_dir={results}", "repair=true"]) == 0
    found = {(f.status, f.entry) for f in verdict.findings}
    assert found == {("orphan file", f"{SUITE}/stages/joint/{joint.name}/{orphan.name}"),
                     ("incomplete", f"{SUITE}/stages/joint/{stopped.name}"),
                     ("in use", f"{SUITE}/stages/init/{init.name}")}
    assert not verdict.damaged
    assert not orphan.exists() and (stopped / "resume.safetensors").exists()  # repair removes only the dead's file
    assert "repaired 1" in capsys.readouterr().out


# --- disk ------------------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("exc, number, start", [
    (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC, "out of disk space: writing"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT, "over the disk quota: writing"),
    ("SafetensorError: Error while serializing: I/O error: No space left on device (os error 28)", errno.ENOSPC,
     "out of disk space: writing"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), errno.EIO,
     "a write failed (short write): writing"),  # torch's short write, with room on the disk: not called full
    (OSError(errno.EROFS, "Read-only file system"), errno.EROFS, "cannot write"),
    (OSError(errno.EACCES, "Permission denied"), errno.EACCES, "permission denied:"),
])
def test_write_failures_become_one_line_store_errors(tmp_path, exc, number, start):
    if isinstance(exc, str):
        from safetensors import SafetensorError

        exc = SafetensorError(exc.split(": ", 1)[1])
    path = tmp_path / "results" / SUITE / "stages" / "joint" / "k" / "backbone.safetensors"
    err = S.as_store_error(exc, path)
    assert isinstance(err, StoreError) and err.errno == number
    assert str(err).startswith(start) and "\n" not in str(err) and str(path) in str(err)
    assert S.as_store_error(TypeError("a bug"), path) is None
    assert S.as_store_error(OSError(errno.ENOENT, "gone"), path) is None


@pytest.mark.integration
def test_a_full_disk_mid_run_is_one_line_that_quotes_the_estimate_and_keeps_finished_cells(tmp_path, monkeypatch,
                                                                                            capsys):
    import bench.checkpoint as C

    real, calls = C.save_file, []

    def save_file(tensors, filename, metadata=None):  # a short write on the fifth checkpoint file, then ENOSPC
        calls.append(filename)
        if len(calls) < 5:
            return real(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(C, "save_file", save_file)
    results = tmp_path / "results"
    assert main(["run", *RUN, f"results_dir={results}"]) == 1  # the runner estimates what the plan needs first
    err = capsys.readouterr().err
    (line,) = _error_lines(err)
    assert "Traceback" not in err
    failed = Path(calls[-1][: calls[-1].rindex(".tmp")])  # separate's first fine-tune
    assert line.startswith(f"error: out of disk space: writing {failed} failed (No space left on device); ")
    assert re.search(r"this run needs about \d+(\.\d)? (kB|MB)", line), line
    assert f"finished in this run and kept: naive_mtl seed=0; {results / SUITE / 'cells'} holds 1 finished cell(s)" \
        in line
    assert not list(results.rglob("*.tmp*")) and not S.Store.done(failed.parent)
    assert not verify(results, SUITE).damaged


def _mount_tmpfs(where: Path, size: str) -> None:
    """A real small file system (root only); skips the test where none can be mounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


@pytest.fixture
def mounts():
    """Mount points to unmount after the test, whatever happened."""
    made: list[Path] = []
    yield made
    for where in made:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.slow
def test_a_real_full_disk_keeps_finished_cells_and_a_rerun_with_room_completes(clean, tmp_path, mounts, capsys):
    results = tmp_path / "disk"
    _mount_tmpfs(results, "400k")  # the two cells need about 0.5 MB
    mounts.append(results)
    proc = run_cli("run", *RUN, f"results_dir={results}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert line.startswith("error: out of disk space: writing ") and " free there, this run needs about " in line
    kept = sorted((results / SUITE / "cells").glob("*/*/record.json"))
    assert f"{results / SUITE / 'cells'} holds {len(kept)} finished cell(s)" in line
    assert not verify(results, SUITE).damaged  # what is there is sound; the rest reads as unfinished

    subprocess.run(["mount", "-o", "remount,size=4m", str(results)], check=True)
    capsys.readouterr()
    assert main(["run", *RUN, f"results_dir={results}"]) == 0
    assert f"{2 - len(kept)} cell(s) computed, {len(kept)} from the store" in capsys.readouterr().out
    assert _metrics(results) == _metrics(clean)


def _read_only(results: Path) -> None:
    """Make ``results`` unwritable: a read-only remount of a tmpfs as root, else chmod (root ignores chmod)."""
    if os.geteuid() == 0:
        subprocess.run(["mount", "-o", "remount,ro", str(results)], check=True)
    else:
        for p in [results, *results.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)


@pytest.mark.slow
def test_a_read_only_store_reads_reports_elsewhere_and_refuses_new_cells_in_one_line(clean, tmp_path, mounts,
                                                                                     capsys):
    results = tmp_path / "archive"
    if os.geteuid() == 0:
        _mount_tmpfs(results, "4m")
        mounts.append(results)
        shutil.copytree(clean, results, dirs_exist_ok=True)
    else:
        _copy(clean, results)
    _read_only(results)

    capsys.readouterr()
    assert main(["run", *RUN, f"results_dir={results}"]) == 0  # finished: read, nothing locked or written
    assert "0 cell(s) computed, 2 from the store" in capsys.readouterr().out

    proc = run_cli("run", *RUN, "seed=1", f"results_dir={results}")  # new cells
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    (line,) = _error_lines(proc.stderr)
    assert "read-only file system" in line or "permission denied" in line
    assert f"`python -m bench report suite={SUITE} out=DIR` writes the report elsewhere" in line

    assert main(["report", f"suite={SUITE}", f"results_dir={results}", f"out={tmp_path / 'out'}"]) == 0
    assert "`naive_mtl`" in (tmp_path / "out" / "leaderboard.md").read_text()
    capsys.readouterr()
    assert main(["report", f"suite={SUITE}", f"results_dir={results}"]) == 1  # its default folder is in the store
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"suite={SUITE} out=DIR` writes the report elsewhere" in line
    assert main(["verify", f"suite={SUITE}", f"results_dir={results}", "deep=true"]) == 0


@pytest.mark.integration
def test_estimate_and_free_space_check(tmp_path, monkeypatch):
    from bench.strategy import STRATEGIES, discover

    discover()
    plan = [STRATEGIES.get("separate"), STRATEGIES.get("naive_mtl")]
    checkpoints, evaluations = S.planned_stages([c.own_checkpoints for c in plan],
                                                any(c.uses_finetunes for c in plan), n_tasks=5, seeds=2)
    assert (checkpoints, evaluations) == (2 * (1 + 5 + 1), 2 * (5 + 1))  # θ0, five shared fine-tunes, one joint
    need = S.estimate_bytes(24_000, checkpoints, evaluations, eval_examples=4_800, cells=4)
    assert S.check_free_space(tmp_path, need) is None  # the test disk has room for a few MB
    with pytest.warns(StoreWarning) as caught:
        message = S.check_free_space(tmp_path, 10**15)
    assert str(caught[0].message) == message and "1000.0 TB" in message and "\n" not in message


# --- signals ---------------------------------------------------------------------------------------------------

STOPPED = "terminated ({}): finished cells and stages are kept; rerun the same command to resume"
# two naive_mtl cells of 12 short epochs: the first finishes, the second is stopped part-way through its training
SIGNALLED = [*FAST, "train.epochs=12", "strategy=naive_mtl", "seeds=2"]


def _start(args: list[str], results: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench", "run", *args, f"results_dir={results}"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def _mid_second_cell(results: Path):
    """True once a cell is finished and the next one's training stage has saved an epoch (a finished stage deletes
    its resume state before its cell's record is written, so the state found is the running cell's)."""
    return lambda: (list(results.glob("*/cells/*/*/record.json"))
                    and list(results.glob("*/stages/joint/*/resume.safetensors")))


def _cells(results: Path) -> dict[str, dict]:
    """cell -> {row: (metrics, trajectories as JSON text: a NaN is not equal to itself)} of every record."""
    return {r["cell"]: {row: (v["metrics"], json.dumps(v["trajectories"], sort_keys=True))
                        for row, v in r["rows"].items()} for r in records(results)}


@pytest.mark.slow
def test_sigterm_mid_cell_exits_143_keeps_finished_work_and_a_rerun_matches_a_clean_run(tmp_path):
    results, clean = tmp_path / "results", tmp_path / "clean"
    proc = _start(SIGNALLED, results)
    _when(proc, _mid_second_cell(results))
    finished = {p: p.stat().st_mtime_ns for p in results.glob("*/cells/*/*/record.json")}
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert time.monotonic() - t0 < 10  # seconds: the cell unwinds, it does not finish
    assert stderr.splitlines() == [STOPPED.format("SIGTERM")]  # one line, no traceback
    assert {p: p.stat().st_mtime_ns for p in results.glob("*/cells/*/*/record.json")} == finished
    (resume,) = results.glob("*/stages/joint/*/resume.safetensors")  # the stopped stage keeps its last epoch
    epoch = safestate.load(resume, "resume")["state"]["epoch"]
    assert 1 <= epoch < 12

    rerun = run_cli("run", *SIGNALLED, f"results_dir={results}")  # the same command again
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed after epoch {epoch}" in rerun.stderr
    assert "1 cell(s) computed, 1 from the store" in rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert not list(results.rglob("resume.safetensors"))
    reference = run_cli("run", *SIGNALLED, f"results_dir={clean}")  # never interrupted
    assert reference.returncode == 0, reference.stderr
    assert _cells(results) == _cells(clean)  # metrics and loss/weight trajectories, exactly


@pytest.mark.slow
def test_a_second_sigterm_exits_at_once_and_leaves_no_worker_behind(tmp_path):
    results = tmp_path / "results"
    # long cells, and the event waited for is a worker's saved epoch: the workers are certain to be mid-training
    # for many epochs after it (a race with a short run finishing first is what this used to lose on a busy machine)
    proc = _start([*FAST, "train.epochs=400", "strategy=naive_mtl", "seeds=2", "workers=2"], results)
    _when(proc, lambda: list(results.glob("*/stages/joint/*/resume.safetensors")))
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    # 143 from the handler, or death by the signal itself when the first one had already unwound the command
    assert proc.returncode in (143, -signal.SIGTERM), stderr
    assert time.monotonic() - t0 < 5
    assert stderr.splitlines() == [STOPPED.format("SIGTERM")]
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


SLOW_UNWIND = """
import time
from bench.cli import StopSignals, Terminated
StopSignals("run").install()
try:
    print("ready", flush=True)
    time.sleep(60)
except Terminated as e:
    print("stopping", e.signum, flush=True)
    time.sleep(60)  # an unwind that takes long: the second signal must not wait for it
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_the_first_stop_signal_unwinds_and_a_second_exits_at_once(sig):
    proc = subprocess.Popen([sys.executable, "-c", SLOW_UNWIND], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(sig)
    assert proc.stdout.readline() == f"stopping {int(sig)}\n"  # the first one raised Terminated in the main thread
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 128 + sig and time.monotonic() - t0 < 5
    assert stderr.splitlines() == [STOPPED.format(sig.name)]


# --- no pickle -------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_the_package_never_unpickles_what_it_reads_from_the_store():
    """torch.load only with weights_only=True, numpy never with allow_pickle=True; the only pickle reader is CIFAR's
    own python-format dataset files (bench/data/online_vision.py), never a file bench wrote."""
    import ast

    package = REPO / "bench"
    bad = []
    for path in sorted(package.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(REPO).as_posix()
        if "weights_only=False" in text.replace(" ", ""):
            bad.append(f"{rel}: weights_only=False")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
            kw = {k.arg: k.value for k in node.keywords}
            if owner == "torch" and node.func.attr == "load":
                flag = kw.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    bad.append(f"{rel}:{node.lineno}: torch.load without weights_only=True")
            if "allow_pickle" in kw and not (isinstance(kw["allow_pickle"], ast.Constant)
                                             and kw["allow_pickle"].value is False):
                bad.append(f"{rel}:{node.lineno}: allow_pickle")
            if owner in ("pickle", "cloudpickle", "dill", "joblib") and node.func.attr in ("load", "loads"):
                if rel != "bench/data/online_vision.py":
                    bad.append(f"{rel}:{node.lineno}: {owner}.{node.func.attr}")
    assert not bad, bad


class _Planted:
    """What an attacker's pickle in a results folder would run when unpickled."""

    marker: Path

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def two_task_data(single_input: bool):
    """Two small tasks on 8-dimensional random inputs, a 3-class classification ``c`` and a regression ``r``: their
    configs, data (64 train and 32 validation examples; one shared split, or one per task for a task sampler) and
    preprocessor."""
    from bench.backbones.simple import ArrayPreprocessor
    from bench.config import TaskConfig
    from bench.encode import EncodedSplit

    tasks = [TaskConfig(name="c", input="vector", target="classification", num_classes=3),
             TaskConfig(name="r", input="vector", target="regression")]
    rng = np.random.default_rng(0)
    pre = ArrayPreprocessor("bench")

    def split(n):
        x = rng.standard_normal((n, 8)).astype(np.float32)
        return EncodedSplit(pre.encode(x), {"c": torch.as_tensor(rng.integers(0, 3, n)),
                                            "r": torch.as_tensor(rng.standard_normal(n).astype(np.float32))}, None)

    if single_input:
        shared = {"train": split(64), "validation": split(32)}
        return tasks, {t.name: shared for t in tasks}, pre
    return tasks, {t.name: {"train": split(64), "validation": split(32)} for t in tasks}, pre


def _trainer(work_dir: Path, weighting: str = "equal", on_epoch=None, epochs: int = 4):
    from bench.backbones.simple import MLP
    from bench.config import TrainConfig
    from bench.engine import Trainer
    from bench.model import MultiTaskModel
    from bench.weighting import build_weighting

    tasks, data, pre = two_task_data(single_input=False)  # multi-input: a task sampler
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(8, 16, 2), tasks)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, num_workers=0, log_every=3)
    return Trainer(model, tasks, data, build_weighting(weighting, tasks), cfg, 0, pre.collate, False,
                   work_dir=work_dir, on_epoch=on_epoch)




def _fit(trainer) -> tuple[list, str, dict]:
    res = trainer.fit()
    return res.history, json.dumps(res.trajectories, sort_keys=True), trainer.model.state_dict()


@pytest.mark.integration
@pytest.mark.parametrize("weighting", ["equal", "uncertainty", "gradnorm", "dwa", "upgrad", "nash_mtl"])
def test_a_resumed_training_stage_is_exact(tmp_path, weighting):
    """Killed after epoch 2 of 4 and resumed from resume.safetensors: the same history, trajectories and weights as
    an uninterrupted run (model, optimiser, schedule, numpy and torch RNG, batch streams, the balancer's own state
    and the logging interval cut by the epoch boundary all come back)."""
    history, traj, weights = _fit(_trainer(tmp_path / "clean", weighting))
    with pytest.raises(Stop):
        _trainer(tmp_path / "stopped", weighting, stop_at(3)).fit()
    assert safestate.load(tmp_path / "stopped" / "resume.safetensors", "resume")["state"]["epoch"] == 2
    resumed = _fit(_trainer(tmp_path / "stopped", weighting))
    assert resumed[0] == history and resumed[1] == traj
    assert all(torch.equal(a, b) for a, b in zip(resumed[2].values(), weights.values(), strict=True))


@pytest.mark.integration
def test_resume_and_cache_files_of_the_old_pickle_format_are_never_unpickled(tmp_path):
    from bench.backbones.simple import ArrayPreprocessor
    from bench.data.base import Split
    from bench.encode import _encode_cached

    marker = tmp_path / "pwned"
    work = tmp_path / "stage"
    work.mkdir()
    torch.save({"model": _Planted(marker)}, work / "resume.pt")  # what an older version (or an attacker) left
    clean = _fit(_trainer(tmp_path / "clean"))
    again = _fit(_trainer(work))  # restarts from scratch: the same run as a clean one
    assert again[:2] == clean[:2] and not marker.exists() and not (work / "resume.pt").exists()

    pre, cache = ArrayPreprocessor("bench"), tmp_path / "cache"
    x = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    split = Split(x, {"t": np.zeros(10)})
    fresh = _encode_cached(pre, split, cache, "tag")  # writes <key>.safetensors
    (stored,) = cache.glob("*.safetensors")
    torch.save({"x": _Planted(marker)}, stored.with_suffix(".pt"))
    stored.write_bytes(b"torn")  # and a torn new-format file: recomputed, not trusted
    enc = _encode_cached(pre, split, cache, "tag")
    assert torch.equal(enc["x"], fresh["x"]) and not marker.exists() and not list(cache.glob("*.pt"))
    assert torch.equal(safestate.load(stored, "encoded")["x"], fresh["x"])  # rewritten whole


@pytest.mark.integration
def test_an_unreadable_resume_state_restarts_the_stage_with_one_line(tmp_path, capsys):
    clean = _fit(_trainer(tmp_path / "clean"))
    work = tmp_path / "stage"
    work.mkdir()
    (work / "resume.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    again = _fit(_trainer(work))
    assert again[:2] == clean[:2]
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert line.startswith("[train] ignoring unreadable resume state (") and line.endswith("); the stage restarts")


# --- bad input -------------------------------------------------------------------------------------------------

_SEARCH = [a for a in FAST if a != "report=false"] + ["strategy=naive_mtl"]
_BASE = {"run": [*FAST, "strategy=naive_mtl"], "search": _SEARCH, "report": ["suite=synthetic"],
         "check": ["suite=synthetic"], "list": []}

BAD = [  # (command, arguments, what the one line must say); {tmp} is the test's folder
    # booleans are not numbers, switches take true/false only, numbers are finite
    ("run", ["train.epochs=true"], "train.epochs=true: true/false is not a number"),
    ("run", ["train.max_train_samples=true"], "train.max_train_samples=true: true/false is not a number"),
    ("run", ["train.patience=true"], "train.patience=true"),
    ("run", ["strategy.weights=[1,true,1,1,1]"], "weights=[1, True, 1, 1, 1]: true/false is not a number"),
    ("run", ["train.compile=yes"], "train.compile='yes': must be true or false, e.g. train.compile=true"),
    ("run", ["train.compile=1"], "train.compile=1: must be true or false"),
    ("run", ["backbone.pretrained=yes"], "backbone.pretrained='yes': must be true or false"),
    ("run", ["train.lr=1e999"], "train.lr=inf: must be a finite number"),
    ("run", ["train.lr=nan"], "train.lr=nan: must be a finite number"),
    ("run", ["train.lr=-inf"], "train.lr=-inf: must be a finite number"),
    ("run", ["train.temperature=inf"], "train.temperature=inf: must be a finite number"),
    ("run", ["train.grad_clip=nan"], "train.grad_clip=nan: must be a finite number"),
    ("run", ["sample_scale=nan"], "sample_scale=nan must be a positive number"),
    ("run", ["budget=4"], "budget=4 is now spelled sample_scale=4"),
    # params= files
    ("run", ["params={tmp}/malformed.yaml"], "malformed params file {tmp}/malformed.yaml:3:1: "),
    ("run", ["params={tmp}/list.yaml"], "must be a mapping of override keys to values"),
    ("run", ["params={tmp}/absent.yaml"], "params file '{tmp}/absent.yaml' does not exist"),
    ("run", ["params={tmp}"], "is not a file"),
    # empty lists and counts (checked by the planner, bench/plan.py)
    ("run", ["seed=[]"], "seed=[] is empty"),
    ("run", ["tasks=[]"], "tasks=[] is empty"),
    ("run", ["strategy=[]"], "strategy=[] is empty"),
    ("run", ["seeds=0"], "seeds=0 must be a positive integer"),
    ("run", ["seeds=true"], "seeds=True must be a positive integer"),
    ("run", ["seed=[0,true]"], "seed=[0, True] must be a non-negative integer"),
    # unknown names and keys
    ("run", ["train.epohcs=2"], "did you mean 'train.epochs'"),
    ("run", ["sede=3"], "unknown key 'sede'"),
    ("run", ["suite=synthetc"], "unknown suite 'synthetc'"),
    ("run", ["strategy=naive_mlt"], "unknown strategy 'naive_mlt'"),
    ("run", ["strategy.weighting=pcgradd"], "unknown weighting 'pcgradd'"),
    ("run", ["tasks=[nope]"], "has no task 'nope'"),
    ("run", ["launcher=nope"], "unknown launcher 'nope'"),
    # wrong types and ranges
    ("run", ["train.epochs=zero"], "train.epochs='zero'"),
    ("run", ["train.epochs=2.5"], "train.epochs=2.5"),
    ("run", ["train.batch_size=0"], "train.batch_size=0"),
    ("run", ["train.dropout=1.5"], "train.dropout=1.5"),
    ("run", ["train.precision=fp8"], "train.precision='fp8'"),
    ("run", ["budget.match=tokens"], "budget.match='tokens'"),
    ("run", ["report=maybe"], "report='maybe' must be true or false"),
    ("run", ["force=1"], "force=1 must be true or false"),
    ("run", ["workers=0"], "workers=0 must be a positive integer"),
    ("run", ["devices=[true]"], "devices=[True] must be a list of GPU ids"),
    ("run", ["strategy=fuse_then_joint", "strategy.fusion=ties", "strategy.fusion_params={k:20}"], "use k=0.2"),
    # the grammar
    ("run", ["foo"], "overrides look like key=value"),
    ("run", ["train.lr=["], "cannot parse override 'train.lr=['"),
    # other commands
    ("search", ["space=nope"], "has no search space 'nope'"),
    ("search", ["space=lambda", "trials=true"], "trials=True must be an integer >= 1"),
    ("search", ["space=lambda", "trials=nan"], "trials=nan must be an integer >= 1"),
    ("report", ["level=nan"], "confidence level nan must lie strictly between 0 and 1"),
    ("check", ["tolerance=nan"], "tolerance=nan must be a finite number >= 0"),
    ("list", ["foo=1"], "list takes plugin_dirs=[folder,...] only"),
]


@pytest.mark.integration
@pytest.mark.parametrize("command, args, needle", BAD, ids=[f"{c} {' '.join(a)}" for c, a, _ in BAD])
def test_a_bad_command_line_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, command, args, needle):
    (tmp_path / "malformed.yaml").write_text("train.lr: 0.01\nstrategy.weights: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- train.lr\n- 0.01\n")
    out = tmp_path / "results"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    where = [] if command == "list" else [f"results_dir={out}"]
    code = main([command, *_BASE[command], *where, *args])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert needle.replace("{tmp}", str(tmp_path)) in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists()
