"""``train.compile=true``: the steps during which torch.compile compiled are timed apart, and throughput, step time and
MFU are reported over the other (steady) steps; ``train_time_s`` stays the whole training time. Real compilation
(inductor on the CPU), on the synthetic suite's small MLP."""

from __future__ import annotations

import io
import json

import pytest
import torch

from bench import safestate
from bench.engine import RESUME_FILE, PhaseTimer
from bench.runner import execute, make_plan
from tests.conftest import FAST, Stop, records, stop_at, tiny_trainer

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def _joint_stage(results, *extra) -> tuple[dict, dict]:
    """(the joint stage's telemetry from its stage.json, the record's row telemetry) of one naive_mtl cell."""
    buf = io.StringIO()
    code = execute(make_plan([*FAST, f"results_dir={results}", "strategy=naive_mtl", *extra]), out=buf)
    assert code == 0, buf.getvalue()
    (stage,) = results.glob("synthetic/stages/joint/*/stage.json")
    (rec,) = records(results)
    return json.loads(stage.read_text())["telemetry"], rec["rows"]["naive_mtl"]["telemetry"]


def test_compile_time_is_reported_apart_from_steady_throughput(results):
    torch._dynamo.reset()  # compile here even if an earlier test of this process compiled the same MLP
    tel, row = _joint_stage(results, "train.compile=true")
    assert tel["compile_steps"] >= 1 and tel["compile_samples"] >= 1
    assert 0 < tel["compile_time_s"] < tel["train_time_s"]
    assert tel["throughput_excludes_compile"] is True
    steady_steps = tel["steps"] - tel["compile_steps"]
    assert steady_steps >= 1
    steady_time = tel["train_time_s"] - tel["compile_time_s"]
    assert tel["train_samples_per_s"] == pytest.approx((tel["train_samples"] - tel["compile_samples"]) / steady_time,
                                                       rel=1e-9)
    assert tel["step_time_ms"] == pytest.approx(1000 * steady_time / steady_steps, rel=1e-9)
    # the honest total is still there, and compiling made it far slower than the steady rate
    assert tel["train_samples"] / tel["train_time_s"] < tel["train_samples_per_s"]
    # the record's row lists the stage with its steady throughput
    (joint,) = [s for s in row["stages"] if s["stage"] == "joint"]
    assert joint["train_samples_per_s"] == tel["train_samples_per_s"]


def test_without_compile_nothing_is_left_out(results):
    tel, _ = _joint_stage(results)
    assert not any(k.startswith("compile") or k == "throughput_excludes_compile" for k in tel)
    assert tel["train_samples_per_s"] == tel["train_samples"] / tel["train_time_s"]  # the formula of before, exactly
    assert tel["step_time_ms"] == 1000 * tel["train_time_s"] / tel["steps"]




def test_compile_counts_survive_a_resume(tmp_path):
    """The resume state carries the compile counts: a resumed stage reports the compile time of the run it
    continues."""
    torch._dynamo.reset()

    with pytest.raises(Stop):
        tiny_trainer(tmp_path, stop_at(2), compile=True).fit()
    saved = safestate.load(tmp_path / RESUME_FILE, "resume")["state"]
    assert saved["epoch"] == 1 and saved["compile_steps"] >= 1 and saved["compile_time"] > 0
    tel = tiny_trainer(tmp_path, compile=True).fit().telemetry
    assert tel["steps"] == 18 and tel["compile_steps"] >= saved["compile_steps"]
    assert tel["compile_time_s"] >= saved["compile_time"] and tel["compile_samples"] >= saved["compile_samples"]


class _Event:
    """A stand-in for torch.cuda.Event: a timestamp in ms, read by elapsed_time."""

    def __init__(self, ms: float):
        self.ms = ms

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other: _Event) -> float:
        return other.ms - self.ms


@pytest.mark.parametrize("cuda", [False, True])
def test_phase_timer_sets_a_compiling_step_aside(monkeypatch, cuda):
    """The phases of a step that compiled go to their own totals, on the CPU (perf_counter) and on a GPU (events
    read at the epoch's end); the steady steps' totals are those of the steady steps alone."""
    clock = iter(range(0, 10_000, 10))  # every reading 10 ms (CPU: seconds) after the last
    if cuda:
        monkeypatch.setattr(PhaseTimer, "_now", lambda self: _Event(next(clock)))
    else:
        monkeypatch.setattr("bench.engine.telemetry.time.perf_counter", lambda: next(clock) / 1000)
    totals, aside = {"forward": 0.0, "backward": 0.0}, {}
    timer = PhaseTimer(torch.device("cuda" if cuda else "cpu"), totals)
    for compiled in (True, False, False):
        point = timer.checkpoint()
        timer.start()
        timer.mark("forward")
        timer.mark("backward")
        if compiled:
            timer.set_aside(point, aside)
    timer.flush()
    assert totals == pytest.approx({"forward": 0.02, "backward": 0.02})
    assert aside == pytest.approx({"forward": 0.01, "backward": 0.01})
