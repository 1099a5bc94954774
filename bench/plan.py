"""One plan for ``bench run`` and ``bench search``: command-line overrides -> validated variants.

Everything is resolved here, once, before any work: the suite (its YAML with the ``train.*``/``backbone.*``/...
overrides), the tasks it will really train on (an optional task whose files are absent is dropped here, with a
note, so the static λ, fusion weights and a search's simplex are sized from the same task list the trainer sees),
each strategy's ``Params`` (``strategy.x=...`` goes to the strategies that have a parameter ``x``), and the
strategy's own :meth:`~bench.strategy.Strategy.check`. A search builds every trial's variant with
:func:`make_variant`, the very function a run uses, so a trial and ``bench run params=best.yaml`` are one code path.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import DEFAULT_STRATEGIES, Frozen, SuiteConfig
from bench.errors import BenchError, did_you_mean
from bench.launch import LAUNCH_KEYS, Launcher, launcher_from, without_launch_args
from bench.overrides import as_bool, expand, load_params_file, parse
from bench.stages import STAGE_VERSION
from bench.store import content_hash
from bench.strategy import STRATEGIES, Strategy, discover, source_hash, user_plugin_sources
from bench.suites import find_suite, read_suite_yaml, validate_suite

DEFAULT_SUITE = "text"
FALLBACK_SUITE = "synthetic"
TOP_KEYS = {"suite", "strategy", "seeds", "seed", "tasks", "results_dir", "force", "budget", "budget.match",
            "strategy_dirs", "params", "label", "report", "data_dir", "tracker", *LAUNCH_KEYS}
PREFIXES = ("train.", "backbone.", "split.", "strategy.", "launcher.")
SUITE_PREFIXES = ("train.", "backbone.", "split.", "budget.")


@dataclass
class Variant:
    """One (suite config, strategy, params) combination; it runs once per seed."""

    suite: SuiteConfig
    strategy: type[Strategy]
    params: Frozen
    label: str
    notes: list[str] = field(default_factory=list)  # what planning decided for it (a skipped optional task)
    plugins: list[str] = field(default_factory=list)  # content hashes of the command's user plug-in files
    _hashes: dict[int, str] = field(default_factory=dict, repr=False, compare=False)  # seed -> cell hash

    def config(self) -> dict[str, Any]:
        """Everything that decides this variant's results except the seed: what a leaderboard row must share."""
        return {"suite": self.suite.results_dump(), "strategy": self.strategy.name,
                "params": self.params.model_dump(mode="json"), "budget_match": self.suite.budget.match}

    def budget_fingerprint(self) -> str:
        """What a Δm% baseline must share with a row: the training budget and how budgets are matched."""
        return content_hash({"train": self.suite.results_dump()["train"], "budget_match": self.suite.budget.match})

    def cell_hash(self, seed: int) -> str:
        # the label is part of the cell: two labels of one configuration are two records (an A/A control), whose
        # stages still come from one cache. The strategy's source is too: an edited strategy re-composes its rows
        # (from cached stages where its stage calls did not change). Memoised: a job looks its cell up by hash
        if seed not in self._hashes:
            self._hashes[seed] = content_hash({**self.config(), "label": self.label, "seed": seed,
                                               "v": STAGE_VERSION, "source": source_hash(self.strategy),
                                               "plugins": self.plugins})
        return self._hashes[seed]


@dataclass
class Plan:
    variants: list[Variant]
    seeds: list[int]
    results_dir: Path
    force: bool
    report: bool = True
    notes: list[str] = field(default_factory=list)
    launcher: Launcher | None = None
    args: list[str] = field(default_factory=list)  # the command line without launcher keys: what a job re-plans
    trackers: list[Any] = field(default_factory=list)

    @property
    def cells(self) -> list[tuple[Variant, int]]:
        return [(v, s) for v in self.variants for s in self.seeds]


