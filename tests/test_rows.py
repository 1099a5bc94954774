"""Where a row's trajectories come from (:func:`bench.stages.make_row`): the last stage that has any, unless the
strategy names one."""

from __future__ import annotations

from pathlib import Path

from bench.stages import Checkpoint, Outcome, make_row


def _outcome(stage: str, losses: list[float] | None, label: str | None = None) -> Outcome:
    info = {"metrics": {"test": {stage: {"accuracy": 0.5}}}, "telemetry": {"wall_time_s": 1.0}}
    if losses is not None:
        info.update(trajectories={"loss": losses}, weights_label=label)
    return Outcome(Checkpoint(stage, f"k-{stage}", Path("nowhere"), (stage,)), info)


def test_the_last_stage_with_a_trajectory_gives_the_rows_unless_one_is_named():
    tune = _outcome("finetune", [3.0, 2.0], "tune weights")
    fused = _outcome("fuse", None)
    joint = _outcome("joint", [1.0, 0.5], "joint weights")
    assert make_row(tune, fused, joint).trajectories == {"loss": [1.0, 0.5]}
    assert make_row(tune, fused, joint).weights_label == "joint weights"
    assert make_row(tune, fused).trajectories == {"loss": [3.0, 2.0]}  # fusion has none: the fine-tune's
    named = make_row(tune, fused, joint, trajectory_from=tune)
    assert (named.trajectories, named.weights_label) == ({"loss": [3.0, 2.0]}, "tune weights")
    assert named.metrics == make_row(tune, fused, joint).metrics  # the order of outcomes is left alone
    assert make_row(tune, joint, trajectory_from=fused).trajectories == {}  # a stage without one: none
