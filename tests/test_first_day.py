"""Issue 13, a user's first day: the example app under ``gunicorn -w 4`` with
no cache URL. The default cache, a SQLite file in the instance folder, is
one cache for the four workers and for ``flask ploy cache``: every one-time
code validates, the rate limit counts exactly, the report is computed once.
(With the old default, memory://, an OTP code validated 2 times of 4 and the
rate limit answered ``200 429 429 200 200 429 429 200``.)"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from . import servers
from .test_faults import figure

ROUNDS = 40  # one-time codes sent and verified, 8 clients at once, a new connection each


def _flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    return subprocess.run(
        [flask, "--app", "example_app", "ploy", "cache", *args],
        cwd=servers.ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _first_day(base: str, tag: str) -> dict[str, Any]:
    """The issue's steps, with 8 clients at once so that the 4 workers share them."""

    def otp(i: int) -> tuple[bool, bool, int]:
        code = servers.http_json(base, f"/otp/{tag}{i}", data={})[1]["code"]
        first = servers.http_json(base, f"/otp/{tag}{i}/verify", data={"code": code})[1]
        again = servers.http_json(base, f"/otp/{tag}{i}/verify", data={"code": code})[1]
        pid = servers.http_json(base, "/whoami")[1]["pid"]
        return first["valid"] is True, again["valid"] is True, pid

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(otp, range(ROUNDS)))
    with ThreadPoolExecutor(20) as pool:  # the atomic rate limit, 5 per 10 s
        answers = list(pool.map(lambda _: servers.http_json(base, "/ratelimit"), range(20)))
    reports = [servers.http_json(base, f"/reports/{tag}")[1]]  # computed, then cached
    with ThreadPoolExecutor(4) as pool:
        reports += pool.map(lambda _: servers.http_json(base, f"/reports/{tag}")[1], range(11))
    return {
        "valid": sum(first for first, _, _ in codes),
        "reused": sum(again for _, again, _ in codes),
        "pids": {pid for _, _, pid in codes},
        "statuses": sorted(status for status, _ in answers),
        # None: the cache could not count the request (the limit fails open).
        "hits": sorted(body["hits"] for _, body in answers if body["hits"] is not None),
        "computed": len({r["report"]["generated_at"] for r in reports}),
    }


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("FLASK_PLOY_", "PLOY_")):
            monkeypatch.delenv(key)


def test_gunicorn_four_workers_share_the_default_cache(
    tmp_path: Path, clean_env: None, request: pytest.FixtureRequest
) -> None:
    prefix = f"firstday{uuid.uuid4().hex[:8]}"  # the instance folder's file is shared
    env = {
        "FLASK_PLOY_CACHE_KEY_PREFIX": prefix,
        "FLASK_PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
        "FLASK_REPORT_SECONDS": "0.2",
    }
    with servers.gunicorn(tmp_path, env, "-w", "4") as (base, _proc):
        servers.sync_workers_answer(base, 4)  # all booted: the clients can spread
        found = _first_day(base, "u")
        # The CLI reaches the same cache as the workers, both ways.
        servers.http_json(base, "/cache/set", data={"key": "from-http", "value": "hello"})
        got = _flask(env, "get", "CACHE", "from-http")
        assert (got.returncode, got.stdout) == (0, "hello\n"), got.stderr
        assert _flask(env, "set", "CACHE", "from-cli", "bonjour").returncode == 0
        with ThreadPoolExecutor(8) as pool:
            seen = set(pool.map(
                lambda _: servers.http_json(base, "/cache/get?key=from-cli")[1]["value"], range(16)
            ))  # fmt: skip
        _flask(env, "delete", "CACHE", "from-http")
        _flask(env, "delete", "CACHE", "from-cli")
    # What the workers logged: a write that waited past the SQLite cache's
    # 0.5 s for the file's lock is dropped, as documented ("busy").
    busy = [
        line
        for log in tmp_path.glob("gunicorn-*.log")
        for line in log.read_text(errors="replace").splitlines()
        if "was busy" in line
    ]
    # Control: the old default, memory://, on the same steps.
    env["FLASK_PLOY_CACHE_URL"] = "memory://"
    with servers.gunicorn(tmp_path, env, "-w", "4") as (base, _proc):
        servers.sync_workers_answer(base, 4)
        old = _first_day(base, "m")

    assert len(found["pids"]) >= 2, found["pids"]  # the clients were spread over the workers
    # Every code validates, every request is counted and the report computed
    # once, unless a loaded machine held the file's lock past the write
    # timeout, which the workers log: then at most 2 writes of each are lost
    # (memory:// loses about 3 codes in 4).
    allowed = 2 if busy else 0
    lost, uncounted = ROUNDS - found["valid"], 20 - len(found["hits"])
    assert lost <= allowed and uncounted <= allowed, (found, busy)
    assert found["reused"] == 0
    assert found["hits"] == list(range(1, 21 - uncounted)), found["hits"]
    assert found["statuses"] == [200] * (5 + uncounted) + [429] * (15 - uncounted), found
    assert found["computed"] <= 1 + allowed // 2, (found, busy)
    assert seen == {"bonjour"}
    # The control shows the symptoms, one or both (which requests
    # land on which worker is the kernel's choice: on a loaded machine one
    # worker may take most of them, and its own cache then looks right).
    if len(old["pids"]) >= 2:
        assert old["valid"] < ROUNDS or old["statuses"].count(200) > 5, old
    figure(
        request,
        f"gunicorn -w 4 without a cache URL (the SQLite default), 8 clients at once on"
        f" {len(found['pids'])} workers:"
        f" one-time codes valid {found['valid']} of {ROUNDS} (reused: {found['reused']});"
        f" rate limit 5 per window, 20 requests at once: {found['statuses'].count(200)} x 200,"
        f" {found['statuses'].count(429)} x 429, counts 1..20 exact; report computed"
        f" {found['computed']} time(s) for 12 requests; flask ploy cache get/set reached the"
        f" workers' cache. memory:// on the same steps: {old['valid']} of {ROUNDS} codes valid,"
        f" {old['statuses'].count(200)} x 200, report computed {old['computed']} times",
    )
