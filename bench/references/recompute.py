"""Recompute a published table's Δm% (and Average column) from its metric columns, with the rounding bound.

Each printed cell is rounded to its last digit, so a recomputed Δm% can differ from the printed one by at most
(first order) 100 Σ_s w_s (ε(N_s)/|B_s| + |N_s| ε(B_s)/B_s²) + ε(Δm printed), with ε = half a unit of the last
printed digit and w_s the weight of metric s (1/S when every metric weighs the same, 1/(T·M_t) per task first).
``python -m bench.references.recompute`` prints the published-vs-recomputed table of every shipped reference.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import metrics as M
from bench.references import MISSING, Reference, Row, decimals, load, names


def _eps(text: str) -> float:
    return 0.5 * 10.0 ** -decimals(text)


def _scored(ref: Reference) -> list[tuple[int, str, str]]:
    """(column index, task, metric) of the columns that enter Δm% (not a printed summary such as Average)."""
    return [(i, m.task, m.metric) for i, m in enumerate(ref.metrics) if not m.summary]


def recomputed(ref: Reference, row: Row) -> float | None:
    """``bench.metrics.delta_m`` of ``row`` against the table's single-task row, in the table's own convention
    (its average and sign); None when the table has no Δm% convention, baseline or cells for the row."""
    if ref.delta_m is None or ref.baseline is None or not row.cells:
        return None
    base, cols = ref.row(ref.baseline), _scored(ref)
    keys = [(t, m) for _, t, m in cols]
    values = {(t, m): float(row.cells[i].replace("−", "-")) for i, t, m in cols if row.cells[i] not in MISSING}
    basev = {(t, m): float(base.cells[i].replace("−", "-")) for i, t, m in cols if base.cells[i] not in MISSING}
    directions = {(t, m): ref.metrics[i].direction for i, t, m in cols}
    gain = M.delta_m(values, basev, keys, directions, average=ref.delta_m.average)
    return -gain if ref.delta_m.sign == "drop" else gain


def rounding_bound(ref: Reference, row: Row) -> float:
    """How far a recomputed Δm% may lie from the printed one from the rounding of the printed cells alone."""
    base, cols = ref.row(ref.baseline), _scored(ref)
    used = [(i, t) for i, t, _ in cols if row.cells[i] not in MISSING and base.cells[i] not in MISSING]
    per_task: dict[str, int] = {}
    for _, t in used:
        per_task[t] = per_task.get(t, 0) + 1
    total = 0.0
    for i, t in used:
        weight = 1 / len(used) if ref.delta_m.average == "metric" else 1 / (len(per_task) * per_task[t])
        v, b = float(row.cells[i]), float(base.cells[i])
        total += weight * (_eps(row.cells[i]) / abs(b) + abs(v) * _eps(base.cells[i]) / b ** 2)
    return 100 * total + (_eps(row.delta_m_text) if row.delta_m_text else 0.0)


def summary_checks(ref: Reference, row: Row) -> list[tuple[str, float, float, float]]:
    """(column label, printed, recomputed mean of the scored columns, rounding bound) for each summary column."""
    out = []
    cols = [i for i, _, _ in _scored(ref)]
    for j, metric in enumerate(ref.metrics):
        if metric.summary and row.cells and row.cells[j] not in MISSING:
            cells = [row.cells[i] for i in cols]
            mean = sum(float(c) for c in cells) / len(cells)
            bound = sum(_eps(c) for c in cells) / len(cells) + _eps(row.cells[j])
            out.append((metric.label or metric.key, float(row.cells[j]), mean, bound))
    return out


@dataclass(frozen=True)
class Check:
    """One row's printed Δm% against the recomputed one."""

    reference: str
    method: str
    printed: float
    recomputed: float
    bound: float

    @property
    def within(self) -> bool:
        return abs(self.printed - self.recomputed) <= self.bound + 1e-9


def checks(refs: list[str] | None = None) -> list[Check]:
    """Every row with a printed Δm% that can be recomputed (a table with metric columns and a single-task row)."""
    out = []
    for name in refs or names():
        ref = load(name)
        for row in ref.rows:
            value = recomputed(ref, row)
            if value is not None and row.delta_m is not None:
                out.append(Check(name, row.method, row.delta_m, value, rounding_bound(ref, row)))
    return out


def markdown(rows: list[Check]) -> str:
    """The published-vs-recomputed table (Markdown)."""
    lines = ["| reference | method | published Δm% | recomputed Δm% | difference | rounding bound | within |",
             "|---|---|---:|---:|---:|---:|:---:|"]
    for c in rows:
        lines.append(f"| {c.reference} | {c.method} | {c.printed:+.2f} | {c.recomputed:+.3f} | "
                     f"{c.recomputed - c.printed:+.3f} | {c.bound:.3f} | {'yes' if c.within else 'NO'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(checks()), end="")
