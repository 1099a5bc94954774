"""The top-level keys of a command line, typed: one model, one meaning per key.

A ``bench run`` command line holds dotted keys, which configure the suite (``train.*``, ``backbone.*``, ``split.*``,
``budget.*``), the strategies (``strategy.*``) and the launcher (``launcher.*``), and top-level keys, which say how
the command runs: :class:`RunOptions` holds every one of those, validated by pydantic with the one-line errors the
command line prints. ``bench search`` reads its run keys through the same model.

A switch (``force``, ``report``, ``wait``, and ``bench check``'s ``update`` / ``require_all``) takes ``true`` or
``false`` only, everywhere: ``yes``, ``1`` or ``'true'`` is refused with a line naming the value, as
:class:`bench.config.Frozen` refuses them for the configuration's own switches (``train.compile=yes``).

>>> RunOptions.of({"seeds": 2, "force": True}).seed_list
[0, 1]
>>> RunOptions.of({"force": "yes"})
Traceback (most recent call last):
...
bench.errors.BenchError: force='yes' must be true or false, e.g. force=true
>>> RunOptions.of({"budget": 4})
Traceback (most recent call last):
...
bench.errors.BenchError: budget=4 is now spelled sample_scale=4 (it scales the suite's sample caps; \
budget.match= keeps its name)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bench.config import DEFAULT_STRATEGIES, Frozen, validated
from bench.errors import BenchError, BenchWarning

#: old spelling -> new one: the old key is refused with one line naming the new one
RENAMED = {"budget": "sample_scale"}
RENAMED_WHY = {"budget": "it scales the suite's sample caps; budget.match= keeps its name"}
#: keys that name the same thing, kept working with one warning: alias -> key
ALIASES = {"strategy_dirs": "plugin_dirs"}


def note_aliases(keys: Iterable[str]) -> None:
    """Warn once per old spelling among a command line's ``keys``. The command's front calls this when it parses
    its arguments, not the model: a command validates its options more than once (pre-check, plan, jobs)."""
    for old in sorted(set(keys) & set(ALIASES)):
        warnings.warn(f"{old}= is now spelled {ALIASES[old]}= (it holds every kind of plug-in); {old}= still works",
                      BenchWarning, stacklevel=3)


def one_line(message: str) -> PydanticCustomError:
    """A validation error whose message is the whole line the command prints (:func:`bench.config.explain`)."""
    return PydanticCustomError("bench", message)


def switch(key: str, value: Any, default: bool) -> bool:
    """A switch's value: true or false as the grammar types them; anything else is a typo, not a truthy string."""
    if not isinstance(value, bool):
        raise BenchError(f"{key}={value!r} must be true or false, e.g. {key}={str(not default).lower()}")
    return value


def renamed(key: str, value: Any = None) -> BenchError | None:
    """The one-line error for a key spelled the old way (``budget=4``), or None."""
    new = RENAMED.get(key)
    if new is None:
        return None
    shown = "..." if value is None else (str(value).lower() if isinstance(value, bool) else value)
    return BenchError(f"{key}={shown} is now spelled {new}={shown} ({RENAMED_WHY[key]})")


class Options(Frozen):
    """Options whose switches and integers answer in the command line's own words (``force=1 must be ...``)."""

    SWITCHES: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def of(cls, opts: dict[str, Any]) -> Any:
        """The validated options, or a one-line BenchError."""
        return validated(cls, opts, "")

    @model_validator(mode="before")
    @classmethod
    def _switches(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in cls.SWITCHES:
                if key in data and not isinstance(data[key], bool):
                    default = cls.model_fields[key].default
                    raise one_line(f"{key}={data[key]!r} must be true or false, e.g. {key}={str(not default).lower()}")
        return data


def _positive_int(key: str, value: Any, what: str, example: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise one_line(f"{key}={value!r} must be a positive integer ({what}), e.g. {key}={example}")
    return value


class LaunchOptions(Options):
    """Where the cells run (docs/launchers.md); ``launcher.*`` keys are the chosen launcher's own options."""

    SWITCHES: ClassVar[tuple[str, ...]] = ("wait",)

    launcher: str = "local"  # a registered launcher (bench.launch.launcher_from names them on a mistake)
    workers: int = 1  # jobs running at once
    devices: list[int] | None = None  # GPU ids, one cell at a time per GPU
    wait: bool = True  # false: submit and return
    procs: int = 1  # processes per cell, sharing each training batch (docs/distributed.md)

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        return _positive_int("workers", value, "jobs running at once", "2")

    @field_validator("procs", mode="before")
    @classmethod
    def _procs(cls, value: Any) -> Any:
        return _positive_int("procs", value, "processes per cell, sharing each training batch", "2")

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(d, int) and not isinstance(d, bool) for d in value)):
            raise one_line(f"devices={value!r} must be a list of GPU ids, e.g. devices=[0,1]")
        return value


