"""The seed's basic routes on flask-ploy, for the HTTP benchmark.

Started by ``python -m bench`` under gunicorn; configured by environment:
``BENCH_REDIS_URL``, ``BENCH_SQLITE_PATH`` and ``BENCH_PREFIX``.
:mod:`bench.ploy_sqlite_app` is the same app on the SQLite cache.
"""

from __future__ import annotations

import os

from flask import Flask, g

from flask_ploy import FlaskPloy


def make_app(cache_url: str) -> Flask:
    """The app, its cache on *cache_url*."""
    app = Flask(__name__)
    app.config["PLOY_CACHE_URL"] = cache_url
    app.config["PLOY_STATE_URL"] = "sqlite:///" + os.environ.get(
        "BENCH_SQLITE_PATH", os.path.join(app.instance_path, "bench.sqlite3")
    )
    app.config["PLOY_CACHE_KEY_PREFIX"] = os.environ.get("BENCH_PREFIX", "ploy")
    FlaskPloy(app)  # reads bench/ploy.yaml

    @app.get("/cache/get")
    def cache_get() -> dict[str, object]:
        return {"value": g.env.CACHE.get("greeting")}

    @app.post("/cache/set")
    def cache_set() -> dict[str, object]:
        g.env.CACHE.set("greeting", "hello")
        return {"success": True}

    @app.get("/state/get")
    def state_get() -> dict[str, object]:
        return {"value": g.env.STATE.get("greeting")}

    @app.post("/state/set")
    def state_set() -> dict[str, object]:
        g.env.STATE.set("greeting", "hello world")
        return {"success": True}

    return app


app = make_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
