"""Suites: YAML files under ``suites/`` (the working directory's, then the built-in ones), validated on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bench.config import SuiteConfig, explain
from bench.errors import BenchError, did_you_mean
from bench.plugins.discovery import builtin_dir, user_dirs  # where suite files are found


def suite_dirs() -> list[Path]:
    """Searched in order, the first file of a name wins: ``./suites``, then the built-in suites."""
    return [*user_dirs("suites"), builtin_dir("suites")]


def suite_files() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for d in suite_dirs():
        for f in sorted(d.glob("*.yaml")):
            out.setdefault(f.stem, f)
    return out


def find_suite(name: str) -> Path:
    """A suite by name (``suites/NAME.yaml``) or by path to a YAML file."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise BenchError(f"suite file {name!r} does not exist")
        return p
    files = suite_files()
    if name not in files:
        raise BenchError(f"unknown suite {name!r}{did_you_mean(name, files)}; valid: {', '.join(sorted(files))}")
    return files[name]


def read_suite_yaml(path: Path) -> dict[str, Any]:
    """Parse a suite file; a syntax error names the file and line."""
    try:
        # libyaml's loader where PyYAML was built with it: ~10x faster, and every command parses a suite
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise BenchError(f"malformed suite file {path}{line}: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise BenchError(f"malformed suite file {path}: {e}") from None
    if not isinstance(raw, dict):
        raise BenchError(f"suite file {path} must hold a mapping (name, backbone, tasks, ...)")
    raw.setdefault("name", path.stem)
    return raw


def validate_suite(raw: dict[str, Any], where: str) -> SuiteConfig:
    try:
        return SuiteConfig(**raw)
    except ValidationError as e:
        raise explain(e, SuiteConfig, where) from None


def is_suite_file(item: str) -> bool:
    return Path(item).suffix in (".yaml", ".yml")


def suite_name(item: str) -> str:
    """A ``suite=`` argument -> the name its store uses (``results/<name>/``): a suite YAML's ``name:`` (its file
    stem when it has none), for a path or a name of ``suites/`` alike, else the name as given (a store whose suite
    file is gone is still read). What ``bench run`` and ``bench search`` store under, for ``report``, ``check`` and
    ``verify`` to read back.

    >>> suite_name("synthetic")
    'synthetic'
    """
    if is_suite_file(item):
        if not Path(item).is_file():
            raise BenchError(f"suite file {item!r} does not exist; give a suite name or the path of a suite YAML")
        return str(read_suite_yaml(Path(item))["name"])
    path = suite_files().get(item)
    if path is None:
        return item
    try:
        return str(read_suite_yaml(path)["name"])
    except BenchError:
        return item


def stored_suites(results_dir: Path | str, records: bool = True) -> list[str]:
    """The suites under ``results_dir`` with at least one record (``records=False``: with a store, ``stages/`` or
    ``cells/``, as a search alone leaves)."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    if records:
        return sorted(d.name for d in root.iterdir() if next(d.glob("cells/*/*/record.json"), None))
    return sorted(d.name for d in root.iterdir() if (d / "stages").is_dir() or (d / "cells").is_dir())


def stored_suite(item: str, results_dir: Path | str, records: bool = True) -> str:
    """A ``suite=`` argument of a command that reads a store (``report``, ``check``, ``verify``) -> the suite's name
    in ``results_dir``, a name and a YAML path alike (:func:`suite_name`). One line that names the fix when there is
    no such store (``records=False``: a store without records, as a search alone leaves, is enough)."""
    results_dir = Path(results_dir)
    name = suite_name(item)
    root = results_dir / name
    found = root / "cells" if records else root
    if found.is_dir() and (records or (root / "stages").is_dir() or (root / "cells").is_dir()):
        return name
    where = "" if results_dir == Path("results") else f" results_dir={results_dir}"
    stored = stored_suites(results_dir, records)
    there = f"suites with {'records' if records else 'a store'} under {results_dir}: {', '.join(stored) or 'none'}"
    if not is_suite_file(item) and item not in suite_files():
        raise BenchError(f"no {'records' if records else 'store'} for suite {item!r} under {found}: unknown suite "
                         f"{item!r}{did_you_mean(item, [*stored, *suite_files()])}; {there} (a new suite: write "
                         f"suites/{item}.yaml, then `python -m bench run suite={item}`)")
    named = f"suite {name!r}" + (f" ({item})" if name != item else "")
    if records:
        raise BenchError(f"no records for {named} under {found}; `python -m bench run suite={item}{where}` "
                         f"produces them ({there})")
    raise BenchError(f"no store for {named} under {results_dir} ({there}); give results_dir= the folder "
                     f"`bench run` wrote to, or run `python -m bench run suite={item}{where}` first")


def list_suites() -> dict[str, str]:
    out = {}
    for name, f in suite_files().items():
        try:
            out[name] = str(read_suite_yaml(f).get("description", "")).strip()
        except BenchError as e:
            out[name] = f"(invalid: {e})"
    return out
