"""`python -m bench report`: a suite's records -> leaderboards (md, tex, csv, json) and plots (png, pdf).

See :mod:`bench.report.records` for the row-naming rule (one row per configuration),
:mod:`bench.report.leaderboard` for units, Δm%, intervals, tests and marks, and docs/statistics.md for the
statistics and the report options (``level``, ``interval``, ``delta_m``, ``correction``, ``min_seeds``,
``budget_tolerance``, ``components``,
``compare``). ``reference=NAME`` prints a published table (:mod:`bench.references`) under the measured rows.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.errors import BenchError, did_you_mean
from bench.record import Record
from bench.references import Reference
from bench.references import load as load_reference
from bench.references.render import to_rich as reference_rich
from bench.report.groups import declared_groups
from bench.report.leaderboard import (
    Leaderboard,
    ReportOptions,
    build_leaderboard,
    compare_markdown,
    compare_rows,
    report_options,
    to_rich,
    write_tables,
)
from bench.report.plots import write_plots
from bench.report.previews import dense_previews
from bench.report.records import fusion_coefficients, load_records, row_name, trajectories
from bench.report.schedule import write_schedule
from bench.suites import find_suite, read_suite_yaml

SPLITS = ("test", "validation")
OPTION_KEYS = ("level", "interval", "delta_m", "correction", "bootstrap", "min_seeds", "budget_tolerance", "components",
               "columns")
#: every key ``bench report suite=<one>`` takes; ``strategy_dirs`` is the old spelling of ``plugin_dirs``
KEYS = ("suite", "results_dir", "out", "split", "strategy", "compare", "plots", "plugin_dirs", "strategy_dirs",
        "reference", *OPTION_KEYS)
PLUGIN_KEYS = ("plugin_dirs", "strategy_dirs")

__all__ = ["ReportOptions", "build_leaderboards", "compare_names", "report_command", "report_options",
           "suite_report_defaults",
           "write_boards", "write_report"]


def _selected(records: list[Record], strategies: list[str] | None) -> list[str] | None:
    """Rows chosen by ``strategy=`` names: a record label, a strategy name, a row name, or a row name without its
    configuration suffix (``naive_mtl`` picks ``naive_mtl[train.epochs=3]`` too)."""
    if not strategies:
        return None
    chosen: list[str] = []
    known: set[str] = set()
    for wanted in strategies:
        hits = []
        for record in records:
            names = [row_name(record, row) for row in record.rows]
            origins = [record._origins.get(row, n) for row, n in zip(record.rows, names)]
            known |= {record.label, record.strategy, *names}
            if wanted in (record.label, record.strategy):
                hits += names
            hits += [n for n, o in zip(names, origins) if wanted in (n, o)]
        if not hits:
            raise BenchError(f"no records of strategy {wanted!r}{did_you_mean(wanted, known)}; "
                             f"present: {', '.join(sorted(known))}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def build_leaderboards(results_dir: Path | str, suite: str, strategies: list[str] | None = None,
                       main_split: str = "test", options: ReportOptions | None = None,
                       plugin_dirs: list[str] | tuple[str, ...] = ()) -> tuple[list[Leaderboard], list[Record]]:
    """The leaderboards of every split (``main_split`` first) and the records they came from.

    Δm% is always computed against the separate row of the same budget and data, even when ``strategies`` leaves
    it out; tests, marks and the MDE are computed over the rows shown. ``plugin_dirs``: where the plug-ins of
    records older than schema 3 declare their rows' order and colours (read, never imported).
    """
    if main_split not in SPLITS:
        raise BenchError(f"unknown split {main_split!r}{did_you_mean(main_split, SPLITS)}; valid: test, validation")
    records = load_records(results_dir, suite, plugin_dirs=plugin_dirs)
    chosen = _selected(records, strategies)
    splits = [main_split, *(s for s in SPLITS if s != main_split)]
    declared = declared_groups(_declared(suite, "tasks"))  # the tasks' groups as the suite's YAML says now
    boards = []
    for split in splits:
        board = build_leaderboard(records, split, options, variants=chosen, styles=records.styles,
                                  declared=declared)
        if board.table.empty:
            continue
        boards.append(board)
    if not boards:
        raise BenchError(f"records of suite {suite!r} have no {main_split} metrics")
    return boards, records


def compare_names(value) -> list[str] | None:
    """``compare=a,b`` (a list from the CLI grammar, or one string split at commas outside brackets)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        names = [n.strip() for n in re.split(r",(?![^\[]*\])", value) if n.strip()]
    else:
        names = [str(n).strip() for n in value]
    if len(names) != 2:
        raise BenchError(f"compare={value!r} needs exactly two rows, e.g. compare=naive_mtl,separate")
    return names


