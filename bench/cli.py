"""``python -m bench run|list|search|report|check`` with Hydra-style overrides.

Bad input prints one line and exits with code 2 (no traceback); a failed cell exits 1 after every other cell ran.
"""

from __future__ import annotations

import argparse
import sys

from bench.errors import BenchError

EPILOG = """examples:
  python -m bench run                                   # the default suite, every strategy, seed 0
  python -m bench run suite=synthetic strategy=separate,naive_mtl seeds=2
  python -m bench run suite=text strategy=fuse_then_joint strategy.fusion=ties train.epochs=2
  python -m bench search suite=synthetic strategy=naive_mtl space=lambda trials=30
  python -m bench report suite=synthetic
  python -m bench report suite=text level=0.9 interval=pm delta_m=all correction=bh compare=naive_mtl,separate
  python -m bench check suite=synthetic [--update]
  python -m bench list [strategy_dirs=[my_plugins]]     # where each entry was found: built-in, ./suites, ...
"""


def _opts(args: list[str]) -> dict:
    """Simple key=value options (for report/check/search), parsed by Hydra's grammar."""
    from bench.overrides import parse

    out = {}
    for key, value, is_sweep in parse(args):
        if is_sweep:
            raise BenchError(f"{key}: a comma list is not allowed here; give one value")
        out[key] = value
    return out


def cmd_run(args: list[str]) -> int:
    from bench.runner import execute, make_plan

    return execute(make_plan(args))


def cmd_list(args: list[str]) -> int:
    """Every suite, strategy, weighting and fusion method with where it was found: ``built-in``, ``./suites`` /
    ``./strategies`` of the working directory (these come first), or a ``strategy_dirs=[...]`` folder."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from bench.fusion import FUSIONS
    from bench.strategy import discover, origin
    from bench.suites import list_suites, suite_files, where
    from bench.weighting import WEIGHTINGS

    opts = _opts(args)
    unknown = sorted(set(opts) - {"strategy_dirs"})
    if unknown:
        raise BenchError(f"list takes strategy_dirs=[folder,...] only, not {unknown[0]!r}")
    extra = opts.get("strategy_dirs", [])
    strategies = discover(extra if isinstance(extra, list) else [extra])
    files = suite_files()
    console = Console(width=160)
    sections = [("suites", {n: (where(files[n], "suites"), d) for n, d in list_suites().items()})]
    for title, reg in [("strategies", strategies), ("weightings", WEIGHTINGS), ("fusion methods", FUSIONS)]:
        sections.append((title, {n: (origin(reg.get(n)), d) for n, d in reg.describe().items()}))
    for title, items in sections:
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column()
        for name, (found, desc) in items.items():
            table.add_row(f"  {name}", escape(found), escape(desc))
        console.print(table)
    return 0


REPORT_LISTS = ("compare", "strategy")  # report options whose comma list names several rows, not a sweep


def cmd_report(args: list[str]) -> int:
    """``report`` options: suite, results_dir, out, split, strategy=a,b, level, interval, delta_m, correction,
    bootstrap, compare=a,b (a row name with brackets needs quotes: compare="'naive_mtl[train.epochs=3]',separate")."""
    from bench.overrides import parse
    from bench.report import report_command

    opts = {}
    for key, value, is_sweep in parse(args):
        if is_sweep and key not in REPORT_LISTS:
            raise BenchError(f"{key}: a comma list is not allowed here; give one value")
        opts[key] = [getattr(v, "text", v) for v in value] if is_sweep else value  # unquote 'a[x=1]' items
    return report_command(opts)


def cmd_check(args: list[str], update: bool) -> int:
    from bench.check import check_command
    from bench.overrides import as_bool

    opts = _opts(args)
    opts["update"] = update or as_bool(opts, "update", False)
    return check_command(opts)


def cmd_search(args: list[str]) -> int:
    from bench.search import search_command

    return search_command(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench", description="Benchmark multi-task fine-tuning strategies.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{run,list,search,report,check}")
    for name, help_ in [("run", "train and evaluate every cell (suite x strategy x seed), then report"),
                        ("list", "list suites, strategies, weightings and fusion methods"),
                        ("search", "tune loss weights / fusion weights with Optuna (validation only)"),
                        ("report", "write leaderboards (Markdown, LaTeX, CSV, JSON) and plots"),
                        ("check", "compare the latest records with a committed baseline (CI gate)")]:
        p = sub.add_parser(name, help=help_, description=help_, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("overrides", nargs="*", help="key=value overrides (Hydra grammar: a,b sweeps; [x,y] lists)")
        if name == "check":
            p.add_argument("--update", action="store_true", help="write a new baseline from the latest records")
    ns = parser.parse_args(argv)
    if ns.command is None:
        parser.print_help()
        return 0
    try:
        if ns.command == "run":
            return cmd_run(ns.overrides)
        if ns.command == "list":
            return cmd_list(ns.overrides)
        if ns.command == "report":
            return cmd_report(ns.overrides)
        if ns.command == "check":
            return cmd_check(ns.overrides, ns.update)
        return cmd_search(ns.overrides)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells and stages are kept; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
