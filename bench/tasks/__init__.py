"""Task kinds (``target:`` of a task): the built-in ones register here; see :mod:`bench.tasks.base`."""

from bench.tasks import (  # noqa: F401  (built-ins)
    classification,
    depth,
    multi_label,
    normals,
    regression,
    segmentation,
    token_classification,
)
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
