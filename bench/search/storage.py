"""Optuna storages for ``bench search``: RDB URLs and journal files, both with a heartbeat.

``storage=`` takes

* any SQLAlchemy URL Optuna's ``RDBStorage`` accepts: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
  ``postgresql://user:pass@host/db``, ``mysql+pymysql://...``;
* ``journal:<path>`` for Optuna's journal file storage (an append-only log; good on NFS and for many processes on
  one machine): ``journal:results/x.log`` (relative) or ``journal:///abs/x.log`` (absolute).

Every storage gets a heartbeat: a running trial records one every ``heartbeat`` seconds, and a trial whose last
heartbeat is older than the grace period (3 heartbeats) is failed by the next worker that looks, which enqueues a
copy with the same parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``, at most 3 retries). RDB storages have
this built in; Optuna 5's journal storage has none, so :class:`HeartbeatJournalStorage` adds it, recording the
heartbeat as a trial system attribute (wall-clock time: machines sharing one journal need roughly synchronised
clocks, as with RDB heartbeats).
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

from bench.errors import BenchError

HEARTBEAT_ATTR = "bench:heartbeat"
MAX_RETRY = 3


def redact(url: str) -> str:
    """The URL without its password (it is printed and written to outputs)."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def journal_path(url: str) -> Path:
    rest = url[len("journal:"):]
    if rest.startswith("//"):  # journal:///abs/path -> /abs/path (the URL form); journal://x -> x
        rest = rest[2:]
    if not rest:
        raise BenchError(f"storage={url!r}: give a file, e.g. journal:results/search.log or journal:///abs/x.log")
    return Path(rest)


def _journal_class():
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        """Optuna's journal storage plus the heartbeat protocol that RDBStorage implements."""

        def __init__(self, backend: Any, heartbeat_interval: int, grace_period: int, callback: Any):
            super().__init__(backend)
            self.heartbeat_interval, self.grace_period, self.callback = heartbeat_interval, grace_period, callback

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            stale = []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                # a retried trial inherits its original's system attributes (an old heartbeat): also count its start
                start = t.datetime_start.timestamp() if t.datetime_start else now
                last = max(float(t.system_attrs.get(HEARTBEAT_ATTR, 0.0)), start)
                if now - last > self.grace_period:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self):
            return self.callback

    return HeartbeatJournalStorage


def open_storage(url: str, heartbeat: int) -> Any:
    """Open (creating if needed) the storage at ``url``; one-line BenchError when it cannot be reached."""
    import optuna

    grace = 3 * heartbeat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        try:
            if url.startswith("journal:"):
                from optuna.storages.journal import JournalFileBackend

                path = journal_path(url)
                path.parent.mkdir(parents=True, exist_ok=True)
                return _journal_class()(JournalFileBackend(str(path)), heartbeat, grace, retry)
            if "://" not in url:
                raise BenchError(f"storage={url!r} is not a storage URL; use sqlite:///path.db, postgresql://..., "
                                 "mysql://... or journal:path.log")
            kwargs: dict[str, Any] = {}
            if url.startswith("sqlite:"):
                db = url.split(":///", 1)[-1]
                if db and db != ":memory:":
                    Path(db).parent.mkdir(parents=True, exist_ok=True)
                # several processes write one SQLite file: wait for the lock rather than fail at once
                kwargs["connect_args"] = {"timeout": 60}
            elif url.startswith(("postgresql", "mysql")):
                kwargs["connect_args"] = {"connect_timeout": 10}
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat,
                                              grace_period=grace, heartbeat_stale_trial_callback=retry)
        except BenchError:
            raise
        except ModuleNotFoundError as e:
            raise BenchError(f"cannot open storage {redact(url)}: the database driver is not installed "
                             f"({e}); pip install it (e.g. psycopg2-binary for PostgreSQL)") from None
        except Exception as e:  # sqlalchemy OperationalError, ArgumentError, OSError, ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BenchError(f"cannot open storage {redact(url)}: {type(e).__name__}: {first}") from None
