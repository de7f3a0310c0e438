"""Replicated and sharded servers for the scale-out tests, on free loopback ports.

Every server here is private to the test that starts it: its own data
directory under a temporary folder, its own ports (:func:`free_port`, below
the ephemeral range), in its own process group so teardown can kill it and
everything it spawned. The
shared Redis (6379), PostgreSQL (5432) and MariaDB (3306) are never touched.

- :func:`redis_sentinel_ha`: 1 master, 2 replicas, 3 sentinels (quorum 2,
  down-after 1 s).
- :func:`redis_cluster_ha`: 3 masters and 3 replicas; returns only once
  every replica's link to its master is up (else no failover happens).
- :func:`postgres_sync_pair`: a primary and a synchronous standby, and the
  libpq multi-host URL that finds whichever is writable.
- :func:`patroni_pair`: etcd and two PostgreSQL managed by Patroni in
  synchronous mode.
- :func:`galera_cluster`: 3 MariaDB Galera nodes (rsync SST), run as the
  ``mysql`` user.
- :func:`spider_cluster`: a MariaDB Spider front with 2 shards.

Missing binaries skip locally and fail under ``CI=true`` (``servers.need``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import pgserver, servers

# -- ports and processes ----------------------------------------------------------------


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768 and up).

    These servers are restarted on the same port after a kill; a port in the
    ephemeral range may meanwhile be taken by any outgoing connection of the
    load (seen: "Address already in use" on a Spider shard's restart).
    """
    import random

    for _ in range(500):
        port = random.randint(20000, 32000)
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.1,
) -> Any:
    """Poll *predicate* until it returns something true; raise after *timeout*."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the server is not up yet
            last = exc
        if time.monotonic() > deadline:
            text = what() if callable(what) else what
            raise RuntimeError(f"{text} within {timeout:g} s (last error: {last!r})")
        time.sleep(interval)


def children(pid: int) -> list[int]:
    """Every descendant of *pid* (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = Path(stat).read_text()
            ppid = int(text.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(stat.split("/")[2]))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Send *sig* to *pid* and all its descendants at once (a machine crash)."""
    for p in [pid, *children(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


@dataclass
class Proc:
    """A server process started in a process group of its own."""

    name: str
    args: list[str]
    log: str
    user: str | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        prefix = ["runuser", "-u", self.user, "--"] if self.user and os.geteuid() == 0 else []
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                [*prefix, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # Another user may not enter the checkout (a clone made by
                # mktemp -d is 0700): initdb then fails to find its cwd.
                cwd="/" if prefix else None,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (runuser, the server, its helpers)."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        kill_tree(self.popen.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def tail(self, n: int = 80) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(Path(self.log).read_text(errors="replace").splitlines()[-n:])
        return ""


class Stack:
    """Processes and folders to clean up, newest first."""

    def __init__(self, prefix: str) -> None:
        self.base = tempfile.mkdtemp(prefix=prefix)
        # The servers run as their own OS users (postgres, mysql), who must reach
        # their folders inside this one.
        os.chmod(self.base, 0o755)  # noqa: S103
        self.procs: list[Proc] = []

    def path(self, *parts: str) -> str:
        p = os.path.join(self.base, *parts)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        return p

    def spawn(self, name: str, args: list[str], user: str | None = None) -> Proc:
        proc = Proc(name, args, self.path("logs", f"{name}.log"), user).start()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
        shutil.rmtree(self.base, ignore_errors=True)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.procs)


def chown(path: str, user: str) -> None:
    """Hand *path* (recursively) to OS user *user* when running as root."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, pw.pw_uid, pw.pw_gid)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# -- Redis --------------------------------------------------------------------------------


def need_redis() -> None:
    servers.need(bool(servers.REDIS_SERVER and servers.REDIS_CLI), "redis-server and redis-cli")


def _redis(port: int) -> Any:
    import redis

    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)


