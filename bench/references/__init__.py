"""Published results tables, shipped as data with their sources (one YAML file per table in this folder).

A :class:`Reference` is a table as a paper printed it: its metric columns (task, metric, direction), one row per
method with the cells as printed (trailing zeros kept, so the rounding is known) and the printed Δm% when the table
has one, the single-task row Δm% is measured against, and where the numbers were read (``source``). ``bench report
... reference=NAME`` prints one under the measured rows, marked as published (:mod:`bench.references.render`);
:mod:`bench.references.recompute` recomputes each printed Δm% from the metric columns. The shipped tables and how
to add one: docs/references.md.

>>> ref = load("nyuv2_nash_mtl")
>>> row = ref.row("Nash-MTL")
>>> ref.values(row)["segmentation/miou"], row.delta_m
(40.13, -4.04)
>>> "fusionbench_clip_vit_b32_ta8" in names()
True
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from bench.errors import BenchError, unknown

FOLDER = Path(__file__).parent
MISSING = ("-", "–", "—")  # a cell the table leaves empty

__all__ = ["DeltaConvention", "Metric", "Reference", "Row", "Source", "describe", "load", "names"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(_Frozen):
    """Where the numbers come from: the paper that published them, its table and setting, and where they were read
    (the text a reader can open to check every cell)."""

    paper: str
    arxiv: str | None = None
    venue: str = ""
    table: str | None = None  # the table's number or caption in ``paper``; None: not read
    setting: str = ""
    read_in: str

    @property
    def citation(self) -> str:
        """One line for a heading: the paper, its table, and the reprint the numbers were read in."""
        table = f", {self.table}" if self.table else ""
        arxiv = f" (arXiv:{self.arxiv})" if self.arxiv else ""
        return f"{self.paper}{arxiv}{table}; read in: {self.read_in}"


class DeltaConvention(_Frozen):
    """How the table's Δm% is computed: ``average`` over every metric equally (``metric``) or per task first
    (``task``), and its ``sign``: ``drop`` (positive = worse than the single-task row, the papers' convention) or
    ``gain`` (positive = better, bench's)."""

    average: Literal["metric", "task"]
    sign: Literal["drop", "gain"]


class Metric(_Frozen):
    """One column: ``task``/``metric`` with its printed ``label`` and ``direction``; a ``summary`` column (an
    Average the table prints) is shown but never enters Δm%."""

    task: str
    metric: str
    direction: Literal["max", "min"]
    label: str = ""
    summary: bool = False

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric}"


def _number(text: str) -> float:
    return float(text.replace("−", "-"))


def decimals(text: str) -> int:
    """Digits after the point of a printed number (its rounding: half a unit of the last digit)."""
    return len(text.split(".", 1)[1]) if "." in text else 0


class Row(_Frozen):
    """One method's row: ``cells`` as printed, in the order of the table's metrics (a string of numbers separated
    by spaces in the YAML; ``-`` for an empty cell), and the printed Δm% if any."""

    method: str
    cells: tuple[str, ...] = ()
    delta_m_text: str | None = None
    note: str = ""
    # non-empty: the printed Δm% does not follow from the printed cells (beyond rounding); says what was checked
    mismatch: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, raw):
        if isinstance(raw, dict) and ("values" in raw or "delta_m" in raw):
            raw = dict(raw)
            values = raw.pop("values", "")
            raw["cells"] = tuple(str(values).split()) if isinstance(values, str) else tuple(map(str, values))
            if raw.get("delta_m") is not None:
                raw["delta_m_text"] = str(raw["delta_m"])
            raw.pop("delta_m", None)
        return raw

    @field_validator("cells")
    @classmethod
    def _numbers(cls, cells: tuple[str, ...]) -> tuple[str, ...]:
        for cell in cells:
            if cell not in MISSING:
                _number(cell)  # a ValueError names the cell
        return cells

    @field_validator("delta_m_text")
    @classmethod
    def _delta(cls, text: str | None) -> str | None:
        if text is not None:
            _number(text)
        return text

    @property
    def delta_m(self) -> float | None:
        return None if self.delta_m_text is None else _number(self.delta_m_text)


class Reference(_Frozen):
    """A published table (see the module docstring); ``protocol`` names the setting a suite must match to be
    compared with it."""

    name: str
    title: str
    protocol: str | None = None
    source: Source
    delta_m: DeltaConvention | None = None
    baseline: str | None = None
    metrics: tuple[Metric, ...] = ()
    rows: tuple[Row, ...]

    @model_validator(mode="after")
    def _check(self) -> Reference:
        methods = [r.method for r in self.rows]
        if len(set(methods)) != len(methods):
            raise ValueError(f"duplicate method rows in {methods}")
        keys = [m.key for m in self.metrics]
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate metric columns in {keys}")
        for row in self.rows:
            if row.cells and len(row.cells) != len(self.metrics):
                raise ValueError(f"row {row.method!r} has {len(row.cells)} cells for {len(self.metrics)} metrics")
        if self.baseline is not None and self.baseline not in methods:
            raise ValueError(f"baseline {self.baseline!r} is not a row; rows: {', '.join(methods)}")
        if any(r.delta_m_text is not None for r in self.rows) and self.delta_m is None:
            raise ValueError("rows print a Δm% but the table has no delta_m: {average: ..., sign: ...}")
        return self

    def row(self, method: str) -> Row:
        for r in self.rows:
            if r.method == method:
                return r
        raise unknown(f"row of reference {self.name!r}", method, [r.method for r in self.rows])

    def values(self, row: Row) -> dict[str, float]:
        """``{task/metric: value}`` of a row's printed cells (empty cells left out)."""
        return {m.key: _number(c) for m, c in zip(self.metrics, row.cells) if c not in MISSING}

    @property
    def directions(self) -> dict[str, str]:
        return {m.key: m.direction for m in self.metrics}


def _one_line(err: ValidationError, path: Path) -> BenchError:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = str(e.get("ctx", {}).get("error", e["msg"]))
    where = f"{loc}: " if loc else ""  # a whole-table check (row lengths, baseline) names its row itself
    return BenchError(f"reference {path.name}: {where}{msg}; fix the file (docs/references.md describes the format)")


def parse(path: Path) -> Reference:
    """A reference file, validated; a bad file raises one line naming the file, the key and the problem."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise BenchError(f"reference {path.name}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise BenchError(f"reference {path.name}: expected a mapping of name, title, source, metrics, rows")
    try:
        ref = Reference(**raw)
    except ValidationError as e:
        raise _one_line(e, path) from None
    if ref.name != path.stem:
        raise BenchError(f"reference {path.name}: name {ref.name!r} must equal the file name {path.stem!r}")
    return ref


def names() -> list[str]:
    """Every shipped reference, sorted."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


@cache
def load(name: str) -> Reference:
    """The shipped reference ``name``; an unknown name is one line naming the choices."""
    if name not in names():
        raise unknown("reference", name, names())
    return parse(FOLDER / f"{name}.yaml")


def describe() -> dict[str, str]:
    """name -> one line (title and source) for ``bench list``."""
    out = {}
    for name in names():
        ref = load(name)
        table = f", {ref.source.table}" if ref.source.table else ""
        out[name] = f"{ref.title} ({ref.source.paper}{table})"
    return out
