"""The typed results: a cell's :class:`Record`, its leaderboard :class:`Row`, their :class:`Telemetry` and the
:class:`StageRef` provenance of every stage a row used. One schema version, one naming rule, read and written by
the same models (``bench run`` writes them; the summary, the report, the search objective and the gate read them).

Schema history (docs/records.md); every migration lives here, in the models' validators:

* **3** (current): one word per meaning: the training configuration is ``train`` (was ``budget``) and what a row
  spent is its ``spent`` (was the row's ``budget``); each row describes itself (``style``: its kind, table order,
  colour and family, as the strategy that made it declared them, :class:`RowStyle`), so the report reads no
  plug-in; ``plugins`` holds the source hash of every user plug-in the cell used.
* **2**: the configuration and its fingerprints, per-row budgets, stage provenance, per-example predictions. Read
  as schema 3 with ``budget`` renamed; its rows have no ``style`` (the report falls back to what the plug-in
  files declare, read without importing them, :mod:`bench.report.style`).
* **1**: none of those. A schema-1 record is *migrated* when read: its ``config`` is rebuilt from ``budget``,
  ``strategy`` and ``params``, and its fingerprints are hashes of those prefixed ``v1-`` (so it never pairs with a
  schema-2 record by accident). It keeps ``schema_version == 1`` (:attr:`Record.legacy`), which the report uses to
  say the row has no intervals.
* A record written by a newer ``bench`` (a higher version) is refused with one line: this reader cannot know what
  its fields mean.

Example:
    >>> row = Row(metrics={"test": {"clean": {"accuracy": 0.9}}})
    >>> row.metrics["test"]["clean"]["accuracy"], row.telemetry.train_samples_per_s
    (0.9, None)
    >>> Row.of({"metrics": {"test": {"clean": {"accuracy": "high"}}}})
    Traceback (most recent call last):
    ...
    bench.errors.BenchError: row: metrics.test.clean.accuracy='high': Input should be a valid number
    >>> variant_name("fused", "fuse_then_joint[fusion=ties]", "fuse_then_joint")
    'fused[fusion=ties]'
    >>> variant_name("fused", "my_run", "fuse_then_joint"), variant_name("fuse_then_joint", "my_run", "fuse_then_joint")
    ('fused[my_run]', 'my_run')
    >>> Row.of({"metrics": {}, "budget": {"epochs": 3}}).spent  # schema 2 spelled what a row spent "budget"
    {'epochs': 3}
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bench.config import DEFAULT_STRATEGIES
from bench.errors import BenchError
from bench.rowid import RowId

SCHEMA_VERSION = 3  # what `bench run` writes; readers accept 1..SCHEMA_VERSION


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("Input should be a valid number")
    return value


Number = Annotated[float, PlainValidator(_number)]  # an int or a float as written: never a bool or a string


class _Open(BaseModel):
    """Typed where the code reads a field, open to fields it does not know (a plugin's telemetry, a newer writer's
    extra keys within the same schema), which are kept as they are."""

    # NaN stays NaN in record.json (a weight not logged at step 0, a failed metric), as json.dump writes it
    model_config = ConfigDict(extra="allow", populate_by_name=True, ser_json_inf_nan="constants")


class Telemetry(_Open):
    """What a row cost and how fast it ran (docs/records.md). Every field is optional: a fused-only row trained
    nothing, a schema-1 record lacks the newer ones."""

    wall_time_s: Number | None = None
    train_samples: Number | None = None
    train_time_s: Number | None = None
    train_samples_per_s: Number | None = None
    eval_samples_per_s: Number | None = None
    peak_memory_mb: Number | None = None
    memory_kind: str | None = None
    trainable_params: Number | None = None
    device: str | None = None
    compile_time_s: Number | None = None
    #: steps where the row's balancer degenerated, per event (Balancer.flag), summed over its training stages; only
    #: present when one happened
    degenerate: dict[str, int] | None = None


class StageRef(_Open):
    """One stage a row used: which, its key, whether it came from the store, and the code that computed it."""

    stage: str
    key: str
    reused: bool = False
    code_version: str = "unknown"
    impl_version: int | None = None


class Coefficients(BaseModel):
    """Learned fusion coefficients: ``values`` is len(layers) rows of len(tasks) finite numbers."""

    layers: list[StrictStr] = Field(min_length=1)
    tasks: list[StrictStr] = Field(min_length=1)
    values: list[list[Number]]

    @model_validator(mode="after")
    def _shape(self) -> Coefficients:
        if len(self.values) != len(self.layers):
            raise ValueError(f"values has {len(self.values)} rows, expected {len(self.layers)} (one per layer)")
        for layer, row in zip(self.layers, self.values):
            if len(row) != len(self.tasks):
                raise ValueError(f"values row of layer {layer!r} does not have {len(self.tasks)} numbers (one per "
                                 "task)")
            if not all(math.isfinite(v) for v in row):
                raise ValueError(f"values row of layer {layer!r} has a value that is not a finite number")
        return self


class Fusion(_Open):
    """How a row's backbone was fused (rows built on a fuse stage)."""

    method: StrictStr = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    transductive: StrictBool = False
    coefficients: Coefficients | None = None


