"""Per-group Δm%: which group each task of a board is in, and the keys of the leaderboard's per-group Δm% columns.

A task's group is ``TaskConfig.group`` when the suite sets it, else its input kind (its modality: ``text``,
``image``, ``image_text``, ...). It decides no result (it is not part of a cell's configuration): the report reads it
from the suite's YAML when it finds the file, else from the records, where the run writes it (``TaskInfo.group``)
when the suite's tasks fall in more than one group.

A board whose main tasks fall in two or more groups gets one more score column per group, ``delta_m@<group>``
("Δm% <group>"): Δm% over that group's tasks only, against the row's own Δm% baseline, with the overall Δm%'s
interval and test restricted to those tasks (:class:`bench.report.inference.Inference`), its tests corrected as a
family of their own (:func:`bench.report.marks.add_inference`; docs/statistics.md, "Δm% per group"). A board with
one group, or whose tasks' groups are unknown, gets none, so its files are unchanged.

>>> groups = board_groups(["bbc", "mnist", "vqa", "sentiment"],
...                       {"bbc": "text", "sentiment": "text", "mnist": "image", "vqa": "image_text"})
>>> groups
{'text': ('bbc', 'sentiment'), 'image': ('mnist',), 'image_text': ('vqa',)}
>>> [key(g) for g in groups], group_of("delta_m@image"), is_group_key("delta_m")
(['delta_m@text', 'delta_m@image', 'delta_m@image_text'], 'image', False)
>>> restrict([("bbc", "accuracy"), ("mnist", "accuracy"), ("sentiment", "accuracy")], groups["text"])
[('bbc', 'accuracy'), ('sentiment', 'accuracy')]
>>> board_groups(["bbc", "sentiment"], {"bbc": "text", "sentiment": "text"})  # one group: no columns
{}
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.config import modality
from bench.record import Record

PREFIX = "delta_m@"  # a per-group column's key: delta_m@text (no "/" or ":", which name task and statistics columns)


def key(group: str) -> str:
    """The table key of ``group``'s Δm% column."""
    return PREFIX + group


def is_group_key(column: str) -> bool:
    return column.startswith(PREFIX)


def group_of(column: str) -> str:
    """The group of a per-group Δm% column's key (``delta_m@text`` -> ``text``)."""
    return column[len(PREFIX):]


def task_groups(records: Iterable[Record]) -> tuple[dict[str, str], list[str]]:
    """Task -> its group as the records say (``TaskInfo.group``; a record that carries only the task's ``input``
    gives that), and a note for each task whose records name different groups (the first record's is used)."""
    seen: dict[str, dict[str, None]] = {}
    for record in records:
        for task, info in record.tasks.items():
            kind = (info.model_extra or {}).get("input")
            group = info.group or (modality(kind) if kind else None)
            if group:
                seen.setdefault(task, {})[str(group)] = None
    groups = {task: next(iter(names)) for task, names in seen.items()}
    notes = [f"task {task} is in group {', '.join(names)} in different records; the per-group Δm% columns use "
             f"{groups[task]}" for task, names in seen.items() if len(names) > 1]
    return groups, notes


def declared_groups(tasks: object) -> dict[str, str]:
    """Task -> group as a suite's YAML declares its tasks now (``group``, else its modality); ``{}`` when it says
    nothing. The report prefers these to the records' (a group decides no result, so editing it reruns nothing).

    >>> declared_groups([{"name": "bbc", "input": "text"}, {"name": "mnist", "input": "image", "group": "digits"}])
    {'bbc': 'text', 'mnist': 'digits'}
    """
    if not isinstance(tasks, list):
        return {}
    return {str(t["name"]): str(t.get("group") or modality(str(t["input"]))) for t in tasks
            if isinstance(t, dict) and t.get("name") and (t.get("group") or t.get("input"))}


def board_groups(tasks: list[str], groups: dict[str, str]) -> dict[str, tuple[str, ...]]:
    """Group -> its tasks (in ``tasks``' order, groups in order of their first task) when ``tasks`` fall in two or
    more groups; ``{}`` when they fall in one, or when a task's group is unknown (records of one-group suites do not
    name it, so such a task cannot be placed)."""
    if not tasks or any(t not in groups for t in tasks):
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for task in tasks:
        out[groups[task]] = (*out.get(groups[task], ()), task)
    return out if len(out) > 1 else {}


def restrict(delta_metrics: Iterable[tuple[str, str]], members: Iterable[str]) -> list[tuple[str, str]]:
    """The (task, metric) pairs of Δm% that belong to the tasks ``members``, in Δm%'s order."""
    keep = set(members)
    return [(t, m) for t, m in delta_metrics if t in keep]
