"""Typed, frozen, validated configuration.

Everything a run needs is validated into these pydantic models before any work starts, so a typo fails in
milliseconds with a one-line message instead of an hour into training.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bench.errors import BenchError, did_you_mean
from bench.taskset import schedule_steps

# The defaults a run starts from: the only place the core names built-in strategies (each is a plug-in under
# strategies/, found by the registry). BASELINE_STRATEGY's own row is the Δm% reference of every other row.
DEFAULT_STRATEGIES = ("separate", "naive_mtl", "fuse_then_joint", "uncertainty", "gradnorm")
BASELINE_STRATEGY = "separate"

# words: a tuple of words per example (tagging); image_text: an (image, text) pair (a question about the image)
InputKind = Literal["text", "text_pair", "words", "image", "vector", "image_text"]


class Frozen(BaseModel):
    """The base of every configuration model: frozen, unknown keys refused, and strict where lax parsing would
    silently change a value: a number is never NaN or ±inf (``train.lr=1e999``), true/false is never a number
    (``train.epochs=true`` is not 1 epoch), and a switch takes only true/false (``train.compile=yes`` or ``1`` is
    refused), in nested lists and dicts too. Numbers written as strings (YAML 1.1 reads ``1e-3`` as one) still parse.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="wrap")
    @classmethod
    def _strict_booleans(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        out = handler(value)
        _same_booleans(value, out)
        return out

    @model_validator(mode="after")
    def _bind_references(self) -> Frozen:
        """A plug-in reference (:mod:`bench.specs`: a name with a ``bind`` method) takes its parameters from the
        sibling field ``<field>_params`` (the plan checks both, once)."""
        fields = type(self).model_fields
        for name in fields:
            value = self.__dict__.get(name)
            if isinstance(value, str) and hasattr(value, "bind"):
                sibling = f"{name}_params"
                self.__dict__[name] = value.bind(self.__dict__.get(sibling) if sibling in fields else None)
        return self


NOT_A_SWITCH = "must be true or false"


def _same_booleans(raw: Any, out: Any) -> None:
    """Raise when validation turned true/false into a number, or something else into true/false."""
    if isinstance(out, BaseModel):
        return  # a nested model checked its own fields
    if isinstance(raw, bool) != isinstance(out, bool):
        if isinstance(raw, bool):
            raise ValueError("true/false is not a number; give a number")
        raise ValueError(NOT_A_SWITCH)
    if isinstance(raw, (list, tuple)) and isinstance(out, (list, tuple)) and len(raw) == len(out):
        for r, o in zip(raw, out):
            _same_booleans(r, o)
    elif isinstance(raw, dict) and isinstance(out, dict):
        for k, r in raw.items():
            if k in out:
                _same_booleans(r, out[k])


class NoParams(Frozen):
    """The parameters of a plug-in (strategy, weighting, fusion method) that takes none."""


class DataSpec(Frozen):
    """Where a task's (or a single-input suite's) examples come from: a registered loader and its options."""

    source: str
    options: dict[str, Any] = Field(default_factory=dict)


def modality(input_kind: str) -> str:
    """The modality of an input kind, a task's default group: a sentence pair is text, like a sentence.

    >>> modality("text_pair"), modality("image_text")
    ('text', 'image_text')
    """
    return "text" if input_kind == "text_pair" else input_kind


class TaskConfig(Frozen):
    """One task: its data, input, and target kind (``target``: a registered task kind, :mod:`bench.tasks`, which
    decides its head, loss, metrics and what its targets look like)."""

    name: str
    input: InputKind
    target: str
    num_classes: int | None = None  # classes (classification), tags (token_classification), labels (multi_label)
    classes: list[str] | None = None  # their names in id order (tags: the BIO/IOB2 strings; labels: column names)
    data: DataSpec | None = None  # multi-input suites: each task has its own data
    label: str | None = None  # single-input suites: which label column of the shared data this task predicts
    metrics: list[str] = Field(default_factory=list)  # empty: the kind's defaults
    primary: str | None = None
    optional: bool = False  # skipped with a note when its files are absent (e.g. Fashion-MNIST via apt)
    # the head's options, read by the task's kind (dense kinds: {decoder: aspp, width: 256, bias: 5.0})
    head: dict[str, Any] = Field(default_factory=dict)
    group: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # per-group Δm%; None: modality

    @property
    def report_group(self) -> str:
        """The task's group in the leaderboard's per-group Δm%: ``group``, else its modality."""
        return self.group or modality(self.input)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Without an empty ``head`` or unset ``group``: a task without them dumps (and hashes) as before the keys."""
        out = handler(self)
        for key in ("head", "group"):
            if not out.get(key):
                out.pop(key, None)
        return out

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.classes is not None and self.num_classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"task {self.name!r}: {len(self.classes)} classes named for num_classes "
                             f"{self.num_classes}; make them agree")
        return self


class BackboneConfig(Frozen):
    """The shared encoder. ``source`` picks a factory (mlp, transformers, timm); ``name`` what it builds."""

    source: str
    name: str = ""
    pretrained: bool = True
    max_length: int = 64  # text: tokens per example
    image_size: int | None = None  # vision: resize inputs to this (None: the model's pretrained size)
    options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(Frozen):
    """Budgets and optimisation. Suite files set defaults; ``train.KEY=VALUE`` overrides them."""

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    head_lr: float | None = Field(None, gt=0)  # None: same as lr
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    # linear: warmup then linear decay to 0; step: the lr times gamma at each of the milestones (epochs)
    schedule: Literal["constant", "linear", "step"] = "constant"
    milestones: list[int] = Field(default_factory=list)  # schedule=step: epochs after which the lr is times gamma
    gamma: float = Field(0.5, gt=0, le=1)  # schedule=step: the factor at each milestone (StepLR's gamma)
    augment: Literal["none", "scale_crop", "scale_crop_flip"] = "none"  # train batches of dense tasks, bench.augment
    optimizer: Literal["adamw", "sgd"] = "adamw"
    dropout: float = Field(0.0, ge=0, lt=1)  # before each head
    max_train_samples: int | None = Field(None, ge=1)  # per task, after the fixed split
    max_eval_samples: int | None = Field(None, ge=1)  # per task and split (validation/test)
    sampling: Literal["proportional", "temperature", "round_robin", "all"] = "proportional"
    temperature: float = Field(2.0, gt=0)
    patience: int | None = Field(None, ge=1)  # early stopping on the validation primary metric
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    num_workers: int | None = Field(None, ge=0)  # batch-collating processes; None: 0 on the CPU, up to 4 on a GPU
    log_every: int = Field(50, ge=1)

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Without the step schedule's keys unless ``schedule=step``, and without ``augment`` when none: a
        configuration that uses neither dumps (and hashes) as before the keys existed."""
        out = handler(self)
        if self.schedule != "step":
            out.pop("milestones", None)
            out.pop("gamma", None)
        if self.augment == "none":
            out.pop("augment", None)
        return out

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.schedule != "step" and (self.milestones or self.gamma != 0.5):
            key = "milestones" if self.milestones else "gamma"
            raise _line(f"train.{key} applies to train.schedule=step only (schedule is {self.schedule!r}); "
                        f"set train.schedule=step or drop train.{key}")
        if self.schedule == "step":
            m = self.milestones
            if not m:
                raise _line("train.schedule=step needs train.milestones (epochs after which the lr is times "
                            "train.gamma), e.g. train.milestones=[100]")
            if m[0] < 1 or any(b <= a for a, b in zip(m, m[1:])):
                raise _line(f"train.milestones={m}: give positive epochs in increasing order, e.g. [100]")
        return self


def _line(message: str) -> PydanticCustomError:
    """A validation error whose message is the whole line :func:`explain` prints (as bench.options.one_line)."""
    return PydanticCustomError("bench", message)


SPEED_KNOBS = ("num_workers", "log_every")  # TrainConfig fields that change how fast, never what is computed


class SplitConfig(Frozen):
    """How the fixed train/validation/test split is carved when a source lacks one (seeded, stratified)."""

    seed: int = 1234
    validation: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.2, gt=0, lt=1)


