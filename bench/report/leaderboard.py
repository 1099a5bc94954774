"""Leaderboards: records -> one pandas table per split -> Markdown, LaTeX, rich, CSV and JSON.

Units and statistics (all documented in the outputs' captions; the protocol is in docs/statistics.md):

* scores are in *points*: metrics whose direction is ``max`` (fractions: accuracy, F1, correlations) are multiplied
  by 100; ``min`` metrics (mse) stay raw;
* point estimates are means over seeds; ``n`` is the number of seeds of the row; ``:std`` (ddof=1) is kept in the
  CSV/JSON and shown for rows without predictions;
* rows with per-example predictions (schema-2 records) get a ``level`` two-level t interval per column (seed
  variance plus the test-set covariance between seeds, :mod:`bench.twolevel`) and a test against their Δm%
  baseline, corrected over the table's markable tests (Holm by default): ``*`` marks a significant difference;
  rows with too few seeds or another budget than their baseline get no mark (:mod:`bench.report.marks`);
* ``Avg`` is, per seed, the mean of the tasks' primary scores, then the mean over seeds; it is left empty when a
  primary metric is lower-is-better (points and raw units do not average);
* ``Δm%`` (Maninis et al., 2019) over the metrics ``delta_m`` selects (``primary``: the primary metrics the table
  shows; ``all``: every metric, all shown): Δm = (100/T) Σ_t (1/M_t) Σ_m (−1)^{l_tm} (N_tm − B_tm) / |B_tm| on the
  seed means, B = the row's baseline: the ``separate`` row with the same data and budget fingerprints (none: empty,
  with a note), l = 1 for ``min`` metrics; metrics with B = 0 are left out; positive = better; separate itself is 0;
* winners: the best of a score column is bold only when a two-level t test says it beats every other markable
  row; rows it does not beat after the correction are marked tied (≈ / underlined); cost columns keep plain
  best-in-bold;
* transductive rows (fusion coefficients adapted on unlabeled test inputs, ``fusion.transductive`` in the record)
  carry ``†`` after their name in Markdown, LaTeX and the terminal, a ``transductive`` column in the CSV/JSON, and a
  caption sentence; a board without such rows is unchanged.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from bench import stats
from bench.errors import BenchError, did_you_mean, unknown
from bench.metrics import delta_m
from bench.record import Record
from bench.report.inference import (
    OLD_RECORDS,
    TESTS,
    BoardTask,
    Inference,
    RowInfo,
    budget_means,
    group_rows,
    row_infos,
    scale,
)
from bench.report.marks import BUDGET_TOLERANCE, MIN_SEEDS, POWER, Marking, add_inference, budget_notes
from bench.report.records import (
    BASELINE_VARIANT,
    BUDGET_FIELDS,
    config_differences,
    config_fingerprint,
    is_transductive,
    metrics_frame,
    task_specs,
    telemetry_frame,
)
from bench.report.style import sort_key

MEMORY_KINDS = {"host_rss": "host RSS", "cuda_max_allocated": "GPU"}
TELEMETRY_COLUMNS = ("train_samples_per_s", "peak_memory_mb", "wall_time_s", "trainable_params", "wall_own_s",
                     "wall_shared_s", "deployed_params")
COST_COLUMNS = ("train_samples_seen", *TELEMETRY_COLUMNS)  # what `columns=scores` leaves to the CSV/JSON
COLUMN_SETS = ("all", "scores")  # report option `columns`: md/tex/terminal show every column, or the scores only
LEADERBOARD_SCHEMA = 3  # leaderboard.json: 2 adds intervals, tests, marks, notes, options; 3 two-level t
INTERVAL_STYLES = ("brackets", "pm")
DELTA_M_MODES = ("primary", "all")
TRANSDUCTIVE_MARK = "†"
TRANSDUCTIVE_NOTE = (f"Rows marked {TRANSDUCTIVE_MARK} adapted their fusion coefficients on unlabeled test inputs "
                     f"(transductive); they are not comparable to inductive rows.")

__all__ = ["Leaderboard", "ReportOptions", "build_leaderboard", "caption", "compare_rows", "report_options",
           "to_json", "to_latex", "to_markdown", "to_rich", "write_tables"]


# ----------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ReportOptions:
    """How a report computes and shows its statistics (``bench report level=… interval=… …``)."""

    level: float = stats.LEVEL
    interval: str = "brackets"  # brackets: 95.3 [92.0, 97.9]; pm: 95.3 ± 3.0 (half the interval's width)
    delta_m: str = "primary"  # primary | all: the metrics entering Δm% (all of them are shown with "all")
    correction: str = "holm"  # holm | bh | none, over every markable test of a table
    min_seeds: int = MIN_SEEDS  # rows (and baselines) with fewer seeds get no *, bold or ≈
    budget_tolerance: float = BUDGET_TOLERANCE  # a row whose budget differs more from its baseline's: no mark
    components: bool = False  # md/tex show the seed SD and test-set SE of the score column
    columns: str = "all"  # all | scores: md/tex/terminal without the cost columns (CSV/JSON keep them)

    @property
    def alpha(self) -> float:
        return round(1.0 - self.level, 12)  # 1 - 0.95 = 0.050000000000000044 would let p = 0.05 pass


def report_options(level=None, interval=None, delta_m=None, correction=None, bootstrap=None, min_seeds=None,
                   budget_tolerance=None, components=None, columns=None) -> ReportOptions:
    """Validated :class:`ReportOptions` (None keeps a default); bad values raise a one-line BenchError.

    ``bootstrap`` is refused: intervals and tests are analytic since the two-level t replaced the bootstrap."""
    defaults = ReportOptions()
    level = defaults.level if level is None else stats.check_level(level)
    interval = defaults.interval if interval is None else str(interval)
    if interval not in INTERVAL_STYLES:
        raise unknown("interval display", interval, INTERVAL_STYLES)
    delta_m = defaults.delta_m if delta_m is None else str(delta_m)
    if delta_m not in DELTA_M_MODES:
        raise unknown("delta_m mode", delta_m, DELTA_M_MODES)
    correction = defaults.correction if correction is None else str(correction)
    if correction not in stats.CORRECTIONS:
        raise unknown("p-value correction", correction, stats.CORRECTIONS)
    if bootstrap is not None:
        raise BenchError(f"bootstrap={bootstrap!r}: intervals and tests no longer resample (two-level t over seeds "
                         f"and test examples, docs/statistics.md); drop bootstrap=")
    if min_seeds is None:
        min_seeds = defaults.min_seeds
    elif isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 2:
        raise BenchError(f"min_seeds={min_seeds!r} must be a whole number >= 2 (a mark needs a seed variance), "
                         f"e.g. min_seeds=3")
    if budget_tolerance is None:
        budget_tolerance = defaults.budget_tolerance
    elif (isinstance(budget_tolerance, bool) or not isinstance(budget_tolerance, (int, float))
          or not 0 <= budget_tolerance < 1):
        raise BenchError(f"budget_tolerance={budget_tolerance!r} must be a fraction in [0, 1), "
                         f"e.g. budget_tolerance=0.05")
    if components is None:
        components = defaults.components
    elif not isinstance(components, bool):
        raise BenchError(f"components={components!r} must be true or false")
    columns = defaults.columns if columns is None else str(columns)
    if columns not in COLUMN_SETS:
        raise BenchError(f"columns={columns!r}: valid are all (scores and costs) and scores (no cost columns), "
                         f"e.g. columns=scores")
    return ReportOptions(level=level, interval=interval, delta_m=delta_m, correction=correction,
                         min_seeds=min_seeds, budget_tolerance=float(budget_tolerance), components=components,
                         columns=columns)


# ----------------------------------------------------------------------------------------------- the board


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
    identical: tuple[tuple[tuple[str, ...], str], ...] = ()  # (rows with identical scores, why), a note each
    inference: Inference | None = field(default=None, compare=False, repr=False)
    full_table: pd.DataFrame | None = field(default=None, compare=False, repr=False)  # every row, shown or not

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
        """The table's score columns (shown, ranked with tests): task metrics, Avg, Δm%."""
        keys = [f"{t}/{m}" for t in self.tasks for m in self.shown_metrics(t) if f"{t}/{m}" in self.table]
        return keys + ["avg", "delta_m"]


