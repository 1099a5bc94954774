"""The schedule report's text: ``schedule.md`` (caption, the per-row table, costs per step, scores per step),
``schedule.tex`` (booktabs tables in the leaderboard's style), and the JSON payload. The CSV files are the numeric
tables of :mod:`bench.report.schedule.tables` as they are."""

from __future__ import annotations

import json
import math
import re

import pandas as pd

from bench.report.leaderboard.escape import latex_text, tex
from bench.report.leaderboard.render_md import md_row
from bench.report.leaderboard.render_tex import ascii_tex

SCHEMA = 1  # schedule.json

#: (key, Markdown header, LaTeX header, signed): the per-row table's score columns, each with its interval
MEASURE_COLUMNS = (("final", "Final avg ↑", r"Final avg $\uparrow$", False),
                   ("bwt", "BWT ↑", r"BWT $\uparrow$", True),
                   ("forgetting", "Forgetting ↓", r"Forgetting $\downarrow$", True),
                   ("fwt", "FWT ↑", r"FWT $\uparrow$", True))

UNITS = ("points: a task's primary test metric, fractions ×100, lower-is-better metrics (mse) raw and negated so "
         "that higher is always better; final/bwt/forgetting/fwt: mean over seeds, <col>:lo/:hi two-level t "
         "interval at `level` (test-set only with one seed), <col>:seed_sd SD over seeds of the per-seed values, "
         "<col>:test_se test-set standard error, <col>:df Welch–Satterthwaite degrees of freedom, <col>:tasks the "
         "tasks averaged; train_samples_seen and wall_time_s: mean over seeds, summed over steps (per step in "
         "`steps`), <col>:ratio divided by the retrain row's")


def is_nan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value, signed: bool = False, digits: int = 1) -> str:
    if is_nan(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:,.{digits}f}"


def cell(row: pd.Series, key: str, signed: bool, interval: str = "brackets", latex: bool = False) -> str:
    """``69.7 [60.2, 79.3]`` (or ``69.7 ± 9.5`` with ``interval=pm``): the mean and its interval."""
    text = number(row.get(key), signed)
    lo, hi = row.get(f"{key}:lo", math.nan), row.get(f"{key}:hi", math.nan)
    if not (is_nan(lo) or is_nan(hi) or is_nan(row.get(key))):
        extra = (f"± {number((hi - lo) / 2)}" if interval == "pm"
                 else f"[{number(lo, signed)}, {number(hi, signed)}]")
        text += rf"{{\scriptsize\,{latex_text(extra)}}}" if latex else f" {extra}"
    if latex:  # a minus sign, not a hyphen, as the leaderboard's cells
        text = re.sub(r"(?<![\w$.])-(?=\d)", "$-$", text.replace("—", "--"))
    return text


def ratio(value) -> str:
    return "—" if is_nan(value) else f"{value:.2f}×"


def caption(suite: str, table: pd.DataFrame, level: float, latex: bool = False) -> str:
    """What the numbers are, in one paragraph (the Markdown's and, escaped, the LaTeX table's)."""
    seeds = sorted({int(n) for n in table["n"]})
    one = bool(table["test_only"].any())
    text = (f"Suite {suite}: task schedules, one line per row (n seeds: {', '.join(map(str, seeds))}). R[k][i] is "
            f"task i's primary test score after step k, in points (fractions ×100; lower-is-better metrics negated, "
            f"so higher is better). Final avg: mean of R[K][i] over the tasks served at the last step K. BWT: mean "
            f"over tasks that arrived before K and are still served of R[K][i] − R[a(i)][i] (a(i): the step task i "
            f"arrived); forgetting: mean over the same tasks of max over a(i) ≤ l < K of R[l][i] − R[K][i]; FWT: "
            f"mean over tasks arriving after step 1 of R[a(i)][i] − S_i, S_i the task's single-task fine-tune from "
            f"θ0. Each: mean over seeds with a {100 * level:g}% two-level t interval (seeds and test examples; the "
            f"pseudo-values of a difference are the difference of the two models' pseudo-values)"
            + ("; rows with one seed: test-set interval only, nothing about training noise" if one else "")
            + ". Samples and wall: the steps' training stages, summed over steps, mean over seeds; × retrain: "
              "divided by the retrain row of the same schedule and budget.")
    return latex_text(text) if latex else text


def main_markdown(table: pd.DataFrame, interval: str) -> str:
    headers = ["variant", "n", "steps", *(h for _, h, _, _ in MEASURE_COLUMNS), "Samples", "× retrain", "Wall (s)",
               "× retrain"]
    lines = [md_row(headers), "|---|---:|---|" + "---:|" * (len(headers) - 3)]
    for variant, row in table.iterrows():
        lines.append(md_row([f"`{variant}`", str(int(row["n"])), row["steps"],
                             *(cell(row, k, s, interval) for k, _, _, s in MEASURE_COLUMNS),
                             number(row["train_samples_seen"], digits=0), ratio(row["train_samples_seen:ratio"]),
                             number(row["wall_time_s"]), ratio(row["wall_time_s:ratio"])]))
    return "\n".join(lines) + "\n"