class BudgetConfig(Frozen):
    """How strategies' training budgets compare (``budget.match=`` on the command line, ``budget:`` in a suite).

    ``none``: every training stage runs ``train.epochs`` epochs over its tasks' data, so strategies with more stages
    (fuse-then-joint: fine-tunes *and* joint training) see more samples, and the leaderboard shows how many.
    ``samples`` / ``steps``: every row gets the total of one joint training over all tasks (``naive_mtl``'s), in
    training samples or optimiser steps; each strategy says how it spends it (docs/budgets.md)."""

    match: Literal["none", "samples", "steps"] = "none"


#: the report options a suite may set defaults for (``report:`` in its YAML)
SUITE_REPORT_KEYS = ("delta_m", "level", "interval", "correction", "min_seeds", "columns")


class SuiteConfig(Frozen):
    """A named task group plus backbone and default budgets (one YAML file under ``suites/``)."""

    name: str
    description: str = ""
    kind: Literal["multi_input", "single_input"] = "multi_input"
    backbone: BackboneConfig
    data: DataSpec | None = None  # single-input suites: one source gives every task its label
    tasks: list[TaskConfig]
    train: TrainConfig = Field(default_factory=TrainConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    budget_note: str = ""
    reference: str | None = None  # a published table this suite matches (bench/references/, docs/references.md)
    # the report's defaults for this suite (a command line's key wins): e.g. {delta_m: all}, the convention of the
    # dense literature, whose Δm% averages every metric of a task
    report: dict[str, Any] = Field(default_factory=dict)
    # a task schedule (docs/dynamic_tasks.md): steps of task names to add, "-name" to retire; None: every task at once
    schedule: list[list[str]] | None = None

    @model_validator(mode="after")
    def _check(self) -> SuiteConfig:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"suite {self.name!r}: duplicate task names {names}")
        if not names:
            raise ValueError(f"suite {self.name!r} has no tasks")
        bad = sorted(set(self.report) - set(SUITE_REPORT_KEYS))
        if bad:
            raise ValueError(f"suite {self.name!r}: report: key {bad[0]!r} is not a report default; valid keys: "
                             f"{', '.join(SUITE_REPORT_KEYS)}")
        for t in self.tasks:
            if self.kind == "multi_input" and t.data is None:
                raise ValueError(f"task {t.name!r} needs a 'data' entry (multi-input suite)")
            if self.kind == "single_input" and self.data is None:
                raise ValueError(f"single-input suite {self.name!r} needs a top-level 'data' entry")
        if self.schedule is not None:
            schedule_steps(self.schedule, names)
            if self.budget.match != "none":
                raise ValueError(f"budget.match={self.budget.match} is not defined under a schedule (its reference is "
                                 "one joint training on every task at once); drop budget.match or schedule=")
        return self

    def task(self, name: str) -> TaskConfig:
        for t in self.tasks:
            if t.name == name:
                return t
        raise BenchError(f"suite {self.name!r} has no task {name!r}; tasks: {', '.join(self.task_names)}")

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def results_dump(self) -> dict[str, Any]:
        """The configuration that decides results: without prose (description, budget note), speed knobs
        (``train.num_workers``, ``train.log_every``) and what only the report reads (a task's ``group``), so editing
        those never orphans finished work."""
        return self.model_dump(mode="json", exclude={"description": True, "budget_note": True, "reference": True,
                                                     "report": True, "tasks": {"__all__": {"group"}},
                                                     "train": set(SPEED_KNOBS)})


