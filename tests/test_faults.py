"""Fault injection: the servers behind Cache and State die, hang, restart,
fill up or turn read-only, under real load. All traffic stays on loopback.

- Redis killed (SIGKILL) and restarted under the example app served by
  gunicorn (2 workers): no request fails with the "miss" policy, and the
  cache is back within 2 s of Redis accepting connections again.
- Redis replaced by a socket that accepts and never answers: every request
  through gunicorn stays bounded.
- A private PostgreSQL crashed (``pg_ctl stop -m immediate``) and restarted
  under load: each operation during the outage raises StateUnavailable
  quickly, operations work again without an app restart, and no
  acknowledged write is lost.
- SQLite writer processes killed with SIGKILL at random points, round after
  round: no acknowledged write is lost and ``PRAGMA integrity_check`` is ok.
  Eight writers for ``PLOY_SOAK_SECONDS`` (default 3; the ``soak`` marker,
  run it with ``PLOY_SOAK_SECONDS=10`` for the 10-second version): no
  "database is locked" or any other error reaches a caller.
- SQLite disk full (``PRAGMA max_page_count`` always; a 256 KiB tmpfs where
  the machine allows mounting) and read-only (``?mode=ro`` URI always; a
  read-only bind mount where allowed): a clear StateUnavailable, nothing
  half-written, reads still work.
- gunicorn ``--preload`` with 4 workers, the bindings used in the master
  before the fork: every worker serves cache and state, and no server-side
  connection is used by more than one process.

Every test is bounded in time; each prints its figures (and records them as
``ploy_figure`` user properties).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, g

from flask_ploy import StateUnavailable

from . import pgserver, servers
from .sqlite_writer import value_for

ROOT = Path(__file__).resolve().parent.parent
SOAK_SECONDS = float(os.environ.get("PLOY_SOAK_SECONDS", "3"))
KILL_ROUNDS = int(os.environ.get("PLOY_KILL_ROUNDS", "6"))

FIGURES: list[str] = []


def figure(request: pytest.FixtureRequest, text: str) -> None:
    """Print one measured figure and attach it to the test's report."""
    print(text)
    request.node.user_properties.append(("ploy_figure", text))


# -- helpers: HTTP and gunicorn ------------------------------------------------------


