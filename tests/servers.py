"""Real servers for the tests: probes for the machine's services, and
throwaway Redis Cluster / Sentinel / standalone servers on free loopback ports.

A test that needs a service that is absent skips locally and fails under
``CI=true`` (see :func:`need`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

REDIS_URL = os.environ.get("PLOY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get(
    "PLOY_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("PLOY_TEST_MARIADB_URL", "mariadb+pymysql://root@127.0.0.1:3306/test")


def need_module(name: str, what: str | None = None) -> Any:
    """Import *name*, or skip (locally) / fail (CI) as :func:`need` does."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        need(False, what or f"the Python package {name}")


def need(ok: bool, what: str) -> None:
    """Skip (locally) or fail (CI) when a service is missing."""
    if ok:
        return
    if CI:
        pytest.fail(f"{what} is not available, and CI=true requires it", pytrace=False)
    pytest.skip(f"{what} is not available")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def _ephemeral_low() -> int:
    """The first port the kernel hands out for outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A free loopback port whose Redis Cluster bus port (+10000) is free too.

    Both lie below the ephemeral range, so no outgoing connection of this
    machine can take one between this check and the server's bind. Another
    test run may still pick the same port at the same moment:
    :func:`start_redis` then retries on another.
    """
    import random

    high = _ephemeral_low() - 10000
    low, high = (10000, high) if high > 11000 else (20000, 45000)
    for _ in range(200):
        port = random.randrange(low, high)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


_probed: dict[str, bool] = {}


def redis_ok() -> bool:
    if "redis" not in _probed:
        import redis

        try:
            redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
            _probed["redis"] = True
        except Exception:
            _probed["redis"] = False
    return _probed["redis"]


def sql_ok(url: str) -> bool:
    if url not in _probed:
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            engine.dispose()
            _probed[url] = True
        except Exception:
            _probed[url] = False
    return _probed[url]


ROOT = Path(__file__).resolve().parent.parent
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")
REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


@dataclass
class RedisProc:
    """A redis-server started by the tests."""

    port: int
    proc: subprocess.Popen[bytes]
    dir: str
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.proc = _spawn(self.port, self.dir, self.args)
        _wait_ready(self.proc, self.port)


class PortTaken(RuntimeError):
    """The server exited at start: another process had its port (or bus port)."""