def _info(port: int, section: str = "replication") -> dict[str, Any]:
    info: dict[str, Any] = _redis(port).info(section)
    return info


@dataclass
class SentinelHA:
    """A master, its replicas and the sentinels watching them."""

    name: str
    nodes: list[servers.RedisProc]
    sentinel_ports: list[int]
    sentinels: list[Proc] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.name}/0"

    def master_port(self) -> int:
        """The master's port as the sentinels see it now."""
        for port in self.sentinel_ports:
            with contextlib.suppress(Exception):
                addr = _redis(port).execute_command(
                    "SENTINEL", "get-master-addr-by-name", self.name
                )
                return int(addr[1])
        raise RuntimeError("no sentinel answered")

    def node(self, port: int) -> servers.RedisProc:
        return next(n for n in self.nodes if n.port == port)


@contextlib.contextmanager
def redis_sentinel_ha(replicas: int = 2, sentinels: int = 3) -> Iterator[SentinelHA]:
    """1 master, *replicas* replicas, *sentinels* sentinels (quorum 2, down-after 1 s)."""
    need_redis()
    stack = Stack("ploy-sentinel-")
    nodes: list[servers.RedisProc] = []
    try:
        master = servers.start_redis()
        nodes.append(master)
        for _ in range(replicas):
            nodes.append(servers.start_redis(["--replicaof", "127.0.0.1", str(master.port)]))
        wait_until(
            lambda: all(_info(n.port).get("master_link_status") == "up" for n in nodes[1:]),
            20,
            "the replicas did not sync",
        )
        ha = SentinelHA("ploymaster", nodes, [free_port() for _ in range(sentinels)])
        for i, port in enumerate(ha.sentinel_ports):
            conf = stack.path(f"sentinel{i}", "sentinel.conf")
            Path(conf).write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\n"
                f"dir {os.path.dirname(conf)}\n"
                f"sentinel monitor {ha.name} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {ha.name} 1000\n"
                f"sentinel failover-timeout {ha.name} 10000\n"
                f"sentinel parallel-syncs {ha.name} 2\n"
            )
            assert servers.REDIS_SERVER is not None
            ha.sentinels.append(
                stack.spawn(f"sentinel{i}", [servers.REDIS_SERVER, conf, "--sentinel"])
            )

        def ready() -> bool:
            for port in ha.sentinel_ports:
                state = _redis(port).sentinel_master(ha.name)
                if int(state["num-other-sentinels"]) < sentinels - 1:
                    return False
                if int(state["num-slaves"]) < replicas:
                    return False
            return True

        wait_until(ready, 30, "the sentinels did not find each other and the replicas")
        yield ha
    finally:
        for n in nodes:
            n.kill()
            shutil.rmtree(n.dir, ignore_errors=True)
        stack.close()


@dataclass
class ClusterHA:
    """A Redis Cluster with a replica per master."""

    nodes: list[servers.RedisProc]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def roles(self) -> dict[int, str]:
        return {n.port: _info(n.port)["role"] for n in self.nodes if n.proc.poll() is None}

    def replicas_up(self) -> bool:
        infos = [_info(n.port) for n in self.nodes if n.proc.poll() is None]
        replicas = [i for i in infos if i["role"] == "slave"]
        return len(replicas) == len(self.nodes) // 2 and all(
            i.get("master_link_status") == "up" for i in replicas
        )

    def cluster_ok(self) -> bool:
        return all(
            _redis(n.port).cluster("info").get("cluster_state") == "ok"
            for n in self.nodes
            if n.proc.poll() is None
        )


