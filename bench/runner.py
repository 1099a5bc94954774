"""``bench run``: a plan (:mod:`bench.plan`) -> cells through a launcher -> stages -> records -> report.

Everything is validated before any work starts; finished cells come from the store. A cell that fails at run time
(a NaN loss, or any exception raised in a plug-in: a strategy, weighting or fusion method) is recorded in its
``failed.json`` with the reason and the plug-in's file and line; the other cells still run and the command exits 1.
"""

from __future__ import annotations

import platform
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from bench import distributed
from bench.checkpoint import state_bytes
from bench.config import SuiteConfig
from bench.errors import BenchError, CellFailed, StoreError
from bench.launch import Job, launcher_from
from bench.launch.base import fmt_duration
from bench.plan import Plan, Variant, make_plan
from bench.plugins import plugin_source, where_raised
from bench.plugins.hashing import changed_plugins
from bench.record import SCHEMA_VERSION, Record, Row
from bench.rowstyle import with_styles
from bench.run_context import RunContext
from bench.schedule import run_schedule
from bench.stages import StageLog, Stages, SuiteContext
from bench.store import (
    RECORD,
    Store,
    check_free_space,
    code_version,
    content_hash,
    estimate_bytes,
    library_versions,
    now_iso,
    planned_stages,
    write_json,
)
from bench.tasks import task_kind

__all__ = ["execute", "make_plan", "run_cell", "run_cell_job"]


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {**library_versions(), "optuna": version("optuna"), "platform": platform.platform(),
           "cpu_count": str(__import__("os").cpu_count())}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def _task_info(suite: SuiteConfig, names: list[str]) -> dict[str, Any]:
    groups = {t: suite.task(t).report_group for t in names}  # the leaderboard's per-group Δm%
    several = len(set(groups.values())) > 1  # one group says nothing: those records keep their bytes
    out = {}
    for t in names:
        kind = task_kind(suite.task(t))
        out[t] = {"target": kind.name, "primary": kind.primary,
                  "metrics": {m: kind.direction(m) for m in [*kind.metric_names, *kind.extra_metrics()]},
                  **kind.record_spec(), **({"group": groups[t]} if several else {})}
    return out


def run_cell(variant: Variant, seed: int, ctx: SuiteContext, store: Store, force: bool,
             trackers: list[Any] | None = None, log: StageLog | None = None,
             finished: list[str] | None = None) -> Record:
    """Run one cell and write its record; returns the record. An exception raised by plug-in code (the strategy,
    a weighting, a fusion method) or a malformed row becomes a :class:`CellFailed` naming the file and line.

    ``log``: the run's log of stages reused and computed in this suite (the record counts this cell's share);
    ``finished``: the run's list of finished cells, which a written record joins as ``"label seed=N"``."""
    cell = variant.cell_hash(seed)
    folder = store.cell_dir(variant.strategy.name, cell)
    world = distributed.current()  # procs=N: every rank runs the cell, rank 0 alone writes (bench.distributed)
    with store.lock(folder) if world.writer else nullcontext():
        done = Record.read(folder / RECORD) if store.done(folder, RECORD) and not force else None
        if distributed.agree(done is not None and not changed_plugins(done.plugins)):
            return done if done is not None else Record.read(folder / RECORD)
        if world.writer:
            (folder / "failed.json").unlink(missing_ok=True)
        config = variant.config()
        log = log if log is not None else StageLog()
        stages = Stages(ctx, store, seed, force=force, trackers=trackers, cell=cell, label=variant.label,
                        config=config, log=log, source=plugin_source(variant.strategy))
        n_reused, n_computed = len(log.reused), len(log.computed)  # the log outlives one cell
        t0 = time.perf_counter()
        rows = _rows(variant, stages)
        suite = variant.suite
        record = Record(
            schema_version=SCHEMA_VERSION, suite=suite.name, strategy=variant.strategy.name,
            label=variant.label, params=variant.params.model_dump(mode="json"), seed=seed, cell=cell,
            config=config, config_fingerprint=content_hash(config),
            budget_fingerprint=variant.budget_fingerprint(), budget_match=suite.budget.match,
            data_fingerprint=ctx.data.fingerprint, task_fingerprints=ctx.data.task_fingerprints,
            backbone_weights=ctx.weights_hash,
            code_version=code_version(), plugins=dict(sorted({**variant.plugins, **stages.plugins}.items())),
            backbone=suite.backbone.name or suite.backbone.source,
            tasks=_task_info(suite, ctx.data.task_names), rows=with_styles(rows, variant.strategy, variant.params),
            train=suite.train.model_dump(mode="json"), notes=[*variant.notes, *ctx.data.notes],
            versions=_versions(), cell_wall_time_s=time.perf_counter() - t0,
            stages_reused=len(log.reused) - n_reused, stages_computed=log.computed[n_computed:],
            runtime=_runtime(), created=now_iso(), status="complete",
        )
        if not world.writer:
            return record
        import yaml

        (folder / "config.yaml").write_text(yaml.safe_dump({
            "suite": suite.model_dump(mode="json"), "strategy": variant.strategy.name,
            "params": variant.params.model_dump(mode="json"), "seed": seed, "label": variant.label}, sort_keys=False))
        write_json(folder / RECORD, record.dump())
        if finished is not None:
            finished.append(f"{record.label} seed={record.seed}")
        return record


