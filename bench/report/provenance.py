"""What a row's stage provenance says beyond its own telemetry (docs/records.md, "Cost columns").

Every schema-2 row lists the stages it used (``stages``: stage, key, ``reused``) and, in its telemetry, the wall time
of each (``telemetry.stages``); its predictions name the stage folders its metrics come from. From those, and from
the store the records sit in, the report derives:

* :func:`wall_split`: a row's wall time split into **own** (stages no other row of the table uses) and **shared**
  (stages, such as the per-task fine-tunes ``separate`` and ``fuse_then_joint`` share, that other rows of the table
  use too; computed once, counted in full in every row that uses them). Whether a stage was ``reused`` from the store
  is not used: it depends on which command ran first.
* :func:`deployed_params`: the parameters of the model(s) a row's test predictions come from, read from the
  checkpoints' safetensors headers (no tensor is loaded): a ``separate`` row deploys T models, a joint or fused row
  one backbone and T heads. The record's ``trainable_params`` is a different number: parameters *trained*, summed
  over every training stage the row used (a ``fuse_then_joint`` row pays for its fine-tunes too).
* :func:`stage_curves`: the loss and weight curves of every training stage of a row (a ``separate`` row has one per
  task), with the steps per epoch, for the loss-curve figure.
* :func:`identical_groups`: rows whose scores are identical, and why when the records say it (the same stages).

Records without this provenance (schema 1, or rows without per-stage telemetry) give NaN / nothing, and the tables
fall back to the total wall time and the trained parameters.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from bench.record import Record, Row
from bench.store import STAGE_MARKER

BACKBONE_FILE = "backbone.safetensors"  # bench.checkpoint's names (not imported: it pulls in torch)
ARCH_FILE = "arch.safetensors"
HEADS_FILE = "heads.safetensors"

__all__ = ["deployed_params", "identical_groups", "stage_curves", "stage_keys", "wall_split"]


def suite_dir(record: Record) -> Path | None:
    """``<results>/<suite>`` of a record read from ``<results>/<suite>/cells/<strategy>/<cell>/record.json``."""
    return record.path.parents[3] if record.path is not None else None


def _stage_json(folder: Path) -> dict | None:
    # read at each call, never memoised per process: a stage that `bench verify repair=true` moved aside and a
    # rerun rewrote is seen as it is now (a report reads a few hundred small files: milliseconds)
    try:
        data = json.loads((folder / STAGE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stage_info(record: Record, stage: str, key: str) -> dict | None:
    """The ``stage.json`` of one of a record's stages (None when the store does not have it)."""
    root = suite_dir(record)
    return None if root is None else _stage_json(root / "stages" / stage / key)


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def stage_walls(record: Record, row: Row) -> list[tuple[str, float]] | None:
    """``[(stage/key, wall seconds)]`` of every stage the row used, from its telemetry's per-stage list, else from
    the stages' ``stage.json``; None when the row does not say which stages it used."""
    listed = getattr(row.telemetry, "stages", None)
    if isinstance(listed, list) and listed and all(isinstance(s, dict) and "key" in s for s in listed):
        return [(f"{s.get('stage', '?')}/{s['key']}", _number(s.get("wall_time_s", 0.0))) for s in listed]
    if not row.stages:
        return None
    out = []
    for ref in row.stages:
        info = stage_info(record, ref.stage, ref.key)
        if info is None:
            return None
        out.append((f"{ref.stage}/{ref.key}", _number(info.get("telemetry", {}).get("wall_time_s", 0.0))))
    return out