def strategy_rank(name: str) -> int:
    """A strategy's place in a table (``RowStyle.order[0]``): as ``DEFAULT_STRATEGIES`` lists it, any other after
    them (then by name)."""
    return DEFAULT_STRATEGIES.index(name) if name in DEFAULT_STRATEGIES else len(DEFAULT_STRATEGIES)


class RowStyle(_Open):
    """How the report shows a row, as the strategy that made it declared when the record was written
    (:func:`bench.rowstyle.row_style`): the row ``kind`` (a name in the strategy's ``rows``), its table ``order``
    (the strategy's rank: its place in ``DEFAULT_STRATEGIES``, others after them by name; then the kind's place in
    the strategy's rows), its ``colour`` and its ``family`` (the strategy's declaration, else the family of the
    weighting the row trained with). The report reads these instead of importing the plug-in."""

    kind: StrictStr
    strategy: StrictStr
    order: tuple[StrictInt, StrictInt]
    colour: str | None = None
    family: str | None = None


class ScheduleStep(_Open):
    """One step of a task schedule in a row (docs/dynamic_tasks.md): what changed, the step's model's scores on every
    task it serves, and what the step cost: the stages first used at this step (a stage read from the store still
    counts what it cost when it was computed), so the steps of a row add up to the row."""

    step: StrictInt = Field(ge=1)
    arrived: list[StrictStr] = Field(default_factory=list)
    retired: list[StrictStr] = Field(default_factory=list)
    tasks: list[StrictStr]
    metrics: dict[str, dict[str, dict[str, Number]]]
    predictions: dict[str, dict[str, str]] | None = None
    spent: dict[str, Any] = Field(default_factory=dict)
    wall_time_s: Number = 0.0
    stages: list[StageRef] = Field(default_factory=list)


class Row(_Open):
    """One leaderboard row of a cell: what :func:`bench.stages.make_row` builds and a strategy's ``run`` returns
    per variant. ``metrics[split][task][metric]``; ``test`` is required in a record (a search's rows have only
    ``validation``)."""

    metrics: dict[str, dict[str, dict[str, Number]]]
    best_epoch: dict[str, int] = Field(default_factory=dict)
    telemetry: Telemetry = Field(default_factory=Telemetry)
    trajectories: dict[str, Any] = Field(default_factory=dict)
    # what the row spent (samples, steps, epochs over its training stages); schema 2 called it "budget"
    spent: dict[str, Any] | None = Field(default=None, validation_alias=AliasChoices("spent", "budget"))
    predictions: dict[str, dict[str, str]] | None = None
    stages: list[StageRef] | None = None
    code_versions: list[str] = Field(default_factory=list)
    fusion: Fusion | None = None
    weights_label: str | None = None  # the y label of its weight trajectories, from the weighting that made them
    style: RowStyle | None = None  # kind, order, colour, family (schema 3; None in older records)
    # a schedule run's rows only: one entry per step (the row's own metrics are the last step's) and each task's
    # fine-tune from θ0, the baseline of forward transfer: {"metrics": [split][task][metric], "predictions": ...}
    schedule: list[ScheduleStep] | None = None
    schedule_reference: dict[str, Any] | None = None

    @classmethod
    def of(cls, data: Any) -> Row:
        """A row from what a strategy returned (a Row, or a dict), or a one-line BenchError."""
        if isinstance(data, Row):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise _one_line(e, "row") from None

    def primary(self, split: str, tasks: dict[str, TaskInfo]) -> dict[str, float]:
        """Each task's primary metric on ``split`` (tasks the row has no value for are left out)."""
        per = self.metrics.get(split, {})
        return {t: per[t][spec.primary] for t, spec in tasks.items() if spec.primary in per.get(t, {})}