def _rows(variant: Variant, stages: Stages) -> dict[str, Row]:
    """The strategy's rows, validated. Plug-in code fails only its cell: bad input (a ``BenchError``) and the
    user's Ctrl-C keep their meaning, anything else raised inside ``run`` is the plug-in's bug."""
    name = variant.strategy.name
    try:
        strategy = variant.strategy()
        rows = run_schedule(strategy, stages, variant.params) if variant.suite.schedule is not None \
            else strategy.run(stages, variant.params)
    except (BenchError, CellFailed):
        raise
    except Exception as e:  # noqa: BLE001
        raise CellFailed(f"strategy {name!r} raised {where_raised(e)}") from e
    if not isinstance(rows, dict) or not rows:
        raise CellFailed(f"strategy {name!r} returned {type(rows).__name__}, not {{variant: make_row(...)}}")
    try:
        return {str(k): Row.of(v) for k, v in rows.items()}
    except (BenchError, TypeError) as e:
        raise CellFailed(f"strategy {name!r} returned a malformed row: {e}") from None


def _runtime() -> dict[str, Any]:
    """Where and how this cell ran (which launcher's process, how many threads, which GPU): telemetry, never a key."""
    import os

    env = {k: os.environ[k] for k in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID",
                                      "SUBMITIT_LOCAL_JOB_ID", "CUDA_VISIBLE_DEVICES") if k in os.environ}
    procs = {"procs": distributed.current().size} if distributed.current().size > 1 else {}
    return {"host": platform.node(), "pid": os.getpid(), "torch_threads": torch.get_num_threads(), **procs, **env}


def _find_cell(run: RunContext, cell: str) -> tuple[Variant, int]:
    """The (variant, seed) of the run whose cell hash is ``cell``."""
    for v, s in run.plan.cells:
        if v.cell_hash(s) == cell:
            return v, s
    raise BenchError(f"no cell {cell} in `bench run {' '.join(run.args)}` (was the code or a suite edited since "
                     "the job was submitted?)")


def run_cell_job(run: RunContext, cell: str) -> dict[str, Any]:
    """One cell of the run, as a launcher's job runs it (in this process or another, on this machine or a cluster
    node; in another process ``run`` plans the command line again): run the cell through the store. A cell that
    fails at run time (a ``CellFailed``) leaves ``failed.json`` and returns its reason; finished stages are kept
    either way. A failed write says what the run needed and kept (:meth:`RunContext.explain`)."""
    plan = run.plan
    variant, seed = _find_cell(run, cell)
    name = variant.suite.name
    store = run.store(name)
    folder = store.cell_dir(variant.strategy.name, cell)
    from bench.engine import progress

    tag = run.progress.tags.get(cell, (f"{name} {variant.label} seed={seed}", ""))[0]
    progress.start_cell(tag, *run.progress.estimate(cell))
    try:
        trackers = plan.trackers if distributed.current().writer else None  # procs=N: rank 0 reports
        run_cell(variant, seed, run.context(variant.suite), store, plan.force, trackers, log=run.log(name),
                 finished=run.finished)
    except CellFailed as e:
        if distributed.current().writer:
            write_json(folder / "failed.json", {"error": str(e), "created": now_iso(),
                                                "traceback": traceback.format_exc()})
        return {"status": "failed", "error": str(e)}
    except StoreError as e:
        raise run.explain(e) from e.__cause__
    return {"status": "done"}


