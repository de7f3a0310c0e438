"""What is particular to the SQLite cache (``sqlite:``, the default): where
the file goes, its bounds, its lock waits, and sharing it between processes
and across ``fork``. Behaviour common to every backend lives in
test_cache_contract.py and test_model.py, which run on it too."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import g

from flask_ploy import PloyConfigError
from flask_ploy.cache import Cache, SQLiteBackend

from .test_cache_backends import FakeClock


def _rows(path: Path) -> tuple[int, int, int, int]:
    """(entries, bytes) as the triggers count them, and as the table holds them."""
    conn = sqlite3.connect(path)
    try:
        meta = conn.execute("SELECT entries, bytes FROM ploy_cache_meta").fetchone()
        real = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM ploy_cache").fetchone()
        return (*meta, *real)
    finally:
        conn.close()


def test_the_default_is_a_file_in_the_instance_folder(make_app: Any, tmp_path: Path) -> None:
    app = make_app()
    with app.app_context():
        backend = g.env.CACHE.backend
        assert isinstance(backend, SQLiteBackend)
        assert backend.path == os.path.join(app.instance_path, "ploy-cache.sqlite3")
        assert g.env.SESSION_CACHE.backend is backend  # one file for every resource
        g.env.CACHE.set("k", "v")
    assert os.path.isfile(backend.path)
    relative = make_app(
        PLOY_CACHE_URL="sqlite:///c.sqlite3?timeout=2",
        PLOY_CACHE_RESOURCES={"sessions": "sqlite:///sub/s.sqlite3"},
    )
    with relative.app_context():
        assert g.env.CACHE.backend.path == os.path.join(relative.instance_path, "c.sqlite3")
        assert g.env.CACHE.backend.timeout == 2.0
        assert g.env.SESSION_CACHE.backend.path == os.path.join(
            relative.instance_path, "sub", "s.sqlite3"
        )
        g.env.SESSION_CACHE.set("k", "v")  # makes the missing folder
        assert g.env.SESSION_CACHE.get("k") == "v"


def test_the_bounds_come_from_the_config(make_app: Any) -> None:
    app = make_app(PLOY_CACHE_MAX_ENTRIES=100, PLOY_CACHE_MAX_BYTES=10**6)
    with app.app_context():
        backend = g.env.CACHE.backend
        assert (backend.max_entries, backend.max_bytes) == (100, 10**6)
        for i in range(250):
            g.env.CACHE.set(f"k{i}", "v")
        assert _rows(Path(backend.path))[0] <= 100
        assert g.env.CACHE.get("k249") == "v" and g.env.CACHE.get("k0") is None
    default = make_app(PLOY_CACHE_KEY_PREFIX="other")
    with default.app_context():
        assert g.env.CACHE.backend.max_entries == 10_000
        assert g.env.CACHE.backend.max_bytes == 64 * 2**20


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("sqlite://", "a file the processes share"),
        ("sqlite:///:memory:", "a file the processes share"),
        ("sqlite://host/c.db", "a file the processes share"),
        ("sqlite:///c.db?mode=ro", "unknown option 'mode'"),
        ("sqlite:///c.db?timeout=soon", "timeout must be seconds"),
        ("sqlite:///c.db?timeout=-1", "timeout must be seconds"),
        ("sqlite:///c.db?synchronous=extra", "synchronous must be off, normal or full"),
    ],
)
def test_bad_urls_are_refused_at_init_app(make_app: Any, url: str, match: str) -> None:
    with pytest.raises(PloyConfigError, match=match):
        make_app(PLOY_CACHE_URL=url)


def test_bounded_in_entries_expired_first_then_least_recently_stored(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "c.sqlite3"
    backend = SQLiteBackend(f"sqlite:///{path}", max_entries=100, clock=clock)
    cache = Cache("CACHE", "default", backend)
    cache.set_many({f"old{i}": "v" for i in range(50)})
    clock.now += 1
    cache.set_many({f"brief{i}": "v" for i in range(50)}, ttl=1)
    clock.now += 1
    assert cache.get("old0") == "v"  # a read writes nothing: old0 stays the oldest
    clock.now += 1  # the brief ones have expired
    cache.set_many({f"new{i}": "v" for i in range(10)})
    cache.set("one more", "v")  # past the bound: the expired go, nothing else
    entries, size, real, real_size = _rows(path)
    assert (entries, size) == (real, real_size) == (61, size)
    assert cache.get_many(["old0", "new9", "brief0"]) == {"old0": "v", "new9": "v", "brief0": None}
    for i in range(60):
        clock.now += 1
        cache.set(f"later{i}", "v")
    entries, size, real, real_size = _rows(path)
    assert (entries, size) == (real, real_size)
    assert entries <= 100
    # The least recently stored went first: the old ones, not the later ones.
    got = cache.get_many(["old0", "old49", "new0", "later59"])
    assert got["old0"] is None and got["later59"] == "v"
    cache.set("new0", "again")  # storing again makes it the most recent
    for i in range(90):
        clock.now += 1
        cache.set(f"last{i}", "v")
    assert cache.get("new0") == "again" and cache.get("later0") is None
    backend.close()


def test_bounded_in_bytes(tmp_path: Path, record_property: Any) -> None:
    """100 values of 1 MiB into a 10 MiB SQLite cache: the counted bytes stay
    under the bound and the file near it; the newest are kept."""
    path = tmp_path / "c.sqlite3"
    backend = SQLiteBackend(f"sqlite:///{path}", max_bytes=10 * 2**20)
    cache = Cache("CACHE", "default", backend, max_value_bytes=20 * 2**20)
    for i in range(100):
        cache.set(f"k{i}", f"{i:03d}" + "x" * (2**20 - 3))
    entries, size, real, real_size = _rows(path)
    assert (entries, size) == (real, real_size)
    assert size <= 10 * 2**20 and entries == 9
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    file_size = path.stat().st_size
    record_property(
        "ploy_figure",
        f"sqlite:, 100 values of 1 MiB under a 10 MiB bound: {entries} entries kept,"
        f" {size / 2**20:.1f} MiB counted, file {file_size / 2**20:.1f} MiB",
    )
    assert file_size <= 12 * 2**20
    assert cache.get("k99") is not None and cache.get("k90") is None
    cache.set("k99", "x" * (11 * 2**20))  # larger than the whole bound: not kept
    assert cache.get("k99") is None and cache.get("k98") is not None
    backend.close()


def test_a_held_write_lock_is_busy_not_an_outage(tmp_path: Path) -> None:
    """Another connection holds the write lock: a write waits the URL's
    timeout, then is dropped (counted busy, breaker closed) and remembered;
    reads do not wait at all; once the lock goes, the dropped write's key is
    invalidated before it is served."""
    path = tmp_path / "c.sqlite3"
    backend = SQLiteBackend(f"sqlite:///{path}?timeout=0.2")
    cache = Cache("CACHE", "default", backend)
    cache.set_many({"k": "old", "other": "kept"})
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        cache.set("k", "new")
        waited = time.monotonic() - start
        assert 0.15 <= waited < 0.55, waited  # the 0.2 s once (it was 3 times)
        assert backend.busy == 1 and backend.failures == 0
        assert not backend.breaker.open_until
        assert cache.get("k") is None  # never the old value
        with pytest.raises(Exception, match="busy"):
            cache.incr("n")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert cache.get("k") is None and not backend.pending  # deleted on the file
    assert cache.get("other") == "kept"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        assert cache.get_many(["other", "k"]) == {"other": "kept", "k": None}
        assert time.monotonic() - start < 0.15  # readers never wait for a writer (0.2 s)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    backend.close()


def test_first_use_of_a_new_file_waits_for_its_set_up(tmp_path: Path) -> None:
    """Another process holds a new file's lock past the URL's timeout while
    8 threads make their first request: they wait for the set-up (WAL mode,
    the schema) instead of each failing "busy" and computing on its own."""
    path = tmp_path / "c.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a rollback-journal file: nobody can even read
    backend = SQLiteBackend(f"sqlite:///{path}?timeout=0.2")
    cache = Cache("CACHE", "default", backend)
    computed: list[int] = []

    def compute() -> str:
        computed.append(1)
        time.sleep(0.1)
        return "report"

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(cache.get_or_set, "r", compute, ttl=60) for _ in range(8)]
            time.sleep(0.6)  # three times the timeout
            holder.execute("ROLLBACK")
            values = [f.result() for f in futures]
        assert values == ["report"] * 8
        assert len(computed) == 1 and backend.busy == 0, (computed, backend.busy)
    finally:
        holder.close()
        backend.close()


def test_a_file_that_cannot_be_opened_is_down(tmp_path: Path) -> None:
    (tmp_path / "c.sqlite3").mkdir()  # a folder where the file should be
    backend = SQLiteBackend(f"sqlite:///{tmp_path}/c.sqlite3")
    cache = Cache("CACHE", "default", backend)
    assert cache.get("k") is None
    assert backend.failures == 1 and backend.breaker.open_until  # a miss, and the breaker opens
    cache.set("k", "v")  # not tried while the breaker is open
    assert backend.skipped == 1


WORKER = """
import sys
from flask_ploy.cache import Cache, SQLiteBackend
path, n, me = sys.argv[1], int(sys.argv[2]), sys.argv[3]
backend = SQLiteBackend(f"sqlite:///{path}")
cache = Cache("CACHE", "default", backend)
for i in range(n):
    cache.incr("n")
    cache.set(f"{me}:{i % 10}", str(i))
    cache.incr("window", ttl=60)