def seed_stats(metrics: pd.DataFrame) -> pd.DataFrame:
    """(variant, task, metric) -> mean, std, n over seeds of the raw values."""
    return metrics.groupby(["variant", "task", "metric"])["value"].agg(mean="mean", std="std", n="count")


BUDGET_KEYS = ("epochs", "max_steps", "max_train_samples", "batch_size", "lr")


def _budget(budget: dict) -> dict:
    """The budget fields a caption names (the set ones of BUDGET_KEYS; every set field when none of those is)."""
    chosen = {k: budget[k] for k in BUDGET_KEYS if budget.get(k) is not None}
    return chosen or {k: v for k, v in sorted(budget.items()) if v is not None}


def _caption_facts(records: list[Record]) -> dict:
    backbones = sorted({str(r.backbone or "") for r in records} - {""})
    budgets = {json.dumps(_budget(r.budget)) for r in records}
    if len(budgets) == 1:
        budget = ", ".join(f"{k}={v}" for k, v in json.loads(budgets.pop()).items()) or "default"
    else:
        budget = "varies by row (see the row names)"
    return {"backbone": ", ".join(backbones), "seeds": tuple(sorted({r.seed for r in records})),
            "budget": budget}


def _board_tasks(records: list[Record], metrics: pd.DataFrame, split: str) -> tuple[dict[str, BoardTask], pd.DataFrame]:
    """The board's tasks (each task of ``split``, followed by its extra splits such as ``test_mismatched``) and the
    long metrics frame of exactly those, extra-split tasks renamed ``<task>_<suffix>``."""
    specs = task_specs(records)
    frames = [metrics[metrics["split"] == split]]
    extras: dict[str, list[BoardTask]] = {}
    for extra in sorted(s for s in metrics["split"].unique() if s.startswith(split + "_")):
        part = metrics[metrics["split"] == extra].copy()
        suffix = extra[len(split):]
        for task in dict.fromkeys(part["task"]):
            if task in specs:
                spec = {**specs[task], "split": extra, "source": task, "extra": True}
                extras.setdefault(task, []).append(BoardTask(task + suffix, task, extra, spec, extra=True))
        part["task"] = part["task"] + suffix
        frames.append(part)
    frame = pd.concat(frames, ignore_index=True)
    present = set(frame["task"])
    tasks: dict[str, BoardTask] = {}
    for task, spec in specs.items():
        if task in present:
            tasks[task] = BoardTask(task, task, split, spec)
        for bt in extras.get(task, []):
            tasks[bt.name] = bt
    return tasks, frame[frame["task"].isin(list(tasks))]


# ----------------------------------------------------------------------------------------------- baselines


def _train_overrides(row: RowInfo, other: RowInfo) -> list[str]:
    """The ``train.*`` / ``budget_match`` settings of ``row`` that differ from ``other`` (as ``key=value``)."""
    mine = {"suite": {"train": row.config.get("suite", {}).get("train", {})},
            "budget_match": row.config.get("budget_match", "none")}
    theirs = {"suite": {"train": other.config.get("suite", {}).get("train", {})},
              "budget_match": other.config.get("budget_match", "none")}
    diffs = config_differences({"row": mine, "other": theirs})["row"]
    return [d.replace("budget_match=", "budget.match=", 1) for d in diffs]


def find_baselines(infos: dict[str, RowInfo], order: list[str], suite: str) -> tuple[dict[str, str | None], dict]:
    """Each row's Δm% baseline (a separate row with the same data and budget fingerprints) or None, and for the
    rows without one the reason (``{row: note}``)."""
    candidates = [infos[n] for n in order if infos[n].candidate]
    out: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    for name in order:
        row = infos[name]
        if row.candidate:
            out[name] = name
            continue
        same = [c for c in candidates if c.data_fp == row.data_fp and c.budget_fp == row.budget_fp]
        if len(same) > 1:  # e.g. separate with other backbones: prefer the identical suite, then the plain name
            same = ([c for c in same if c.config.get("suite") == row.config.get("suite")] or same)
            same = [c for c in same if c.origin == BASELINE_VARIANT] or same
        if len(same) == 1:
            out[name] = same[0].name
            continue
        out[name] = None
        if same:
            names = ", ".join(c.name for c in same)
            reasons[name] = (f"Δm% empty for {name}: {len(same)} separate rows share its budget and data ({names}); "
                             f"give the runs distinct labels with `label=...`")
            continue
        same_data = [c for c in candidates if c.data_fp == row.data_fp]
        nearest = min(same_data, key=lambda c: len(_train_overrides(row, c))) if same_data else None
        overrides = _train_overrides(row, nearest) if nearest else []
        if nearest is not None and overrides:
            settings = " ".join(overrides)
            reasons[name] = (f"Δm% empty for {name}: no separate row with the same budget ({', '.join(overrides)}) "
                             f"and data; run `bench run suite={suite} strategy=separate {settings}`")
        elif nearest is not None:  # same train settings, yet another budget fingerprint (e.g. a changed code path)
            reasons[name] = (f"Δm% empty for {name}: no separate row with the same budget fingerprint and data; "
                             f"rerun `bench run suite={suite} strategy=separate` with the same train settings")
        elif candidates:
            reasons[name] = (f"Δm% empty for {name}: no separate row with the same data (data fingerprint "
                             f"{row.data_fp[:8] or 'none'}); run `bench run suite={suite} strategy=separate` on "
                             f"the same data")
        else:
            reasons[name] = (f"Δm% empty for {name}: no separate row; run `bench run suite={suite} "
                             f"strategy=separate` with the same train settings")
    return out, reasons