def run_cell_ranks(run: RunContext, cell: str, procs: int, threads: int | None) -> dict[str, Any]:
    """:func:`run_cell_job` on ``procs`` processes of this machine (``procs=N``, :mod:`bench.distributed`). A rank
    that dies fails the cell with one line in ``failed.json``; its finished stages and last epoch are kept."""
    try:
        return distributed.run_ranks(procs, threads, run_cell_job, run, cell)
    except CellFailed as e:
        variant, _ = _find_cell(run, cell)
        folder = run.store(variant.suite.name).cell_dir(variant.strategy.name, cell)
        write_json(folder / "failed.json", {"error": str(e), "created": now_iso()})
        return {"status": "failed", "error": str(e)}


def _current(folder: Path, checked: dict) -> Record | None:
    """The record of a finished cell that still holds (its plug-ins are the versions it used,
    :func:`changed_plugins`), else None."""
    if not Store.done(folder, RECORD, checked):
        return None
    record = Record.read(folder / RECORD)
    return None if changed_plugins(record.plugins) else record


def execute(plan: Plan, out=None) -> int:
    """Run every cell of ``plan`` through its launcher; print progress with an ETA and where results went. Exit
    code 0, or 1 if a cell failed."""
    out = out or sys.stdout
    launcher = plan.launcher or launcher_from([])
    cells = plan.cells
    if launcher.common.procs > 1:  # one line before any data loads: more processes than cores, a batch split unevenly
        distributed.check_procs(launcher.common.procs, launcher.parallel if launcher.runs_here else None,
                                {v.suite.name: v.suite.train.batch_size for v, _ in cells})
    run = RunContext(plan.args, plan)  # jobs run in this process (or a forked worker) reuse the plan and its data
    stores = {v.suite.name: run.store(v.suite.name) for v in plan.variants}
    folders = [stores[v.suite.name].cell_dir(v.strategy.name, v.cell_hash(s)) for v, s in cells]
    checked: dict = {}  # stage folder -> problem: records share stages, each is checked once per pass
    kept = {} if plan.force else {i: r for i, f in enumerate(folders) if (r := _current(f, checked)) is not None}
    finished = set(kept)
    pending = [i for i in range(len(cells)) if i not in finished]
    where = f" with launcher={launcher.name}, {launcher.describe()}" if launcher.parallel > 1 or \
        launcher.name != "local" else ""
    print(f"bench run: {len(cells)} cell(s) on {len({v.suite.name for v in plan.variants})} suite(s){where}, "
          f"results in {plan.results_dir}/", file=out, flush=True)
    for note in plan.notes:
        print(f"note: {note}", file=out)
    # what can only be checked against the loaded suite (its backbone, its tasks) fails here, before any stage
    seen: set[int] = set()
    for i in pending:
        variant = cells[i][0]
        if id(variant) not in seen:
            seen.add(id(variant))
            variant.strategy().check_suite(variant.params, run.context(variant.suite, out))
    _check_space(run, [cells[i] for i in pending])
    tags = [f"[{i}/{len(cells)}] {v.suite.name} {v.label} seed={s}" for i, (v, s) in enumerate(cells, 1)]
    for i in range(len(cells)):
        if i not in pending:
            print(f"{tags[i]}: from store", file=out, flush=True)
    hashes = [v.cell_hash(s) for v, s in cells]
    run.progress.tags = {hashes[i]: (tags[i], cells[i][0].label) for i in range(len(cells))}
    run.progress.pending = [hashes[i] for i in pending]
    procs = launcher.common.procs
    fn, more = (run_cell_job, ()) if procs == 1 or launcher.starts_ranks else \
        (run_cell_ranks, (procs, max(1, launcher.threads() // procs)))
    jobs = [Job(tags[i], fn, (run, hashes[i], *more), stores[cells[i][0].suite.name].root) for i in pending]
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
        if error is not None and error.startswith(f"{StoreError.__name__}: "):
            # the store cannot be written (full, read-only): no other cell can finish either, and nothing is kept
            # by writing failed.json there; stop and say what is kept
            kept = sum(Store.done(f, RECORD) for f in folders)
            raise StoreError(f"{error[len(StoreError.__name__) + 2:]} ({kept} of {len(cells)} cell(s) finished and "
                             "kept)")
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
        finished.add(i)
        durations.append(done.seconds)
        run.progress.durations[hashes[i]] = done.seconds
        remaining = len(pending) - computed - len(failures)
        at_once = max(1, min(launcher.parallel, done.running + 1, remaining))  # what runs now, not what may
        eta = f", ETA {fmt_duration(remaining * sum(durations) / len(durations) / at_once)}" if remaining else ""
        busy = f" ({done.running} running, {len(failures)} failed)" if launcher.parallel > 1 else ""
        print(f"{tags[i]}: done in {fmt_duration(done.seconds)}{busy}{eta}", file=out, flush=True)
    records = [kept[i] if i in kept else Record.read(folders[i] / RECORD) for i in sorted(finished)]
    from_store = len(cells) - len(pending)
    print(f"{computed} cell(s) computed, {from_store} from the store, {len(failures)} failed", file=out)
    if computed == 0 and from_store == len(cells):
        print("every cell came from the store; nothing was trained (force=true recomputes)", file=out)
    if not plan.report:
        _summary(records, out, plan.results_dir)
    for suite_name, store in stores.items():
        print(f"records: {store.root / 'cells'}", file=out)
        if plan.report and records:
            try:
                from rich.console import Console

                from bench.report import (
                    build_leaderboards,
                    reference_for,
                    report_options,
                    suite_report_defaults,
                    to_rich,
                    write_boards,
                )

                # the suite's leaderboard (every record in the store, not only this run's), with its intervals and
                # the report defaults its YAML sets (report:)
                options = report_options(**suite_report_defaults(suite_name))
                boards, recs = build_leaderboards(plan.results_dir, suite_name, options=options)
                # with the published table the suite's YAML names (reference:), marked as published
                paths = write_boards(boards, recs, store.root / "report", reference_for(None, suite_name))
                Console(file=out, width=max(200, Console().width)).print(to_rich(boards[0], compact=True))
                print(f"leaderboard: {', '.join(str(p) for p in paths.values())}", file=out)
            except BenchError as e:
                print(f"report skipped: {e}", file=out)
    for tag, err in failures:
        print(f"failed: {tag}: {err}", file=out)
    return 1 if failures else 0


def _check_space(run: RunContext, todo: list[tuple[Variant, int]]) -> None:
    """Before training: warn in one line when a suite's store has less free space than the planned checkpoints and
    predictions need (the run keeps the estimate, so a later out-of-space error can quote it)."""
    for name, store in run.stores.items():
        mine = [(v, s) for v, s in todo if v.suite.name == name]
        if not mine:
            continue
        ctx = run.context(mine[0][0].suite)
        # what each strategy class declares for the estimate (Strategy.uses_finetunes, Strategy.own_checkpoints)
        strategies = list({id(v): v.strategy for v, _ in mine}.values())
        ckpts, evals = planned_stages([s.own_checkpoints for s in strategies],
                                      any(s.uses_finetunes for s in strategies), len(ctx.tasks),
                                      len({s for _, s in mine}))
        examples = sum(len(es) for per in ctx.encoded.values() for split, es in per.items() if split != "train")
        needed = estimate_bytes(state_bytes(ctx.template), ckpts, evals, examples, cells=len(mine))
        run.planned[str(store.root.absolute())] = needed
        check_free_space(store.root, needed)


def _summary(records: list[Record], out, results_dir: Path) -> None:
    """With ``report=false``: a compact on-screen table of this run's cells, primary test metric per task, mean ± std
    over seeds (the std only from two seeds on), then the command whose report gives the intervals, which it computes
    from the kept predictions. Rows are named by the report's rule (:func:`bench.record.variant_name`)."""
    import numpy as np
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if not records:
        return
    tasks = records[0].tasks
    rows: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for row in r.rows:
            for t, v in r.primary(row).items():
                rows.setdefault(r.variant(row), {}).setdefault(t, []).append(v)
    table = Table(title=f"{records[0].suite}: test, primary metric (mean ± std over seeds)")
    table.add_column("strategy")
    for t, spec in tasks.items():
        table.add_column(f"{t} ({spec.primary})", justify="right")
    for name, per in rows.items():
        cells = []
        for t in tasks:
            v = per.get(t, [])
            # one seed has no spread to show: a "± 0" would read as a certainty the run does not have
            spread = f" ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else ""
            cells.append(f"{np.mean(v):.4f}{spread} (n={len(v)})" if v else "-")
        table.add_row(escape(name), *cells)
    Console(file=out, width=200).print(table)
    print(f"intervals over seeds and test examples: python -m bench report suite={records[0].suite} "
          f"results_dir={results_dir}", file=out)
