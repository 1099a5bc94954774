"""``bench run``: overrides -> validated plan of cells -> stages -> records -> report.

Everything is validated before any work starts; finished cells come from the store; a failing cell (e.g. a NaN loss)
is recorded as failed and the others still run.
"""

from __future__ import annotations

import copy
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench import metrics as M
from bench.config import Frozen, SuiteConfig
from bench.errors import BenchError, CellFailed, did_you_mean
from bench.launch import LAUNCH_KEYS, Job, Launcher, launcher_from, without_launch_args
from bench.overrides import as_bool, expand, load_params_file, parse
from bench.stages import STAGE_VERSION, Stages, SuiteContext
from bench.store import (
    RECORD,
    SCHEMA_VERSION,
    Store,
    code_version,
    content_hash,
    library_versions,
    now_iso,
    read_json,
    write_json,
)
from bench.strategy import STRATEGIES, Strategy, discover
from bench.suites import find_suite, read_suite_yaml, validate_suite

DEFAULT_SUITE = "text"
FALLBACK_SUITE = "synthetic"
DEFAULT_STRATEGIES = ["separate", "naive_mtl", "fuse_then_joint", "uncertainty", "gradnorm"]
TOP_KEYS = {"suite", "strategy", "seeds", "seed", "tasks", "results_dir", "force", "budget", "budget.match",
            "strategy_dirs", "params", "label", "report", "data_dir", *LAUNCH_KEYS}
PREFIXES = ("train.", "backbone.", "split.", "strategy.", "launcher.")


@dataclass
class Variant:
    """One (suite config, strategy, params) combination; it runs once per seed."""

    suite: SuiteConfig
    strategy: type[Strategy]
    params: Frozen
    label: str

    def config(self) -> dict[str, Any]:
        """Everything that decides this variant's results except the seed: what a leaderboard row must share."""
        return {"suite": self.suite.results_dump(), "strategy": self.strategy.name,
                "params": self.params.model_dump(mode="json"), "budget_match": self.suite.budget.match}

    def budget_fingerprint(self) -> str:
        """What a Δm% baseline must share with a row: the training budget and how budgets are matched."""
        return content_hash({"train": self.suite.results_dump()["train"], "budget_match": self.suite.budget.match})

    def cell_hash(self, seed: int) -> str:
        # the label is part of the cell: two labels of one configuration are two records (an A/A control), whose
        # stages still come from one cache
        return content_hash({**self.config(), "label": self.label, "seed": seed, "v": STAGE_VERSION})


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

    @property
    def cells(self) -> list[tuple[Variant, int]]:
        return [(v, s) for v in self.variants for s in self.seeds]


