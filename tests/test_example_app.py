"""The example app: every endpoint through the test client on memory:// and a
real Redis, its behaviour through a cache outage, under gunicorn with two
workers, and its page driven in headless Chromium.

The seed examples themselves are tested in test_seeds.py; these tests are
about the app's endpoints and page.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, g
from werkzeug.serving import make_server

import example_app
from example_app import create_app

from . import servers

ROOT = Path(__file__).resolve().parent.parent

# The ploy pytest plugin would give the ``app`` fixture's app a fresh
# memory:// cache and SQLite state; these tests choose their backends.
pytestmark = pytest.mark.ploy_real_backends


def _make(tmp_path: Path, cache_url: str, **config: Any) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "PLOY_CACHE_URL": cache_url,
            "PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
            # A prefix per test: parallel runs on one Redis never share keys.
            "PLOY_CACHE_KEY_PREFIX": f"ex{uuid.uuid4().hex[:12]}",
            "REPORT_SECONDS": 0.0,
            **config,
        }
    )


def _close(app: Flask) -> None:
    with app.app_context():
        for name in ("CACHE", "SESSION_CACHE"):
            with contextlib.suppress(Exception):  # an unreachable cache on purpose
                getattr(g.env, name).clear()
    example_app.ploy.app_bindings(app).close()


@pytest.fixture
def app(seed_cache_url: str, tmp_path: Path) -> Iterator[Flask]:
    app = _make(tmp_path, seed_cache_url)
    yield app
    _close(app)


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


def test_runs_on_the_chosen_backends(app: Flask, seed_cache_url: str, tmp_path: Path) -> None:
    with app.app_context():
        assert list(example_app.ploy.cache_stats()) == [seed_cache_url]
        assert repr(g.env.STATE).endswith(f"database='sqlite:///{tmp_path}/state.sqlite3'>")


# -- the JSON endpoints ------------------------------------------------------------


def test_cache_get_set_delete(client: Any) -> None:
    assert client.get("/cache/get?key=greeting").json == {"value": None}
    assert client.post("/cache/set", data={"key": "greeting", "value": "hello"}).json == {
        "success": True
    }
    assert client.get("/cache/get", query_string={"key": "greeting"}).json == {"value": "hello"}
    assert client.post("/cache/delete", data={"key": "greeting"}).json == {"deleted": True}
    assert client.post("/cache/delete", data={"key": "greeting"}).json == {"deleted": False}
    assert client.get("/cache/get?key=greeting").json == {"value": None}
    # Unicode keys and values, and an empty value, round-trip.
    client.post("/cache/set", data={"key": "clé ✓", "value": ""})
    assert client.get("/cache/get", query_string={"key": "clé ✓"}).json == {"value": ""}


def test_cache_bindings_are_separate(client: Any) -> None:
    client.post("/cache/set", data={"key": "k", "value": "main"})
    client.post("/cache/set", data={"key": "k", "value": "session", "binding": "SESSION_CACHE"})
    assert client.get("/cache/get?key=k").json == {"value": "main"}
    assert client.get("/cache/get?key=k&binding=SESSION_CACHE").json == {"value": "session"}


def test_cache_ttl_expires_after_a_real_wait(client: Any) -> None:
    client.post("/cache/set", data={"key": "short", "value": "v", "ttl": "1"})
    client.post("/cache/set", data={"key": "long", "value": "v", "ttl": "60"})
    assert client.get("/cache/get?key=short").json == {"value": "v"}
    started = time.monotonic()
    while client.get("/cache/get?key=short").json["value"] is not None:
        assert time.monotonic() - started < 3, "a 1-second entry outlived 3 seconds"
        time.sleep(0.05)
    assert client.get("/cache/get?key=long").json == {"value": "v"}


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("/cache/get", {}, "missing field 'key'"),
        ("/cache/set", {"key": "k"}, "missing field 'value'"),
        ("/cache/set", {"key": "k", "value": "v", "ttl": "soon"}, "ttl must be whole seconds"),
        ("/cache/set", {"key": "k", "value": "v", "ttl": "0"}, "ttl must be at least 1"),
        ("/cache/set", {"key": "", "value": "v"}, "key must not be empty"),
        ("/cache/set", {"key": "k" * 513, "value": "v"}, "over the limit of 512"),
        ("/cache/get", {"key": "k", "binding": "STATE"}, "'STATE' is not a cache binding"),
        ("/state/get", {"key": "k", "binding": "NOPE"}, "use one of STATE, USER_STATE"),
        ("/state/set", {"value": "v"}, "missing field 'key'"),
        ("/state/delete", {}, "missing field 'key'"),
    ],
)
def test_bad_requests_are_400(client: Any, path: str, data: dict[str, str], message: str) -> None:
    if path.endswith("/get"):
        response = client.get(path, query_string=data)
    else:
        response = client.post(path, data=data)
    assert response.status_code == 400
    assert message in response.json["error"]


def test_state_get_set_delete(client: Any) -> None:
    assert client.get("/state/get?key=user:123").json == {"value": None}
    assert client.post("/state/set", data={"key": "user:123", "value": "alice"}).json == {
        "success": True
    }
    assert client.get("/state/get?key=user:123").json == {"value": "alice"}
    client.post("/state/set", data={"key": "user:123", "value": "bob"})
    assert client.get("/state/get?key=user:123").json == {"value": "bob"}
    assert client.post("/state/delete", data={"key": "user:123"}).json == {"deleted": True}
    assert client.get("/state/get?key=user:123").json == {"value": None}
    client.post("/state/set", data={"key": "u", "value": "in users", "binding": "USER_STATE"})
    assert client.get("/state/get?key=u").json == {"value": None}
    assert client.get("/state/get?key=u&binding=USER_STATE").json == {"value": "in users"}


def test_state_survives_a_new_app(app: Flask, client: Any, tmp_path: Path) -> None:
    client.post("/state/set", data={"key": "durable", "value": "yes"})
    again = _make(tmp_path, "memory://")
    try:
        assert again.test_client().get("/state/get?key=durable").json == {"value": "yes"}
    finally:
        _close(again)


def test_whoami(client: Any) -> None:
    assert client.get("/whoami").json == {"pid": os.getpid()}


def test_seed_basic_examples(client: Any) -> None:
    assert client.get("/seed/cache/get").json == {"value": None}
    assert client.post("/seed/cache/set").json == {"success": True}
    assert client.get("/seed/cache/get").json == {"value": "hello"}
    assert client.get("/cache/get?key=greeting").json == {"value": "hello"}
    assert client.get("/seed/state/get").json == {"value": None}
    assert client.post("/seed/state/set").json == {"success": True}
    assert client.get("/seed/state/get").json == {"value": "hello world"}
    assert client.post("/seed/state/delete").json == {"success": True}
    assert client.get("/seed/state/get").json == {"value": None}
    assert client.get("/seed/cache/set").status_code == 405  # writes are POST only


# -- the patterns ---------------------------------------------------------------------


def test_report_is_computed_once_and_refreshed(client: Any) -> None:
    client.post("/counters/orders")
    first = client.get("/reports/daily").json
    assert first["cached"] is False
    assert first["report"]["counters"] == {"orders": 1}
    assert first["report"]["total"] == 1
    client.post("/counters/orders")
    second = client.get("/reports/daily").json
    assert second == {"report": first["report"], "cached": True}  # not recomputed
    refreshed = client.post("/reports/daily/refresh").json
    assert refreshed["locked"] is True
    assert refreshed["report"]["total"] == 2
    assert client.get("/reports/daily").json == {"report": refreshed["report"], "cached": True}


def test_refresh_lock_admits_one_request(app: Flask) -> None:
    app.config["REPORT_SECONDS"] = 0.5
    with app.app_context():
        assert g.env.CACHE.add("lock:report:weekly", "held by someone else", ttl=30)
    assert app.test_client().post("/reports/weekly/refresh").status_code == 409
    with app.app_context():
        g.env.CACHE.delete("lock:report:weekly")

    def refresh(_: int) -> int:
        return int(app.test_client().post("/reports/weekly/refresh").status_code)

    with ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(refresh, range(6)))
    assert codes == [200, 409, 409, 409, 409, 409]
    with app.app_context():  # released after the work
        assert g.env.CACHE.get("lock:report:weekly") is None


def test_seed_rate_limiter(client: Any) -> None:
    assert client.get("/ratelimit/seed").status_code == 200
    assert client.get("/ratelimit/seed").status_code == 429
    time.sleep(1.1)
    assert client.get("/ratelimit/seed").status_code == 200


def test_atomic_rate_limiter(app: Flask) -> None:
    app.config.update(RATE_LIMIT=5, RATE_WINDOW=1)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: app.test_client().get("/ratelimit").status_code, range(20)))
    # incr hands out 1..20 to the 20 concurrent requests: exactly 5 pass.
    assert sorted(codes) == [200] * 5 + [429] * 15
    limited = app.test_client().get("/ratelimit")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.json == {"limited": True, "hits": 21, "limit": 5}
    time.sleep(1.1)  # the window expires
    assert app.test_client().get("/ratelimit").json == {"limited": False, "hits": 1, "limit": 5}


def test_one_time_codes(client: Any) -> None:
    code = client.post("/otp/u1").json["code"]
    assert len(code) == 6 and code.isdigit()
    wrong = "000000" if code != "000000" else "111111"
    assert client.post("/otp/u1/verify", data={"code": wrong}).json == {"valid": False}
    assert client.post("/otp/u1/verify", data={"code": "é"}).json == {"valid": False}
    assert client.post("/otp/u2/verify", data={"code": code}).json == {"valid": False}
    assert client.post("/otp/u1/verify", data={"code": code}).json == {"valid": True}
    assert client.post("/otp/u1/verify", data={"code": code}).json == {"valid": False}  # used


def test_one_time_code_wins_once_under_concurrency(app: Flask) -> None:
    code = app.test_client().post("/otp/racer").json["code"]

    def verify(_: int) -> bool:
        return bool(app.test_client().post("/otp/racer/verify", data={"code": code}).json["valid"])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(verify, range(16)))
    assert results.count(True) == 1


def test_feature_flags(client: Any) -> None:
    assert client.get("/flags").json == {
        "beta-reports": False,
        "dark-mode": False,
        "new-checkout": False,
    }
    assert client.get("/flags/dark-mode").json == {"feature": "dark-mode", "enabled": False}
    assert client.post("/flags/dark-mode", data={"enabled": "true"}).json["enabled"] is True
    assert client.get("/flags/dark-mode").json["enabled"] is True
    client.post("/flags/search", data={"enabled": "on"})
    assert client.get("/flags").json["search"] is True
    # The seed's rule: only the exact string "true" enables a flag.
    client.post("/state/set", data={"key": "feature:odd", "value": "TRUE"})
    assert client.get("/flags/odd").json["enabled"] is False
    client.post("/flags/dark-mode", data={"enabled": "false"})
    assert client.get("/state/get?key=feature:dark-mode").json == {"value": "false"}


def test_counters(client: Any) -> None:
    assert client.get("/counters").json == {}
    assert client.get("/counters/visits").json == {"name": "visits", "value": 0}
    assert [client.post("/counters/visits").json["value"] for _ in range(3)] == [1, 2, 3]
    assert client.post("/counters/visits/seed").json == {"name": "visits", "value": 4}
    assert client.get("/counters/visits").json == {"name": "visits", "value": 4}
    assert client.get("/state/get?key=counter:visits").json == {"value": "4"}
    client.post("/state/set", data={"key": "counter:broken", "value": "--5"})
    response = client.post("/counters/broken")
    assert response.status_code == 400
    assert "not an integer" in response.json["error"]
    assert client.get("/counters").json == {"broken": "--5", "visits": 4}


def test_atomic_counter_loses_no_update(app: Flask) -> None:
    def hit(_: int) -> None:
        client = app.test_client()
        for _ in range(10):
            assert client.post("/counters/hits").status_code == 200

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(hit, range(8)))
    assert app.test_client().get("/counters/hits").json["value"] == 80


def test_user_preferences(client: Any) -> None:
    assert client.get("/prefs/u1").json == {"theme": "light", "language": "en"}
    assert client.post("/prefs/u1", data={"theme": "dark"}).json == {
        "theme": "dark",
        "language": "en",
    }
    # update() changes one field and keeps the other.
    assert client.post("/prefs/u1", data={"language": "fr"}).json == {
        "theme": "dark",
        "language": "fr",
    }
    assert client.get("/prefs/u1").json == {"theme": "dark", "language": "fr"}
    # PUT replaces the whole object, as the seed's setUserPreferences does.
    assert client.put("/prefs/u1", data={"language": "de"}).json == {
        "theme": "light",
        "language": "de",
    }
    assert client.post("/prefs/u1", data={"theme": "neon"}).status_code == 400
    # Stored as JSON in USER_STATE, not in STATE.
    stored = client.get("/state/get?key=prefs:u1&binding=USER_STATE").json["value"]
    assert json.loads(stored) == {"theme": "light", "language": "de"}
    assert client.get("/state/get?key=prefs:u1").json == {"value": None}
    client.post("/state/set", data={"key": "prefs:u2", "value": "[]", "binding": "USER_STATE"})
    assert client.get("/prefs/u2").status_code == 400


def test_multiple_bindings(client: Any) -> None:
    assert client.get("/config").json == {"config": None, "cached": False}
    client.post("/config", data={"value": "v1"})
    assert client.get("/config").json == {"config": "v1", "cached": False}
    assert client.get("/config").json == {"config": "v1", "cached": True}
    client.post("/config", data={"value": "v2"})  # invalidates the cached copy
    assert client.get("/config").json == {"config": "v2", "cached": False}
    assert client.get("/state/get?key=config").json == {"value": "v2"}
    assert client.get("/cache/get?key=config").json == {"value": "v2"}

    assert client.get("/sessions/abc").json == {"data": None}
    client.post("/sessions/abc", data={"data": '{"cart": 3}'})
    assert client.get("/sessions/abc").json == {"data": '{"cart": 3}'}
    assert client.get("/cache/get?key=user:abc&binding=SESSION_CACHE").json == {
        "value": '{"cart": 3}'
    }
    assert client.get("/cache/get?key=user:abc").json == {"value": None}


# -- every route: never a 500 --------------------------------------------------------

FIELDS = {
    "key": "k",
    "value": "v",
    "name": "n",
    "code": "123456",
    "enabled": "true",
    "theme": "dark",
    "language": "fr",
    "data": "d",
    "feature": "f",
    "user": "u",
}


def _hit_every_route(app: Flask, fields: dict[str, str]) -> dict[str, int]:
    """Call every route with every method; return ``{"METHOD path": status}``."""
    client = app.test_client()
    seen = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule
        for arg in rule.arguments:
            path = path.replace(f"<{arg}>", "t1")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if method == "GET":
                response = client.get(path, query_string=fields)
            else:
                response = client.open(path, method=method, data=fields)
            seen[f"{method} {rule.rule}"] = response.status_code
    return seen


def test_every_route_answers_without_500(app: Flask) -> None:
    for fields in (FIELDS, {}):  # empty stores, then with fields missing
        statuses = _hit_every_route(app, fields)
        assert len(statuses) > 30
        assert {k: v for k, v in statuses.items() if v >= 500} == {}


def test_a_cache_outage_fails_no_request(tmp_path: Path) -> None:
    # Nothing listens on this port: every cache operation fails at once.
    down = _make(tmp_path, f"redis://:s3cret-pw@127.0.0.1:{servers.free_port()}/0")
    try:
        statuses = _hit_every_route(down, FIELDS)
        assert {k: v for k, v in statuses.items() if v >= 500} == {}
        client = down.test_client()
        assert client.get("/cache/get?key=k").json == {"value": None}
        assert client.get("/ratelimit").json == {"limited": False, "hits": None, "limit": 5}
        assert client.get("/reports/r").json["cached"] is False
        assert client.post("/reports/r/refresh").json["locked"] is False
        assert client.post("/counters/c").json["value"] >= 1  # State still works
        page = client.get("/")
        assert page.status_code == 200
        assert "s3cret-pw" not in page.text  # the page never shows a password
        assert "redis://:***@127.0.0.1" in page.text
        assert "failures" in page.text
    finally:
        _close(down)


# -- the page, through the test client -------------------------------------------------


def test_page_shows_state_and_its_forms_change_it(client: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "No counters yet." in page.text
    assert 'class="theme-light"' in page.text
    assert "&lt;Cache CACHE resource=&#39;default&#39;" in page.text  # the binding reprs

    response = client.post("/page/counters", data={"name": "visits"})
    assert response.status_code == 303
    page = client.get(response.headers["Location"])
    assert '<td data-counter="visits">1</td>' in page.text
    assert "Counter visits is now 1." in page.text

    page = client.post(
        "/page/flags", data={"feature": "dark-mode", "enabled": "true"}, follow_redirects=True
    )
    assert '<td data-flag="dark-mode">on</td>' in page.text

    page = client.post(
        "/page/prefs",
        data={"user": "bob", "theme": "dark", "language": "de"},
        follow_redirects=True,
    )
    assert 'class="theme-dark"' in page.text
    assert '<html lang="de">' in page.text
    assert client.get("/prefs/bob").json == {"theme": "dark", "language": "de"}
    assert 'class="theme-light"' in client.get("/?user=alice").text


def test_page_escapes_what_users_typed(client: Any) -> None:
    client.post("/page/counters", data={"name": "<script>x</script>"})
    assert "<script>x" not in client.get("/").text
    assert "&lt;script&gt;x" in client.get("/").text


# -- configuration --------------------------------------------------------------------


def test_environment_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLOY_CACHE_URL", "redis://:env-pw@127.0.0.1:6399/3")
    monkeypatch.setenv("PLOY_STATE_URL", f"sqlite:///{tmp_path}/env.sqlite3")
    monkeypatch.setenv("SECRET_KEY", "from-env")
    app = create_app()
    try:
        assert app.config["SECRET_KEY"] == "from-env"
        assert example_app.ploy.cache_stats(app) == {
            "redis://:***@127.0.0.1:6399/3": {
                "failures": 0,
                "skipped": 0,
            }
        }
        assert example_app.ploy.state_store("STATE", app).display_url.endswith("/env.sqlite3")
        # The config argument wins over the environment.
        other = create_app({"PLOY_CACHE_URL": "memory://", "SECRET_KEY": "given"})
        assert other.config["SECRET_KEY"] == "given"
        assert list(example_app.ploy.cache_stats(other)) == ["memory://"]
        example_app.ploy.app_bindings(other).close()
    finally:
        example_app.ploy.app_bindings(app).close()


def test_defaults_and_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in example_app.ENV_SETTINGS:
        monkeypatch.delenv(key, raising=False)
    from flask.cli import ScriptInfo

    app = ScriptInfo(app_import_path="example_app").load_app()  # what `flask --app` does
    try:
        assert app.instance_path == str(ROOT / "example_app" / "instance")
        assert example_app.ploy.state_store("STATE", app).display_url == (
            f"sqlite:///{ROOT / 'example_app' / 'instance' / 'ploy-state.sqlite3'}"
        )
        assert list(example_app.ploy.cache_stats(app)) == ["memory://"]
        assert [b.name for b in example_app.ploy.bindings(app).bindings] == [
            "CACHE",
            "SESSION_CACHE",
            "STATE",
            "USER_STATE",
        ]
    finally:
        example_app.ploy.app_bindings(app).close()


# -- under gunicorn, two workers ---------------------------------------------------------


def test_gunicorn_workers_share_cache_and_state(tmp_path: Path) -> None:
    servers.need(servers.redis_ok(), f"Redis at {servers.REDIS_URL}")
    env = {
        "PLOY_CACHE_URL": servers.REDIS_URL,
        "PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
    }
    uid = uuid.uuid4().hex[:10]
    with servers.gunicorn(tmp_path, env, "-w", "2") as (base, _):
        try:
            _check_two_workers(base, uid)
        finally:
            with contextlib.suppress(Exception):
                import redis

                client = redis.Redis.from_url(servers.REDIS_URL)
                keys = list(client.scan_iter(match=f"ploy:*{uid}*"))
                if keys:
                    client.delete(*keys)
                client.close()


def _check_two_workers(base: str, uid: str) -> None:
    # Written once, by whichever worker takes the request.
    assert servers.http_json(base, f"/counters/{uid}", {}) == (200, {"name": uid, "value": 1})

    # Two slow reports (0.5 s each) at once: the busy worker cannot take
    # the second, so both workers answer. Both read the counter from the
    # shared SQLite file, though only one of them wrote it.
    reports: list[dict[str, Any]] = []
    for attempt in range(5):
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda p: servers.http_json(base, p),
                    [f"/reports/{uid}-{attempt}-a", f"/reports/{uid}-{attempt}-b"],
                )
            )
        reports = [a[1]["report"] for a in answers]
        if len({r["generated_by"] for r in reports}) == 2:
            break
    pids = {r["generated_by"] for r in reports}
    assert len(pids) == 2, reports
    for r in reports:
        assert r["counters"] == {uid: 1}

    # The cache is shared too: while one worker holds the report lock in
    # Redis (add), the other worker's refresh is refused.
    with ThreadPoolExecutor(2) as pool:
        holder = pool.submit(servers.http_json, base, f"/reports/{uid}/refresh", {})
        time.sleep(0.15)
        other_pid = servers.http_json(base, "/whoami")[1]["pid"]
        refused = servers.http_json(base, f"/reports/{uid}/refresh", {})
        held = holder.result()
    assert held[0] == 200 and held[1]["locked"] is True
    assert other_pid in pids and other_pid != held[1]["report"]["generated_by"]
    assert refused[0] == 409

    # And every read, by either worker, sees what one of them wrote.
    servers.http_json(base, "/cache/set", {"key": f"k{uid}", "value": "shared"})
    servers.http_json(base, "/state/set", {"key": f"k{uid}", "value": "durable"})
    seen = set()
    for _ in range(20):
        seen.add(servers.http_json(base, "/whoami")[1]["pid"])
        assert servers.http_json(base, f"/cache/get?key=k{uid}") == (200, {"value": "shared"})
        assert servers.http_json(base, f"/state/get?key=k{uid}") == (200, {"value": "durable"})
    assert seen <= pids


# -- the page in headless Chromium -------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


class WebSocket:
    """A minimal RFC 6455 client: enough for the Chrome DevTools Protocol."""

    def __init__(self, url: str, timeout: float = 15) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "the DevTools server closed the connection"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()  # noqa: S324
        )
        assert b"Sec-WebSocket-Accept: " + accept in head, head

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the DevTools server closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            length = bytes([0x80 | n])
        elif n < 65536:
            length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode]) + length + mask + masked)

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            mask = self._read(4) if b1 & 0x80 else b""
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 0x9:  # ping
                self._frame(0xA, data)
                continue
            if opcode == 0x8:
                raise ConnectionError("the DevTools server closed the WebSocket")
            message += data
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._frame(0x8, b"")
        self.sock.close()


class Page:
    """One Chromium tab, driven over the DevTools Protocol."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.call("Page.enable")
        self.call("Runtime.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})  # type: ignore[no-any-return]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            assert time.monotonic() < deadline, f"no {event} within {timeout} s"
            self.events.append(json.loads(self.ws.recv()))
        self.events.clear()

    def eval(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")

    def submit(self, script: str) -> None:
        """Run *script* (which submits a form) and wait for the next page."""
        self.events.clear()
        self.eval(script)
        self.wait_for("Page.loadEventFired")

    def text(self, selector: str) -> str | None:
        return self.eval(  # type: ignore[no-any-return]
            f"(e => e && e.textContent.trim())(document.querySelector({json.dumps(selector)}))"
        )


@contextlib.contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve *app* on a free loopback port in a thread; yield its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[Page]:
    """Headless Chromium on a free DevTools port; yields its first tab."""
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",  # Chromium picks a port and writes it down
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its helper processes share our new group
    )
    ws: WebSocket | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            assert proc.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                tabs = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if tabs:
                break
            assert time.monotonic() < deadline, "chromium opened no tab"
            time.sleep(0.05)
        ws = WebSocket(tabs[0]["webSocketDebuggerUrl"])
        yield Page(ws)
    finally:
        if ws is not None:
            ws.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.slow
def test_page_in_headless_chromium(tmp_path: Path) -> None:
    servers.need(os.path.exists(CHROMIUM), "chromium")
    app = _make(tmp_path, "memory://")
    try:
        with serve(app) as base, chromium(tmp_path) as page:
            page.navigate(base + "/")
            assert page.eval("document.title") == "flask-ploy example"
            assert page.text("#counters") == "No counters yet."
            assert page.text('[data-flag="dark-mode"]') == "off"
            white = page.eval("getComputedStyle(document.body).backgroundColor")

            # Type a counter name and press the button, twice.
            fill = (
                "document.querySelector('#counter-name').value = 'clicks';"
                "document.querySelector('#counter-form button').click()"
            )
            page.submit(fill)
            assert page.text('[data-counter="clicks"]') == "1"
            assert page.text(".flash") == "Counter clicks is now 1."
            page.submit(fill)
            assert page.text('[data-counter="clicks"]') == "2"

            # Turn a flag on with its button.
            page.submit("document.querySelector('#toggle-dark-mode').click()")
            assert page.text('[data-flag="dark-mode"]') == "on"
            assert page.text("#toggle-dark-mode") == "Turn off"

            # Choose the dark theme and French; the page re-renders in them.
            page.submit(
                "document.querySelector('#prefs-user').value = 'carol';"
                "document.querySelector('#theme').value = 'dark';"
                "document.querySelector('#language').value = 'fr';"
                "document.querySelector('#prefs-form').requestSubmit()"
            )
            assert page.eval("location.search") == "?user=carol"
            assert page.text('[data-pref="theme"]') == "dark"
            assert page.eval("document.documentElement.lang") == "fr"
            dark = page.eval("getComputedStyle(document.body).backgroundColor")
            assert dark == "rgb(30, 31, 34)" and dark != white
            # The counters and flags the browser changed are what the app stored.
            assert servers.http_json(base, "/counters") == (200, {"clicks": 2})
            assert servers.http_json(base, "/flags/dark-mode")[1]["enabled"] is True
            assert servers.http_json(base, "/prefs/carol")[1] == {"theme": "dark", "language": "fr"}
    finally:
        _close(app)