class TaskInfo(_Open):
    """A task's kind, metrics with their direction, and (kinds with ratio-of-sums metrics, e.g. entity F1) the names
    of the per-example stats columns in ``predictions.npz`` and each such metric's recipe
    (:mod:`bench.stats.ratios`). Records without ``stats``/``recipes`` (every kind before them) load unchanged."""

    target: str | None = None
    primary: str | None = None
    metrics: dict[str, Literal["max", "min"]]
    stats: list[str] | None = None
    recipes: dict[str, dict[str, Any]] | None = None
    group: str | None = None  # per-group Δm%: written when the suite's tasks fall in several groups

    @model_validator(mode="after")
    def _primary(self) -> TaskInfo:
        if not self.metrics:
            raise ValueError("no metrics")
        self.primary = self.primary or next(iter(self.metrics))
        if self.recipes and not self.stats:
            raise ValueError("recipes without the names of their stats columns")
        return self


class Record(_Open):
    """One finished cell (one suite × strategy configuration × seed): ``record.json``."""

    schema_version: StrictInt
    suite: str
    strategy: str
    label: str
    seed: StrictInt
    tasks: dict[str, TaskInfo] = Field(min_length=1)
    rows: dict[str, Row] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    cell: str | None = None
    config: dict[str, Any]
    config_fingerprint: str = Field(min_length=1)
    budget_fingerprint: str = Field(min_length=1)
    budget_match: str = "none"
    data_fingerprint: str = ""
    task_fingerprints: dict[str, str] = Field(default_factory=dict)
    backbone_weights: str | None = None
    code_version: str = "unknown"
    plugins: dict[str, str] = Field(default_factory=dict)  # "<kind>:<name>" -> source hash of a user plug-in
    backbone: str | None = None
    # the suite's training configuration (epochs, lr, sample caps, ...); schema 2 called it "budget"
    train: dict[str, Any] = Field(default_factory=dict, validation_alias=AliasChoices("train", "budget"))
    notes: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    cell_wall_time_s: float | None = None
    stages_reused: int | None = None
    stages_computed: list[str] = Field(default_factory=list)
    runtime: dict[str, Any] = Field(default_factory=dict)
    created: str = ""
    status: Literal["complete"] = "complete"

    # where it was read from, and its leaderboard names (set by the report)
    _path: Path | None = PrivateAttr(default=None)
    _names: dict[str, str] = PrivateAttr(default_factory=dict)
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _migrate(cls, data: Any) -> Any:
        """Schema 1 -> 2 (module docstring); a newer schema is refused."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        version = data.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool):
            if version > SCHEMA_VERSION:
                raise ValueError(f"written by a newer bench (schema_version {version}; this one reads 1 to "
                                 f"{SCHEMA_VERSION}): upgrade bench to report it")
            if version < 1:
                raise ValueError(f"schema_version {version} does not exist (1 to {SCHEMA_VERSION})")
            if version == 1:
                data = dict(data)
                budget, params = data.get("budget") or {}, data.get("params") or {}
                data.setdefault("config", {"suite": {"train": budget}, "strategy": data.get("strategy"),
                                           "params": params})  # hashed below under its schema-1 name, "budget"
                data.setdefault("config_fingerprint", "v1-" + _hash({"budget": budget, "params": params}))
                data.setdefault("budget_fingerprint", "v1-" + _hash({"budget": budget}))
        return data

    @field_validator("rows")
    @classmethod
    def _test_metrics(cls, rows: dict[str, Row]) -> dict[str, Row]:
        for name, row in rows.items():
            if "test" not in row.metrics:
                raise ValueError(f"row {name!r} has no test metrics")
        return rows

    def __init__(self, **data: Any):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise _one_line(e, "record") from None

    @classmethod
    def read(cls, path: Path | str, suite: str | None = None) -> Record:
        """Read and validate ``record.json``; a :class:`BenchError` with the reason when it is unusable (the
        report skips such a file with a warning that names it)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BenchError(f"unreadable ({type(exc).__name__}: {exc})") from None
        if isinstance(data, dict) and data.get("status", "complete") != "complete":
            raise BenchError(f"status {data.get('status')!r}, not 'complete'")
        if not isinstance(data, dict):
            raise BenchError("not a JSON object")
        record = cls(**data)
        if suite is not None and record.suite != suite:
            raise BenchError(f"belongs to suite {record.suite!r}, not {suite!r}")
        record._path = path
        return record

    def dump(self) -> dict[str, Any]:
        """The JSON object ``record.json`` holds."""
        return self.model_dump(mode="json", exclude_unset=True)

    @property
    def path(self) -> Path | None:
        return self._path

    @property
    def legacy(self) -> bool:
        """A schema-1 record: no configuration of its own, no per-row provenance or predictions (no intervals)."""
        return self.schema_version < 2

    def plugin_versions(self) -> tuple[tuple[str, str], ...]:
        """The user plug-ins the cell used and their source hashes, sorted: records that differ here come from
        different versions of a plug-in, and a row never mixes them (:func:`bench.report.records.latest_per_seed`)."""
        return tuple(sorted(self.plugins.items()))

    def primary(self, row: str, split: str = "test") -> dict[str, float]:
        return self.rows[row].primary(split, self.tasks)

    def variant(self, row: str) -> str:
        """The leaderboard name of ``row``: the report's (with configuration suffixes) once assigned, else the
        naming rule :func:`variant_name`."""
        return self._names.get(row) or variant_name(row, self.label, self.strategy)


