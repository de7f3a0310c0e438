"""Contract: one ``g.env.STATE`` used from several threads at once.

An ``async def`` view that runs work with ``asyncio.to_thread`` and
``gather``, a thread pool inside a view, and the threaded development
server on ``sqlite://``: each thread gets a connection of its own, so
nothing crashes and no thread ever reads another's value (before, they
shared one DBAPI cursor: SIGSEGV on SQLite, another key's value on MariaDB).
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask, g
from werkzeug.serving import make_server

THREADS = 8
ROUNDS = 150


def _hammer(state: Any, worker: int) -> list[str]:
    """Write and read this worker's own keys; return every mismatch."""
    wrong = []
    for i in range(ROUNDS):
        key, value = f"t{worker}:{i % 7}", f"w{worker}-{i}-" + "x" * (i % 50)
        state.set(key, value)
        got = state.get(key)
        if got != value:
            wrong.append(f"{key}: {got!r} != {value!r}")
        many = state.get_many([key, f"t{worker}:absent"])
        if many != {key: value, f"t{worker}:absent": None}:
            wrong.append(f"get_many {key}: {many!r}")
        state.incr("shared")
    return wrong


def test_a_thread_pool_shares_one_binding(state_env: Any) -> None:
    state = state_env.STATE
    state.get("warm")  # the context's own thread borrows first
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda w: _hammer(state, w), range(THREADS)))
    assert [w for r in results for w in r] == []
    assert state.get("shared") == str(THREADS * ROUNDS)
    assert state.count() == THREADS * 7 + 1


def test_an_async_view_gathers_threads(state_app: Flask) -> None:
    @state_app.get("/gather")
    async def gather() -> dict[str, Any]:
        state = g.env.STATE
        results = await asyncio.gather(
            *(asyncio.to_thread(_hammer, state, w) for w in range(THREADS))
        )
        return {"wrong": [w for r in results for w in r], "shared": state.get("shared")}

    client = state_app.test_client()
    for n in (1, 2):
        body = client.get("/gather").json
        assert body == {"wrong": [], "shared": str(n * THREADS * ROUNDS)}


def test_the_threaded_dev_server_on_sqlite_memory(make_app: Any) -> None:
    """``sqlite://`` used to be one connection shared by every request thread."""
    app = make_app({"state": {"STATE": "default"}}, PLOY_STATE_URL="sqlite://")

    @app.post("/w/<int:worker>")
    def write(worker: int) -> dict[str, Any]:
        return {"wrong": _hammer(g.env.STATE, worker)[:3]}

    @app.get("/shared")
    def shared() -> dict[str, Any]:
        return {"shared": g.env.STATE.get("shared")}

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"

    def post(worker: int) -> list[str]:
        req = urllib.request.Request(f"{base}/w/{worker}", method="POST")  # noqa: S310
        with urllib.request.urlopen(req, timeout=60) as response:  # noqa: S310 - loopback
            wrong: list[str] = json.load(response)["wrong"]
            return wrong

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            assert [w for r in pool.map(post, range(THREADS)) for w in r] == []
        with urllib.request.urlopen(f"{base}/shared", timeout=10) as response:  # noqa: S310
            assert json.load(response) == {"shared": str(THREADS * ROUNDS)}
    finally:
        server.shutdown()
        thread.join(5)


def test_a_thread_still_running_at_teardown_returns_its_own_connection(
    state_app: Flask,
) -> None:
    """Teardown does not pull a connection from under a thread mid-operation."""
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_load(state: Any) -> None:
        def pairs() -> Any:
            yield "a", "1"
            started.set()
            release.wait(10)
            yield "b", "2"

        try:
            state.load(pairs())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with state_app.app_context():
        worker = threading.Thread(target=slow_load, args=(g.env.STATE,))
        worker.start()
        assert started.wait(10)
    # The context ended while the worker's load is mid-transaction.
    store = state_app.extensions["ploy"].state_store("STATE", state_app)
    assert store.engine.pool.checkedout() == 1
    release.set()
    worker.join(10)
    assert errors == []
    assert store.engine.pool.checkedout() == 0
    with state_app.app_context():
        assert g.env.STATE.get_many(["a", "b"]) == {"a": "1", "b": "2"}
        with pytest.raises(RuntimeError, match="after its app context ended"):
            _use_after_teardown(state_app)


