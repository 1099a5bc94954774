"""`python -m bench report`: a suite's records -> leaderboards (md, tex, csv, json) and plots (png, pdf).

See :mod:`bench.report.records` for the row-naming rule and :mod:`bench.report.leaderboard` for units, mean ± std
and Δm%.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError, did_you_mean
from bench.report.leaderboard import Leaderboard, build_leaderboard, to_rich, write_tables
from bench.report.plots import write_plots
from bench.report.records import load_records, trajectories, variant_name

SPLITS = ("test", "validation")

__all__ = ["build_leaderboards", "report_command", "write_report"]


def _selected(records: list[dict], strategies: list[str] | None) -> list[str] | None:
    """Variants chosen by ``strategy=`` names: a record label, a strategy name, or a variant name."""
    if not strategies:
        return None
    chosen: list[str] = []
    known: set[str] = set()
    for wanted in strategies:
        hits = []
        for record in records:
            names = [variant_name(row, record["label"], record["strategy"]) for row in record["rows"]]
            known |= {record["label"], record["strategy"], *names}
            if wanted in (record["label"], record["strategy"]):
                hits += names
            hits += [n for n in names if n == wanted]
        if not hits:
            raise BenchError(f"no records of strategy {wanted!r}{did_you_mean(wanted, known)}; "
                             f"present: {', '.join(sorted(known))}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def build_leaderboards(results_dir: Path | str, suite: str, strategies: list[str] | None = None,
                       main_split: str = "test") -> tuple[list[Leaderboard], list[dict]]:
    """The leaderboards of every split (``main_split`` first) and the records they came from.

    Δm% is always computed against the suite's ``separate`` row, even when ``strategies`` leaves it out.
    """
    if main_split not in SPLITS:
        raise BenchError(f"unknown split {main_split!r}{did_you_mean(main_split, SPLITS)}; valid: test, validation")
    records = load_records(results_dir, suite)
    chosen = _selected(records, strategies)
    splits = [main_split, *(s for s in SPLITS if s != main_split)]
    boards = []
    for split in splits:
        board = build_leaderboard(records, split)
        if board.table.empty:
            continue
        boards.append(board.select(chosen) if chosen else board)
    if not boards:
        raise BenchError(f"records of suite {suite!r} have no {main_split} metrics")
    return boards, records


def write_report(results_dir: Path, suite: str, out_dir: Path | None = None,
                 strategies: list[str] | None = None, main_split: str = "test") -> dict[str, Path]:
    """Write leaderboard.{md,tex,csv,json} and the plots; returns name -> path."""
    boards, records = build_leaderboards(results_dir, suite, strategies, main_split)
    return _write(boards, records, Path(out_dir) if out_dir is not None else Path(results_dir) / suite / "report")


def _write(boards: list[Leaderboard], records: list[dict], out_dir: Path) -> dict[str, Path]:
    paths = write_tables(boards, out_dir)
    paths |= write_plots(boards[0], trajectories(records), out_dir)
    return paths


def report_command(opts: dict) -> int:
    """CLI entry: opts ``suite`` (required), ``results_dir``, ``strategy`` (list), ``out``, ``split``."""
    from rich.console import Console

    suite = opts.get("suite")
    if not suite:
        raise BenchError("report needs a suite: `python -m bench report suite=<name>`")
    results_dir = Path(opts.get("results_dir") or "results")
    strategies = opts.get("strategy")
    if isinstance(strategies, str):
        strategies = [s for s in strategies.split(",") if s]
    elif strategies is not None:
        strategies = [str(s) for s in strategies]
    out_dir = Path(opts["out"]) if opts.get("out") else results_dir / str(suite) / "report"
    boards, records = build_leaderboards(results_dir, str(suite), strategies, str(opts.get("split") or "test"))
    paths = _write(boards, records, out_dir)
    console = Console()
    compact = console.width < 150
    console.print(to_rich(boards[0], compact=compact))
    if compact:
        console.print("(narrow terminal: throughput, memory, wall time and params are in the files)")
    console.print(f"wrote {len(paths)} files:")
    for path in paths.values():
        console.print(f"  {path}", highlight=False, markup=False)
    return 0