def wall_split(entries: list[tuple[str, Record, Row]]) -> dict[tuple[str, int], tuple[float, float]]:
    """``(variant, seed) -> (own s, shared s)`` over ``entries`` (variant, record, row): the rows of one table.

    A stage is *shared* when another variant of ``entries`` lists the same stage key (keys hash the stage's inputs
    and seed, so equal keys are the same computation)."""
    walls = {(v, r.seed): stage_walls(r, row) for v, r, row in entries}
    users: dict[str, set[str]] = {}
    for (variant, _), stages in walls.items():
        for key, _ in stages or []:
            users.setdefault(key, set()).add(variant)
    out = {}
    for (variant, seed), stages in walls.items():
        if stages is None:
            out[(variant, seed)] = (math.nan, math.nan)
            continue
        seen: set[str] = set()
        own = shared = 0.0
        for key, wall in stages:
            if key in seen or math.isnan(wall):
                continue
            seen.add(key)
            if len(users[key]) > 1:
                shared += wall
            else:
                own += wall
        out[(variant, seed)] = (own, shared)
    return out


def _tensor_counts(path: Path) -> tuple[tuple[str, int], ...] | None:
    """(tensor name, number of entries) of a safetensors file's parameters (buffers left out), from its header."""
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return None
    meta = header.pop("__metadata__", None) or {}
    try:
        buffers = set(json.loads(meta.get("buffers", "[]")))
    except ValueError:
        buffers = set()
    return tuple((name, math.prod(info.get("shape", []))) for name, info in header.items()
                 if isinstance(info, dict) and name not in buffers)


def _model_folder(root: Path, stage: str, key: str) -> Path | None:
    """The folder holding the model a stage's predictions came from: its own, or the checkpoint an evaluate stage
    evaluated (``key_inputs.ckpt``)."""
    folder = root / "stages" / stage / key
    if (folder / BACKBONE_FILE).is_file():
        return folder
    info = _stage_json(folder) or {}
    ckpt = (info.get("key_inputs") or {}).get("ckpt")
    if isinstance(ckpt, str):
        for candidate in sorted((root / "stages").glob(f"*/{ckpt}")):
            if (candidate / BACKBONE_FILE).is_file():
                return candidate
    return None


def deployed_params(record: Record, row: Row, split: str = "test") -> float:
    """Parameters of the model(s) serving the row's ``split`` predictions: per distinct model, its backbone, the
    heads of the tasks it predicts and its architecture's modules (shared ones, and those tasks' towers); NaN when
    the store does not hold the checkpoints."""
    root = suite_dir(record)
    preds = (row.predictions or {}).get(split)
    if root is None or not preds:
        return math.nan
    tasks_of: dict[str, set[str]] = {}
    for task, rel in preds.items():
        parts = Path(rel).parts  # stages/<stage>/<key>/predictions.npz
        if len(parts) < 3 or parts[0] != "stages":
            return math.nan
        tasks_of.setdefault(f"{parts[1]}/{parts[2]}", set()).add(task)
    total = 0
    for stage_key, tasks in tasks_of.items():
        folder = _model_folder(root, *stage_key.split("/", 1))
        backbone = _tensor_counts(folder / BACKBONE_FILE) if folder else None
        if backbone is None:
            return math.nan
        heads = _tensor_counts(folder / HEADS_FILE) or ()
        total += sum(n for _, n in backbone) + sum(n for name, n in heads if name.split(".", 1)[0] in tasks)
        # an architecture's modules: the shared ones and the towers of these tasks (docs/architectures.md)
        arch = _tensor_counts(folder / ARCH_FILE) or ()
        total += sum(n for name, n in arch if not name.startswith("towers.") or name.split(".")[1] in tasks)
    return float(total)


def stage_keys(row: Row, split: str = "test") -> tuple[str, ...]:
    """The stage folders a row's ``split`` predictions come from, sorted: equal for two rows that are the same
    trained models."""
    preds = (row.predictions or {}).get(split) or {}
    return tuple(sorted({str(Path(rel).parent) for rel in preds.values()}))


