"""HTTP: the seed's routes under gunicorn (2 workers), loaded with wrk.

Each round starts the apps (:mod:`bench.ploy_app` and
:mod:`bench.hand_app` on Redis, and :mod:`bench.ploy_sqlite_app`, the
first on the SQLite cache, for the cache routes) afresh, each on its own
port, warms every route up and runs wrk once per route and app, in a
random order, each app idle while another is loaded. The result per route and app is the median
requests per second over the rounds; the ratio is the median of the
per-round ratios. :func:`bench.groups.http_app_group` times the same
routes in process, through Flask's test client, without the server.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: flask-ploy on the SQLite cache: loaded on the cache routes only.
SQLITE_APP = "flask-ploy, SQLite cache"
ROUTES = [("cache get", "GET", "/cache/get"), ("cache set", "POST", "/cache/set"),
          ("state get", "GET", "/state/get"), ("state set", "POST", "/state/set")]  # fmt: skip
APPS = {"flask-ploy": "bench.ploy_app:app", "hand-written": "bench.hand_app:app",
        SQLITE_APP: "bench.ploy_sqlite_app:app"}  # fmt: skip
WORKERS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"gunicorn did not listen on port {port} within {timeout} s")


def _has_setting(name: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(setting.name == name for setting in KNOWN_SETTINGS)


def _ready(port: int, timeout: float = 30.0) -> None:
    """Wait until the workers answer (they import the app after the bind)."""
    deadline = time.monotonic() + timeout
    ok = 0
    while ok < 20:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/cache/get", timeout=5) as r:
                ok += r.status == 200
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the app on port {port} did not answer within {timeout} s"
                ) from None
            time.sleep(0.1)


def _warm(url: str, method: str, n: int = 50) -> None:
    for _ in range(n):
        data = b"" if method == "POST" else None
        req = urllib.request.Request(url, method=method, data=data)  # noqa: S310 (our http URL)
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
            r.read()


@contextlib.contextmanager
def _servers(env: dict[str, str]) -> Iterator[dict[str, int]]:
    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    try:
        for name, target in APPS.items():
            port = _free_port()
            cmd = [sys.executable, "-m", "gunicorn", "-w", str(WORKERS), "-b",
                   f"127.0.0.1:{port}", "--log-level", "warning", target]  # fmt: skip
            if _has_setting("control_socket_disable"):
                cmd.insert(-1, "--no-control-socket")  # two arbiters would share its path
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env))
            ports[name] = port
        for (_name, port), proc in zip(ports.items(), procs):
            _wait(port, proc)
            _ready(port)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wrk(url: str, method: str, seconds: float, script: str) -> dict[str, Any]:
    cmd = ["wrk", "-t1", "-c4", f"-d{max(1, round(seconds))}s", "--latency", url]
    if method == "POST":
        cmd[1:1] = ["-s", script]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if rps is None:
        raise RuntimeError(f"cannot read wrk's output:\n{text}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {
        "rps": float(rps.group(1)),
        "p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else None,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Start both apps, load every route, return medians and ratios."""
    import redis
    from flask import Flask, g

    from flask_ploy import FlaskPloy

    tmp, tag = cfg["tmp"], cfg["tag"]
    path = os.path.join(tmp, "http.sqlite3")
    # Create the table and the data both apps read.
    app = Flask("bench_http_setup", root_path=tmp)
    app.config.update(
        PLOY_BINDINGS={"state": {"STATE": "default"}}, PLOY_STATE_URL=f"sqlite:///{path}"
    )
    FlaskPloy(app)
    with app.app_context():
        g.env.STATE.set("greeting", "hello world")
    client = redis.Redis.from_url(cfg["redis_url"])
    client.set(f"{tag}:default:greeting", "hello")
    script = os.path.join(tmp, "post.lua")
    with open(script, "w", encoding="utf-8") as f:
        f.write('wrk.method = "POST"\n')
    env = {
        **os.environ,
        "BENCH_REDIS_URL": cfg["redis_url"],
        "BENCH_SQLITE_PATH": path,
        "BENCH_PREFIX": tag,
        "BENCH_CACHE_PATH": os.path.join(tmp, "http-cache.sqlite3"),
    }
    seconds, rounds = cfg["http_seconds"], cfg["http_rounds"]
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        route: {name: [] for name in APPS} for route, _m, _p in ROUTES
    }
    rng = random.Random(5)
    try:
        # Fresh servers every round: on 2 shared cores, where the scheduler
        # puts the workers can favour one app for as long as they run.
        for _ in range(rounds):
            with _servers(env) as ports:
                for _route, method, p in ROUTES if cfg.get("http_warmup", True) else []:
                    for port in ports.values():  # warm up every worker and route
                        _warm(f"http://127.0.0.1:{port}{p}", method)
                for route, method, p in ROUTES:
                    order = [a for a in APPS if a != SQLITE_APP or route.startswith("cache")]
                    rng.shuffle(order)
                    for name in order:
                        url = f"http://127.0.0.1:{ports[name]}{p}"
                        samples[route][name].append(_wrk(url, method, seconds, script))
    finally:
        client.delete(f"{tag}:default:greeting")
    out: dict[str, Any] = {
        "workers": WORKERS,
        "seconds": seconds,
        "rounds": rounds,
        "wrk": "wrk -t1 -c4 --latency",
        "routes": {},
    }
    for route, _m, p in ROUTES:
        entry: dict[str, Any] = {"path": p}
        for name in APPS:
            runs = samples[route][name]
            if not runs:
                continue
            entry[name] = {
                "rps": statistics.median(r["rps"] for r in runs),
                "p50_ms": statistics.median(r["p50_ms"] or 0.0 for r in runs),
                "all_rps": [r["rps"] for r in runs],
                "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
            }
        hand = [r["rps"] for r in samples[route]["hand-written"]]
        ploy = [r["rps"] for r in samples[route]["flask-ploy"]]
        entry["ratio"] = entry["flask-ploy"]["rps"] / entry["hand-written"]["rps"]
        entry["paired_ratio"] = statistics.median(a / b for a, b in zip(ploy, hand))
        lite = [r["rps"] for r in samples[route][SQLITE_APP]]
        if lite:  # the SQLite cache against flask-ploy on Redis
            entry["sqlite_vs_redis"] = statistics.median(a / b for a, b in zip(lite, ploy))
        out["routes"][route] = entry
    return out