def default_suite() -> str:
    from bench.suites import suite_files

    return DEFAULT_SUITE if DEFAULT_SUITE in suite_files() else FALLBACK_SUITE


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "a.b", 1)``: ``d["a"]["b"] = 1``, creating (or replacing non-dict) parents."""
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def _as_list(key: str, value: Any, example: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise BenchError(f"{key}=[] is empty: name at least one, e.g. {key}={example}")
    return values


def seeds_of(combo: dict[str, Any]) -> list[int]:
    if "seed" in combo and "seeds" in combo:
        raise BenchError("give either seeds=N (runs seeds 0..N-1) or seed=[...], not both")
    if "seed" in combo:
        s = combo["seed"]
        seeds = _as_list("seed", s, "[0,1,2]")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds):
            raise BenchError(f"seed={s!r} must be a non-negative integer or a list of them, e.g. seed=[0,1,2]")
        if len(set(seeds)) != len(seeds):
            raise BenchError(f"seed={s!r} names a seed twice; each seed is one cell")
        return list(seeds)
    n = combo.get("seeds", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise BenchError(f"seeds={n!r} must be a positive integer (the number of seeds), e.g. seeds=3")
    return list(range(n))


# optional task -> why it is absent ("" when present), per data spec: probed once per process
_ABSENT: dict[str, str] = {}


def _absent(task: dict[str, Any], split: dict[str, Any]) -> str:
    """Why an optional task's data cannot be loaded here ("" when it can): its source is asked once per process."""
    from bench.config import SplitConfig, TaskConfig
    from bench.data import SOURCES
    from bench.data.base import MissingData

    key = json.dumps([task, split], sort_keys=True, default=str)
    if key not in _ABSENT:
        cfg = TaskConfig(**task)
        try:
            SOURCES.get(cfg.data.source)(cfg.data, [cfg], SplitConfig(**split))
            _ABSENT[key] = ""
        except MissingData as e:
            _ABSENT[key] = str(e)
    return _ABSENT[key]


def build_suite(combo: dict[str, Any], notes: list[str] | None = None) -> SuiteConfig:
    """The suite of one combination of overrides, validated, with absent optional tasks dropped (their reasons
    appended to ``notes``). The one task list everything sizes from is its ``task_names``."""
    name = combo.get("suite", default_suite())
    if not isinstance(name, str):
        raise BenchError(f"suite={name!r} must be a suite name or a path to a YAML file")
    path = find_suite(name)
    raw = copy.deepcopy(read_suite_yaml(path))
    for key, value in combo.items():
        if key.startswith(SUITE_PREFIXES):
            set_dotted(raw, key, value)
    if "data_dir" in combo:  # point file-backed sources (e.g. GLUE) at a local copy
        for spec in [raw.get("data")] + [t.get("data") for t in raw.get("tasks", []) if isinstance(t, dict)]:
            if isinstance(spec, dict):
                spec.setdefault("options", {})["data_dir"] = str(combo["data_dir"])
    if "tasks" in combo:
        want = _as_list("tasks", combo["tasks"], "[" + ",".join(str(t.get("name")) for t in raw.get("tasks", [])[:2])
                        + "]")
        names = [t.get("name") for t in raw.get("tasks", [])]
        for w in want:
            if w not in names:
                raise BenchError(f"tasks: suite {raw['name']!r} has no task {w!r}{did_you_mean(str(w), names)}; "
                                 f"tasks: {', '.join(map(str, names))}")
        raw["tasks"] = [t for t in raw["tasks"] if t.get("name") in want]
    if "budget" in combo:
        b = combo["budget"]
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not 0 < b < float("inf"):
            raise BenchError(f"budget={b!r} must be a positive number (it scales the suite's sample budgets)")
        train = raw.setdefault("train", {})
        for k in ("max_train_samples", "max_eval_samples"):
            if train.get(k):
                train[k] = max(1, int(round(train[k] * b)))
    suite = validate_suite(raw, f"suite {name!r} ({path})")
    # registry names are checked here too, so a typo fails before any data or model is loaded
    from bench.backbones import BACKBONES
    from bench.data import SOURCES

    BACKBONES.get(suite.backbone.source)
    for spec in [suite.data, *(t.data for t in suite.tasks)]:
        if spec is not None:
            SOURCES.get(spec.source)
    optional = [t for t in suite.tasks if t.optional and suite.kind == "multi_input"]
    dropped = []
    for t in optional:
        why = _absent(t.model_dump(mode="json"), suite.split.model_dump(mode="json"))
        if why:
            dropped.append(t.name)
            if notes is not None:
                notes.append(f"skipped optional task {t.name!r}: {why}")
    if dropped:
        if len(dropped) == len(suite.tasks):
            raise BenchError(f"suite {suite.name!r}: no task has data ({'; '.join(notes or [])})")
        raw = suite.model_dump(mode="json")
        raw["tasks"] = [t for t in raw["tasks"] if t["name"] not in dropped]
        suite = validate_suite(raw, f"suite {name!r} ({path})")
    return suite


def strategy_params(cls: type[Strategy], given: dict[str, Any], only: bool) -> Frozen:
    """``cls``'s validated params from the ``strategy.*`` overrides it has a field for (all of them when it is the
    only strategy, so that a typo is reported against its fields)."""
    fields = set(cls.Params.model_fields)
    mine: dict[str, Any] = {}
    for k, v in given.items():
        if only or k.split(".")[0] in fields:
            set_dotted(mine, k, v)
    return cls.parse_params(mine)