@dataclass
class Load:
    """Requests from several threads until stopped: every outcome, timed."""

    base: str
    threads: int = 4
    results: list[tuple[float, float, str, int, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(
        self, body: Callable[[int, int], tuple[str, dict[str, str] | None]]
    ) -> list[threading.Thread]:
        def loop(t: int) -> None:
            i = 0
            while not self.stop.is_set():
                i += 1
                path, data = body(t, i)
                start = time.monotonic()
                try:
                    status, answer = servers.http_json(self.base, path, data, timeout=10)
                except Exception as exc:  # a refused or timed-out request is a failure
                    status, answer = -1, repr(exc)
                self.results.append((start, time.monotonic() - start, path, status, answer))

        workers = [
            threading.Thread(target=loop, args=(t,), daemon=True) for t in range(self.threads)
        ]
        for w in workers:
            w.start()
        return workers


# -- Redis killed and restarted under gunicorn -------------------------------------------


@pytest.mark.slow
def test_redis_killed_and_restarted_under_gunicorn(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    servers.need(bool(servers.REDIS_SERVER), "redis-server")
    redis_proc = servers.start_redis()
    env = {
        "FLASK_PLOY_CACHE_URL": redis_proc.url,
        "FLASK_PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
    }
    try:
        with servers.gunicorn(tmp_path, env, "-w", "2") as (base, _):
            assert servers.http_json(base, "/cache/set", {"key": "warm", "value": "up"})[0] == 200
            load = Load(base, threads=4)

            def body(t: int, i: int) -> tuple[str, dict[str, str] | None]:
                if i % 2:
                    return "/cache/set", {"key": f"load:{t}:{i}", "value": f"v{i}"}
                return f"/cache/get?key=load:{t}:{i - 1}", None

            threads = load.run(body)
            time.sleep(1.0)
            killed_at = time.monotonic()
            redis_proc.kill()  # SIGKILL: connections reset, port refuses
            time.sleep(2.0)
            restart_at = time.monotonic()
            redis_proc.restart()
            up_at = time.monotonic()

            # Probe: write through the app, read back through the app, until the
            # cache has answered for a full second without a single miss.
            probes: list[tuple[float, bool]] = []
            deadline = up_at + 8
            ok_since: float | None = None
            n = 0
            while time.monotonic() < deadline:
                n += 1
                t = time.monotonic()
                key = f"probe:{n}"
                servers.http_json(base, "/cache/set", {"key": key, "value": "back"})
                hit = servers.http_json(base, f"/cache/get?key={key}")[1] == {"value": "back"}
                probes.append((t, hit))
                if hit:
                    ok_since = ok_since or t
                    if time.monotonic() - ok_since >= 1.0:
                        break
                else:
                    ok_since = None
                time.sleep(0.01)
            load.stop.set()
            for th in threads:
                th.join(15)
    finally:
        redis_proc.kill()

    failed = [r for r in load.results if r[3] != 200]
    during = [r for r in load.results if killed_at <= r[0] < up_at]
    misses = [p for p in probes if not p[1]]
    back_after = max((p[0] for p in misses), default=up_at) - up_at
    worst = max(r[1] for r in load.results)
    figure(
        request,
        f"redis kill -9 + restart under gunicorn -w 2: {len(load.results)} requests"
        f" ({len(during)} during the {up_at - killed_at:.1f} s outage), {len(failed)} failed,"
        f" slowest {worst * 1000:.0f} ms; cache back {max(back_after, 0):.2f} s after"
        f" Redis came up ({len(misses)} probe misses)",
    )
    assert not failed, failed[:5]
    assert len(during) >= 20, "the load did not run through the outage"
    # Gets that ended before the restart began ran on a dead Redis: misses.
    # (One that began just before Redis was up may see a key set after it.)
    dead = [r for r in during if r[0] + r[1] <= restart_at and "/cache/get" in r[2]]
    assert dead and all(r[4] == {"value": None} for r in dead), "a get hit a dead Redis?"
    assert worst < 2.0
    assert probes and probes[-1][1], "the cache did not come back"
    assert back_after < 2.0


# -- Redis that accepts and never answers, under gunicorn ---------------------------------


@pytest.mark.slow
def test_hung_redis_under_gunicorn_stays_bounded(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    hung = servers.HungServer()
    env = {
        "FLASK_PLOY_CACHE_URL": hung.url,
        "FLASK_PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
        # No probe within the test: each worker pays the timeout once, however slow the machine.
        "FLASK_PLOY_CACHE_COOLDOWN": "60",
    }
    try:
        with servers.gunicorn(tmp_path, env, "-w", "2") as (base, _):
            times: list[float] = []
            answers: list[tuple[int, Any]] = []
            start = time.monotonic()
            for i in range(50):
                t = time.monotonic()
                if i % 2:
                    answers.append(
                        servers.http_json(base, "/cache/set", {"key": f"k{i}", "value": "v"})
                    )
                else:
                    answers.append(servers.http_json(base, f"/cache/get?key=k{i - 1}"))
                times.append(time.monotonic() - t)
            total = time.monotonic() - start
            state_ok = servers.http_json(base, "/state/set", {"key": "k", "value": "v"})
    finally:
        hung.close()
    figure(
        request,
        f"hung Redis under gunicorn -w 2: 50 requests in {total:.2f} s, slowest"
        f" {max(times) * 1000:.0f} ms, {sum(t >= 0.45 for t in times)} paid the 0.5 s socket"
        f" timeout (cooldown 60 s);"
        f" {len(hung.accepted)} connections accepted by the hung server",
    )
    assert all(status == 200 for status, _ in answers), answers
    assert all(a == {"value": None} for s, a in answers[::2])
    assert max(times) < 1.0  # the 0.5 s socket timeout, and nothing more
    assert sum(t >= 0.45 for t in times) <= 2, times  # once per worker, not 50 times (25 s)
    assert state_ok == (200, {"success": True})  # State does not depend on the cache
    assert hung.accepted, "the hung server was never reached: the test tested nothing"


@pytest.mark.slow
def test_hung_redis_under_gunicorn_gthread_probes_one_at_a_time(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Issue 12 #5 end to end: gunicorn --threads 8, 8 clients for 6 s on a hung
    Redis. After the first wave, one request per cooldown waits for the socket
    timeout; the others are answered at once."""
    hung = servers.HungServer()
    env = {
        "FLASK_PLOY_CACHE_URL": hung.url,
        "FLASK_PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
    }
    try:
        with servers.gunicorn(tmp_path, env, "-w", "1", "--threads", "8") as (base, _):
            load = Load(base, threads=8)
            workers = load.run(lambda t, i: (f"/cache/get?key=k{t}", None))
            time.sleep(6.0)
            load.stop.set()
            for w in workers:
                w.join(15)
    finally:
        hung.close()
    slow = sorted((start, start + took) for start, took, *_ in load.results if took >= 0.4)
    first_wave_end = min(end for _, end in slow)
    later = [s for s in slow if s[0] >= first_wave_end]
    overlapping = sum(1 for a, b in itertools.pairwise(later) if b[0] < a[1] - 0.01)
    # Counted by the server: each probe is a new connection (a client that
    # timed out dropped its own), so a request slowed by a loaded machine is
    # not taken for a probe.
    connections, apart = hung.probes(0.5, 1.0)
    figure(
        request,
        f"hung Redis under gunicorn -w 1 --threads 8, 8 clients for 6 s: {len(load.results)}"
        f" requests, {len(slow)} paid the 0.5 s timeout ({len(slow) - len(later)} in the first"
        f" wave, then {len(later)} probes, {overlapping} at once); the server saw {connections}"
        f" probes, at least {apart:.2f} s apart",
    )
    assert all(status == 200 for _, _, _, status, _ in load.results)
    assert 1 <= connections <= 5, connections  # one per cooldown (1 s) + timeout (0.5 s)
    assert apart >= 0.5 + 1.0 / 2, apart  # 1.5 s between probes; two at once: 0 s
    # The other requests were answered at once, not kept waiting for the probe.
    held = sum(1 for a, b in later if b - a >= 0.45)
    assert held <= 2 * connections + 2, (held, connections)


# -- PostgreSQL crashed and restarted under load ---------------------------------------------


@pytest.fixture
def private_pg() -> Iterator[pgserver.PgServer]:
    pgserver.need_postgres()
    with pgserver.postgres() as pg:
        yield pg


@pytest.mark.slow
def test_postgres_restart_mid_load(
    private_pg: pgserver.PgServer, make_app: Any, request: pytest.FixtureRequest
) -> None:
    app: Flask = make_app({"state": {"STATE": "default"}}, PLOY_STATE_URL=private_pg.url)
    acked: dict[str, str] = {}
    incr_acked = 0
    incr_tried = 0
    errors: list[tuple[float, float, BaseException]] = []
    oks: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def worker(t: int) -> None:
        nonlocal incr_acked, incr_tried
        i = 0
        while not stop.is_set():
            i += 1
            key, value = f"t{t}:{i}", f"value {t} {i} " + "x" * (i % 50)
            start = time.monotonic()
            try:
                with app.app_context():
                    if i % 3 == 0:
                        with lock:
                            incr_tried += 1
                        g.env.STATE.incr("counter")
                        with lock:
                            incr_acked += 1
                    else:
                        g.env.STATE.set(key, value)
                        with lock:
                            acked[key] = value
                oks.append(time.monotonic())
            except BaseException as exc:
                errors.append((start, time.monotonic() - start, exc))
                time.sleep(0.02)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(4)]
    for th in threads:
        th.start()
    time.sleep(1.0)
    down_at = time.monotonic()
    private_pg.stop("immediate")  # like a crash: no checkpoint, clients cut off
    time.sleep(1.5)
    private_pg.start()
    up_at = time.monotonic()
    time.sleep(2.0)
    stop.set()
    for th in threads:
        th.join(15)
    assert not any(th.is_alive() for th in threads), "a state operation hung"

    unexpected = [e for e in errors if not isinstance(e[2], StateUnavailable)]
    assert not unexpected, unexpected[:3]
    assert errors, "no operation saw the outage: the test tested nothing"
    for _, _, exc in errors:
        assert f"127.0.0.1:{private_pg.port}" in str(exc), str(exc)
    slowest = max(e[1] for e in errors)
    assert slowest < 3.0, f"an operation took {slowest:.1f} s to fail"
    first_ok_after = min((t for t in oks if t > up_at), default=None)
    assert first_ok_after is not None, "state never worked again after the restart"
    # Dead pooled connections are replaced at checkout (pre-ping): once the
    # server is up, operations succeed again at once, with no app restart.
    late_errors = [e for e in errors if e[0] > up_at + 1.0]
    assert not late_errors, late_errors[:3]
    assert len(oks) and max(oks) > up_at + 1.5, "too few operations after the restart"

    with app.app_context():
        stored = g.env.STATE.get_many(list(acked))
        counter = int(g.env.STATE.get("counter") or 0)
    lost = [k for k, v in acked.items() if stored[k] != v]
    figure(
        request,
        f"postgres crash + restart: {len(acked) + incr_acked} acknowledged writes,"
        f" {len(errors)} StateUnavailable during the {up_at - down_at:.1f} s outage (slowest"
        f" {slowest * 1000:.0f} ms), working again {max(first_ok_after - up_at, 0):.2f} s after"
        f" restart, {len(lost)} writes lost",
    )
    assert lost == []
    assert incr_acked <= counter <= incr_tried


# -- SQLite: writers killed with SIGKILL ----------------------------------------------------


def _start_writer(
    url: str, writer: int, tag: str, seconds: float | None = None
) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "tests.sqlite_writer", url, str(writer), tag]
    if seconds is not None:
        args.append(str(seconds))
    return subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )


@dataclass
class Acks:
    """What writers reported as acknowledged."""

    sets: dict[str, int] = field(default_factory=dict)
    incrs: list[int] = field(default_factory=list)
    updates: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    done: int = 0

    def read(self, writer: int, text: str) -> None:
        lines = text.split("\n")
        for line in lines[:-1]:  # the last piece is empty, or a line cut by the kill
            kind, _, rest = line.partition(" ")
            if kind == "set":
                key, size = rest.rsplit(" ", 1)
                self.sets[key] = int(size)
            elif kind == "incr":
                self.incrs.append(int(rest))
            elif kind == "update":
                self.updates[f"doc:w{writer}"] = json.loads(rest)["n"]
            elif kind == "error":
                self.errors.append(rest)
            elif kind == "done":
                self.done += int(rest)


def check_database(path: str, acks: Acks) -> tuple[int, int]:
    """Assert integrity and every acknowledged write; return (rows, counter)."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = dict(conn.execute("SELECT key, value FROM ploy_state WHERE resource = 'default'"))
    finally:
        conn.close()
    lost = [k for k, size in acks.sets.items() if rows.get(k) != value_for(k, size)]
    assert lost == [], f"{len(lost)} acknowledged writes lost, e.g. {lost[:3]}"
    counter = int(rows.get("counter", "0"))
    assert counter >= max(acks.incrs, default=0)
    for doc, n in acks.updates.items():
        assert json.loads(rows[doc])["n"] >= n
    return len(rows), counter


@pytest.mark.slow
def test_sqlite_writers_killed_with_sigkill_lose_no_acknowledged_write(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = str(tmp_path / "kill.sqlite3")
    url = f"sqlite:///{path}"
    acks = Acks()
    rnd = random.Random(4)
    kills = 0
    writers = 4
    for rnd_no in range(KILL_ROUNDS):
        procs = [_start_writer(url, w, f"r{rnd_no}") for w in range(writers)]
        try:
            for p in procs:  # wait until each is writing, then let them run a random while
                assert p.stdout is not None
                assert p.stdout.readline() == "ready\n", p.stderr.read() if p.stderr else ""
            time.sleep(rnd.uniform(0.05, 0.6))
            order = list(procs)
            rnd.shuffle(order)
            for p in order:  # kill them one by one, at different points
                os.kill(p.pid, signal.SIGKILL)
                kills += 1
                time.sleep(rnd.uniform(0, 0.05))
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
        for w, p in enumerate(procs):
            out, _ = p.communicate(timeout=10)
            assert p.returncode == -signal.SIGKILL
            acks.read(w, out)
        # The database must be consistent after every round, not only at the end.
        check_database(path, acks)
    rows, counter = check_database(path, acks)
    figure(
        request,
        f"sqlite kill -9: {kills} writer processes killed over {KILL_ROUNDS} rounds,"
        f" {len(acks.sets) + len(acks.incrs) + sum(acks.updates.values())} acknowledged writes"
        f" ({rows} rows, counter {counter}), 0 lost, integrity_check ok,"
        f" {len(acks.errors)} errors reported",
    )
    assert acks.errors == []
    assert len(acks.sets) > 50 * KILL_ROUNDS // 2, "the writers barely wrote"


@pytest.mark.soak
@pytest.mark.slow
def test_sqlite_eight_writers_never_see_database_is_locked(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = str(tmp_path / "soak.sqlite3")
    url = f"sqlite:///{path}"
    procs = [_start_writer(url, w, "soak", SOAK_SECONDS) for w in range(8)]
    acks = Acks()
    try:
        for w, p in enumerate(procs):
            out, err = p.communicate(timeout=SOAK_SECONDS + 60)
            assert p.returncode == 0, err
            acks.read(w, out)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
    locked = [e for e in acks.errors if "locked" in e or "busy" in e]
    figure(
        request,
        f"sqlite soak: 8 writer processes for {SOAK_SECONDS:g} s: {acks.done} operations"
        f" ({acks.done / SOAK_SECONDS:.0f}/s), {len(locked)} 'database is locked',"
        f" {len(acks.errors)} errors in all",
    )
    assert locked == []
    assert acks.errors == []
    assert acks.done >= 8 * 10
    _, counter = check_database(path, acks)
    assert counter == len(acks.incrs) == max(acks.incrs)  # no kills: every incr acknowledged


# -- SQLite: disk full and read-only ---------------------------------------------------------


def _sqlite_app(make_app: Any, url: str) -> Flask:
    return make_app({"state": {"STATE": "default"}}, PLOY_STATE_URL=url)  # type: ignore[no-any-return]


def _fill(app: Flask) -> tuple[int, StateUnavailable]:
    """Write 8 KiB values until the database refuses; return (written, error)."""
    with app.app_context():
        for i in range(100_000):
            try:
                g.env.STATE.set(f"fill:{i}", value_for(f"fill:{i}", 8192))
            except StateUnavailable as exc:
                assert g.env.STATE.get(f"fill:{i}") is None  # nothing half-written
                return i, exc
    raise AssertionError("the database never filled up")


def _check_after_full(app: Flask, written: int) -> None:
    with app.app_context():
        s = g.env.STATE
        assert s.get("fill:0") == value_for("fill:0", 8192)
        assert s.get(f"fill:{written - 1}") == value_for(f"fill:{written - 1}", 8192)
        with pytest.raises(StateUnavailable, match="full"):
            s.set_many({"a": "1", "big": "x" * 100_000})
        assert s.get("a") is None  # all or nothing
        assert s.count() == written


def test_sqlite_full_database_max_page_count(
    tmp_path: Path, make_app: Any, request: pytest.FixtureRequest
) -> None:
    """``PRAGMA max_page_count`` on every connection simulates a full disk."""
    app = _sqlite_app(make_app, f"sqlite:///{tmp_path}/full.sqlite3")
    engine = app.extensions["ploy"].state_store("STATE", app).engine
    sa.event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA max_page_count = 64"))
    written, exc = _fill(app)
    figure(request, f"sqlite max_page_count=64: {written} writes, then: {exc}")
    assert "database or disk is full" in str(exc)
    assert "full.sqlite3" in str(exc) and "STATE.set" in str(exc)
    _check_after_full(app, written)


def _can_mount() -> bool:
    if os.geteuid() != 0:
        return False
    d = tempfile.mkdtemp(prefix="ploy-mnt-")
    try:
        ok = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d], capture_output=True
            ).returncode
            == 0
        )
        if ok:
            subprocess.run(["umount", d], check=True)
        return ok
    except OSError:
        return False
    finally:
        os.rmdir(d)


@contextlib.contextmanager
def _tmpfs(size: str) -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="ploy-tmpfs-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", d], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", d], check=False)
        os.rmdir(d)


def test_sqlite_disk_full_on_a_tiny_tmpfs(make_app: Any, request: pytest.FixtureRequest) -> None:
    servers.need(_can_mount(), "mounting a tmpfs (root with CAP_SYS_ADMIN)")
    with _tmpfs("256k") as d:
        app = _sqlite_app(make_app, f"sqlite:///{d}/full.sqlite3")
        try:
            written, exc = _fill(app)
            figure(request, f"sqlite on a 256 KiB tmpfs: {written} writes, then: {exc}")
            assert "database or disk is full" in str(exc)
            _check_after_full(app, written)
        finally:
            app.extensions["ploy"].app_bindings(app).close()


def _seeded(make_app: Any, path: str) -> None:
    app = _sqlite_app(make_app, f"sqlite:///{path}")
    with app.app_context():
        g.env.STATE.set("k", "before")
        g.env.STATE.set("doc", "{}")
    app.extensions["ploy"].app_bindings(app).close()


def _assert_read_only(app: Flask) -> StateUnavailable:
    with app.app_context():
        s = g.env.STATE
        assert s.get("k") == "before"
        errors = []
        for op in (
            lambda: s.set("k", "after"),
            lambda: s.incr("n"),
            lambda: s.delete("k"),
            lambda: s.update("doc", {"$set": {"a": 1}}),
            lambda: s.set_many({"x": "1"}),
        ):
            with pytest.raises(StateUnavailable, match="readonly|read-only") as info:
                op()
            errors.append(info.value)
        assert s.get("k") == "before"
        assert s.list().keys == ["doc", "k"]
    return errors[0]


def test_sqlite_read_only_uri(
    tmp_path: Path, make_app: Any, request: pytest.FixtureRequest
) -> None:
    """``mode=ro`` opens the file read-only even for root (who ignores chmod)."""
    path = str(tmp_path / "ro.sqlite3")
    _seeded(make_app, path)
    app = _sqlite_app(make_app, f"sqlite:///file:{path}?mode=ro&uri=true")
    exc = _assert_read_only(app)
    figure(request, f"sqlite mode=ro: every write raised StateUnavailable: {exc}")


def test_sqlite_read_only_file_system(make_app: Any, request: pytest.FixtureRequest) -> None:
    servers.need(_can_mount(), "mounting a tmpfs (root with CAP_SYS_ADMIN)")
    with _tmpfs("4m") as d:
        _seeded(make_app, f"{d}/ro.sqlite3")
        subprocess.run(["mount", "-o", "remount,ro", d], check=True)
        app = _sqlite_app(make_app, f"sqlite:///{d}/ro.sqlite3")
        try:
            with app.app_context():
                # Reading a WAL database needs its -shm file writable; a clear
                # StateUnavailable for reads is acceptable, a crash is not.
                try:
                    readable = g.env.STATE.get("k") == "before"
                except StateUnavailable as exc:
                    readable = False
                    read_error = str(exc)
                else:
                    read_error = ""
                assert readable or "ro.sqlite3" in read_error
                with pytest.raises(StateUnavailable) as info:
                    g.env.STATE.set("k", "after")
            figure(
                request,
                f"sqlite on a read-only file system: reads {'work' if readable else 'refused'},"
                f" writes raise StateUnavailable: {info.value}",
            )
        finally:
            app.extensions["ploy"].app_bindings(app).close()


# -- gunicorn --preload, 4 workers: no connection crosses a fork ------------------------------

PRELOAD_APP = """
import os

from flask import g
from example_app import create_app

app = create_app()
# Use both bindings in the master, before gunicorn forks the workers, as an app
# that warms up at import would: the pools now hold connections.
with app.app_context():
    ploy = app.extensions["ploy"]
    ploy.app_bindings(app).caches["CACHE"].backend.ping()
    g.env.STATE.get("warmup")
"""


def _redis_clients(client: Any) -> list[dict[str, Any]]:
    return [c for c in client.client_list() if c.get("cmd") != "client|list"]


@pytest.mark.slow
def test_gunicorn_preload_shares_no_connection(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import psutil
    import redis

    servers.need(bool(servers.REDIS_SERVER), "redis-server")
    servers.need(servers.sql_ok(servers.POSTGRES_URL), f"PostgreSQL at {servers.POSTGRES_URL}")
    appname = f"ploy_preload_{uuid.uuid4().hex[:10]}"
    uid = uuid.uuid4().hex[:8]
    (tmp_path / "preload_app.py").write_text(PRELOAD_APP)
    redis_proc = servers.start_redis()
    rc = redis.Redis.from_url(redis_proc.url, decode_responses=True)
    pg = sa.create_engine(servers.POSTGRES_URL)
    pg_url = f"{servers.POSTGRES_URL}?application_name={appname}"

    def pg_clients() -> list[dict[str, Any]]:
        with pg.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT pid, client_port, state_change FROM pg_stat_activity"
                " WHERE application_name = %s",
                (appname,),
            ).mappings()
            return [dict(r) for r in rows]

    env = {"FLASK_PLOY_CACHE_URL": redis_proc.url, "FLASK_PLOY_STATE_URL": pg_url}
    try:
        with servers.gunicorn(
            tmp_path,
            env,
            "-w",
            "4",
            "--preload",
            app="preload_app:app",
        ) as (base, proc):
            master = psutil.Process(proc.pid)
            deadline = time.monotonic() + 20
            while len(master.children()) < 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            workers = {p.pid for p in master.children()}
            assert len(workers) == 4
            # Before any request: only the master's warm-up connections exist.
            master_redis = {c["addr"] for c in _redis_clients(rc)}
            master_pg = {r["client_port"] for r in pg_clients()}
            assert master_redis and master_pg, "the master did not connect before the fork"

            with pg.connect() as conn:
                load_started = conn.exec_driver_sql("SELECT clock_timestamp()").scalar()
            served: set[int] = set()
            for attempt in range(12):
                # Four slow (0.5 s) cache-miss reports at once: each worker takes one.
                paths = [f"/reports/{uid}-{attempt}-{j}" for j in range(4)]
                with ThreadPoolExecutor(4) as pool:
                    results = list(pool.map(lambda p: servers.http_json(base, p), paths))
                assert all(s == 200 for s, _ in results), results
                served |= {a["report"]["generated_by"] for _, a in results}
                if served >= workers:
                    break
            assert served == workers, f"workers {workers}, served by {served}"
            for _ in range(8):  # state writes and cache writes on whichever worker
                assert (
                    servers.http_json(base, "/state/set", {"key": f"k{uid}", "value": "v"})[0]
                    == 200
                )
                assert (
                    servers.http_json(base, "/cache/set", {"key": f"k{uid}", "value": "v"})[0]
                    == 200
                )

            redis_now = _redis_clients(rc)
            pg_now = pg_clients()
            # The master's connections were never used by a worker: Redis saw
            # nothing after the warm-up PING, PostgreSQL no state change since
            # before the first request.
            for c in redis_now:
                if c["addr"] in master_redis:
                    assert c["cmd"] == "ping", c
            for r in pg_now:
                if r["client_port"] in master_pg:
                    assert r["state_change"] < load_started, r
            # Each worker connected on its own: the sockets it opened after the
            # fork (not inherited from the master) are its alone.
            own: dict[int, dict[str, set[int]]] = {}
            for pid in workers:
                ports = {"redis": set(), "pg": set()}
                for c in psutil.Process(pid).net_connections(kind="tcp"):
                    if not c.raddr:
                        continue
                    if (
                        c.raddr.port == redis_proc.port
                        and f"{c.laddr.ip}:{c.laddr.port}" not in master_redis
                    ):
                        ports["redis"].add(c.laddr.port)
                    if c.raddr.port == 5432 and c.laddr.port not in master_pg:
                        ports["pg"].add(c.laddr.port)
                own[pid] = ports
            for kind in ("redis", "pg"):
                all_ports = [p for ports in own.values() for p in ports[kind]]
                assert len(all_ports) == len(set(all_ports)), f"a {kind} socket is in two workers"
                assert all(ports[kind] for ports in own.values()), (
                    f"a worker has no {kind} connection: {own}"
                )
            server_side_redis = {int(c["addr"].rsplit(":", 1)[1]) for c in redis_now} - {
                int(a.rsplit(":", 1)[1]) for a in master_redis
            }
            server_side_pg = {r["client_port"] for r in pg_now} - master_pg
            assert {p for ports in own.values() for p in ports["redis"]} <= server_side_redis
            assert {p for ports in own.values() for p in ports["pg"]} <= server_side_pg
    finally:
        redis_proc.kill()
        rc.close()
        with contextlib.suppress(Exception), pg.begin() as conn:
            conn.exec_driver_sql(
                "DELETE FROM ploy_state WHERE resource = 'default' AND key = %s",
                (f"k{uid}".encode(),),
            )
        pg.dispose()
    figure(
        request,
        f"gunicorn --preload -w 4: all 4 workers served cache+state; master connections"
        f" (redis {len(master_redis)}, postgres {len(master_pg)}) never used after the fork;"
        f" workers' own connections: redis {sum(len(p['redis']) for p in own.values())},"
        f" postgres {sum(len(p['pg']) for p in own.values())}, none shared",
    )