def write_report(results_dir: Path, suite: str, out_dir: Path | None = None, strategies: list[str] | None = None,
                 main_split: str = "test", *, level: float | None = None, interval: str | None = None,
                 delta_m: str | None = None, correction: str | None = None, bootstrap: int | None = None,
                 compare=None, min_seeds: int | None = None, budget_tolerance: float | None = None,
                 components: bool | None = None, columns: str | None = None,
                 reference: str | None = None) -> dict[str, Path]:
    """Write leaderboard.{md,tex,csv,json}, the plots and, with ``compare=(a, b)``, ``compare_<a>_vs_<b>.md``;
    returns name -> path. Options are validated first (a bad one raises BenchError before any work).
    ``reference``: a published table printed under the measured rows (:func:`reference_for`)."""
    given = {"level": level, "interval": interval, "delta_m": delta_m, "correction": correction,
             "bootstrap": bootstrap, "min_seeds": min_seeds, "budget_tolerance": budget_tolerance,
             "components": components, "columns": columns}
    options = report_options(**suite_report_defaults(suite, given))
    table = reference_for(reference, suite)
    pair = compare_names(compare)
    boards, records = build_leaderboards(results_dir, suite, strategies, main_split, options)
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / suite / "report"
    compared = _write_compare(boards[0], *pair, out) if pair else None  # a bad row name fails before writing
    paths = write_boards(boards, records, out, table)
    if compared:
        paths["compare"] = compared[0]
    return paths


def write_boards(boards: list[Leaderboard], records: list[Record], out_dir: Path,
                 reference: Reference | None = None) -> dict[str, Path]:
    """The tables of every board and the plots of the first (bars, Pareto, weight trajectories and loss curves,
    fusion coefficients, a dense suite's images and maps), and a task-schedule run's report
    (:mod:`bench.report.schedule`); what both `bench report` and `bench run` write. ``reference``: a published
    table the tables print under the measured rows (never in the plots)."""
    paths = write_tables(boards, out_dir, reference)
    board = boards[0]
    previews = dense_previews(records, list(board.table.index), board.split)  # None unless a task is dense
    paths |= write_plots(board, trajectories(records), out_dir, fusion_coefficients(records), previews)
    # a task-schedule run: transfer, forgetting, per-step costs and their figures (nothing for other stores)
    paths |= write_schedule(records, out_dir, board.options.level, board.options.interval, styles=board.styles,
                            variants=list(board.table.index))
    return paths


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")


def _write_compare(board: Leaderboard, a: str, b: str, out_dir: Path) -> tuple[Path, str]:
    frame = compare_rows(board, a, b)
    text = compare_markdown(board, frame, a, b)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"compare_{_safe(a)}_vs_{_safe(b)}.md"
    path.write_text(text)
    return path, text


