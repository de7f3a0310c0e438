""":mod:`bench.ploy_app` on the SQLite cache (the default): the file named by
``BENCH_CACHE_PATH``, shared by the gunicorn workers."""

from __future__ import annotations

import os

from .ploy_app import make_app

app = make_app(
    "sqlite:///" + os.environ.get("BENCH_CACHE_PATH", os.path.abspath("bench-cache.sqlite3"))
)
