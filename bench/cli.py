"""``python -m bench run|list|search|report|check`` with Hydra-style overrides.

Bad input prints one line and exits with code 2 (no traceback); a failed cell exits 1 after every other cell ran.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench.errors import BenchError, StoreError

EPILOG = """examples:
  python -m bench run                                   # the default suite, every strategy, seed 0
  python -m bench run suite=synthetic strategy=separate,naive_mtl seeds=2
  python -m bench run suite=text strategy=fuse_then_joint strategy.fusion=ties train.epochs=2
  python -m bench search suite=synthetic strategy=naive_mtl space=lambda trials=30
  python -m bench report suite=synthetic
  python -m bench report suite=text level=0.9 interval=pm delta_m=all correction=bh compare=naive_mtl,separate
  python -m bench report suite=synthetic,synthetic_conflict     # across suites: IQM, profiles, P(X>Y), CD diagram
  python -m bench report suite=synthetic reference=nyuv2_nash_mtl   # a published table under the measured rows
  python -m bench check suite=synthetic [--update]
  python -m bench list [plugin_dirs=[my_plugins]]       # where each entry was found: built-in, ./suites, ...
  python -m bench verify suite=synthetic [deep=true] [repair=true]   # check the store; exit 1 when damaged
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


def _note_aliases(args: list[str]) -> None:
    """One line per old key spelling of the command line, here where it is read once (the planner reads it again)."""
    from bench.options import note_aliases

    note_aliases(a.split("=", 1)[0].lstrip("+~") for a in args)


def cmd_run(args: list[str]) -> int:
    from bench.precheck import check_run

    _note_aliases(args)
    check_run(args)  # a mistake that needs no model answers now, before the training stack is imported
    from bench.runner import execute, make_plan  # real work starts here

    return execute(make_plan(args))


