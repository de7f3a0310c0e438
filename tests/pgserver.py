"""A private, throwaway PostgreSQL server for fault-injection tests.

The fault tests stop and restart PostgreSQL, which must never happen to the
shared server on 5432 that other tests use. :func:`start_postgres` runs
``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/*/bin`` on a temporary
data directory, a free loopback port and a Unix socket directory inside the
data directory, with ``trust`` authentication.

PostgreSQL refuses to run as root, so when the tests run as root the server
runs as the ``postgres`` OS user (through ``runuser``), and the temporary
directory is handed to that user. Call :func:`need_postgres` first: it skips
locally, and fails under ``CI=true``, when the binaries are missing.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from . import servers


def _bindir() -> str | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl."""
    found = [
        d
        for d in glob.glob("/usr/lib/postgresql/*/bin")
        if os.access(os.path.join(d, "initdb"), os.X_OK)
        and os.access(os.path.join(d, "pg_ctl"), os.X_OK)
    ]
    if not found:
        initdb = shutil.which("initdb")
        return os.path.dirname(initdb) if initdb and shutil.which("pg_ctl") else None
    return sorted(
        found, key=lambda d: [int(x) for x in d.split("/")[-2].split(".") if x.isdigit()]
    )[-1]


BINDIR = _bindir()


def _run_as() -> list[str]:
    """The command prefix that runs a program as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def available() -> bool:
    """Whether a private server can be started here."""
    if BINDIR is None:
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
        return shutil.which("runuser") is not None
    return True


def need_postgres() -> None:
    """Skip locally, fail under CI, when no private PostgreSQL can be started."""
    servers.need(available(), "initdb and pg_ctl (package postgresql) and a 'postgres' OS user")


@dataclass
class PgServer:
    """A running private PostgreSQL server."""

    datadir: str
    sockdir: str
    port: int
    logfile: str

    @property
    def url(self) -> str:
        """A SQLAlchemy URL for psycopg, over TCP on loopback."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        assert BINDIR is not None
        subprocess.run(
            [*_run_as(), os.path.join(BINDIR, "pg_ctl"), "-D", self.datadir, *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        opts = (
            f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1"
            " -c fsync=on -c max_connections=60 -c shared_buffers=16MB"
        )
        self._pg_ctl("-l", self.logfile, "-o", opts, "-w", "-t", "60", "start")
        servers._wait_port(self.port, 30)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (disconnect clients) or ``immediate`` (crash-like)."""
        self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        return servers.port_open("127.0.0.1", self.port, 0.2)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
                self.stop("immediate")
        shutil.rmtree(os.path.dirname(self.datadir), ignore_errors=True)


def start_postgres() -> PgServer:
    """Initialise and start a private server on a free loopback port."""
    assert BINDIR is not None
    base = tempfile.mkdtemp(prefix="ploy-pg-")
    datadir = os.path.join(base, "data")
    sockdir = os.path.join(base, "sock")
    os.makedirs(sockdir)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for d in (base, sockdir):
            os.chown(d, user.pw_uid, user.pw_gid)
        os.chmod(base, 0o700)
    subprocess.run(
        [
            *_run_as(),
            os.path.join(BINDIR, "initdb"),
            "-D",
            datadir,
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    server = PgServer(datadir, sockdir, servers.free_port(), os.path.join(base, "server.log"))
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


@contextlib.contextmanager
def postgres() -> Iterator[PgServer]:
    """A private server for the duration of the block."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.destroy()


def wait_until(predicate: object, timeout: float, interval: float = 0.05) -> bool:
    """Poll *predicate* (a callable) until it returns true or *timeout* passes."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
