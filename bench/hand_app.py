"""The same routes written by hand, as a Flask user would: a module-level
redis-py client, and a sqlite3 connection per request through ``g`` and a
teardown function, as in the Flask tutorial (with flask-ploy's pragmas:
WAL, ``synchronous=NORMAL``, a busy timeout).

Reads and writes the same Redis key and the same SQLite table as
:mod:`bench.ploy_app`. Configured by environment like it.
"""

from __future__ import annotations

import os
import sqlite3

import redis
from flask import Flask, g

app = Flask(__name__)
DATABASE = os.environ.get("BENCH_SQLITE_PATH", os.path.join(app.instance_path, "bench.sqlite3"))
PREFIX = os.environ.get("BENCH_PREFIX", "ploy")
r = redis.Redis.from_url(
    os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"), decode_responses=True
)


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(DATABASE, detect_types=sqlite3.PARSE_DECLTYPES, timeout=10.0)
        g.db.row_factory = sqlite3.Row
        g.db.execute("PRAGMA synchronous = NORMAL")  # WAL is set once, in the file
    return g.db  # type: ignore[no-any-return]


@app.teardown_appcontext
def close_db(exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


@app.get("/cache/get")
def cache_get() -> dict[str, object]:
    return {"value": r.get(f"{PREFIX}:default:greeting")}


@app.post("/cache/set")
def cache_set() -> dict[str, object]:
    r.set(f"{PREFIX}:default:greeting", "hello")
    return {"success": True}


@app.get("/state/get")
def state_get() -> dict[str, object]:
    row = (
        get_db()
        .execute(
            "SELECT value FROM ploy_state WHERE resource = ? AND key = ?", ("default", "greeting")
        )
        .fetchone()
    )
    return {"value": None if row is None else row["value"]}


@app.post("/state/set")
def state_set() -> dict[str, object]:
    db = get_db()
    db.execute(
        "INSERT INTO ploy_state (resource, key, value) VALUES (?, ?, ?)"
        " ON CONFLICT (resource, key) DO UPDATE SET value = excluded.value",
        ("default", "greeting", "hello world"),
    )
    db.commit()
    return {"success": True}