# ----------------------------------------------------------------------------------------------- build


def build_leaderboard(records: list[Record], split: str = "test", options: ReportOptions | None = None,
                      variants: list[str] | None = None) -> Leaderboard:
    """The numeric leaderboard of ``split`` (module docstring): every row's numbers; tests, marks and the MDE over
    the rows in ``variants`` (all when None), which are the rows kept. Baselines may be rows left out."""
    options = options or ReportOptions()
    suite = records[0].suite
    board_tasks, frame = _board_tasks(records, metrics_frame(records), split)
    tasks = {name: bt.spec for name, bt in board_tasks.items()}
    if frame.empty:  # e.g. no record reports this split: an empty board, which callers skip
        return Leaderboard(suite=suite, split=split, tasks=tasks, options=options,
                           table=pd.DataFrame(index=pd.Index([], name="variant")))
    present_rows = set(frame["variant"])
    infos = {name: info for name, info in row_infos(records).items() if name in present_rows}
    order = sorted(infos, key=sort_key)
    shown = [v for v in order if variants is None or v in variants]
    stats_ = seed_stats(frame)
    directions = {(t, m): d for t, spec in tasks.items() for m, d in spec["metrics"].items()}

    table = pd.DataFrame(index=pd.Index(order, name="variant"))
    table["n"] = frame.groupby("variant")["seed"].nunique()
    present = set(zip(stats_.index.get_level_values("task"), stats_.index.get_level_values("metric")))
    for (task, metric), direction in directions.items():
        if (task, metric) not in present:
            continue
        column = f"{task}/{metric}"
        group = stats_.xs((task, metric), level=("task", "metric"))
        factor = scale(direction)
        table[column] = group["mean"] * factor
        table[column + ":std"] = group["std"] * factor
        table[column + ":n"] = group["n"]

    # Avg over the split's own tasks (extra splits are shown, not averaged)
    avg_tasks = [t for t, bt in board_tasks.items() if not bt.extra]
    primaries = {t: tasks[t]["primary"] for t in avg_tasks}
    averaged = all(tasks[t]["metrics"].get(m) == "max" for t, m in primaries.items())
    if averaged:
        primary = frame[[primaries.get(t) == m for t, m in zip(frame["task"], frame["metric"])]]
        per_seed = primary.pivot_table(index=["variant", "seed"], columns="task", values="value")
        per_seed = per_seed.reindex(columns=list(primaries)).mean(axis=1, skipna=False).mul(100.0)
        table["avg"] = per_seed.groupby(level="variant").mean()
        table["avg:std"] = per_seed.groupby(level="variant").std()
    else:
        table["avg"] = table["avg:std"] = math.nan

    # Δm% against each row's own baseline, on the seed means and per seed
    delta_metrics = [(t, m) for t in avg_tasks
                     for m in ([primaries[t]] if options.delta_m == "primary"
                               else [primaries[t], *(x for x in tasks[t]["metrics"] if x != primaries[t])])]
    baselines, baseline_notes = find_baselines(infos, order, suite)
    means = stats_["mean"]
    per_seed_values = frame.groupby(["variant", "seed", "task", "metric"])["value"].mean()
    table["baseline"] = pd.Series({v: baselines[v] or "" for v in order})
    for column in ("delta_m", "delta_m_seed_mean", "delta_m_seed_std", "delta_m_seed_n", *BUDGET_FIELDS):
        table[column] = math.nan
    for name in order:
        base = baselines[name]
        if base is None:
            continue
        table.loc[name, "delta_m"] = delta_m(means.loc[name].to_dict(), means.loc[base].to_dict(), delta_metrics,
                                             directions)
        seeds = set(per_seed_values.loc[name].index.get_level_values("seed"))
        common = sorted(seeds & set(per_seed_values.loc[base].index.get_level_values("seed")))
        per_seed_dm = [delta_m(per_seed_values.loc[(name, s)].to_dict(),
                               per_seed_values.loc[(base, s)].to_dict(), delta_metrics, directions)
                       for s in common]
        per_seed_dm = [d for d in per_seed_dm if not math.isnan(d)]
        if per_seed_dm:
            table.loc[name, "delta_m_seed_mean"] = float(np.mean(per_seed_dm))
            table.loc[name, "delta_m_seed_std"] = float(np.std(per_seed_dm, ddof=1)) if len(per_seed_dm) > 1 \
                else math.nan
            table.loc[name, "delta_m_seed_n"] = len(per_seed_dm)

    # budgets and telemetry
    for name in order:
        for key, value in budget_means(infos[name]).items():
            table.loc[name, key] = value
    telemetry = telemetry_frame(records, shown)  # own vs shared wall time: shared with another row shown
    telemetry = telemetry[telemetry["variant"].isin(order)]
    by_variant = telemetry.groupby("variant")
    for column in TELEMETRY_COLUMNS:
        table[column] = by_variant[column].mean()
    table["train_samples_per_s:std"] = by_variant["train_samples_per_s"].std()
    table["code_versions"] = pd.Series({v: ", ".join(infos[v].code_versions) for v in order})
    table["config_fingerprint"] = pd.Series({v: config_fingerprint(infos[v].first) for v in order})
    kinds = sorted({MEMORY_KINDS.get(k, str(k)) for k in telemetry["memory_kind"].dropna()})

    transductive = tuple(v for v in shown if any(is_transductive(e.row) for e in infos[v].entries))
    notes = [baseline_notes[v] for v in shown if v in baseline_notes]
    notes += _mixing_notes(infos, shown)
    inference = None
    if any(not infos[v].schema_1 for v in order):
        inference = Inference(infos, board_tasks, order, avg_tasks if averaged else None, delta_metrics, baselines,
                              options.level)
    notes += budget_notes(table, inference, infos, baselines, shown, order, suite, options.budget_tolerance,
                          options.level)
    notes += _prediction_notes(inference, infos, shown, board_tasks)
    notes += [f"rows {', '.join(rows)}: {text}" for rows, text in group_rows(
        (v, f"assembled from stages of code versions {', '.join(infos[v].code_versions)}")
        for v in shown if len(infos[v].code_versions) > 1)]
    identical = _identical_rows(table, infos, shown, directions, split)
    notes += [identical_note(rows, why) for rows, why in identical]
    skipped = getattr(records, "skipped", [])  # record files load_records could not use (each named in a warning)
    if skipped:
        results_dir = Path(skipped[0]).parents[4]  # <results_dir>/<suite>/cells/<strategy>/<cell>/record.json
        where = "" if results_dir == Path("results") else f" results_dir={results_dir}"
        notes.append(f"{len(skipped)} record file(s) skipped as unusable (damaged, unreadable or of another schema), "
                     f"so their cells are missing here; run `python -m bench verify suite={suite}{where}` to list them")

    board = Leaderboard(
        suite=suite, split=split, tasks=tasks, table=table.loc[shown], full_table=table,
        memory_kind="/".join(kinds) or "host RSS",
        notes=notes, options=options, delta_metrics=tuple(delta_metrics), baselines=baselines, inference=inference,
        transductive=transductive, identical=tuple((tuple(rows), why) for rows, why in identical),
        examples=dict(inference.n_examples) if inference else {}, **_caption_facts(records))
    board = replace(board, table=_statistics_columns(board.table, board.score_keys()))
    if inference is not None and inference.any():
        keys = board.score_keys()
        directions_ = {k: "max" if k in ("avg", "delta_m") else tasks[k.rsplit("/", 1)[0]]["metrics"][k.rsplit("/", 1)[1]]
                       for k in keys}
        marked, marking = add_inference(board.table, inference, infos, shown, keys, directions_, baselines, options)
        few = [(v, f"no *, bold or ≈: {why}") for v, why in marking.unmarked.items() if "seed" in why]
        if len(few) < len(shown):  # when no row has enough seeds the caption says so once
            notes = notes + [f"rows {', '.join(rows)}: {text}" for rows, text in group_rows(few)]
        board = replace(board, table=marked, marking=marking, notes=notes)
    return replace(board, table=board.table[_column_order(board.table.columns)])