def validated(model: type[BaseModel], params: dict[str, Any] | None, where: str) -> Any:
    """``model(**params)``, or a one-line BenchError naming ``where``, the key and the fix."""
    try:
        return model(**(params or {}))
    except ValidationError as e:
        raise explain(e, model, where) from None


def explain(err: ValidationError, model: type[BaseModel], where: str = "") -> BenchError:
    """Turn a pydantic error into one line that names the key, the bad value and the fix."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    prefix = f"{where}: " if where else ""
    if e["type"] == "extra_forbidden":
        parent = [str(p) for p in e["loc"][:-1] if not isinstance(p, int)]
        known = _known_keys(model, e["loc"][:-1])
        full = [".".join([*parent, k]) for k in known]
        if not full:
            return BenchError(f"{prefix}unknown key {loc!r}: it takes no parameters here")
        return BenchError(f"{prefix}unknown key {loc!r}{did_you_mean(loc, full)}; "
                          f"valid keys here: {', '.join(sorted(full))}")
    if e["type"] == "bench":  # a validator's own whole line (bench.options.one_line)
        return BenchError(f"{prefix}{e['msg']}")
    value = e.get("input")
    msg = e["msg"].replace("Value error, ", "")
    if e["type"] == "missing":
        return BenchError(f"{prefix}missing required key {loc!r}")
    if e["type"] == "literal_error":
        return BenchError(f"{prefix}{loc}={value!r}: {msg}")
    if e["type"] == "finite_number":
        return BenchError(f"{prefix}{loc}={value!r}: must be a finite number (not nan or inf)")
    if msg == NOT_A_SWITCH:
        return BenchError(f"{prefix}{loc}={value!r}: {msg}, e.g. {loc}=true")
    if isinstance(value, bool):  # as the command line and YAML write it
        return BenchError(f"{prefix}{loc}={str(value).lower()}: {msg}")
    return BenchError(f"{prefix}{loc}={value!r}: {msg}" if loc else f"{prefix}{msg}")


def _known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                current = cand
                break
            for inner in getattr(cand, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    current = inner
                    break
    return list(getattr(current, "model_fields", {}))
