"""The cross-suite report's files: across.md, across.json, one CSV per table and the figures."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from bench.report.across.build import AcrossReport
from bench.report.across.scores import ALL, SPLIT
from bench.report.across.text import to_markdown


def _json(report: AcrossReport) -> str:
    r = report.ranks
    data = {
        "suites": report.suites, "split": SPLIT, "baseline": report.baseline, "level": report.level,
        "bootstrap": report.reps, "methods": report.methods, "dropped_methods": report.dropped, "notes": report.notes,
        "normalisation": f"score = value / mean({report.baseline}) for higher-is-better metrics, "
                         f"mean({report.baseline}) / value for lower-is-better ones, per suite and task",
        "summary": report.summary.to_dict(orient="records"),
        "per_suite": report.per_suite.to_dict(orient="records"),
        "probability_of_improvement": report.improvement.to_dict(orient="records"),
        "ranks": {"average": r.average.to_dict(), "friedman_chi2": r.friedman, "friedman_p": r.friedman_p,
                  "critical_difference": r.cd, "tasks": [f"{s}/{t}" for s, t in r.blocks.index],
                  "nemenyi_p": r.nemenyi.to_dict()},
        "profiles": report.profiles.to_dict(orient="records"),
        "scores": report.scores.to_dict(orient="records"),
    }
    return json.dumps(_finite(data), indent=1, default=_plain, allow_nan=False) + "\n"


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _finite(value):
    """NaN -> null, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def default_out(results_dir: Path | str, suites, names: list[str]) -> Path:
    """``results_dir/across/<suites joined by +>`` (``all`` for ``suite=all``)."""
    tag = ALL if isinstance(suites, str) and suites == ALL else "+".join(names)
    return Path(results_dir) / "across" / re.sub(r"[^A-Za-z0-9_.+=-]+", "_", tag)


def write_across(report: AcrossReport, out_dir: Path) -> dict[str, Path]:
    """across.{md,json}, the CSV tables and the figures (PNG + PDF); returns name -> path."""
    from bench.report.across.plots import write_figures

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "across.md", "json": out_dir / "across.json"}
    paths["md"].write_text(to_markdown(report))
    paths["json"].write_text(_json(report))
    nem = report.ranks.nemenyi.copy()
    nem.index.name = "method"
    tables = {"summary": report.summary, "per_suite": report.per_suite, "improvement": report.improvement,
              "ranks": report.ranks.average.rename("rank").rename_axis("method").reset_index(),
              "nemenyi": nem.reset_index(), "profiles": report.profiles, "scores": report.scores}
    for name, table in tables.items():
        path = out_dir / f"across_{name}.csv"
        table.to_csv(path, index=False)
        paths[f"{name}_csv"] = path
    paths |= write_figures(report, out_dir)
    return paths