def cmd_list(args: list[str]) -> int:
    """Every suite and every plug-in, grouped by kind (strategy, weighting, fusion method, tracker, launcher, task
    kind), with where it was found: ``built-in``, ``./suites`` / ``./strategies`` of the working directory
    (these come first), a ``plugin_dirs=[...]`` folder, or the distribution (name and version) of an installed
    plug-in package. Read from the plug-in files (:mod:`bench.plugins.scan`), so nothing of the training stack
    is imported. Then the published reference tables ``bench report ... reference=NAME`` prints
    (:mod:`bench.references`)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from bench.plugins import Scan, where
    from bench.precheck import folders
    from bench.references import describe as describe_references
    from bench.suites import list_suites, suite_files

    opts = _opts(args)
    unknown = sorted(set(opts) - {"plugin_dirs", "strategy_dirs"})
    if unknown:
        raise BenchError(f"list takes plugin_dirs=[folder,...] only, not {unknown[0]!r}")
    scan = Scan.of(folders(opts))
    files = suite_files()
    console = Console(width=160)
    sections = [("suites", {n: (where(files[n], "suites"), d) for n, d in list_suites().items()})]
    for title, kind in [("strategies", "strategy"), ("weightings", "weighting"), ("fusion methods", "fusion method"),
                        ("trackers", "tracker"), ("launchers", "launcher"), ("task kinds", "task kind"),
                        ("architectures", "architecture")]:
        sections.append((title, {n: (scan.origin(kind, n), d) for n, d in scan.describe(kind).items()}))
    sections.append(("published references (bench report ... reference=NAME)",
                     {n: ("built-in", d) for n, d in describe_references().items()}))
    for title, items in sections:
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column()
        for name, (found, desc) in items.items():
            table.add_row(f"  {name}", escape(found), escape(desc))
        console.print(table)
    return 0


REPORT_LISTS = ("compare", "strategy", "suite")  # report options whose comma list names several items, not a sweep


def cmd_report(args: list[str]) -> int:
    """``report`` options: suite, results_dir, out, split, strategy=a,b, level, interval, delta_m, correction,
    bootstrap, compare=a,b (a row name with brackets needs quotes: compare="'naive_mtl[train.epochs=3]',separate"),
    reference=NAME (a published table under the measured rows; `bench list` names them).
    ``suite=a,b,c`` or ``suite=all`` writes the cross-suite report instead (bench/report/across/)."""
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


def cmd_verify(args: list[str]) -> int:
    from bench.verify import verify_command

    return verify_command(_opts(args))


def cmd_search(args: list[str]) -> int:
    from bench.search import search_command

    _note_aliases(args)
    return search_command(args)


KEPT = {"run": "finished cells and stages are kept; rerun the same command to resume",
        "search": "finished trials and stages are kept; rerun the same command to resume"}


class Terminated(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGUSR2) in ``bench run`` / ``bench search``. A KeyboardInterrupt, so the command
    unwinds exactly as on Ctrl-C: local workers are stopped, submitted jobs cancelled, stage locks released, and the
    running training stage keeps the resume state of its last finished epoch. The command exits 128 + the signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGTERM and SIGUSR2 handlers for the main process of ``bench run`` / ``bench search`` (restored after it).

    The first signal raises :class:`Terminated` in the main thread; a second one exits at once (128 + signal), after
    killing this process's children, with the same one message. A signal this process was started ignoring stays
    ignored. Only the command's own process: submitit's jobs keep submitit's handlers (SIGUSR2: checkpoint and
    requeue), and local workers set their own (bench/launch/local.py)."""

    SIGNALS = ("SIGTERM", "SIGUSR2")

    def __init__(self, command: str = "run") -> None:
        self.command = command
        self.signum: int | None = None
        self.announced = False
        self.saved: dict[int, Any] = {}

    def install(self) -> StopSignals:
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                if signal.getsignal(sig) is signal.SIG_DFL:
                    self.saved[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                break
        return self

    def restore(self) -> None:
        if self.signum is not None:
            return  # stopping: a second signal until the process ends still exits at once, with 128 + signal
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        self.saved.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            raise Terminated(signum)
        if not self.announced:  # async-signal-safe: no print() inside a handler
            self.announced = True
            os.write(2, f"{self.message(signum)}\n".encode())
        _kill_children()
        os._exit(128 + signum)

    def message(self, signum: int) -> str:
        return f"terminated ({signal.Signals(signum).name}): {KEPT[self.command]}"

    def announce(self, signum: int) -> None:
        if not self.announced:
            self.announced = True
            print(self.message(signum), file=sys.stderr, flush=True)

    def check(self, rc: int) -> int:
        """``rc``, or :class:`Terminated` when a command caught the signal's interrupt itself (a search reports
        its trials and returns)."""
        if self.signum is not None:
            raise Terminated(self.signum)
        return rc


def _kill_children() -> None:
    """SIGKILL every descendant of this process (local workers, search workers, submitit's local jobs)."""
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
    except Exception:  # exiting at once matters more
        pass


def _one_line_warnings() -> None:
    """bench's own warnings (a skipped record, a note) print as one ``warning: ...`` line, without the source line
    Python adds; other libraries' warnings keep their format. (Formatting, not showing, is replaced: a test's
    ``catch_warnings(record=True)`` still records them.)"""
    import warnings

    plain = getattr(warnings.formatwarning, "__wrapped__", warnings.formatwarning)

    def one_line(message, category, filename, lineno, line=None):
        if getattr(category, "__module__", "").startswith("bench."):
            return f"warning: {message}\n"
        return plain(message, category, filename, lineno, line)

    one_line.__wrapped__ = plain  # type: ignore[attr-defined]
    warnings.formatwarning = one_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench", description="Benchmark multi-task fine-tuning strategies.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{run,list,search,report,check,verify}")
    for name, help_ in [("run", "train and evaluate every cell (suite x strategy x seed), then report"),
                        ("list", "list suites, strategies, weightings and fusion methods"),
                        ("search", "tune loss weights / fusion weights with Optuna (validation only)"),
                        ("report", "write leaderboards (Markdown, LaTeX, CSV, JSON) and plots"),
                        ("check", "compare the latest records with a committed baseline (CI gate)"),
                        ("verify", "check the results store (markers, sizes, hashes); repair=true quarantines damage")]:
        epilog = EPILOG
        if name == "check":  # every option and tolerance, from bench/check.py (cheap to import)
            from bench.check import HELP

            epilog = HELP
        p = sub.add_parser(name, help=help_, description=help_, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("overrides", nargs="*", help="key=value overrides (Hydra grammar: a,b sweeps; [x,y] lists)")
        if name == "check":
            p.add_argument("--update", action="store_true", help="write a new baseline from the latest records")
    ns = parser.parse_args(argv)
    _one_line_warnings()
    if ns.command is None:
        parser.print_help()
        return 0
    stops = StopSignals(ns.command).install() if ns.command in KEPT else None
    try:
        if ns.command == "run":
            return stops.check(cmd_run(ns.overrides))  # type: ignore[union-attr]
        if ns.command == "list":
            return cmd_list(ns.overrides)
        if ns.command == "report":
            return cmd_report(ns.overrides)
        if ns.command == "check":
            return cmd_check(ns.overrides, ns.update)
        if ns.command == "verify":
            return cmd_verify(ns.overrides)
        return stops.check(cmd_search(ns.overrides))  # type: ignore[union-attr]
    except BrokenPipeError:  # `bench run ... | head`: the reader left; what was computed is in the store
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 141
    except StoreError as e:  # the disk, not the input: one line, exit 1
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a store write outside bench.store's writers (ENOSPC, EROFS, ...); anything else re-raises
        from bench.store import as_store_error

        err = as_store_error(e, Path(e.filename or "."))
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated as e:  # SIGTERM / SIGUSR2 in run or search
        if stops is not None:
            stops.announce(e.signum)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted: finished cells and stages are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if stops is not None:
            stops.restore()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
