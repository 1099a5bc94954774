"""Leaderboards: records -> one pandas table per split -> Markdown, LaTeX, rich, CSV and JSON.

Units and statistics (all documented in the outputs' captions):

* scores are in *points*: metrics whose direction is ``max`` (fractions: accuracy, F1, correlations) are multiplied
  by 100; ``min`` metrics (mse) stay raw;
* mean ± std over seeds, std with ddof=1 (none for a single seed); ``n`` is the number of seeds of the row;
* ``Avg`` is, per seed, the mean of the tasks' primary scores, then mean ± std over seeds; it is left empty when a
  primary metric is lower-is-better (points and raw units do not average);
* ``Δm%`` (Maninis et al., 2019) uses *all* metrics of each task on the seed means:
  Δm = (100/T) Σ_t (1/M_t) Σ_m (−1)^{l_tm} (N_tm − B_tm) / |B_tm|, B = the ``separate`` row, l = 1 for ``min``
  metrics; metrics with B = 0 are left out; positive = better than separate; separate itself is 0.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from bench.report.records import (
    BASELINE_VARIANT,
    SCHEMA_VERSION,
    base_strategy,
    metrics_frame,
    task_specs,
    telemetry_frame,
)

STRATEGY_ORDER = ("separate", "naive_mtl", "fused", "fuse_then_joint", "uncertainty", "gradnorm")
MEMORY_KINDS = {"host_rss": "host RSS", "cuda_max_allocated": "GPU"}
TELEMETRY_COLUMNS = ("train_samples_per_s", "peak_memory_mb", "wall_time_s", "trainable_params")


def scale(direction: str) -> float:
    """Reported units: fractions (``max`` metrics) ×100, raw ``min`` metrics (mse) unchanged."""
    return 100.0 if direction == "max" else 1.0


def sort_key(variant: str) -> tuple:
    base = base_strategy(variant)
    position = STRATEGY_ORDER.index(base) if base in STRATEGY_ORDER else len(STRATEGY_ORDER)
    return (position, base, variant != base, variant)


@dataclass(frozen=True)
class Leaderboard:
    """One split's numeric table (index: variant, in points) plus what captions need."""

    suite: str
    split: str
    tasks: dict[str, dict]
    table: pd.DataFrame
    backbone: str = ""
    seeds: tuple[int, ...] = ()
    budget: str = ""
    memory_kind: str = "host RSS"
    notes: list[str] = field(default_factory=list)

    def select(self, variants: list[str]) -> Leaderboard:
        return replace(self, table=self.table.loc[[v for v in self.table.index if v in variants]])

    @property
    def score_column(self) -> str:
        """The single-number score of a row: Δm% when a separate baseline exists, else Avg."""
        return "delta_m" if self.table["delta_m"].notna().any() else "avg"


# ----------------------------------------------------------------------------------------------- numbers


def seed_stats(metrics: pd.DataFrame) -> pd.DataFrame:
    """(variant, task, metric) -> mean, std, n over seeds of the raw values."""
    return metrics.groupby(["variant", "task", "metric"])["value"].agg(mean="mean", std="std", n="count")


def delta_m(means: pd.Series, tasks: dict[str, dict], baseline: str = BASELINE_VARIANT) -> pd.Series:
    """Δm% per variant from seed means indexed by (variant, task, metric); NaN without a baseline row."""
    variants = list(dict.fromkeys(means.index.get_level_values("variant")))
    if baseline not in variants:
        return pd.Series(math.nan, index=variants, dtype=float)
    base = means.loc[baseline]
    out = {}
    for variant in variants:
        values = means.loc[variant]
        per_task = []
        for task in dict.fromkeys(base.index.get_level_values("task")):
            terms = []
            for metric, b in base.loc[task].items():
                if (task, metric) not in values.index or b == 0:
                    continue
                sign = -1.0 if tasks[task]["metrics"].get(metric) == "min" else 1.0
                terms.append(sign * (values[(task, metric)] - b) / abs(b))
            per_task.append(sum(terms) / len(terms) if terms else math.nan)
        out[variant] = 100.0 * sum(per_task) / len(per_task) if per_task else math.nan
    return pd.Series(out, dtype=float)