class RunOptions(LaunchOptions):
    """Every top-level key of ``bench run`` (one combination of a sweep: ``strategy=a,b`` gives one per name)."""

    SWITCHES: ClassVar[tuple[str, ...]] = ("force", "report", "wait")

    suite: str | None = None  # a name or a YAML file; None: the default suite
    strategy: list[str] = Field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    seeds: int | None = None  # seeds 0..N-1 (default 1)
    seed: list[int] | None = None  # these seeds
    tasks: list[Any] | None = None  # a subset of the suite's tasks (checked against the suite)
    schedule: list[Any] | None = None  # task steps, e.g. [[a,b],[c],[-a]] (checked against the suite)
    sample_scale: float | None = None  # multiplies the suite's max_train_samples / max_eval_samples
    data_dir: str | None = None  # file-backed sources read their files here
    unlabel: dict[str, float] | None = None  # {task: fraction}: remove that fraction of its labels (partial labels)
    results_dir: Path = Path("results")
    label: str | int | float | None = None  # a custom row name (kept as given: it enters the cell's hash)
    force: bool = False  # recompute finished cells
    report: bool = True  # write the leaderboard after the run
    params: str | None = None  # a best-params file (bench search's best.yaml)
    tracker: Any = None  # checked by bench.track.trackers_from
    plugin_dirs: list[Any] = Field(default_factory=list,
                                   validation_alias=AliasChoices("plugin_dirs", "strategy_dirs"))

    @model_validator(mode="before")
    @classmethod
    def _spelling(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key in data:
            err = renamed(key, data[key])
            if err is not None:
                raise one_line(str(err))
        if "seed" in data and "seeds" in data:
            raise one_line("give either seeds=N (runs seeds 0..N-1) or seed=[...], not both")
        for old, new in ALIASES.items():
            if old in data:
                if new in data:
                    raise one_line(f"give {new}= only ({old}= is its old name)")
        return data

    @field_validator("suite", mode="before")
    @classmethod
    def _suite(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise one_line(f"suite={value!r} must be a suite name or a path to a YAML file")
        return value

    @field_validator("strategy", mode="before")
    @classmethod
    def _strategy(cls, value: Any) -> list[str]:
        return [str(v) for v in _as_list("strategy", value, DEFAULT_STRATEGIES[0])]

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise one_line(f"seeds={value!r} must be a positive integer (the number of seeds), e.g. seeds=3")
        return value

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, value: Any) -> Any:
        seeds = _as_list("seed", value, "[0,1,2]")
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds):
            raise one_line(f"seed={value!r} must be a non-negative integer or a list of them, e.g. seed=[0,1,2]")
        if len(set(seeds)) != len(seeds):
            raise one_line(f"seed={value!r} names a seed twice; each seed is one cell")
        return seeds

    @field_validator("tasks", "plugin_dirs", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> list[Any]:
        return value if isinstance(value, list) else [value]

    @field_validator("schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, list) or not all(isinstance(s, list) for s in value)):
            raise one_line(f"schedule={value!r} must be a list of steps, each a list of task names (-name retires "
                           "one), e.g. schedule=[[bbc,sentiment],[device]]")
        return value

    @field_validator("sample_scale", mode="before")
    @classmethod
    def _scale(cls, value: Any) -> Any:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise one_line(f"sample_scale={value!r} must be a positive number (it scales the suite's sample caps)")
        return value

    @field_validator("unlabel")
    @classmethod
    def _fractions(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for task, fraction in (value or {}).items():
            if not 0 <= fraction < 1:
                raise ValueError(f"unlabel {task}={fraction}: a fraction of the labels, in [0, 1)")
        return value

    @field_validator("data_dir", "params", mode="before")
    @classmethod
    def _text(cls, value: Any, info: ValidationInfo) -> Any:
        return None if value is None else str(value)

    @property
    def seed_list(self) -> list[int]:
        """The seeds the command runs: ``seed=[...]``, else ``0..seeds-1``."""
        return list(self.seed) if self.seed is not None else list(range(self.seeds or 1))

    @classmethod
    def keys(cls) -> set[str]:
        """Every top-level key, as the command line spells it (aliases included)."""
        return set(cls.model_fields) | set(ALIASES)


def _as_list(key: str, value: Any, example: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise one_line(f"{key}=[] is empty: name at least one, e.g. {key}={example}")
    return values
