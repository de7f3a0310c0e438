"""Observing the bindings: counters, recorded operations, the proxies, and
nothing at all when every feature is off. Real backends, no mocks."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from flask import Flask, g

from flask_ploy import Cache, CacheUnavailable, PloyConfigError, State, StateUnavailable
from flask_ploy.observe import get_recorded_ops, unwrap
from flask_ploy.observe.proxy import operations
from flask_ploy.observe.stats import BUCKETS

from . import servers
from .conftest import AppFactory

ON = {"PLOY_METRICS": True}


def ops_of(app: Flask, binding: str) -> dict[str, Any]:
    return dict(app.extensions["ploy"].stats(app)["bindings"][binding]["ops"])


def test_off_hands_out_the_bindings_themselves(make_app: AppFactory) -> None:
    app = make_app()
    with app.app_context():
        assert type(g.env.CACHE) is Cache
        assert type(g.env.STATE) is State
        assert app.extensions["ploy"].app_bindings(app).observer is None
    stats = app.extensions["ploy"].stats(app)
    assert stats["features"] == [] and stats["bindings"] == {}
    assert "cache_backends" in stats


def test_on_hands_out_proxies_that_pass_for_the_binding(make_app: AppFactory) -> None:
    app = make_app(**ON)
    with app.app_context():
        cache, state = g.env.CACHE, g.env.STATE
        assert type(cache) is not Cache and isinstance(cache, Cache)
        assert type(state) is not State and isinstance(state, State)
        assert type(unwrap(cache)) is Cache and type(unwrap(state)) is State
        assert cache.name == "CACHE" and state.resource == "default"
        assert g.env.STATE is state  # one per context, as without observation
        cache.set("k", "v")
        assert "k" in cache and "nope" not in cache
        assert g.env.ALIAS_CACHE.get("k") == "v"  # same resource, another binding
    ops = ops_of(app, "CACHE")
    assert ops["has"]["calls"] == 2  # `in` goes through the observed has


def test_every_public_method_is_observed() -> None:
    """A method added to a binding class later is observed without a change."""
    assert {"get", "set", "get_or_set", "clear"} <= set(operations(Cache))
    assert {"get", "transact", "items", "load"} <= set(operations(State))
    assert "connection" not in operations(State)

    class Extended(State):
        __slots__ = ()

        def put(self, key: str, value: str) -> None:
            self.set(key, value)

    assert "put" in operations(Extended)


def test_cache_counters(make_app: AppFactory, cache_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    app = make_app(PLOY_CACHE_URL=cache_url, PLOY_CACHE_KEY_PREFIX=prefix, **ON)
    with app.app_context():
        c = g.env.CACHE
        c.set("a", "héllo")  # 6 bytes in UTF-8
        assert c.get("a") == "héllo"
        assert c.get("missing") is None
        assert c.get_many(["a", "missing", "gone"]) == {"a": "héllo", "missing": None, "gone": None}
        assert c.get_or_set("z", lambda: "computed") == "computed"
        assert c.get_or_set("z", lambda: "other") == "computed"
        with pytest.raises(TypeError):
            c.get(3)  # type: ignore[arg-type]
        c.clear()
    ops = ops_of(app, "CACHE")
    assert ops["set"]["calls"] == 1 and ops["set"]["bytes_out"] == 6
    get = ops["get"]
    assert get["calls"] == 3
    assert get["outcomes"] == {"ok": 2, "invalid": 1}
    assert (get["hits"], get["misses"], get["bytes_in"]) == (1, 1, 6)
    assert (ops["get_many"]["hits"], ops["get_many"]["misses"]) == (1, 2)
    gos = ops["get_or_set"]
    assert (gos["calls"], gos["hits"], gos["misses"]) == (2, 1, 1)
    assert gos["bytes_out"] == 8 and gos["bytes_in"] == 8
    # the histogram: cumulative, every call under +Inf, monotone
    buckets = get["buckets"]
    assert list(buckets) == [*map(repr, BUCKETS), "+Inf"]
    assert buckets["+Inf"] == 3
    counts = list(buckets.values())
    assert counts == sorted(counts)
    assert 0 < get["seconds"] < 10


def test_state_counters(make_app: AppFactory, state_url: str, state_table: str) -> None:
    app = make_app(PLOY_STATE_URL=state_url, PLOY_STATE_TABLE=state_table, **ON)
    with app.app_context():
        s = g.env.STATE
        s.clear()
        s.set("a", "x" * 10)
        assert s.get("a") == "x" * 10
        assert s.get("nope") is None
        assert s.incr("n", 2) == 2
        s.set_many({"b": "yy", "c": "zzz"})
        assert s.get_many(["a", "b", "q"])["b"] == "yy"
        assert sorted(k for k, _ in s.items()) == ["a", "b", "c", "n"]
        assert s.transact(lambda tx: tx.get("a")) == "x" * 10
        with pytest.raises(ValueError):
            s.incr("a")
        s.clear()
    ops = ops_of(app, "STATE")
    assert ops["set"]["bytes_out"] == 10
    assert ops["get"]["calls"] == 2 and ops["get"]["bytes_in"] == 10
    assert ops["get"]["hits"] == 0 == ops["get"]["misses"]  # hits/misses: cache only
    assert ops["set_many"]["bytes_out"] == 5
    assert ops["get_many"]["bytes_in"] == 12
    assert ops["items"]["calls"] == 1 and ops["transact"]["calls"] == 1
    assert ops["incr"]["outcomes"] == {"ok": 1, "invalid": 1}
    assert ops["clear"]["calls"] == 2


def test_cache_errors_by_kind_and_breaker_skips(
    make_app: AppFactory, own_redis: servers.RedisProc
) -> None:
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    app = make_app(PLOY_CACHE_URL=url, PLOY_CACHE_COOLDOWN=30, **ON)
    with app.app_context():
        c = g.env.CACHE
        c.set("k", "v")
        own_redis.kill()
        assert c.get("k") is None  # "miss" mode: a failure is a miss...
        assert c.get("k") is None  # ...then the breaker is open: not tried
        with pytest.raises(CacheUnavailable):
            c.incr("n")  # strict in every mode
    get = ops_of(app, "CACHE")["get"]
    assert get["outcomes"] == {"error": 1, "skipped": 1}
    assert get["errors"] == {"down": 1}
    assert get["hits"] == 0 == get["misses"]  # failures are not misses
    incr = ops_of(app, "CACHE")["incr"]
    assert incr["outcomes"] == {"skipped": 1}
    backends = app.extensions["ploy"].stats(app)["cache_backends"]
    assert next(iter(backends.values()))["failures"] == 1


def test_state_errors_by_kind(make_app: AppFactory) -> None:
    url = f"postgresql+psycopg://127.0.0.1:{servers.free_port()}/nowhere"
    app = make_app(PLOY_STATE_URL=url, PLOY_STATE_BUSY_TIMEOUT=0.5, **ON)
    with app.app_context(), pytest.raises(StateUnavailable):
        g.env.STATE.get("k")
    get = ops_of(app, "STATE")["get"]
    assert get["outcomes"] == {"error": 1} and get["errors"] == {"unavailable": 1}


def test_recorder_per_request(make_app: AppFactory) -> None:
    app = make_app(PLOY_RECORD_OPS=True)

    @app.get("/<name>")
    def view(name: str) -> Any:
        g.env.CACHE.set(name, "v")
        g.env.CACHE.get(name)
        g.env.CACHE.get("absent")
        g.env.STATE.get(name)
        return [[o.binding, o.op, o.key, o.outcome, o.detail] for o in get_recorded_ops()]

    client = app.test_client()
    first = client.get("/one").get_json()
    assert first == [
        ["CACHE", "set", "one", "ok", ""],
        ["CACHE", "get", "one", "ok", "hit"],
        ["CACHE", "get", "absent", "ok", "miss"],
        ["STATE", "get", "one", "ok", ""],
    ]
    second = client.get("/two").get_json()  # a new request starts empty
    assert [o[2] for o in second] == ["two", "two", "absent", "two"]
    assert app.extensions["ploy"].stats(app)["bindings"] == {}  # PLOY_METRICS off
    with app.app_context():
        assert get_recorded_ops() == []


def test_recorder_keeps_at_most_its_bound_per_request(make_app: AppFactory) -> None:
    """A loop in a debug request cannot grow the list past MAX_RECORDED: the
    rest are counted in dropped_ops()."""
    from flask_ploy.observe.recorder import MAX_RECORDED, dropped_ops

    app = make_app(PLOY_RECORD_OPS=True, PLOY_CACHE_URL="memory://")
    with app.app_context():
        for i in range(MAX_RECORDED + 25):
            g.env.CACHE.get(f"k{i}")
        ops = get_recorded_ops()
        assert len(ops) == MAX_RECORDED and dropped_ops() == 25
        assert ops[-1].key == f"k{MAX_RECORDED - 1}"


def test_recorder_isolates_threads(make_app: AppFactory) -> None:
    """Each thread's own app context records only its own operations."""
    app = make_app(PLOY_RECORD_OPS=True)
    seen: dict[int, list[str | None]] = {}
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        with app.app_context():
            barrier.wait()
            for i in range(20):
                g.env.CACHE.get(f"t{n}-{i}")
            seen[n] = [o.key for o in get_recorded_ops()]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in range(4):
        assert seen[n] == [f"t{n}-{i}" for i in range(20)]


