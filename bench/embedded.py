"""The cache group's second half: the SQLite cache (the default) beside
memory:// and Redis, against raw ``sqlite3`` on the same file.

The raw contender is what a user would write by hand for the same
behaviour: its own ``sqlite3`` connection (WAL, ``synchronous=NORMAL``, a
busy timeout), the same statements as the SQLite cache (expiry filtered on
read), ``conn.execute(...)`` per call. Every contender works on the same
keys, in one interleaved measurement, so the ratios compare them directly.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, g

from ._harness import Plan, Run, interleave, summarize

VALUE = "v" * 64
#: (key, the SQLite cache's full key, the Redis binding's full key)
Keys = tuple[str, str, str]


class RawCache:
    """A cache on the SQLite cache's table, written by hand with ``sqlite3``."""

    def __init__(self, path: str) -> None:
        from flask_ploy.cache.sqlite import GET, SET

        self.conn = sqlite3.connect(path, isolation_level=None, timeout=0.5)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.get_sql, self.set_sql = GET, SET

    def ops(self) -> dict[str, Run]:
        conn, get_sql, set_sql = self.conn, self.get_sql, self.set_sql
        now = time.time

        def get(ks: Sequence[Keys]) -> None:
            for _k, f, _r in ks:
                row = conn.execute(get_sql, (f, now())).fetchone()
                _ = None if row is None else row[0]

        def set_(ks: Sequence[Keys]) -> None:
            for _k, f, _r in ks:
                conn.execute(set_sql, (f, VALUE, None, now()))

        def incr(ks: Sequence[Keys]) -> None:
            for _k, f, _r in ks:
                t = now()
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(
                    "SELECT value, expires_at FROM ploy_cache WHERE key = ?", (f,)
                ).fetchone()
                if row is None or (row[1] is not None and row[1] <= t):
                    new, expires = 1, None
                else:
                    new, expires = int(row[0]) + 1, row[1]
                conn.execute(set_sql, (f, str(new), expires, t))
                conn.execute("COMMIT")

        return {"get": get, "set": set_, "incr": incr}


def _binding_ops(binding: Callable[[], Any]) -> dict[str, Run]:
    """get/set/incr on ``binding()`` (a local, or ``g.env.X`` looked up per call)."""

    def get(ks: Sequence[Keys]) -> None:
        for k, _f, _r in ks:
            binding().get(k)

    def set_(ks: Sequence[Keys]) -> None:
        for k, _f, _r in ks:
            binding().set(k, VALUE)

    def incr(ks: Sequence[Keys]) -> None:
        for k, _f, _r in ks:
            binding().incr(k)

    return {"get": get, "set": set_, "incr": incr}


def _local_ops(binding: Any) -> dict[str, Run]:
    """Like :func:`_binding_ops`, on a binding held in a local (no lookup)."""

    def get(ks: Sequence[Keys]) -> None:
        for k, _f, _r in ks:
            binding.get(k)

    def set_(ks: Sequence[Keys]) -> None:
        for k, _f, _r in ks:
            binding.set(k, VALUE)

    def incr(ks: Sequence[Keys]) -> None:
        for k, _f, _r in ks:
            binding.incr(k)

    return {"get": get, "set": set_, "incr": incr}


def _redis_ops(client: Any) -> dict[str, Run]:
    def get(ks: Sequence[Keys]) -> None:
        for _k, _f, r in ks:
            client.get(r)

    def set_(ks: Sequence[Keys]) -> None:
        for _k, _f, r in ks:
            client.set(r, VALUE)

    def incr(ks: Sequence[Keys]) -> None:
        for _k, _f, r in ks:
            client.incr(r)

    return {"get": get, "set": set_, "incr": incr}