def _use_after_teardown(app: Flask) -> None:
    with app.app_context():
        state = g.env.STATE
        state.get("x")
    state.get("x")


OUTLIVE = """
import sys, threading, time
from flask import Flask, g
from flask_ploy import FlaskPloy
url, table = sys.argv[1], sys.argv[2]
app = Flask("outlive")
app.config.update(PLOY_BINDINGS={"state": {"STATE": "default"}}, PLOY_STATE_URL=url,
                  PLOY_STATE_TABLE=table, PLOY_STATE_ENGINE_OPTIONS={"pool_size": 1})
FlaskPloy(app)
with app.app_context():
    g.env.STATE.clear(); g.env.STATE.set("x", "X")
done = threading.Event()

@app.get("/bg")
def bg():
    s = g.env.STATE                      # the thread below is the first to use it
    def loop():
        for i in range(3000):
            try:
                s.set("bg", str(i)); s.get("bg")
            except RuntimeError:         # the request ended: expected, and clean
                break
        done.set()
    threading.Thread(target=loop, daemon=True).start()
    time.sleep(0.05)
    return "started"

@app.get("/r")
def r():
    return g.env.STATE.get("x") or "None"

c = app.test_client()
c.get("/bg")
wrong = 0
for _ in range(300):
    got = c.get("/r")
    if got.status_code != 200 or got.text != "X":
        wrong += 1
done.wait(30)
print("wrong", wrong)
"""


@pytest.mark.parametrize("kind", ["sqlite", "mariadb"])
def test_a_thread_that_outlives_its_request(tmp_path: Any, state_table: str, kind: str) -> None:
    """A view hands g.env.STATE to a thread that uses it after the request
    ended: SIGSEGV on SQLite, another key's value on MariaDB, before."""
    import subprocess
    import sys

    from . import servers
    from .conftest import _state_url

    url = _state_url(kind, tmp_path)
    script = tmp_path / "outlive.py"
    script.write_text(OUTLIVE)
    done = subprocess.run(
        [sys.executable, str(script), url, state_table],
        capture_output=True, text=True, timeout=120, cwd=servers.ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "wrong 0", done.stdout + done.stderr[-2000:]


FORKED = """
import multiprocessing as mp, sys
from flask import Flask, g
from flask_ploy import FlaskPloy
url, table = sys.argv[1], sys.argv[2]
app = Flask("forked")
app.config.update(PLOY_BINDINGS={"state": {"STATE": "default"}}, PLOY_STATE_URL=url,
                  PLOY_STATE_TABLE=table)
FlaskPloy(app)

def work(i):
    s = g.env.STATE
    s.set(f"k{i}", str(i))
    return s.get(f"k{i}") == str(i)

with app.app_context():
    g.env.STATE.clear(); g.env.STATE.set("warm", "1")
    parent = g.env.STATE.connection()
    with mp.get_context("fork").Pool(4) as pool:
        results = pool.map_async(work, range(200)).get(timeout=60)
    assert g.env.STATE.connection() is parent
    assert g.env.STATE.get("warm") == "1"
    print("right", sum(results), "of", len(results), "keys", g.env.STATE.count())
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_a_process_forked_inside_an_app_context(tmp_path: Any, state_table: str, kind: str) -> None:
    """A CLI command's multiprocessing pool forks inside the app context: the
    children used the parent's connection (a hang on PostgreSQL and MariaDB,
    each other's values)."""
    import subprocess
    import sys

    from . import servers
    from .conftest import _state_url

    url = _state_url(kind, tmp_path)
    script = tmp_path / "forked.py"
    script.write_text(FORKED)
    done = subprocess.run(
        [sys.executable, str(script), url, state_table],
        capture_output=True, text=True, timeout=120, cwd=servers.ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "right 200 of 200 keys 201", done.stdout