def test_record_ops_default_follows_debug(make_app: AppFactory) -> None:
    quiet = make_app()
    assert quiet.extensions["ploy"].app_bindings(quiet).observer is None
    debug = make_app(DEBUG=True)
    observer = debug.extensions["ploy"].app_bindings(debug).observer
    assert observer is not None and observer.features() == ["record"]
    off = make_app(DEBUG=True, PLOY_RECORD_OPS=False)
    assert off.extensions["ploy"].app_bindings(off).observer is None


@pytest.mark.parametrize("key", ["PLOY_METRICS", "PLOY_TRACING", "PLOY_RECORD_OPS"])
def test_flags_are_checked(make_app: AppFactory, key: str) -> None:
    with pytest.raises(PloyConfigError, match=key):
        make_app(**{key: "yes"})


def test_isolated_bindings_are_observed_too(make_app: AppFactory) -> None:
    app = make_app(**ON)
    ploy = app.extensions["ploy"]
    with ploy.isolated(app), app.app_context():
        assert isinstance(g.env.CACHE, Cache) and type(g.env.CACHE) is not Cache
        g.env.CACHE.get("x")
        assert ploy.stats(app)["bindings"]["CACHE"]["ops"]["get"]["calls"] == 1


def test_cli_stats_reads_the_shared_backends(make_app: AppFactory, tmp_path: Any) -> None:
    import json

    servers.need(servers.redis_ok(), "Redis")
    prefix = f"t{uuid.uuid4().hex[:12]}"
    app = make_app(
        {"cache": {"CACHE": "default", "LOCAL": "local"}, "state": {"STATE": "default"}},
        PLOY_CACHE_URL=servers.REDIS_URL,
        PLOY_CACHE_KEY_PREFIX=prefix,
        PLOY_CACHE_RESOURCES={"local": f"sqlite:///{tmp_path}/c.sqlite3"},
        PLOY_STATE_URL=f"sqlite:///{tmp_path}/s.sqlite3",
    )
    with app.app_context():
        g.env.STATE.set_many({"a": "1", "b": "2", "c": "3"})
        g.env.LOCAL.set("x", "y")
        g.env.CACHE.get("nothing-here")  # one more keyspace miss on the server
    runner = app.test_cli_runner()
    result = runner.invoke(args=["ploy", "stats", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    redis_entry = next(e for e in data["cache"] if e["bindings"] == ["CACHE"])
    assert redis_entry["server"]["keyspace_misses"] >= 1
    local = next(e for e in data["cache"] if e["bindings"] == ["LOCAL"])
    assert local["entries"] == {"local": 1}
    assert data["state"] == [
        {"binding": "STATE", "resource": "default", "keys": 3, "url": data["state"][0]["url"]}
    ]
    text = runner.invoke(args=["ploy", "stats"]).output
    assert "resource default: 3 keys" in text and "resource local: 1 entries" in text
    assert "keyspace_hits" in text


def test_cli_stats_reports_a_down_redis(make_app: AppFactory) -> None:
    url = f"redis://127.0.0.1:{servers.free_port()}/0"
    app = make_app(PLOY_CACHE_URL=url)
    result = app.test_cli_runner().invoke(args=["ploy", "stats"])
    assert result.exit_code == 0
    assert "unavailable: ConnectionError" in result.output


def test_a_method_added_later_is_observed(make_app: AppFactory) -> None:
    """A binding class with an operation this package never heard of."""
    from flask_ploy.state import Connections

    class Extended(State):
        __slots__ = ()

        def put(self, key: str, value: str) -> None:
            self.set(key, value)  # on the binding itself: counted once, as put

    app = make_app(**ON)
    ploy = app.extensions["ploy"]
    observer = ploy.app_bindings(app).observer
    store = ploy.state_store("STATE", app)
    conns = Connections(threading.get_ident())
    try:
        with app.app_context():
            proxy = observer.wrap_state(Extended("STATE", "default", store, conns), store)
            assert isinstance(proxy, Extended)
            proxy.put("k", "value")
            assert proxy.get("k") == "value"
    finally:
        conns.release()
    ops = ops_of(app, "STATE")
    assert ops["put"]["calls"] == 1 and ops["put"]["bytes_out"] == 5
    assert "set" not in ops
