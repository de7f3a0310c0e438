"""The benchmark groups. Each runs in a process of its own.

``python -m bench.groups NAME CONFIG.json OUT.json`` runs group *NAME* with
the settings in CONFIG.json and writes its results to OUT.json. The runner
(:mod:`bench.__main__`) starts one such process per group, so one group's
memory and warm caches never colour another's, while every contender of a
group shares the process, the data and the rounds.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from flask import Flask, g

from ._harness import Plan, Run, interleave, summarize

R = "default"  # the resource every state contender works on
VALUE = "v" * 64  # the value written by every set


def _plan(cfg: dict[str, Any], scale: float = 1.0) -> Plan:
    p = cfg["plan"]
    return Plan(rounds=p["rounds"], ops=max(1, int(p["ops"] * scale)), warmup=p["warmup"])


def _sampler(keys: Sequence[Any], n: int, seed: int) -> Callable[[int], list[Any]]:
    rng = random.Random(seed)
    if len(keys) <= n:
        return lambda r: list(keys)
    return lambda r: rng.sample(keys, n)


def _measure(
    contenders: dict[str, Run],
    keys: Callable[[int], Sequence[Any]],
    plan: Plan,
    baseline: str,
    **kwargs: Any,
) -> dict[str, Any]:
    samples = interleave(contenders, keys, plan, **kwargs)
    return {"baseline": baseline, "ops": plan.ops, "results": summarize(samples, baseline)}


# ---------------------------------------------------------------------------
# Cache: flask-ploy vs raw redis-py vs Flask-Caching, on the same Redis.


def cache_group(cfg: dict[str, Any]) -> dict[str, Any]:
    import redis
    from flask_caching import Cache as FlaskCaching

    from flask_ploy import FlaskPloy

    tag, url = cfg["tag"], cfg["redis_url"]
    app = Flask("bench_cache", root_path=cfg["tmp"])
    app.config.update(
        PLOY_BINDINGS={"cache": {"CACHE": "default"}},
        PLOY_CACHE_URL=url,
        PLOY_CACHE_KEY_PREFIX=tag,
        CACHE_TYPE="RedisCache",
        CACHE_REDIS_URL=url,
        CACHE_KEY_PREFIX=f"{tag}fc:",
        CACHE_DEFAULT_TIMEOUT=0,  # plain SET, as the others do
    )
    FlaskPloy(app)
    fc = FlaskCaching(app)
    raw = redis.Redis.from_url(url, decode_responses=True)  # how a user writes it
    ns = f"{tag}:default:"
    n = cfg["dataset"]
    names = [f"k{i:07d}" for i in range(n)]
    counters = [f"n{i:07d}" for i in range(n)]
    pipe = raw.pipeline(transaction=False)
    for i, k in enumerate(names):
        pipe.set(ns + k, VALUE)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    ctx = app.app_context()
    ctx.push()
    out: dict[str, Any] = {}
    try:
        fc.set_many(dict.fromkeys(names, VALUE))
        cache = g.env.CACHE
        full = {k: ns + k for k in names + counters}

        def pairs(src: list[str], seed: int) -> Callable[[int], list[tuple[str, str]]]:
            sample = _sampler(src, _plan(cfg).ops, seed)
            return lambda r: [(k, full[k]) for k in sample(r)]

        # get ----------------------------------------------------------------
        def raw_get(ks: Sequence[tuple[str, str]]) -> None:
            for _k, f in ks:
                raw.get(f)

        def ploy_get(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                cache.get(k)

        def env_get(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                g.env.CACHE.get(k)

        def fc_get(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                fc.get(k)

        assert cache.get(names[0]) == VALUE
        assert fc.get(names[0]) == VALUE
        out["get"] = _measure(
            {
                "redis-py": raw_get,
                "flask-ploy (binding)": ploy_get,
                "flask-ploy (g.env)": env_get,
                "Flask-Caching": fc_get,
            },
            pairs(names, 1),
            _plan(cfg),
            "redis-py",
        )

        # set ----------------------------------------------------------------
        def raw_set(ks: Sequence[tuple[str, str]]) -> None:
            for _k, f in ks:
                raw.set(f, VALUE)

        def ploy_set(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                cache.set(k, VALUE)

        def env_set(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                g.env.CACHE.set(k, VALUE)

        def fc_set(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                fc.set(k, VALUE)

        out["set"] = _measure(
            {
                "redis-py": raw_set,
                "flask-ploy (binding)": ploy_set,
                "flask-ploy (g.env)": env_set,
                "Flask-Caching": fc_set,
            },
            pairs(names, 2),
            _plan(cfg),
            "redis-py",
        )
        assert raw.ttl(f"{tag}fc:{names[0]}") == -1  # no expiry: same command as the others

        # incr ---------------------------------------------------------------
        def raw_incr(ks: Sequence[tuple[str, str]]) -> None:
            for _k, f in ks:
                raw.incr(f)

        def ploy_incr(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                cache.incr(k)

        def env_incr(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                g.env.CACHE.incr(k)

        def fc_incr(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                fc.cache.inc(k)

        out["incr"] = _measure(
            {
                "redis-py": raw_incr,
                "flask-ploy (binding)": ploy_incr,
                "flask-ploy (g.env)": env_incr,
                "Flask-Caching": fc_incr,
            },
            pairs(counters, 3),
            _plan(cfg),
            "redis-py",
        )

        # get_many at 1, 10, 100 keys ----------------------------------------
        many: dict[str, Any] = {}
        for size in cfg["many_sizes"]:
            batches = max(4, _plan(cfg).ops // max(1, size // 4))
            rng = random.Random(size)

            def batch_keys(
                r: int, size: int = size, batches: int = batches, rng: Any = rng
            ) -> list[Any]:
                batch = []
                for _ in range(batches):
                    ks = rng.sample(names, min(size, len(names)))
                    batch.append((ks, [full[k] for k in ks]))
                return batch

            def raw_mget(bs: Sequence[Any]) -> None:
                for _ks, fs in bs:
                    raw.mget(fs)

            def ploy_mget(bs: Sequence[Any]) -> None:
                for ks, _fs in bs:
                    cache.get_many(ks)

            def env_mget(bs: Sequence[Any]) -> None:
                for ks, _fs in bs:
                    g.env.CACHE.get_many(ks)

            def fc_mget(bs: Sequence[Any]) -> None:
                for ks, _fs in bs:
                    fc.get_many(*ks)

            plan = Plan(_plan(cfg).rounds, batches, _plan(cfg).warmup)
            many[str(size)] = _measure(
                {
                    "redis-py": raw_mget,
                    "flask-ploy (binding)": ploy_mget,
                    "flask-ploy (g.env)": env_mget,
                    "Flask-Caching": fc_mget,
                },
                batch_keys,
                plan,
                "redis-py",
            )
        out["get_many"] = many
    finally:
        ctx.pop()
        for pattern in (f"{tag}:*", f"{tag}fc:*"):
            keys = list(raw.scan_iter(match=pattern, count=1000))
            for i in range(0, len(keys), 1000):
                raw.delete(*keys[i : i + 1000])
    from .embedded import embedded_group, get_or_set_group

    # get_or_set on a hit against get, on the same computed keys.
    out["get_or_set"] = get_or_set_group(cfg, _plan(cfg), _sampler, "redis")

    # The SQLite cache beside memory:// and Redis, against raw sqlite3.
    out["embedded"] = embedded_group(cfg, _plan(cfg), _sampler)
    return out


# ---------------------------------------------------------------------------
# State: flask-ploy vs raw driver vs diskcache vs Flask-SQLAlchemy ORM code.


def _orm(app: Flask, table: str, sqlite: bool) -> tuple[Any, Any]:
    """Flask-SQLAlchemy and a (resource, key) model, as a user would write them."""
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()

    class Entry(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = table
        __table_args__ = {"sqlite_with_rowid": False}
        resource = db.Column(sa.String(64), primary_key=True)
        key = db.Column(sa.Text, primary_key=True)
        value = db.Column(sa.Text, nullable=False)

    db.init_app(app)
    if sqlite:
        with app.app_context():

            @sa.event.listens_for(db.engine, "connect")
            def _pragmas(dbapi_conn: Any, record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
                cur.execute("PRAGMA busy_timeout = 10000")
                cur.close()

    return db, Entry


class _RawSQLite:
    """The hand-written sqlite3 version, on flask-ploy's table and pragmas."""

    def __init__(self, path: str, table: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        t = table
        self.get_sql = f"SELECT value FROM {t} WHERE resource = ? AND key = ?"
        self.set_sql = (
            f"INSERT INTO {t} (resource, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT (resource, key) DO UPDATE SET value = excluded.value"
        )
        self.incr_sql = (
            f"INSERT INTO {t} (resource, key, value) VALUES (?, ?, '1')"
            " ON CONFLICT (resource, key) DO UPDATE"
            " SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) RETURNING value"
        )
        self.list_sql = (
            f"SELECT key FROM {t} WHERE resource = ? AND key > ? AND key < ? ORDER BY key LIMIT ?"
        )

    def ops(self) -> dict[str, Run]:
        conn, get_sql, set_sql = self.conn, self.get_sql, self.set_sql
        incr_sql, list_sql = self.incr_sql, self.list_sql

        def get(ks: Sequence[str]) -> None:
            for k in ks:
                row = conn.execute(get_sql, (R, k)).fetchone()
                _ = None if row is None else row[0]

        def set_(ks: Sequence[str]) -> None:
            for k in ks:
                conn.execute(set_sql, (R, k, VALUE))

        def incr(ks: Sequence[str]) -> None:
            for k in ks:
                int(conn.execute(incr_sql, (R, k)).fetchone()[0])

        def list_(ks: Sequence[str]) -> None:
            for k in ks:
                rows = conn.execute(list_sql, (R, k, "l", 101)).fetchall()
                _ = [r[0] for r in rows[:100]]

        return {"get": get, "set": set_, "incr": incr, "list": list_}


class _RawPsycopg:
    """The hand-written psycopg version, on flask-ploy's table (bytea columns).

    It runs on the same connection as flask-ploy (borrowed by the binding,
    in autocommit mode): on 2 shared cores, two connections doing the same
    work differ by up to 30% depending on where the scheduler puts each
    server process, which would swamp the difference in code.
    """

    def __init__(self, conn: Any, table: str) -> None:
        self.conn = conn
        assert conn.autocommit
        t = table
        self.get_sql = f"SELECT value FROM {t} WHERE resource = %s AND key = %s"
        self.set_sql = (
            f"INSERT INTO {t} (resource, key, value) VALUES (%s, %s, %s)"
            " ON CONFLICT (resource, key) DO UPDATE SET value = EXCLUDED.value"
        )
        self.incr_sql = (
            f"INSERT INTO {t} (resource, key, value) VALUES (%s, %s, '1'::bytea)"
            f" ON CONFLICT (resource, key) DO UPDATE SET value = convert_to("
            f"(convert_from({t}.value, 'UTF8')::bigint + 1)::text, 'UTF8') RETURNING value"
        )
        self.list_sql = (
            f"SELECT key FROM {t} WHERE resource = %s AND key > %s AND key < %s"
            " ORDER BY key LIMIT %s"
        )

    def ops(self) -> dict[str, Run]:
        conn, get_sql, set_sql = self.conn, self.get_sql, self.set_sql
        incr_sql, list_sql = self.incr_sql, self.list_sql
        value = VALUE.encode()

        def get(ks: Sequence[str]) -> None:
            for k in ks:
                row = conn.execute(get_sql, (R, k.encode())).fetchone()
                _ = None if row is None else row[0].decode()

        def set_(ks: Sequence[str]) -> None:
            for k in ks:
                conn.execute(set_sql, (R, k.encode(), value))

        def incr(ks: Sequence[str]) -> None:
            for k in ks:
                row = conn.execute(incr_sql, (R, k.encode())).fetchone()
                int(row[0].decode())

        def list_(ks: Sequence[str]) -> None:
            for k in ks:
                rows = conn.execute(list_sql, (R, k.encode(), b"l", 101)).fetchall()
                _ = [r[0].decode() for r in rows[:100]]

        return {"get": get, "set": set_, "incr": incr, "list": list_}


def _orm_ops(db: Any, entry: Any) -> dict[str, Run]:
    session = db.session

    def get(ks: Sequence[str]) -> None:
        for k in ks:
            row = session.get(entry, (R, k))
            _ = None if row is None else row.value

    def set_(ks: Sequence[str]) -> None:
        for k in ks:
            row = session.get(entry, (R, k))
            if row is None:
                session.add(entry(resource=R, key=k, value=VALUE))
            else:
                row.value = VALUE
            session.commit()

    def incr(ks: Sequence[str]) -> None:
        for k in ks:
            row = session.get(entry, (R, k))
            if row is None:
                session.add(entry(resource=R, key=k, value="1"))
            else:
                row.value = str(int(row.value) + 1)
            session.commit()

    def list_(ks: Sequence[str]) -> None:
        for k in ks:
            stmt = (
                sa.select(entry.key)
                .where(entry.resource == R, entry.key > k, entry.key < "l")
                .order_by(entry.key)
                .limit(101)
            )
            _ = session.execute(stmt).scalars().all()[:100]

    return {"get": get, "set": set_, "incr": incr, "list": list_}


def _ploy_ops(binding: Any) -> dict[str, Run]:
    st = binding

    def get(ks: Sequence[str]) -> None:
        for k in ks:
            st.get(k)

    def set_(ks: Sequence[str]) -> None:
        for k in ks:
            st.set(k, VALUE)

    def incr(ks: Sequence[str]) -> None:
        for k in ks:
            st.incr(k)

    def list_(ks: Sequence[str]) -> None:
        for k in ks:
            st.list("k", limit=100, cursor=k)

    return {"get": get, "set": set_, "incr": incr, "list": list_}


def _env_ops() -> dict[str, Run]:
    def get(ks: Sequence[str]) -> None:
        for k in ks:
            g.env.STATE.get(k)

    def set_(ks: Sequence[str]) -> None:
        for k in ks:
            g.env.STATE.set(k, VALUE)

    def incr(ks: Sequence[str]) -> None:
        for k in ks:
            g.env.STATE.incr(k)

    def list_(ks: Sequence[str]) -> None:
        for k in ks:
            g.env.STATE.list("k", limit=100, cursor=k)

    return {"get": get, "set": set_, "incr": incr, "list": list_}


def _diskcache_ops(dc: Any) -> dict[str, Run]:
    def get(ks: Sequence[str]) -> None:
        for k in ks:
            dc.get(k)

    def set_(ks: Sequence[str]) -> None:
        for k in ks:
            dc.set(k, VALUE)

    def incr(ks: Sequence[str]) -> None:
        for k in ks:
            dc.incr(k)

    return {"get": get, "set": set_, "incr": incr}


# Read-modify-write of a counter, four ways: incr (one statement), an
# optimistic replace loop, transact, and get + set (which loses updates).
# Alone (latency, interleaved as above, incr the baseline), then contended:
# threads of their own app contexts on one hot key, for a while each.

RMW_THREADS = 4


def _rmw_ops(retries: dict[str, int]) -> dict[str, Callable[[Any, str], object]]:
    def incr(st: Any, k: str) -> object:
        return st.incr(k)

    def replace_loop(st: Any, k: str) -> object:
        while True:
            old = st.get(k)
            if st.replace(k, old, str(int(old or 0) + 1)):
                return None
            retries["replace loop"] += 1

    def transact(st: Any, k: str) -> object:
        runs = 0

        def fn(tx: Any) -> None:
            nonlocal runs
            runs += 1
            tx.set(k, str(int(tx.get(k) or 0) + 1))

        st.transact(fn)
        retries["transact"] += runs - 1
        return None

    def get_set(st: Any, k: str) -> object:
        return st.set(k, str(int(st.get(k) or 0) + 1))

    return {"incr": incr, "replace loop": replace_loop, "transact": transact,
            "get + set (loses updates)": get_set}  # fmt: skip


def _contended(app: Flask, op: Callable[[Any, str], object], key: str, seconds: float) -> int:
    """Operations done by :data:`RMW_THREADS` threads on *key* in *seconds*."""
    import threading

    done = [0] * RMW_THREADS
    start = threading.Barrier(RMW_THREADS)

    def worker(i: int) -> None:
        with app.app_context():
            st = g.env.STATE
            st.get(key)  # borrow the connection before the clock starts
            start.wait()
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                op(st, key)
                done[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(RMW_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done)


def read_modify_write(cfg: dict[str, Any], app: Flask, seed: int) -> dict[str, Any]:
    """``read_modify_write`` of a state group: per-op latency, then contended throughput."""
    from collections import Counter

    st = g.env.STATE
    retries: Counter[str] = Counter()
    ops = _rmw_ops(retries)
    counters = [f"rmw{i:05d}" for i in range(max(cfg["dataset"] // 10, 100))]
    st.set_many(dict.fromkeys(counters, "0"))
    plan = _plan(cfg)
    alone = _measure(
        {name: (lambda ks, op=op: [op(st, k) for k in ks]) for name, op in ops.items()},
        _sampler(counters, plan.ops, seed),
        plan,
        "incr",
    )
    seconds = cfg.get("rmw_seconds", 1.0)
    contended: dict[str, Any] = {}
    for name, op in ops.items():
        key = f"hot:{name}"
        st.set(key, "0")
        retries.clear()
        n = _contended(app, op, key, seconds)
        value = int(st.get(key) or 0)
        contended[name] = {"ops_per_s": round(n / seconds), "retries_per_op": retries[name] / n
                           if n else 0.0, "lost": n - value}  # fmt: skip
    return {"alone": alone, "contended": {"threads": RMW_THREADS, "seconds": seconds,
                                          "results": contended}}  # fmt: skip


def state_group(cfg: dict[str, Any], kind: str) -> dict[str, Any]:
    from flask_ploy import FlaskPloy

    tag = cfg["tag"]
    app = Flask(f"bench_state_{kind}", root_path=cfg["tmp"])
    if kind == "sqlite":
        path = os.path.join(cfg["tmp"], "ops.sqlite3")
        url = f"sqlite:///{path}"
        table, orm_table = "ploy_state", "orm_state"
    else:
        url = cfg["pg_url"]
        table, orm_table = f"{tag}_state", f"{tag}_orm"
    app.config.update(
        PLOY_BINDINGS={"state": {"STATE": "default"}},
        PLOY_STATE_URL=url,
        PLOY_STATE_TABLE=table,
        SQLALCHEMY_DATABASE_URI=url,
    )
    FlaskPloy(app)
    db, entry = _orm(app, orm_table, kind == "sqlite")
    n = cfg["dataset"]
    names = [f"k{i:07d}" for i in range(n)]
    counters = [f"n{i:07d}" for i in range(n)]
    ctx = app.app_context()
    ctx.push()
    out: dict[str, Any] = {}
    try:
        st = g.env.STATE
        st.load(((k, VALUE) for k in names), replace=True)
        db.create_all()
        db.session.execute(sa.delete(entry))
        db.session.execute(
            sa.insert(entry), [{"resource": R, "key": k, "value": VALUE} for k in names]
        )
        db.session.commit()
        contenders: dict[str, dict[str, Run]] = {}
        if kind == "sqlite":
            import diskcache

            raw_name = "sqlite3"
            contenders[raw_name] = _RawSQLite(path, table).ops()
            dc = diskcache.Cache(os.path.join(cfg["tmp"], "diskcache"))
            with dc.transact():
                for k in names:
                    dc.set(k, VALUE)
            contenders["diskcache"] = _diskcache_ops(dc)
        else:
            raw_name = "psycopg"
            contenders[raw_name] = _RawPsycopg(st.connection(), table).ops()
        contenders["flask-ploy (binding)"] = _ploy_ops(st)
        contenders["flask-ploy (g.env)"] = _env_ops()
        contenders["Flask-SQLAlchemy ORM"] = _orm_ops(db, entry)
        assert st.get(names[0]) == VALUE

        def end_read_tx() -> None:
            db.session.rollback()  # a request's session ends with it

        for i, op in enumerate(("get", "set", "incr", "list")):
            src = counters if op == "incr" else names
            scale = 0.25 if op == "list" else 1.0
            out[op] = _measure(
                {name: ops[op] for name, ops in contenders.items() if op in ops},
                _sampler(src, _plan(cfg, scale).ops, 10 + i),
                _plan(cfg, scale),
                raw_name,
                between=end_read_tx,
            )
        out["read_modify_write"] = read_modify_write(cfg, app, 20)
    finally:
        db.session.remove()
        if kind != "sqlite":
            with db.engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {orm_table}"))
        ctx.pop()
    return out


# ---------------------------------------------------------------------------
# Cost growth: state get and list at each dataset size, interleaved.


MMAP_BYTES = 1 << 30  # PRAGMA mmap_size of the "+ mmap" contender
HOT_KEYS = 1000  # adjacent keys in the hot range of the "hot range" contender


def growth_group(cfg: dict[str, Any]) -> dict[str, Any]:
    """State get and list at each dataset size, all sizes interleaved.

    Per size: flask-ploy and raw sqlite3 on uniformly random keys (every
    read may miss SQLite's page cache); flask-ploy with ``PRAGMA
    mmap_size`` set by a SQLAlchemy ``connect`` listener; and flask-ploy on
    a hot range of 1,000 adjacent keys, which fits SQLite's page cache: the
    cost of the B-tree's depth alone, without cache misses.
    """
    from flask_ploy import FlaskPloy

    sizes: list[int] = cfg["sizes"]
    files: dict[str, str] = cfg["files"]
    bindings: dict[tuple[int, str], Any] = {}
    raws: dict[int, _RawSQLite] = {}
    ctxs = []

    def mmap(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")

    for size in sizes:
        for variant in ("plain", "mmap"):
            app = Flask(f"bench_growth_{size}_{variant}", root_path=cfg["tmp"])
            app.config.update(
                PLOY_BINDINGS={"state": {"STATE": "default"}},
                PLOY_STATE_URL=f"sqlite:///{files[str(size)]}",
            )
            ploy = FlaskPloy(app)
            if variant == "mmap":
                sa.event.listen(ploy.state_store("STATE", app).engine, "connect", mmap)
            ctx = app.app_context()
            ctx.push()
            ctxs.append(ctx)
            bindings[size, variant] = g.env.STATE
            assert bindings[size, variant].get(f"k{size - 1:08d}") is not None
        raws[size] = _RawSQLite(files[str(size)], "ploy_state")
    out: dict[str, Any] = {"mmap_bytes": MMAP_BYTES, "hot_keys": HOT_KEYS}
    try:
        rng = random.Random(7)
        plan = _plan(cfg)
        hot = {}
        for size in sizes:
            start = rng.randrange(max(1, size - HOT_KEYS))
            hot[size] = [f"k{i:08d}" for i in range(start, min(size, start + HOT_KEYS))]

        def keys(r: int) -> list[tuple[str, ...]]:
            # (uniform key, hot key) for each size, flattened
            return [
                tuple(
                    k
                    for size in sizes
                    for k in (f"k{rng.randrange(size):08d}", rng.choice(hot[size]))
                )
                for _ in range(plan.ops)
            ]

        def ploy_get(j: int, st: Any) -> Run:
            def run(ks: Sequence[tuple[str, ...]]) -> None:
                for t in ks:
                    st.get(t[j])

            return run

        def raw_get(j: int, conn: Any, sql: str) -> Run:
            def run(ks: Sequence[tuple[str, ...]]) -> None:
                for t in ks:
                    row = conn.execute(sql, (R, t[j])).fetchone()
                    _ = None if row is None else row[0]

            return run

        def ploy_list(j: int, st: Any) -> Run:
            def run(ks: Sequence[tuple[str, ...]]) -> None:
                for t in ks:
                    st.list("k", limit=100, cursor=t[j])

            return run

        def raw_list(j: int, conn: Any, sql: str) -> Run:
            def run(ks: Sequence[tuple[str, ...]]) -> None:
                for t in ks:
                    rows = conn.execute(sql, (R, t[j], "l", 101)).fetchall()
                    _ = [r[0] for r in rows[:100]]

            return run

        get_c: dict[str, Run] = {}
        list_c: dict[str, Run] = {}
        for i, size in enumerate(sizes):
            u, h = 2 * i, 2 * i + 1
            raw = raws[size]
            get_c[f"flask-ploy @{size}"] = ploy_get(u, bindings[size, "plain"])
            get_c[f"sqlite3 @{size}"] = raw_get(u, raw.conn, raw.get_sql)
            get_c[f"flask-ploy + mmap @{size}"] = ploy_get(u, bindings[size, "mmap"])
            get_c[f"flask-ploy hot range @{size}"] = ploy_get(h, bindings[size, "plain"])
            list_c[f"flask-ploy @{size}"] = ploy_list(u, bindings[size, "plain"])
            list_c[f"sqlite3 @{size}"] = raw_list(u, raw.conn, raw.list_sql)
            list_c[f"flask-ploy + mmap @{size}"] = ploy_list(u, bindings[size, "mmap"])
        first = f"flask-ploy @{sizes[0]}"
        out["get"] = _measure(get_c, keys, plan, first)
        lplan = _plan(cfg, 0.25)
        out["list"] = _measure(
            list_c,
            lambda r: keys(r)[: lplan.ops],
            Plan(lplan.rounds, lplan.ops, lplan.warmup),
            first,
        )
    finally:
        for ctx in reversed(ctxs):
            ctx.pop()
    return out


# ---------------------------------------------------------------------------
# The hot path, taken apart.


def profile_group(cfg: dict[str, Any]) -> dict[str, Any]:
    import redis
    from flask.globals import _cv_app  # what the g proxy resolves, read directly

    from flask_ploy import FlaskPloy

    tag = cfg["tag"]
    path = os.path.join(cfg["tmp"], "profile.sqlite3")
    app = Flask("bench_profile", root_path=cfg["tmp"])
    app.config.update(
        PLOY_BINDINGS={"cache": {"CACHE": "default"}, "state": {"STATE": "default"}},
        PLOY_STATE_URL=f"sqlite:///{path}",
        PLOY_CACHE_URL=cfg["redis_url"],
        PLOY_CACHE_KEY_PREFIX=tag,
    )
    ploy = FlaskPloy(app)
    n = min(cfg["dataset"], 10_000)
    names = [f"k{i:07d}" for i in range(n)]
    ns = f"{tag}:default:"
    raw_redis = redis.Redis.from_url(cfg["redis_url"], decode_responses=True)
    out: dict[str, Any] = {}
    ctx = app.app_context()
    ctx.push()
    try:
        st = g.env.STATE
        st.load(((k, VALUE) for k in names), replace=True)
        cache = g.env.CACHE
        cache.set_many(dict.fromkeys(names, VALUE))
        raw = _RawSQLite(path, "ploy_state")
        conn = raw.conn
        raw_sql = raw.get_sql
        st.get(names[0])
        cur = st.connection().cursor()  # a cursor on the binding's connection
        q = app.extensions["ploy"].state_store("STATE").dialect.get
        kmax = app.config["PLOY_MAX_KEY_BYTES"]
        kfast = kmax // 4  # the binding's fast key check
        plan = _plan(cfg)
        sample = _sampler(names, plan.ops, 21)

        def s_driver(ks: Sequence[str]) -> None:
            for k in ks:
                cur.execute(q, (R, k))
                row = cur.fetchone()
                _ = None if row is None else row[0]

        def s_raw(ks: Sequence[str]) -> None:
            for k in ks:
                row = conn.execute(raw_sql, (R, k)).fetchone()
                _ = None if row is None else row[0]

        def s_binding(ks: Sequence[str]) -> None:
            for k in ks:
                st.get(k)

        def s_env(ks: Sequence[str]) -> None:
            for k in ks:
                g.env.STATE.get(k)

        def s_cv(ks: Sequence[str]) -> None:
            for k in ks:
                _cv_app.get().g.env.STATE.get(k)

        out["state"] = _measure(
            {
                "driver call (flask-ploy's cursor)": s_driver,
                "sqlite3 conn.execute": s_raw,
                "binding.get(k)": s_binding,
                "g.env.STATE.get(k)": s_env,
                "same, without the g proxy": s_cv,
            },
            sample,
            plan,
            "driver call (flask-ploy's cursor)",
        )

        client = cache.backend.client
        full = {k: ns + k for k in names}

        def pairs(r: int) -> list[tuple[str, str]]:
            return [(k, full[k]) for k in sample(r)]

        def c_driver(ks: Sequence[tuple[str, str]]) -> None:
            for _k, f in ks:
                client.get(f)

        def c_raw(ks: Sequence[tuple[str, str]]) -> None:
            for _k, f in ks:
                raw_redis.get(f)

        def c_binding(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                cache.get(k)

        def c_env(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                g.env.CACHE.get(k)

        def c_cv(ks: Sequence[tuple[str, str]]) -> None:
            for k, _f in ks:
                _cv_app.get().g.env.CACHE.get(k)

        out["cache"] = _measure(
            {
                "driver call (flask-ploy's client)": c_driver,
                "redis-py, own client": c_raw,
                "binding.get(k)": c_binding,
                "g.env.CACHE.get(k)": c_env,
                "same, without the g proxy": c_cv,
            },
            pairs,
            plan,
            "driver call (flask-ploy's client)",
        )

        # The parts that cost nanoseconds, timed alone over many iterations.
        micro_plan = Plan(plan.rounds, 2000, plan.warmup)
        micro_keys = _sampler(names * (1 + 2000 // len(names)), 2000, 22)
        pool = client.connection_pool
        raw_pool = raw_redis.connection_pool

        def m_loop(ks: Sequence[str]) -> None:
            for _k in ks:
                pass

        def m_validate(ks: Sequence[str]) -> None:
            for k in ks:
                if type(k) is not str or not k or len(k) > kfast:
                    raise AssertionError(kmax)

        def m_g_env(ks: Sequence[str]) -> None:
            for _k in ks:
                g.env  # noqa: B018

        def m_g_env_state(ks: Sequence[str]) -> None:
            for _k in ks:
                g.env.STATE  # noqa: B018

        def m_g_env_cache(ks: Sequence[str]) -> None:
            for _k in ks:
                g.env.CACHE  # noqa: B018

        def m_concat(ks: Sequence[str]) -> None:
            for k in ks:
                ns + k

        def m_pool(ks: Sequence[str]) -> None:
            for _k in ks:
                pool.release(pool.get_connection())

        def m_raw_pool(ks: Sequence[str]) -> None:
            for _k in ks:
                raw_pool.release(raw_pool.get_connection())

        def m_encode(ks: Sequence[str]) -> None:
            enc = client.get_encoder()
            for k in ks:
                enc.encode(k)

        out["micro"] = _measure(
            {
                "empty loop": m_loop,
                "argument check": m_validate,
                "g.env": m_g_env,
                "g.env.STATE": m_g_env_state,
                "g.env.CACHE": m_g_env_cache,
                "key prefixing": m_concat,
                "redis pool borrow+return (flask-ploy, blocking)": m_pool,
                "redis pool borrow+return (redis-py default)": m_raw_pool,
            },
            micro_keys,
            micro_plan,
            "empty loop",
        )
    finally:
        ctx.pop()

    # Per app context: push/pop, Env, and the State connection borrow.
    store = ploy.state_store("STATE", app)
    k0 = names[0]
    ctx_plan = Plan(plan.rounds, max(20, plan.ops // 2), plan.warmup)

    def x_ctx(ks: Sequence[str]) -> None:
        for _k in ks:
            with app.app_context():
                pass

    def x_ctx_get(ks: Sequence[str]) -> None:
        for k in ks:
            with app.app_context():
                g.env.STATE.get(k)

    def x_ctx_two(ks: Sequence[str]) -> None:
        for k in ks:
            with app.app_context():
                g.env.STATE.get(k)
                g.env.STATE.get(k0)

    def x_ctx_cache(ks: Sequence[str]) -> None:
        for k in ks:
            with app.app_context():
                g.env.CACHE.get(k)

    from flask_ploy.state import Lease

    def x_checkout(ks: Sequence[str]) -> None:
        for _k in ks:
            lease = Lease(store, 0)
            store.checkout(lease)
            store.checkin(lease)

    def x_connect(ks: Sequence[str]) -> None:
        for _k in ks:
            c = sqlite3.connect(path, timeout=10.0)
            c.execute("PRAGMA synchronous = NORMAL")
            c.close()

    out["context"] = _measure(
        {
            "app context push+pop": x_ctx,
            "context + 1 g.env.STATE.get": x_ctx_get,
            "context + 2 g.env.STATE.get": x_ctx_two,
            "context + 1 g.env.CACHE.get": x_ctx_cache,
            "StateStore checkout+checkin": x_checkout,
            "sqlite3.connect+PRAGMA+close": x_connect,
        },
        _sampler(names, ctx_plan.ops, 23),
        ctx_plan,
        "app context push+pop",
    )
    keys = list(raw_redis.scan_iter(match=f"{tag}:*", count=1000))
    for i in range(0, len(keys), 1000):
        raw_redis.delete(*keys[i : i + 1000])
    return out


def http_app_group(cfg: dict[str, Any]) -> dict[str, Any]:
    """The HTTP routes of both apps in process, through Flask's test client.

    What each app costs per request without gunicorn, wrk and the kernel's
    sockets in between: the part of the HTTP comparison that the apps'
    code decides.
    """
    path = os.path.join(cfg["tmp"], "http-app.sqlite3")
    os.environ.update(
        BENCH_REDIS_URL=cfg["redis_url"], BENCH_SQLITE_PATH=path, BENCH_PREFIX=cfg["tag"]
    )
    from . import hand_app, ploy_app

    with ploy_app.app.app_context():
        g.env.STATE.set("greeting", "hello world")
        g.env.CACHE.set("greeting", "hello")
    clients = {"flask-ploy": ploy_app.app.test_client(), "hand-written": hand_app.app.test_client()}
    routes = [("cache get", "GET", "/cache/get"), ("cache set", "POST", "/cache/set"),
              ("state get", "GET", "/state/get"), ("state set", "POST", "/state/set")]  # fmt: skip

    def request(client: Any, url: str, method: str) -> Run:
        def run(ks: Sequence[Any]) -> None:
            for _ in ks:
                if client.open(url, method=method).status_code != 200:
                    raise AssertionError(f"{method} {url} failed")

        return run

    plan = _plan(cfg, 0.1)
    out: dict[str, Any] = {}
    try:
        for route, method, url in routes:
            out[route] = _measure(
                {name: request(c, url, method) for name, c in clients.items()},
                lambda r: range(plan.ops),
                plan,
                "hand-written",
            )
    finally:
        with ploy_app.app.app_context():
            g.env.CACHE.delete("greeting")
    return out


def state_mariadb_group(cfg: dict[str, Any]) -> dict[str, Any]:
    """State on MariaDB: the read-modify-write comparison only."""
    from flask_ploy import FlaskPloy

    table = f"{cfg['tag']}_state"
    app = Flask("bench_state_mariadb", root_path=cfg["tmp"])
    app.config.update(
        PLOY_BINDINGS={"state": {"STATE": "default"}},
        PLOY_STATE_URL=cfg["mariadb_url"],
        PLOY_STATE_TABLE=table,
    )
    FlaskPloy(app)
    ctx = app.app_context()
    ctx.push()
    try:
        return {"read_modify_write": read_modify_write(cfg, app, 20)}
    finally:
        g.env.STATE.connection().cursor().execute(f"DROP TABLE IF EXISTS {table}")
        ctx.pop()


GROUPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "cache": cache_group,
    "state_sqlite": lambda cfg: state_group(cfg, "sqlite"),
    "state_postgres": lambda cfg: state_group(cfg, "postgres"),
    "state_mariadb": state_mariadb_group,
    "growth": growth_group,
    "profile": profile_group,
    "http_app": http_app_group,
    "observe": lambda cfg: _observe_group(cfg),
}


def _observe_group(cfg: dict[str, Any]) -> dict[str, Any]:
    from .observe import observe_group

    return observe_group(cfg)


def main(argv: list[str]) -> int:
    name, cfg_path, out_path = argv
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    t0 = time.monotonic()
    result = GROUPS[name](cfg)
    result["seconds"] = round(time.monotonic() - t0, 1)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
