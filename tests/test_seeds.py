"""Every example of the seed docs (cache.md, state.md), in Python, in views,
through the test client, on memory:// and a real Redis (``seed_cache_url``)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, g, request

REPORTS_COMPUTED: list[str] = []


def compute_expensive_report(report_id: str) -> dict[str, Any]:
    REPORTS_COMPUTED.append(report_id)
    return {"id": report_id, "total": 42}


# -- the seed code, ported line by line ------------------------------------------


def get_report(report_id: str) -> dict[str, Any]:
    cached = g.env.CACHE.get(f"report:{report_id}")
    if cached:
        return json.loads(cached)  # type: ignore[no-any-return]
    report = compute_expensive_report(report_id)
    g.env.CACHE.set(f"report:{report_id}", json.dumps(report), ttl=600)  # 10 minutes
    return report


def is_rate_limited(ip: str) -> bool:
    key = f"ratelimit:{ip}"
    seen = g.env.CACHE.get(key)
    if seen:
        return True
    g.env.CACHE.set(key, "1", ttl=1)  # block repeats from the same IP for 1 second
    return False


def is_feature_enabled(feature: str) -> bool:
    value = g.env.STATE.get(f"feature:{feature}")
    return value == "true"


def increment_counter(name: str) -> int:
    current = g.env.STATE.get(f"counter:{name}")
    new_count = int(current) + 1 if current else 1
    g.env.STATE.set(f"counter:{name}", str(new_count))
    return new_count


def get_user_preferences(user_id: str) -> dict[str, str]:
    raw = g.env.STATE.get(f"prefs:{user_id}")
    return json.loads(raw) if raw else {"theme": "light", "language": "en"}  # type: ignore[no-any-return]


def set_user_preferences(user_id: str, prefs: dict[str, str]) -> None:
    g.env.STATE.set(f"prefs:{user_id}", json.dumps(prefs))


def register_views(app: Flask) -> None:
    @app.get("/cache/set")
    def cache_set() -> Any:
        g.env.CACHE.set("greeting", "hello", ttl=60)  # cache for 60 seconds
        return {"success": True}

    @app.get("/cache/get")
    def cache_get() -> Any:
        return {"value": g.env.CACHE.get("greeting")}

    @app.get("/cache/short")
    def cache_short() -> Any:
        g.env.CACHE.set("username", "alice")  # no expiry
        g.env.CACHE.set("session:abc", "token", ttl=1)
        return {"success": True}

    @app.get("/cache/read/<path:key>")
    def cache_read(key: str) -> Any:
        return {"value": g.env.CACHE.get(key)}

    @app.get("/report/<report_id>")
    def report(report_id: str) -> Any:
        return get_report(report_id)

    @app.get("/limited")
    def limited() -> Any:
        if is_rate_limited(request.remote_addr or "unknown"):
            return {"error": "slow down"}, 429
        return {"ok": True}

    @app.post("/otp/<user_id>")
    def otp_issue(user_id: str) -> Any:
        code = request.form["code"]
        g.env.CACHE.set(f"otp:{user_id}", code, ttl=900)  # 15 minutes
        return {"success": True}

    @app.post("/otp/<user_id>/check")
    def otp_check(user_id: str) -> Any:
        stored = g.env.CACHE.get(f"otp:{user_id}")
        valid = stored is not None and stored == request.form["code"]
        return {"valid": valid}

    @app.get("/multi-cache/<user_id>")
    def multi_cache(user_id: str) -> Any:
        g.env.CACHE.set("config", "value", ttl=60)
        g.env.SESSION_CACHE.set(f"user:{user_id}", "session-data", ttl=3600)
        return {
            "config": g.env.CACHE.get("config"),
            "session": g.env.SESSION_CACHE.get(f"user:{user_id}"),
            "session_in_cache": g.env.CACHE.get(f"user:{user_id}"),
        }

    @app.get("/state/set")
    def state_set() -> Any:
        g.env.STATE.set("greeting", "hello world")
        return {"success": True}

    @app.get("/state/get")
    def state_get() -> Any:
        return {"value": g.env.STATE.get("greeting")}

    @app.get("/state/delete")
    def state_delete() -> Any:
        g.env.STATE.delete("greeting")
        return {"success": True}

    @app.post("/users/<user_id>")
    def user_set(user_id: str) -> Any:
        user = {"name": "Alice", "role": "admin"}
        g.env.STATE.set(f"user:{user_id}", json.dumps(user))
        return {"success": True}

    @app.get("/users/<user_id>")
    def user_get(user_id: str) -> Any:
        raw = g.env.STATE.get(f"user:{user_id}")
        return {"user": json.loads(raw) if raw else None}

    @app.post("/features/<feature>")
    def feature_enable(feature: str) -> Any:
        g.env.STATE.set(f"feature:{feature}", "true")
        return {"success": True}

    @app.get("/features/<feature>")
    def feature_check(feature: str) -> Any:
        return {"enabled": is_feature_enabled(feature)}

    @app.post("/counters/<name>")
    def counter(name: str) -> Any:
        return {"count": increment_counter(name)}

    @app.route("/prefs/<user_id>", methods=["GET", "POST"])
    def prefs(user_id: str) -> Any:
        if request.method == "POST":
            set_user_preferences(user_id, request.get_json())
        return get_user_preferences(user_id)

    @app.get("/multi-state")
    def multi_state() -> Any:
        g.env.STATE.set("config", "general")
        g.env.USER_STATE.set("user:abc", "user-data")
        return {
            "config": g.env.STATE.get("config"),
            "user": g.env.USER_STATE.get("user:abc"),
            "user_in_state": g.env.STATE.get("user:abc"),
        }


SEED_BINDINGS = {
    "kind": "dynamic",
    "build": "pnpm build",
    "out": "dist",
    "cache": {"CACHE": "default", "SESSION_CACHE": "sessions"},
    "state": {"STATE": "default", "USER_STATE": "users"},
}


@pytest.fixture
def client(make_app: Any, seed_cache_url: str, tmp_path: Any) -> Iterator[Any]:
    app = make_app(
        SEED_BINDINGS,
        PLOY_CACHE_URL=seed_cache_url,
        PLOY_CACHE_KEY_PREFIX=f"seed{uuid.uuid4().hex[:10]}",
        PLOY_STATE_URL=f"sqlite:///{tmp_path}/seed.sqlite3",
    )
    register_views(app)
    yield app.test_client()
    with app.app_context():
        g.env.CACHE.clear()
        g.env.SESSION_CACHE.clear()


def test_cache_basic_example(client: Any) -> None:
    assert client.get("/cache/get").json == {"value": None}
    assert client.get("/cache/set").json == {"success": True}
    assert client.get("/cache/get").json == {"value": "hello"}


def test_cache_ttl_expires_after_a_real_wait(client: Any) -> None:
    client.get("/cache/short")
    assert client.get("/cache/read/session:abc").json == {"value": "token"}
    time.sleep(1.2)
    assert client.get("/cache/read/session:abc").json == {"value": None}
    assert client.get("/cache/read/username").json == {"value": "alice"}


def test_report_is_computed_once(client: Any) -> None:
    report_id = uuid.uuid4().hex
    first = client.get(f"/report/{report_id}").json
    second = client.get(f"/report/{report_id}").json
    assert first == second == {"id": report_id, "total": 42}
    assert REPORTS_COMPUTED.count(report_id) == 1


def test_rate_limiting(client: Any) -> None:
    assert client.get("/limited").status_code == 200
    assert client.get("/limited").status_code == 429
    time.sleep(1.2)
    assert client.get("/limited").status_code == 200


def test_one_time_code(client: Any) -> None:
    assert client.post("/otp/u1/check", data={"code": "123456"}).json == {"valid": False}
    client.post("/otp/u1", data={"code": "123456"})
    assert client.post("/otp/u1/check", data={"code": "654321"}).json == {"valid": False}
    assert client.post("/otp/u1/check", data={"code": "123456"}).json == {"valid": True}
    assert client.post("/otp/u2/check", data={"code": "123456"}).json == {"valid": False}


def test_multiple_cache_bindings(client: Any) -> None:
    assert client.get("/multi-cache/7").json == {
        "config": "value",
        "session": "session-data",
        "session_in_cache": None,
    }


def test_state_basic_example(client: Any) -> None:
    assert client.get("/state/get").json == {"value": None}
    assert client.get("/state/set").json == {"success": True}
    assert client.get("/state/get").json == {"value": "hello world"}
    assert client.get("/state/delete").json == {"success": True}
    assert client.get("/state/get").json == {"value": None}


def test_json_data(client: Any) -> None:
    assert client.get("/users/123").json == {"user": None}
    client.post("/users/123")
    assert client.get("/users/123").json == {"user": {"name": "Alice", "role": "admin"}}


def test_feature_flags(client: Any) -> None:
    assert client.get("/features/dark-mode").json == {"enabled": False}
    client.post("/features/dark-mode")
    assert client.get("/features/dark-mode").json == {"enabled": True}


def test_persistent_counters(client: Any) -> None:
    assert [client.post("/counters/visits").json["count"] for _ in range(3)] == [1, 2, 3]
    assert client.post("/counters/other").json == {"count": 1}


def test_user_preferences(client: Any) -> None:
    assert client.get("/prefs/u1").json == {"theme": "light", "language": "en"}
    client.post("/prefs/u1", json={"theme": "dark", "language": "de"})
    assert client.get("/prefs/u1").json == {"theme": "dark", "language": "de"}
    assert client.get("/prefs/u2").json == {"theme": "light", "language": "en"}


def test_multiple_state_bindings(client: Any) -> None:
    assert client.get("/multi-state").json == {
        "config": "general",
        "user": "user-data",
        "user_in_state": None,
    }


def test_state_survives_a_recreated_app(make_app: Any, tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/durable.sqlite3"
    first = make_app(SEED_BINDINGS, PLOY_STATE_URL=url)
    register_views(first)
    first.test_client().post("/features/beta")
    first.test_client().post("/counters/c")
    second = make_app(SEED_BINDINGS, PLOY_STATE_URL=url)
    register_views(second)
    assert second.test_client().get("/features/beta").json == {"enabled": True}
    assert second.test_client().post("/counters/c").json == {"count": 2}
