"""User-facing errors.

A :class:`BenchError` is bad input or an unmet precondition that the user can fix. The CLI prints its message on
one line and exits with code 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """Bad input with a one-line explanation that names the bad value and the fix."""


class CellFailed(Exception):
    """A cell failed at run time (e.g. a NaN loss); the other cells still run and their results are kept."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown(kind: str, value: str, choices: Iterable[str]) -> BenchError:
    """The standard error for a name that is not in a registry."""
    choices = sorted(choices)
    return BenchError(f"unknown {kind} {value!r}{did_you_mean(value, choices)}; valid: {', '.join(choices)}")
