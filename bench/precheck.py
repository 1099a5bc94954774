"""The front half of planning: everything a command line can be checked for without a model, in a fraction of a
second, before torch, transformers, timm, sklearn or pandas is imported.

:func:`check_run` reads a ``bench run`` command line the way :func:`bench.plan.make_plan` does and stops at the
first mistake with the same one line: the override grammar, the launcher and its options, a ``params=`` file, the
top-level keys (:class:`bench.options.RunOptions`), the suite (name or path, its YAML, the
``train.*``/``split.*``/... overrides, ``tasks=``, ``sample_scale=``), the strategy names and each strategy's
``Params``, and the weighting and fusion method names its parameters give (a parameter named ``weighting`` or
``fusion`` names a registered one). Plug-ins are not imported: their names and ``Params`` are read from their files
(:mod:`bench.plugins`). The plan then checks all of it again,
and what needs imported code besides (a strategy's own ``check``, backbone and data source names, absent optional
tasks), so this module may let a mistake through but never refuses a command the plan accepts.

Every function here that the plan uses too is defined here once: the plan imports it.

>>> check_run(["suite=synthetic", "strategy=naive_mtl", "trian.epochs=2"])
Traceback (most recent call last):
...
bench.errors.BenchError: unknown key 'trian.epochs' (did you mean 'train.epochs'?); valid: budget.match, data_dir, \
devices, force, label, launcher, params, plugin_dirs, procs, report, results_dir, sample_scale, schedule, seed, seeds, \
strategy, strategy_dirs, suite, tasks, tracker, unlabel, wait, workers, and dotted keys under train, backbone, split, \
strategy, launcher
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import Frozen, SuiteConfig, validated
from bench.errors import BenchError, did_you_mean
from bench.launch import LAUNCH_KEYS, Launcher, launcher_from
from bench.options import RunOptions, renamed
from bench.overrides import expand, load_params_file, parse
from bench.plugins import Scan
from bench.plugins.discovery import HINT
from bench.specs import specs_of
from bench.suites import find_suite, read_suite_yaml, suite_files, validate_suite

DEFAULT_SUITE = "text"
FALLBACK_SUITE = "synthetic"
#: every top-level key (RunOptions') and budget.match, the suite key the command line spells without a prefix
TOP_KEYS = RunOptions.keys() | {"budget.match"}
PREFIXES = ("train.", "backbone.", "split.", "strategy.", "launcher.")
SUITE_PREFIXES = ("train.", "backbone.", "split.", "budget.")
#: a strategy parameter of one of these names names an entry of that registry (checked before any import)
NAMED_PARAMS = {"fusion": "fusion method", "weighting": "weighting"}
STRATEGY_HINT = "; strategies in another folder need plugin_dirs=[folder]"


def default_suite() -> str:
    return DEFAULT_SUITE if DEFAULT_SUITE in suite_files() else FALLBACK_SUITE


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "a.b", 1)``: ``d["a"]["b"] = 1``, creating (or replacing non-dict) parents.

    >>> d = {}; set_dotted(d, "train.epochs", 2); d
    {'train': {'epochs': 2}}
    """
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def options(combo: dict[str, Any]) -> RunOptions:
    """The top-level keys of one combination, validated (the dotted keys are the suite's and the strategies')."""
    return RunOptions.of({k: v for k, v in combo.items() if "." not in k and not k.startswith("_")})


def seeds_of(combo: dict[str, Any]) -> list[int]:
    return options(combo).seed_list


def check_keys(pairs: list[tuple[str, Any, bool]]) -> None:
    for key, value, _ in pairs:
        err = renamed(key, value)
        if err is not None:
            raise err
        if key not in TOP_KEYS and not key.startswith(PREFIXES):
            known = sorted(TOP_KEYS) + ["train.epochs", "train.lr", "train.batch_size", "backbone.name",
                                        "strategy.weighting"]
            raise BenchError(f"unknown key {key!r}{did_you_mean(key, known)}; valid: {', '.join(sorted(TOP_KEYS))}, "
                             f"and dotted keys under {', '.join(p[:-1] for p in PREFIXES)}")


def strategy_names(combo: dict[str, Any]) -> list[str]:
    return options(combo).strategy


def folders(combo: dict[str, Any]) -> list[Any]:
    """The plug-in folders of a combination (``plugin_dirs=``, or its old name ``strategy_dirs=``)."""
    return options(combo).plugin_dirs


@dataclass
class Front:
    """A command line read up to the plug-ins: its launcher, its ``tracker=`` (value, is a sweep) and the
    combinations its sweeps expand into."""

    launcher: Launcher
    tracker: tuple[Any, bool] | None
    combos: list[dict[str, Any]]

    @property
    def first(self) -> dict[str, Any]:
        return self.combos[0]


def front(args: list[str]) -> Front:
    """Parse ``args``; check the launcher (first: a typo there must not wait for the suite), read a ``params=``
    file (the command line wins over it), check every key and expand the sweeps."""
    pairs = parse(args)
    launcher = launcher_from(pairs)
    pairs = [p for p in pairs if p[0] not in LAUNCH_KEYS and not p[0].startswith("launcher.")]
    for key, value, _ in pairs:
        if key == "params":
            pairs = load_params_file(str(value)) + [p for p in pairs if p[0] != "params"]
            break
    check_keys(pairs)
    tracker = next(((v, sweep) for k, v, sweep in pairs if k == "tracker"), None)
    pairs = [p for p in pairs if p[0] != "tracker"]  # never a sweep axis, a variant tag or a suite key
    return Front(launcher, tracker, expand(pairs))


