"""Search spaces: declared in YAML next to the strategies, turned into Optuna suggestions.

A space file is ``strategies/spaces/<strategy>.yaml`` (also searched in every ``plugin_dirs`` folder): a mapping
from space name to space. ``space=<name>`` picks one; ``space=path/to/file.yaml`` reads a file holding one space.

    lambda:
      description: static loss weights λ on the simplex, one per task
      mode: train                 # train (default): run the strategy | fuse: fuse cached fine-tunes, evaluate
      prune_stage: joint          # train mode: whose per-epoch validation is reported for pruning (or finetune)
      fixed: {}                   # overrides every trial shares, e.g. {strategy.fusion: weighted}
      params:
        strategy.weights: {type: simplex, total: tasks}
        train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, default: 3.0e-3}

A parameter's key is an override key of ``bench run`` (``strategy.*`` or ``train.*``), so the best trial becomes an
overrides file as it is. Parameter types:

* ``float`` / ``int``: ``low`` < ``high``, optional ``log`` and ``step`` (Optuna's ``suggest_float``/``suggest_int``);
* ``categorical``: ``choices``;
* ``simplex``: one non-negative weight per task, summing to ``total`` (``tasks`` = the number of tasks, so that
  the centre of the simplex is every weight 1, i.e. exactly the ``equal`` weighting whose losses are summed; or a
  number, e.g. 1 for fusion weights). Sampled as normalised exponentials: for each task an independent
  u_t ~ U(1e-6, 1) is suggested under the name ``<key>[<task>]``, e_t = -ln u_t, w = total · e / Σe. Independent
  uniform u gives a uniform (Dirichlet(1, ..., 1)) distribution on the simplex, every raw parameter has the same
  box-shaped domain (which TPE models well, unlike stick-breaking whose coordinates are asymmetric), and a one-hot
  corner is reachable. The scale of e is redundant (any common factor gives the same w); that costs TPE a
  dimension but keeps every task symmetric.

``default`` values (a simplex's default is its centre) are tried first: when every parameter of a space has one, a
new study enqueues that point as trial 0, so the study always contains the un-tuned baseline.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError, model_validator

from bench.config import Frozen, explain
from bench.errors import BenchError, did_you_mean

SIMPLEX_LOW = 1e-6  # u = 0 would give e = inf; 1e-6 caps one raw weight at -ln(1e-6) ≈ 13.8 times the mean
CENTRE_U = math.exp(-1.0)  # -ln(1/e) = 1 for every task: the centre of the simplex
ALLOWED_PREFIXES = ("strategy.", "train.")


class ParamSpec(Frozen):
    """One tuned override key."""

    type: Literal["float", "int", "categorical", "simplex"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    total: float | Literal["tasks"] = "tasks"
    default: Any = None

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        if self.type in ("float", "int"):
            if self.low is None or self.high is None:
                raise ValueError(f"a {self.type} parameter needs low and high")
            if not self.low < self.high:
                raise ValueError(f"empty range: low={self.low} must be < high={self.high}")
            if self.log and self.low <= 0:
                raise ValueError(f"log=true needs low > 0, got low={self.low}")
            if self.default is not None and not self.low <= self.default <= self.high:
                raise ValueError(f"default={self.default} lies outside [{self.low}, {self.high}]")
        elif self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty list of choices")
            if self.default is not None and self.default not in self.choices:
                raise ValueError(f"default={self.default!r} is not one of the choices {self.choices}")
        elif self.type == "simplex":
            if isinstance(self.total, float) and not self.total > 0:
                raise ValueError(f"total={self.total} must be > 0 (or 'tasks')")
        return self

    def has_default(self) -> bool:
        return self.type == "simplex" or self.default is not None

    def probe_values(self, tasks: list[str]) -> list[Any]:
        """Values that exercise the strategy's validation before any trial (every choice of a categorical)."""
        if self.type == "simplex":
            return [self.centre(tasks)]
        if self.type == "categorical":
            return list(self.choices or [])
        if self.default is not None:
            return [self.default]
        v = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2  # type: ignore[operator]
        return [int(round(v)) if self.type == "int" else v]

    def centre(self, tasks: list[str]) -> list[float]:
        total = float(len(tasks)) if self.total == "tasks" else float(self.total)
        return [total / len(tasks)] * len(tasks)


