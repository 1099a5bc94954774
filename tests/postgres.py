"""A throwaway PostgreSQL server for tests: ``initdb`` in a temporary folder, password authentication, loopback only.

    with postgres_server() as pg:
        url = pg.create_database("bench")   # postgresql+psycopg://bench:<password>@127.0.0.1:<port>/bench

The server binaries (``initdb``, ``pg_ctl``) come from ``pg_config --bindir`` or ``/usr/lib/postgresql/*/bin``
(Debian/Ubuntu's ``postgresql`` package). When they are missing, :func:`postgres_server` raises
:class:`PostgresUnavailable`; the pytest fixture in tests/test_postgres.py turns that into a skip with the reason, or a
failure when ``CI=true`` (CI must run the test). ``initdb`` refuses to run as root: as root, the server runs as the
``postgres`` system user (``runuser``), which owns the temporary folder.

The server listens on 127.0.0.1 only, on a free port, with its unix socket inside the temporary folder (nothing of
a system PostgreSQL is touched), without fsync (a test database), and is stopped with ``pg_ctl -m immediate``.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

USER = "bench"
MISSING = "PostgreSQL server binaries not found (initdb); apt install postgresql to run this test"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (or no user to run them as)."""


def find_bindir() -> Path | None:
    """The folder that holds ``initdb`` and ``pg_ctl``: ``pg_config --bindir`` (which may be a client-only
    install), else the newest ``/usr/lib/postgresql/<version>/bin``."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout
            if out.strip():
                candidates.append(Path(out.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(p: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", Path(p).parent.parent.name)) or (0,)

    candidates += [Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version,
                                                    reverse=True)]
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    root: Path  # the temporary folder: data/, the socket, the log
    port: int
    password: str
    as_user: str | None  # run the server binaries as this user (when we are root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", password: str | None = None, driver: str = "psycopg") -> str:
        pw = self.password if password is None else password
        return f"postgresql+{driver}://{USER}:{pw}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres", **kwargs):
        """A psycopg connection over TCP with the password (what the URLs use)."""
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password,
                               dbname=database, connect_timeout=10, **kwargs)

    def create_database(self, name: str) -> str:
        """Create database ``name`` (owned by the superuser) and return its SQLAlchemy URL."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _")
        with self.connect(autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def tables(self, database: str) -> list[str]:
        with self.connect(database) as conn:
            rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    # ---------------------------------------------------------------------------------------------- lifecycle

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", self.as_user, "--", *args] if self.as_user else list(args)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        # stdin/stdout not inherited: the postmaster that pg_ctl forks must not hold the caller's pipes open
        return subprocess.run(self._cmd(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def _check(self, what: str, res: subprocess.CompletedProcess) -> None:
        if res.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{what} failed (exit {res.returncode}):\n{res.stdout}{res.stderr}\n{log}")

    def init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_user:
            shutil.chown(pwfile, self.as_user)
        pwfile.chmod(0o600)
        self._check("initdb", self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
            "-A", "scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions", timeout=120))
        pwfile.unlink()

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._check("pg_ctl start", self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                                              "-o", opts, "-w", "-t", "60", "start", timeout=90))

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        res = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "30",
                        "stop", timeout=60)
        if res.returncode != 0 and (self.data / "postmaster.pid").exists():  # last resort: the postmaster's pid
            try:
                os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), 9)
            except (OSError, ValueError, IndexError):
                pass


def missing() -> str | None:
    """Why no server can be started here (no binaries, or root without a user to run them as); None if it can."""
    if find_bindir() is None:
        return MISSING
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return ("running as root and there is no 'postgres' user to run initdb as (initdb refuses root); "
                    "apt install postgresql creates it")
        if shutil.which("runuser") is None:
            return "running as root without runuser (util-linux) to run initdb as 'postgres'"
    return None


@contextmanager
def postgres_server(tries: int = 3) -> Iterator[PostgresServer]:
    """Start a throwaway server, yield it, stop it and delete its folder. Raises PostgresUnavailable (with the
    reason of :func:`missing`) when none can be started here."""
    reason = missing()
    if reason is not None:
        raise PostgresUnavailable(reason)
    bindir = find_bindir()
    assert bindir is not None
    as_user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))  # short: a unix socket path is at most ~107 bytes
    if as_user:
        shutil.chown(root, as_user, as_user)
    server = PostgresServer(bindir, root, 0, secrets.token_hex(12), as_user)
    try:
        server.init()
        for attempt in range(tries):  # another process may take the free port between the probe and the start
            server.port = free_port()
            try:
                server.start()
                break
            except RuntimeError:
                if attempt == tries - 1:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
