"""Task kinds (``target:`` of a task): the built-in ones register here; see :mod:`bench.tasks.base`."""

from bench.tasks import classification, multi_label, regression, token_classification  # noqa: F401  (built-ins)
from bench.tasks.base import (
    TASK_KINDS,
    Kept,
    TaskKind,
    check_task,
    directions,
    primaries,
    register_task_kind,
    task_kind,
)

__all__ = ["TASK_KINDS", "Kept", "TaskKind", "check_task", "directions", "primaries", "register_task_kind", "task_kind"]
