"""The example app under gunicorn's worker kinds: gevent, gthread, --preload.

Clients hammer atomic counters (``State.incr``, also from the ``async def``
batch view), per-client State keys, and the cache, from many threads at
once. Every answer is a 200 with the right value, and the counters end
exact. Redis is a private server; State is SQLite in the test's folder.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from . import servers
from .test_faults import figure

CLIENTS = 8
REQUESTS = 40

WORKERS = {
    # gevent: async def views are not for it (see below); the others run them.
    "gevent": ["-w", "2", "-k", "gevent", "--worker-connections", "100"],
    "gthread": ["-w", "2", "-k", "gthread", "--threads", "8"],
    "preload": ["-w", "2", "--preload"],
}


def _client(base: str, client: int, tag: str, batch: bool) -> list[str]:
    """One client's requests; every unexpected answer."""
    wrong = []
    for i in range(REQUESTS):
        key = f"{tag}-c{client}-{i % 5}"
        checks: list[tuple[str, dict[str, str] | None, Any]] = [
            (f"/counters/{tag}", {}, lambda b: isinstance(b.get("value"), int)),
            (f"/counters/batch?names={tag}-a,{tag}-b", {}, lambda b: "values" in b)
            if batch
            else (f"/counters/{tag}-a", {}, lambda b: True),
            ("/state/set", {"key": key, "value": f"v{i}"}, lambda b: b["success"]),
            (f"/state/get?key={key}", None, lambda b, v=f"v{i}": b["value"] == v),
            ("/cache/set", {"key": key, "value": f"c{i}"}, lambda b: True),
            (f"/cache/get?key={key}", None, lambda b, v=f"c{i}": b["value"] == v),
        ]
        for path, data, ok in checks:
            status, body = servers.http_json(base, path, data=data, timeout=30)
            if status != 200 or not isinstance(body, dict) or not ok(body):
                wrong.append(f"{path}: {status} {str(body)[:200]}")
    return wrong


@pytest.mark.parametrize("kind", WORKERS)
def test_example_app_under_each_worker_kind(
    tmp_path: Path, own_redis: servers.RedisProc, kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "gevent":
        servers.need(_importable("gevent"), "gevent (pip install -e '.[test]')")
    tag = f"w{uuid.uuid4().hex[:8]}"
    # Flask runs an async view in an event loop through asgiref, which gevent's
    # patched threading breaks ("AsyncToSync in the same thread as an event loop").
    batch = kind != "gevent"
    env = {
        "FLASK_PLOY_CACHE_URL": own_redis.url,
        "FLASK_PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
    }
    with servers.gunicorn(tmp_path, env, *WORKERS[kind]) as (base, _proc):
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda c: _client(base, c, tag, batch), range(CLIENTS)))
        wrong = [w for r in results for w in r]
        assert wrong == [], wrong[:10]
        names = (tag, f"{tag}-a", f"{tag}-b") if batch else (tag, f"{tag}-a")
        totals = {n: servers.http_json(base, f"/counters/{n}")[1]["value"] for n in names}
    assert totals == dict.fromkeys(names, CLIENTS * REQUESTS)
    figure(
        request,
        f"gunicorn {' '.join(WORKERS[kind])}: {CLIENTS} clients x {REQUESTS} x 6 requests,"
        f" 0 wrong, counters exact ({CLIENTS * REQUESTS} each"
        + (", async batch view included)" if batch else ")"),
    )


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def test_the_async_view_in_process(make_app: Any) -> None:
    """The batch view on the test client: the async view and its threads."""
    from example_app import create_app, ploy

    app = create_app(
        {"TESTING": True, "PLOY_STATE_URL": "sqlite://", "PLOY_CACHE_URL": "memory://"}
    )
    try:
        client = app.test_client()
        for n in range(1, 4):
            body = client.post("/counters/batch?names=a,b,c").json
            assert body == {"values": {"a": n, "b": n, "c": n}}
        assert client.post("/counters/batch").status_code == 400
    finally:
        ploy.app_bindings(app).close()


GEVENT_TIMEOUT = """
from gevent import monkey; monkey.patch_all()
import sys, time, gevent, pymysql
from flask import Flask, g
from flask_ploy import FlaskPloy, StateUnavailable
url, table = sys.argv[1], sys.argv[2]
app = Flask("gt")
app.config.update(PLOY_BINDINGS={"state": {"STATE": "default"}}, PLOY_STATE_URL=url,
                  PLOY_STATE_TABLE=table, PLOY_STATE_BUSY_TIMEOUT=5)
FlaskPloy(app)
with app.app_context():
    s = g.env.STATE
    s.clear(); s.set("n", "1")
    locker = pymysql.connect(host="127.0.0.1", user="root", database="test", autocommit=False)
    cur = locker.cursor()
    cur.execute(f"SELECT value FROM `{table}` WHERE resource='default' AND `key`='n' FOR UPDATE")
    start = time.monotonic()
    try:
        with gevent.Timeout(0.3):
            s.incr("n")
    except gevent.Timeout:
        print("timeout", round(time.monotonic() - start, 2))
    except StateUnavailable as exc:
        print("wrapped", exc)
    locker.rollback(); locker.close()
    print("after", s.incr("n"), s.get("n"))
"""


def test_a_gevent_timeout_propagates_and_the_connection_is_replaced(
    tmp_path: Path, state_table: str
) -> None:
    """gevent.Timeout is a BaseException: it must reach the caller unchanged (it
    was swallowed into StateUnavailable), and the connection it interrupted
    mid-reply is thrown away, not reused out of step."""
    servers.need(_importable("gevent"), "gevent (pip install -e '.[test]')")
    servers.need(servers.sql_ok(servers.MARIADB_URL), f"MariaDB at {servers.MARIADB_URL}")
    script = tmp_path / "gevent_timeout.py"
    script.write_text(GEVENT_TIMEOUT)
    done = subprocess.run(
        [sys.executable, str(script), servers.MARIADB_URL, state_table],
        capture_output=True, text=True, timeout=60, cwd=servers.ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.split("\n")
    word, _, seconds = lines[0].partition(" ")
    # gevent's 0.3 s, not the 5 s busy timeout (with room for a loaded machine).
    assert word == "timeout" and 0.29 <= float(seconds) < 1.0, done.stdout
    assert lines[1] == "after 2 2", done.stdout
