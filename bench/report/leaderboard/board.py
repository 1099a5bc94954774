"""The numeric board of one split (:class:`Leaderboard`): the table in points indexed by row name, plus what the
captions, renderers and the pairwise comparison read from it. Built by :mod:`bench.report.leaderboard.build`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

from bench.report.groups import key as group_key
from bench.report.inference import Inference
from bench.report.leaderboard.degenerate import DEGENERATE_MARK
from bench.report.leaderboard.options import ReportOptions
from bench.report.marks import Marking
from bench.report.style import Styles

MEMORY_KINDS = {"host_rss": "host RSS", "cuda_max_allocated": "GPU"}
TELEMETRY_COLUMNS = ("train_samples_per_s", "peak_memory_mb", "wall_time_s", "trainable_params", "wall_own_s",
                     "wall_shared_s", "deployed_params")
COST_COLUMNS = ("train_samples_seen", *TELEMETRY_COLUMNS)  # what `columns=scores` leaves to the CSV/JSON


TRANSDUCTIVE_MARK = "†"
TRANSDUCTIVE_NOTE = (f"Rows marked {TRANSDUCTIVE_MARK} adapted their fusion coefficients on unlabeled test inputs "
                     f"(transductive); they are not comparable to inductive rows.")


@dataclass(frozen=True)
class Leaderboard:
    """One split's numeric table (index: variant, in points) plus what captions need."""

    suite: str
    split: str
    tasks: dict[str, dict]  # board tasks: the split's tasks, then extra splits' (``mnli_mismatched``)
    table: pd.DataFrame
    backbone: str = ""
    seeds: tuple[int, ...] = ()
    budget: str = ""
    memory_kind: str = "host RSS"
    notes: list[str] = field(default_factory=list)
    options: ReportOptions = field(default_factory=ReportOptions)
    delta_metrics: tuple[tuple[str, str], ...] = ()  # (task, metric) entering Δm%
    examples: dict[str, int] = field(default_factory=dict)  # board task -> test examples (rows with predictions)
    marking: Marking = field(default_factory=Marking)
    baselines: dict[str, str | None] = field(default_factory=dict)
    transductive: tuple[str, ...] = ()  # rows whose fusion coefficients were adapted on unlabeled test inputs
    degenerate: tuple[str, ...] = ()  # rows whose balancer degenerated in some step (a footnote each)
    identical: tuple[tuple[tuple[str, ...], str], ...] = ()  # (rows with identical scores, why), a note each
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> tasks: per-group Δm% (2+ groups)
    inference: Inference | None = field(default=None, compare=False, repr=False)
    full_table: pd.DataFrame | None = field(default=None, compare=False, repr=False)  # every row, shown or not
    # the rows' order, colours and families (of the records it was built from; the figures draw with it)
    styles: Styles = field(default_factory=Styles.of, compare=False, repr=False)

    def select(self, variants: list[str]) -> Leaderboard:
        """The same board with fewer rows (tests and marks stay those of the full board: prefer
        ``build_leaderboard(..., variants=...)``, which computes them over the shown rows)."""
        return replace(self, table=self.table.loc[[v for v in self.table.index if v in variants]])

    @property
    def score_column(self) -> str:
        """The single-number score of a row: Δm% when a separate baseline exists, else Avg."""
        return "delta_m" if self.table["delta_m"].notna().any() else "avg"

    def is_transductive(self, variant: str) -> bool:
        return variant in self.transductive

    def name_marks(self, variant: str) -> str:
        """What follows a row's name: ``†`` (transductive), ``§`` (its balancer degenerated: see the notes)."""
        return "".join(f" {mark}" for mark, rows in ((TRANSDUCTIVE_MARK, self.transductive),
                                                     (DEGENERATE_MARK, self.degenerate)) if variant in rows)

    @property
    def any_transductive(self) -> bool:
        return any(v in self.transductive for v in self.table.index)

    @property
    def has_intervals(self) -> bool:
        return any(c.endswith(":lo") and self.table[c].notna().any() for c in self.table.columns)

    def shown_metrics(self, task: str) -> list[str]:
        """The metrics of ``task`` the md/tex/rich tables show: its primary, or every Δm% metric with ``all``."""
        spec = self.tasks[task]
        listed = [m for t, m in self.delta_metrics if t == task]
        if spec.get("extra") or self.options.delta_m == "primary" or not listed:
            return [spec["primary"]]
        return listed

    def score_keys(self) -> list[str]:
        """The table's score columns (shown, ranked with tests): task metrics, Avg, Δm%, Δm% per group."""
        keys = [f"{t}/{m}" for t in self.tasks for m in self.shown_metrics(t) if f"{t}/{m}" in self.table]
        return keys + ["avg", "delta_m", *(group_key(g) for g in self.groups)]


def seed_stats(metrics: pd.DataFrame) -> pd.DataFrame:
    """(variant, task, metric) -> mean, std, n over seeds of the raw values."""
    return metrics.groupby(["variant", "task", "metric"])["value"].agg(mean="mean", std="std", n="count")