def plugin_dirs_of(opts: dict) -> list[str]:
    """The ``plugin_dirs=`` folders (or their old spelling ``strategy_dirs=``; both may be given): one or a list."""
    out: list[str] = []
    for key in PLUGIN_KEYS:
        value = opts.get(key)
        if value:
            out += [str(getattr(v, "text", v)) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return out


def _declared(suite: str, key: str):
    """What the suite's YAML says under ``key``; None when it says nothing or its file is gone (an old store)."""
    try:
        return read_suite_yaml(find_suite(str(suite))).get(key)
    except BenchError:
        return None


def suite_report_defaults(suite: str, given: dict | None = None) -> dict:
    """Report options: ``given`` (None: not set), else what the suite's YAML sets under ``report:`` (the dense
    suites: ``delta_m: all``, as their literature averages every metric), if its file is found."""
    declared = dict(_declared(suite, "report") or {})
    given = dict(given or {})
    return {**declared, **{k: v for k, v in given.items() if v is not None}}


def reference_for(value, suite: str) -> Reference | None:
    """The published table to print: ``reference=NAME``; ``reference=none`` for none; without the key, the one the
    suite's YAML names (``reference:``), if its file is found. An unknown name is one line naming the choices."""
    if value is None:
        value = _declared(suite, "reference")
    if value is None or str(value) in ("", "none"):
        return None
    return load_reference(str(value))


def check_keys(opts: dict) -> None:
    """Refuse a key ``bench report`` does not take: one line naming it and the valid keys."""
    bad = [k for k in opts if k not in KEYS]
    if bad:
        raise BenchError(f"report: unknown key {bad[0]}={did_you_mean(bad[0], KEYS)}; valid keys: "
                         f"{', '.join(KEYS)}")


def report_command(opts: dict) -> int:
    """CLI entry: opts ``suite`` (required; a list or ``all``: the cross-suite report, bench/report/across/),
    ``results_dir``, ``strategy`` (list), ``out``, ``split``, ``level``,
    ``interval``, ``delta_m``, ``correction``, ``min_seeds``, ``budget_tolerance``, ``components``, ``columns``
    (``all`` | ``scores``), ``compare`` (two row names), ``plots`` (true | false: the figures too, default true),
    ``plugin_dirs`` (alias ``strategy_dirs``), ``reference`` (a published table, ``bench list`` names them; ``none``:
    not even the suite's own). Any other key is refused."""
    from rich.console import Console
    from rich.markdown import Markdown

    suite = opts.get("suite")
    if not suite:
        raise BenchError("report needs a suite: `python -m bench report suite=<name>`")
    if isinstance(suite, (list, tuple)) or suite == "all":  # suite=a,b,c or suite=all: docs/across_suites.md
        from bench.report.across import across_command

        return across_command({k: v for k, v in opts.items() if k not in PLUGIN_KEYS})
    check_keys(opts)
    plots = opts.get("plots", True)
    if not isinstance(plots, bool):
        raise BenchError(f"plots={plots!r} must be true or false")
    from bench.suites import stored_suite

    options = report_options(**suite_report_defaults(str(suite), {k: opts.get(k) for k in OPTION_KEYS}))
    pair = compare_names(opts.get("compare"))
    table = reference_for(opts.get("reference"), str(suite))  # an unknown name fails before any work
    results_dir = Path(opts.get("results_dir") or "results")
    suite = stored_suite(str(suite), results_dir)  # a name or a suite YAML's path: the name its store uses
    strategies = opts.get("strategy")
    if isinstance(strategies, str):
        strategies = [s for s in strategies.split(",") if s]
    elif strategies is not None:
        strategies = [str(s) for s in strategies]
    out_dir = Path(opts["out"]) if opts.get("out") else results_dir / str(suite) / "report"
    boards, records = build_leaderboards(results_dir, str(suite), strategies, str(opts.get("split") or "test"),
                                         options, plugin_dirs_of(opts))
    compared = _write_compare(boards[0], *pair, out_dir) if pair else None  # a bad row name fails before writing
    if plots:
        paths = write_boards(boards, records, out_dir, table)
    else:
        paths = write_tables(boards, out_dir, table) | write_schedule(
            records, out_dir, options.level, options.interval, plots=False, variants=list(boards[0].table.index))
    console = Console()
    compact = console.width < 150
    console.print(to_rich(boards[0], compact=compact))
    if table is not None:
        console.print(reference_rich(table))
    if compact:
        console.print("(narrow terminal: samples seen, throughput, memory, wall time and params are in the files)")
    if compared:
        paths["compare"] = compared[0]
        console.print(Markdown(compared[1]))
    console.print(f"wrote {len(paths)} files:")
    for path in paths.values():
        console.print(f"  {path}", highlight=False, markup=False)
    return 0
