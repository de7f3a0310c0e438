"""The example app: every endpoint through the test client on memory:// and a
real Redis, its behaviour through a cache outage, under gunicorn with two
workers, and its page driven in headless Chromium.

The seed examples themselves are tested in test_seeds.py; these tests are
about the app's endpoints and page.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import threading
import time
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
    assert first["expires_in"] == 600  # the seed's 10 minutes
    assert first["report"]["expires_at"] == pytest.approx(time.time() + 600, abs=5)
    client.post("/counters/orders")
    second = client.get("/reports/daily").json
    assert second["report"] == first["report"]  # not recomputed
    assert second["cached"] is True
    assert 598 <= second["expires_in"] <= 600
    refreshed = client.post("/reports/daily/refresh").json
    assert refreshed["locked"] is True
    assert refreshed["report"]["total"] == 2
    assert refreshed["expires_in"] == 600
    third = client.get("/reports/daily").json
    assert (third["report"], third["cached"]) == (refreshed["report"], True)


def test_report_at_once_is_computed_once_and_the_seed_stampedes(tmp_path: Path) -> None:
    """8 requests at once for a cold report: /reports/<id> (get_or_set)
    computes it once and the others wait for it; the seed's version, at
    /reports/<id>/seed, computes it once per request."""
    app = _make(tmp_path, f"sqlite:///{tmp_path}/cache.sqlite3", REPORT_SECONDS=0.3)
    try:

        def fetch(path: str) -> Any:
            return app.test_client().get(path).json

        with ThreadPoolExecutor(8) as pool:
            ploy = list(pool.map(fetch, ["/reports/cold"] * 8))
            seed = list(pool.map(fetch, ["/reports/cold-seed/seed"] * 8))
        assert len({r["report"]["generated_at"] for r in ploy}) == 1
        assert sorted(r["cached"] for r in ploy) == [False] + [True] * 7
        assert len({r["report"]["generated_at"] for r in seed}) > 1  # one per request, or so
        assert [r["cached"] for r in seed].count(False) > 1
        assert fetch("/reports/cold")["expires_in"] == 600
    finally:
        _close(app)


def test_report_leaves_the_cache_when_it_says(app: Flask) -> None:
    """The expiry stored beside the report (what the page counts down) is the real TTL."""
    app.config["REPORT_TTL"] = 2
    client = app.test_client()
    first = client.get("/reports/ttl").json
    assert (first["cached"], first["expires_in"]) == (False, 2)
    expires_at = first["report"]["expires_at"]
    while time.time() < expires_at - 0.3:  # a hit until just before the stored expiry
        assert client.get("/reports/ttl").json["cached"] is True
        time.sleep(0.1)
    time.sleep(max(0.0, expires_at + 0.6 - time.time()))  # Redis expires to the millisecond
    again = client.get("/reports/ttl").json
    assert again["cached"] is False  # gone from the cache: computed anew
    assert again["report"]["generated_at"] > first["report"]["generated_at"]


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


def test_rate_limit_retry_after_is_what_is_left_of_the_window(app: Flask) -> None:
    app.config.update(RATE_LIMIT=1, RATE_WINDOW=60)
    client = app.test_client()
    assert client.get("/ratelimit").status_code == 200
    with app.app_context():  # 7 s of the window left
        assert g.env.CACHE.touch("ratelimit:window:127.0.0.1", 7)
    limited = client.get("/ratelimit")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"


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
        "/page/prefs",
        data={"user": "bob", "theme": "light", "language": "de"},
        follow_redirects=True,
    )
    assert 'class="theme-light"' in page.text
    assert '<html lang="de">' in page.text
    assert '<td class="muted" data-pref-source="theme">saved</td>' in page.text
    assert client.get("/prefs/bob").json == {"theme": "light", "language": "de"}

    # The dark-mode flag makes dark the default theme: alice, who saved no
    # theme, gets it; bob, who chose light, keeps light.
    page = client.post(
        "/page/flags", data={"feature": "dark-mode", "enabled": "true"}, follow_redirects=True
    )
    assert '<td data-flag="dark-mode">on</td>' in page.text
    assert 'class="theme-dark"' in page.text
    assert '<td class="muted" data-pref-source="theme">default</td>' in page.text
    assert client.get("/prefs/alice").json == {"theme": "dark", "language": "en"}
    assert 'class="theme-light"' in client.get("/?user=bob").text
    client.post("/page/flags", data={"feature": "dark-mode", "enabled": "false"})
    assert 'class="theme-light"' in client.get("/?user=alice").text


def test_page_shows_the_cached_report(client: Any) -> None:
    assert 'id="report-status" class="muted">not in the cache<' in client.get("/").text
    client.get("/reports/daily")
    page = client.get("/").text
    assert 'id="report-status" class="ok">in the cache<' in page
    expires = re.search(r'<section class="panel" id="report" data-expires-in="(\d+)">', page)
    assert expires and 598 <= int(expires.group(1)) <= 600


def test_page_indexes_every_route(app: Flask) -> None:
    @app.get("/added-late/<thing>")
    def added_late(thing: str) -> str:
        """A route added after the app was made."""
        return thing

    page = app.test_client().get("/?user=zoe").text
    listed = [html.unescape(r) for r in re.findall(r'<tr data-rule="([^"]+)">', page)]
    rules = [r for r in app.url_map.iter_rules() if r.endpoint != "static"]
    assert sorted(listed) == sorted(r.rule for r in rules)
    assert "/added-late/<thing>" in listed  # read from the URL map: never stale
    assert "A route added after the app was made." in page
    # Every view says what it does in its docstring's first line, which the
    # page shows with reST's ``code`` as <code>.
    for rule in rules:
        assert app.view_functions[rule.endpoint].__doc__, f"{rule.endpoint} has no docstring"
    assert "Read <code>key</code> from a cache binding" in page
    # GET routes link to an example: the user's own preferences, the daily report.
    assert '<a href="/prefs/zoe">/prefs/&lt;user_id&gt;</a>' in page
    assert '<a href="/reports/daily">/reports/&lt;report_id&gt;</a>' in page


def test_page_escapes_what_users_typed(client: Any) -> None:
    client.post("/page/counters", data={"name": "<script>x</script>"})
    assert "<script>x" not in client.get("/").text
    assert "&lt;script&gt;x" in client.get("/").text


def test_browser_writes_from_another_site_are_refused(client: Any) -> None:
    """The cheap CSRF defence: a browser's cross-site write is a 403, reads pass."""
    for site in ("cross-site", "same-site"):
        response = client.post("/counters/csrf", headers={"Sec-Fetch-Site": site})
        assert response.status_code == 403
        assert f"Sec-Fetch-Site: {site}" in response.json["error"]
        refused = client.post("/page/flags", data={"feature": "f", "enabled": "true"},
                              headers={"Sec-Fetch-Site": site})  # fmt: skip
        assert refused.status_code == 403
        assert client.get("/counters/csrf", headers={"Sec-Fetch-Site": site}).status_code == 200
    assert client.get("/counters").json == {}
    assert client.get("/flags/f").json["enabled"] is False
    # The page's own forms (same-origin), a typed URL (none), and clients
    # that are not browsers (no header) write as before.
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        assert client.post("/counters/csrf", headers=headers).status_code == 200
    assert client.get("/counters").json == {"csrf": 3}


