"""A published table rendered under a report's measured rows: Markdown, LaTeX, rich (terminal), CSV rows, JSON.

Every rendering says that the rows are published, not measured here (a "published" heading and caption naming the
paper, its table and where the numbers were read), prints the cells exactly as the paper printed them, and carries
none of the report's marks: no bold, no ≈, no ``*``, no intervals. The Δm% column is the paper's, in the paper's
convention, which the caption states (the papers' sign is the opposite of bench's: positive = worse).
"""

from __future__ import annotations

import pandas as pd

from bench.references import MISSING, Reference

__all__ = ["caption", "heading", "to_dict", "to_frame", "to_latex", "to_markdown", "to_rich"]

ARROWS = {"max": "↑", "min": "↓"}


def heading(ref: Reference) -> str:
    table = f", {ref.source.table}" if ref.source.table else ""
    return f"Published: {ref.title} ({ref.source.paper}{table})"


def _delta_text(ref: Reference) -> str:
    if ref.delta_m is None:
        return ""
    over = "every metric equally" if ref.delta_m.average == "metric" else "each task's metrics, then the tasks"
    sign = ("positive = worse than" if ref.delta_m.sign == "drop" else "positive = better than")
    base = f" {ref.baseline}" if ref.baseline else " the single-task row"
    return f" Δm% as the paper prints it: averaged over {over}, {sign}{base} (bench's Δm% has positive = better)."


def caption(ref: Reference) -> str:
    """What the rows are and where they come from, in one paragraph."""
    setting = f" Setting: {ref.source.setting}." if ref.source.setting else ""
    return (f"Numbers as published, not measured by this report; they take no part in its intervals, tests or "
            f"marks. Source: {ref.source.citation}.{setting}{_delta_text(ref)}")


def _headers(ref: Reference) -> list[str]:
    cols = [f"{m.label or m.key} {ARROWS[m.direction]}" for m in ref.metrics]
    if any(r.delta_m_text is not None for r in ref.rows):
        cols.append("Δm% (published)")
    return cols


def _cells(ref: Reference) -> list[tuple[str, list[str]]]:
    has_delta = any(r.delta_m_text is not None for r in ref.rows)
    out = []
    for row in ref.rows:
        cells = list(row.cells) if row.cells else [""] * len(ref.metrics)
        cells = ["" if c in MISSING else c for c in cells]
        if has_delta:
            cells.append(row.delta_m_text or "")
        mark = " ‡" if row.mismatch else ""
        out.append((row.method + mark, cells))
    return out


def _mismatch_notes(ref: Reference) -> list[str]:
    return [f"‡ {r.method}: {r.mismatch}." for r in ref.rows if r.mismatch]


def to_markdown(ref: Reference) -> str:
    """A section for ``leaderboard.md``: heading, caption, and the table with every cell as printed."""

    def md_row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"

    headers = _headers(ref)
    lines = [f"## {heading(ref)}\n", caption(ref) + "\n", md_row(["published row", *headers]),
             "|" + "---|" + "---:|" * len(headers)]
    lines += [md_row([f"_{method}_", *cells]) for method, cells in _cells(ref)]
    notes = _mismatch_notes(ref)
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")


def _tex(text: str) -> str:
    out = text
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("$", r"\$"), ("{", r"\{"), ("}", r"\}"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"),
                 ("Δ", r"$\Delta$"), ("λ", r"$\lambda$"), ("μ", r"$\mu$"), ("α", r"$\alpha$"), ("ε", r"$\epsilon$"),
                 ("⟨R²⟩", r"$\langle R^2\rangle$"), ("‡", r"$^\ddagger$"), ("≈", r"$\approx$")):
        out = out.replace(a, b)
    return out


def to_latex(ref: Reference) -> str:
    """A separate ``table*`` for ``leaderboard.tex`` (booktabs), captioned as published."""
    headers = _headers(ref)
    spec = "l" + "r" * len(headers)
    lines = [r"\begin{table*}[t]", r"\centering", rf"\caption{{{_tex(heading(ref))}. {_tex(caption(ref))}}}",
             r"\resizebox{\ifdim\width>\textwidth\textwidth\else\width\fi}{!}{%",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(["Published row", *(_tex(h) for h in headers)]) + r" \\", r"\midrule"]
    lines += [" & ".join([rf"\textit{{{_tex(m)}}}", *(_tex(c) for c in cells)]) + r" \\" for m, cells in _cells(ref)]
    lines += [r"\bottomrule", r"\end{tabular}}"]
    lines += [rf"\par\footnotesize {_tex(n)}" for n in _mismatch_notes(ref)]
    lines.append(r"\end{table*}")
    return "\n".join(lines) + "\n"


def to_rich(ref: Reference):
    """A rich Table for the terminal, titled as published (no styles: nothing is marked)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    notes = "".join(f"\n{n}" for n in _mismatch_notes(ref))
    table = Table(title=Text(heading(ref)), caption=Text(caption(ref) + notes), caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("published row", no_wrap=True, style="italic")
    rows = _cells(ref)
    for i, header in enumerate(_headers(ref)):  # a number is never folded; a long header is
        widest = max((len(cells[i]) for _, cells in rows), default=1)
        table.add_column(header, justify="right", overflow="fold", min_width=widest)
    for method, cells in rows:
        table.add_row(Text(method), *(Text(c) for c in cells))
    return table


def to_frame(ref: Reference) -> pd.DataFrame:
    """Rows for ``leaderboard.csv``: ``split`` = ``published``, ``variant`` = the method, one column per
    ``task/metric`` in the paper's units (not converted to points), ``delta_m_published`` in the paper's convention
    and ``published`` = the source."""
    records = []
    for row in ref.rows:
        record = {"split": "published", "variant": row.method, **ref.values(row)}
        record["delta_m_published"] = row.delta_m
        record["published"] = f"{ref.name}: {ref.source.citation}"
        records.append(record)
    return pd.DataFrame.from_records(records)


def to_dict(ref: Reference) -> dict:
    """The ``reference`` entry of ``leaderboard.json``: the whole table with its source, cells as printed."""
    return {"name": ref.name, "title": ref.title, "published": True, "protocol": ref.protocol,
            "source": ref.source.model_dump(), "caption": caption(ref),
            "delta_m_convention": ref.delta_m.model_dump() if ref.delta_m else None, "baseline": ref.baseline,
            "metrics": [m.model_dump() for m in ref.metrics],
            "rows": [{"method": r.method, "cells": dict(zip([m.key for m in ref.metrics], r.cells)),
                      "values": ref.values(r), "delta_m": r.delta_m, "mismatch": r.mismatch or None}
                     for r in ref.rows]}
