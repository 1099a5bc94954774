"""Command-line overrides in Hydra's grammar, expanded into a matrix.

``key=value`` pairs are parsed by hydra-core's own override parser (so ``a,b,c`` is a sweep, ``[0,1]`` a list,
``null``/``true`` typed values). Every sweep expands into the cartesian product of combinations; ``strategy=a,b`` is
just the most common sweep.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError
from bench.options import switch


def as_bool(opts: dict[str, Any], key: str, default: bool) -> bool:
    """A switch (``force=true``): true or false only, as every command reads one (:func:`bench.options.switch`)."""
    return switch(key, opts.get(key, default), default)


def parse(args: list[str]) -> list[tuple[str, Any, bool]]:
    """``["strategy=a,b", "seeds=2"]`` -> ``[("strategy", ["a", "b"], True), ("seeds", 2, False)]``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for arg in args:
        if "=" not in arg:
            raise BenchError(f"cannot read {arg!r}: overrides look like key=value (e.g. suite=synthetic seeds=2)")
        try:
            (ov,) = parser.parse_overrides([arg])
        except HydraException as e:
            raise BenchError(f"cannot parse override {arg!r}: {str(e).splitlines()[0]}") from None
        if ov.is_sweep_override():
            vals = ov.value()
            if not hasattr(vals, "list"):
                raise BenchError(f"override {arg!r}: only comma-list sweeps (a,b,c) are supported")
            out.append((ov.key_or_group, list(vals.list), True))
        else:
            out.append((ov.key_or_group, ov.value(), False))
    return out


def load_params_file(path: str) -> list[tuple[str, Any, bool]]:
    """A best-params file (YAML mapping of override keys to values), as written by ``bench search``."""
    p = Path(path)
    if not p.exists():
        raise BenchError(f"params file {path!r} does not exist; `bench search` writes one (best.yaml)")
    if not p.is_file():
        raise BenchError(f"params file {path!r} is not a file; give a YAML file such as best.yaml")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise BenchError(f"malformed params file {path}{at}: {e.problem or e.context}; it must be a YAML mapping of "
                         "override keys to values (as in best.yaml)") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise BenchError(f"cannot read params file {path}: {first}; it must be a YAML mapping of override keys to "
                         "values (as in best.yaml)") from None
    if not isinstance(raw, dict):
        raise BenchError(f"params file {path!r} must be a mapping of override keys to values")
    raw = raw.get("overrides", raw)
    if not isinstance(raw, dict):
        raise BenchError(f"params file {path!r}: 'overrides' must be a mapping of override keys to values")
    return [(str(k), v, False) for k, v in raw.items()]


def expand(pairs: list[tuple[str, Any, bool]]) -> list[dict[str, Any]]:
    """The cartesian product over sweeps; later keys override earlier ones (CLI after params file)."""
    fixed: dict[str, Any] = {}
    sweeps: dict[str, list[Any]] = {}
    for key, value, is_sweep in pairs:
        if is_sweep:
            sweeps[key] = value
            fixed.pop(key, None)
        else:
            fixed[key] = value
            sweeps.pop(key, None)
    combos = []
    for values in itertools.product(*sweeps.values()):
        d = dict(fixed)
        d.update(zip(sweeps, values))
        d["_swept"] = {k: v for k, v in zip(sweeps, values) if k != "strategy"}
        combos.append(d)
    return combos
