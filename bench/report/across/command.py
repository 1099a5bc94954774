"""``python -m bench report suite=a,b,…|all``: check the options, build, write and print the cross-suite report."""

from __future__ import annotations

from pathlib import Path

from bench.config import BASELINE_STRATEGY
from bench.errors import BenchError
from bench.report.across.build import build_across
from bench.report.across.scores import SPLIT
from bench.report.across.text import caption, rank_text, to_rich, with_interval
from bench.report.across.write import default_out, write_across

OPTIONS = ("suite", "results_dir", "out", "level", "bootstrap", "compare", "strategy", "baseline", "split")


def check_options(level=None, bootstrap=None) -> tuple[float, int]:
    """``level`` in (0, 1) (default 0.95) and ``bootstrap`` replicates, a whole number >= 100 (default 2000)."""
    if level is None:
        level = 0.95
    elif isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise BenchError(f"level={level!r} must be a confidence level in (0, 1), e.g. level=0.95")
    if bootstrap is None:
        bootstrap = 2000
    elif isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 100:
        raise BenchError(f"bootstrap={bootstrap!r} must be a whole number of replicates >= 100, e.g. bootstrap=2000")
    return float(level), int(bootstrap)


def _names(value) -> list[str] | None:
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else [str(getattr(v, "text", v)) for v in value]
    return [s.strip() for s in items if s.strip()]


def across_command(opts: dict) -> int:
    """CLI entry of ``bench report suite=a,b,…|all``: options ``results_dir``, ``out``, ``level``, ``bootstrap``,
    ``compare=a,b``, ``strategy=a,b`` (methods to keep; the baseline always stays), ``baseline`` (the row that
    scores are normalised to, default ``separate``); ``split`` can only be ``test``."""
    from rich.console import Console

    from bench.report import compare_names

    unknown = [k for k in opts if k not in OPTIONS]
    if unknown:
        raise BenchError(f"{unknown[0]}= is not an option of the cross-suite report (suite=a,b,...); it takes "
                         f"{', '.join(OPTIONS)}")
    if str(opts.get("split") or SPLIT) != SPLIT:
        raise BenchError(f"split={opts['split']}: the cross-suite report reads the {SPLIT} split only; drop split=")
    level, reps = check_options(opts.get("level"), opts.get("bootstrap"))
    pair = compare_names(opts.get("compare"))
    results_dir = Path(opts.get("results_dir") or "results")
    suites = opts["suite"]
    report = build_across(results_dir, suites, level=level, bootstrap=reps,
                          compare=tuple(pair) if pair else None, strategies=_names(opts.get("strategy")),
                          baseline=str(opts.get("baseline") or BASELINE_STRATEGY))
    out_dir = Path(opts["out"]) if opts.get("out") else default_out(results_dir, suites, report.suites)
    paths = write_across(report, out_dir)
    console = Console()
    console.print(to_rich(report, compact=console.width < 110))

    def line(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    line(caption(report) + ("" if console.width >= 110 else " (narrow terminal: the means are in the files)"))
    for note in report.notes:
        line(f"note: {note}")
    line(rank_text(report))
    if report.compare:
        for r in report.improvement.itertuples():
            line(f"P({r.x} > {r.y}) = {with_interval(r.p, r.lo, r.hi, 2)}")
    line(f"wrote {len(paths)} files to {out_dir}:")
    for path in paths.values():
        line(f"  {path}")
    return 0