STAT_SUFFIXES = ("", ":std", ":n", ":lo", ":hi", ":seed_sd", ":test_se", ":df", ":p", ":p_adj", ":test",
                 ":markable", ":mark", ":p_best", ":wilson_lo", ":wilson_hi")


def _statistics_columns(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The inference columns of every score column, empty (NaN / "") until :func:`_add_inference` fills them: the
    CSV/JSON have the same columns whether or not rows have predictions."""
    table = table.copy()
    table["unmarked"] = ""
    for key in keys:
        for suffix in (":lo", ":hi", ":seed_sd", ":test_se", ":df", ":p", ":p_adj", ":p_best"):
            table[key + suffix] = math.nan
        table[key + ":test"] = ""
        table[key + ":markable"] = False
        table[key + ":mark"] = ""
        if key.endswith("/accuracy"):
            table[key + ":wilson_lo"] = table[key + ":wilson_hi"] = math.nan
    return table


def _column_order(columns) -> list[str]:
    """Each column followed by its statistics (``a/accuracy``, ``a/accuracy:std``, ``…:lo``, ``…:p``, …)."""
    bases = list(dict.fromkeys(c.split(":", 1)[0] for c in columns))
    rank = {suffix: i for i, suffix in enumerate(STAT_SUFFIXES)}
    out = []
    for base in bases:
        mine = [c for c in columns if c.split(":", 1)[0] == base]
        out += sorted(mine, key=lambda c: rank.get(c[len(base):], len(rank)))
    return out


def _identical_rows(table: pd.DataFrame, infos: dict[str, RowInfo], shown: list[str], directions: dict,
                    split: str) -> list[tuple[list[str], str]]:
    """Shown rows whose every task metric (mean over the same seeds) is identical to another row's, and why when the
    records say it (:func:`bench.report.provenance.identical_groups`)."""
    from bench.report.provenance import identical_groups

    keys = [f"{t}/{m}" for t, m in directions if f"{t}/{m}" in table]
    if not keys:
        return []
    scores = {v: (tuple(infos[v].seeds), *table.loc[v, keys].tolist()) for v in shown}
    entries = {v: [(e.record, e.row) for e in infos[v].entries] for v in shown}
    return identical_groups(scores, entries, split)


def identical_note(rows: list[str] | tuple[str, ...], why: str) -> str:
    return f"rows {', '.join(rows)}: identical scores in every task column; {why}"


def _mixing_notes(infos: dict[str, RowInfo], shown: list[str]) -> list[str]:
    """A note per row name whose records come from several configurations (split into rows, never mixed)."""
    by_origin: dict[str, list[str]] = {}
    for name, info in infos.items():
        by_origin.setdefault(info.origin, []).append(name)
    notes = []
    for origin, names in by_origin.items():
        mine = [n for n in shown if n in names]
        if len(names) > 1 and mine:
            notes.append(f"rows {', '.join(mine)}: records named {origin} come from {len(names)} configurations; "
                         f"one row each, never mixed")
    return notes


def _prediction_notes(inference: Inference | None, infos: dict[str, RowInfo], shown: list[str],
                      board_tasks: dict[str, BoardTask]) -> list[str]:
    items = []
    for name in shown:
        reasons = inference.reasons.get(name, {}) if inference else {t: OLD_RECORDS for t in board_tasks}
        if not reasons:
            continue
        if len(reasons) == len(board_tasks) and len(set(reasons.values())) == 1:
            items.append((name, f"{next(iter(reasons.values()))}: no intervals"))
        else:
            items += [(name, f"{task}: {why}: no interval") for task, why in reasons.items()]
    return [f"rows {', '.join(rows)}: {text}" for rows, text in group_rows(items)]


# ----------------------------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    """One displayed column: where its mean/std live, its headers, digits, and which direction is better."""

    key: str
    header: str
    latex: str
    digits: int = 1
    std: str | None = None
    better: str | None = None  # "max" / "min"; None: not ranked
    kind: str = "float"  # float | signed | count | int | params
    score: bool = False  # ranked by tests (bold = significant winner, ties marked); else plain best-in-bold


def columns(lb: Leaderboard) -> list[Column]:
    cols = [Column("n", "n", "$n$", kind="count")]
    for task in lb.tasks:
        for metric in lb.shown_metrics(task):
            if f"{task}/{metric}" not in lb.table:
                continue
            direction = lb.tasks[task]["metrics"].get(metric, "max")
            unit = " (%)" if direction == "max" else ""
            cols.append(Column(f"{task}/{metric}", f"{task} {metric}{unit}",
                               _tex(f"{task} {metric}") + unit.replace("%", r"\%"),
                               digits=1 if direction == "max" else 3, std=f"{task}/{metric}:std", better=direction,
                               score=True))
    if lb.table["avg"].notna().any():
        cols.append(Column("avg", "Avg (%)", r"Avg (\%)", std="avg:std", better="max", score=True))
    cols.append(Column("delta_m", "Δm%", r"$\Delta_m$ (\%)", digits=2, better="max", kind="signed", score=True))
    if lb.options.components and lb.has_intervals:  # which term a claim rests on: seeds or the test set
        key = lb.score_column
        label = "Δm%" if key == "delta_m" else "Avg"
        cols += [Column(f"{key}:seed_sd", f"{label} seed SD", f"{_tex(label)} seed SD", digits=2),
                 Column(f"{key}:test_se", f"{label} test SE", f"{_tex(label)} test SE", digits=2)]
    if lb.options.columns == "scores":  # a paper's table: costs stay in the CSV/JSON
        return cols
    cols += [
        Column("train_samples_seen", "Samples seen", "Samples seen", digits=0, kind="int"),
        Column("train_samples_per_s", "Train (samples/s)", "Train (samples/s)", digits=0,
               std="train_samples_per_s:std", better="max"),
        Column("peak_memory_mb", f"Peak mem (MB, {lb.memory_kind})", f"Peak mem (MB, {_tex(lb.memory_kind)})",
               digits=0, better="min"),
    ]
    # split by the rows' stage provenance where the records have it (docs/records.md, "Cost columns"); older records
    # keep the totals: wall time over every stage used, parameters trained over every training stage
    if _known(lb, "wall_own_s"):
        cols += [Column("wall_own_s", "Wall own (s)", "Wall own (s)", digits=1),
                 Column("wall_shared_s", "Wall shared (s)", "Wall shared (s)", digits=1)]
    else:
        cols.append(Column("wall_time_s", "Wall (s)", "Wall (s)", digits=1, better="min"))
    if _known(lb, "deployed_params"):
        cols += [Column("deployed_params", "Params deployed", "Params deployed", kind="params"),
                 Column("trainable_params", "Params trained", "Params trained", kind="params")]
    else:
        cols.append(Column("trainable_params", "Params", "Params", kind="params"))
    return cols


def _known(lb: Leaderboard, key: str) -> bool:
    return key in lb.table and lb.table[key].notna().any()


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    """Escape LaTeX specials in plain text (variant names, task names, captions)."""
    return "".join(_TEX_SPECIALS.get(char, char) for char in text)


_TEX_SYMBOLS = (("Δm\\%", r"$\Delta_m$\%"), ("×", r"$\times$"), ("±", r"$\pm$"), ("≈", r"$\approx$"),
                ("α", r"$\alpha$"), ("≥", r"$\geq$"), ("–", "--"), ("Δ", r"$\Delta$"), ("*:", r"$^{*}$:"),
                (" < ", r" $<$ "), (" > ", r" $>$ "), (TRANSDUCTIVE_MARK, r"$^{\dagger}$"))


def _latex_text(text: str) -> str:
    """Plain caption text -> LaTeX: specials escaped, symbols as math, `code` as \\texttt."""
    out = _tex(text)
    for plain, latex in _TEX_SYMBOLS:
        out = out.replace(plain, latex)
    return re.sub(r"`([^`]*)`", r"\\texttt{\1}", out)


def _number(value: float, col: Column) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if col.kind == "count":
        return str(int(value))
    if col.kind == "int":
        return f"{value:,.0f}"
    if col.kind == "params":
        for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= div:
                return f"{value / div:.1f}{suffix}"
        return f"{int(value)}"
    if col.kind == "signed":
        return f"{value:+.{col.digits}f}"
    return f"{value:,.{col.digits}f}"


def ranks(lb: Leaderboard) -> pd.DataFrame:
    """Per displayed column: 1 = bold, 2 = tied for best (≈ / underlined), 0 otherwise.

    Score columns: from the tests (``<col>:mark``): bold only for a significant winner. Cost columns: the best value
    as displayed (rounded; ties share it) is bold.
    """
    out = pd.DataFrame(0, index=lb.table.index, columns=[c.key for c in columns(lb)])
    for col in columns(lb):
        if col.score:
            marks = lb.table.get(col.key + ":mark")
            if marks is not None:
                out.loc[marks == "best", col.key] = 1
                out.loc[marks == "tie", col.key] = 2
            continue
        if col.better is None:
            continue
        values = lb.table[col.key].round(col.digits)
        if len(values.dropna()) < 2:
            continue
        best = values.max() if col.better == "max" else values.min()
        if (values.dropna() == best).all():  # every row ties: nothing stands out
            continue
        out.loc[values == best, col.key] = 1
    return out


def _significant(lb: Leaderboard, variant: str, key: str) -> bool:
    p = lb.table.loc[variant].get(key + ":p_adj", math.nan)
    return isinstance(p, float) and not math.isnan(p) and p < lb.options.alpha


def cell_text(lb: Leaderboard, latex: bool = False, markdown: bool = False) -> pd.DataFrame:
    """The displayed strings, one column per :func:`columns` entry: ``95.3* [92.0, 97.9] ≈``.

    The point estimate, ``*`` when it differs significantly from the row's baseline, the interval (brackets or
    ± half width) or, for rows without predictions, ± std over seeds, and ``≈`` when tied for best (LaTeX: the cell
    is underlined instead, see :func:`ranks`)."""
    pm = lb.options.interval == "pm"
    sd_words = pm and lb.has_intervals  # "± x" already means a half width: say "sd" for the std
    rows = {}
    for variant, row in lb.table.iterrows():
        cells = []
        for col in columns(lb):
            value = row[col.key]
            text = _number(value, col)
            digits = replace(col, kind="signed" if col.kind == "signed" else "float")
            lo, hi = row.get(col.key + ":lo", math.nan), row.get(col.key + ":hi", math.nan)
            if col.score and _significant(lb, variant, col.key):
                text += r"$^{*}$" if latex else (r"\*" if markdown else "*")
            if col.score and not _nan(lo) and not _nan(hi) and not _nan(value):
                if pm:
                    half = _number((hi - lo) / 2, replace(col, kind="float"))
                    text += rf"{{\scriptsize\,$\pm$\,{half}}}" if latex else f" ± {half}"
                else:
                    span = f"[{_number(lo, digits)}, {_number(hi, digits)}]"
                    text += rf"{{\scriptsize\,{span}}}" if latex else f" {span}"
            elif col.std and not _nan(value) and not _nan(row[col.std]):
                std_text = _number(row[col.std], replace(col, kind="float"))
                if latex:
                    text += (rf"{{\scriptsize\,(sd\,{std_text})}}" if sd_words
                             else rf"{{\scriptsize\,$\pm$\,{std_text}}}")
                else:
                    text += f" (sd {std_text})" if sd_words else f" ± {std_text}"
            if col.score and not latex and row.get(col.key + ":mark") == "tie":
                text += " ≈"
            if latex:
                text = text.replace("—", "--")
                text = re.sub(r"(?<![\w$.])-(?=\d)", "$-$", text)
            cells.append(text)
        rows[variant] = cells
    headers = [c.latex if latex else c.header for c in columns(lb)]
    return pd.DataFrame.from_dict(rows, orient="index", columns=headers)


def _nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ----------------------------------------------------------------------------------------------- captions


def _examples_text(lb: Leaderboard) -> str:
    if not lb.examples:
        return ""
    counts = set(lb.examples.values())
    if len(counts) == 1:
        return f" ({counts.pop():,} examples per task)"
    return " (" + ", ".join(f"{t} {n:,}" for t, n in lb.examples.items()) + " examples)"


def delta_m_metrics_text(lb: Leaderboard) -> str:
    return ", ".join(f"{t} {m}" for t, m in lb.delta_metrics)


def caption_sentences(lb: Leaderboard, latex: bool = False) -> list[str]:
    """The caption of a board as plain sentences (LaTeX symbols are substituted by :func:`caption`)."""
    o, m = lb.options, lb.marking
    level = f"{100 * o.level:g}%"
    alpha = f"{o.alpha:g}"
    seeds = [int(n) for n in lb.table["n"].dropna()] if "n" in lb.table else []
    out = []
    if lb.has_intervals:
        shape = "[lo, hi]" if o.interval == "brackets" else "as ± half their width"
        without = ""
        task_keys = [k + ":lo" for k in lb.score_keys() if "/" in k and k + ":lo" in lb.table]
        if task_keys and lb.table[task_keys].isna().all(axis=1).any():
            without = ("; rows without predictions: ± std over seeds" if o.interval == "brackets"
                       else "; rows without predictions: (sd) std over seeds")
        joint = ("; the tasks share their inputs, so their test-set errors are correlated"
                 if lb.inference is not None and lb.inference.joint else "")
        if seeds and max(seeds) < 2:
            out.append(f"Mean with {level} intervals {shape} of the test-set variance only (jackknife over the "
                       f"{lb.split} examples{joint}): one seed per row, so the seed variance is unknown and the "
                       f"intervals say nothing about training noise{without}; fractions ×100, mse raw.")
        else:
            one = "; rows with n=1: test-set variance only" if seeds and min(seeds) < 2 else ""
            out.append(f"Mean over seeds (n per row) with {level} two-level t intervals {shape}: mean ± "
                       f"t_ν·√(s²/n + c_e), s the SD over seeds, c_e the test-set covariance between seeds "
                       f"(jackknife over the {lb.split} examples{joint}), ν Welch–Satterthwaite{one}{without}; "
                       f"fractions ×100, mse raw.")
    else:
        out.append("Mean ± std over seeds (n per row); fractions ×100, mse raw; no intervals, tests or significance "
                   "marks (no row has per-example predictions).")
    out.append(f"Δm% (Maninis et al., 2019) vs the separate row of the same budget and data, over: "
               f"{delta_m_metrics_text(lb)}.")
    if m.n_tests:
        correction = ("without correction" if o.correction == "none"
                      else f"after {stats.CORRECTIONS[o.correction]} correction")
        how = "; ".join(TESTS[t] for t in m.tests_used)
        out.append(f"*: differs from separate at α={alpha} {correction} over the table's {m.n_tests} tests ({how}; "
                   f"per task, Avg and Δm%; raw and adjusted p in the CSV/JSON).")
    if lb.has_intervals:
        shown = [v for v in lb.table.index if v not in m.unmarked]
        if seeds and not shown:
            fewest = min(seeds)
            out.append(f"No *, bold or ≈: rows have {fewest} seed{'s' if fewest != 1 else ''}, and marks need ≥ "
                       f"{o.min_seeds} seeds per row and baseline (`seeds={o.min_seeds}`); with fewer, two copies of "
                       f"one configuration are marked different far more often than α.")
        else:
            tie = "underlined" if latex else "≈"
            correction = "" if o.correction == "none" else f" after {stats.CORRECTIONS[o.correction]} correction"
            out.append(f"Bold: best of its column and significantly better than every other markable row (two-level "
                       f"t, p < {alpha} each); {tie}: not significantly worse than the best{correction}; rows with "
                       f"fewer than {o.min_seeds} seeds, another budget than their baseline, or no predictions are "
                       f"never marked. Cost columns: best in bold, untested.")
        if not math.isnan(m.mde):
            more = ", ".join(f"{k} seeds: {v:.1f}" for k, v in m.mde_more.items())
            out.append(f"MDE (Avg, α={alpha}, power {POWER:g}): {m.mde:.1f} points at n={m.mde_seeds}"
                       + (f" ({more})." if more else "."))
    else:
        out.append("Cost columns: best in bold, untested.")
    out.append(f"Samples seen: training examples processed by the row's training stages; peak memory is "
               f"{lb.memory_kind}.")
    if lb.any_transductive:
        out.append(TRANSDUCTIVE_NOTE)
    return out


def caption(lb: Leaderboard, latex: bool = False) -> str:
    """The board's caption. Markdown, terminal and JSON: the facts, every statistics sentence and what the cost
    columns are. LaTeX: the facts, the split and the cost columns only (a paper's caption); the statistics and the
    notes go to the table's footnote (:mod:`bench.report.render_latex`)."""
    seeds = ", ".join(str(s) for s in lb.seeds)
    split = f"{lb.split.capitalize()} split{_examples_text(lb)}."
    if not latex:
        body = " ".join([split, *caption_sentences(lb, latex), *cost_sentences(lb)])
        return f"Suite {lb.suite}, backbone {lb.backbone}, seeds {{{seeds}}}, budget {lb.budget}. {body}"
    body = " ".join([split, *cost_sentences(lb)])
    return (rf"Suite \texttt{{{_tex(lb.suite)}}}, backbone \texttt{{{_tex(lb.backbone)}}}, "
            rf"seeds \{{{seeds}\}}, budget {_tex(lb.budget)}. {_latex_text(body)}")


def cost_sentences(lb: Leaderboard) -> list[str]:
    """What the wall-time and parameter columns count (none with ``columns=scores``)."""
    if lb.options.columns == "scores":
        return []
    out = []
    if _known(lb, "wall_own_s"):
        out.append("Wall own: seconds of the stages only this row uses; Wall shared: of the stages other rows here "
                   "use too (fine-tunes, fusions), counted in full in each row.")
    else:
        out.append("Wall: seconds of every stage the row used, stages shared with other rows included.")
    if _known(lb, "deployed_params"):
        out.append("Params deployed: the model(s) that serve the tasks (separate: one per task); Params trained: "
                   "summed over every training stage the row used, shared fine-tunes included.")
    else:
        out.append("Params: trained parameters summed over every training stage the row used (separate: one model "
                   "per task).")
    return out


def latex_notes(lb: Leaderboard) -> list[str]:
    """The board's notes as LaTeX sentences, without the command hints (a paper has no command line)."""
    return [_latex_text(re.sub(r";\s*(re)?run\b.*$", "", n).rstrip(".") + ".") for n in lb.notes]


def notes_markdown(lb: Leaderboard) -> str:
    return "".join(f"- Note: {note}\n" for note in lb.notes)


# ----------------------------------------------------------------------------------------------- formats


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"


def to_markdown(lb: Leaderboard) -> str:
    """A GitHub table: significant winners and the best cost in bold, ties for best marked ≈, ``*`` vs separate."""
    text, rank = cell_text(lb, markdown=True), ranks(lb)
    lines = [_md_row(["variant", *text.columns]), "|" + "---|" + "---:|" * len(text.columns)]
    for variant, cells in text.iterrows():
        marked = [f"**{c}**" if r == 1 else c for c, r in zip(cells, rank.loc[variant])]
        name = f"`{variant}` {TRANSDUCTIVE_MARK}" if lb.is_transductive(variant) else f"`{variant}`"
        lines.append(_md_row([name, *marked]))
    return "\n".join(lines) + "\n"


def to_latex(lb: Leaderboard) -> str:
    """A ``table*`` for a two-column paper (:func:`bench.report.render_latex.to_latex`): booktabs rules, significant
    winners bold, ties for best underlined, ``$^{*}$`` vs separate, intervals in \\scriptsize, the statistics as a
    short footnote."""
    from bench.report.render_latex import to_latex as render

    return render(lb)


def to_rich(lb: Leaderboard, compact: bool = False):
    """A rich Table for the terminal (significant winners bold green, ties for best ≈ and underlined).

    ``compact`` (narrow terminals) keeps n, scores, Avg and Δm% and leaves the cost columns to the files.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    text, rank = cell_text(lb), ranks(lb)
    cost = (*TELEMETRY_COLUMNS, "train_samples_seen")
    keep = [c.header for c in columns(lb) if not compact or c.key not in cost]
    text, rank = text[keep], rank[[c.key for c in columns(lb) if c.header in keep]]
    notes = "".join(f"\nNote: {n}" for n in lb.notes)
    table = Table(title=Text(f"{lb.suite}: {lb.split}"), caption=Text(caption(lb) + notes), caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    # the variant name must never be squeezed away on a narrow screen; score headers fold instead
    widest = max((len(str(v)) for v in text.index), default=8)
    table.add_column("variant", no_wrap=True, min_width=min(widest, 32), overflow="ellipsis")
    for header in text.columns:
        table.add_column(header, justify="right", overflow="fold")
    styles = {0: "", 1: "bold green", 2: "underline"}
    for variant, cells in text.iterrows():
        name = f"{variant} {TRANSDUCTIVE_MARK}" if lb.is_transductive(variant) else str(variant)
        table.add_row(Text(name), *(Text(c, style=styles[r]) for c, r in zip(cells, rank.loc[variant])))
    return table


def to_frame(lbs: list[Leaderboard]) -> pd.DataFrame:
    """All splits' numeric tables stacked (a ``split`` column first): what CSV and JSON hold.

    When a row is transductive, a ``transductive`` column (true/false) follows ``variant``: the row names stay the
    names ``compare=`` and ``strategy=`` take, and files of boards without such rows keep their columns."""
    frames = [lb.table.reset_index().assign(split=lb.split) for lb in lbs]
    frame = pd.concat(frames, ignore_index=True)
    front = ["split", "variant"]
    if any(lb.any_transductive for lb in lbs):
        marked = {(lb.split, v) for lb in lbs for v in lb.transductive}
        frame["transductive"] = [(s, v) in marked for s, v in zip(frame["split"], frame["variant"])]
        front.append("transductive")
    return frame[[*front, *[c for c in frame.columns if c not in front]]]


UNITS = ("points: max-direction metrics ×100, min-direction metrics raw; delta_m in %; std with ddof=1; "
         "<col>:lo/:hi two-level t interval at `level`; <col>:seed_sd SD over seeds of the per-seed scores; "
         "<col>:test_se test-set standard error of the mean; <col>:df Welch–Satterthwaite degrees of freedom; "
         "<col>:p raw and <col>:p_adj corrected p of the test against the row's baseline (<col>:test names it; "
         "p_adj only for markable rows); <col>:markable whether the row may carry a mark (unmarked: why not); "
         "<col>:mark best|tie; <col>:p_best two-level t p against the column's best; <col>:wilson_lo/hi Wilson "
         "interval of accuracy pooled over seeds")


def board_info(lb: Leaderboard) -> dict:
    """What a board's JSON says besides its rows: caption, notes and the statistics' settings."""
    return {"caption": caption(lb), "notes": list(lb.notes), "delta_m_metrics": [f"{t}/{m}" for t, m in
                                                                                  lb.delta_metrics],
            "examples": lb.examples, "n_tests": lb.marking.n_tests, "tests": list(lb.marking.tests_used),
            "mde_avg": None if math.isnan(lb.marking.mde) else lb.marking.mde, "mde_seeds": lb.marking.mde_seeds,
            "mde_avg_with_more_seeds": {str(k): v for k, v in lb.marking.mde_more.items()},
            "unmarked": dict(lb.marking.unmarked), "baselines": lb.baselines}


def to_json(lbs: list[Leaderboard]) -> str:
    lb = lbs[0]
    frame = to_frame(lbs).astype(object)
    frame = frame.where(frame.notna(), None)
    o = lb.options
    payload = {
        "schema_version": LEADERBOARD_SCHEMA, "suite": lb.suite, "backbone": lb.backbone, "seeds": list(lb.seeds),
        "budget": lb.budget, "memory_kind": lb.memory_kind, "units": UNITS, "baseline_variant": BASELINE_VARIANT,
        "options": {"level": o.level, "interval": o.interval, "delta_m": o.delta_m, "correction": o.correction,
                    "correction_name": stats.CORRECTIONS[o.correction], "min_seeds": o.min_seeds,
                    "budget_tolerance": o.budget_tolerance, "power": POWER},
        "notes": list(lb.notes),
        "tasks": lb.tasks,
        "boards": {b.split: board_info(b) for b in lbs},
        "splits": {b.split: [r for r in frame.to_dict("records") if r["split"] == b.split] for b in lbs},
    }
    return json.dumps(payload, indent=2, default=_json_default) + "\n"


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_tables(lbs: list[Leaderboard], out_dir: Path) -> dict[str, Path]:
    """leaderboard.{md,tex,csv,json} with every split of ``lbs`` (the first one is the main table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"leaderboard.{ext}" for ext in ("md", "tex", "csv", "json")}
    md = [f"# Leaderboard: {lbs[0].suite}\n"]
    for lb in lbs:
        md += [f"## {lb.split.capitalize()}\n", caption(lb) + "\n"]
        if lb.notes:
            md.append(notes_markdown(lb))
        md.append(to_markdown(lb))
    paths["md"].write_text("\n".join(md))
    tex = "% generated by `python -m bench report`; needs \\usepackage{booktabs} and \\usepackage{graphicx}\n"
    paths["tex"].write_text(tex + "\n".join(to_latex(lb) for lb in lbs))
    to_frame(lbs).to_csv(paths["csv"], index=False)
    paths["json"].write_text(to_json(lbs))
    return paths


# ----------------------------------------------------------------------------------------------- compare


def _row_or_error(lb: Leaderboard, name: str) -> str:
    valid = list((lb.full_table if lb.full_table is not None else lb.table).index)
    if name not in valid:
        raise BenchError(f"compare: unknown row {name!r}{did_you_mean(name, valid)}; rows: {', '.join(valid)}")
    return name


def compare_rows(lb: Leaderboard, a: str, b: str) -> pd.DataFrame:
    """The paired comparison of rows ``a`` and ``b``: per task (the Δm% metrics and extra splits' primaries), Avg
    and Δm%: both values, the difference a − b with its interval, the test, raw and corrected p."""
    a, b = _row_or_error(lb, a), _row_or_error(lb, b)
    if a == b:
        raise BenchError(f"compare: {a!r} twice; name two different rows, e.g. compare={a},{BASELINE_VARIANT}")
    inference = lb.inference if lb.inference is not None and lb.inference.any() else None
    full = lb.full_table if lb.full_table is not None else lb.table
    keys = lb.score_keys()
    rows = []
    for key in keys:
        va, vb = full.loc[a].get(key, math.nan), full.loc[b].get(key, math.nan)
        lo = hi = p = math.nan
        test = ""
        if inference is not None:
            diff = inference.difference(a, b, key)
            if diff is not None:
                lo, hi = diff.interval(lb.options.level)
            p, test = inference.paired_test(a, b, key)
        label = {"avg": "Avg", "delta_m": "Δm%"}.get(key, key.replace("/", " "))
        rows.append({"column": label, "key": key, a: va, b: vb, "difference": va - vb, "lo": lo, "hi": hi,
                     "test": test, "p": p})
    frame = pd.DataFrame(rows)
    frame["p_adj"] = stats.adjust(frame["p"].to_numpy(dtype=float), lb.options.correction)
    return frame


def compare_markdown(lb: Leaderboard, frame: pd.DataFrame, a: str, b: str) -> str:
    """``compare_<a>_vs_<b>.md``: the comparison table and what its numbers are."""
    o = lb.options
    level = f"{100 * o.level:g}%"
    used = [t for t in dict.fromkeys(frame["test"]) if t]
    how = "; ".join(f"{t}: {TESTS[t]}" for t in used) or "none"
    lines = [f"# {a} vs {b} ({lb.suite}, {lb.split})\n",
             f"Difference = {a} − {b} in points (Δm%: in %), with its {level} two-level t interval (seed variance "
             f"plus the test-set covariance between seeds; paired seed by seed when the rows share their seeds) and "
             f"a two-sided test ({how}); p adjusted over these {frame['p'].notna().sum()} tests with "
             f"{stats.CORRECTIONS[o.correction]}.\n",
             _md_row(["column", a, b, "difference", f"{level} interval", "test", "p", "p adj"]),
             "|---|" + "---:|" * 7]
    for row in frame.to_dict("records"):
        signed = Column("d", "", "", digits=2 if row["key"] == "delta_m" else 1, kind="signed")
        plain = replace(signed, kind="signed" if row["key"] == "delta_m" else "float")
        span = "—" if _nan(row["lo"]) else f"[{_number(row['lo'], signed)}, {_number(row['hi'], signed)}]"
        lines.append(_md_row([row["column"], _number(row[a], plain), _number(row[b], plain),
                              _number(row["difference"], signed), span, row["test"] or "—", _p(row["p"]),
                              _p(row["p_adj"])]))
    if lb.inference is None or not lb.inference.any():
        lines.append("\nNo per-example predictions (records older than schema 2): differences of means only.")
    else:
        few = [f"{n} has {len(lb.inference.infos[n].seeds)}" for n in (a, b)
               if n in lb.inference.infos and len(lb.inference.infos[n].seeds) < o.min_seeds]
        if few:
            lines.append(f"\nNot a claim about training methods: {' and '.join(few)} seed(s), fewer than the "
                         f"{o.min_seeds} a mark needs; with one seed a test is about this test set only.")
    if lb.inference is not None and a in lb.inference.infos and b in lb.inference.infos:
        setup = {n: {k: lb.inference.infos[n].config.get(k) for k in ("suite", "budget_match")} for n in (a, b)}
        diff = config_differences(setup)  # suite and budget settings; strategies and their params differ anyway
        if diff[a]:
            lines.append(f"\nThe rows were trained under different settings: {', '.join(diff[a])} ({a}) vs "
                         f"{', '.join(diff[b])} ({b}).")
    return "\n".join(lines) + "\n"


def _p(p: float) -> str:
    if _nan(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