BUDGET_KEYS = ("epochs", "max_steps", "max_train_samples", "batch_size", "lr")


def _budget(budget: dict) -> dict:
    """The budget fields a caption names (the set ones of BUDGET_KEYS; every set field when none of those is)."""
    chosen = {k: budget[k] for k in BUDGET_KEYS if budget.get(k) is not None}
    return chosen or {k: v for k, v in sorted(budget.items()) if v is not None}


def _caption_facts(records: list[dict]) -> dict:
    backbones = sorted({str(r.get("backbone", "")) for r in records} - {""})
    budgets = {json.dumps(_budget(r.get("budget") or {})) for r in records}
    if len(budgets) == 1:
        budget = ", ".join(f"{k}={v}" for k, v in json.loads(budgets.pop()).items()) or "default"
    else:
        budget = "varies by strategy"
    return {"backbone": ", ".join(backbones), "seeds": tuple(sorted({r["seed"] for r in records})),
            "budget": budget}


def build_leaderboard(records: list[dict], split: str = "test") -> Leaderboard:
    """The numeric leaderboard of ``split`` (see module docstring for units and statistics)."""
    tasks = task_specs(records)
    metrics = metrics_frame(records)
    metrics = metrics[metrics["split"] == split]
    if metrics.empty:  # e.g. no record reports this split: an empty board, which callers skip
        return Leaderboard(suite=records[0]["suite"], split=split, tasks=tasks,
                           table=pd.DataFrame(index=pd.Index([], name="variant")))
    stats = seed_stats(metrics)
    directions = {(t, m): d for t, spec in tasks.items() for m, d in spec["metrics"].items()}

    table = pd.DataFrame(index=pd.Index(sorted(stats.index.get_level_values("variant").unique(), key=sort_key),
                                        name="variant"))
    table["n"] = metrics.groupby("variant")["seed"].nunique()
    present = set(zip(stats.index.get_level_values("task"), stats.index.get_level_values("metric")))
    for (task, metric), direction in directions.items():
        if (task, metric) not in present:
            continue
        column = f"{task}/{metric}"
        group = stats.xs((task, metric), level=("task", "metric"))
        factor = scale(direction)
        table[column] = group["mean"] * factor
        table[column + ":std"] = group["std"] * factor
        table[column + ":n"] = group["n"]

    primaries = {t: spec["primary"] for t, spec in tasks.items()}
    if all(tasks[t]["metrics"].get(m) == "max" for t, m in primaries.items()):
        primary = metrics[[(t, m) in primaries.items() for t, m in zip(metrics["task"], metrics["metric"])]]
        per_seed = primary.pivot_table(index=["variant", "seed"], columns="task", values="value")
        per_seed = per_seed.reindex(columns=list(primaries)).mean(axis=1, skipna=False).mul(100.0)
        table["avg"] = per_seed.groupby(level="variant").mean()
        table["avg:std"] = per_seed.groupby(level="variant").std()
    else:
        table["avg"] = table["avg:std"] = math.nan
    table["delta_m"] = delta_m(stats["mean"], tasks)

    telemetry = telemetry_frame(records)
    by_variant = telemetry.groupby("variant")
    for column in TELEMETRY_COLUMNS:
        table[column] = by_variant[column].mean()
    table["train_samples_per_s:std"] = by_variant["train_samples_per_s"].std()
    kinds = sorted({MEMORY_KINDS.get(k, str(k)) for k in telemetry["memory_kind"].dropna()})
    return Leaderboard(suite=records[0]["suite"], split=split, tasks=tasks, table=table,
                       memory_kind="/".join(kinds) or "host RSS", **_caption_facts(records))


# ----------------------------------------------------------------------------------------------- columns


@dataclass(frozen=True)
class Column:
    """One displayed column: where its mean/std live, its headers, digits, and which direction is better."""

    key: str
    header: str
    latex: str
    digits: int = 1
    std: str | None = None
    better: str | None = None  # "max" / "min": best bold, second underlined; None: not ranked
    kind: str = "float"  # float | signed | count | params