def suite_of(combo: dict[str, Any]) -> tuple[SuiteConfig, str, Path]:
    """The suite of one combination as its YAML and the overrides give it, validated: (suite, name, path). The plan
    then checks its registry names and drops absent optional tasks (:func:`bench.plan.build_suite`)."""
    opts = options(combo)
    name = opts.suite or default_suite()
    path = find_suite(name)
    raw = copy.deepcopy(read_suite_yaml(path))
    for key, value in combo.items():
        if key.startswith(SUITE_PREFIXES):
            set_dotted(raw, key, value)
    if opts.data_dir is not None:  # point file-backed sources (e.g. GLUE) at a local copy
        for spec in [raw.get("data")] + [t.get("data") for t in raw.get("tasks", []) if isinstance(t, dict)]:
            if isinstance(spec, dict):
                spec.setdefault("options", {})["data_dir"] = opts.data_dir
    if opts.unlabel:  # a partial-label ablation: the data layer removes a fixed fraction of each named task's labels
        names = [t.get("name") for t in raw.get("tasks", []) if isinstance(t, dict)]
        for task, fraction in opts.unlabel.items():
            if task not in names:
                raise BenchError(f"unlabel: suite {raw['name']!r} has no task {task!r}{did_you_mean(task, names)}; "
                                 f"tasks: {', '.join(map(str, names))}")
            spec = raw.get("data") if raw.get("kind") == "single_input" else \
                next(t for t in raw["tasks"] if t.get("name") == task).get("data")
            if isinstance(spec, dict):
                spec.setdefault("options", {}).setdefault("unlabel", {})[task] = fraction
    if opts.tasks is not None:
        want = opts.tasks
        if not want:
            example = "[" + ",".join(str(t.get("name")) for t in raw.get("tasks", [])[:2]) + "]"
            raise BenchError(f"tasks=[] is empty: name at least one, e.g. tasks={example}")
        names = [t.get("name") for t in raw.get("tasks", [])]
        for w in want:
            if w not in names:
                raise BenchError(f"tasks: suite {raw['name']!r} has no task {w!r}{did_you_mean(str(w), names)}; "
                                 f"tasks: {', '.join(map(str, names))}")
        raw["tasks"] = [t for t in raw["tasks"] if t.get("name") in want]
    if opts.schedule is not None:
        raw["schedule"] = opts.schedule
    if isinstance(raw.get("schedule"), list):  # the schedule decides the task set: load only the tasks it names
        named = {str(e).lstrip("-") for step in raw["schedule"] if isinstance(step, list) for e in step}
        if named <= {t.get("name") for t in raw.get("tasks", [])}:  # else the suite's check names the stranger
            raw["tasks"] = [t for t in raw["tasks"] if t.get("name") in named]
    if opts.sample_scale is not None:
        train = raw.setdefault("train", {})
        for k in ("max_train_samples", "max_eval_samples"):
            if train.get(k):
                train[k] = max(1, int(round(train[k] * opts.sample_scale)))
    return validate_suite(raw, f"suite {name!r} ({path})"), name, path


def given_params(combo: dict[str, Any]) -> dict[str, Any]:
    """The ``strategy.*`` overrides of a combination, without the prefix."""
    return {k[len("strategy."):]: v for k, v in combo.items() if k.startswith("strategy.")}


def select_params(model: type[Frozen], given: dict[str, Any], only: bool) -> dict[str, Any]:
    """The ``strategy.*`` overrides (nested by their dots) that a strategy's ``model`` has a field for: all of them
    when it is the only strategy, so that a typo is reported against its fields."""
    fields = set(model.model_fields)
    mine: dict[str, Any] = {}
    for k, v in given.items():
        if only or k.split(".")[0] in fields:
            set_dotted(mine, k, v)
    return mine


def unused_params(combo: dict[str, Any], models: list[type[Frozen]], everyone: list[str]) -> None:
    """With several strategies, a ``strategy.x`` that none of them has is a typo."""
    unused = [k for k in given_params(combo) if not any(k.split(".")[0] in m.model_fields for m in models)]
    if unused and len(everyone) > 1:
        raise BenchError(f"strategy.{unused[0]} is a parameter of none of {', '.join(everyone)}")


def check_run(args: list[str]) -> None:
    """Stop a ``bench run`` command line at its first mistake that needs no model, with the plan's own one line
    (:func:`bench.plan.make_plan` follows the same order). Imports nothing heavy."""
    f = front(args)
    scan = Scan.of(folders(f.first))
    seeds_of(f.first)
    everyone = list(dict.fromkeys(n for combo in f.combos for n in strategy_names(combo)))
    for name in everyone:
        scan.check_name("strategy", name, STRATEGY_HINT)
    models = {n: scan.params(n) for n in everyone}
    suites: set[str] = set()
    for combo in f.combos:
        skey = repr(sorted((k, repr(v)) for k, v in combo.items() if not k.startswith("strategy") and k != "_swept"))
        if skey not in suites:
            suites.add(skey)
            for task in suite_of(combo)[0].tasks:
                scan.check_name("task kind", task.target, HINT)
        for name in strategy_names(combo):
            model = models.get(name)
            if model is None:
                continue  # its Params needs its import: the plan checks it
            try:
                params = validated(model, select_params(model, given_params(combo), len(everyone) == 1),
                                   f"strategy {name!r}")
            except BenchError:
                raise
            except Exception:  # noqa: BLE001 (a model the light read did not build faithfully: the plan decides)
                continue
            for field, kind in NAMED_PARAMS.items():
                scan.check_name(kind, getattr(params, field, None), HINT)
            for spec in specs_of(params):  # a typed reference of another name (bench.specs)
                scan.check_name(spec.kind, spec.name, HINT)
        if all(m is not None for m in models.values()):
            unused_params(combo, list(models.values()), everyone)  # type: ignore[arg-type]
