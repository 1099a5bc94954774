"""Task schedules: a model built on some tasks, then others arriving (or retiring), one step at a time.

``schedule=[[bbc,sentiment],[device],[-bbc]]`` (a top-level key, or ``schedule:`` in a suite) runs every strategy
step by step: a :class:`~bench.strategy.ScheduleStrategy` (``retrain``, ``sequential``, ``joint_continue``,
``merge_in``) carries its model from step to step, a static strategy (``separate``, ``fuse_then_joint``, ...) runs
its ``run`` on each step's tasks. :func:`run_schedule` records each step's scores and cost in the row
(:class:`bench.record.ScheduleStep`); the report turns them into backward/forward transfer, forgetting and the
task-arrival plot (docs/dynamic_tasks.md).
"""

from bench.schedule.driver import run_schedule, schedule_of

__all__ = ["run_schedule", "schedule_of"]
