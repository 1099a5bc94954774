"""Launchers: where the cells of ``bench run`` and the workers of ``bench search`` run.

    python -m bench run suite=synthetic seeds=4 workers=2                        # 2 processes on this machine
    python -m bench run suite=text devices=[0,1]                                 # one cell at a time per GPU
    python -m bench run suite=glue launcher=slurm launcher.partition=gpu launcher.gpus_per_node=1
    python -m bench search suite=text strategy=naive_mtl space=lambda launcher=slurm workers=8 storage=postgresql://...

Launchers never decide *what* is computed: a job re-plans the same command line (without the launcher keys) and
runs its cells through the store, whose content-addressed, locked stages make every launcher and worker count give
the records of a serial run. The user guide is docs/launchers.md.
"""

from __future__ import annotations

from typing import Any

from bench.errors import BenchError
from bench.launch import local, submitit_  # noqa: F401  (importing registers the built-in launchers)
from bench.launch.base import LAUNCHERS, Common, Done, Job, Launcher, build_launcher, register_launcher
from bench.options import LaunchOptions
from bench.plugins.discovery import discover

LAUNCH_KEYS = ("launcher", "workers", "devices", "wait", "procs")

__all__ = ["LAUNCHERS", "LAUNCH_KEYS", "Common", "Done", "Job", "Launcher", "build_launcher", "launcher_from",
           "plugin_dirs_in", "register_launcher", "without_launch_args"]


def is_launch_key(key: str) -> bool:
    return key in LAUNCH_KEYS or key.startswith("launcher.")


def plugin_dirs_in(pairs: list[tuple[str, Any, bool]]) -> list[Any]:
    """The ``plugin_dirs=`` (or ``strategy_dirs=``) folders among parsed overrides, before any other check."""
    dirs: list[Any] = []
    for key, value, _ in pairs:
        if key in ("plugin_dirs", "strategy_dirs"):
            dirs += value if isinstance(value, list) else [value]
    return dirs


def launcher_from(pairs: list[tuple[str, Any, bool]], default: str = "local") -> Launcher:
    """The launcher that parsed overrides ask for (``launcher=``, ``launcher.*``, ``workers``, ``devices``,
    ``wait``), validated and checked, or a one-line BenchError. A launcher that is not built in is looked up in the
    ``plugin_dirs=`` folders among ``pairs`` too (the launcher is read before anything else of the command)."""
    opts: dict[str, Any] = {}
    for key, value, is_sweep in pairs:
        if not is_launch_key(key):
            continue
        if is_sweep:
            raise BenchError(f"{key}: a comma list is not allowed here; give one value")
        opts[key] = value
    given = {k: v for k, v in opts.items() if k in LAUNCH_KEYS}
    name = given.setdefault("launcher", default)
    if not isinstance(name, str):
        raise BenchError(f"launcher={name!r} must be a launcher name; valid: {', '.join(LAUNCHERS.names())}")
    if name not in LAUNCHERS.loaded():  # the built-ins are imported above; a plug-in's folder is not yet
        discover(plugin_dirs_in(pairs))
    LaunchOptions.of(given)  # the types of the top-level keys, as bench run reads them: one line on a mistake
    options = {k[len("launcher."):]: v for k, v in opts.items() if k.startswith("launcher.")}
    common = {k: opts[k] for k in ("workers", "devices", "wait", "procs") if k in opts}
    return build_launcher(name, options, common)


def without_launch_args(args: list[str]) -> list[str]:
    """The command line a job re-plans: the same overrides minus the launcher's (a job runs where it was put)."""
    return [a for a in args if not is_launch_key(a.split("=", 1)[0].lstrip("+~"))]