def variant_name(row: str, label: str, strategy: str | None = None) -> str:
    """The leaderboard row name of ``row`` produced by a record labelled ``label`` (the one naming rule).

    * the label carries parameters (``fuse_then_joint[fusion=ties]``): its bracket goes on every row without one of
      its own: ``fused[fusion=ties]``, ``fuse_then_joint[fusion=ties]``;
    * a custom label (``label=NAME``, not the strategy name plus parameters) names the strategy's own row and tags
      its other rows: ``NAME``, ``fused[NAME]``."""
    if strategy is not None and label != strategy and RowId.parse(label).kind != strategy:
        return label if row == strategy else str(RowId(row, (label,)))
    return row if "[" in row else row + label_suffix(label)


def label_suffix(label: str) -> str:
    """``'fuse_then_joint[fusion=ties]'`` -> ``'[fusion=ties]'``; ``'naive_mtl'`` -> ``''``."""
    return RowId.parse(label).suffix


def base_strategy(variant: str) -> str:
    """``'fused[fusion=ties]'`` -> ``'fused'``: the row kind that picks a variant's colour and sort position."""
    return RowId.parse(variant).kind


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _one_line(err: ValidationError, what: str) -> BenchError:
    """The first problem of a validation error as one line: where, the bad value, why."""
    e = err.errors()[0]
    parts = [str(p) for p in e["loc"]]
    if len(parts) >= 2 and parts[0] in ("rows", "tasks"):  # name the row or task the problem is in
        what, parts = f"{what} {parts[0][:-1]} {parts[1]!r}", parts[2:]
    loc = ".".join(parts)
    msg = e["msg"].replace("Value error, ", "")
    if e["type"] == "missing":
        return BenchError(f"{what}: missing key {loc!r}")
    if loc and "input" in e and not isinstance(e["input"], (dict, list)):
        return BenchError(f"{what}: {loc}={e['input']!r}: {msg}")
    return BenchError(f"{what}: {loc}: {msg}" if loc else f"{what}: {msg}")