def columns(lb: Leaderboard) -> list[Column]:
    cols = [Column("n", "n", "$n$", kind="count")]
    for task, spec in lb.tasks.items():
        metric = spec["primary"]
        direction = spec["metrics"].get(metric, "max")
        unit = " (%)" if direction == "max" else ""
        cols.append(Column(f"{task}/{metric}", f"{task} {metric}{unit}", _tex(f"{task} {metric}") + unit.replace("%", r"\%"),
                           digits=1 if direction == "max" else 3, std=f"{task}/{metric}:std", better=direction))
    if lb.table["avg"].notna().any():
        cols.append(Column("avg", "Avg (%)", r"Avg (\%)", std="avg:std", better="max"))
    cols += [
        Column("delta_m", "Δm%", r"$\Delta_m$ (\%)", digits=2, better="max", kind="signed"),
        Column("train_samples_per_s", "Train (samples/s)", "Train (samples/s)", digits=0,
               std="train_samples_per_s:std", better="max"),
        Column("peak_memory_mb", f"Peak mem (MB, {lb.memory_kind})", f"Peak mem (MB, {_tex(lb.memory_kind)})",
               digits=0, better="min"),
        Column("wall_time_s", "Wall (s)", "Wall (s)", digits=1, better="min"),
        Column("trainable_params", "Params", "Params", kind="params"),
    ]
    return cols


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    """Escape LaTeX specials in plain text (variant names, task names, captions)."""
    return "".join(_TEX_SPECIALS.get(char, char) for char in text)


def _number(value: float, col: Column) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if col.kind == "count":
        return str(int(value))
    if col.kind == "params":
        for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= div:
                return f"{value / div:.1f}{suffix}"
        return f"{int(value)}"
    if col.kind == "signed":
        return f"{value:+.{col.digits}f}"
    return f"{value:,.{col.digits}f}"


def ranks(lb: Leaderboard) -> pd.DataFrame:
    """Per ranked column: 1 = best (ties share it), 2 = second best distinct value, 0 otherwise.

    Values are compared as displayed (rounded), so what looks equal is ranked equal.
    """
    out = pd.DataFrame(0, index=lb.table.index, columns=[c.key for c in columns(lb)])
    for col in columns(lb):
        if col.better is None:
            continue
        values = lb.table[col.key].round(col.digits)
        distinct = sorted(values.dropna().unique(), reverse=col.better == "max")
        if len(values.dropna()) < 2:
            continue
        out.loc[values == distinct[0], col.key] = 1
        if len(distinct) > 1:
            out.loc[values == distinct[1], col.key] = 2
    return out


def cell_text(lb: Leaderboard, latex: bool = False) -> pd.DataFrame:
    """The displayed strings ("80.0 ± 2.8"), one column per :func:`columns` entry."""
    rows = {}
    for variant, row in lb.table.iterrows():
        cells = []
        for col in columns(lb):
            text = _number(row[col.key], col)
            std = row[col.std] if col.std else math.nan
            if col.std and not math.isnan(row[col.key]) and not math.isnan(std):
                std_text = _number(std, replace(col, kind="float"))
                text += rf"{{\scriptsize\,$\pm$\,{std_text}}}" if latex else f" ± {std_text}"
            if latex:
                text = text.replace("—", "--")
                text = "$-$" + text[1:] if text.startswith("-") else text
            cells.append(text)
        rows[variant] = cells
    headers = [c.latex if latex else c.header for c in columns(lb)]
    return pd.DataFrame.from_dict(rows, orient="index", columns=headers)


def caption(lb: Leaderboard, latex: bool = False) -> str:
    seeds = ", ".join(str(s) for s in lb.seeds)
    if not latex:
        return (f"Suite {lb.suite}, backbone {lb.backbone}, seeds {{{seeds}}}, budget {lb.budget}. "
                f"{lb.split.capitalize()} split; mean ± std over seeds (n per row); fractions ×100, mse raw; "
                f"Δm% vs separate (Maninis et al., 2019); peak memory is {lb.memory_kind}.")
    return (rf"Suite \texttt{{{_tex(lb.suite)}}}, backbone \texttt{{{_tex(lb.backbone)}}}, "
            rf"seeds \{{{seeds}\}}, budget {_tex(lb.budget)}. "
            rf"{lb.split.capitalize()} split; mean $\pm$ std over seeds ($n$ per row); fractions $\times$100, "
            rf"mse raw; $\Delta_m$\% vs separate (Maninis et al., 2019); peak memory is {_tex(lb.memory_kind)}; "
            rf"best in bold, second underlined.")


