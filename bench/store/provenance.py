"""What produced a stage or a record: the code version (package version plus git commit) and the versions of the
libraries whose behaviour can change a result."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit of the source tree (``+dirty`` when it has uncommitted changes)."""
    from importlib.metadata import version

    try:
        v = version("mtbench")
    except Exception:  # pragma: no cover - running from a source tree without install
        v = "0+unknown"
    root = Path(__file__).resolve().parents[2]  # the source tree: bench/store/ is two levels down
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if sha:
            v += f"+g{sha}" + (".dirty" if dirty else "")
    except Exception:
        pass
    return v


PROVENANCE_LIBRARIES = ("torch", "transformers", "timm", "numpy", "scikit-learn", "scipy", "tokenizers", "safetensors")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour can change a result (absent ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PROVENANCE_LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def provenance() -> dict[str, Any]:
    """What produced a stage or a record: the code version and the library versions."""
    return {"code_version": code_version(), "versions": library_versions()}
