"""What a task schedule says (docs/dynamic_tasks.md): ``schedule=[[a,b],[c],[-a]]`` as steps of tasks arriving and
retiring, checked against the suite's tasks. The suite's configuration validates its schedule here; the driver that
runs one is :mod:`bench.schedule`."""

from __future__ import annotations

__all__ = ["schedule_steps"]


def schedule_steps(schedule: list[list[str]], names: list[str]) -> list[tuple[tuple[str, ...], ...]]:
    """A task schedule's steps as (arrived, retired, tasks served after the step, tasks seen so far), each in suite
    order except the last (arrival order), or a one-line error. ``names``: the suite's tasks.

    >>> schedule_steps([["b", "a"], ["c"], ["-a"]], ["a", "b", "c"])[2]
    ((), ('a',), ('b', 'c'), ('b', 'a', 'c'))
    >>> schedule_steps([["a"], ["a"]], ["a", "b"])
    Traceback (most recent call last):
    ...
    ValueError: schedule step 2 adds 'a', which arrived at step 1; a task arrives once
    """
    order = {n: i for i, n in enumerate(names)}
    served: set[str] = set()
    seen: list[str] = []
    out = []
    example = f"schedule=[[{names[0]}],[{','.join(names[1:]) or names[0]}]]"
    if not schedule:
        raise ValueError(f"schedule=[] has no steps; e.g. {example}")
    for k, entries in enumerate(schedule, 1):
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"schedule step {k} ({entries!r}) must be a non-empty list of task names; e.g. {example}")
        retire = [str(e)[1:] for e in entries if str(e).startswith("-")]
        add = [str(e) for e in entries if not str(e).startswith("-")]
        for t in [*retire, *add]:
            if t not in order:
                raise ValueError(f"schedule step {k} names {t!r}, which is not a task of the suite; tasks: "
                                 f"{', '.join(names)}")
        for t in retire:
            if t not in served:
                raise ValueError(f"schedule step {k} retires {t!r}, which the model does not serve then; retire a task "
                                 "after the step that adds it")
        for t in add:
            if t in seen:
                raise ValueError(f"schedule step {k} adds {t!r}, which arrived at step "
                                 f"{next(i for i, s in enumerate(out, 1) if t in s[0])}; a task arrives once")
        if len(set(add)) != len(add) or len(set(retire)) != len(retire):
            raise ValueError(f"schedule step {k} names a task twice: {entries}")
        if k == 1 and retire:
            raise ValueError(f"schedule step 1 retires {retire[0]!r}: the first step adds the tasks the model "
                             "starts with")
        served = (served - set(retire)) | set(add)
        if not served:
            raise ValueError(f"schedule step {k} retires every task; keep at least one")
        seen += add
        key = order.__getitem__
        out.append((tuple(sorted(add, key=key)), tuple(sorted(retire, key=key)), tuple(sorted(served, key=key)),
                    tuple(seen)))
    return out