def default_suite() -> str:
    from bench.suites import suite_files

    return DEFAULT_SUITE if DEFAULT_SUITE in suite_files() else FALLBACK_SUITE


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def _seeds(combo: dict[str, Any]) -> list[int]:
    if "seed" in combo and "seeds" in combo:
        raise BenchError("give either seeds=N (runs seeds 0..N-1) or seed=[...], not both")
    if "seed" in combo:
        s = combo["seed"]
        seeds = s if isinstance(s, list) else [s]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds):
            raise BenchError(f"seed={s!r} must be an integer or a list of integers, e.g. seed=[0,1,2]")
        return list(seeds)
    n = combo.get("seeds", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise BenchError(f"seeds={n!r} must be a positive integer (the number of seeds), e.g. seeds=3")
    return list(range(n))


def build_suite(combo: dict[str, Any]) -> SuiteConfig:
    name = combo.get("suite", default_suite())
    if not isinstance(name, str):
        raise BenchError(f"suite={name!r} must be a suite name or a path to a YAML file")
    path = find_suite(name)
    raw = copy.deepcopy(read_suite_yaml(path))
    for key, value in combo.items():
        if key.startswith(("train.", "backbone.", "split.", "budget.")):
            _set(raw, key, value)
    if "data_dir" in combo:  # point file-backed sources (e.g. GLUE) at a local copy
        for spec in [raw.get("data")] + [t.get("data") for t in raw.get("tasks", []) if isinstance(t, dict)]:
            if isinstance(spec, dict):
                spec.setdefault("options", {})["data_dir"] = str(combo["data_dir"])
    if "tasks" in combo:
        want = combo["tasks"] if isinstance(combo["tasks"], list) else [combo["tasks"]]
        names = [t.get("name") for t in raw.get("tasks", [])]
        for w in want:
            if w not in names:
                raise BenchError(f"tasks: suite {raw['name']!r} has no task {w!r}{did_you_mean(str(w), names)}; "
                                 f"tasks: {', '.join(map(str, names))}")
        raw["tasks"] = [t for t in raw["tasks"] if t.get("name") in want]
    if "budget" in combo:
        b = combo["budget"]
        if not isinstance(b, (int, float)) or isinstance(b, bool) or b <= 0:
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
    return suite


def make_plan(args: list[str]) -> Plan:
    """Parse and validate everything a run needs, before any work."""
    pairs = parse(args)
    launcher = launcher_from(pairs)  # checked first: a typo there must not wait for the suite to load
    pairs = [p for p in pairs if p[0] not in LAUNCH_KEYS and not p[0].startswith("launcher.")]
    for key, value, _ in pairs:
        if key == "params":
            pairs = load_params_file(str(value)) + [p for p in pairs if p[0] != "params"]
            break
    for key, _, _ in pairs:
        if key not in TOP_KEYS and not key.startswith(PREFIXES):
            known = sorted(TOP_KEYS) + ["train.epochs", "train.lr", "train.batch_size", "backbone.name",
                                        "strategy.weighting"]
            raise BenchError(f"unknown key {key!r}{did_you_mean(key, known)}; valid: {', '.join(sorted(TOP_KEYS))}, "
                             f"and dotted keys under {', '.join(p[:-1] for p in PREFIXES)}")
    combos = expand(pairs)
    first = combos[0]
    extra_dirs = first.get("strategy_dirs", [])
    discover(extra_dirs if isinstance(extra_dirs, list) else [extra_dirs])
    seeds = _seeds(first)
    suites: dict[str, SuiteConfig] = {}
    variants: list[Variant] = []
    for combo in combos:
        skey = content_hash({k: v for k, v in combo.items() if not k.startswith("strategy") and k != "_swept"})
        if skey not in suites:
            suites[skey] = build_suite(combo)
        suite = suites[skey]
        names = combo.get("strategy", DEFAULT_STRATEGIES)
        names = names if isinstance(names, list) else [names]
        given = {k[len("strategy."):]: v for k, v in combo.items() if k.startswith("strategy.")}
        for name in names:
            cls = STRATEGIES.get(str(name))
            fields = set(cls.Params.model_fields)
            mine: dict[str, Any] = {}
            for k, v in given.items():
                if k.split(".")[0] in fields or len(names) == 1:
                    _set(mine, k, v)
            params = cls.parse_params(mine)
            check = getattr(cls, "check", None)
            if check is not None:
                check(params, suite.task_names)
            label = combo.get("label") or name
            tags = [f"{k}={v}" for k, v in sorted(given.items()) if k.split(".")[0] in fields]
            tags += [f"{k}={v}" for k, v in sorted(combo["_swept"].items()) if not k.startswith("strategy")]
            if tags and "label" not in combo:
                label = f"{name}[{','.join(tags)}]"
            variants.append(Variant(suite, cls, params, label))
        unused = [k for k in given if not any(k.split(".")[0] in STRATEGIES.get(str(n)).Params.model_fields
                                              for n in names)]
        if unused and len(names) > 1:
            raise BenchError(f"strategy.{unused[0]} is a parameter of none of {', '.join(map(str, names))}")
    results_dir = Path(first.get("results_dir", "results"))
    return Plan(variants, seeds, results_dir, as_bool(first, "force", False), as_bool(first, "report", True),
                launcher=launcher, args=without_launch_args(args))


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {**library_versions(), "optuna": version("optuna"), "platform": platform.platform(),
           "cpu_count": str(__import__("os").cpu_count())}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def _task_info(suite: SuiteConfig, names: list[str]) -> dict[str, Any]:
    return {t: {"target": suite.task(t).target, "primary": suite.task(t).primary_metric,
                "metrics": {m: M.direction(m) for m in suite.task(t).metric_names}} for t in names}


def run_cell(variant: Variant, seed: int, ctx: SuiteContext, store: Store, force: bool) -> dict[str, Any]:
    """Run one cell and write its record; returns the record."""
    cell = variant.cell_hash(seed)
    folder = store.cell_dir(variant.strategy.name, cell)
    with store.lock(folder):
        if store.done(folder, RECORD) and not force:
            return read_json(folder / RECORD)
        (folder / "failed.json").unlink(missing_ok=True)
        stages = Stages(ctx, store, seed, force=force)
        n_reused, n_computed = len(store.reused), len(store.computed)  # the store object outlives one cell
        t0 = time.perf_counter()
        rows = variant.strategy().run(stages, variant.params)
        suite = variant.suite
        config = variant.config()
        record = {
            "schema_version": SCHEMA_VERSION, "suite": suite.name, "strategy": variant.strategy.name,
            "label": variant.label, "params": variant.params.model_dump(mode="json"), "seed": seed, "cell": cell,
            "config": config, "config_fingerprint": content_hash(config),
            "budget_fingerprint": variant.budget_fingerprint(), "budget_match": suite.budget.match,
            "data_fingerprint": ctx.data.fingerprint, "task_fingerprints": ctx.data.task_fingerprints,
            "backbone_weights": ctx.weights_hash,
            "code_version": code_version(), "backbone": suite.backbone.name or suite.backbone.source,
            "tasks": _task_info(suite, ctx.data.task_names), "rows": rows,
            "budget": suite.train.model_dump(mode="json"), "notes": ctx.data.notes,
            "versions": _versions(), "cell_wall_time_s": time.perf_counter() - t0,
            "stages_reused": len(store.reused) - n_reused, "stages_computed": store.computed[n_computed:],
            "runtime": _runtime(), "created": now_iso(), "status": "complete",
        }
        import yaml

        (folder / "config.yaml").write_text(yaml.safe_dump({
            "suite": suite.model_dump(mode="json"), "strategy": variant.strategy.name,
            "params": variant.params.model_dump(mode="json"), "seed": seed, "label": variant.label}, sort_keys=False))
        write_json(folder / RECORD, record)
        return record


def _runtime() -> dict[str, Any]:
    """Where and how this cell ran (which launcher's process, how many threads, which GPU): telemetry, never a key."""
    import os

    env = {k: os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                                      "SUBMITIT_LOCAL_JOB_ID", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    return {"host": platform.node(), "pid": os.getpid(), "torch_threads": torch.get_num_threads(), **env}


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# what a job process re-planned and loaded, by command line: a worker that runs many cells plans and loads once
_LOADED: dict[tuple[str, ...], tuple[Plan, dict[str, SuiteContext], dict[str, Store]]] = {}


def _context(plan: Plan, contexts: dict[str, SuiteContext], suite: SuiteConfig, out=None) -> SuiteContext:
    skey = content_hash(suite.model_dump(mode="json"))
    if skey not in contexts:
        t0 = time.perf_counter()
        contexts[skey] = SuiteContext.load(suite, Store(plan.results_dir, suite.name))
        if out is not None:
            for note in contexts[skey].data.notes:
                print(f"note: {note}", file=out)
            print(f"loaded suite {suite.name!r} in {time.perf_counter() - t0:.1f}s "
                  f"(data fingerprint {contexts[skey].data.fingerprint})", file=out, flush=True)
    return contexts[skey]


def run_cell_job(args: list[str], cell: str) -> dict[str, Any]:
    """One cell of ``bench run <args>``, as a launcher's job runs it (in this process or another, on this machine
    or a cluster node): plan the command line again, run the cell through the store. A cell that fails at run time
    (a ``CellFailed``) leaves ``failed.json`` and returns its reason; finished stages are kept either way."""
    key = tuple(args)
    if key not in _LOADED:
        _LOADED[key] = (make_plan(list(args)), {}, {})
    plan, contexts, stores = _LOADED[key]
    matches = [(v, s) for v, s in plan.cells if v.cell_hash(s) == cell]
    if not matches:
        raise BenchError(f"no cell {cell} in `bench run {' '.join(args)}` (was the code or a suite edited since "
                         "the job was submitted?)")
    variant, seed = matches[0]
    # one Store per suite and process: it remembers what this process computed (force=true recomputes a stage once)
    store = stores.setdefault(variant.suite.name, Store(plan.results_dir, variant.suite.name))
    folder = store.cell_dir(variant.strategy.name, cell)
    try:
        run_cell(variant, seed, _context(plan, contexts, variant.suite), store, plan.force)
    except CellFailed as e:
        write_json(folder / "failed.json", {"error": str(e), "created": now_iso(), "traceback": traceback.format_exc()})
        return {"status": "failed", "error": str(e)}
    return {"status": "done"}


def execute(plan: Plan, out=None) -> int:
    """Run every cell of ``plan`` through its launcher; print progress with an ETA and where results went. Exit
    code 0, or 1 if a cell failed."""
    out = out or sys.stdout
    launcher = plan.launcher or launcher_from([])
    cells = plan.cells
    contexts: dict[str, SuiteContext] = {}
    stores = {v.suite.name: Store(plan.results_dir, v.suite.name) for v in plan.variants}
    _LOADED[tuple(plan.args)] = (plan, contexts, stores)  # jobs run in this process reuse the plan and its data
    folders = [stores[v.suite.name].cell_dir(v.strategy.name, v.cell_hash(s)) for v, s in cells]
    pending = [i for i, f in enumerate(folders) if plan.force or not Store.done(f, RECORD)]
    where = f" with launcher={launcher.name}, {launcher.describe()}" if launcher.parallel > 1 or \
        launcher.name != "local" else ""
    print(f"bench run: {len(cells)} cell(s) on {len({v.suite.name for v in plan.variants})} suite(s){where}, "
          f"results in {plan.results_dir}/", file=out, flush=True)
    # what can only be checked against the loaded suite (its backbone, its tasks) fails here, before any stage
    checked: set[int] = set()
    for i in pending:
        variant = cells[i][0]
        if id(variant) not in checked:
            checked.add(id(variant))
            variant.strategy().check_suite(variant.params, _context(plan, contexts, variant.suite, out))
    tags = [f"[{i}/{len(cells)}] {v.suite.name} {v.label} seed={s}" for i, (v, s) in enumerate(cells, 1)]
    for i in range(len(cells)):
        if i not in pending:
            print(f"{tags[i]}: from store", file=out, flush=True)
    jobs = [Job(tags[i], run_cell_job, (plan.args, cells[i][0].cell_hash(cells[i][1])),
                stores[cells[i][0].suite.name].root) for i in pending]
    if not launcher.common.wait:
        ids = launcher.submit(jobs)
        suites = sorted(stores)
        print(f"submitted {len(ids)} job(s) to {launcher.name} ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
              f"; logs in {', '.join(str(stores[s].root / 'launcher') for s in suites)}", file=out)
        print(f"when they finish: {'; '.join(f'python -m bench report suite={s}' for s in suites)} "
              f"(rerunning this command without wait=false skips finished cells and follows the rest)", file=out)
        return 0
    by_job = {id(j): i for j, i in zip(jobs, pending)}
    failures, computed, durations = [], 0, []
    for done in launcher.run(jobs):
        i = by_job[id(done.job)]
        error = done.error if not done.ok else (done.value or {}).get("error") if \
            (done.value or {}).get("status") == "failed" else None
        if error is not None:
            failures.append((tags[i], error))
            if not done.ok:  # the job died without writing its reason: keep it with the cell
                write_json(folders[i] / "failed.json", {"error": error, "created": now_iso(), "log": done.log,
                                                        "job_id": done.job_id, **done.extra})
            print(f"{tags[i]}: FAILED: {error}", file=out, flush=True)
            for line in done.log.splitlines():
                print(f"    | {line}", file=out)
            continue
        computed += 1
        durations.append(done.seconds)
        remaining = len(pending) - computed - len(failures)
        at_once = max(1, min(launcher.parallel, done.running + 1, remaining))  # what runs now, not what may
        eta = f", ETA {_fmt_time(remaining * sum(durations) / len(durations) / at_once)}" if remaining else ""
        busy = f" ({done.running} running, {len(failures)} failed)" if launcher.parallel > 1 else ""
        print(f"{tags[i]}: done in {_fmt_time(done.seconds)}{busy}{eta}", file=out, flush=True)
    records = [read_json(f / RECORD) for f in folders if Store.done(f, RECORD)]
    from_store = len(cells) - len(pending)
    print(f"{computed} cell(s) computed, {from_store} from the store, {len(failures)} failed", file=out)
    if computed == 0 and from_store == len(cells):
        print("every cell came from the store; nothing was trained (force=true recomputes)", file=out)
    if not plan.report:
        _summary(records, out)
    for suite_name, store in stores.items():
        print(f"records: {store.root / 'cells'}", file=out)
        if plan.report and records:
            try:
                from rich.console import Console

                from bench.report import build_leaderboards, to_rich, write_boards

                # the suite's leaderboard (every record in the store, not only this run's), with its intervals
                boards, recs = build_leaderboards(plan.results_dir, suite_name)
                paths = write_boards(boards, recs, store.root / "report")
                Console(file=out, width=max(200, Console().width)).print(to_rich(boards[0], compact=True))
                print(f"leaderboard: {', '.join(str(p) for p in paths.values())}", file=out)
            except BenchError as e:
                print(f"report skipped: {e}", file=out)
    for tag, err in failures:
        print(f"failed: {tag}: {err}", file=out)
    return 1 if failures else 0


def _summary(records: list[dict[str, Any]], out) -> None:
    """With ``report=false``: a compact on-screen table of this run's cells, primary test metric per task, mean ± std
    over seeds (no intervals: ``bench report`` computes them from the kept predictions)."""
    import numpy as np
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if not records:
        return
    tasks = list(records[0]["tasks"])
    rows: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for variant, row in r["rows"].items():
            name = variant if r["label"] == r["strategy"] else r["label"].replace(r["strategy"], variant, 1)
            for t in tasks:
                m = r["tasks"][t]["primary"]
                v = row["metrics"].get("test", {}).get(t, {}).get(m)
                if v is not None:
                    rows.setdefault(name, {}).setdefault(t, []).append(v)
    table = Table(title=f"{records[0]['suite']}: test, primary metric (mean ± std over seeds)")
    table.add_column("strategy")
    for t in tasks:
        table.add_column(f"{t} ({records[0]['tasks'][t]['primary']})", justify="right")
    for name, per in rows.items():
        cells = []
        for t in tasks:
            v = per.get(t, [])
            sd = np.std(v, ddof=1) if len(v) > 1 else 0.0
            cells.append(f"{np.mean(v):.4f} ± {sd:.4f} (n={len(v)})" if v else "-")
        table.add_row(escape(name), *cells)
    Console(file=out, width=200).print(table)