def _spawn(port: int, workdir: str, extra: list[str]) -> subprocess.Popen[bytes]:
    assert REDIS_SERVER is not None
    cmd = [
        REDIS_SERVER,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
        "--loglevel",
        "warning",
        *extra,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something listens on *port*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port, 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> None:
    """Wait until *proc* listens on *port*; :class:`PortTaken` if it exits
    (a port already in use is the usual reason)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PortTaken(f"redis-server on port {port} exited with {proc.returncode}")
        if port_open("127.0.0.1", port, 0.2):
            time.sleep(0.05)  # a server that failed to bind exits within milliseconds
            if proc.poll() is None:
                return
            raise PortTaken(f"port {port} is another process's")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server on port {port} did not start")


def start_redis(extra: list[str] | None = None, port: int | None = None) -> RedisProc:
    """Start a standalone redis-server on a free loopback port (on *port* if
    given), retrying on another port if a concurrent run took the one chosen."""
    for attempt in range(5):
        chosen = port or free_port()
        workdir = tempfile.mkdtemp(prefix="ploy-redis-")
        proc = _spawn(chosen, workdir, extra or [])
        try:
            _wait_ready(proc, chosen)
        except PortTaken:
            if port is not None or attempt == 4:
                raise
            continue
        return RedisProc(chosen, proc, workdir, extra or [])
    raise AssertionError("unreachable")


@dataclass
class Cluster:
    """A Redis Cluster started by the tests: its URL and its master processes."""

    url: str
    nodes: list[RedisProc]


@contextlib.contextmanager
def redis_cluster(masters: int = 3, extra: list[str] | None = None) -> Iterator[Cluster]:
    """A real Redis Cluster of *masters* masters on loopback, without replicas.

    *extra* goes to every node (e.g. ``--cluster-require-full-coverage no``).
    """
    procs = [
        start_redis(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                *(extra or []),
            ]
        )
        for _ in range(masters)
    ]
    try:
        assert REDIS_CLI is not None
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p.port}" for p in procs),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        import redis

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            infos = [redis.Redis(port=p.port).cluster("info") for p in procs]
            if all(i.get("cluster_state") == "ok" for i in infos):
                break
            time.sleep(0.1)
        else:  # pragma: no cover
            raise RuntimeError("the Redis Cluster did not become ok")
        yield Cluster("redis+cluster://" + ",".join(f"127.0.0.1:{p.port}" for p in procs), procs)
    finally:
        for p in procs:
            if p.proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.kill(p.proc.pid, signal.SIGCONT)  # in case a test stopped it
            p.kill()


@contextlib.contextmanager
def redis_sentinel() -> Iterator[str]:
    """One Redis master watched by one Sentinel; yields the sentinel URL."""
    master = start_redis()
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="ploy-sentinel-")
    conf = os.path.join(workdir, "sentinel.conf")
    with open(conf, "w") as f:
        f.write(
            f"port {port}\nbind 127.0.0.1\ndir {workdir}\nprotected-mode no\n"
            f"sentinel monitor ploymaster 127.0.0.1 {master.port} 1\n"
            "sentinel down-after-milliseconds ploymaster 5000\n"
        )
    assert REDIS_SERVER is not None
    proc = subprocess.Popen(
        [REDIS_SERVER, conf, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_ready(proc, port)
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                addr = redis.Redis(port=port).execute_command(
                    "SENTINEL", "get-master-addr-by-name", "ploymaster"
                )
                if addr:
                    break
            time.sleep(0.1)
        yield f"redis+sentinel://127.0.0.1:{port}/ploymaster"
    finally:
        proc.kill()
        proc.wait(5)
        master.kill()


class HungServer:
    """A TCP server that accepts connections and never replies."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        #: ``time.monotonic()`` of each accept (the clock is the machine's:
        #: comparable with another process's).
        self.accepted_at: list[float] = []
        import threading

        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted_at.append(time.monotonic())
            self.accepted.append(conn)

    def probes(self, timeout: float, cooldown: float) -> tuple[int, float]:
        """How many connections came after the first wave, and the shortest
        time between two of them (``inf`` for fewer than two), in seconds.

        A client that times out drops its connection, so each probe of a
        half-open breaker is a new connection here: two probes at once are
        two connections close together, whatever the clients' scheduling. The
        first wave is every connection made before the breaker could open
        (within *timeout* of the first, plus half a *cooldown* for a client
        admitted just before it opened).
        """
        times = sorted(self.accepted_at)
        later = [t for t in times if times and t >= times[0] + timeout + cooldown / 2]
        gaps = [b - a for a, b in itertools.pairwise(later)]
        return len(later), min(gaps, default=float("inf"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        for c in self.accepted:
            c.close()
        self.sock.close()


# -- HTTP and gunicorn ---------------------------------------------------------


def http_json(
    base: str, path: str, data: dict[str, str] | None = None, timeout: float = 10
) -> tuple[int, Any]:
    """GET (or POST *data*) and return ``(status, decoded JSON)``."""
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    try:
        with urllib.request.urlopen(base + path, data=body, timeout=timeout) as r:  # noqa: S310
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, text


def sync_workers_answer(base: str, workers: int, timeout: float = 60) -> set[int]:
    """Wait until *workers* gunicorn sync workers each answer ``/whoami``; return their pids.

    Each of *workers* connections sends half a request, so a sync worker that
    accepts one is busy with it and the next is left to another worker; then
    all are finished. A worker still booting leaves two answers to one pid:
    the round is tried again until *timeout* (seconds) has passed.
    """
    host, port = urllib.parse.urlsplit(base).netloc.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while True:
        socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(workers)]
        try:
            for sock in socks:
                sock.sendall(b"GET /whoami HTTP/1.0\r\nHost: " + host.encode() + b"\r\n")
                time.sleep(0.1)  # accepted and blocked on before the next is sent
            pids = set()
            for sock in socks:
                sock.sendall(b"\r\n")
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                pids.add(int(json.loads(answer.partition(b"\r\n\r\n")[2])["pid"]))
        finally:
            for sock in socks:
                sock.close()
        if len(pids) == workers:
            return pids
        assert time.monotonic() < deadline, f"{workers} workers did not all answer: {pids}"
        time.sleep(0.2)


@contextlib.contextmanager
def gunicorn(
    tmp_path: Path, env: dict[str, str], *args: str, app: str = "example_app:create_app()"
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Serve *app* with gunicorn on a free loopback port; yield (base URL, process)."""
    need(os.path.exists(GUNICORN), "gunicorn in the virtualenv")
    stray = [k for k in env if k.startswith("PLOY_")]
    assert not stray, f"the example app reads FLASK_PLOY_* variables, not {stray}"
    port = free_port()
    logpath = tmp_path / f"gunicorn-{port}.log"
    log = open(logpath, "ab")  # noqa: SIM115 - closed below; a port used again appends
    pythonpath = os.pathsep.join([str(ROOT), str(tmp_path), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [
            GUNICORN,
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "30",
            "--graceful-timeout",
            "2",
            *args,
            app,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port, 0.2):
            assert proc.poll() is None, logpath.read_text()
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        # The master listens before the workers have booted: wait for an answer,
        # so the timings below measure the app, not gunicorn's start-up.
        while http_json(base, "/whoami", timeout=10)[0] != 200:
            assert time.monotonic() < deadline, "gunicorn did not answer"
            time.sleep(0.05)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