# -- configuration --------------------------------------------------------------------


def test_environment_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The example reads the environment as Flask does (from_prefixed_env)."""
    monkeypatch.setenv("FLASK_PLOY_CACHE_URL", "redis://:env-pw@127.0.0.1:6399/3")
    monkeypatch.setenv("FLASK_PLOY_STATE_URL", f"sqlite:///{tmp_path}/env.sqlite3")
    monkeypatch.setenv("FLASK_SECRET_KEY", "from-env")
    app = create_app()
    try:
        assert app.config["SECRET_KEY"] == "from-env"
        assert example_app.ploy.cache_stats(app) == {
            "redis://:***@127.0.0.1:6399/3": {
                "failures": 0,
                "skipped": 0,
                "busy": 0,
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
    for key in list(os.environ):
        if key.startswith("FLASK_"):
            monkeypatch.delenv(key)
    from flask.cli import ScriptInfo

    app = ScriptInfo(app_import_path="example_app").load_app()  # what `flask --app` does
    try:
        assert app.instance_path == str(ROOT / "example_app" / "instance")
        assert example_app.ploy.state_store("STATE", app).display_url == (
            f"sqlite:///{ROOT / 'example_app' / 'instance' / 'ploy-state.sqlite3'}"
        )
        assert list(example_app.ploy.cache_stats(app)) == [
            f"sqlite:///{ROOT / 'example_app' / 'instance' / 'ploy-cache.sqlite3'}"
        ]
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
        "FLASK_PLOY_CACHE_URL": servers.REDIS_URL,
        "FLASK_PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
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


# -- the page in headless Chromium, driven by Playwright ---------------------------------

CHROMIUM = "/usr/bin/chromium"
# Known to work as root in a container; Playwright adds a new empty profile
# (--user-data-dir) and --headless itself.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The screenshot docs/quickstart.rst shows; ``make screenshot`` rewrites it.
SCREENSHOT = ROOT / "docs" / "_static" / "example-page.png"
DARK_BACKGROUND = "rgb(30, 31, 34)"


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, launched by Playwright (never ``playwright install``)."""
    servers.need(os.path.exists(CHROMIUM), f"chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        servers.need(False, "playwright (pip install -e '.[test]')")
        raise
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A new tab in a new browser context (no cookies); JavaScript errors fail the test.

    Chromium's console also reports every 4xx answer ("Failed to load
    resource"), which the tests cause on purpose: those are not errors here.
    """
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    tab.on("console", console)
    try:
        yield tab
        assert errors == []
    finally:
        context.close()


def _text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text()).strip()


def _background(page: Any) -> str:
    return str(page.evaluate("getComputedStyle(document.body).backgroundColor"))


def _overflow(page: Any) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


@pytest.mark.slow
def test_page_state_panels_in_chromium(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    app = _make(tmp_path, "memory://")
    try:
        with serve(app) as base:
            page.goto(base + "/")
            expect(page).to_have_title("flask-ploy example")
            expect(page.locator("#counters")).to_have_text("No counters yet.")
            expect(page.locator('[data-flag="dark-mode"]')).to_have_text("off")
            white = _background(page)

            # Type a counter name and press the button, twice.
            for expected in ("1", "2"):
                page.fill("#counter-name", "clicks")
                page.click("#counter-form button")
                expect(page.locator('[data-counter="clicks"]')).to_have_text(expected)
            expect(page.locator(".flash")).to_have_text("Counter clicks is now 2.")

            # The dark-mode flag turns the page dark for alice, who chose no theme.
            page.click("#toggle-dark-mode")
            expect(page.locator('[data-flag="dark-mode"]')).to_have_text("on")
            expect(page.locator("#toggle-dark-mode")).to_have_text("Turn off")
            assert _background(page) == DARK_BACKGROUND != white
            expect(page.locator('[data-pref="theme"]')).to_have_text("dark")
            expect(page.locator('[data-pref-source="theme"]')).to_have_text("default")

            # carol chooses the light theme and French: her choice beats the flag.
            page.fill("#prefs-user", "carol")
            page.select_option("#theme", "light")
            page.select_option("#language", "fr")
            page.click("#prefs-form button")
            expect(page).to_have_url(base + "/?user=carol")
            expect(page.locator('[data-pref="theme"]')).to_have_text("light")
            expect(page.locator('[data-pref-source="theme"]')).to_have_text("saved")
            assert page.evaluate("document.documentElement.lang") == "fr"
            assert _background(page) == white

            # What the browser changed is what the app stored.
            assert servers.http_json(base, "/counters") == (200, {"clicks": 2})
            assert servers.http_json(base, "/flags/dark-mode")[1]["enabled"] is True
            assert servers.http_json(base, "/prefs/carol")[1]["theme"] == "light"
            assert servers.http_json(base, "/prefs/alice")[1]["theme"] == "dark"
    finally:
        _close(app)


@pytest.mark.slow
def test_page_cache_panel_in_chromium(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    app = _make(tmp_path, "memory://", REPORT_SECONDS=0.3, REPORT_TTL=5, RATE_LIMIT=3,
                RATE_WINDOW=30)  # fmt: skip
    try:
        with serve(app) as base:
            page.goto(base + "/")
            status, seconds = page.locator("#report-status"), page.locator("#report-seconds")
            expect(status).to_have_text("not in the cache")
            expect(page.locator("#report-countdown")).to_be_hidden()

            # A miss computes the report; then hits, while the TTL counts down.
            page.click("#report-form button")
            expect(status).to_contain_text("miss: computed in")
            expect(page.locator("#report-countdown")).to_be_visible()
            first = int(seconds.inner_text())
            assert first in (4, 5)
            expect(seconds).to_have_text(str(first - 1), timeout=2000)  # it counts down
            page.click("#report-form button")
            expect(status).to_contain_text("hit: from the cache in")

            # A new page load shows the same entry, from the server's side.
            page.reload()
            expect(status).to_have_text("in the cache")
            expect(page.locator("#report-countdown")).to_be_visible()

            # At zero it has really left the cache: the next request is a miss.
            expect(status).to_have_text("expired: the next request is a miss", timeout=8000)
            page.click("#report-form button")
            expect(status).to_contain_text("miss: computed in")
            page.click("#refresh-form button")
            expect(status).to_contain_text("recomputed in")
            expect(seconds).to_have_text(re.compile(r"^[45]$"))

            # Rate limiting: 3 requests pass, the 4th is refused.
            result = page.locator("#ratelimit-result")
            for n in (1, 2, 3):
                page.click("#ratelimit-form button")
                expect(result).to_have_text(f"200 OK: request {n} of 3 in this window")
            page.click("#ratelimit-form button")
            expect(result).to_have_text(
                "429 Too Many Requests: 4 requests in this window, over the limit of 3;"
                " retry after 30 s"
            )

            # A one-time code: sent, a wrong one refused, the right one valid once.
            page.click("#otp-send-form button")
            expect(page.locator("#otp-code")).to_contain_text("Your code: ")
            code = re.search(r"\d{6}", _text(page, "#otp-code"))
            assert code
            otp = page.locator("#otp-result")
            page.fill("#otp-input", "000000" if code.group() != "000000" else "111111")
            page.click("#otp-verify-form button")
            expect(otp).to_have_text("not valid: wrong, expired or already used")
            page.fill("#otp-input", code.group())
            page.click("#otp-verify-form button")
            expect(otp).to_have_text("valid: the code is used up now")
            page.click("#otp-verify-form button")
            expect(otp).to_have_text("not valid: wrong, expired or already used")
    finally:
        _close(app)


@pytest.mark.slow
def test_page_fits_a_420px_screen_in_both_themes(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    # Redis gives the longest binding reprs; memory:// when it is missing.
    cache_url = servers.REDIS_URL if servers.redis_ok() else "memory://"
    app = _make(tmp_path, cache_url)
    try:
        with serve(app) as base:
            # Long words a user typed: a counter name and a user name.
            servers.http_json(base, "/counters/" + "x" * 80, {})
            page.set_viewport_size({"width": 420, "height": 800})
            page.goto(base + "/?user=" + "u" * 64)
            assert len(_text(page, "#binding-list")) > 200  # long reprs are on the page
            assert _overflow(page) == 0
            page.click("#toggle-dark-mode")
            expect(page.locator('[data-flag="dark-mode"]')).to_have_text("on")
            page.click("#report-form button")
            page.click("#ratelimit-form button")
            page.click("#otp-send-form button")
            expect(page.locator("#otp-code")).to_contain_text("Your code: ")
            assert _background(page) == DARK_BACKGROUND
            assert _overflow(page) == 0
    finally:
        _close(app)


@pytest.mark.slow
def test_cross_site_form_is_refused_in_chromium(page: Any, tmp_path: Path) -> None:
    """A form on another site posting to the app: Chromium marks it, the app refuses it."""
    app = _make(tmp_path, "memory://")
    try:
        with serve(app) as base:
            page.set_content(
                f'<form method="post" action="{base}/counters/forged">'
                "<button>win a prize</button></form>"
            )
            with page.expect_response(f"{base}/counters/forged") as answer:
                page.click("button")
            assert answer.value.status == 403
            assert servers.http_json(base, "/counters") == (200, {})
    finally:
        _close(app)


@pytest.mark.slow
def test_screenshot_for_the_docs(page: Any, tmp_path: Path) -> None:
    """The picture of the page in docs/quickstart.rst, taken from the real page.

    Saved under tmp_path; ``make screenshot`` (``PLOY_SCREENSHOT=1``) also
    writes it to docs/_static/example-page.png.
    """
    from playwright.sync_api import expect

    app = _make(tmp_path, "memory://", REPORT_SECONDS=0.2)
    try:
        with serve(app) as base:
            for path in ("/counters/visits", "/counters/visits", "/counters/orders"):
                servers.http_json(base, path, {})
            servers.http_json(base, "/flags/new-checkout", {"enabled": "true"})
            page.set_viewport_size({"width": 860, "height": 900})
            page.goto(base + "/")
            page.click("#report-form button")
            expect(page.locator("#report-status")).to_contain_text("miss")
            page.click("#ratelimit-form button")
            page.click("#otp-send-form button")
            expect(page.locator("#otp-code")).to_contain_text("Your code: ")
            # From the top to the end of the Cache panels.
            bottom = page.evaluate("document.getElementById('bindings').offsetTop")
            shot = tmp_path / "example-page.png"
            page.screenshot(
                path=str(shot),
                full_page=True,
                clip={"x": 0, "y": 0, "width": 860, "height": bottom - 16},
            )
    finally:
        _close(app)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 860 and 1000 < height < 4000
    if os.environ.get("PLOY_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        SCREENSHOT.write_bytes(data)
    assert SCREENSHOT.exists(), "run `make screenshot` to make docs/_static/example-page.png"
    assert f"_static/{SCREENSHOT.name}" in (ROOT / "docs" / "quickstart.rst").read_text()
