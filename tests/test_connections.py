"""Connection pools: bounded, returned after every request, never shared
with a forked child (gunicorn --preload)."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from flask import Flask, g

from . import servers


def load_app(make_app: Any, cache_url: str, state_url: str, **config: Any) -> Flask:
    app = make_app(
        PLOY_CACHE_URL=cache_url,
        PLOY_STATE_URL=state_url,
        PLOY_CACHE_KEY_PREFIX=f"c{uuid.uuid4().hex[:8]}",
        **config,
    )

    @app.get("/hit/<int:i>")
    def hit(i: int) -> Any:
        n = g.env.CACHE.incr("hits")
        g.env.STATE.set(f"k{i % 50}", str(i))
        return {"n": n, "v": g.env.STATE.get(f"k{i % 50}")}

    return app


def test_5000_requests_stay_within_the_pool_bounds(
    make_app: Any, own_redis: servers.RedisProc, tmp_path: Any
) -> None:
    bound = 6
    app = load_app(
        make_app,
        own_redis.url,
        f"sqlite:///{tmp_path}/pool.db",
        PLOY_CACHE_OPTIONS={"max_connections": bound, "timeout": 5},
        PLOY_STATE_ENGINE_OPTIONS={"pool_size": 3, "max_overflow": 2},
    )
    monitor = redis.Redis(port=own_redis.port)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], int(monitor.info("clients")["connected_clients"]))
            stop.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()

    def request(i: int) -> int:
        with app.test_client() as client:
            response = client.get(f"/hit/{i}")
        assert response.status_code == 200
        return int(response.json["n"])

    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            results = list(pool.map(request, range(5000)))
    finally:
        stop.set()
        sampler.join()
    assert sorted(results) == list(range(1, 5001))  # every incr counted once
    store = app.extensions["ploy"].state_store("STATE", app)
    assert store.engine.pool.checkedout() == 0
    print(f"\npeak connected_clients {peak[0]} (pool bound {bound}, +1 monitor)")
    assert 1 < peak[0] <= bound + 1


def _child(app: Flask, queue: Any) -> None:
    try:
        with app.app_context():
            g.env.CACHE.set("child", "ok")
            g.env.STATE.set("child", "ok")
            backend_id = _backend_id(g.env.STATE.connection())
            queue.put(
                (
                    "ok",
                    g.env.CACHE.backend.client.client_id(),
                    backend_id,
                    g.env.CACHE.get("child"),
                    g.env.STATE.get("child"),
                )
            )
    except BaseException as exc:  # pragma: no cover - reported to the parent
        queue.put(("error", repr(exc), None, None, None))


def _backend_id(conn: Any) -> Any:
    cur = conn.cursor()
    try:
        cur.execute("SELECT pg_backend_pid()")
    except Exception:
        return None
    return cur.fetchone()[0]


@pytest.mark.parametrize("state_kind", ["sqlite", "postgresql"])
def test_fork_safety(make_app: Any, tmp_path: Any, state_kind: str) -> None:
    servers.need(servers.redis_ok(), "Redis")
    if state_kind == "postgresql":
        servers.need(servers.sql_ok(servers.POSTGRES_URL), "PostgreSQL")
        state_url = servers.POSTGRES_URL
    else:
        state_url = f"sqlite:///{tmp_path}/fork.db"
    app = make_app(
        PLOY_CACHE_URL=servers.REDIS_URL,
        PLOY_STATE_URL=state_url,
        PLOY_STATE_TABLE=f"ploy_fork_{uuid.uuid4().hex[:8]}",
        PLOY_CACHE_KEY_PREFIX=f"fork{uuid.uuid4().hex[:8]}",
    )
    # The parent uses both pools, so each holds an open connection when it forks.
    with app.app_context():
        g.env.CACHE.set("parent", "ok")
        g.env.STATE.set("parent", "ok")
        parent_redis_id = g.env.CACHE.backend.client.client_id()
        parent_pg = _backend_id(g.env.STATE.connection())
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_child, args=(app, queue)) for _ in range(3)]
    for p in children:
        p.start()
    results = [queue.get(timeout=30) for _ in children]
    for p in children:
        p.join(10)
        assert p.exitcode == 0
    assert all(r[0] == "ok" for r in results), results
    redis_ids = {r[1] for r in results}
    assert parent_redis_id not in redis_ids and len(redis_ids) == 3  # no shared Redis socket
    assert all(r[3] == "ok" and r[4] == "ok" for r in results)
    if state_kind == "postgresql":
        pg_ids = {r[2] for r in results}
        assert parent_pg not in pg_ids and len(pg_ids) == 3  # no shared database session
    with app.app_context():
        assert g.env.STATE.get("parent") == "ok"  # the parent's connections still work
        assert g.env.CACHE.get("parent") == "ok"
        g.env.CACHE.clear()
        store = app.extensions["ploy"].state_store("STATE", app)
        g.env.STATE.clear()
    store.table.drop(store.engine)