def make_variant(combo: dict[str, Any], cls: type[Strategy], label: str | None = None,
                 suite: SuiteConfig | None = None, notes: list[str] | None = None, only: bool = True) -> Variant:
    """The validated variant of one combination of overrides (a run's cell, a search's trial). ``suite``: the
    already built suite of ``combo`` (planning builds each distinct suite once)."""
    notes = [] if notes is None else notes
    suite = suite or build_suite(combo, notes)
    given = {k[len("strategy."):]: v for k, v in combo.items() if k.startswith("strategy.")}
    params = strategy_params(cls, given, only)
    cls.check(params, suite.task_names)
    if label is None:
        fields = set(cls.Params.model_fields)
        label = combo.get("label") or cls.name
        tags = [f"{k}={v}" for k, v in sorted(given.items()) if k.split(".")[0] in fields]
        tags += [f"{k}={v}" for k, v in sorted(combo.get("_swept", {}).items()) if not k.startswith("strategy")]
        if tags and "label" not in combo:
            label = f"{cls.name}[{','.join(tags)}]"
    return Variant(suite, cls, params, label, list(notes))


def check_keys(pairs: list[tuple[str, Any, bool]]) -> None:
    for key, _, _ in pairs:
        if key not in TOP_KEYS and not key.startswith(PREFIXES):
            known = sorted(TOP_KEYS) + ["train.epochs", "train.lr", "train.batch_size", "backbone.name",
                                        "strategy.weighting"]
            raise BenchError(f"unknown key {key!r}{did_you_mean(key, known)}; valid: {', '.join(sorted(TOP_KEYS))}, "
                             f"and dotted keys under {', '.join(p[:-1] for p in PREFIXES)}")


def strategy_names(combo: dict[str, Any]) -> list[str]:
    names = _as_list("strategy", combo.get("strategy", list(DEFAULT_STRATEGIES)), DEFAULT_STRATEGIES[0])
    return [str(n) for n in names]


def make_plan(args: list[str]) -> Plan:
    """Parse and validate everything a run needs, before any work."""
    pairs = parse(args)
    launcher = launcher_from(pairs)  # checked first: a typo there must not wait for the suite to load
    pairs = [p for p in pairs if p[0] not in LAUNCH_KEYS and not p[0].startswith("launcher.")]
    for key, value, _ in pairs:
        if key == "params":
            pairs = load_params_file(str(value)) + [p for p in pairs if p[0] != "params"]
            break
    check_keys(pairs)
    tracker = next(((v, sweep) for k, v, sweep in pairs if k == "tracker"), None)
    pairs = [p for p in pairs if p[0] != "tracker"]  # never a sweep axis, a variant tag or a suite key
    combos = expand(pairs)
    first = combos[0]
    extra_dirs = first.get("strategy_dirs", [])
    discover(extra_dirs if isinstance(extra_dirs, list) else [extra_dirs])
    trackers: list[str] = []
    if tracker is not None:
        from bench.track import trackers_from

        # after discover: plug-in trackers live in strategy files
        trackers = trackers_from(tracker[0], sweep=tracker[1])
    seeds = seeds_of(first)
    suites: dict[str, tuple[SuiteConfig, list[str]]] = {}
    variants: list[Variant] = []
    notes: list[str] = []
    # strategy.x goes to the strategies that have x; with one strategy in the whole command, x must be one of its
    everyone = list(dict.fromkeys(n for combo in combos for n in strategy_names(combo)))
    classes = {n: STRATEGIES.get(n, hint="; strategies in another folder need strategy_dirs=[folder]")
               for n in everyone}
    for combo in combos:
        skey = content_hash({k: v for k, v in combo.items() if not k.startswith("strategy") and k != "_swept"})
        if skey not in suites:
            suite_notes: list[str] = []
            suites[skey] = (build_suite(combo, suite_notes), suite_notes)
            notes += [n for n in suite_notes if n not in notes]
        suite, suite_notes = suites[skey]
        for name in strategy_names(combo):
            variants.append(make_variant(combo, classes[name], suite=suite, notes=suite_notes,
                                         only=len(everyone) == 1))
        given = [k[len("strategy."):] for k in combo if k.startswith("strategy.")]
        unused = [k for k in given if not any(k.split(".")[0] in c.Params.model_fields for c in classes.values())]
        if unused and len(everyone) > 1:
            raise BenchError(f"strategy.{unused[0]} is a parameter of none of {', '.join(everyone)}")
    results_dir = Path(first.get("results_dir", "results"))
    plugins = sorted(user_plugin_sources(extra_dirs if isinstance(extra_dirs, list) else [extra_dirs]).values())
    for v in variants:
        v.plugins = plugins
    return Plan(variants, seeds, results_dir, as_bool(first, "force", False), as_bool(first, "report", True),
                notes=notes, launcher=launcher, args=without_launch_args(args), trackers=trackers)
