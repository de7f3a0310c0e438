"""Stampedes: one slow report under load, three ways (:mod:`bench.stampede_app`).

``python -m bench --groups stampede`` (or ``python -m bench.stampede`` for
this group alone, printed). gunicorn serves the app with 4 workers of 16
threads (``-w 4 -k gthread --threads 16``: 64 requests in flight at once)
on Redis; the report takes 200 ms and lives 5 s. For each of flask-ploy's
``get_or_set``, the seed's get-compute-set and Flask-Caching's ``memoize``:

- **cold key**: 64 requests at once (a barrier, then one request per
  thread, each on a new connection) for a key nobody computed; the number
  of computations and the latencies. Repeated on fresh keys.
- **hot key**: ``wrk -t2 -c64`` on one key for 60 s (``--hot-seconds``);
  computations per expiry, requests, latency percentiles, and the requests
  that waited for another's computation (after the first second, and in
  all).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = {"ploy": "flask-ploy get_or_set", "seed": "seed pattern", "fc": "Flask-Caching memoize"}
WORKERS = ["-w", "4", "-k", "gthread", "--threads", "16"]


def _get(url: str) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 (our own loopback URL)
        body = json.loads(r.read())
    return time.perf_counter() - start, body


@contextlib.contextmanager
def _server(env: dict[str, str]) -> Iterator[str]:
    from .http_bench import _free_port, _wait

    port = _free_port()
    cmd = [sys.executable, "-m", "gunicorn", *WORKERS, "-b", f"127.0.0.1:{port}",
           "--log-level", "warning", "bench.stampede_app:app"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    try:
        _wait(port, proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        pids: set[int] = set()
        while len(pids) < 4 and time.monotonic() < deadline:  # every worker up
            with contextlib.suppress(OSError):
                pids.add(_get(f"{base}/ping")[1]["pid"])
        yield base
    finally:
        proc.terminate()
        proc.wait(15)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def cold(base: str, variant: str, key: str, n: int = 64) -> dict[str, Any]:
    """*n* requests at once for a cold key: latencies (ms) and what they said."""
    barrier = threading.Barrier(n)
    got: list[tuple[float, dict[str, Any]]] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        result = _get(f"{base}/{variant}/{key}")
        with lock:
            got.append(result)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ms = [t * 1000 for t, _ in got]
    return {
        "requests": len(got),
        "computed_in_requests": sum(1 for _, b in got if b["computed"]),
        "p50_ms": statistics.median(ms),
        "p99_ms": _pct(ms, 99),
        "max_ms": max(ms),
    }


WRK_PCT = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def hot(base: str, variant: str, key: str, seconds: int) -> dict[str, Any]:
    """``wrk -t2 -c64`` on one key for *seconds*: requests and latency percentiles."""
    text = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", "--timeout", "10s", "--latency",
         f"{base}/{variant}/{key}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    pct = {
        f"p{m.group(1)}_ms": float(m.group(2)) * scale[m.group(3)] for m in WRK_PCT.finditer(text)
    }
    total = re.search(r"(\d+) requests in", text)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       text)  # fmt: skip
    return {
        "requests": int(total.group(1)) if total else 0,
        "errors": (int(bad.group(1)) if bad else 0)
        + (sum(int(x) for x in errors.groups()) if errors else 0),
        **pct,
    }


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    """Both experiments for every variant; the counts come from Redis."""
    import redis

    seconds = int(cfg.get("stampede_seconds", 60))
    cold_rounds = int(cfg.get("stampede_cold_rounds", 5))
    prefix = f"{cfg['tag']}st"
    env = {**os.environ, "BENCH_REDIS_URL": cfg["redis_url"], "BENCH_PREFIX": prefix,
           "STAMPEDE_SECONDS": "0.2", "STAMPEDE_TTL": "5"}  # fmt: skip
    r = redis.Redis.from_url(cfg["redis_url"], decode_responses=True)
    out: dict[str, Any] = {"workers": " ".join(WORKERS), "compute_ms": 200, "ttl": 5,
                           "hot_seconds": seconds, "cold": {}, "hot": {}}  # fmt: skip
    try:
        with _server(env) as base:
            for variant in VARIANTS:
                rounds = []
                for i in range(cold_rounds):
                    key = f"cold{i}-{uuid.uuid4().hex[:6]}"
                    result = cold(base, variant, key)
                    result["computations"] = int(r.get(f"{prefix}:computed:{variant}:{key}") or 0)
                    rounds.append(result)
                out["cold"][variant] = {
                    "computations": [x["computations"] for x in rounds],
                    "p50_ms": statistics.median(x["p50_ms"] for x in rounds),
                    "p99_ms": statistics.median(x["p99_ms"] for x in rounds),
                    "max_ms": max(x["max_ms"] for x in rounds),
                }
            for variant in VARIANTS:
                key = f"hot-{uuid.uuid4().hex[:6]}"
                started = time.time()
                result = hot(base, variant, key, seconds)
                computations = int(r.get(f"{prefix}:computed:{variant}:{key}") or 0)
                waits = [float(t) for t in r.lrange(f"{prefix}:waited:{variant}:{key}", 0, -1)]
                at = [float(t) - started for t in r.lrange(f"{prefix}:at:{variant}:{key}", 0, -1)]
                slow = r.lrange(f"{prefix}:slow:{variant}:{key}", 0, -1)
                expiries = seconds / 5
                out["hot"][variant] = {
                    **result,
                    "computations": computations,
                    "per_expiry": computations / expiries,
                    "waited": len(waits),
                    "waited_after_1s": sum(1 for t in waits if t - started > 1.0),
                    "computed_at_s": [round(t, 2) for t in at],
                    "slow_over_100ms": len(slow),
                    "slow_sample": slow[:: max(1, len(slow) // 20)],
                }
    finally:
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            r.delete(*keys[i : i + 500])
    return out


def table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The report's table: one row per variant."""
    header = ["variant", "cold key: computations (64 at once)", "cold p50 / p99 ms",
              f"hot key, {result['hot_seconds']} s: computations per expiry",
              "hot p50 / p99 ms", "requests (waited after the first second)"]  # fmt: skip
    rows = []
    for variant, name in VARIANTS.items():
        c, h = result["cold"].get(variant), result["hot"].get(variant)
        if not c or not h:
            continue
        rows.append([
            name,
            ", ".join(str(n) for n in c["computations"]),
            f"{c['p50_ms']:.0f} / {c['p99_ms']:.0f}",
            f"{h['per_expiry']:.1f} ({h['computations']} in all)",
            f"{h.get('p50_ms', 0):.1f} / {h.get('p99_ms', 0):.1f}",
            f"{h['requests']:,} ({h['waited_after_1s']})",
        ])  # fmt: skip
    return header, rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.stampede", description=__doc__.split("\n")[0])
    p.add_argument("--redis-url", default=os.environ.get("PLOY_TEST_REDIS_URL",
                                                         "redis://127.0.0.1:6379/0"))  # fmt: skip
    p.add_argument("--hot-seconds", type=int, default=60)
    p.add_argument("--cold-rounds", type=int, default=5)
    args = p.parse_args(argv)
    cfg = {"redis_url": args.redis_url, "tag": f"bench{os.getpid()}",
           "stampede_seconds": args.hot_seconds,
           "stampede_cold_rounds": args.cold_rounds}  # fmt: skip
    result = run(cfg)
    print(json.dumps(result, indent=1))
    header, rows = table(result)
    for row in [header, *rows]:
        print(" | ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