@contextlib.contextmanager
def redis_cluster_ha(masters: int = 3) -> Iterator[ClusterHA]:
    """*masters* masters and as many replicas; yields once every replica is in sync."""
    need_redis()
    flags = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
    ]
    nodes: list[servers.RedisProc] = []
    try:
        nodes = [servers.start_redis(flags) for _ in range(masters * 2)]
        assert servers.REDIS_CLI is not None
        subprocess.run(
            [
                servers.REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        ha = ClusterHA(nodes)
        wait_until(ha.cluster_ok, 30, "the cluster did not become ok")
        # A replica that has not finished its first sync cannot take over.
        wait_until(ha.replicas_up, 30, "the replicas did not sync")
        yield ha
    finally:
        for n in nodes:
            n.kill()
            shutil.rmtree(n.dir, ignore_errors=True)


# -- PostgreSQL -----------------------------------------------------------------------------


def need_postgres() -> None:
    pgserver.need_postgres()
    assert pgserver.BINDIR is not None
    servers.need(
        os.access(os.path.join(pgserver.BINDIR, "pg_basebackup"), os.X_OK), "pg_basebackup"
    )


def _pg_bin(name: str) -> str:
    assert pgserver.BINDIR is not None
    return os.path.join(pgserver.BINDIR, name)


def _as_postgres() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class PgNode:
    """One PostgreSQL server of a replicated pair, started with extra settings."""

    datadir: str
    port: int
    logfile: str
    settings: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        opts = " ".join(
            [
                f"-p {self.port} -k {os.path.dirname(self.datadir)}/sock",
                "-c listen_addresses=127.0.0.1 -c max_connections=60 -c shared_buffers=16MB",
                "-c wal_level=replica -c max_wal_senders=5 -c wal_keep_size=64MB",
                *(f"-c {k}={v}" for k, v in self.settings.items()),
            ]
        )
        subprocess.run(
            [*_as_postgres(), _pg_bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile]
            + ["-o", opts, "-w", "-t", "60", "start"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=90,
        )

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(Path(self.datadir, "postmaster.pid").read_text().split()[0])
        return None

    def crash(self) -> None:
        """kill -9 the postmaster and every backend: a machine crash."""
        pid = self.postmaster_pid()
        if pid is not None:
            kill_tree(pid)
            wait_until(lambda: not servers.port_open("127.0.0.1", self.port, 0.1), 10, "still up")
            # The killed postmaster may linger as a zombie (nobody reaps it in a
            # container), and a restart would take its lock files for live ones.
            sockdir = os.path.join(os.path.dirname(self.datadir), "sock")
            for stale in [
                os.path.join(self.datadir, "postmaster.pid"),
                *glob.glob(os.path.join(sockdir, f".s.PGSQL.{self.port}*")),
            ]:
                with contextlib.suppress(OSError):
                    os.unlink(stale)

    def promote(self) -> None:
        subprocess.run(
            [*_as_postgres(), _pg_bin("pg_ctl"), "-D", self.datadir, "-w", "-t", "60", "promote"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=90,
        )

    def sql(self, text: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=3,
        ) as conn:
            cur = conn.execute(text)  # type: ignore[call-overload]
            return cur.fetchall() if cur.description else []

    def stop(self) -> None:
        pid = self.postmaster_pid()
        if pid is not None:
            kill_tree(pid)


@dataclass
class PgPair:
    """A primary and a synchronous standby."""

    primary: PgNode
    standby: PgNode

    def url(self, *nodes: PgNode, **query: str) -> str:
        """A libpq multi-host URL over *nodes* (default: primary, standby)
        that connects to whichever accepts writes."""
        hosts = "&".join(
            f"host=127.0.0.1:{n.port}" for n in (nodes or (self.primary, self.standby))
        )
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return (
            f"postgresql+psycopg://postgres@/postgres?{hosts}"
            f"&target_session_attrs=read-write{extra}"
        )


def _initdb(stack: Stack, name: str) -> str:
    base = stack.path(name, "x")
    base = os.path.dirname(base)
    os.makedirs(os.path.join(base, "sock"), exist_ok=True)
    chown(base, "postgres")
    os.chmod(base, 0o700)
    datadir = os.path.join(base, "data")
    subprocess.run(
        [*_as_postgres(), _pg_bin("initdb"), "-D", datadir, "-U", "postgres", "--auth=trust"]
        + ["--no-sync", "--encoding=UTF8", "--locale=C"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    return datadir


@contextlib.contextmanager
def postgres_sync_pair() -> Iterator[PgPair]:
    """A primary with ``synchronous_standby_names = '*'`` and one streaming standby.

    The setting is given to the primary on its command line only, so the
    standby does not inherit it: promoted, it runs alone without waiting.
    """
    need_postgres()
    stack = Stack("ploy-pgpair-")
    nodes: list[PgNode] = []
    try:
        pdir = _initdb(stack, "primary")
        primary = PgNode(
            pdir,
            free_port(),
            os.path.join(os.path.dirname(pdir), "server.log"),
            {"synchronous_standby_names": "'*'"},
        )
        primary.start()
        nodes.append(primary)
        sbase = os.path.dirname(stack.path("standby", "x"))
        os.makedirs(os.path.join(sbase, "sock"), exist_ok=True)
        chown(sbase, "postgres")
        os.chmod(sbase, 0o700)
        sdir = os.path.join(sbase, "data")
        subprocess.run(
            [*_as_postgres(), _pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port)]
            + [
                "-U",
                "postgres",
                "-D",
                sdir,
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )
        standby = PgNode(sdir, free_port(), os.path.join(sbase, "server.log"))
        standby.start()
        nodes.append(standby)
        wait_until(
            lambda: primary.sql("SELECT sync_state FROM pg_stat_replication") == [("sync",)],
            30,
            "the standby did not become synchronous",
        )
        yield PgPair(primary, standby)
    finally:
        for n in nodes:
            n.stop()
        stack.close()


# -- Patroni + etcd ---------------------------------------------------------------------------

PATRONI = shutil.which("patroni")
ETCD = shutil.which("etcd")


@dataclass
class PatroniNode:
    name: str
    pg_port: int
    api_port: int
    datadir: str
    proc: Proc

    def role(self) -> str | None:
        import json
        import urllib.request

        with contextlib.suppress(Exception):
            url = f"http://127.0.0.1:{self.api_port}/patroni"
            with urllib.request.urlopen(url, timeout=2) as r:
                return str(json.loads(r.read()).get("role"))
        return None

    def crash(self) -> None:
        """kill -9 Patroni and its PostgreSQL at once: the machine died."""
        pg = PgNode(self.datadir, self.pg_port, "").postmaster_pid()
        self.proc.kill()
        if pg is not None:
            kill_tree(pg)


@dataclass
class PatroniCluster:
    nodes: list[PatroniNode]

    @property
    def url(self) -> str:
        hosts = "&".join(f"host=127.0.0.1:{n.pg_port}" for n in self.nodes)
        return f"postgresql+psycopg://postgres@/postgres?{hosts}&target_session_attrs=read-write"

    def leader(self) -> PatroniNode | None:
        for n in self.nodes:
            if n.role() in ("master", "primary"):
                return n
        return None


def need_patroni() -> None:
    need_postgres()
    servers.need(bool(PATRONI and ETCD), "patroni and etcd (packages patroni, etcd-server)")


@contextlib.contextmanager
def patroni_pair(ttl: int = 20) -> Iterator[PatroniCluster]:
    """etcd and two PostgreSQL managed by Patroni, in synchronous mode.

    *ttl* is the leader lock's time to live (Patroni's minimum is 20 s): a
    crashed leader is replaced after about that long.
    """
    need_patroni()
    assert PATRONI is not None and ETCD is not None and pgserver.BINDIR is not None
    stack = Stack("ploy-patroni-")
    nodes: list[PatroniNode] = []
    try:
        client, peer = free_port(), free_port()
        etcd_dir = os.path.dirname(stack.path("etcd", "x"))
        stack.spawn(
            "etcd",
            [
                ETCD,
                "--name",
                "ploy",
                "--data-dir",
                os.path.join(etcd_dir, "data"),
                "--listen-client-urls",
                f"http://127.0.0.1:{client}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{client}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer}",
                "--initial-cluster",
                f"ploy=http://127.0.0.1:{peer}",
                "--enable-v2=true",
                "--logger=zap",
                "--log-level=warn",
            ],
        )
        wait_until(lambda: servers.port_open("127.0.0.1", client), 20, "etcd did not start")
        for i in range(2):
            base = os.path.dirname(stack.path(f"pg{i}", "x"))
            pg_port, api_port = free_port(), free_port()
            datadir = os.path.join(base, "data")
            conf = os.path.join(base, "patroni.yml")
            Path(conf).write_text(
                _patroni_yaml(
                    f"pg{i}", client, api_port, pg_port, datadir, pgserver.BINDIR, base, ttl
                )
            )
            chown(base, "postgres")
            os.chmod(base, 0o700)
            proc = stack.spawn(f"patroni{i}", [PATRONI, conf], user="postgres")
            nodes.append(PatroniNode(f"pg{i}", pg_port, api_port, datadir, proc))
            if i == 0:  # let the first bootstrap alone, then the second clones it
                wait_until(
                    lambda: (
                        nodes[0].role() in ("master", "primary")
                        and servers.port_open("127.0.0.1", nodes[0].pg_port)
                    ),
                    120,
                    lambda: "patroni did not bootstrap:\n" + stack.logs(),
                )
        cluster = PatroniCluster(nodes)

        def synced() -> bool:
            leader = cluster.leader()
            if leader is None:
                return False
            node = PgNode(leader.datadir, leader.pg_port, "")
            return node.sql("SELECT sync_state FROM pg_stat_replication") == [("sync",)]

        wait_until(synced, 60, lambda: "the replica did not become synchronous:\n" + stack.logs())
        yield cluster
    finally:
        for proc in stack.procs:
            proc.kill()
        for node in nodes:  # Patroni's postgres runs in a session of its own
            PgNode(node.datadir, node.pg_port, "").stop()
        stack.close()


def _patroni_yaml(
    name: str, etcd: int, api: int, pg: int, datadir: str, bindir: str, base: str, ttl: int
) -> str:
    return f"""\
scope: ploy
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: 1
    retry_timeout: 5
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 60
        shared_buffers: 16MB
        wal_keep_size: 64MB
  initdb:
    - encoding: UTF8
    - locale: C
    - no-sync
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {datadir}
  bin_dir: {bindir}
  pgpass: {base}/pgpass
  authentication:
    superuser:
      username: postgres
      password: ploy-test
    replication:
      username: postgres
      password: ploy-test
  parameters:
    unix_socket_directories: '{base}'
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication all 127.0.0.1/32 trust
tags:
  nofailover: false
  noloadbalance: false
"""


# -- MariaDB: Galera and Spider ------------------------------------------------------------------

MARIADBD = shutil.which("mariadbd") or (
    "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None
)
INSTALL_DB = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
GALERA = next(
    iter(
        glob.glob("/usr/lib/galera/libgalera_smm.so")
        + glob.glob("/usr/lib/*/galera*/libgalera_smm.so")
    ),
    None,
)
SPIDER = next(iter(glob.glob("/usr/lib/mysql/plugin/ha_spider.so")), None)
#: Small InnoDB files, so a data directory (and an rsync SST) is a few MB.
MARIADB_SMALL = [
    "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=32M",
    "--innodb-data-file-path=ibdata1:4M:autoextend",
]


def need_mariadb() -> None:
    servers.need(bool(MARIADBD and INSTALL_DB), "mariadbd and mariadb-install-db (mariadb-server)")
    servers.need(user_exists("mysql"), "the 'mysql' OS user")


@dataclass
class MariaNode:
    """One private mariadbd, run as the ``mysql`` user, admin over its socket."""

    name: str
    base: str
    port: int
    args: list[str]
    stack: Stack
    proc: Proc | None = None

    @property
    def datadir(self) -> str:
        return os.path.join(self.base, "data")

    @property
    def socket(self) -> str:
        return os.path.join(self.base, "mysqld.sock")

    @property
    def url(self) -> str:
        return f"mariadb+pymysql://ploy@127.0.0.1:{self.port}/ploy"

    def start(self, *extra: str, wait: float = 60) -> None:
        assert MARIADBD is not None
        self.proc = self.stack.spawn(
            self.name,
            [
                MARIADBD,
                "--no-defaults",
                "--user=mysql",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--pid-file={self.base}/mysqld.pid",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                f"--log-error={self.base}/error.log",
                *MARIADB_SMALL,
                *self.args,
                *extra,
            ],
        )
        wait_until(self.ready, wait, f"{self.name} did not start:\n{self.error_log()}")

    def ready(self) -> bool:
        assert self.proc is not None
        if not self.proc.alive():
            raise RuntimeError(f"{self.name} exited:\n{self.error_log()}")
        # PyMySQL leaks its socket when a Unix-socket connect is refused: probe first.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            try:
                probe.connect(self.socket)
            except OSError:
                return False
        self.sql("SELECT 1")
        return True

    def error_log(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(
                Path(self.base, "error.log").read_text(errors="replace").splitlines()[-25:]
            )
        return ""

    def sql(self, text: str, *, db: str | None = None) -> list[tuple[Any, ...]]:
        import pymysql

        conn = pymysql.connect(
            unix_socket=self.socket,
            user="root",
            database=db,
            connect_timeout=3,
            read_timeout=20,
            write_timeout=20,
            autocommit=True,
        )
        try:
            with conn.cursor() as cur:
                cur.execute(text)
                return list(cur.fetchall())
        finally:
            conn.close()

    def status(self, name: str) -> str | None:
        rows = self.sql(f"SHOW GLOBAL STATUS LIKE '{name}'")
        return str(rows[0][1]) if rows else None

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.kill()


def _template(stack: Stack) -> str:
    """A freshly initialised data directory to copy (mariadb-install-db once)."""
    assert INSTALL_DB is not None
    base = os.path.dirname(stack.path("template", "x"))
    chown(base, "mysql")
    datadir = os.path.join(base, "data")
    subprocess.run(
        [
            INSTALL_DB,
            "--no-defaults",
            "--user=mysql",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            *MARIADB_SMALL,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    return datadir


def _node(stack: Stack, template: str, name: str, args: list[str]) -> MariaNode:
    base = os.path.dirname(stack.path(name, "x"))
    shutil.copytree(template, os.path.join(base, "data"), symlinks=True)
    chown(base, "mysql")
    return MariaNode(name, base, free_port(), args, stack)


def _grant_ploy(node: MariaNode) -> None:
    node.sql("CREATE DATABASE IF NOT EXISTS ploy")
    node.sql("CREATE USER IF NOT EXISTS 'ploy'@'127.0.0.1'")
    node.sql("GRANT ALL ON *.* TO 'ploy'@'127.0.0.1'")


@dataclass
class Galera:
    nodes: list[MariaNode]

    def url(self, *nodes: MariaNode, **query: str) -> str:
        """A multi-host URL over *nodes* (default: all)."""
        nodes = nodes or tuple(self.nodes)
        hosts = "&".join(f"host=127.0.0.1:{n.port}" for n in nodes)
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"mariadb+pymysql://ploy@/ploy?{hosts}{extra}"

    def size(self, node: MariaNode) -> int:
        return int(node.status("wsrep_cluster_size") or 0)


def need_galera() -> None:
    need_mariadb()
    servers.need(bool(GALERA), "the Galera provider (package galera-4)")
    servers.need(bool(shutil.which("rsync")), "rsync, for Galera's SST")


@contextlib.contextmanager
def galera_cluster(n: int = 3) -> Iterator[Galera]:
    """*n* Galera nodes on loopback; the first bootstraps, the others join by rsync SST."""
    need_galera()
    stack = Stack("ploy-galera-")
    try:
        template = _template(stack)
        gports = [free_port() for _ in range(n)]
        address = "gcomm://" + ",".join(f"127.0.0.1:{p}" for p in gports)
        nodes: list[MariaNode] = []
        for i in range(n):
            ist, sst = free_port(), free_port()
            args = [
                "--wsrep-on=ON",
                f"--wsrep-provider={GALERA}",
                f"--wsrep-cluster-address={address}",
                "--wsrep-cluster-name=ploy",
                f"--wsrep-node-name=g{i}",
                f"--wsrep-node-address=127.0.0.1:{gports[i]}",
                f"--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{gports[i]};"
                f"ist.recv_addr=127.0.0.1:{ist};gcache.size=16M",
                "--wsrep-sst-method=rsync",
                f"--wsrep-sst-receive-address=127.0.0.1:{sst}",
                "--binlog-format=ROW",
                "--innodb-autoinc-lock-mode=2",
                "--innodb-flush-log-at-trx-commit=1",
            ]
            nodes.append(_node(stack, template, f"g{i}", args))
        nodes[0].start("--wsrep-new-cluster")
        _grant_ploy(nodes[0])
        for node in nodes[1:]:  # one at a time: each joiner takes an SST from a donor
            node.start(wait=90)
            wait_until(
                lambda node=node: node.status("wsrep_ready") == "ON", 60, f"{node.name} not ready"
            )
        cluster = Galera(nodes)
        wait_until(lambda: cluster.size(nodes[0]) == n, 30, "the cluster did not form")
        yield cluster
    finally:
        stack.close()


@dataclass
class Spider:
    front: MariaNode
    shards: list[MariaNode]

    @property
    def url(self) -> str:
        return self.front.url


def need_spider() -> None:
    need_mariadb()
    servers.need(bool(SPIDER), "the Spider engine (package mariadb-plugin-spider)")


#: The state table as flask-ploy creates it (flask_ploy/state/schema.py), for the shards.
#: A Spider front cannot add columns to its shards: both get every column.
STATE_TABLE = """CREATE TABLE {name} (
  resource VARCHAR(64) NOT NULL,
  `key` VARBINARY(512) NOT NULL,
  value LONGBLOB NOT NULL,
  metadata TEXT NULL,
  expires_at DOUBLE NULL,
  PRIMARY KEY (resource, `key`),
  KEY ix_{name}_expiry (resource, expires_at)
) {engine} DEFAULT CHARSET=utf8mb4"""


@contextlib.contextmanager
def spider_cluster(table: str = "ploy_state", shards: int = 2) -> Iterator[Spider]:
    """A Spider front whose *table* is hash-partitioned over *shards* shards."""
    need_spider()
    stack = Stack("ploy-spider-")
    try:
        template = _template(stack)
        nodes = [_node(stack, template, f"shard{i}", []) for i in range(shards)]
        for node in nodes:
            node.start()
            _grant_ploy(node)
            node.sql(STATE_TABLE.format(name=table, engine="ENGINE=InnoDB"), db="ploy")
        front = _node(stack, template, "front", ["--plugin-load-add=ha_spider.so"])
        front.start()
        _grant_ploy(front)
        for i, node in enumerate(nodes):
            front.sql(
                f"CREATE SERVER shard{i} FOREIGN DATA WRAPPER mysql OPTIONS"
                f" (HOST '127.0.0.1', PORT {node.port}, USER 'ploy', DATABASE 'ploy')"
            )
        parts = ", ".join(f"PARTITION p{i} COMMENT = 'srv \"shard{i}\"'" for i in range(shards))
        engine = f'ENGINE=SPIDER COMMENT=\'wrapper "mysql", table "{table}"\''
        front.sql(
            STATE_TABLE.format(name=table, engine=engine)
            + f" PARTITION BY KEY (resource, `key`) ({parts})",
            db="ploy",
        )
        yield Spider(front, nodes)
    finally:
        stack.close()