def stage_curves(record: Record, row: Row) -> list[dict]:
    """The training curves of every training stage of ``row``, in the order it used them: ``{"stage", "key",
    "tasks", "step", "loss", "weights", "steps_per_epoch", "weights_label"}`` (``steps_per_epoch`` None when
    unknown). Falls back to the row's own ``trajectories`` (its last training stage) when the store lacks them."""
    out = []
    for ref in row.stages or []:
        info = stage_info(record, ref.stage, ref.key)
        traj = (info or {}).get("trajectories") or {}
        if not traj.get("step"):
            continue
        tel = info.get("telemetry", {})
        steps, epochs = _number(tel.get("steps")), _number(tel.get("epochs"))
        per_epoch = steps / epochs if steps > 0 and epochs > 0 else None
        out.append({"stage": ref.stage, "key": ref.key, "tasks": list(info.get("tasks") or traj.get("loss", {})),
                    "step": list(traj["step"]), "loss": traj.get("loss") or {}, "weights": traj.get("weights") or {},
                    "steps_per_epoch": per_epoch, "weights_label": info.get("weights_label")})
    if out or not row.trajectories.get("step"):
        return out
    traj = row.trajectories
    budget = row.spent or {}
    steps, epochs = _number(budget.get("optimizer_steps")), _number(budget.get("epochs"))
    single = len([s for s in row.stages or [] if s.stage in ("finetune", "joint")]) == 1
    per_epoch = steps / epochs if single and steps > 0 and epochs > 0 else None
    return [{"stage": "train", "key": "", "tasks": list(traj.get("loss") or traj.get("weights") or {}),
             "step": list(traj["step"]), "loss": traj.get("loss") or {}, "weights": traj.get("weights") or {},
             "steps_per_epoch": per_epoch, "weights_label": row.weights_label}]


def _constant_weights(record: Record, row: Row) -> bool | None:
    """Whether every multi-task training stage of the row kept its task weights at their starting values (None: no
    weights recorded)."""
    seen = False
    for curve in stage_curves(record, row):
        if len(curve["tasks"]) < 2:
            continue
        for series in curve["weights"].values():
            values = [v for v in series if isinstance(v, (int, float)) and math.isfinite(v)]
            if not values:
                continue
            seen = True
            if max(values) - min(values) > 1e-9 * max(1.0, max(abs(v) for v in values)):
                return False
    return True if seen else None


def identical_groups(scores: dict[str, tuple], entries: dict[str, list[tuple[Record, Row]]],
                     split: str = "test") -> list[tuple[list[str], str]]:
    """Groups of rows whose ``scores`` (a tuple per row: its seeds, every task metric's mean over them) are
    identical, each with why when the records say it:

    * the rows' predictions come from the same stages (same keys, seed by seed): the same trained models under
      other names (an A/A copy with the same seeds, a label);
    * else, when no row of the group moved its task weights from their start in any joint stage: the weightings did
      not act on this budget;
    * else the rows are different computations (different stage keys) that gave the same predictions;
    * records that do not name their prediction stages (schema 1): why is not known.
    """
    groups: dict[tuple, list[str]] = {}
    for variant, values in scores.items():
        numbers = [v for v in values if isinstance(v, (int, float))]
        if numbers and not any(math.isnan(v) for v in numbers):
            key = tuple(round(float(v), 9) if isinstance(v, (int, float)) else v for v in values)
            groups.setdefault(key, []).append(variant)
    out = []
    for rows in groups.values():
        if len(rows) < 2:
            continue
        keys = [{r.seed: stage_keys(row, split) for r, row in entries.get(v, [])} for v in rows]
        if not all(all(k.values()) for k in keys):
            why = "their records do not name the stages their predictions come from, so why is not known"
        elif all(k == keys[0] for k in keys):
            why = ("their records list the same stage keys for every seed: the same trained models under other "
                   "names (an A/A copy with the same seeds is one), not an independent replication")
        elif all(_constant_weights(r, row) for v in rows for r, row in entries.get(v, [])):
            why = ("different stages, but no row's task weights ever left their starting values (trajectories): "
                   "on this budget the weightings did not act")
        else:
            why = "different stages (different stage keys) that gave the same predictions"
        out.append((rows, why))
    return out
