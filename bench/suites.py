"""Suites: YAML files under ``suites/`` (the working directory's, then the built-in ones), validated on load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bench.config import SuiteConfig, explain
from bench.errors import BenchError, did_you_mean

PACKAGE = Path(__file__).resolve().parent


def builtin_dir(kind: str) -> Path:
    """The built-in ``suites`` or ``strategies`` folder: ``bench/_builtin/<kind>`` in an installed wheel, the top-level
    ``<kind>/`` folder beside the package in a source checkout (an editable install or ``PYTHONPATH``)."""
    installed = PACKAGE / "_builtin" / kind
    return installed if installed.is_dir() else PACKAGE.parent / kind


def user_dirs(kind: str, extra: list[str | Path] | tuple = ()) -> list[Path]:
    """``./<kind>`` of the working directory (when it exists and is not the built-in folder), then ``extra``."""
    cwd = Path.cwd() / kind
    first = [cwd] if cwd.is_dir() and cwd.resolve() != builtin_dir(kind).resolve() else []
    return first + [Path(e) for e in extra]


def where(path: Path, kind: str) -> str:
    """Where a suite or strategy file was found, for ``bench list``: ``built-in``, ``./suites`` or its folder."""
    folder = path.resolve().parent
    if folder == builtin_dir(kind).resolve() or folder.is_relative_to(PACKAGE):
        return "built-in"
    try:
        return f"./{folder.relative_to(Path.cwd().resolve())}"
    except ValueError:
        return str(folder)


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


def list_suites() -> dict[str, str]:
    out = {}
    for name, f in suite_files().items():
        try:
            out[name] = str(read_suite_yaml(f).get("description", "")).strip()
        except BenchError as e:
            out[name] = f"(invalid: {e})"
    return out