class Space(Frozen):
    """A named set of tuned parameters, fixed overrides and how a trial is evaluated."""

    name: str
    description: str = ""
    mode: Literal["train", "fuse"] = "train"
    row: str | None = None  # train mode: which of the strategy's rows is scored (default: the strategy's name)
    #: train mode: the stage kind whose per-epoch validation is reported for pruning (the one that is tuned)
    prune_stage: Literal["joint", "finetune"] = "joint"
    fixed: dict[str, Any] = {}
    params: dict[str, ParamSpec]

    @model_validator(mode="after")
    def _check(self) -> Space:
        if not self.params:
            raise ValueError("a space needs at least one entry under params")
        for key in [*self.params, *self.fixed]:
            if not key.startswith(ALLOWED_PREFIXES):
                raise ValueError(f"key {key!r}: a space tunes strategy.* or train.* override keys only")
        both = set(self.params) & set(self.fixed)
        if both:
            raise ValueError(f"{sorted(both)[0]!r} is both fixed and tuned")
        if self.mode == "fuse":
            train = [k for k in [*self.params, *self.fixed] if k.startswith("train.")]
            if train:
                raise ValueError(f"mode: fuse re-fuses cached fine-tunes; tuning {train[0]!r} would retrain them "
                                 "(use mode: train)")
        return self

    # -- suggestions -------------------------------------------------------------------------------------------
    def suggest(self, trial: Any, tasks: list[str]) -> dict[str, Any]:
        """The override values of one trial (simplex weights already normalised)."""
        out: dict[str, Any] = {}
        for key, p in self.params.items():
            if p.type == "simplex":
                e = [-math.log(trial.suggest_float(f"{key}[{t}]", SIMPLEX_LOW, 1.0)) for t in tasks]
                total = float(len(tasks)) if p.total == "tasks" else float(p.total)
                s = sum(e)
                out[key] = [total * x / s for x in e] if s > 0 else p.centre(tasks)
            elif p.type == "float":
                out[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
            elif p.type == "int":
                out[key] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
            else:
                out[key] = trial.suggest_categorical(key, p.choices)
        return out

    def default_trial(self, tasks: list[str]) -> dict[str, Any] | None:
        """Optuna's raw parameters of the all-defaults point (enqueued as trial 0), or None when a default is
        missing."""
        if not all(p.has_default() for p in self.params.values()):
            return None
        raw: dict[str, Any] = {}
        for key, p in self.params.items():
            if p.type == "simplex":
                raw.update({f"{key}[{t}]": CENTRE_U for t in tasks})
            else:
                raw[key] = p.default
        return raw

    def probes(self, tasks: list[str]) -> list[dict[str, Any]]:
        """Override sets covering every parameter (and every categorical choice) for up-front validation."""
        base = {k: p.probe_values(tasks)[0] for k, p in self.params.items()}
        out = [base]
        for k, p in self.params.items():
            for v in p.probe_values(tasks)[1:]:
                out.append({**base, k: v})
        return out

    def describe(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ------------------------------------------------------------------------------------------------ loading

def space_files(strategy: str, folders: list[Path]) -> list[Path]:
    return [f / "spaces" / f"{strategy}.yaml" for f in folders if (f / "spaces" / f"{strategy}.yaml").exists()]


def _parse(name: str, raw: Any, where: str) -> Space:
    if not isinstance(raw, dict):
        raise BenchError(f"{where}: space {name!r} must be a mapping with a 'params' entry")
    try:
        return Space(name=name, **raw)
    except ValidationError as e:
        raise explain(e, Space, f"{where}: space {name!r}") from None
    except TypeError as e:  # e.g. a non-string key
        raise BenchError(f"{where}: space {name!r}: {e}") from None


def load_space(spec: str, strategy: str, folders: list[Path]) -> Space:
    """``spec`` is a space name from the strategy's space files, or a path to a YAML file holding one space."""
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise BenchError(f"space file {spec!r} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
        return _parse(path.stem, raw, str(path))
    spaces: dict[str, tuple[Any, Path]] = {}
    for file in space_files(strategy, folders):
        raw = yaml.safe_load(file.read_text()) or {}
        if not isinstance(raw, dict):
            raise BenchError(f"{file}: a space file is a mapping from space name to space")
        for name, body in raw.items():
            spaces.setdefault(str(name), (body, file))
    if spec not in spaces:
        where = ", ".join(str(f) for f in space_files(strategy, folders)) or f"no strategies/spaces/{strategy}.yaml"
        valid = ", ".join(sorted(spaces)) or "none"
        raise BenchError(f"strategy {strategy!r} has no search space {spec!r}{did_you_mean(spec, spaces)}; "
                         f"valid: {valid} ({where}); or give space=path/to/space.yaml")
    body, file = spaces[spec]
    return _parse(spec, body, str(file))


def list_spaces(strategy: str, folders: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for file in space_files(strategy, folders):
        for name, body in (yaml.safe_load(file.read_text()) or {}).items():
            out.setdefault(str(name), str((body or {}).get("description", "")))
    return out
