"""Interleaved timing: round-robin contenders, median time per operation.

Every contender is a function doing one operation per key of the list it is
given. :func:`interleave` runs them in rounds, in a fresh random order each
round, with the garbage collector off, and keeps the time per operation of
each round. Noise on a shared machine hits rounds, not contenders, so the
medians (and the per-round ratios) stay comparable.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Run = Callable[[Sequence[Any]], object]


@dataclass(frozen=True)
class Plan:
    """How long to time: ``rounds`` kept rounds of ``ops`` operations each."""

    rounds: int
    ops: int
    warmup: int


def interleave(
    contenders: dict[str, Run],
    keys: Callable[[int], Sequence[Any]],
    plan: Plan,
    *,
    seed: int = 1,
    between: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Time *contenders* in interleaved rounds; return ns/op per round for each.

    :param keys: ``keys(round)`` gives the arguments of one round (the same
        for every contender in that round).
    :param between: Called after each round, untimed (e.g. to undo writes).
    """
    rng = random.Random(seed)
    order = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in order}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    perf = time.perf_counter_ns
    try:
        for r in range(plan.warmup + plan.rounds):
            rng.shuffle(order)
            args = keys(r)
            n = len(args)
            for name in order:
                run = contenders[name]
                t0 = perf()
                run(args)
                t1 = perf()
                if r >= plan.warmup:
                    samples[name].append((t1 - t0) / n)
            if between is not None:
                between()
            gc.collect(0)
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
    return samples


def summarize(samples: dict[str, list[float]], baseline: str | None) -> dict[str, dict[str, Any]]:
    """Median, quartiles (ns/op) and paired ratios against *baseline*.

    ``ratio`` is the ratio of medians; ``paired_ratio`` the median of the
    per-round ratios (each round's contenders ran back to back).
    """
    out: dict[str, dict[str, Any]] = {}
    base = samples.get(baseline) if baseline else None
    base_median = statistics.median(base) if base else None
    for name, values in samples.items():
        q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
        entry: dict[str, Any] = {
            "median_ns": statistics.median(values),
            "p25_ns": q[0],
            "p75_ns": q[2],
            "rounds": len(values),
        }
        if base and base_median:
            entry["ratio"] = entry["median_ns"] / base_median
            entry["paired_ratio"] = statistics.median(v / b for v, b in zip(values, base))
        out[name] = entry
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_kb = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    """Versions of the libraries and servers that take part."""
    import sqlite3
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {"sqlite": sqlite3.sqlite_version}
    for dist in (
        "flask-ploy",
        "flask",
        "redis",
        "hiredis",
        "sqlalchemy",
        "psycopg",
        "flask-sqlalchemy",
        "flask-caching",
        "diskcache",
        "gunicorn",
        "werkzeug",
    ):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def forget_redis_keys(url: str, prefix: str) -> None:
    """Delete the keys a run left on the Redis at *url* under *prefix*."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()
    except redis.RedisError:
        pass  # no Redis, or it went away: nothing to clean