def embedded_group(
    cfg: dict[str, Any],
    plan: Plan,
    full_sampler: Callable[[list[str], int, int], Callable[[int], Any]],
) -> dict[str, Any]:
    """get, set and incr: sqlite3 (the baseline), the SQLite cache, memory:// and Redis.

    :param full_sampler: ``full_sampler(keys, n, seed)`` gives ``keys(round)``
        for :func:`~bench._harness.interleave` (``groups._sampler``).
    """

    def sampler(src: list[str], seed: int) -> Callable[[int], Any]:
        return full_sampler(src, plan.ops, seed)

    import redis

    from flask_ploy import FlaskPloy

    tag, url = cfg["tag"] + "e", cfg["redis_url"]
    path = os.path.join(cfg["tmp"], "cache-embedded.sqlite3")
    n = cfg["dataset"]
    app = Flask("bench_cache_embedded", root_path=cfg["tmp"])
    app.config.update(
        PLOY_BINDINGS={"cache": {"CACHE": "default", "MEM": "mem", "REDIS": "redis"}},
        PLOY_CACHE_URL=f"sqlite:///{path}",
        PLOY_CACHE_RESOURCES={"mem": "memory://", "redis": url},
        PLOY_CACHE_KEY_PREFIX=tag,
        PLOY_CACHE_MAX_ENTRIES=4 * n,  # no eviction during the run
        TESTING=True,  # memory:// is meant here: no warning
    )
    FlaskPloy(app)
    names = [f"k{i:07d}" for i in range(n)]
    counters = [f"n{i:07d}" for i in range(n)]
    full = {k: f"{tag}:default:{k}" for k in names + counters}
    rfull = {k: f"{tag}:redis:{k}" for k in names + counters}
    raw_redis = redis.Redis.from_url(url, decode_responses=True)
    out: dict[str, Any] = {"file": "the SQLite cache's own file, WAL, synchronous=NORMAL"}
    # get_or_set on a hit against get, on the SQLite cache.
    out["get_or_set"] = get_or_set_group(cfg, plan, full_sampler, "sqlite")
    ctx = app.app_context()
    ctx.push()
    try:
        for binding in (g.env.CACHE, g.env.MEM, g.env.REDIS):
            binding.set_many(dict.fromkeys(names, VALUE))
        raw = RawCache(path)
        contenders: dict[str, dict[str, Run]] = {
            "sqlite3": raw.ops(),
            "flask-ploy sqlite: (binding)": _local_ops(g.env.CACHE),
            "flask-ploy sqlite: (g.env)": _binding_ops(lambda: g.env.CACHE),
            "flask-ploy memory:// (binding)": _local_ops(g.env.MEM),
            "flask-ploy Redis (binding)": _local_ops(g.env.REDIS),
            "redis-py (Redis)": _redis_ops(raw_redis),
        }
        assert g.env.CACHE.get(names[0]) == VALUE
        for i, op in enumerate(("get", "set", "incr")):
            sample = sampler(counters if op == "incr" else names, 30 + i)

            def keys(r: int, sample: Callable[[int], Any] = sample) -> list[Keys]:
                return [(k, full[k], rfull[k]) for k in sample(r)]

            runs = {name: ops[op] for name, ops in contenders.items()}
            samples = interleave(runs, keys, plan)
            out[op] = {"baseline": "sqlite3", "ops": plan.ops,
                       "results": summarize(samples, "sqlite3")}  # fmt: skip
    finally:
        for binding in (g.env.CACHE, g.env.REDIS):
            binding.clear()
        ctx.pop()
        app.extensions["ploy"].app_bindings(app).close()
    return out


def get_or_set_group(
    cfg: dict[str, Any],
    plan: Plan,
    sampler: Callable[[list[str], int, int], Callable[[int], Any]],
    kind: str,
) -> dict[str, Any]:
    """``get_or_set`` on a hit against ``get``, both on the same computed keys.

    The keys hold what ``get_or_set`` stores (the value behind its envelope:
    a 200 ms computation, an hour to live), so both take the path of a real
    hit: ``get`` unwraps, ``get_or_set`` also applies the early-recomputation
    rule (which, an hour from the expiry, never fires).

    :param kind: ``"redis"`` (the Redis of the config) or ``"sqlite"``.
    """
    from flask_ploy import FlaskPloy
    from flask_ploy.cache.flight import wrap

    tag = cfg["tag"] + "gos"
    app = Flask(f"bench_get_or_set_{kind}", root_path=cfg["tmp"])
    url = (
        cfg["redis_url"]
        if kind == "redis"
        else "sqlite:///" + os.path.join(cfg["tmp"], "cache-gos.sqlite3")
    )
    app.config.update(
        PLOY_BINDINGS={"cache": {"CACHE": "default"}},
        PLOY_CACHE_URL=url,
        PLOY_CACHE_KEY_PREFIX=tag,
        PLOY_CACHE_MAX_ENTRIES=4 * cfg["dataset"],
    )
    FlaskPloy(app)
    names = [f"k{i:07d}" for i in range(cfg["dataset"])]
    computed = wrap(VALUE, 0.2, 3600, time.time())
    ctx = app.app_context()
    ctx.push()
    try:
        cache = g.env.CACHE
        cache.backend.set_many([(f"{tag}:default:{k}", computed) for k in names], 3600)
        assert cache.get(names[0]) == VALUE

        def compute() -> str:
            raise AssertionError("a hit never computes")

        def get(ks: Sequence[str]) -> None:
            for k in ks:
                cache.get(k)

        def get_or_set(ks: Sequence[str]) -> None:
            for k in ks:
                cache.get_or_set(k, compute, 600)

        def env_get_or_set(ks: Sequence[str]) -> None:
            for k in ks:
                g.env.CACHE.get_or_set(k, compute, 600)

        samples = interleave(
            {
                "flask-ploy get (binding)": get,
                "flask-ploy get_or_set (binding)": get_or_set,
                "flask-ploy get_or_set (g.env)": env_get_or_set,
            },
            sampler(names, plan.ops, 40),
            plan,
        )
        return {
            "backend": kind,
            "baseline": "flask-ploy get (binding)",
            "ops": plan.ops,
            "results": summarize(samples, "flask-ploy get (binding)"),
        }
    finally:
        g.env.CACHE.clear()
        ctx.pop()
        app.extensions["ploy"].app_bindings(app).close()
