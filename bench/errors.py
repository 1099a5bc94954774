"""User-facing errors.

A :class:`BenchError` is bad input or an unmet precondition that the user can fix. The CLI prints its message on
one line and exits with code 2, without a traceback; a :class:`StoreError` (the disk is full, read-only or not
ours) is printed the same way and exits 1. Anything else is a bug and keeps its traceback.
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


class StoreError(BenchError):
    """The results store could not be written: out of disk space or quota, a read-only file system, no permission,
    a short write. A BenchError (one line, no traceback; code that passes BenchErrors through passes it too), but
    not bad input: the same command works on a sound disk, so the CLI exits 1, not 2. The message says what failed,
    the space free versus what the run needs, what was kept, and what to do (:func:`bench.store.as_store_error`)."""

    def __init__(self, message: str, *, path: str = "", errno: int | None = None, free: int | None = None,
                 needed: int | None = None):
        super().__init__(message)
        self.path, self.errno, self.free, self.needed = path, errno, free, needed


class BenchWarning(UserWarning):
    """A warning of bench's own (a damaged entry moved aside, a record skipped): the CLI prints it as one line."""


class StoreWarning(BenchWarning):
    """The store healed itself: a damaged entry was moved to quarantine and is recomputed, or space is short."""