def costs_markdown(costs: pd.DataFrame) -> str:
    headers = ["variant", "step", "change", "tasks served", "Samples", "× retrain", "Wall (s)", "× retrain"]
    lines = [md_row(headers), "|---|---:|---|---|---:|---:|---:|---:|"]
    for _, c in costs.iterrows():
        lines.append(md_row([f"`{c['variant']}`", str(int(c["step"])), c["change"], c["tasks"],
                             number(c["train_samples_seen"], digits=0), ratio(c["train_samples_seen:ratio"]),
                             number(c["wall_time_s"]), ratio(c["wall_time_s:ratio"])]))
    return "\n".join(lines) + "\n"


def scores_markdown(scores: pd.DataFrame, interval: str) -> str:
    """R as a (row, step) × task table: a cell per task served, ``(+)`` where it arrived, ``retired`` where it left."""
    tasks = list(dict.fromkeys(scores["task"]))
    lines = [md_row(["variant", "step", *(f"{t} ({m})" for t, m in dict(zip(scores["task"],
                                                                            scores["metric"])).items())]),
             "|---|---:|" + "---:|" * len(tasks)]
    for (variant, step), part in scores.groupby(["variant", "step"], sort=False):
        by_task = {r["task"]: r for _, r in part.iterrows()}
        cells = []
        for t in tasks:
            r = by_task.get(t)
            if r is None:
                cells.append("")
            elif r["event"] == "retired":
                cells.append("retired")
            else:
                cells.append(cell(r, "score", False, interval) + (" (+)" if r["event"] == "arrived" else ""))
        lines.append(md_row([f"`{variant}`", str(int(step)), *cells]))
    return "\n".join(lines) + "\n"


def markdown(suite: str, table: pd.DataFrame, costs: pd.DataFrame, scores: pd.DataFrame, level: float,
             interval: str, notes: list[str]) -> str:
    parts = [f"# Task schedule: {suite}\n", caption(suite, table, level) + "\n"]
    parts += [f"- Note: {n}" for n in notes] + ([""] if notes else [])
    parts += [main_markdown(table, interval), "## Cost per step\n",
              "What the training stages first used at each step spent (mean over seeds), next to retrain's same "
              "step.\n", costs_markdown(costs), "## Scores after each step\n",
              "R[k][i] with its interval; (+): the task arrived at that step.\n", scores_markdown(scores, interval)]
    return "\n".join(parts)


def latex(suite: str, table: pd.DataFrame, costs: pd.DataFrame, level: float, interval: str) -> str:
    """Two booktabs tables (the per-row one, the per-step costs); need ``booktabs`` and ``graphicx``."""
    head = ["Method", "$n$", *(h for _, _, h, _ in MEASURE_COLUMNS), "Samples", r"$\times$ retrain", "Wall (s)",
            r"$\times$ retrain"]
    body = [" & ".join([tex(str(v)), str(int(r["n"])), *(cell(r, k, s, interval, latex=True)
                                                         for k, _, _, s in MEASURE_COLUMNS),
                        number(r["train_samples_seen"], digits=0).replace(",", "{,}"),
                        ratio(r["train_samples_seen:ratio"]).replace("×", r"$\times$").replace("—", "--"),
                        number(r["wall_time_s"]).replace("—", "--"),
                        ratio(r["wall_time_s:ratio"]).replace("×", r"$\times$").replace("—", "--")]) + r" \\"
            for v, r in table.iterrows()]
    steps = [" & ".join([tex(str(c["variant"])), str(int(c["step"])), tex(c["change"]).replace("−", "$-$"),
                         number(c["train_samples_seen"], digits=0).replace(",", "{,}"),
                         ratio(c["train_samples_seen:ratio"]).replace("×", r"$\times$").replace("—", "--"),
                         number(c["wall_time_s"]).replace("—", "--"),
                         ratio(c["wall_time_s:ratio"]).replace("×", r"$\times$").replace("—", "--")]) + r" \\"
             for _, c in costs.iterrows()]
    out = ["% generated by `python -m bench report`; needs \\usepackage{booktabs} and \\usepackage{graphicx}",
           r"\begin{table*}[t]", r"\centering", rf"\caption{{{caption(suite, table, level, latex=True)}}}",
           rf"\label{{tab:{suite}-schedule}}", r"\small",
           r"\resizebox{\ifdim\width>\textwidth\textwidth\else\width\fi}{!}{%",  # shrunk only when too wide
           r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}",
           r"\toprule", " & ".join(head) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}}",
           r"\end{table*}", "", r"\begin{table}[t]", r"\centering",
           rf"\caption{{{tex(suite)}: training samples and wall time of each schedule step (mean over seeds), next "
           r"to retrain's same step.}", rf"\label{{tab:{suite}-schedule-steps}}", r"\small",
           r"\begin{tabular}{lrlrrrr}", r"\toprule",
           r"Method & Step & Change & Samples & $\times$ retrain & Wall (s) & $\times$ retrain \\", r"\midrule",
           *steps, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return ascii_tex("\n".join(out))


def to_json(suite: str, table: pd.DataFrame, costs: pd.DataFrame, scores: pd.DataFrame, level: float,
            notes: list[str]) -> str:
    def records(frame: pd.DataFrame) -> list[dict]:
        frame = frame.astype(object)
        return frame.where(frame.notna(), None).to_dict("records")

    payload = {"schema_version": SCHEMA, "suite": suite, "level": level, "units": UNITS,
               "caption": caption(suite, table, level), "notes": notes, "rows": records(table.reset_index()),
               "steps": records(costs), "scores": records(scores)}
    return json.dumps(payload, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v)) + "\n"