# ----------------------------------------------------------------------------------------------- formats


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"


def to_markdown(lb: Leaderboard) -> str:
    """A GitHub table; the best value of each ranked column in bold."""
    text, rank = cell_text(lb), ranks(lb)
    lines = [_md_row(["variant", *text.columns]), "|" + "---|" + "---:|" * len(text.columns)]
    for variant, cells in text.iterrows():
        marked = [f"**{c}**" if r == 1 else c for c, r in zip(cells, rank.loc[variant])]
        lines.append(_md_row([f"`{variant}`", *marked]))
    return "\n".join(lines) + "\n"


def to_latex(lb: Leaderboard) -> str:
    """A booktabs table via pandas Styler: best bold, second underlined, ± std in \\scriptsize."""
    text, rank = cell_text(lb, latex=True), ranks(lb)
    text.index = [_tex(v) for v in text.index]
    props = pd.DataFrame(rank.to_numpy(), index=text.index, columns=text.columns).map(
        {0: "", 1: "bfseries: ;", 2: "underline: --rwrap;"}.get)
    styler = text.style.apply(lambda _: props, axis=None)
    return styler.to_latex(
        hrules=True, column_format="l" + "r" * len(text.columns), position="t", position_float="centering",
        caption=caption(lb, latex=True), label=f"tab:{lb.suite}-{lb.split}", environment="table",
    )


def to_rich(lb: Leaderboard, compact: bool = False):
    """A rich Table for the terminal (best bold green, second underlined).

    ``compact`` (narrow terminals) keeps n, scores, Avg and Δm% and leaves the cost columns to the files.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    text, rank = cell_text(lb), ranks(lb)
    keep = [c.header for c in columns(lb) if not compact or c.key not in TELEMETRY_COLUMNS]
    text, rank = text[keep], rank[[c.key for c in columns(lb) if c.header in keep]]
    table = Table(title=Text(f"{lb.suite}: {lb.split}"), caption=Text(caption(lb)), caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    # the variant name must never be squeezed away on a narrow screen; score headers fold instead
    widest = max((len(str(v)) for v in text.index), default=8)
    table.add_column("variant", no_wrap=True, min_width=min(widest, 32), overflow="ellipsis")
    for header in text.columns:
        table.add_column(header, justify="right", overflow="fold")
    styles = {0: "", 1: "bold green", 2: "underline"}
    for variant, cells in text.iterrows():
        table.add_row(Text(str(variant)), *(Text(c, style=styles[r]) for c, r in zip(cells, rank.loc[variant])))
    return table


def to_frame(lbs: list[Leaderboard]) -> pd.DataFrame:
    """All splits' numeric tables stacked (a ``split`` column first): what CSV and JSON hold."""
    frames = [lb.table.reset_index().assign(split=lb.split) for lb in lbs]
    frame = pd.concat(frames, ignore_index=True)
    return frame[["split", *[c for c in frame.columns if c != "split"]]]


UNITS = "points: max-direction metrics ×100, min-direction metrics raw; delta_m in %; std with ddof=1"


def to_json(lbs: list[Leaderboard]) -> str:
    lb = lbs[0]
    frame = to_frame(lbs).astype(object)
    frame = frame.where(frame.notna(), None)
    payload = {
        "schema_version": SCHEMA_VERSION, "suite": lb.suite, "backbone": lb.backbone, "seeds": list(lb.seeds),
        "budget": lb.budget, "memory_kind": lb.memory_kind, "units": UNITS, "baseline_variant": BASELINE_VARIANT,
        "tasks": lb.tasks,
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
        md += [f"## {lb.split.capitalize()}\n", caption(lb) + "\n", to_markdown(lb)]
    paths["md"].write_text("\n".join(md))
    tex = "% generated by `python -m bench report`; needs \\usepackage{booktabs}\n"
    paths["tex"].write_text(tex + "\n".join(to_latex(lb) for lb in lbs))
    to_frame(lbs).to_csv(paths["csv"], index=False)
    paths["json"].write_text(to_json(lbs))
    return paths