print(backend.failures, backend.busy)
"""


def test_processes_share_one_cache_and_count_exactly(tmp_path: Path) -> None:
    """4 processes at once on one file: every incr counted, every write seen."""
    path = tmp_path / "c.sqlite3"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), "300", f"p{p}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in range(4)
    ]
    outs = [proc.communicate(timeout=120)[0].split() for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * 4
    assert outs == [["0", "0"]] * 4  # no failure, no lock wait over the timeout
    cache = Cache("CACHE", "default", SQLiteBackend(f"sqlite:///{path}"))
    assert cache.get_many(["n", "window", "p0:9", "p3:9"]) == {
        "n": "1200",
        "window": "1200",
        "p0:9": "299",
        "p3:9": "299",
    }
    cache.backend.close()


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    """gunicorn --preload: the parent used the cache before forking; the
    child works on a connection of its own, and the parent's keeps working."""
    path = tmp_path / "c.sqlite3"
    backend = SQLiteBackend(f"sqlite:///{path}")
    cache = Cache("CACHE", "default", backend)
    cache.set("parent", "1")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            ok = cache.get("parent") == "1" and cache.incr("n") == 1
            cache.set("child", "2")
            code = 0 if ok and backend.failures == 0 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert cache.get_many(["child", "n"]) == {"child": "2", "n": "1"}
    assert cache.incr("n") == 2 and backend.failures == 0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    backend.close()
