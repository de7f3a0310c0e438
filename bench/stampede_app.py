"""One slow report three ways, for :mod:`bench.stampede`, served by gunicorn.

``/ploy/<key>`` uses ``Cache.get_or_set``; ``/seed/<key>`` the seed's get,
compute, set; ``/fc/<key>`` Flask-Caching's ``@memoize`` (RedisCache), all on
the Redis of ``BENCH_REDIS_URL``. The report takes ``STAMPEDE_SECONDS``
(0.2) and lives ``STAMPEDE_TTL`` seconds (5). Every computation adds one to
``<prefix>:computed:<variant>:<key>`` in Redis; a request that neither
computed after reading a miss (it waited for another's computation) pushes
its time to ``<prefix>:waited:<variant>:<key>``;
a request slower than 100 ms pushes its path to ``<prefix>:slow:...``.
"""

from __future__ import annotations

import json
import os
import time

import redis
from flask import Flask, g
from flask_caching import Cache as FlaskCaching

from flask_ploy import FlaskPloy

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_PREFIX", "stampede")
SECONDS = float(os.environ.get("STAMPEDE_SECONDS", "0.2"))
TTL = int(os.environ.get("STAMPEDE_TTL", "5"))

app = Flask(__name__)
app.config.update(
    PLOY_BINDINGS={"cache": {"CACHE": "default"}},
    PLOY_CACHE_URL=URL,
    PLOY_CACHE_KEY_PREFIX=PREFIX,
    CACHE_TYPE="RedisCache",
    CACHE_REDIS_URL=URL,
    CACHE_KEY_PREFIX=f"{PREFIX}fc:",
)
ploy = FlaskPloy(app)
fc = FlaskCaching(app)
counts = redis.Redis.from_url(URL)

# Instrumentation: which path each get_or_set took. A request that read a
# miss and did not compute waited for another's computation; a hit whose
# lock was refused was served the old value at once (another caller was
# recomputing it early).
_backend = ploy.app_bindings(app).caches["CACHE"].backend
_get, _lock = _backend.get, _backend.lock


def _counted_get(key: str) -> str | None:
    g.gets = g.get("gets", 0) + 1
    value = _get(key)
    g.missed = g.get("missed", False) or value is None
    return value


def _counted_lock(key: str, token: str, seconds: float) -> bool:
    got = _lock(key, token, seconds)
    g.refused = g.get("refused", 0) + (not got)
    return got


_backend.get = _counted_get  # type: ignore[method-assign]
_backend.lock = _counted_lock  # type: ignore[method-assign]


def compute(variant: str, key: str) -> str:
    """The slow report: counted, then ``SECONDS`` of waiting (a slow query)."""
    counts.incr(f"{PREFIX}:computed:{variant}:{key}")
    counts.rpush(f"{PREFIX}:at:{variant}:{key}", time.time())
    g.computed = True
    time.sleep(SECONDS)
    return json.dumps({"key": key, "at": time.time(), "pid": os.getpid()})


@fc.memoize(timeout=TTL)
def fc_report(key: str) -> str:
    return compute("fc", key)


def _answer(variant: str, key: str, started: float, value: str) -> dict[str, object]:
    took = time.perf_counter() - started
    computed = bool(g.get("computed"))
    # A miss it did not compute: it waited for another's computation (in this
    # process, on its flight; in another, polling). The seed and memoize
    # never wait: every miss computes.
    waited = variant == "ploy" and not computed and g.get("missed", False)
    if waited:
        counts.rpush(f"{PREFIX}:waited:{variant}:{key}", time.time())
    if took > 0.1:
        counts.rpush(f"{PREFIX}:slow:{variant}:{key}", f"{time.time()} {took:.3f} {computed}"
                     f" refused={g.get('refused', 0)} gets={g.get('gets', 0)}")  # fmt: skip
    return {"computed": computed, "waited": bool(waited), "ms": round(took * 1000, 2),
            "bytes": len(value)}  # fmt: skip


@app.get("/ploy/<key>")
def ploy_report(key: str) -> dict[str, object]:
    started = time.perf_counter()
    value = g.env.CACHE.get_or_set(f"report:{key}", lambda: compute("ploy", key), ttl=TTL)
    return _answer("ploy", key, started, value)


@app.get("/seed/<key>")
def seed_report(key: str) -> dict[str, object]:
    started = time.perf_counter()
    value = g.env.CACHE.get(f"seed:{key}")
    if value is None:
        value = compute("seed", key)
        g.env.CACHE.set(f"seed:{key}", value, ttl=TTL)
    return _answer("seed", key, started, value)


@app.get("/fc/<key>")
def flask_caching_report(key: str) -> dict[str, object]:
    started = time.perf_counter()
    return _answer("fc", key, started, fc_report(key))


@app.get("/ping")
def ping() -> dict[str, object]:
    return {"pid": os.getpid()}
